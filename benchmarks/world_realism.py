"""Does the synthetic world give a point's class away by where the point is?

On real streets, position, height and intensity say little about a point's class, while the camera
sees what it is. If a world lets a classifier on the raw point inputs alone approach a linear probe on
the teacher's features, no student can show that camera semantics reached it. For each world seed this
builds the world and its store the way ``benchmarks/paper_table.py`` does (same size, the semantic
stand-in teacher), then scores on the val sweeps, over the same points and evaluation classes:

- ``gbdt_raw``: gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``, seeded, classes
  weighted to balance, rounds stopped early on a held-out tenth of the fit points) on the raw inputs x,
  y, z, intensity and range sqrt(x^2 + y^2), fitted on 2,000 labelled points per train sweep: the
  strongest floor that needs no camera (``gbdt_raw_unweighted``: the same without class weights). Without
  early stopping, 300 rounds fell to 26 mIoU on their own fit points where 50 rounds reached 52 (world
  20001): the stopping rule matters;
- ``logreg_raw``: the linear probe (``trainer/probe.py``, softmax regression solved to tolerance) on the
  student's raw input (x, y, z, intensity, scaled);
- ``teacher_probe``: the same linear probe on the stored teacher features.

``margin`` = teacher_probe - the better of the two gbdt floors, in mIoU points: a realistic world keeps
it large (the target is >= 10 on every seed). ``--world-version`` picks the generator (``SynthConfig.
world_version``; the stand-in teacher was trained on a version-1 world, seed 10000). Each world's result is
kept in WORK/vVERSION/world_SEED/realism.json, so a run resumes; benchmarks/results/world_realism.json keeps
one entry per (world version, seed), those of earlier runs included, and a summary per version.

    python benchmarks/world_realism.py --seeds 20001 20002 --world-version 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.paper_table import build_world  # noqa: E402
from pipeline.synth.write import SynthConfig, write_dataroot  # noqa: E402

OUT = os.path.join(ROOT, "benchmarks", "results", "world_realism.json")


def raw_table(ds, points_per_sweep: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x, y, z, intensity, range [M, 5] and classes [M] of the labelled points (a random
    ``points_per_sweep`` of each sweep when given), from the store as the trainer reads it."""
    from trainer.data import PROBE_POINTS_STREAM, stream_rng

    xs, ys = [], []
    for i in range(len(ds)):
        item = ds[i]
        labelled = np.nonzero(item.labels > 0)[0]
        if points_per_sweep and len(labelled) > points_per_sweep:
            labelled = np.sort(stream_rng(PROBE_POINTS_STREAM, seed, int(item.sweep))
                               .choice(labelled, points_per_sweep, replace=False))
        xyz = item.xyz[labelled]
        xs.append(np.c_[xyz, item.intensity[labelled], np.hypot(xyz[:, 0], xyz[:, 1])])
        ys.append(item.labels[labelled].astype(np.int64))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


def probe_floor(store: str, kind: str, seed: int, cfg: dict) -> dict:
    """``benchmarks/paper_table.py``'s floor (the linear probe on ``kind``: "raw" or "teacher"), with the
    IoU of each class."""
    from pipeline.classes import NUM_EVAL_CLASSES
    from trainer.config import DataConfig
    from trainer.data import StoreDataset
    from trainer.evaluate import scores
    from trainer.metrics import confusion_matrix
    from trainer.probe import feature_table, fit_softmax

    def dataset(split: str) -> StoreDataset:
        return StoreDataset(DataConfig(store=store, split=split, voxel_size=cfg["voxel_size"], augment=False))

    x, y = feature_table(dataset("train"), kind, points_per_sweep=cfg["probe_points_per_sweep"], seed=seed)
    probe = fit_softmax(x, y)
    xv, yv = feature_table(dataset("val"), kind)
    s = scores(confusion_matrix(yv, probe.predict(xv), NUM_EVAL_CLASSES))
    return {"miou": s["miou"], "fit": probe.summary(), "iou": s["iou"]}


def gbdt_floor(store: str, seed: int, cfg: dict, class_weight: str | None) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from pipeline.classes import NUM_EVAL_CLASSES
    from trainer.config import DataConfig
    from trainer.data import StoreDataset
    from trainer.evaluate import scores
    from trainer.metrics import confusion_matrix

    def dataset(split: str) -> StoreDataset:
        return StoreDataset(DataConfig(store=store, split=split, voxel_size=cfg["voxel_size"], augment=False),
                            targets=())

    x, y = raw_table(dataset("train"), cfg["probe_points_per_sweep"], seed)
    model = HistGradientBoostingClassifier(max_iter=500, learning_rate=0.1, early_stopping=True,
                                           validation_fraction=0.1, n_iter_no_change=20, class_weight=class_weight,
                                           random_state=seed)
    model.fit(x, y)
    xv, yv = raw_table(dataset("val"), 0, seed)
    s = scores(confusion_matrix(yv, model.predict(xv), NUM_EVAL_CLASSES))
    return {"miou": s["miou"], "rounds": int(model.n_iter_), "fit_points": int(len(y)), "val_points": int(len(yv)),
            "classes": s["classes"], "iou": s["iou"]}


def synthesise(work: str, seed: int, version: int, cfg: dict) -> None:
    """The world's dataroot, as ``benchmarks/paper_table.py`` writes it, by the generator of ``version``
    (``build_world`` then finds it done and only extracts)."""
    dataroot = os.path.join(work, "world")
    if os.path.exists(dataroot + ".done"):
        return
    width, height = (int(v) for v in cfg["image_size"].split("x"))
    write_dataroot(SynthConfig(out=dataroot, scenes=cfg["scenes"], samples_per_scene=cfg["samples_per_scene"],
                               seed=seed, width=width, height=height, version="v1.0-trainval", workers=1,
                               world_version=version), progress=False)
    open(dataroot + ".done", "w").close()


def world(seed: int, version: int, work: str, cfg: dict) -> dict:
    work = os.path.join(work, f"v{version}", f"world_{seed}")
    path = os.path.join(work, "realism.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    started = time.perf_counter()
    os.makedirs(work, exist_ok=True)
    synthesise(work, seed, version, cfg)
    store = build_world(work, seed, cfg)
    with open(os.path.join(work, "world", "synth.json")) as f:
        synth = json.load(f)
    gbdt = gbdt_floor(store, seed, cfg, "balanced")
    unweighted = gbdt_floor(store, seed, cfg, None)
    logreg = probe_floor(store, "raw", seed, cfg)
    teacher = probe_floor(store, "teacher", seed, cfg)
    floor = max(gbdt["miou"], unweighted["miou"])
    result = {"world_seed": seed, "generator": synth.get("generator"), "world_version": synth.get("world_version", 1),
              "gbdt_raw": 100 * gbdt["miou"], "gbdt_raw_unweighted": 100 * unweighted["miou"],
              "logreg_raw": 100 * logreg["miou"], "teacher_probe": 100 * teacher["miou"],
              "margin": 100 * (teacher["miou"] - floor), "gbdt_rounds": [gbdt["rounds"], unweighted["rounds"]],
              "iou": {"gbdt_raw": gbdt["iou"], "teacher_probe": teacher["iou"]},
              "fit_points": gbdt["fit_points"], "val_points": gbdt["val_points"], "classes": gbdt["classes"],
              "probe_fits_converged": {"raw": logreg["fit"]["converged"], "teacher": teacher["fit"]["converged"]},
              "seconds": time.perf_counter() - started}
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[20001, 20002])
    ap.add_argument("--world-version", type=int, default=3, help="generator of the worlds (1 or 3)")
    ap.add_argument("--work", default=os.path.join(ROOT, "paper_table_work", "realism"))
    ap.add_argument("--scenes", type=int, default=48, help="as benchmarks/paper_table.py: 48 scenes -> 8 val scenes")
    ap.add_argument("--samples-per-scene", type=int, default=2)
    ap.add_argument("--image-size", default="400x225")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    cfg = {"scenes": args.scenes, "samples_per_scene": args.samples_per_scene, "image_size": args.image_size,
           "teacher_size": "224x448", "voxel_size": 0.1, "probe_points_per_sweep": 2000}
    rows = []
    for seed in args.seeds:
        r = world(seed, args.world_version, args.work, cfg)
        rows.append(r)
        print(f"world {seed} (version {r['world_version']}): gbdt raw {r['gbdt_raw']:.1f} (unweighted "
              f"{r['gbdt_raw_unweighted']:.1f}), logreg raw "
              f"{r['logreg_raw']:.1f}, teacher probe {r['teacher_probe']:.1f} mIoU; margin {r['margin']:+.1f} "
              f"({r['seconds'] / 60:.1f} min)", flush=True)
    summary = {"what": "val mIoU (%) on each world: gradient-boosted trees on raw point inputs vs a linear probe on "
                       "the semantic stand-in teacher's features; margin = teacher_probe - the better gbdt floor",
               "settings": cfg, "worlds": merged(args.out, rows)}
    summary["by_world_version"] = {
        str(v): {"seeds": [r["world_seed"] for r in summary["worlds"] if r["world_version"] == v],
                 "margin_mean": float(np.mean([r["margin"] for r in summary["worlds"] if r["world_version"] == v])),
                 "margin_min": float(np.min([r["margin"] for r in summary["worlds"] if r["world_version"] == v]))}
        for v in sorted({r["world_version"] for r in summary["worlds"]})}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    for v, s in summary["by_world_version"].items():
        print(f"world version {v}: margin mean {s['margin_mean']:+.1f}, min {s['margin_min']:+.1f} mIoU points "
              f"(seeds {', '.join(map(str, s['seeds']))})")
    print(f"wrote {args.out}")


def merged(path: str, rows: list[dict]) -> list[dict]:
    """The entries of ``path`` (an earlier summary) that ``rows`` do not replace, and ``rows``: one per
    (world version, seed), in that order."""
    kept = {}
    if os.path.exists(path):
        with open(path) as f:
            for r in json.load(f)["worlds"]:
                kept[r.get("world_version", 1), r["world_seed"]] = r
    for r in rows:
        kept[r["world_version"], r["world_seed"]] = r
    return [kept[k] for k in sorted(kept)]


if __name__ == "__main__":
    main()
