"""``cdpipe extract``: run the frozen teacher once over every camera frame and write the store.

Datasets (``--dataset``): nuscenes (the tables, through the devkit: ``frames.build_nuscenes_index``) or
semantickitti (``semantickitti.build_semantickitti_index``); both give one ``FrameIndex``, and the store
records the dataset's cameras, LiDAR and class set (attributes ``cameras``, ``sensors``, ``classes``).

Client: start the Dask workers (``--workers 0``: one, in this process; each imports torch and timm and
builds the teacher right away, which also gives the store its teacher record), meanwhile build the
frame index from the tables, create the store (or reopen it to resume) through ``StoreWriter``, and
hand groups of ``sweeps_per_shard`` consecutive sweeps to the workers. Worker task (``extract_group``):
read the LiDAR sweeps and all their camera images, run the teacher on the whole batch of images,
project every point into every camera, keep the patch maps (the patches layout) or sample each point's
feature (the points layout), build occupancy targets, add the annotated boxes the index holds, and write
the group through ``StoreWriter``:
whole shards (whole chunks where an array has no shards) of every array, ``done`` last. A rerun skips
groups whose ``done`` flags are all set, so a killed job loses at most the groups in flight.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from pipeline import __version__
from pipeline.classes import DATASETS, DETECTION_CLASSES, LabelClasses
from pipeline.dialect import plural
from pipeline.errors import ExtractError
from pipeline.frames import LIDAR, FrameIndex, coverage_problem, read_image, read_lidar
from pipeline.occupancy import FREE_DRAW, OccupancyGrid, occupancy_targets
from pipeline.projection import assign_views, sample_features
from pipeline.store import (
    ARRAY_SPECS,
    ENCODINGS,
    FEATURE_ARRAYS,
    LAYOUTS,
    MULTI_VIEW_RULE,
    PIXEL_CONVENTION,
    SAMPLING,
    SCHEMA_VERSION,
    StoreWriteError,
    check_out,
    decode_reason,
    encode_int8,
    local_path,
    patch_grid,
)
from pipeline.store_writer import StoreWriter
from pipeline.teacher import TeacherConfig

#: What ``--device`` accepts: cpu, cuda, or cuda:N
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class ExtractConfig:
    dataroot: str
    version: str
    out: str
    teacher: TeacherConfig
    dataset: str = "nuscenes"
    split: str = "all"
    min_depth: float = 1.0
    occupancy: OccupancyGrid = field(default_factory=OccupancyGrid)
    occupancy_seed: int = 0
    sweeps_per_shard: int = 2
    # the arrays that carry the teacher features (storage_schema.md, "Layouts and encodings"): each
    # camera's patch map, ~10x smaller than a feature per point at the same fidelity, or a feature per point
    layout: str = "patches"
    feature_encoding: str = "float16"
    # The local cluster: ``workers`` processes (0: one worker in this process, in threads), each holding
    # one teacher and running ``tasks_per_worker`` tasks at once in threads (0: cores // workers), each
    # task's torch ops on ``torch_threads`` threads (0: cores // (workers x tasks_per_worker), at least 1).
    # On the CPU, threads sharing one teacher run it as fast as a process per core or faster (teacher
    # alone on 2 cores: 2 threads 1.47-1.51 scans/s; 2 processes 1.34-1.37 with glibc's defaults, 1.52
    # with the malloc settings below), and torch, timm and the model load once: start-up 4.5-4.8 s
    # instead of 8.1 s, one model in memory.
    workers: int = 1
    tasks_per_worker: int = 0
    torch_threads: int = 0
    scheduler: str | None = None  # address of a running dask scheduler; None: a LocalCluster
    device: str | None = None  # where the teacher runs: cpu, cuda or cuda:N; None: cuda when there is one
    overwrite: bool = False

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset {self.dataset!r}: choose one of {', '.join(DATASETS)}")
        if self.dataset == "semantickitti" and self.split not in ("all", "train", "val", "test"):
            raise ValueError(f"--split {self.split}: a SemanticKITTI dataroot has the splits all, train, val and test")
        if self.sweeps_per_shard < 1:
            raise ValueError("--sweeps-per-shard must be at least 1")
        if self.workers < 0:
            raise ValueError(f"--workers {self.workers}: give 0 (work in this process) or more worker processes")
        if self.device is not None and not _DEVICE.fullmatch(self.device):
            raise ValueError(f"--device {self.device!r}: choose cpu, cuda or cuda:N (N: the GPU's index)")
        if self.tasks_per_worker < 0 or self.torch_threads < 0:
            raise ValueError("--tasks-per-worker and --torch-threads must be 0 (automatic) or more")
        if self.min_depth <= 0:
            raise ValueError("--min-depth must be positive")
        if self.layout not in LAYOUTS:
            raise ValueError(f"--layout {self.layout!r}: choose one of {', '.join(LAYOUTS)}")
        if self.feature_encoding not in ENCODINGS:
            raise ValueError(f"--feature-encoding {self.feature_encoding!r}: choose one of {', '.join(ENCODINGS)}")

    @property
    def tasks(self) -> int:
        """Tasks each local worker runs at once."""
        return self.tasks_per_worker or max(1, _cores() // max(1, self.workers))

    @property
    def threads(self) -> int:
        """torch threads per task (one on a cluster given by --scheduler, unless set)."""
        if self.torch_threads or self.scheduler:
            return self.torch_threads or 1
        return max(1, _cores() // (max(1, self.workers) * self.tasks))


def _cores() -> int:
    """CPUs this process may use (affinity and container limits counted, as Dask counts them)."""
    from dask.system import CPU_COUNT

    return CPU_COUNT


# ---------------------------------------------------------------------------------------------------
# the store


def store_attrs(cfg: ExtractConfig, index: FrameIndex, teacher: dict, feature_dim: int, max_points: int,
                max_queries: int, command: str) -> dict:
    import torch
    import zarr

    from pipeline.frames import SENSORS as NUSCENES_SENSORS
    from pipeline.semantickitti import SENSORS as KITTI_SENSORS

    has_boxes = cfg.dataset == "nuscenes"  # SemanticKITTI annotates no boxes
    return {
        "schema_version": SCHEMA_VERSION,
        "num_sweeps": len(index),
        "max_points": max_points,
        "max_queries": max_queries,
        "max_boxes": max_boxes_for(index) if has_boxes else 0,
        "feature_dim": feature_dim,
        "layout": cfg.layout,
        "feature_encoding": cfg.feature_encoding,
        "patch_grid": patch_grid(teacher),
        "sweeps_per_shard": cfg.sweeps_per_shard,
        "cameras": list(index.cameras),
        "scenes": [dict(s) for s in index.scenes],
        "has_labels": index.label_path is not None,
        "has_boxes": has_boxes,
        "detection_classes": list(DETECTION_CLASSES),
        "classes": LabelClasses.of(cfg.dataset).to_dict(),
        "sensors": dict(NUSCENES_SENSORS if cfg.dataset == "nuscenes" else KITTI_SENSORS),
        "dataset": {"name": cfg.dataset, "version": cfg.version if cfg.dataset == "nuscenes" else "",
                    "split": cfg.split, "dataroot": os.path.abspath(cfg.dataroot)},
        "teacher": teacher,
        "projection": {"min_depth_m": cfg.min_depth, "multi_view_rule": MULTI_VIEW_RULE,
                       "pixel_convention": PIXEL_CONVENTION, "sampling": SAMPLING},
        "occupancy": {**cfg.occupancy.to_dict(), "frame": "LiDAR frame of the sweep, sensor at the origin",
                      "seed": cfg.occupancy_seed, "free_draw": FREE_DRAW},
        "provenance": {"code_version": __version__,
                       "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "command": command, "torch_version": torch.__version__, "zarr_version": zarr.__version__},
    }


# ---------------------------------------------------------------------------------------------------
# the worker task


_TEACHER_LOCK = threading.Lock()


def _teacher(cfg: TeacherConfig, device: str | None):
    """The worker's one teacher, built on first use; the tasks running in the worker's threads share it
    (its forward keeps no state)."""
    with _TEACHER_LOCK:
        return _build_teacher(cfg, device)


@lru_cache(maxsize=1)
def _build_teacher(cfg: TeacherConfig, device: str | None):
    import torch

    from pipeline.teacher import FrozenTeacher

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device.startswith("cuda") and int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
        raise ExtractError(f"--device {device}: this worker sees {torch.cuda.device_count()} CUDA devices"
                           + ("" if torch.cuda.device_count() else f" (torch {torch.__version__}, CUDA "
                                                                   f"{torch.version.cuda or 'not built in'})"))
    return FrozenTeacher(cfg).to(device)


def warm_worker(cfg: TeacherConfig, device: str | None) -> tuple[dict, int]:
    """Build (and keep) the teacher in this worker; return its provenance record and feature size."""
    teacher = _teacher(cfg, device)
    return teacher.describe(), teacher.feature_dim


def extract_group(cfg: ExtractConfig, index: FrameIndex, first_sweep: int, job: str = "") -> dict:
    """Extract sweeps ``first_sweep .. first_sweep + len(index) - 1`` and write them into the store.

    A sweep that fails (its index entry, or a file read here: LiDAR, labels, an image) is written as fill
    with its ``failure`` and ``done`` 0; the others complete. ``job`` is the id in the store's lock: if
    another job has taken the lock since, nothing is written (taken mid-write: nothing is marked done).
    Returns the number of sweeps done, ``failures`` {sweep: reason}, ``warnings`` {sweep: [...]} and the
    seconds per stage (read, teacher, project, occupancy, write).
    """
    import torch

    torch.set_num_threads(cfg.threads)
    teacher = _teacher(cfg.teacher, cfg.device)
    writer = StoreWriter.open(cfg.out, job)
    dims = writer.dims
    n, p, q, b = len(index), dims["P"], dims["Q"], dims["B"]
    # every array of the group as its fill (dtypes and fills from the schema), then what the index knows
    out = writer.blank(n)
    for name, value in (("scene_index", index.scene_index), ("timestamp", index.timestamp),
                        ("camera_timestamp", index.camera_timestamp), ("camera_hw", index.image_hw),
                        ("sample_token", index.sample_token), ("lidar_token", index.lidar_token)):
        out[name][...] = value  # cast to the schema's dtype
    failure = list(index.failure)
    warnings = [list(w) for w in index.warnings]  # the index's, and what reading the files finds
    clock = _StageClock()
    images = {}  # (sweep, camera) -> image, for every usable camera of the sweeps not failed
    for i in range(n):
        for j in np.nonzero(index.camera_ok[i])[0] if not failure[i] else ():
            try:
                images[i, j] = read_image(index.image_path[i][j], index.image_hw[i, j], cfg.teacher.image_size)
            except ExtractError as e:
                failure[i] = f"{e} ({index.cameras[j]} of sample {index.sample_token[i]})"
                break
    views = [v for v in images if not failure[v[0]]]
    slot = {v: r for r, v in enumerate(views)}
    if views:
        x = teacher.preprocess([images[v] for v in views]).to(teacher.mean.device)
        clock.lap("read")
        fmaps = teacher.forward(x).cpu()  # [views, D, h, w]
        clock.lap("teacher")
    del images
    for i in range(n):
        if failure[i]:
            continue
        try:
            points, labels = read_lidar(index, i)
            m = len(points)
            short = coverage_problem(points)
            if short:
                warnings[i].append(f"{LIDAR} {index.lidar_path[i]}: {short}")
            if m > p:
                raise ExtractError(f"{index.lidar_path[i]} has {m} points, more than the {p} rows the store was "
                                   f"made with; rerun with --overwrite to rebuild the store with room for it")
            cams = np.nonzero(index.camera_ok[i])[0]
            camera, uv = assign_views(points, index.cam_from_lidar[i, cams], index.intrinsics[i, cams],
                                      index.image_hw[i, cams], cfg.min_depth)
            if len(cams):
                _write_features(cfg, out, i, fmaps[[slot[i, j] for j in cams]], cams, camera, uv,
                                index.image_hw[i, cams])
            clock.lap("project")
            rng = np.random.default_rng([cfg.occupancy_seed, first_sweep + i])
            voxels, occ = occupancy_targets(points[:, :3], cfg.occupancy, rng)
            clock.lap("occupancy")
            if len(occ) > q:
                raise ExtractError(f"{index.lidar_path[i]}: {len(occ)} occupancy queries exceed the store's {q}; rerun "
                                   f"with --overwrite to rebuild the store with room for them")
            if len(index.boxes[i]) > b:
                raise ExtractError(f"sample {index.sample_token[i]} has {len(index.boxes[i])} annotated boxes, more "
                                   f"than the store's {b} (max_boxes); rerun with --overwrite to rebuild the store "
                                   f"with room for them")
        except ExtractError as e:
            failure[i] = f"{e} (sample {index.sample_token[i]})" if index.sample_token[i] not in str(e) else str(e)
            for name in FEATURE_ARRAYS:  # the features written before the failure
                if name in out:
                    out[name][i] = ARRAY_SPECS[name].fill
            continue
        out["points"][i, :m] = points
        if labels is not None:
            out["labels"][i, :m] = labels
        out["valid"][i, :m] = camera >= 0
        out["camera"][i, :m] = np.where(camera >= 0, cams[np.maximum(camera, 0)] if len(cams) else -1, -1)
        out["pixel"][i, :m] = uv  # -1 where no camera sees the point
        out["occ_voxels"][i, :len(occ)] = voxels
        out["occ_labels"][i, :len(occ)] = occ
        out["num_points"][i], out["num_queries"][i] = m, len(occ)
        if "box_class" in out:  # a store with boxes
            _write_boxes(out, i, index.boxes[i], index.global_from_lidar[i])
    out["failure"] = np.array(failure, dtype=object)
    out["warnings"] = np.array(["" if failure[i] else "\n".join(warnings[i]) for i in range(n)], dtype=object)

    out["done"][:] = [not f for f in failure]
    writer.write_sweeps(first_sweep, out)  # done last; a job that lost the store's lock writes nothing
    clock.lap("write")
    return {"sweeps": n, "done": int(out["done"].sum()), **clock.seconds,
            "failures": {first_sweep + i: f for i, f in enumerate(failure) if f},
            "warnings": {first_sweep + i: w for i, w in enumerate(warnings) if w and not failure[i]}}


def _write_boxes(out: dict, i: int, boxes, global_from_lidar: np.ndarray) -> None:
    """Sweep ``i``'s annotated boxes (``boxes.SweepBoxes``) and LiDAR-to-global transform into ``out``."""
    for name, rows in boxes.arrays().items():
        out[name][i, :len(boxes)] = rows
    out["num_boxes"][i] = len(boxes)
    out["global_from_lidar"][i] = global_from_lidar


def _write_features(cfg: ExtractConfig, out: dict, i: int, maps, cams: np.ndarray, camera: np.ndarray,
                    uv: np.ndarray, image_hw: np.ndarray) -> None:
    """Sweep ``i``'s teacher features into ``out``, in the store's layout and encoding: ``maps`` [c,D,h,w]
    float32 are the patch maps of cameras ``cams``; ``camera`` [m] indexes ``cams`` (-1: no camera), ``uv``
    [m,2] the points' pixels, ``image_hw`` [c,2] the cameras' original sizes."""
    m = len(camera)
    if cfg.layout == "patches":
        cells = maps.permute(0, 2, 3, 1).numpy()  # [c, h, w, D]
        if cfg.feature_encoding == "float16":
            out["patches"][i, cams] = cells
        else:
            out["patches_int8"][i, cams], out["patches_scale"][i, cams] = encode_int8(cells)
    elif cfg.feature_encoding == "float16":
        sample_features(maps, camera, uv, image_hw, out=out["features"][i, :m])
    else:
        feats = sample_features(maps, camera, uv, image_hw, out=np.empty((m, maps.shape[1]), np.float32))
        out["features_int8"][i, :m], out["features_scale"][i, :m] = encode_int8(feats)


class _StageClock:
    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self._t
        self._t = now


# ---------------------------------------------------------------------------------------------------
# the client


def max_boxes_for(index: FrameIndex) -> int:
    """B, the rows of the box arrays: the most boxes of any sweep, at least 1 (a chunk cannot be empty)."""
    return max(1, int(index.num_boxes.max(initial=0)))


def max_queries_for(max_points: int, grid: OccupancyGrid) -> int:
    """Upper bound on occupancy queries per sweep: every point in its own voxel, plus the free share."""
    return int(np.ceil(max_points * (1.0 + grid.free_per_occupied))) + 1


# The workers of our local cluster (measured on the extract, benchmarks/extract_speed.py):
# - glibc (``worker_setup.keep_freed_memory``): Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536,
#   which pins the mmap threshold at 128 KiB, so every large array a task frees goes back to the OS and
#   faults in again (~20% slower teacher forwards). Fixed thresholds instead, set with mallopt in each worker
#   (environment variables would lose to any the client process already has, and Dask copies its own
#   into it): buffers up to 32 MiB (glibc's maximum) come from the heap, and freed heap memory stays
#   with the process for the next task (system time per sweep 0.083 -> 0.037 s). A worker holds a few
#   hundred MB more at its peak; the job keeps no long-lived data that trimming would free.
# - The GIL: Dask's statistical profiler samples every task thread's stack every 10 ms (off), and the
#   worker's event loop wakes every 20 ms to time itself, every 100 ms to read its memory and every
#   500 ms for system statistics, each time taking the GIL from the task threads between torch ops
#   (now 1 s, 1 s, 2 s; the memory limit is still enforced, a second later at worst). Teacher-only tasks
#   on 1 worker x 2 threads: 1.455 -> 1.497 scans/s (two runs each), the rate of plain threads.
_LOCAL_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.admin.system-monitor.gil.enabled": False,  # polls the GIL every 1 ms when gilknocker is installed
}


def check_teacher_never_saw(teacher: TeacherConfig, dataroot: str, version: str, dataset: str = "nuscenes") -> None:
    """Refuse a stand-in teacher trained on frames of the very synthetic world it would be extracted on
    (evaluation worlds must be disjoint from it). Its weights file records the world's ``synth.json``; the
    world is recognised by its scene tokens, which the generator derives from its seed, so deleting or
    editing the dataroot's ``synth.json`` does not hide it. A SemanticKITTI layout has no tokens: there the
    seed its ``synth.json`` records is compared (which deleting the file does hide)."""
    import json

    from pipeline.synth.write import scene_token
    from pipeline.teacher import weights_description

    if teacher.weights is None:
        return
    seen = (weights_description(teacher.weights).get("stand_in") or {}).get("world") or {}
    if "seed" not in seen:
        return
    tables = os.path.join(dataroot, version, "scene.json")
    if dataset == "semantickitti":  # no scene tokens in this layout: its synth.json names the world's seed
        try:
            with open(os.path.join(dataroot, "synth.json")) as f:
                written = json.load(f)
        except (OSError, ValueError):
            return
        if written.get("seed") == seen["seed"]:
            raise ExtractError(f"teacher weights {teacher.weights} were trained on frames of synthetic world seed "
                               f"{seen['seed']}, and {dataroot} is that world (its synth.json): extract a world "
                               f"written with another --seed")
        return
    try:
        with open(tables) as f:
            tokens = {r.get("token") for r in json.load(f)}
    except (OSError, ValueError, TypeError, AttributeError):
        return  # the index reports unreadable tables
    theirs = {scene_token(seen["seed"], i) for i in range(int(seen.get("scenes", 0)) or 1000)}
    if tokens & theirs:
        raise ExtractError(f"teacher weights {teacher.weights} were trained on frames of synthetic world seed "
                           f"{seen['seed']}, and {len(tokens & theirs)} scenes of {dataroot} are from that world: "
                           f"extract a world written with another --seed")


def check_orientation(size: tuple[int, int], image_hw: np.ndarray) -> None:
    """Refuse a teacher input (``size`` = (H, W)) that stands the other way from the cameras' images
    (``image_hw`` [K, 2]): ``--teacher-size 224x448`` given for 448x224 (or the old HEIGHTxWIDTH
    ``--image-size 448x224`` for 224x448) would feed the teacher portrait images of landscape cameras without
    a word."""
    h, w = size
    cams = np.asarray(image_hw).reshape(-1, 2)
    cams = cams[(cams > 0).all(axis=1) & (cams[:, 0] != cams[:, 1])]
    if h == w or not len(cams):
        return
    landscape = bool((cams[:, 1] > cams[:, 0]).mean() >= 0.5)
    if (w > h) != landscape:
        ch, cw = (int(v) for v in cams[0])
        raise ExtractError(f"--teacher-size {w}x{h} (WIDTHxHEIGHT) is a {'portrait' if h > w else 'landscape'} "
                           f"teacher input ({w} wide, {h} high) for {'landscape' if landscape else 'portrait'} cameras "
                           f"({cw}x{ch}); did you mean --teacher-size {h}x{w}?")


def _lost_attempts(dask_scheduler=None) -> int:
    """Attempts of extract tasks lost to dying workers so far (each one retried by the scheduler); run on
    the scheduler."""
    prefix = dask_scheduler.task_prefixes.get("extract_group")
    return int(prefix.suspicious) if prefix is not None else 0


def run_extract(cfg: ExtractConfig, progress: bool = True, command: str = "", strict: bool = False,
                break_lock: bool = False) -> dict:
    """Extract the whole dataset (or resume); returns the store summary with this job's ``failures``
    {sweep: reason}, ``warnings`` {sweep: [...]} and ``retries``. A sweep that fails is recorded in the
    store and the job goes on (``strict``: it stops at the first failure, cancelling the rest)."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.distributed import Client, LocalCluster, as_completed
    from distributed import KilledWorker
    from tqdm import tqdm

    from pipeline.frames import build_nuscenes_index
    from pipeline.lock import StoreLock
    from pipeline.verify import store_info
    from pipeline.worker_setup import LocalWorkerSetup

    check_out(cfg.out, cfg.overwrite)
    cfg = dataclasses.replace(cfg, out=local_path(cfg.out))  # one spelling for the store, its lock and the tasks
    check_teacher_never_saw(cfg.teacher, cfg.dataroot, cfg.version, cfg.dataset)
    started = time.perf_counter()

    def say(text: str) -> None:  # the phases before the progress bar, one line each
        if progress:
            print(f"extract: {text}", file=sys.stderr, flush=True)

    lock = StoreLock(local_path(cfg.out), break_stale=break_lock).acquire()
    # the tables are read in a thread while the cluster starts and its workers build the teacher
    say(f"reading the tables of {os.path.join(cfg.dataroot, cfg.version)} (split {cfg.split})"
        if cfg.dataset == "nuscenes" else f"indexing the sequences of {cfg.dataroot} (split {cfg.split})")
    reader = ThreadPoolExecutor(1, thread_name_prefix="cdpipe-index")
    if cfg.dataset == "semantickitti":
        from pipeline.semantickitti import build_semantickitti_index

        index_future = reader.submit(build_semantickitti_index, cfg.dataroot, cfg.split)
    else:
        index_future = reader.submit(build_nuscenes_index, cfg.dataroot, cfg.version, cfg.split)
    reader.shutdown(wait=False)  # its one thread ends with the index
    client = cluster = None
    in_process = not cfg.scheduler and cfg.workers == 0
    if in_process:  # the tasks set torch's process-wide thread count: given back when the job ends
        import torch

        torch_threads = torch.get_num_threads()
    failures: dict[int, str] = {}
    warnings: dict[int, list[str]] = {}
    try:
        if cfg.scheduler:
            say(f"connecting to the Dask scheduler at {cfg.scheduler}; its workers build the teacher "
                f"{cfg.teacher.name}")
            client = Client(cfg.scheduler)
        else:
            workers = "a Dask worker in this process" if in_process else plural(cfg.workers, "Dask worker process")
            say(f"starting {workers} ({plural(cfg.tasks, 'task')} at once{' each' if cfg.workers > 1 else ''}), "
                f"building the teacher {cfg.teacher.name}")
            # CRITICAL: workers log a heartbeat traceback when the cluster closes under them; task errors
            # still reach us as exceptions. ":0" keeps two jobs on one machine off one port.
            with dask.config.set(_LOCAL_WORKER_CONFIG):
                cluster = LocalCluster(n_workers=max(1, cfg.workers), threads_per_worker=cfg.tasks,
                                       processes=not in_process, dashboard_address=":0",
                                       silence_logs=logging.CRITICAL)
            client = Client(cluster)
            if not in_process:  # its malloc settings and fast exit are for worker processes only
                client.register_plugin(LocalWorkerSetup())
        lost_before = client.run_on_scheduler(_lost_attempts)
        # every worker imports torch and timm and builds the teacher while the client reads the tables;
        # the first to finish describes the teacher (name, weights sha256, feature size) for the store
        warm = [client.submit(warm_worker, cfg.teacher, cfg.device, workers=[w], allow_other_workers=True, pure=False)
                for w in client.scheduler_info()["workers"]] or [client.submit(warm_worker, cfg.teacher, cfg.device,
                                                                               pure=False)]
        index = index_future.result()
        unusable = sum(map(bool, index.failure))
        say(f"tables read ({time.perf_counter() - started:.1f} s): {plural(len(index), 'sweep')} in "
            f"{plural(len(index.scenes), 'scene')}" + (f", {unusable} unusable (to be recorded as failed)"
                                                        if unusable else ""))
        check_orientation(cfg.teacher.image_size, index.image_hw[index.camera_ok])
        if all(index.failure):
            raise ExtractError(f"every one of the {len(index)} sweeps is unusable; the first: {index.failure[0]}")
        if strict and any(index.failure):
            first = next(f for f in index.failure if f)
            raise ExtractError(f"--strict: {first}")
        try:
            teacher_desc, feature_dim = next(as_completed(warm)).result()
        except KilledWorker:
            raise ExtractError(f"Dask workers died repeatedly while building the teacher {cfg.teacher.name} (often "
                               "out of memory: lower --workers or --tasks-per-worker, or give the workers more "
                               "memory)") from None
        except Exception as e:  # weights that do not fit the model, a model without patch tokens...
            raise ExtractError(f"the teacher {cfg.teacher.name} could not be built: {decode_reason(e)}") from None
        say(f"teacher ready ({time.perf_counter() - started:.1f} s): {cfg.teacher.name}, D = {feature_dim}, on "
            f"{teacher_desc['device']}")
        max_points = int(index.num_points.max())
        max_q = max_queries_for(max_points, cfg.occupancy)
        attrs = store_attrs(cfg, index, teacher_desc, feature_dim, max_points, max_q, command)
        existed = os.path.exists(os.path.join(cfg.out, "zarr.json")) and not cfg.overwrite
        writer = StoreWriter(cfg.out, attrs, overwrite=cfg.overwrite, job=lock.job)
        done = writer.done()  # a damaged chunk of done reads as 0: its sweeps are extracted again
        k = cfg.sweeps_per_shard
        todo = [s0 for s0 in range(0, len(index), k) if not done[s0:s0 + k].all()]
        n_done_before = len(index) - sum(min(k, len(index) - s0) for s0 in todo)
        say(f"resuming {cfg.out}: {n_done_before} of {plural(len(index), 'sweep')} already done" if existed
            else f"{'started' if cfg.overwrite else 'created'} the store {cfg.out} ({plural(len(index), 'sweep')})")
        task_started = time.perf_counter()
        stage_seconds: dict[str, float] = {}
        futures = {client.submit(extract_group, cfg, index.select(range(s0, min(s0 + k, len(index)))), s0, lock.job,
                                 pure=False): s0 for s0 in todo}
        bar = tqdm(total=len(index), initial=n_done_before, desc="extract sweeps", unit="sweep",
                   disable=not progress or not todo)
        try:
            for fut in as_completed(futures):
                s0 = futures[fut]
                try:
                    result = fut.result()
                except StoreWriteError as e:
                    raise StoreWriteError(f"{e}. The input is not at fault: free space on that file system (or "
                                          f"fix its permissions) and rerun the same command; the sweeps already "
                                          f"complete are kept") from None
                except Exception as e:  # the whole task failed: a worker died repeatedly, or a bug
                    why = ("Dask workers died repeatedly running it (often out of memory: lower --workers, "
                           "--tasks-per-worker or --sweeps-per-shard)" if isinstance(e, KilledWorker)
                           else f"{type(e).__name__}: {decode_reason(e)}")
                    rows = slice(s0, min(s0 + k, len(index)))
                    recorded = writer.fail_sweeps(
                        s0, [f"task for sweeps {rows.start}-{rows.stop - 1} failed: {why}"] * (rows.stop - rows.start),
                        index.sample_token[rows], index.lidar_token[rows])
                    result = {"sweeps": rows.stop - rows.start, "done": 0, "warnings": {}, "failures": recorded}
                bar.update(result["sweeps"])
                failures.update(result.pop("failures"))
                warnings.update(result.pop("warnings"))
                for stage, sec in result.items():
                    if stage not in ("sweeps", "done"):
                        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + sec
                if failures:
                    bar.set_postfix(failed=len(failures))
                if strict and failures:
                    s = min(failures)
                    raise ExtractError(f"--strict: sweep {s} failed: {failures[s]}. Sweeps already written are "
                                       f"kept; rerun to resume")
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        finally:
            bar.close()
        retries = client.run_on_scheduler(_lost_attempts) - lost_before
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        if in_process:
            torch.set_num_threads(torch_threads)
        lock.release()
    task_seconds = time.perf_counter() - task_started
    summary = store_info(cfg.out)
    summary["seconds"] = time.perf_counter() - started
    summary["task_seconds"] = task_seconds
    summary["stage_seconds"] = stage_seconds  # summed over workers
    summary["resumed_from"] = n_done_before
    summary["job"] = {"failures": failures, "warnings": warnings, "retries": retries,
                      "broken_lock": lock.broken}
    return summary
