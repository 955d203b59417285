"""Write the synthetic world as a nuScenes-format dataroot that nuscenes-devkit 1.2.0 loads with lidarseg.

Layout (as nuScenes'):

    DATAROOT/VERSION/*.json                       the 13 tables + lidarseg.json
    DATAROOT/samples/LIDAR_TOP/*.pcd.bin          float32 [N,5]: x, y, z, intensity, ring (LiDAR frame)
    DATAROOT/samples/CAM_*/*.jpg                  six cameras
    DATAROOT/lidarseg/VERSION/<sd_token>_lidarseg.bin   uint8 [N] fine class per point
    DATAROOT/maps/<token>.png                     semantic prior (road and sidewalk) at 0.1 m/pixel
    DATAROOT/camseg/CAM_*/*.png                   only with camera_labels: uint8 fine class per pixel of
                                                  the JPEG of the same name (255 = sky); not nuScenes
    DATAROOT/synth.json                           the generator's arguments (to rebuild the world), with
                                                  its world_version (absent: version 1) and dataset (absent:
                                                  nuscenes; ``kitti.py`` writes the SemanticKITTI layout)

Only keyframes are written (2 Hz, one LiDAR sweep and six images each); there are no intermediate
sweeps and no radar. Objects are static for the whole scene; the ego vehicle moves. Annotation
visibility is the fraction of LiDAR beams aimed at the object that reach it first.
Deterministic: the same config writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.classes import EVAL_CLASSES, FINE_CLASSES, FINE_TO_EVAL
from pipeline.frames import LIDAR
from pipeline.geometry import matrix_to_quat, yaw_matrix
from pipeline.synth import sensors
from pipeline.synth.world import THING_ATTRIBUTE, WORLD_VERSIONS, World, build_world

KEYFRAME_PERIOD_US = 500_000
START_TIMESTAMP_US = 1_532_402_900_000_000
ANNOTATION_RANGE_M = 50.0
MAP_RESOLUTION_M = 0.1
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "cycle.with_rider", "cycle.without_rider",
              "pedestrian.sitting_lying_down", "pedestrian.standing", "pedestrian.moving")
VISIBILITY_LEVELS = (("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100"))


@dataclass(frozen=True)
class SynthConfig:
    """Arguments of ``cdpipe synth``; saved as ``synth.json`` in the dataroot."""

    out: str
    scenes: int = 2
    samples_per_scene: int = 10
    seed: int = 0
    width: int = 800
    height: int = 450
    version: str = "v1.0-mini"
    workers: int | None = None  # processes rendering keyframes (None: one per core; 0: this process)
    camera_labels: bool = False  # also write camseg/: per-pixel classes of every camera image
    world_version: int = 3  # which generator builds the streets (pipeline/synth/world.py)
    dataset: str = "nuscenes"  # the rig and the layout: nuscenes, or semantickitti (pipeline/synth/kitti.py)

    def __post_init__(self):
        if self.dataset not in ("nuscenes", "semantickitti"):
            raise ValueError(f"--dataset {self.dataset!r}: choose nuscenes or semantickitti")
        if self.dataset == "semantickitti" and self.camera_labels:
            raise ValueError("--camera-labels writes nuScenes-format camera labels; it does not apply to "
                             "--dataset semantickitti")
        if self.scenes < 1 or self.samples_per_scene < 1:
            raise ValueError("--scenes and --samples-per-scene must be at least 1")
        if not (64 <= self.width <= 4096 and 64 <= self.height <= 4096):
            raise ValueError(f"--camera-size {self.width}x{self.height}: each side must be within 64..4096 pixels")
        if self.world_version not in WORLD_VERSIONS:
            raise ValueError(f"--world-version {self.world_version}: this generator makes versions "
                             f"{', '.join(map(str, WORLD_VERSIONS))}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"--workers {self.workers}: must be 0 (this process) or more")
        if not self.version or "/" in self.version:
            raise ValueError(f"--version {self.version!r} must be a plain folder name such as v1.0-mini")
        if self.dataset == "nuscenes" and self.version == "v1.0-mini" and self.scenes > 10:
            raise ValueError("v1.0-mini has 10 scene names (8 train, 2 val); ask for at most 10 scenes, "
                             "or use --version v1.0-trainval")

    @property
    def duration_s(self) -> float:
        return (self.samples_per_scene - 1) * KEYFRAME_PERIOD_US / 1e6 + 0.1


def token(*parts) -> str:
    """Deterministic 32-hex-digit nuScenes token from a key."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def scene_token(seed: int, scene: int) -> str:
    """The token of scene ``scene`` of world ``seed``: a world is recognised by it wherever it is copied."""
    return token(seed, scene, "scene")


def scene_names(version: str, n: int) -> list[tuple[str, str]]:
    """(name, split) of each scene: names from the devkit's official split lists where the version has
    them, so that ``create_splits_scenes()`` assigns our scenes to train and val as usual."""
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    if version == "v1.0-mini":
        train, val, val_every = splits["mini_train"], splits["mini_val"], 5
    elif version == "v1.0-trainval":
        train, val, val_every = splits["train"], splits["val"], 6
    else:
        return [(f"scene-{i:04d}", "train") for i in range(n)]
    out, ti, vi = [], 0, 0
    for i in range(n):
        if i % val_every == 1 and vi < len(val):
            out.append((val[vi], "val"))
            vi += 1
        else:
            out.append((train[ti], "train"))
            ti += 1
    return out


@lru_cache(maxsize=4)
def _world(seed: int, scene: int, duration_s: float, version: int) -> World:
    return build_world(seed, scene, duration_s, version)


def _logfile(cfg: SynthConfig, scene: int) -> str:
    return f"synth-{cfg.seed}-{scene:04d}"


def _timestamp(scene: int, sample: int) -> int:
    return START_TIMESTAMP_US + scene * 100_000_000 + sample * KEYFRAME_PERIOD_US


def camera_timestamp(lidar_timestamp: int, cam: sensors.Camera) -> int:
    return lidar_timestamp + int(round(sensors.trigger_offset_s(cam) * 1e6))


def _render_sample(cfg: SynthConfig, scene: int, sample: int) -> dict:
    """Render and write one keyframe (LiDAR sweep, labels, six images); return what the tables need."""
    from PIL import Image

    world = _world(cfg.seed, scene, cfg.duration_s, cfg.world_version)
    root = Path(cfg.out)
    ts = _timestamp(scene, sample)
    t = (ts - _timestamp(scene, 0)) / 1e6
    sweep = sensors.cast_sweep(world, t, np.random.default_rng([cfg.seed, scene, sample, 1]))
    lidar_name = f"samples/{LIDAR}/{_logfile(cfg, scene)}__{LIDAR}__{ts}.pcd.bin"
    sweep.points.tofile(root / lidar_name)
    sd_token = token(cfg.seed, scene, sample, LIDAR)
    (sweep.label).tofile(root / "lidarseg" / cfg.version / f"{sd_token}_lidarseg.bin")

    cams = []
    for c, cam in enumerate(sensors.CAMERAS):
        cts = camera_timestamp(ts, cam)
        view = sensors.render_camera(world, cam, (cts - _timestamp(scene, 0)) / 1e6, cfg.width, cfg.height,
                                     np.random.default_rng([cfg.seed, scene, sample, 2 + c]))
        name = f"samples/{cam.channel}/{_logfile(cfg, scene)}__{cam.channel}__{cts}.jpg"
        Image.fromarray(view.rgb).save(root / name, quality=92)
        if cfg.camera_labels:
            Image.fromarray(view.label).save(root / camera_label_path(name))
        cams.append((cam.channel, cts, name))

    position, _ = world.ego_pose(t)
    counts = np.bincount(sweep.instance, minlength=1)
    annotations = []
    rays = sensors.lidar_rays(world, t)
    for thing in world.things:
        if np.hypot(thing.centre[0] - position[0], thing.centre[1] - position[1]) > ANNOTATION_RANGE_M:
            continue
        n_pts = int(counts[thing.instance]) if thing.instance < len(counts) else 0
        vis = sensors.lidar_visible_fraction(world, rays, sweep.instance, thing.instance) if n_pts else 0.0
        annotations.append((thing.instance, n_pts, vis))
    return {
        "scene": scene, "sample": sample, "timestamp": ts, "lidar": (lidar_name, ts), "cams": cams,
        "n_points": len(sweep.points), "label_counts": np.bincount(sweep.label, minlength=256)[:32].tolist(),
        "annotations": annotations,
    }


def camera_label_path(image_name: str) -> str:
    """Dataroot-relative path of the per-pixel class image of camera image ``image_name``
    (``samples/CAM_X/NAME.jpg`` -> ``camseg/CAM_X/NAME.png``)."""
    parts = Path(image_name).with_suffix(".png").parts
    if len(parts) < 3 or parts[0] != "samples":
        raise ValueError(f"not a camera image path of a dataroot: {image_name}")
    return str(Path("camseg", *parts[1:]))


def _ego_pose_record(world: World, tok: str, ts: int, scene_start: int) -> dict:
    position, rotation = world.ego_pose((ts - scene_start) / 1e6)
    return {"token": tok, "timestamp": ts, "rotation": matrix_to_quat(rotation).tolist(),
            "translation": position.tolist()}


def _write_map(world: World, path: Path) -> None:
    from PIL import Image

    width = int(np.ceil(world.map_size[0] / MAP_RESOLUTION_M))
    height = int(np.ceil(world.map_size[1] / MAP_RESOLUTION_M))
    xs = (np.arange(width) + 0.5) * MAP_RESOLUTION_M
    ys = (height - np.arange(height) - 0.5) * MAP_RESOLUTION_M  # row 0 is the top (largest y)
    mask = np.zeros((height, width), dtype=np.uint8)
    for r0 in range(0, height, 256):
        gx, gy = np.meshgrid(xs, ys[r0:r0 + 256])
        mask[r0:r0 + 256] = np.where(world.ground.map_mask(gx, gy), 255, 0)
    Image.fromarray(mask).save(path, optimize=False)


def write_dataroot(cfg: SynthConfig, progress: bool = True) -> dict:
    """Generate the world and write the dataroot; returns a summary (see ``summarise``). A config of
    ``dataset`` semantickitti writes the SemanticKITTI layout instead (``kitti.write_semantickitti``)."""
    from tqdm import tqdm

    if cfg.dataset == "semantickitti":
        from pipeline.synth.kitti import write_semantickitti

        return write_semantickitti(cfg, progress)

    started = time.perf_counter()
    root = Path(cfg.out)
    names = scene_names(cfg.version, cfg.scenes)
    for sub in [f"samples/{LIDAR}", *(f"samples/{c.channel}" for c in sensors.CAMERAS), "maps",
                f"lidarseg/{cfg.version}", cfg.version,
                *((f"camseg/{c.channel}" for c in sensors.CAMERAS) if cfg.camera_labels else ())]:
        (root / sub).mkdir(parents=True, exist_ok=True)

    jobs = [(s, k) for s in range(cfg.scenes) for k in range(cfg.samples_per_scene)]
    workers = min(os.cpu_count() or 1 if cfg.workers is None else cfg.workers, len(jobs))
    results = []
    bar = tqdm(total=len(jobs), desc="synth keyframes", unit="sample", disable=not progress)
    if workers <= 1:
        for s, k in jobs:
            results.append(_render_sample(cfg, s, k))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            # scene-major chunks keep each worker on one world (its cache holds it).
            for res in pool.map(_render_sample, [cfg] * len(jobs), *zip(*jobs), chunksize=1):
                results.append(res)
                bar.update()
    bar.close()

    tables = _tables(cfg, names, results, root)
    for name, table in tables.items():
        with open(root / cfg.version / f"{name}.json", "w") as f:
            json.dump(table, f, indent=1)
    with open(root / "synth.json", "w") as f:
        world_args = {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers")}  # not the content
        for key, unchanged in (("camera_labels", False), ("world_version", 1), ("dataset", "nuscenes")):  # as before
            if world_args[key] == unchanged:
                world_args.pop(key)
        json.dump({"generator": f"cdpipe synth {__version__}", **world_args}, f, indent=1)
    summary = summarise(cfg, names, results)
    summary["seconds"] = time.perf_counter() - started
    return summary


def _tables(cfg: SynthConfig, names, results, root: Path) -> dict[str, list]:
    t = {k: [] for k in ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor",
                         "ego_pose", "log", "scene", "sample", "sample_data", "sample_annotation", "map",
                         "lidarseg")}
    for i, name in enumerate(FINE_CLASSES):
        t["category"].append({"token": token("category", name), "name": name, "index": i,
                              "description": f"nuScenes-lidarseg class {name}"})
    for name in ATTRIBUTES:
        t["attribute"].append({"token": token("attribute", name), "name": name, "description": name})
    for tok, level in VISIBILITY_LEVELS:
        t["visibility"].append({"token": tok, "level": level,
                                "description": f"visibility of the object is {level[1:]}%"})
    channels = [(LIDAR, "lidar")] + [(c.channel, "camera") for c in sensors.CAMERAS]
    for ch, modality in channels:
        t["sensor"].append({"token": token("sensor", ch), "channel": ch, "modality": modality})

    by_scene: dict[int, list[dict]] = {}
    for res in results:
        by_scene.setdefault(res["scene"], []).append(res)
    for scene, samples in sorted(by_scene.items()):
        samples.sort(key=lambda r: r["sample"])
        world = _world(cfg.seed, scene, cfg.duration_s, cfg.world_version)
        log_tok, scene_tok = token(cfg.seed, scene, "log"), scene_token(cfg.seed, scene)
        t["log"].append({"token": log_tok, "logfile": _logfile(cfg, scene), "vehicle": "synth",
                         "date_captured": "2018-07-24", "location": "synthetic-street"})
        map_tok = token(cfg.seed, scene, "map")
        map_name = f"maps/{map_tok}.png"
        _write_map(world, root / map_name)
        t["map"].append({"token": map_tok, "log_tokens": [log_tok], "category": "semantic_prior",
                         "filename": map_name})
        calib = {}
        for ch, modality in channels:
            calib[ch] = token(cfg.seed, scene, "calib", ch)
            if modality == "lidar":
                e = sensors.ego_from_lidar()
                k = []
            else:
                cam = next(c for c in sensors.CAMERAS if c.channel == ch)
                e = sensors.ego_from_camera(cam)
                k = sensors.camera_intrinsic(cam, cfg.width, cfg.height).tolist()
            t["calibrated_sensor"].append({"token": calib[ch], "sensor_token": token("sensor", ch),
                                           "translation": e[:3, 3].tolist(),
                                           "rotation": matrix_to_quat(e[:3, :3]).tolist(), "camera_intrinsic": k})
        sample_toks = [token(cfg.seed, scene, r["sample"], "sample") for r in samples]
        scene_start = samples[0]["timestamp"]
        for i, r in enumerate(samples):
            t["sample"].append({"token": sample_toks[i], "timestamp": r["timestamp"],
                                "prev": sample_toks[i - 1] if i else "",
                                "next": sample_toks[i + 1] if i + 1 < len(samples) else "",
                                "scene_token": scene_tok})
        for ch, modality in channels:
            sd_toks = [token(cfg.seed, scene, r["sample"], ch) for r in samples]
            for i, r in enumerate(samples):
                if modality == "lidar":
                    filename, ts = r["lidar"]
                else:
                    _, ts, filename = next(c for c in r["cams"] if c[0] == ch)
                pose_tok = token(cfg.seed, scene, r["sample"], ch, "ego_pose")
                t["ego_pose"].append(_ego_pose_record(world, pose_tok, ts, scene_start))
                t["sample_data"].append({
                    "token": sd_toks[i], "sample_token": sample_toks[i], "ego_pose_token": pose_tok,
                    "calibrated_sensor_token": calib[ch], "timestamp": ts,
                    "fileformat": "pcd" if modality == "lidar" else "jpg", "is_key_frame": True,
                    "height": 0 if modality == "lidar" else cfg.height,
                    "width": 0 if modality == "lidar" else cfg.width, "filename": filename,
                    "prev": sd_toks[i - 1] if i else "", "next": sd_toks[i + 1] if i + 1 < len(samples) else ""})
                if modality == "lidar":
                    t["lidarseg"].append({"token": sd_toks[i], "sample_data_token": sd_toks[i],
                                          "filename": f"lidarseg/{cfg.version}/{sd_toks[i]}_lidarseg.bin"})
        t["scene"].append({"token": scene_tok, "log_token": log_tok, "nbr_samples": len(samples),
                           "first_sample_token": sample_toks[0], "last_sample_token": sample_toks[-1],
                           "name": names[scene][0],
                           "description": f"synthetic street, seed {cfg.seed}, scene {scene}"})
        _annotations(cfg, world, scene, samples, sample_toks, t)
    return t


def _annotations(cfg, world: World, scene: int, samples, sample_toks, t) -> None:
    things = {th.instance: th for th in world.things}
    per_instance: dict[int, list[tuple[int, int, float]]] = {}
    for i, r in enumerate(samples):
        for inst, n_pts, vis in r["annotations"]:
            per_instance.setdefault(inst, []).append((i, n_pts, vis))
    for inst in sorted(per_instance):
        th = things[inst]
        inst_tok = token(cfg.seed, scene, "instance", inst)
        ann_toks = [token(cfg.seed, scene, "ann", inst, i) for i, _, _ in per_instance[inst]]
        for a, (i, n_pts, vis) in enumerate(per_instance[inst]):
            level = VISIBILITY_LEVELS[min(3, max(0, int(np.searchsorted([0.4, 0.6, 0.8], vis, side="right"))))][0]
            attribute = th.attribute or THING_ATTRIBUTE.get(th.category)
            t["sample_annotation"].append({
                "token": ann_toks[a], "sample_token": sample_toks[i], "instance_token": inst_tok,
                "visibility_token": level, "attribute_tokens": [token("attribute", attribute)] if attribute else [],
                "translation": list(th.centre), "size": list(th.size_wlh),
                "rotation": matrix_to_quat(yaw_matrix(th.yaw)).tolist(),
                "prev": ann_toks[a - 1] if a else "", "next": ann_toks[a + 1] if a + 1 < len(ann_toks) else "",
                "num_lidar_pts": n_pts, "num_radar_pts": 0})
        t["instance"].append({"token": inst_tok, "category_token": token("category", th.category),
                              "nbr_annotations": len(ann_toks), "first_annotation_token": ann_toks[0],
                              "last_annotation_token": ann_toks[-1]})


def summarise(cfg: SynthConfig, names, results) -> dict:
    """Counts a user wants to see: scenes, keyframes, points per sweep, points per evaluation class."""
    n_points = np.array([r["n_points"] for r in results])
    fine = np.sum([r["label_counts"] for r in results], axis=0)
    per_eval = np.bincount(FINE_TO_EVAL, weights=fine, minlength=len(EVAL_CLASSES)).astype(int)
    return {
        "dataroot": str(cfg.out), "dataset": "nuscenes", "version": cfg.version, "seed": cfg.seed,
        "world_version": cfg.world_version,
        "scenes": [n for n, _ in names], "splits": {s: sum(1 for _, x in names if x == s) for s in ("train", "val")},
        "keyframes": len(results), "images": 6 * len(results), "image_size": f"{cfg.width}x{cfg.height}",
        "points_per_sweep": {"mean": float(n_points.mean()), "min": int(n_points.min()), "max": int(n_points.max())},
        "points_per_eval_class": {EVAL_CLASSES[i]: int(per_eval[i]) for i in range(1, len(EVAL_CLASSES))},
        "eval_classes_present": int((per_eval[1:] > 0).sum()), "num_eval_classes": len(EVAL_CLASSES) - 1,
        "annotations": int(sum(len(r["annotations"]) for r in results)),
    }
