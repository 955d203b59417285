"""Scoring: a segmenter's per-class IoU and mIoU, a pretrained backbone's RankMe, its projection head's
distillation gain over a constant, and its occupancy head's balanced accuracy, all on held-out sweeps.

- mIoU (``evaluate_model``) is over a fixed class set: by default the evaluation classes present in the
  truth of the evaluated sweeps (``classes`` in the result), so a class the split lacks neither helps
  nor hurts; scores under a corruption use the clean run's set.
  Every point of every sweep counts, with no augmentation and no point cap.
- Distillation gain (``distillation_gain``): with q the L2-normalised teacher features of the held-out
  points that have one and k the student's projected features, loss = mean(1 - k.q); the constant
  predictor k = m, the normalised mean of the train sweeps' normalised teacher features, has loss_mean;
  gain = 1 - loss / loss_mean (0: no better than the mean direction; 1: perfect).
- RankMe (``store_rankme``): ``trainer/metrics.rankme`` of the backbone's point features on evenly spaced
  sweeps of one split (the train sweeps, for the table).
- Occupancy (``occupancy_accuracy``): balanced accuracy (``trainer/occupancy``) of the occupancy logits on
  queries drawn as pretraining draws them (the checkpoint's mask settings), from a fixed seed.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.classes import EVAL_CLASSES
from trainer.batch import Sample, collate
from trainer.config import DataConfig
from trainer.data import SEGMENTATION, StoreDataset
from trainer.metrics import balanced_accuracy, confusion_matrix, iou_per_class, mean_iou, rankme

OCCUPANCY_SEED = 12345  # the data seed of the held-out occupancy queries, apart from every training seed


@torch.no_grad()
def evaluate_model(model, store: str, split: str, voxel_size: float, corruption: str | None = None,
                   device: str = "cpu", classes: list[str] | None = None, progress: bool = False) -> dict:
    """Confusion matrix, per-class IoU and mIoU over the sweeps of ``split`` (no augmentation), on the
    clean clouds or under ``corruption`` (e.g. "fog:0.02"; metrics over the points that remain). The
    mIoU is over ``classes`` when given (e.g. the clean run's, so that a corruption that removes a
    class's last points does not change the set), else over the classes present in the truth.
    ``progress``: a bar over the sweeps on stderr, gone when done."""
    ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=voxel_size, augment=False,
                                 corruption=corruption), targets=SEGMENTATION)
    if not ds.attrs["has_labels"]:
        raise ValueError(f"store {store} has no labels to evaluate against")
    k = ds.classes.num_classes
    if model.classifier.out_features != k:
        raise ValueError(f"the segmenter predicts {model.classifier.out_features} classes, but store {store} scores "
                         f"{k} ({ds.classes.dataset}: {', '.join(ds.classes.eval)}); fine-tune one on a store of "
                         f"this dataset")
    was_training = model.training
    model.eval()
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    from tqdm import tqdm

    what = f"evaluate {split}" + (f" under {corruption}" if corruption else "")
    for i in tqdm(range(len(ds)), desc=what, unit="sweep", leave=False, disable=not progress):
        batch = collate([ds[i]], voxel_size).to(device)
        pred = model(batch).argmax(1).cpu().numpy() + 1
        conf += confusion_matrix(batch.labels.cpu().numpy(), pred, k)
    model.train(was_training)
    return scores(conf, classes, ds.classes.eval) | {"split": split, "sweeps": len(ds), "corruption": corruption}


def scores(conf: np.ndarray, classes: list[str] | None = None, names: tuple[str, ...] | None = None) -> dict:
    """Per-class IoU and the mIoU over ``classes``, by default those present in the truth of ``conf``.
    ``names``: of the evaluation classes 1..K (default: nuScenes' 16)."""
    names = tuple(names or EVAL_CLASSES[1:])
    if classes is None:
        present = conf[1:, :].sum(1) > 0
    else:
        present = np.array([name in classes for name in names])
    iou = iou_per_class(conf)
    return {"miou": mean_iou(conf, present),
            "classes": [names[c] for c in np.nonzero(present)[0]],
            "iou": {names[c]: (None if np.isnan(v) else float(v)) for c, v in enumerate(iou)},
            "confusion": conf.tolist()}


def check_segmenter_classes(record: dict, store: str) -> None:
    """Refuse a segmenter (its file's ``record``) whose classes are not the ones ``store`` scores."""
    from pipeline.store import open_store, store_classes

    theirs = store_classes(dict(open_store(store).attrs))
    if list(record["classes"]) != list(theirs.eval):
        raise ValueError(f"the segmenter predicts {len(record['classes'])} classes ({', '.join(record['classes'][:3])}"
                         f"...), not the {theirs.num_classes} {theirs.dataset} classes store {store} scores "
                         f"({', '.join(theirs.eval[:3])}...); fine-tune one on a store of this dataset")


def random_or_pretrained(checkpoint: str | None, arch: str | None, seed: int):
    """A Segmenter whose backbone is a pretraining checkpoint's, or random (seeded) without one."""
    from trainer.checkpoint import new_segmenter, pretraining_arch

    if checkpoint is None and arch is None:
        raise ValueError("give a pretraining checkpoint, or an arch for a random backbone")
    return new_segmenter(pretraining_arch(checkpoint) if checkpoint else arch, checkpoint, seed)[0]


@torch.no_grad()
def store_rankme(store: str, checkpoint: str | None, sweeps: int = 8, points_per_sweep: int = 2048,
                 voxel_size: float | None = None, arch: str | None = None, seed: int = 0,
                 split: str = "train", device: str = "cpu") -> tuple[float, int]:
    """RankMe of a pretrained backbone's point features over evenly spaced sweeps of ``split`` (voxel size
    by default the checkpoint's, else 0.1 m); without a checkpoint, of a randomly initialised ``arch``
    backbone (seeded), the baseline. Returns (RankMe, sweeps used)."""
    from trainer.checkpoint import read_checkpoint

    model = random_or_pretrained(checkpoint, arch, seed).eval().to(device)
    if voxel_size is None:
        voxel_size = read_checkpoint(checkpoint)["data_config"]["voxel_size"] if checkpoint else DataConfig.voxel_size
    ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=voxel_size, augment=False), targets=SEGMENTATION)
    feats = []
    for i in np.linspace(0, len(ds) - 1, min(sweeps, len(ds))).astype(int):
        f = model.point_features(collate([ds[int(i)]], voxel_size).to(device)).cpu()
        feats.append(f[torch.linspace(0, len(f) - 1, min(points_per_sweep, len(f))).long()])
    return rankme(torch.cat(feats)), len(feats)


@torch.no_grad()
def mean_teacher_direction(store: str, split: str = "train", sweeps: int = 32) -> torch.Tensor:
    """m = normalise(mean of the normalised teacher features) over evenly spaced sweeps of ``split``."""
    ds = StoreDataset(DataConfig(store=store, split=split, augment=False), targets=("teacher",))
    total = None
    for i in np.linspace(0, len(ds) - 1, min(sweeps, len(ds))).astype(int):
        item = ds[int(i)]
        q = torch.nn.functional.normalize(torch.from_numpy(item.teacher[item.valid]).double(), dim=1)
        total = q.sum(0) if total is None else total + q.sum(0)
    return torch.nn.functional.normalize(total, dim=0)


@torch.no_grad()
def distillation_gain(store: str, checkpoint: str, split: str = "val", reference_split: str = "train") -> dict:
    """Held-out cosine distillation loss of a pretraining checkpoint, the mean-direction predictor's, and
    the gain 1 - loss / loss_mean (module docstring)."""
    from trainer.checkpoint import load_student, read_checkpoint

    ck = read_checkpoint(checkpoint)
    model = load_student(ck)
    voxel = ck["data_config"]["voxel_size"]
    m = mean_teacher_direction(store, reference_split)
    ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=voxel, augment=False), targets=("teacher",))
    loss_sum = mean_sum = 0.0
    count = 0
    for i in range(len(ds)):
        batch = collate([ds[i]], voxel)
        k = model(batch, occupancy=False)["proj"].double()
        q = torch.nn.functional.normalize(batch.teacher[batch.valid].double(), dim=1)
        loss_sum += float((1 - (k * q).sum(1)).sum())
        mean_sum += float((1 - q @ m).sum())
        count += len(q)
    loss, loss_mean = loss_sum / count, mean_sum / count
    return {"loss": loss, "loss_mean_direction": loss_mean, "gain": 1.0 - loss / loss_mean, "points": count,
            "split": split}


@torch.no_grad()
def occupancy_accuracy(checkpoint: str | dict, items: list[Sample]) -> float:
    """Balanced accuracy of a pretraining checkpoint's occupancy head on the queries of ``items``."""
    from trainer.checkpoint import load_student, read_checkpoint

    ck = read_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
    model = load_student(ck)
    logits, labels = [], []
    for item in items:
        batch = collate([item], ck["data_config"]["voxel_size"])
        logits.append(model(batch)["occ_logits"])
        labels.append(batch.occ)
    return balanced_accuracy(torch.cat(logits), torch.cat(labels))


def occupancy_dataset(store: str, checkpoint: str | dict, split: str = "val",
                      seed: int = OCCUPANCY_SEED) -> StoreDataset:
    """The sweeps of ``split`` with queries drawn as the checkpoint's pretraining drew them (its mask,
    augmentation and query settings), from ``seed``, on every point of the sweep (as segmentation is
    scored; no point cap); a checkpoint trained without a mask gets the default mask, so that the
    queries ask about hidden cubes."""
    from trainer.checkpoint import read_checkpoint
    from trainer.config import MaskConfig

    ck = read_checkpoint(checkpoint) if isinstance(checkpoint, str) else checkpoint
    d = ck["data_config"]
    ratio = tuple(d["mask_ratio"]) if d["mask_ratio"][1] > 0 else MaskConfig().ratio
    return StoreDataset(DataConfig(store=store, split=split, voxel_size=d["voxel_size"], augment=d["augment"],
                                   scale=d["scale"], max_queries=d["max_queries"], seed=seed, mask_ratio=ratio,
                                   mask_cell=d["mask_cell"]), targets=("occupancy",))


def occupancy_items(store: str, checkpoint: str | dict, split: str = "val", seed: int = OCCUPANCY_SEED) -> list[Sample]:
    """Every sweep of ``occupancy_dataset``, prepared."""
    ds = occupancy_dataset(store, checkpoint, split, seed)
    return [ds[i] for i in range(len(ds))]
