"""``cdpipe extract``: run the frozen teacher once over every camera frame and write the store.

Client: start the Dask workers (each imports torch and timm and builds the teacher right away, which
also gives the store its teacher record), meanwhile build the frame index from the tables, create the
store (or reopen it to resume), and hand groups of ``sweeps_per_shard`` consecutive sweeps to the
workers. Worker task (``extract_group``): read the LiDAR sweeps and all their camera images, run the
teacher on the whole batch of images, project every point into every camera, sample features, build
occupancy targets, and write whole shards (whole chunks where an array has no shards) of every array;
``done`` last. A rerun skips groups whose ``done`` flags are all set, so a killed
job loses at most the groups in flight.
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from pipeline import __version__
from pipeline.frames import ExtractError, FrameIndex
from pipeline.occupancy import OccupancyGrid, occupancy_targets
from pipeline.projection import assign_views
from pipeline.schema import (ARRAYS, MULTI_VIEW_RULE, PIXEL_CONVENTION, SAMPLING, SCHEMA_VERSION, StoreError,
                             check_compatible)
from pipeline.teacher import TeacherConfig


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
    # The local cluster: ``workers`` processes, each holding one teacher and running ``tasks_per_worker``
    # tasks at once in threads (0: cores // workers), each task's torch ops on ``torch_threads`` threads
    # (0: cores // (workers x tasks_per_worker), at least 1). On the CPU, threads sharing one teacher run
    # it as fast as a process per core or faster (teacher alone on 2 cores: 2 threads 1.47-1.51 scans/s;
    # 2 processes 1.34-1.37 with glibc's defaults, 1.52 with the malloc settings below), and torch, timm
    # and the model load once: start-up 4.5-4.8 s instead of 8.1 s, one model in memory.
    workers: int = 1
    tasks_per_worker: int = 0
    torch_threads: int = 0
    scheduler: str | None = None  # address of a running dask scheduler; None: a LocalCluster
    overwrite: bool = False

    def __post_init__(self):
        if self.dataset != "nuscenes":
            raise ValueError(f"--dataset {self.dataset!r}: only 'nuscenes' (and nuScenes-format data) is supported")
        if self.sweeps_per_shard < 1 or self.workers < 1:
            raise ValueError("--sweeps-per-shard and --workers must be at least 1")
        if self.tasks_per_worker < 0 or self.torch_threads < 0:
            raise ValueError("--tasks-per-worker and --torch-threads must be 0 (automatic) or more")
        if self.min_depth <= 0:
            raise ValueError("--min-depth must be positive")

    @property
    def tasks(self) -> int:
        """Tasks each local worker runs at once."""
        return self.tasks_per_worker or max(1, _cores() // self.workers)

    @property
    def threads(self) -> int:
        """torch threads per task (one on a cluster given by --scheduler, unless set)."""
        if self.torch_threads or self.scheduler:
            return self.torch_threads or 1
        return max(1, _cores() // (self.workers * self.tasks))


def _cores() -> int:
    """CPUs this process may use (affinity and container limits counted, as Dask counts them)."""
    from dask.system import CPU_COUNT

    return CPU_COUNT


# ---------------------------------------------------------------------------------------------------
# the store


def _codecs(spec) -> dict:
    """Compression per array, chosen by measurement (storage_schema.md, 'Chunking and compression')."""
    import zarr

    if spec.dtype == "str":
        return {}
    typesize = np.dtype(spec.dtype).itemsize
    if spec.dtype == "float16":  # the features: nearly zstd's size at 1.5x its write speed
        return {"compressors": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=2)}
    return {"compressors": zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=typesize)}


def store_attrs(cfg: ExtractConfig, index: FrameIndex, teacher: dict, feature_dim: int, max_points: int,
                max_queries: int, command: str) -> dict:
    import torch
    import zarr

    return {
        "schema_version": SCHEMA_VERSION,
        "num_sweeps": len(index),
        "max_points": max_points,
        "max_queries": max_queries,
        "feature_dim": feature_dim,
        "sweeps_per_shard": cfg.sweeps_per_shard,
        "cameras": list(index.cameras),
        "scenes": [dict(s) for s in index.scenes],
        "has_labels": index.label_path is not None,
        "dataset": {"name": cfg.dataset, "version": cfg.version, "split": cfg.split,
                    "dataroot": os.path.abspath(cfg.dataroot)},
        "teacher": teacher,
        "projection": {"min_depth_m": cfg.min_depth, "multi_view_rule": MULTI_VIEW_RULE,
                       "pixel_convention": PIXEL_CONVENTION, "sampling": SAMPLING},
        "occupancy": {**cfg.occupancy.to_dict(), "frame": "LiDAR frame of the sweep, sensor at the origin",
                      "seed": cfg.occupancy_seed},
        "provenance": {"code_version": __version__,
                       "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       "command": command, "torch_version": torch.__version__, "zarr_version": zarr.__version__},
    }


# attributes that must agree for a rerun to resume into an existing store
_RESUME_KEYS = ("schema_version", "num_sweeps", "max_points", "max_queries", "feature_dim", "sweeps_per_shard",
                "cameras", "has_labels", "dataset", "teacher", "projection", "occupancy")


def create_or_open_store(cfg: ExtractConfig, attrs: dict):
    """Create the store with every array (empty), or reopen a compatible one to resume."""
    import zarr

    local = "://" not in cfg.out
    if local and os.path.isdir(cfg.out) and os.listdir(cfg.out) and not os.path.exists(
            os.path.join(cfg.out, "zarr.json")):
        # opening with mode "w" would delete whatever is there
        raise StoreError(f"{cfg.out} exists and is not a Zarr store; refusing to write over it. Choose another --out.")
    group = None
    if not cfg.overwrite:
        try:
            group = zarr.open_group(cfg.out, mode="r+")  # local path or URL
        except (FileNotFoundError, zarr.errors.GroupNotFoundError):
            group = None
    if group is not None:
        old = dict(group.attrs)
        check_compatible(old, cfg.out)
        diff = [k for k in _RESUME_KEYS if _jsonable(old.get(k)) != _jsonable(attrs[k])]
        if diff:
            raise StoreError(f"{cfg.out} was written with other settings ({', '.join(diff)} differ), so this run "
                             f"cannot resume it. Write to a new --out, or pass --overwrite to start it again.")
        return group
    group = zarr.open_group(cfg.out, mode="w")
    group.attrs.update(attrs)
    s, k = attrs["num_sweeps"], cfg.sweeps_per_shard
    dims = {"P": attrs["max_points"], "Q": attrs["max_queries"], "D": attrs["feature_dim"],
            "C": len(attrs["cameras"])}
    for spec in ARRAYS:
        if spec.name == "labels" and not attrs["has_labels"]:
            continue
        shape = spec.shape(s, dims)
        if spec.per_point:
            chunks, shards = (1, *shape[1:]), ((k, *shape[1:]) if spec.sharded else None)
        else:
            chunks, shards = (k, *shape[1:]), None
        group.create_array(spec.name, shape=shape, dtype=str if spec.dtype == "str" else spec.dtype,
                           chunks=chunks, shards=shards, fill_value=spec.fill, **_codecs(spec))
    consolidate(cfg.out)
    return zarr.open_group(cfg.out, mode="r+")


def consolidate(url: str) -> None:
    """Copy every array's metadata into the root ``zarr.json`` (once, when the store is created): opening
    the store and its arrays is then one read instead of one per array, which each extract task does."""
    import warnings

    import zarr

    with warnings.catch_warnings():  # "not part of the Zarr v3 specification": readers may ignore it
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(url)


def _jsonable(value):
    import json

    return json.loads(json.dumps(value))


# ---------------------------------------------------------------------------------------------------
# the worker task


_TEACHER_LOCK = threading.Lock()


def _teacher(cfg: TeacherConfig):
    """The worker's one teacher, built on first use; the tasks running in the worker's threads share it
    (its forward keeps no state)."""
    with _TEACHER_LOCK:
        return _build_teacher(cfg)


@lru_cache(maxsize=1)
def _build_teacher(cfg: TeacherConfig):
    import torch

    from pipeline.teacher import FrozenTeacher

    teacher = FrozenTeacher(cfg)
    return teacher.to("cuda") if torch.cuda.is_available() else teacher


def warm_worker(cfg: TeacherConfig) -> tuple[dict, int]:
    """Build (and keep) the teacher in this worker; return its provenance record and feature size."""
    teacher = _teacher(cfg)
    return teacher.describe(), teacher.feature_dim


def read_sweep(index: FrameIndex, i: int) -> tuple[np.ndarray, np.ndarray | None]:
    path = index.lidar_path[i]
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise ExtractError(f"cannot read LiDAR file {path}: {e}") from None
    if raw.size % 5 or raw.size // 5 != index.num_points[i]:
        raise ExtractError(f"LiDAR file {path} holds {raw.size} floats, expected {index.num_points[i]} points x 5 "
                           f"(x, y, z, intensity, ring): the file is truncated or not a nuScenes .pcd.bin")
    points = raw.reshape(-1, 5)
    labels = None
    if index.label_path is not None:
        lpath = index.label_path[i]
        try:
            labels = np.fromfile(lpath, dtype=np.uint8)
        except OSError as e:
            raise ExtractError(f"cannot read lidarseg file {lpath}: {e}") from None
        if len(labels) != len(points):
            raise ExtractError(f"lidarseg file {lpath} has {len(labels)} labels for {len(points)} points in {path}")
    return points, labels


def read_image(path: str, hw, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one camera image, check it has the size its record says (``hw`` = (H, W)), and resize it
    to ``size`` = (h, w) with PIL bicubic when given (what ``FrozenTeacher.preprocess`` would do, but
    without a round trip through numpy). Returns uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size != (int(hw[1]), int(hw[0])):
                raise ExtractError(f"camera image {path} is {im.size[0]}x{im.size[1]}, but its sample_data record "
                                   f"says {hw[1]}x{hw[0]}")
            im = im if im.mode == "RGB" else im.convert("RGB")
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BICUBIC)  # decodes, then resizes
            arr = np.asarray(im)
    except FileNotFoundError:
        raise ExtractError(f"camera image missing: {path}") from None
    except (OSError, UnidentifiedImageError) as e:
        raise ExtractError(f"camera image unreadable (corrupt or truncated): {path}: {e}") from None
    return arr


def extract_group(cfg: ExtractConfig, index: FrameIndex, first_sweep: int, dims: dict) -> dict[str, float]:
    """Extract sweeps ``first_sweep .. first_sweep + len(index)`` and write them.

    Returns the number of sweeps and the seconds spent per stage (read, teacher, project, occupancy, write).
    """
    import torch

    from pipeline.teacher import sample_features

    torch.set_num_threads(cfg.threads)
    teacher = _teacher(cfg.teacher)
    n, p, q, d, c = len(index), dims["P"], dims["Q"], dims["D"], len(index.cameras)
    fdtype = np.float16
    out = {
        "points": np.zeros((n, p, 5), np.float32), "labels": np.zeros((n, p), np.uint8),
        "features": np.zeros((n, p, d), fdtype), "valid": np.zeros((n, p), bool),
        "camera": np.full((n, p), -1, np.int8), "pixel": np.full((n, p, 2), -1.0, np.float32),
        "occ_voxels": np.full((n, q, 3), -1, np.int16), "occ_labels": np.zeros((n, q), np.uint8),
        "num_points": np.zeros(n, np.int32), "num_queries": np.zeros(n, np.int32),
        "scene_index": index.scene_index.astype(np.int32), "timestamp": index.timestamp,
        "camera_timestamp": index.camera_timestamp, "sample_token": np.array(index.sample_token, dtype=object),
        "lidar_token": np.array(index.lidar_token, dtype=object),
    }
    clock = _StageClock()
    images = [read_image(index.image_path[i][j], index.image_hw[i, j], cfg.teacher.image_size)
              for i in range(n) for j in range(c)]
    x = teacher.preprocess(images).to(teacher.mean.device)
    clock.lap("read")
    fmaps = teacher.forward(x).cpu()  # [n*c, D, h, w]
    clock.lap("teacher")
    for i in range(n):
        points, labels = read_sweep(index, i)
        m = len(points)
        if m > p:
            raise ExtractError(f"{index.lidar_path[i]} has {m} points, more than the store's {p}")
        camera, uv = assign_views(points, index.cam_from_lidar[i], index.intrinsics[i], index.image_hw[i],
                                  cfg.min_depth)
        sample_features(fmaps[i * c:(i + 1) * c], camera, uv, index.image_hw[i], out=out["features"][i, :m])
        clock.lap("project")
        rng = np.random.default_rng([cfg.occupancy_seed, first_sweep + i])
        voxels, occ = occupancy_targets(points[:, :3], cfg.occupancy, rng)
        clock.lap("occupancy")
        if len(occ) > q:
            raise ExtractError(f"{index.lidar_path[i]}: {len(occ)} occupancy queries exceed the store's {q}")
        out["points"][i, :m] = points
        if labels is not None:
            out["labels"][i, :m] = labels
        out["valid"][i, :m] = camera >= 0
        out["camera"][i, :m] = camera
        out["pixel"][i, :m] = uv  # -1 where no camera sees the point
        out["occ_voxels"][i, :len(occ)] = voxels
        out["occ_labels"][i, :len(occ)] = occ
        out["num_points"][i], out["num_queries"][i] = m, len(occ)

    sl = slice(first_sweep, first_sweep + n)
    arrays = _open_for_writing(cfg.out)
    for spec in ARRAYS:
        if spec.name != "done" and spec.name in arrays:
            arrays[spec.name][sl] = out[spec.name]
    arrays["done"][sl] = np.ones(n, np.uint8)  # last: the sweeps are complete
    clock.lap("write")
    return {"sweeps": n, **clock.seconds}


_ZARR_CONFIG_LOCK = threading.Lock()


def _open_for_writing(url: str) -> dict:
    """The store's arrays, opened to write whole chunks. Every chunk a task writes holds sweeps, and
    zarr's check for all-fill chunks (to skip writing them) scans each chunk at about the cost of
    compressing it (float16 compares are slow), so the arrays are opened with the check off. zarr
    reads that setting when an array is opened, from its process-wide config, whose ``set`` restores
    the old value on exit without a lock: tasks in other threads open theirs one at a time."""
    import zarr

    with _ZARR_CONFIG_LOCK, zarr.config.set({"array.write_empty_chunks": True}):
        group = zarr.open_group(url, mode="r+")
        return {spec.name: group[spec.name] for spec in ARRAYS if spec.name in group}


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


def check_teacher_never_saw(teacher: TeacherConfig, dataroot: str) -> None:
    """Refuse a stand-in teacher trained on frames of the very synthetic world it would be extracted on
    (its weights file records the world's ``synth.json``; evaluation worlds must be disjoint from it)."""
    import json

    from pipeline.teacher import weights_description

    if teacher.weights is None:
        return
    seen = (weights_description(teacher.weights).get("stand_in") or {}).get("world") or {}
    synth = os.path.join(dataroot, "synth.json")
    if "seed" not in seen or not os.path.isfile(synth):
        return
    with open(synth) as f:
        seed = json.load(f).get("seed")
    if seed == seen["seed"]:
        raise ExtractError(f"teacher weights {teacher.weights} were trained on frames of synthetic world seed {seed}, "
                           f"the world in {dataroot}: extract a world written with another --seed")


def run_extract(cfg: ExtractConfig, progress: bool = True, command: str = "") -> dict:
    """Extract the whole dataset (or resume); returns the store summary."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.distributed import Client, LocalCluster, as_completed
    from distributed import KilledWorker
    from tqdm import tqdm

    from pipeline.frames import build_nuscenes_index
    from pipeline.worker_setup import LocalWorkerSetup

    check_teacher_never_saw(cfg.teacher, cfg.dataroot)
    started = time.perf_counter()
    # the tables are read in a thread while the cluster starts and its workers build the teacher
    reader = ThreadPoolExecutor(1, thread_name_prefix="cdpipe-index")
    index_future = reader.submit(build_nuscenes_index, cfg.dataroot, cfg.version, cfg.split)
    reader.shutdown(wait=False)  # its one thread ends with the index
    if cfg.scheduler:
        client, cluster = Client(cfg.scheduler), None
    else:
        # CRITICAL: workers log a heartbeat traceback when the cluster closes under them; task errors
        # still reach us as exceptions. ":0" keeps two jobs on one machine off one port.
        with dask.config.set(_LOCAL_WORKER_CONFIG):
            cluster = LocalCluster(n_workers=cfg.workers, threads_per_worker=cfg.tasks, processes=True,
                                   dashboard_address=":0", silence_logs=logging.CRITICAL)
        client = Client(cluster)
        client.register_plugin(LocalWorkerSetup())
    try:
        # every worker imports torch and timm and builds the teacher while the client reads the tables;
        # the first to finish describes the teacher (name, weights sha256, feature size) for the store
        warm = [client.submit(warm_worker, cfg.teacher, workers=[w], allow_other_workers=True, pure=False)
                for w in client.scheduler_info()["workers"]] or [client.submit(warm_worker, cfg.teacher, pure=False)]
        index = index_future.result()
        try:
            teacher_desc, feature_dim = next(as_completed(warm)).result()
        except KilledWorker:
            raise ExtractError(f"Dask workers died repeatedly while building the teacher {cfg.teacher.name} (often "
                               f"out of memory: lower --workers or --tasks-per-worker, or give the workers more memory)") from None
        max_points = int(index.num_points.max())
        max_q = max_queries_for(max_points, cfg.occupancy)
        attrs = store_attrs(cfg, index, teacher_desc, feature_dim, max_points, max_q, command)
        group = create_or_open_store(cfg, attrs)
        done = group["done"][:]
        k = cfg.sweeps_per_shard
        todo = [s0 for s0 in range(0, len(index), k) if not done[s0:s0 + k].all()]
        n_done_before = len(index) - sum(min(k, len(index) - s0) for s0 in todo)
        dims = {"P": max_points, "Q": max_q, "D": feature_dim}
        task_started = time.perf_counter()
        stage_seconds: dict[str, float] = {}
        futures = [client.submit(extract_group, cfg, index.select(range(s0, min(s0 + k, len(index)))), s0, dims,
                                 pure=False) for s0 in todo]
        bar = tqdm(total=len(index), initial=n_done_before, desc="extract sweeps", unit="sweep",
                   disable=not progress or not todo)
        try:
            for fut in as_completed(futures):
                result = fut.result()
                bar.update(result["sweeps"])
                for stage, sec in result.items():
                    if stage != "sweeps":
                        stage_seconds[stage] = stage_seconds.get(stage, 0.0) + sec
        except KilledWorker as e:
            for fut in futures:
                fut.cancel()
            raise ExtractError(f"Dask workers died repeatedly while running {e.args[0] if e.args else 'a task'} "
                               f"(often out of memory: lower --workers, --tasks-per-worker or --sweeps-per-shard). Sweeps already "
                               f"written are kept; rerun the same command to resume.") from None
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        finally:
            bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    task_seconds = time.perf_counter() - task_started
    summary = summarise_store(cfg.out)
    summary["seconds"] = time.perf_counter() - started
    summary["task_seconds"] = task_seconds
    summary["stage_seconds"] = stage_seconds  # summed over workers
    summary["resumed_from"] = n_done_before
    return summary


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def summarise_store(url: str) -> dict:
    """What is in a store, for people: sweeps, points, coverage, occupancy, size, teacher."""
    from pipeline.schema import open_store

    group = open_store(url)
    a = dict(group.attrs)
    done = group["done"][:].astype(bool)
    n_points = group["num_points"][:][done]
    n_valid = sum(int(group["valid"][s, :n].sum()) for s, n in zip(np.nonzero(done)[0], n_points))
    n_q = group["num_queries"][:][done]
    t = a["teacher"]
    size = directory_bytes(url) if "://" not in url else None
    total_points = int(n_points.sum())
    return {
        "store": url, "sweeps": int(done.sum()), "sweeps_total": a["num_sweeps"], "points": total_points,
        "points_with_feature": n_valid, "feature_dim": a["feature_dim"],
        "occupancy_queries_per_sweep": float(n_q.mean()) if len(n_q) else 0.0,
        "bytes": size, "bytes_per_point": size / total_points if size and total_points else None,
        "raw_float16_bytes_per_point": 2 * a["feature_dim"],
        "teacher": t["name"], "teacher_weights": t["weights"], "random_teacher": t["weights"] == "random",
        "teacher_architecture": t.get("architecture") or {}, "teacher_stand_in": t.get("stand_in"),
        "layer": t["layer"], "image_size": t["image_size"],
        "dataset": a["dataset"], "scenes": len(a["scenes"]), "schema_version": a["schema_version"],
    }


def teacher_label(summary: dict) -> str:
    """The teacher in one line: its name, architecture overrides, and what kind of stand-in it is, if any."""
    name = summary["teacher"]
    arch = summary.get("teacher_architecture") or {}
    if arch:
        name += " [" + ", ".join(f"{k}={v}" for k, v in sorted(arch.items())) + "]"
    if summary["random_teacher"]:
        return f"{name} (RANDOM INITIALISATION, not pretrained: a stand-in teacher)"
    stand_in = summary.get("teacher_stand_in")
    if stand_in:
        world = stand_in.get("world") or {}
        made = (f"STAND-IN TEACHER, recipe {stand_in.get('recipe')}, "
                + ("trained WITH per-pixel labels" if stand_in.get("labels_used") else "trained without labels")
                + (f" on synthetic world seed {world['seed']}" if "seed" in world else "") + "; ")
    else:
        made = ""
    return f"{name} ({made}weights sha256 {summary['teacher_weights']})"

