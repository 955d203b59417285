"""The teacher gate: does a stand-in teacher's patch map know more about the scene than colour?

    .venv/bin/python benchmarks/teacher_gate.py --world GATE_WORLD [--world GATE_WORLD ...] \
        --ssl tools/teachers/ssl.safetensors --semantic tools/teachers/semantic.safetensors \
        [--out benchmarks/results/teacher_gate.json]

Each GATE_WORLD is a synthetic dataroot written with ``cdpipe synth --camera-labels`` from a seed that no
teacher trained on and no evaluation uses (we use 20000, 20001, 20002; teachers 10000, evaluations <
1000): one world is not enough to rank teachers, so the gate reports each row's margin over
``random_vit`` on every world, its mean and its minimum. Each world's scenes are split: the first
``--probe-scenes`` train the probe, the rest test it. Each frame is shown to every feature extractor at
the extraction input (224x448); a patch (14x14 pixels, 16x32 per frame) takes the majority class of its
labelled pixels (16 evaluation classes + sky; labels are used only here). Rows: the trained teachers
``ssl`` and ``semantic`` (through ``FrozenTeacher``, exactly as ``cdpipe extract`` runs them: last block
before the final norm), and the references ``random_vit`` (ViT-S/14, LayerScale init 1.0, as
``--random-teacher``), ``random_conv`` (two random 3x3 conv + ReLU layers, 64 and 128 channels, averaged
over each patch), ``mean_colour`` (the patch's mean RGB) and ``majority``. The probe: features
standardised on the probe-train patches, multinomial logistic regression (L2 1e-4) by full-batch L-BFGS
until the loss changes by less than 1e-7 (the final loss and iterations are in the JSON). Accuracy and
mIoU on the test patches, over the classes with at least 10 patches on both sides. The ablation's teacher
(``trained``) is the stand-in with the larger mean margin; it passes the gate when that margin is at
least 5 points on average and on every world. Writes ``{"trained", "passed", "margin_over_random_vit":
{row: {"per_world", "mean", "min"}}, "rows_mean", "worlds": [{"world": synth.json, "rows": {name: {"acc",
"miou", "iou", ...}}, ...}], "settings"}`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ is not installed
from tools.camera_frames import PIXEL_CLASSES, camera_images, load_frames, patch_classes, scene_of

PATCH = 14
SIZE = (224, 448)
MIN_PATCHES = 10
L2 = 1e-4
GATE_MEAN, GATE_MIN = 5.0, 5.0  # patch-mIoU points over random_vit: on average, on every world


def teacher_maps(images: np.ndarray, weights: str | None) -> torch.Tensor:
    from pipeline.teacher import FrozenTeacher, TeacherConfig

    teacher = FrozenTeacher(TeacherConfig(weights=weights, random=weights is None, image_size=SIZE))
    return torch.cat([teacher.features(list(images[i:i + 12])) for i in range(0, len(images), 12)])


def conv_maps(images: np.ndarray, seed: int = 0) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv2d(64, 128, 3, padding=1), torch.nn.ReLU())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), 12):
            x = torch.from_numpy(images[i:i + 12]).permute(0, 3, 1, 2).float() / 255
            out.append(F.avg_pool2d(net((x - mean) / std), PATCH))
    return torch.cat(out)


def colour_maps(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    return F.avg_pool2d(x, PATCH)


def probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
          n_classes: int) -> tuple[np.ndarray, dict]:
    """Standardised multinomial logistic regression by full-batch L-BFGS; predictions on ``test_x``."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    xs, xt = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(xs.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=2000, tolerance_grad=1e-9, tolerance_change=1e-7,
                            history_size=20, line_search_fn="strong_wolfe")
    losses = []

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(xs @ w + b, train_y) + L2 * w.pow(2).sum()
        loss.backward()
        losses.append(loss.item())
        return loss

    opt.step(closure)
    with torch.no_grad():
        pred = (xt @ w + b).argmax(1).numpy()
    return pred, {"probe_loss": round(losses[-1], 5), "probe_evals": len(losses),
                  "probe_loss_change_last_10pct": round(losses[-max(2, len(losses) // 10)] - losses[-1], 6)}


def scores(pred: np.ndarray, truth: np.ndarray, names: list[str]) -> dict:
    """Accuracy, mIoU and per-class IoU (trainer/metrics.py); class k of ``pred``/``truth`` is ``names[k]``."""
    from trainer.metrics import confusion_matrix, iou_per_class

    iou = iou_per_class(confusion_matrix(truth + 1, pred + 1, len(names)))  # metrics count classes from 1
    iou = np.nan_to_num(iou)  # every class of the set is in the test patches, so none is NaN
    return {"acc": round(float(np.mean(pred == truth)), 4), "miou": round(float(np.mean(iou)), 4),
            "iou": {name: round(float(v), 4) for name, v in zip(names, iou)}}


def gate_world(world: str, ssl: str, semantic: str, probe_scenes: int) -> dict:
    """Every row of the gate on one world: {"rows": {name: scores}, "classes", "patches", ...}."""
    paths = camera_images(world)
    scenes = sorted({scene_of(p) for p in paths})
    if len(scenes) <= probe_scenes:
        raise SystemExit(f"error: {world} has {len(scenes)} scenes; need more than --probe-scenes {probe_scenes}")
    images, classes = load_frames(world, paths, SIZE, labels=True)
    labels = patch_classes(classes, PATCH)  # [N,16,32]
    is_train = np.array([scene_of(p) in scenes[:probe_scenes] for p in paths])
    count_tr = np.bincount(labels[is_train].ravel(), minlength=len(PIXEL_CLASSES))
    count_te = np.bincount(labels[~is_train].ravel(), minlength=len(PIXEL_CLASSES))
    kept = [k for k in range(1, len(PIXEL_CLASSES)) if count_tr[k] >= MIN_PATCHES and count_te[k] >= MIN_PATCHES]
    names = [PIXEL_CLASSES[k] for k in kept]
    remap = np.full(len(PIXEL_CLASSES), -1)
    remap[kept] = np.arange(len(kept))
    y = remap[labels]  # [N,16,32], -1 = not in the class set
    sel_tr = is_train[:, None, None] & (y >= 0)
    sel_te = ~is_train[:, None, None] & (y >= 0)
    y_tr, y_te = torch.from_numpy(y[sel_tr]), y[sel_te]

    extractors = {
        "ssl": lambda: teacher_maps(images, ssl),
        "semantic": lambda: teacher_maps(images, semantic),
        "random_vit": lambda: teacher_maps(images, None),
        "random_conv": lambda: conv_maps(images),
        "mean_colour": lambda: colour_maps(images),
    }
    rows = {}
    for name, extract in extractors.items():
        t0 = time.perf_counter()
        maps = extract().float()  # [N,D,16,32]
        feats = maps.permute(0, 2, 3, 1).numpy()
        pred, info = probe(torch.from_numpy(feats[sel_tr]), y_tr, torch.from_numpy(feats[sel_te]), len(kept))
        rows[name] = {**scores(pred, y_te, names), "feature_dim": int(maps.shape[1]), **info,
                      "seconds": round(time.perf_counter() - t0, 1)}
        print(f"  {name:12s} acc {rows[name]['acc']:.3f}  mIoU {rows[name]['miou']:.3f}  "
              f"(probe loss {info['probe_loss']}, {info['probe_evals']} evaluations)", flush=True)
    majority = int(np.bincount(y_tr.numpy()).argmax())
    rows["majority"] = scores(np.full(len(y_te), majority), y_te, names)
    return {"world": json.load(open(os.path.join(world, "synth.json"))), "rows": rows,
            "probe_train_scenes": scenes[:probe_scenes], "probe_test_scenes": scenes[probe_scenes:],
            "frames": len(paths), "classes": names,
            "patches": {"train": int(sel_tr.sum()), "test": int(sel_te.sum())}}


def margins(worlds: list[dict], reference: str = "random_vit") -> dict:
    """Per row: patch-mIoU points above ``reference`` on each world, their mean and minimum."""
    out = {}
    for name in worlds[0]["rows"]:
        m = [100.0 * (w["rows"][name]["miou"] - w["rows"][reference]["miou"]) for w in worlds]
        out[name] = {"per_world": [round(v, 2) for v in m], "mean": round(float(np.mean(m)), 2),
                     "min": round(float(np.min(m)), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--world", required=True, action="append",
                    help="a gate world (give it once per world; the gate asks for at least 3)")
    ap.add_argument("--ssl", required=True)
    ap.add_argument("--semantic", required=True)
    ap.add_argument("--probe-scenes", type=int, default=5, help="scenes that train the probe (the rest test it)")
    ap.add_argument("--out", default="benchmarks/results/teacher_gate.json")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    worlds = []
    for world in args.world:
        print(f"gate world {world}", flush=True)
        worlds.append(gate_world(world, args.ssl, args.semantic, args.probe_scenes))
    margin = margins(worlds)
    # the ablation's teacher: the stand-in with the larger mean margin over the random ViT
    trained = "ssl" if margin["ssl"]["mean"] >= margin["semantic"]["mean"] else "semantic"
    passed = margin[trained]["mean"] >= GATE_MEAN and margin[trained]["min"] >= GATE_MIN

    from pipeline.teacher import file_sha256

    result = {
        "trained": trained, "passed": passed,
        "margin_over_random_vit": margin,
        "rows_mean": {name: {k: round(float(np.mean([w["rows"][name][k] for w in worlds])), 4) for k in ("acc", "miou")}
                      for name in worlds[0]["rows"]},
        "worlds": worlds,
        "settings": {
            "gate": f"the trained teacher's patch mIoU beats random_vit by at least {GATE_MEAN} points on average "
                    f"and {GATE_MIN} on every world",
            "input_size": list(SIZE), "patch": PATCH, "min_patches_per_class": MIN_PATCHES,
            "probe": f"standardised features, multinomial logistic regression, L2 {L2}, full-batch L-BFGS",
            "weights_sha256": {"ssl": file_sha256(args.ssl), "semantic": file_sha256(args.semantic)},
        },
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    seeds = [w["world"]["seed"] for w in worlds]
    print("\n| features | " + " | ".join(f"mIoU world {k}" for k in seeds) + " | mean margin over random_vit | "
          "min margin |\n|---" + "|---" * (len(seeds) + 2) + "|")
    for name in worlds[0]["rows"]:
        print(f"| {name} | " + " | ".join(f"{w['rows'][name]['miou']:.3f}" for w in worlds)
              + f" | {margin[name]['mean']:+.1f} | {margin[name]['min']:+.1f} |")
    print(f"\ntrained (the ablation's teacher): {trained}; gate {'passed' if passed else 'NOT passed'}; "
          f"written {args.out}")


if __name__ == "__main__":
    main()
