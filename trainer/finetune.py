"""Semantic segmentation on the store's lidarseg labels: fine-tuning, linear probing, evaluation, RankMe.

Head (as in ScaLR): ``logits = Linear(BN(f))`` over the 16 evaluation classes, the linear layer
zero-initialised; labels are the store's fine classes mapped to the 16 (0 = ignore, never a target).
Loss: cross-entropy over labelled points, plus the Lovasz-softmax loss with ``--lovasz`` (Berman et al.,
2018: for each class, the Lovasz extension of the Jaccard loss applied to the sorted errors
|1{y = c} - p_c|). Linear probe: the backbone is frozen (eval mode, no grad) and the head's BatchNorm is
fixed to standardise its features, ``(f - mean) / std`` per channel with mean and std measured on up to
``CALIBRATION_SWEEPS`` train sweeps before training (``calibrate_norm``); only the linear layer trains.
Why: a random backbone's features can have variance ~1e-6, below BatchNorm's eps (1e-5), and running
statistics that start at 1 flatten them (the audit measured 2.7 mIoU against 8.3 recalibrated).
Fine-tuning trains both, on the scenes ``splits.label_subset`` picks for ``--labels-percent``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from pipeline.classes import EVAL_CLASSES
from trainer.data import DataConfig, StoreDataset, collate
from trainer.metrics import confusion_matrix, iou_per_class, mean_iou, rankme
from trainer.model import MinkUNet, ModelConfig, point_features
from trainer.splits import label_subset

NUM_CLASSES = len(EVAL_CLASSES) - 1  # 16
CALIBRATION_SWEEPS = 16


@dataclass(frozen=True)
class FinetuneConfig:
    out: str
    labels_percent: float = 100.0
    linear_probe: bool = False
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    lovasz: bool = False
    seed: int = 0


class Segmenter(nn.Module):
    def __init__(self, mcfg: ModelConfig):
        super().__init__()
        self.backbone = MinkUNet(mcfg.arch)
        c = self.backbone.out_channels
        self.norm = nn.BatchNorm1d(c)
        self.classifier = nn.Linear(c, NUM_CLASSES)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def point_features(self, batch: dict) -> torch.Tensor:
        return point_features(self.backbone, batch)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits [N_points, 16] for classes 1..16."""
        return self.classifier(self.norm(self.point_features(batch)))


def load_backbone(model: Segmenter, checkpoint: str) -> dict:
    """Backbone weights from a pretraining checkpoint; returns its model config."""
    ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = {k[len("backbone."):]: v for k, v in ck["model"].items() if k.startswith("backbone.")}
    model.backbone.load_state_dict(state)
    return ck["model_config"]


@torch.no_grad()
def calibrate_norm(model: Segmenter, ds: StoreDataset, voxel_size: float, sweeps: int = CALIBRATION_SWEEPS) -> None:
    """Make the head's BatchNorm (in eval mode) standardise the backbone's point features: running mean
    and variance from up to ``sweeps`` evenly spaced sweeps of ``ds``, weight sqrt((var + eps) / var) so
    that each live channel leaves with variance 1 whatever eps is, bias 0."""
    was_training = model.training
    model.eval()
    picks = np.linspace(0, len(ds) - 1, min(sweeps, len(ds))).astype(int)
    f = torch.cat([model.point_features(collate([ds[int(i)]], voxel_size)) for i in picks]).double()
    mean, var = f.mean(0), f.var(0, unbiased=False)
    norm = model.norm
    norm.running_mean.copy_(mean)
    norm.running_var.copy_(var)
    live = var > 1e-30  # a dead channel is constant: (f - mean) is 0 whatever the weight
    norm.weight.copy_(torch.where(live, torch.sqrt((var + norm.eps) / var.clamp_min(1e-30)), torch.ones_like(var)))
    norm.bias.zero_()
    model.train(was_training)


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the classes present of the Lovasz extension of the Jaccard loss (probs [N,K], target [N])."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (target == c).to(probs.dtype)
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors, order = torch.sort(errors, descending=True)
        fg_sorted = fg[order]
        inter = fg_sorted.sum() - fg_sorted.cumsum(0)
        union = fg_sorted.sum() + (1 - fg_sorted).cumsum(0)
        jaccard = 1.0 - inter / union
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, grad))
    return torch.stack(losses).mean() if losses else probs.sum() * 0


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, lovasz: bool) -> torch.Tensor:
    keep = labels > 0
    target = labels[keep] - 1
    loss = nn.functional.cross_entropy(logits[keep], target)
    if lovasz:
        loss = loss + lovasz_softmax(logits[keep].softmax(1), target)
    return loss


def finetune(store: str, checkpoint: str | None, arch: str, cfg: FinetuneConfig, voxel_size: float = 0.1,
             progress: bool = True) -> dict:
    """Train the segmenter on the labelled subset; evaluate on the val scenes; write OUT/result.json."""
    from tqdm import tqdm

    from pipeline.schema import open_store

    group = open_store(store)
    if not group.attrs["has_labels"]:
        raise ValueError(f"store {store} has no lidarseg labels to fine-tune on")
    torch.manual_seed(cfg.seed)
    model = Segmenter(ModelConfig(arch=arch))
    source = "random initialisation"
    if checkpoint:
        pre = load_backbone(model, checkpoint)
        if pre["arch"] != arch:
            raise ValueError(f"checkpoint {checkpoint} holds a {pre['arch']} backbone, not {arch}")
        source = checkpoint
    scenes = tuple(label_subset(group.attrs["scenes"], cfg.labels_percent, cfg.seed))
    ds = StoreDataset(DataConfig(store=store, split="train", voxel_size=voxel_size, seed=cfg.seed, scenes=scenes))
    params = list(model.classifier.parameters())
    if cfg.linear_probe:
        for p in [*model.backbone.parameters(), *model.norm.parameters()]:
            p.requires_grad_(False)
        calibrate_norm(model, ds, voxel_size)
    else:
        params += list(model.norm.parameters()) + list(model.backbone.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 7])
    os.makedirs(cfg.out, exist_ok=True)
    bar = tqdm(range(cfg.steps), desc="probe" if cfg.linear_probe else "finetune", unit="step",
               disable=not progress)
    for step in bar:
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        if cfg.linear_probe:
            model.backbone.eval()  # frozen: its batch norms keep their statistics
            model.norm.eval()  # fixed standardisation (calibrate_norm)
        ds.epoch = step
        batch = collate([ds[int(i)] for i in rng.choice(len(ds), min(cfg.batch_size, len(ds)), replace=False)],
                        voxel_size)
        loss = seg_loss(model(batch), batch["labels"], cfg.lovasz)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    result = evaluate_model(model, store, "val", voxel_size)
    result.update(labels_percent=cfg.labels_percent, label_scenes=list(scenes), linear_probe=cfg.linear_probe,
                  init=source, arch=arch, config=asdict(cfg))
    torch.save({"model": model.state_dict(), "arch": arch, "result": _plain(result)},
               os.path.join(cfg.out, "segmenter.pt"))
    with open(os.path.join(cfg.out, "result.json"), "w") as f:
        json.dump(_plain(result), f, indent=1)
    return result


@torch.no_grad()
def evaluate_model(model: Segmenter, store: str, split: str, voxel_size: float,
                   corruption: str | None = None) -> dict:
    """Confusion matrix, per-class IoU and mIoU over the sweeps of ``split`` (no augmentation), on the
    clean clouds or under ``corruption`` (e.g. "fog:0.02"; metrics over the points that remain)."""
    ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=voxel_size, augment=False,
                                 corruption=corruption))
    model.eval()
    conf = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), dtype=np.int64)
    for i in range(len(ds)):
        batch = collate([ds[i]], voxel_size)
        pred = model(batch).argmax(1).numpy() + 1
        conf += confusion_matrix(batch["labels"].numpy(), pred, NUM_CLASSES)
    iou = iou_per_class(conf)
    return {"split": split, "sweeps": len(ds), "corruption": corruption, "miou": mean_iou(conf),
            "iou": {EVAL_CLASSES[c + 1]: (None if np.isnan(v) else float(v)) for c, v in enumerate(iou)},
            "confusion": conf.tolist()}


@torch.no_grad()
def store_rankme(store: str, checkpoint: str | None, sweeps: int = 8, points_per_sweep: int = 2048,
                 voxel_size: float = 0.1, arch: str | None = None, seed: int = 0) -> float:
    """RankMe of a pretrained backbone's point features over evenly spaced sweeps of the store; without
    a checkpoint, of a randomly initialised ``arch`` backbone (seeded), the baseline."""
    if checkpoint is None:
        if arch is None:
            raise ValueError("store_rankme: give a checkpoint, or an arch for a random backbone")
        torch.manual_seed(seed)
        model = Segmenter(ModelConfig(arch=arch))
    else:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model = Segmenter(ModelConfig(arch=ck["model_config"]["arch"]))
        load_backbone(model, checkpoint)
    model.eval()
    ds = StoreDataset(DataConfig(store=store, split="all", voxel_size=voxel_size, augment=False))
    feats = []
    for i in np.linspace(0, len(ds) - 1, min(sweeps, len(ds))).astype(int):
        f = model.point_features(collate([ds[int(i)]], voxel_size))
        feats.append(f[torch.linspace(0, len(f) - 1, min(points_per_sweep, len(f))).long()])
    return rankme(torch.cat(feats))


def _plain(value):
    return json.loads(json.dumps(value))
