"""Whole-extract throughput against the teacher forward alone, and stored bytes per point.

    .venv/bin/python benchmarks/extract_speed.py [--dataroot DIR] [--teacher vit_small_patch14_dinov2]
                                                 [--image-size 224x448] [--workers 2] [--reference-scans 60]

Without --dataroot it first writes a demo-like world of --scenes x --samples keyframes (800x450; default
4 x 60 = 240 scans), long enough that the fixed start-up (about 10 s on 2 cores: the cluster, and each
worker importing torch and timm and building the teacher) weighs little against the task phase. Then:
1. runs the whole ``cdpipe extract`` (random teacher, LocalCluster of --workers processes, 1 torch
   thread each) and times it end to end, and its task phase alone (cluster and index start-up out);
2. decodes and resizes the images of --reference-scans scans spread evenly over the dataset once, then
   times only the teacher forward over them, one scan (6 images) per batch: once in one process using
   every core, once as --workers processes of one thread each; the faster is the reference (every scan
   costs the teacher the same, so a subset gives its rate);
3. prints scans/s of each and their ratio (goal >= 0.85), and the store's bytes per point against raw
   float16 features.
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

from pipeline.extract import ExtractConfig, directory_bytes, run_extract


def _teacher_alone(tcfg, paths, threads: int, barrier=None) -> float:
    """Seconds of teacher forward alone over the scans' images (decoded and resized beforehand)."""
    from PIL import Image

    from pipeline.teacher import FrozenTeacher

    torch.set_num_threads(threads)
    teacher = FrozenTeacher(tcfg)
    batches = [teacher.preprocess([np.asarray(Image.open(p).convert("RGB")) for p in scan]) for scan in paths]
    teacher.forward(batches[0])  # warm-up
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    for x in batches:
        teacher.forward(x)
    return time.perf_counter() - t0


def _teacher_share(tcfg, paths, barrier, results) -> None:
    results.put(_teacher_alone(tcfg, paths, 1, barrier))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataroot")
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--teacher", default="vit_small_patch14_dinov2")
    ap.add_argument("--image-size", default="224x448")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sweeps-per-shard", type=int, default=ExtractConfig.sweeps_per_shard)
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
    # on a 2-core machine the teacher alone runs fastest as one process per core, one thread each;
    # time it both ways and compare the extract with the faster
    if dataroot is None:
        from pipeline.synth.write import SynthConfig, write_dataroot

        dataroot = os.path.join(tmp, "nuscenes")
        write_dataroot(SynthConfig(out=dataroot, scenes=args.scenes, samples_per_scene=args.samples),
                       progress=False)
    tcfg = TeacherConfig(name=args.teacher, random=True, image_size=(h, w))
    cfg = ExtractConfig(dataroot=dataroot, version=args.version, out=os.path.join(tmp, "store.zarr"), teacher=tcfg,
                        workers=args.workers, sweeps_per_shard=args.sweeps_per_shard, threads_per_worker=max(1, (os.cpu_count() or 1) // args.workers))
    t0 = time.perf_counter()
    summary = run_extract(cfg, progress=False)
    t_whole = time.perf_counter() - t0
    n_scans = summary["sweeps"]
    t_tasks = summary["task_seconds"]

    index = build_nuscenes_index(dataroot, args.version)
    n_ref = len(index) if args.reference_scans <= 0 else min(args.reference_scans, len(index))
    paths = [index.image_path[s] for s in np.linspace(0, len(index) - 1, n_ref).round().astype(int)]
    t_one_proc = _teacher_alone(tcfg, paths, os.cpu_count() or 1)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(args.workers), ctx.Queue()
    procs = [ctx.Process(target=_teacher_share, args=(tcfg, paths[i::args.workers], barrier, results))
             for i in range(args.workers)]
    for p in procs:
        p.start()
    t_procs = max(results.get() for _ in procs)
    for p in procs:
        p.join()
    rate_one, rate_procs = n_ref / t_one_proc, n_ref / t_procs
    rate_teacher = max(rate_one, rate_procs)
    rate_whole, rate_tasks = n_scans / t_whole, n_scans / t_tasks

    raw = summary["raw_float16_bytes_per_point"]
    print(f"{n_scans} scans x 6 cameras, teacher {args.teacher} at {h}x{w}, {os.cpu_count()} cores, "
          f"extract with {args.workers} workers x {cfg.threads} thread(s), {cfg.sweeps_per_shard} sweeps per task")
    print(f"teacher forward alone : {rate_one:6.3f} scans/s in one process using every core, "
          f"{rate_procs:6.3f} scans/s as {args.workers} processes x {cfg.threads} thread(s) "
          f"({n_ref} scans); the faster is the reference")
    print(f"whole extract         : {rate_whole:6.3f} scans/s  ratio {rate_whole / rate_teacher:.2f}")
    print(f"extract task phase    : {rate_tasks:6.3f} scans/s  ratio {rate_tasks / rate_teacher:.2f} "
          f"(excludes {t_whole - t_tasks:.1f} s of index, store and cluster start-up)")
    print(f"stored bytes/point    : {summary['bytes_per_point']:.0f} (raw float16 features alone {raw}; "
          f"ratio {summary['bytes_per_point'] / raw:.2f}), {summary['points']} points, "
          f"{100 * summary['points_with_feature'] / summary['points']:.1f}% with a feature")
    stages = summary["stage_seconds"]
    total = sum(stages.values())
    print("worker time by stage  : " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in stages.items())
          + f" (of {total:.1f} worker-seconds)")
    # what bounds the ratio: the teacher's own speed inside the workers, and everything else
    per_scan = stages.get("teacher", 0.0) / n_scans
    print(f"teacher in the workers: {per_scan:.2f} s/scan per process vs {t_procs * args.workers / n_ref:.2f} "
          f"alone; other stages {(total - stages.get('teacher', 0.0)) / n_scans:.2f} s/scan; idle "
          f"{max(0.0, args.workers * t_tasks - total):.1f} worker-seconds in the task phase")
    print(f"store: {cfg.out} ({directory_bytes(cfg.out) / 2**20:.0f} MiB){'' if args.keep else ', removed'}")
    if not args.keep:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
