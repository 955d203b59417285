"""Detection fine-tuning: train a ``trainer.detection.Detector`` (backbone + CenterPoint-style BEV head) on
the store's annotated boxes.

The labelled sweeps, the batches, the augmentation (boxes move with the points), AdamW with warm-up and
cosine decay, the checkpoint rhythm and ``--resume`` are segmentation's (``trainer/finetune.py``, whose
shared helpers this module uses): step t's batch and augmentation depend on t alone, so a resumed run
sees the batches a straight one would. OUT/detector.pt (``trainer.checkpoint.DETECTOR_KIND``) is
rewritten atomically every ``checkpoint_every`` steps and at the end.

OUT/curve.jsonl holds one row per step (its training loss and the loss's two parts, and the rate); every
``eval_every`` steps, and at the last, the row also holds the validation measures on the val sweeps (no
augmentation, every point): ``val_loss``, the mean detection loss per sweep, and ``val_centre_ap_2m``,
the **centre-distance AP at 2 m (built-in)** of ``centre_distance_ap``. That AP follows the nuScenes
detection benchmark's matching and AP rules at a single 2 m threshold, over truth boxes whose centre lies
in the BEV grid; it is a quick measure made here, not the devkit's mAP (no range filter per class, no
other thresholds, no true-positive errors, no NDS).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
import torch

from trainer.checkpoint import detector_record, store_fingerprint, write_atomic
from trainer.config import DataConfig, DetectionConfig, FinetuneConfig, field_defaults
from trainer.data import DETECTION, StoreDataset
from trainer.detection import (
    DetectionCollate,
    box_cells,
    check_store_classes,
    decode_batch,
    detection_loss,
    new_detector,
)
from trainer.finetune import CURVE, RESULT, labelled_train_set, optimiser, resume_from, step_samples
from trainer.run import RunFolder

DETECTOR = "detector.pt"  # the run folder's detector file
AP_NAME = "centre-distance AP at 2 m (built-in)"
MATCH_DISTANCE_M = 2.0  # the centre-distance threshold of the built-in AP (BEV, metres)
MIN_RECALL = MIN_PRECISION = 0.1  # the nuScenes AP leaves out recall and precision below these
BEV_MIN_SHOWN = 20  # bev.png draws the best-scoring predictions, as many as truth boxes and at least this many


def finetune_detection(store: str, checkpoint: str | None, arch: str, cfg: FinetuneConfig, dcfg: DetectionConfig,
                       voxel_size: float = 0.1, progress: bool = True, device: str = "cpu", resume: bool = False,
                       skip_bad_sweeps: bool = False, force_config: bool = False) -> dict:
    """Train the detector on the boxes of the labelled subset (or continue OUT/detector.pt), measure it on
    the val sweeps, write OUT/detector.pt, OUT/curve.jsonl and OUT/result.json; returns the result.
    ``skip_bad_sweeps`` and ``force_config`` as in ``trainer.finetune.finetune``."""
    from tqdm import tqdm

    from pipeline.store import open_store
    from trainer.train import lr_at

    run = RunFolder(cfg.out)
    attrs = dict(open_store(store).attrs)
    if not attrs.get("has_boxes"):
        raise ValueError(f"store {store} has no annotated boxes to fine-tune a detector on")
    check_store_classes(dcfg, attrs)
    fingerprint = store_fingerprint(attrs)
    model, init = new_detector(arch, dcfg, checkpoint or None, cfg.seed, voxel_size)
    scenes, ds = labelled_train_set(store, attrs, cfg, voxel_size, run, skip_bad_sweeps, DETECTION)
    dev = torch.device(device)
    model.to(dev)
    opt, scaler = optimiser(model, cfg, dev)
    collate = DetectionCollate(dcfg, voxel_size)
    path = run.file(DETECTOR)
    about = {"task": "detection", "init": init, "pretrained": checkpoint or None, "store": store,
             "labels_percent": cfg.labels_percent, "label_scenes": list(scenes), "finetune_config": asdict(cfg),
             "store_fingerprint": fingerprint}
    if ds.cfg.sweeps is not None:  # --labels-unit sweeps: the labelled rows themselves
        about["label_sweeps"] = list(ds.cfg.sweeps)
    start, changes = 0, []
    if resume:
        now = {"init": init, "arch": arch, "voxel_size": voxel_size, "finetune_config": asdict(cfg),
               "detection_config": dcfg.to_dict(), "store_fingerprint": fingerprint}
        ck, changes = resume_from(path, now, force_config, model, opt, scaler,
                                  defaults={"detection_config": field_defaults(DetectionConfig)},
                                  label_sweeps=about.get("label_sweeps"))
        start = int(ck["step"])

    def save(step: int) -> None:
        write_atomic(detector_record(model, arch, voxel_size, step=step, optimizer=opt.state_dict(),
                                     scaler=scaler.state_dict(), **about), path)

    run.start(CURVE, start)  # rows written after the checkpoint will be written again
    bar = tqdm(total=cfg.steps, initial=start, desc="finetune detection", unit="step", disable=not progress)
    final = None
    try:
        for step in range(start, cfg.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            model.train()
            batch, targets = collate(step_samples(ds, cfg, step))
            batch, targets = batch.to(dev), targets.to(dev)
            with torch.autocast("cuda", dtype=torch.float16, enabled=dev.type == "cuda"):
                out = model(batch)
            loss = detection_loss({k: v.float() for k, v in out.items()}, targets, dcfg)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss["total"]).backward()
            scaler.step(opt)
            scaler.update()
            done = step + 1
            row = {"step": done, "train_loss": loss["total"].item(), "heatmap_loss": loss["heatmap"].item(),
                   "regression_loss": loss["regression"].item(), "lr": lr_at(step, cfg)}
            bar.set_postfix(loss=f"{row['train_loss']:.3f}")
            bar.update()
            if done == cfg.steps or (cfg.eval_every and done % cfg.eval_every == 0):
                final = evaluate_detector(model, store, dcfg, voxel_size, device=device)
                row.update(val_loss=final["val_loss"], val_centre_ap_2m=final["centre_distance_ap_2m"])
            run.log(row)
            run.scalars(row, done)
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done)
        bar.close()
        if final is None:  # resumed from a finished run: measure what it left
            final = evaluate_detector(model, store, dcfg, voxel_size, device=device)
    finally:
        bar.close()
        run.close()
    result = final | about | {"arch": arch, "voxel_size": voxel_size, "detection_config": dcfg.to_dict(),
                              "config_changes": changes, "detector": path, "curve": run.file(CURVE)}
    with open(run.file(RESULT), "w") as f:
        json.dump(result, f, indent=1)
    return result


@torch.no_grad()
def evaluate_detector(model, store: str, dcfg: DetectionConfig, voxel_size: float, split: str = "val",
                      device: str = "cpu") -> dict:
    """A detector on the sweeps of ``split`` (every point, no augmentation), one sweep at a time:
    ``val_loss`` (the mean detection loss per sweep) and ``centre_distance_ap_2m`` (``centre_distance_ap``
    over the classes present), with the AP of each class present and the number of sweeps."""
    ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=voxel_size, augment=False), targets=DETECTION)
    collate = DetectionCollate(dcfg, voxel_size)
    model.eval()
    losses, predictions, truths = [], [], []
    for i in range(len(ds)):
        sample = ds[i]
        batch, targets = collate([sample])
        out = model(batch.to(device))
        out = {k: v.float() for k, v in out.items()}
        losses.append(detection_loss(out, targets.to(device), dcfg)["total"].item())
        predictions.append({k: v.cpu().numpy() for k, v in decode_batch(out, dcfg)[0].items()})
        truths.append(grid_truth(sample.boxes, dcfg))
    ap = centre_distance_ap(predictions, truths, dcfg.classes)
    return {"split": split, "sweeps": len(ds), "val_loss": float(np.mean(losses)),
            "centre_distance_ap_2m": ap["ap"], "ap_per_class": ap["per_class"], "ap_name": AP_NAME}


@torch.no_grad()
def detector_predictions(model, store: str, dcfg: DetectionConfig, voxel_size: float, split: str = "val",
                         device: str = "cpu") -> list[dict]:
    """The decoded boxes of every sweep of ``split`` (every point, no augmentation), one dict per sweep in
    its LiDAR frame: ``sample_token``, ``sweep``, ``centre`` [n,3], ``size`` [n,3] (w, l, h), ``yaw`` [n],
    ``velocity`` [n,2], ``name`` [n] (class names of ``dcfg.classes``) and ``score`` [n]."""
    ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=voxel_size, augment=False), targets=DETECTION)
    check_store_classes(dcfg, dict(ds.group.attrs))
    collate = DetectionCollate(dcfg, voxel_size)
    model.eval()
    found = []
    for i in range(len(ds)):
        sample = ds[i]
        batch, _ = collate([sample])
        out = {k: v.float() for k, v in model(batch.to(device)).items()}
        boxes = {k: v.cpu().numpy() for k, v in decode_batch(out, dcfg)[0].items()}
        found.append({"sample_token": str(ds.group["sample_token"][sample.sweep]), "sweep": sample.sweep,
                      "centre": boxes["centre"], "size": boxes["size"], "yaw": boxes["yaw"],
                      "velocity": boxes["velocity"], "name": [dcfg.classes[k] for k in boxes["label"]],
                      "score": boxes["score"]})
    return found


def grid_truth(boxes: dict[str, np.ndarray], dcfg: DetectionConfig) -> dict[str, np.ndarray]:
    """A sweep's truth boxes for the built-in AP: ``centre`` and ``label`` of those whose centre lies in the
    BEV grid (the only ones the head can find)."""
    centre = np.asarray(boxes["box_centre"], np.float64).reshape(-1, 3)
    _, _, inside = box_cells(centre, dcfg)
    return {"centre": centre[inside], "label": np.asarray(boxes["box_class"], np.int64).reshape(-1)[inside]}


def centre_distance_ap(predictions: list[dict], truths: list[dict], classes: tuple[str, ...],
                       distance: float = MATCH_DISTANCE_M) -> dict:
    """The centre-distance AP at ``distance`` (built-in): per class, the predictions of every sweep
    (``centre`` [n, 3], ``label`` [n], ``score`` [n]) in descending score order each match the closest truth
    of the same sweep and class (``centre`` [m, 3], ``label`` [m]) not matched yet whose BEV centre lies
    within ``distance`` (true positive), or none (false positive); precision and recall follow that order,
    precision is read at recalls 0, 0.01, ..., 1 (linear between the points, 0 past the last recall), and
    AP is the mean over the recalls above ``MIN_RECALL`` of max(precision - ``MIN_PRECISION``, 0) /
    (1 - ``MIN_PRECISION``), the nuScenes rule. ``ap`` is the mean over the classes with a truth box
    (None when there are none); ``per_class`` holds each of those classes' AP."""
    per_class = {}
    for k, name in enumerate(classes):
        positives = sum(int((np.asarray(t["label"]) == k).sum()) for t in truths)
        if positives:
            per_class[name] = class_ap(predictions, truths, k, positives, distance)
    return {"ap": float(np.mean(list(per_class.values()))) if per_class else None, "per_class": per_class}


def class_ap(predictions: list[dict], truths: list[dict], k: int, positives: int, distance: float) -> float:
    """``centre_distance_ap`` of class ``k``, which has ``positives`` truth boxes."""
    found = []  # (score, sweep, centre) of every prediction of class k
    for s, p in enumerate(predictions):
        keep = np.asarray(p["label"]) == k
        found += [(float(sc), s, c) for sc, c in zip(np.asarray(p["score"])[keep], np.asarray(p["centre"])[keep])]
    if not found:
        return 0.0
    found.sort(key=lambda f: -f[0])
    gt = [np.asarray(t["centre"], np.float64)[np.asarray(t["label"]) == k] for t in truths]
    taken = [np.zeros(len(g), bool) for g in gt]
    hits = np.zeros(len(found))
    for i, (_, s, c) in enumerate(found):
        if not len(gt[s]):
            continue
        d = np.hypot(gt[s][:, 0] - c[0], gt[s][:, 1] - c[1])
        d[taken[s]] = np.inf
        j = int(np.argmin(d))
        if d[j] < distance:
            taken[s][j] = True
            hits[i] = 1
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(found) + 1)
    recall = tp / positives
    grid = np.linspace(0, 1, 101)
    precision = np.interp(grid, recall, precision, right=0)
    kept = precision[round(100 * MIN_RECALL) + 1:] - MIN_PRECISION
    return float(np.clip(kept, 0, None).mean() / (1 - MIN_PRECISION))


def detection_pictures(result: dict, predictions: list[dict], store: str, dcfg: DetectionConfig, out: str,
                       voxel_size: float, dpi: int = 100) -> dict[str, str]:
    """The pictures of a detector's evaluation in ``out``: ``ap_per_class.png`` (``detection_ap_figure`` of
    the devkit's ``result``) and ``bev.png``, the val sweep with the most truth boxes in the grid from above
    with its truth boxes and its best-scoring predictions, as many as truth boxes and at least
    ``BEV_MIN_SHOWN`` (``detection_bev_figure``). ``predictions`` as
    ``detector_predictions`` gives them; returns the paths by name."""
    from trainer.plots import detection_ap_figure, detection_bev_figure

    os.makedirs(out, exist_ok=True)
    paths = {"ap_per_class": os.path.join(out, "ap_per_class.png"), "bev": os.path.join(out, "bev.png")}
    detection_ap_figure(result, dpi).savefig(paths["ap_per_class"], dpi=dpi, facecolor="white")
    ds = StoreDataset(DataConfig(store=store, split="val", voxel_size=voxel_size, augment=False), targets=DETECTION)
    if not len(ds) or not predictions:
        del paths["bev"]
        return paths
    from pipeline.store import read_boxes

    by_sweep = {p["sweep"]: p for p in predictions}
    counts = [len(grid_truth(read_boxes(ds.group, int(s)), dcfg)["label"]) if int(s) in by_sweep else -1
              for s in ds.sweeps]  # the boxes alone: no sweep's points are read to choose one
    sample = ds[int(np.argmax(counts))]
    p = by_sweep[sample.sweep]
    truth = {"centre": sample.boxes["box_centre"], "size": sample.boxes["box_size"], "yaw": sample.boxes["box_yaw"],
             "label": sample.boxes["box_class"]}
    found = {"centre": p["centre"], "size": p["size"], "yaw": p["yaw"], "score": p["score"],
             "label": np.asarray([dcfg.classes.index(n) for n in p["name"]], np.int64)}
    shown = min(len(found["label"]), max(BEV_MIN_SHOWN, len(truth["label"])))
    title = (f"val sweep {sample.sweep}: {len(truth['label'])} truth boxes (solid); the {shown} best-scoring of "
             f"{len(found['label'])} predicted at score >= {dcfg.score_threshold} (dashed)\n"
             f"devkit mAP {100 * result['mAP']:.1f}, NDS {100 * result['NDS']:.1f} over all "
             f"{result.get('sweeps', len(predictions))} val sweeps")
    detection_bev_figure(sample.xyz, truth, found, dcfg.classes, title, max_predicted=shown,
                         half_m=max(abs(v) for v in (*dcfg.x_range, *dcfg.y_range)), dpi=dpi).savefig(
        paths["bev"], dpi=dpi, facecolor="white")
    return paths
