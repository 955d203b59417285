"""How long the default demo world takes to generate (goal: under a minute on a 2-core machine).

    .venv/bin/python benchmarks/synth_speed.py [--scenes 2] [--samples 10] [--image-size 800x450] [--workers N]

Prints the wall time of ``write_dataroot`` (world, LiDAR, six cameras, JPEG, tables, maps) and the
cost per keyframe and per image, plus a one-process breakdown of one keyframe by stage.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--image-size", default="800x450")
    ap.add_argument("--workers", type=int, default=None, help="processes (default: one per core; 0: this process)")
    args = ap.parse_args()
    w, h = (int(v) for v in args.image_size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = SynthConfig(out=os.path.join(tmp, "nuscenes"), scenes=args.scenes, samples_per_scene=args.samples,
                          width=w, height=h, workers=args.workers)
        t0 = time.perf_counter()
        summary = write_dataroot(cfg, progress=False)
        total = time.perf_counter() - t0
    n = summary["keyframes"]
    print(f"world {args.scenes} scenes x {args.samples} keyframes, 6 cameras at {w}x{h}, "
          f"{os.cpu_count()} cores, workers={os.cpu_count() if args.workers is None else args.workers}")
    print(f"total {total:.1f} s  ({'under' if total < 60 else 'OVER'} the 60 s goal)")
    print(f"per keyframe {total / n:.2f} s wall, per image {total / (6 * n):.3f} s wall")
    print(f"LiDAR points per sweep: mean {summary['points_per_sweep']['mean']:.0f}")

    world = build_world(0, 0, cfg.duration_s)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    sensors.cast_sweep(world, 0.0, rng)
    t_sweep = time.perf_counter() - t0
    t0 = time.perf_counter()
    for cam in sensors.CAMERAS:
        sensors.render_camera(world, cam, sensors.trigger_offset_s(cam), w, h, rng)
    t_cams = time.perf_counter() - t0
    print(f"one keyframe, one process: LiDAR sweep {t_sweep:.2f} s, six cameras {t_cams:.2f} s "
          f"(ratio cameras/sweep {t_cams / t_sweep:.1f})")


if __name__ == "__main__":
    main()
