"""The paper's ablation table in miniature: does distillation help, does the MLP head beat the linear
one, does occupancy help?

    .venv/bin/python benchmarks/paper_table.py [--out DIR] [--results benchmarks/results/paper_table.md]
                                               [--seeds 0 1 2] [--jobs 2] [--teacher-weights FILE] ...

1. writes a synthetic nuScenes-format world (``--scenes`` x ``--samples-per-scene`` keyframes, every
   6th scene held out for validation, as ``cdpipe synth --version v1.0-trainval`` splits them);
2. extracts its store once (random teacher unless ``--teacher-weights`` is given);
3. for every row and seed, in ``--jobs`` processes: pretrains the student (rows: random init = no
   pretraining; linear head; 3-layer MLP head; MLP head + occupancy), then from its backbone a linear
   probe and fine-tuning at 1% and 10% of the train labels (whole scenes, picked by the seed), each
   scored by mIoU on the val scenes, and RankMe of the backbone's point features;
4. prints one markdown table (mean +- sample standard deviation over seeds) with the settings and wall
   times, and writes it to ``--results``.

Defaults are sized to finish in under an hour on a 2-core CPU machine; the output says what they are.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np

ROWS = {  # name -> (pretrain?, head layers, occupancy weight)
    "random init (no pretraining)": (False, 0, 0.0),
    "linear head": (True, 1, 0.0),
    "3-layer MLP head": (True, 3, 0.0),
    "MLP head + occupancy": (True, 3, 1.0),
}


def run_job(args: dict, row: str, seed: int) -> dict:
    """Pretrain (unless the row is random init), then probe, fine-tune at 1% and 10%, and RankMe."""
    import torch

    torch.set_num_threads(args["threads"])
    from trainer.data import DataConfig
    from trainer.finetune import FinetuneConfig, finetune, store_rankme
    from trainer.model import ModelConfig
    from trainer.train import TrainConfig, pretrain

    pre, head_layers, occ = ROWS[row]
    run = os.path.join(args["out"], "runs", f"{row.split()[0].lower()}-{head_layers}-{occ:g}-seed{seed}")
    store, arch, voxel = args["store"], args["arch"], args["voxel_size"]
    t0 = time.perf_counter()
    checkpoint = None
    out = {"row": row, "seed": seed}
    if pre:
        mcfg = ModelConfig(arch=arch, feature_dim=args["feature_dim"], head_layers=head_layers,
                           head_hidden=args["head_hidden"])
        # the occupancy row hides part of each sweep and asks about it (trainer/occupancy.py)
        dcfg = DataConfig(store=store, split="train", voxel_size=voxel, seed=seed,
                          mask_ratio=(0.3, 0.5) if occ > 0 else (0.0, 0.0))
        tcfg = TrainConfig(out=os.path.join(run, "pretrain"), steps=args["pretrain_steps"],
                           batch_size=args["batch_size"], warmup=max(1, args["pretrain_steps"] // 10),
                           occ_weight=occ, seed=seed, checkpoint_every=args["pretrain_steps"])
        res = pretrain(mcfg, dcfg, tcfg, progress=False)
        checkpoint = res["checkpoint"]
        out["distill_final"] = res["metrics"]["distill"]
    out["pretrain_s"] = time.perf_counter() - t0
    out["rankme"] = store_rankme(store, checkpoint, arch=arch, seed=seed, voxel_size=voxel)
    scenes = args["scenes"]
    train_sweeps = sum(s["num_sweeps"] for s in scenes if s["split"] == "train")
    for key, percent, probe, steps in (("probe", 100.0, True, args["probe_steps"]),
                                       ("ft1", 1.0, False, args["finetune_steps"]),
                                       ("ft10", 10.0, False, args["finetune_steps"])):
        cfg = FinetuneConfig(out=os.path.join(run, key), labels_percent=percent, linear_probe=probe, steps=steps,
                             batch_size=args["batch_size"], lr=0.05 if probe else 1e-3, seed=seed)
        result = finetune(store, checkpoint, arch, cfg, voxel_size=voxel, progress=False)
        out[key] = 100.0 * result["miou"]
        chosen = set(result["label_scenes"])
        out[f"{key}_label_percent"] = 100.0 * sum(s["num_sweeps"] for s in scenes if s["name"] in chosen) / train_sweeps
    out["seconds"] = time.perf_counter() - t0
    with open(os.path.join(run, "summary.json"), "w") as f:
        json.dump(out, f, indent=1)
    return out


def _fmt(values: list[float], digits: int = 1) -> str:
    v = np.asarray(values, dtype=float)
    spread = v.std(ddof=1) if len(v) > 1 else 0.0
    return f"{v.mean():.{digits}f} ± {spread:.{digits}f}"


def table(results: list[dict]) -> str:
    lines = ["| row | linear probe mIoU | fine-tune 1% mIoU | fine-tune 10% mIoU | RankMe | final distill loss |",
             "|---|---|---|---|---|---|"]
    for row in ROWS:
        rs = [r for r in results if r["row"] == row]
        distill = _fmt([r["distill_final"] for r in rs], 3) if "distill_final" in rs[0] else "-"
        lines.append(f"| {row} | {_fmt([r['probe'] for r in rs])} | {_fmt([r['ft1'] for r in rs])} | "
                     f"{_fmt([r['ft10'] for r in rs])} | {_fmt([r['rankme'] for r in rs])} | {distill} |")
    return "\n".join(lines)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="paper_table_run", help="working directory (dataroot, store, runs)")
    ap.add_argument("--results", default=None, help="also write the markdown here")
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--samples-per-scene", type=int, default=6)
    ap.add_argument("--image-size", default="400x225", help="camera images WxH of the synthetic world")
    ap.add_argument("--teacher-size", default="112x224", help="teacher input HxW")
    ap.add_argument("--teacher-weights", default=None, help="teacher weights file (default: random teacher)")
    ap.add_argument("--arch", default="minkunet-tiny")
    ap.add_argument("--head-hidden", type=int, default=256)
    ap.add_argument("--voxel-size", type=float, default=0.1)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--pretrain-steps", type=int, default=120)
    ap.add_argument("--probe-steps", type=int, default=40)
    ap.add_argument("--finetune-steps", type=int, default=40)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel, each with cores // jobs threads")
    args = ap.parse_args()
    started = time.perf_counter()
    os.makedirs(args.out, exist_ok=True)
    dataroot, store = os.path.join(args.out, "nuscenes"), os.path.join(args.out, "store.zarr")
    cli = os.path.dirname(sys.executable)

    t0 = time.perf_counter()
    _run([os.path.join(cli, "cdpipe"), "synth", "--out", dataroot, "--scenes", str(args.scenes),
          "--samples-per-scene", str(args.samples_per_scene), "--image-size", args.image_size,
          "--version", "v1.0-trainval", "--no-preview"])
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    teacher = ["--teacher-weights", args.teacher_weights] if args.teacher_weights else ["--random-teacher"]
    _run([os.path.join(cli, "cdpipe"), "extract", "--dataroot", dataroot, "--version", "v1.0-trainval",
          "--out", store, "--image-size", args.teacher_size, "--overwrite", *teacher])
    t_extract = time.perf_counter() - t0
    import zarr

    attrs = dict(zarr.open_group(store, mode="r").attrs)
    job_args = {"store": store, "out": args.out, "arch": args.arch, "voxel_size": args.voxel_size,
                "feature_dim": attrs["feature_dim"], "scenes": attrs["scenes"], "head_hidden": args.head_hidden, "batch_size": args.batch_size,
                "pretrain_steps": args.pretrain_steps, "probe_steps": args.probe_steps,
                "finetune_steps": args.finetune_steps, "threads": max(1, (os.cpu_count() or 1) // args.jobs)}
    t0 = time.perf_counter()
    jobs = [(row, seed) for seed in args.seeds for row in ROWS]
    jobs.sort(key=lambda j: not ROWS[j[0]][0])  # the long (pretraining) jobs first
    results = []
    with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_job, job_args, row, seed): (row, seed) for row, seed in jobs}
        for fut in cf.as_completed(futures):
            r = fut.result()
            results.append(r)
            print(f"[{time.perf_counter() - started:6.0f} s] {r['row']}, seed {r['seed']}: probe {r['probe']:.1f} "
                  f"ft1 {r['ft1']:.1f} ft10 {r['ft10']:.1f} RankMe {r['rankme']:.1f} ({r['seconds']:.0f} s)",
                  flush=True)
    t_runs = time.perf_counter() - t0
    wall = time.perf_counter() - started

    scenes = attrs["scenes"]
    n_train = sum(1 for s in scenes if s["split"] == "train")
    n_val = len(scenes) - n_train
    r0 = results[0]
    teacher_name = attrs["teacher"]["name"] + (" (RANDOM INITIALISATION)" if attrs["teacher"]["weights"] == "random"
                                               else f" (weights sha256 {attrs['teacher']['weights'][:12]})")
    text = "\n".join([
        "# CleverDistiller ablation in miniature (synthetic world)",
        "",
        table(results),
        "",
        f"mIoU in % over the 16 nuScenes evaluation classes on the {n_val} val scenes; mean ± sample standard "
        f"deviation over seeds {args.seeds} (the seed sets the initialisation, data order and which scenes are "
        f"labelled).",
        "",
        "Settings:",
        f"- world: {len(scenes)} synthetic scenes x {args.samples_per_scene} keyframes ({n_train} train, {n_val} val), "
        f"{attrs['num_sweeps']} sweeps, cameras {args.image_size}",
        f"- teacher: {teacher_name} at {args.teacher_size}, D = {attrs['feature_dim']}",
        f"- student: {args.arch}, voxel {args.voxel_size} m, batch {args.batch_size}; pretraining "
        f"{args.pretrain_steps} steps (projection head hidden width {args.head_hidden}; occupancy weight 1 in the "
        f"last row); linear probe {args.probe_steps} steps on all train labels; fine-tuning {args.finetune_steps} "
        f"steps",
        f"- labels: whole scenes; '1%' is {r0['ft1_label_percent']:.1f}% of the train sweeps and '10%' is "
        f"{r0['ft10_label_percent']:.1f}% for seed {r0['seed']} (at least one scene; scenes are {args.samples_per_scene} "
        f"sweeps)",
        f"- wall time {wall / 60:.1f} min on {os.cpu_count()} CPU cores: synth {t_synth:.0f} s, extract "
        f"{t_extract:.0f} s, {len(jobs)} runs {t_runs:.0f} s in {args.jobs} processes x {job_args['threads']} thread(s)",
        "",
        "Command: `.venv/bin/python benchmarks/paper_table.py " + " ".join(sys.argv[1:]) + "`",
    ])
    print()
    print(text)
    if args.results:
        os.makedirs(os.path.dirname(args.results) or ".", exist_ok=True)
        with open(args.results, "w") as f:
            f.write(text + "\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
