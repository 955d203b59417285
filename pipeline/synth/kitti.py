"""The synthetic world seen by a KITTI-odometry-like rig, written in the SemanticKITTI layout
(``pipeline/semantickitti.py`` reads it; ``cdpipe synth --dataset semantickitti``).

The rig (ego frame: x forward, y left, z up, origin on the ground): a 64-beam spinning LiDAR (HDL-64E-like,
+2 to -24.8 degrees, 1.73 m high, sensor x forward) and the front camera pair of KITTI: camera 0 (the
rectified reference frame, 0.27 m ahead of and 0.08 m below the LiDAR), image_2 (left colour, 0.06 m left
of camera 0) and image_3 (right colour, 0.48 m right of it: a 0.54 m baseline), all looking ahead, with
KITTI's horizontal field of view (its focal length of 718.856 pixels over 1241) at the image size asked
for. The cameras fire as the LiDAR sweeps past the front (KITTI triggers them so): scan and images share
one instant, one ego pose. Scans are 10 Hz.

Labels are SemanticKITTI's raw ids, chosen per surface from the world's fine class and each solid's shape
(``raw_ids_of_solids``): a vegetation cylinder is a trunk, a tall thin man-made cylinder a pole (a short one
a bollard: other-object), the thin plate on a pole a traffic sign, a thin man-made wall a fence, a large
man-made box a building (a small one, street furniture: other-object), painted road lane-marking. Instance
ids (upper 16 bits) are those of the annotated objects (vehicles, people, cones, barriers); 0 elsewhere.
Sequences: scene 1 is the val sequence 08, the others take the train sequences 00-07, 09, 10 in order.
Deterministic: the same config writes byte-identical files, whatever the number of workers.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from pipeline import __version__
from pipeline.classes import FINE_INDEX, SEMANTICKITTI_EVAL, SEMANTICKITTI_LEARNING_MAP
from pipeline.geometry import intrinsic_matrix, invert_transform, make_transform
from pipeline.semantickitti import (
    SCAN_PERIOD_US,
    SPLITS,
    projection_of,
    write_calib,
    write_labels,
    write_poses,
    write_scan,
    write_times,
)
from pipeline.synth import raycast, sensors
from pipeline.synth.world import BOX, CYLINDER, World, build_world

LIDAR_TRANSLATION = (0.76, 0.0, 1.73)
N_BEAMS = 64
N_AZIMUTH = 2048
ELEVATION_DEG = np.linspace(2.0, -24.8, N_BEAMS)  # beam 0 is the top one
MIN_RANGE, MAX_RANGE = 2.5, 80.0  # the HDL-64E sees nothing closer than ~2.5 m (KITTI's car roof)
CAM0_TRANSLATION = (1.03, 0.0, 1.65)
CAMERA_OFFSETS_Y = {"image_0": 0.0, "image_1": -0.54, "image_2": 0.06, "image_3": -0.48}  # metres left of cam 0
HFOV_DEG = float(np.degrees(2 * np.arctan(1241 / 2 / 718.856)))  # KITTI's colour cameras, ~81.6 degrees
SEQUENCES_VAL, SEQUENCES_TRAIN = SPLITS["val"][0], SPLITS["train"]
MAX_SCENES = 1 + len(SEQUENCES_TRAIN)


def camera(name: str) -> sensors.Camera:
    """Camera ``name`` (image_0 .. image_3) as the renderer's ``Camera``: looking along ego x (yaw 0)."""
    x, y, z = CAM0_TRANSLATION
    return sensors.Camera(name, 0.0, (x, y + CAMERA_OFFSETS_Y[name], z), HFOV_DEG)


def ego_from_lidar() -> np.ndarray:
    """LiDAR -> ego [4,4]: the sensor's axes are the ego's (x forward, y left, z up)."""
    return make_transform(np.eye(3), LIDAR_TRANSLATION)


def intrinsics(width: int, height: int) -> np.ndarray:
    """K [3,3] of every rectified camera at ``width`` x ``height``."""
    return intrinsic_matrix(width, height, HFOV_DEG)


def calibration(width: int, height: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(P0..P3 [3,4], Tr [4,4] = camera 0 <- LiDAR) of the rig, as ``calib.txt`` holds them."""
    cam0 = sensors.ego_from_camera(camera("image_0"))
    k = intrinsics(width, height)
    projections = [projection_of(k, invert_transform(sensors.ego_from_camera(camera(f"image_{i}"))) @ cam0)
                   for i in range(4)]
    return projections, invert_transform(cam0) @ ego_from_lidar()


def sequence_names(n: int) -> list[tuple[str, str]]:
    """(sequence, split) of each of ``n`` scenes: scene 1 is val (08), the others train (00-07, 09, 10)."""
    if not 1 <= n <= MAX_SCENES:
        raise ValueError(f"--scenes {n}: SemanticKITTI has {MAX_SCENES} labelled sequences (10 train, 1 val); ask "
                         f"for 1 to {MAX_SCENES}")
    train = iter(SEQUENCES_TRAIN)
    return [(SEQUENCES_VAL, "val") if i == 1 else (next(train), "train") for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# labels


def raw_ids_of_solids(world: World) -> np.ndarray:
    """SemanticKITTI raw id [P] uint16 of each solid of the world (see the module docstring)."""
    prims = world.prims
    names = {i: name for name, i in FINE_INDEX.items()}
    raw = np.array([_RAW_OF_FINE.get(names[int(label)], 0) for label in prims.label], dtype=np.uint16)
    manmade, vegetation = prims.label == FINE_INDEX["static.manmade"], prims.label == FINE_INDEX["static.vegetation"]
    cylinder, box = prims.kind == CYLINDER, prims.kind == BOX
    height, thin = 2 * prims.half[:, 2], np.minimum(prims.half[:, 0], prims.half[:, 1])
    raw[vegetation & cylinder] = 71  # trunk
    raw[manmade & cylinder] = np.where(height[manmade & cylinder] >= 2.0, 80, 99)  # pole; bollard: other-object
    sign = manmade & box & (prims.half[:, 0] < 0.05)
    raw[manmade & box] = np.where(height[manmade & box] >= 3.5, 50, 99)  # building; street furniture
    raw[manmade & box & (thin < 0.25)] = 51  # a wall or fence
    raw[sign] = 81
    return raw


_RAW_OF_FINE = {  # nuScenes fine class of the world -> SemanticKITTI raw id, before the shape rules
    "vehicle.car": 10, "vehicle.emergency.police": 10, "vehicle.bicycle": 11, "vehicle.bus.rigid": 13,
    "vehicle.bus.bendy": 13, "vehicle.motorcycle": 15, "vehicle.truck": 18, "vehicle.trailer": 20,
    "vehicle.construction": 20, "vehicle.emergency.ambulance": 20, "human.pedestrian.adult": 30,
    "human.pedestrian.child": 30, "human.pedestrian.construction_worker": 30, "human.pedestrian.police_officer": 30,
    "movable_object.barrier": 51, "movable_object.trafficcone": 99, "movable_object.debris": 99,
    "movable_object.pushable_pullable": 99, "static_object.bicycle_rack": 99, "static.manmade": 50,
    "static.vegetation": 70, "static.other": 52, "flat.driveable_surface": 40, "flat.sidewalk": 48,
    "flat.terrain": 72, "flat.other": 44,
}


def surface_raw_ids(world: World, solid_raw: np.ndarray, hit: np.ndarray, fine: np.ndarray,
                    paint: np.ndarray) -> np.ndarray:
    """Raw id [N] of what each ray hit: the solid's (``solid_raw``), or the ground's by its fine class
    (``fine``; ``paint``: lane-marking on the road)."""
    out = np.zeros(hit.shape, dtype=np.uint16)
    solid = hit >= 0
    out[solid] = solid_raw[hit[solid]]
    ground = hit == raycast.GROUND
    names = {i: name for name, i in FINE_INDEX.items()}
    lut = np.array([_RAW_OF_FINE.get(names.get(i, ""), 0) for i in range(256)], dtype=np.uint16)
    out[ground] = np.where(paint[ground] & (fine[ground] == FINE_INDEX["flat.driveable_surface"]), 60,
                           lut[fine[ground]])
    return out


# ---------------------------------------------------------------------------------------------------
# one scan


def lidar_directions() -> np.ndarray:
    """Unit beam directions [64*2048, 3] in the LiDAR frame, beam after beam."""
    el = np.radians(ELEVATION_DEG)[:, None]
    az = np.pi - 2 * np.pi * np.arange(N_AZIMUTH)[None, :] / N_AZIMUTH  # from behind, turning clockwise
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el) * np.ones_like(az)], -1)
    return dirs.reshape(-1, 3)


def cast_scan(world: World, t: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One scan at scene time ``t``: points [N,4] float32 (x, y, z in the LiDAR frame, reflectance 0..1),
    raw semantic id [N] uint16 and instance id [N] uint16. Reflectance is the nuScenes rig's intensity
    model (``sensors.cast_sweep``) over 255."""
    world_from_lidar = sensors.world_from_ego(world, t) @ ego_from_lidar()
    dirs_l = lidar_directions()
    origin, dirs_w = world_from_lidar[:3, 3], dirs_l @ world_from_lidar[:3, :3].T
    dist, hit = raycast.cast(world.prims, world.ground, origin, dirs_w, max_t=MAX_RANGE)
    keep = np.isfinite(dist) & (dist >= MIN_RANGE) & (rng.random(len(dist)) >= sensors.DROPOUT)
    dist, hit, dirs_l, dirs_w = dist[keep], hit[keep], dirs_l[keep], dirs_w[keep]
    world_pts = origin + dist[:, None] * dirs_w
    fine, reflectivity, paint = sensors._surface(world, hit, world_pts)
    normal = raycast.normals(world.prims, world.ground, hit, world_pts)
    cos_inc = np.abs((normal * dirs_w).sum(1))
    intensity = reflectivity * (0.3 + 0.7 * cos_inc) * np.exp(-dist / 120.0) * rng.lognormal(
        0, world.intensity_sigma, len(dist))
    noisy = dist + rng.normal(0, sensors.RANGE_NOISE_M, len(dist))
    points = np.concatenate([dirs_l * noisy[:, None], np.clip(intensity / 255.0, 0, 1)[:, None]], 1)
    raw = surface_raw_ids(world, raw_ids_of_solids(world), hit, fine, paint)
    things = np.isin(world.prims.instance, [th.instance for th in world.things])
    instance = np.where(hit >= 0, np.where(things[np.maximum(hit, 0)], world.prims.instance[np.maximum(hit, 0)], 0), 0)
    return points.astype(np.float32), raw, (instance & 0xFFFF).astype(np.uint16)


@lru_cache(maxsize=4)
def _world(seed: int, scene: int, duration_s: float, version: int) -> World:
    return build_world(seed, scene, duration_s, version)


def duration_s(samples: int) -> float:
    return (samples - 1) * SCAN_PERIOD_US / 1e6 + 0.1


def _render_scan(cfg, scene: int, scan: int, sequence: str) -> dict:
    """Render and write one scan (LiDAR, labels, two images); return its counts."""
    from PIL import Image

    world = _world(cfg.seed, scene, duration_s(cfg.samples_per_scene), cfg.world_version)
    folder = Path(cfg.out) / "sequences" / sequence
    t = scan * SCAN_PERIOD_US / 1e6
    points, raw, instance = cast_scan(world, t, np.random.default_rng([cfg.seed, scene, scan, 1]))
    write_scan(str(folder / "velodyne" / f"{scan:06d}.bin"), points)
    write_labels(str(folder / "labels" / f"{scan:06d}.label"), raw, instance)
    for c, name in enumerate(("image_2", "image_3")):
        view = sensors.render_camera(world, camera(name), t, cfg.width, cfg.height,
                                     np.random.default_rng([cfg.seed, scene, scan, 2 + c]))
        Image.fromarray(view.rgb).save(folder / name / f"{scan:06d}.png", optimize=False)
    return {"scene": scene, "scan": scan, "n_points": len(points),
            "eval_counts": np.bincount(SEMANTICKITTI_LEARNING_MAP[raw], minlength=len(SEMANTICKITTI_EVAL)).tolist()}


def write_semantickitti(cfg, progress: bool = True) -> dict:
    """Generate the world and write it in the SemanticKITTI layout (``cfg``: a ``SynthConfig`` with
    ``dataset`` semantickitti); returns a summary."""
    from tqdm import tqdm

    started = time.perf_counter()
    names = sequence_names(cfg.scenes)
    root = Path(cfg.out)
    for sequence, _ in names:
        for sub in ("velodyne", "labels", "image_2", "image_3"):
            (root / "sequences" / sequence / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(s, k, names[s][0]) for s in range(cfg.scenes) for k in range(cfg.samples_per_scene)]
    workers = min(os.cpu_count() or 1 if cfg.workers is None else cfg.workers, len(jobs))
    results = []
    bar = tqdm(total=len(jobs), desc="synth scans", unit="scan", disable=not progress)
    if workers <= 1:
        for job in jobs:
            results.append(_render_scan(cfg, *job))
            bar.update()
    else:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            for res in pool.map(_render_scan, [cfg] * len(jobs), *zip(*jobs), chunksize=1):
                results.append(res)
                bar.update()
    bar.close()
    projections, tr = calibration(cfg.width, cfg.height)
    cam0 = sensors.ego_from_camera(camera("image_0"))
    for scene, (sequence, _) in enumerate(names):
        folder = root / "sequences" / sequence
        world = _world(cfg.seed, scene, duration_s(cfg.samples_per_scene), cfg.world_version)
        times = np.arange(cfg.samples_per_scene) * SCAN_PERIOD_US / 1e6
        world_from_cam0 = [sensors.world_from_ego(world, t) @ cam0 for t in times]
        first = invert_transform(world_from_cam0[0])
        write_calib(str(folder / "calib.txt"), projections, tr)
        write_poses(str(folder / "poses.txt"), np.stack([first @ p for p in world_from_cam0]))
        write_times(str(folder / "times.txt"), times)
    with open(root / "synth.json", "w") as f:
        args = {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers", "version")}
        if not args["camera_labels"]:
            args.pop("camera_labels")
        json.dump({"generator": f"cdpipe synth {__version__}", **args}, f, indent=1)
    n_points = np.array([r["n_points"] for r in results])
    per_eval = np.sum([r["eval_counts"] for r in results], axis=0)
    return {
        "dataroot": str(cfg.out), "dataset": "semantickitti", "seed": cfg.seed, "world_version": cfg.world_version,
        "scenes": [s for s, _ in names], "splits": {s: sum(1 for _, x in names if x == s) for s in ("train", "val")},
        "keyframes": len(results), "images": 2 * len(results), "image_size": f"{cfg.width}x{cfg.height}",
        "points_per_sweep": {"mean": float(n_points.mean()), "min": int(n_points.min()), "max": int(n_points.max())},
        "points_per_eval_class": {SEMANTICKITTI_EVAL[i]: int(per_eval[i]) for i in range(1, len(SEMANTICKITTI_EVAL))},
        "eval_classes_present": int((per_eval[1:] > 0).sum()), "num_eval_classes": len(SEMANTICKITTI_EVAL) - 1,
        "annotations": 0, "seconds": time.perf_counter() - started,
    }
