"""Whole-extract throughput against the teacher forward alone, and stored bytes per point.

    .venv/bin/python benchmarks/extract_speed.py [--dataroot DIR] [--teacher vit_small_patch14_dinov2]
                                                 [--image-size 224x448] [--workers 1] [--tasks-per-worker 0]
                                                 [--reference-scans 60]

Without --dataroot it first writes a demo-like world of --scenes x --samples keyframes (800x450; default
4 x 60 = 240 scans), long enough that the fixed start-up (cluster, importing torch and timm, building
the teacher, reading the tables: about 4 s on 2 cores) weighs little against the task phase. Then:
1. runs the whole ``cdpipe extract`` (random teacher, its default local cluster unless --workers /
   --tasks-per-worker say otherwise) and times it end to end, and its task phase alone;
2. decodes and resizes the images of --reference-scans scans spread evenly over the dataset once, then
   times only the teacher forward over them, one scan (6 images) per batch, in three ways: one process
   whose torch uses every core; one process per core, one torch thread each; one process running one
   thread per core (one torch thread each) over one shared teacher. The fastest is the reference
   (every scan costs the teacher the same, so a subset gives its rate). The threads mode (the fastest
   so far) is also timed just before the extract: this shared machine's speed drifts by up to 30%
   over minutes, and the reference is the fastest rate seen either side of the extract;
3. prints scans/s of each and their ratio (goal >= 0.95), and the store's bytes per point against raw
   float16 per-point features (2 D bytes per real point), whole and for the arrays carrying features.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from pipeline.extract import ExtractConfig, run_extract
from pipeline.verify import directory_bytes


def _teacher_batches(tcfg, paths, threads: int):
    from PIL import Image

    from pipeline.teacher import FrozenTeacher

    torch.set_num_threads(threads)
    teacher = FrozenTeacher(tcfg)
    batches = [teacher.preprocess([np.asarray(Image.open(p).convert("RGB")) for p in scan]) for scan in paths]
    teacher.forward(batches[0])  # warm-up
    return teacher, batches


def _teacher_alone(tcfg, paths, threads: int, barrier=None) -> float:
    """Seconds of teacher forward alone over the scans' images (decoded and resized beforehand)."""
    teacher, batches = _teacher_batches(tcfg, paths, threads)
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    for x in batches:
        teacher.forward(x)
    return time.perf_counter() - t0


def _teacher_share(tcfg, paths, barrier, results) -> None:
    results.put(_teacher_alone(tcfg, paths, 1, barrier))


def _teacher_threads(tcfg, paths, n_threads: int) -> float:
    """Seconds of teacher forward over the scans by ``n_threads`` threads sharing one teacher."""
    from concurrent.futures import ThreadPoolExecutor

    teacher, batches = _teacher_batches(tcfg, paths, 1)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(teacher.forward, batches))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataroot")
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--teacher", default="vit_small_patch14_dinov2")
    ap.add_argument("--image-size", default="224x448")
    ap.add_argument("--workers", type=int, default=ExtractConfig.workers)
    ap.add_argument("--tasks-per-worker", type=int, default=ExtractConfig.tasks_per_worker)
    ap.add_argument("--sweeps-per-shard", type=int, default=ExtractConfig.sweeps_per_shard)
    ap.add_argument("--layout", default=ExtractConfig.layout)
    ap.add_argument("--feature-encoding", default=ExtractConfig.feature_encoding)
    ap.add_argument("--scenes", type=int, default=4, help="scenes of the generated world")
    ap.add_argument("--samples", type=int, default=60, help="keyframes per scene of the generated world")
    ap.add_argument("--reference-scans", type=int, default=60, help="scans the teacher-alone reference times "
                    "(0: all)")
    ap.add_argument("--keep", action="store_true", help="keep the store (and generated world) afterwards")
    args = ap.parse_args()
    h, w = (int(v) for v in args.image_size.split("x"))
    from pipeline.frames import build_nuscenes_index
    from pipeline.teacher import TeacherConfig

    tmp = tempfile.mkdtemp()
    dataroot = args.dataroot
    if dataroot is None:
        from pipeline.synth.write import SynthConfig, write_dataroot

        dataroot = os.path.join(tmp, "nuscenes")
        write_dataroot(SynthConfig(out=dataroot, scenes=args.scenes, samples_per_scene=args.samples),
                       progress=False)
    tcfg = TeacherConfig(name=args.teacher, random=True, image_size=(h, w))
    cfg = ExtractConfig(dataroot=dataroot, version=args.version, out=os.path.join(tmp, "store.zarr"), teacher=tcfg,
                        workers=args.workers, tasks_per_worker=args.tasks_per_worker,
                        sweeps_per_shard=args.sweeps_per_shard, layout=args.layout,
                        feature_encoding=args.feature_encoding)
    env = dict(os.environ)
    index = build_nuscenes_index(dataroot, args.version)
    n_ref = len(index) if args.reference_scans <= 0 else min(args.reference_scans, len(index))
    paths = [index.image_path[s] for s in np.linspace(0, len(index) - 1, n_ref).round().astype(int)]
    from dask.system import CPU_COUNT as cores

    t_threads_before = _teacher_threads(tcfg, paths, cores)
    t0 = time.perf_counter()
    summary = run_extract(cfg, progress=False)
    t_whole = time.perf_counter() - t0
    n_scans = summary["sweeps"]
    t_tasks = summary["task_seconds"]

    # Dask's nanny copies its worker environment into ours (MALLOC_TRIM_THRESHOLD_=65536, which makes
    # forwards ~20% slower); the reference processes start from the environment we were given
    os.environ.clear()
    os.environ.update(env)
    t_one_proc = _teacher_alone(tcfg, paths, cores)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(cores), ctx.Queue()
    procs = [ctx.Process(target=_teacher_share, args=(tcfg, paths[i::cores], barrier, results))
             for i in range(cores)]
    for p in procs:
        p.start()
    t_procs = max(results.get() for _ in procs)
    for p in procs:
        p.join()
    t_threads = _teacher_threads(tcfg, paths, cores)
    threads = f"one process, {cores} threads x 1 torch thread, one teacher"
    rates = {f"{threads} (before the extract)": n_ref / t_threads_before,
             "one process, torch on every core": n_ref / t_one_proc,
             f"{cores} processes x 1 torch thread": n_ref / t_procs,
             threads: n_ref / t_threads}
    rate_teacher = max(rates.values())
    rate_whole, rate_tasks = n_scans / t_whole, n_scans / t_tasks
    slots = cfg.workers * cfg.tasks  # tasks running at once

    raw = summary["raw_float16_bytes_per_point"]
    print(f"{n_scans} scans x 6 cameras, teacher {args.teacher} at {h}x{w}, {cores} cores, extract with "
          f"{cfg.workers} worker process(es) x {cfg.tasks} task thread(s) x {cfg.threads} torch thread(s), "
          f"{cfg.sweeps_per_shard} sweeps per task, layout {cfg.layout}, {cfg.feature_encoding}")
    print(f"teacher forward alone ({n_ref} scans; the fastest is the reference; all but the first after the extract):")
    for mode, rate in rates.items():
        print(f"  {rate:6.3f} scans/s  {mode}")
    print(f"whole extract         : {rate_whole:6.3f} scans/s  ratio {rate_whole / rate_teacher:.2f}")
    print(f"extract task phase    : {rate_tasks:6.3f} scans/s  ratio {rate_tasks / rate_teacher:.2f} "
          f"(excludes {t_whole - t_tasks:.1f} s: cluster, teacher and index start-up, store summary)")
    print(f"stored bytes/point    : {summary['bytes_per_point']:.1f}, {summary['store_fraction_of_raw']:.3f} of raw "
          f"float16 per-point features ({raw} bytes/point); the feature arrays "
          f"{summary['feature_bytes_per_point']:.1f}, {summary['feature_fraction_of_raw']:.3f} of raw; "
          f"{summary['points']} points, {100 * summary['points_with_feature'] / summary['points']:.1f}% with a feature")
    stages = summary["stage_seconds"]
    total = sum(stages.values())
    print("task time by stage    : " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in stages.items())
          + f" (of {total:.1f} task-slot seconds)")
    # what bounds the ratio: the teacher's own speed inside the tasks, and everything else
    per_scan = stages.get("teacher", 0.0) / n_scans
    print(f"teacher in the tasks  : {per_scan:.2f} s/scan per task slot vs {cores / rate_teacher:.2f} alone "
          f"(per thread or process of the reference); other stages "
          f"{(total - stages.get('teacher', 0.0)) / n_scans:.2f} s/scan; "
          f"idle {max(0.0, slots * t_tasks - total):.1f} slot-seconds in the task phase")
    print(f"store: {cfg.out} ({directory_bytes(cfg.out) / 2**20:.0f} MiB){'' if args.keep else ', removed'}")
    if not args.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
