"""How long the default demo world takes to generate (goal: under a minute on a 2-core machine), per world
version, in one run so that the versions are compared on the same machine at the same time.

    .venv/bin/python benchmarks/synth_speed.py [--scenes 2] [--samples 10] [--image-size 800x450] [--workers N]
                                               [--world-versions 1 3] [--repeats 1]

Prints, per world version, the wall time of ``write_dataroot`` (world, LiDAR, six cameras, JPEG, tables, maps)
and the cost per keyframe and per image, a one-process breakdown of one keyframe by stage, and the ratio of
each version's time per keyframe to the first version's. With ``--repeats`` the versions take turns and each
keeps its fastest run (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

from pipeline.synth import sensors
from pipeline.synth.world import build_world
from pipeline.synth.write import SynthConfig, write_dataroot


def one_world(version: int, args, w: int, h: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(out=os.path.join(tmp, "nuscenes"), scenes=args.scenes, samples_per_scene=args.samples,
                          width=w, height=h, workers=args.workers, world_version=version)
        t0 = time.perf_counter()
        summary = write_dataroot(cfg, progress=False)
        total = time.perf_counter() - t0
    world = build_world(0, 0, cfg.duration_s, version)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    sensors.cast_sweep(world, 0.0, rng)
    t_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    for cam in sensors.CAMERAS:
        sensors.render_camera(world, cam, sensors.trigger_offset_s(cam), w, h, rng)
    t_cams = time.perf_counter() - t0
    return {"total": total, "keyframes": summary["keyframes"], "points": summary["points_per_sweep"]["mean"],
            "sweep": t_sweep, "cams": t_cams}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--image-size", default="800x450")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: one per core; 0: this process)")
    ap.add_argument("--world-versions", type=int, nargs="+", default=[1, 3])
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    w, h = (int(v) for v in args.image_size.split("x"))
    best: dict[int, dict] = {}
    for _ in range(args.repeats):
        for version in args.world_versions:
            r = one_world(version, args, w, h)
            if version not in best or r["total"] < best[version]["total"]:
                best[version] = r
    print(f"world {args.scenes} scenes x {args.samples} keyframes, 6 cameras at {w}x{h}, "
          f"{os.cpu_count()} cores, workers={os.cpu_count() if args.workers is None else args.workers}")
    first = args.world_versions[0]
    for version in args.world_versions:
        r = best[version]
        n = r["keyframes"]
        print(f"world version {version}: total {r['total']:.1f} s ({'under' if r['total'] < 60 else 'OVER'} the 60 s "
              f"goal); per keyframe {r['total'] / n:.2f} s wall, per image {r['total'] / (6 * n):.3f} s wall; "
              f"LiDAR points per sweep: mean {r['points']:.0f}")
        print(f"  one keyframe, one process: LiDAR sweep {r['sweep']:.2f} s, six cameras {r['cams']:.2f} s")
        if version != first:
            print(f"  time per keyframe, version {version} / version {first}: "
                  f"{(r['total'] / n) / (best[first]['total'] / best[first]['keyframes']):.2f}")


if __name__ == "__main__":
    main()
