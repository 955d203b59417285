"""3D object detection on the sparse backbone: a CenterPoint-style head on a bird's-eye-view (BEV) grid.

Grid (``DetectionConfig``): cells of ``cell_m`` over ``x_range`` x ``y_range`` in the LiDAR frame; column i
runs along x, row j along y, and a cell's flat index is ``j * W + i``. Model (``Detector``): the MinkUNet's
voxel features are pooled over z into the BEV cell under each voxel's centre (max or mean; each sweep of
a batch keeps its own grid), then a 2D trunk (3x3 conv + BN + ReLU layers) feeds two heads: a class
heatmap (K channels, logits; the bias starts at -2.19, a prior probability of 0.1) and ``REGRESSION``
(10 channels, read at a box's centre cell).

Targets (``detection_targets``): per class, a Gaussian peak of height 1 at the centre cell of each of its
boxes (the max where peaks overlap), of radius ``gaussian_radius`` (the largest shift of a box's corners
that keeps its IoU with the truth above ``min_overlap``, CenterNet's rule, at least ``min_radius`` cells);
per box: its cell, its regression target and which channels count (a velocity that is NaN, unknown, does
not). Boxes whose centre lies outside the grid are dropped.
Loss (``detection_loss``): CenterNet's Gaussian focal loss on the heatmap plus L1 on the regression at
the box cells, both divided by the number of boxes.
Decoding (``decode``): peaks of the heatmap (cells equal to the max of their ``peak_window`` neighbourhood
in their class's channel) at least ``score_threshold``, the ``max_detections`` best, each read back into a
box from the regression at its cell.

A limit of any centre-based head: one cell holds one box per class. Two boxes of one class whose centres
share a cell give one peak and are decoded as one box; boxes of different classes in one cell give a peak
each, but share the cell's regression.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import nn

from trainer.batch import IN_CHANNELS, Batch, Sample, collate, require
from trainer.config import DetectionConfig
from trainer.model import MinkUNet
from trainer.sparse import SparseTensor

#: Regression channels at a box's centre cell: the centre's offset within the cell (in cells, 0..1), its
#: height z (m), the log of its size (width, length, height; m), its heading as (sin, cos) of the yaw, and
#: its velocity (vx, vy; m/s).
REGRESSION = ("offset_x", "offset_y", "z", "log_width", "log_length", "log_height", "sin_yaw", "cos_yaw", "vx", "vy")
VELOCITY = slice(8, 10)  # the velocity channels of REGRESSION
HEATMAP_PRIOR_BIAS = -2.19  # sigmoid(-2.19) = 0.1: the heatmap starts out predicting few objects


# ---------------------------------------------------------------------------------------------------
# targets


def gaussian_radius(length: float, width: float, min_overlap: float) -> float:
    """The largest r (cells) such that a box of ``length`` x ``width`` cells (a, b below) keeps an IoU of
    at least ``min_overlap`` (o) with itself when its corners move by r: the smallest r over three cases,
    each the smaller (or only positive) root of a quadratic in r.

    - both corners shift the same way (a translated copy): I = (a - r)(b - r), IoU = I / (2ab - I);
    - both corners move inwards (a shrunk copy): IoU = (a - 2r)(b - 2r) / (ab);
    - both corners move outwards (a grown copy): IoU = ab / ((a + 2r)(b + 2r)).
    """
    a, b, o = float(length), float(width), float(min_overlap)
    # translated: r^2 - (a + b) r + ab (1 - o) / (1 + o) = 0
    b1, c1 = a + b, a * b * (1 - o) / (1 + o)
    r1 = (b1 - np.sqrt(max(b1 * b1 - 4 * c1, 0.0))) / 2
    # shrunk: 4 r^2 - 2 (a + b) r + ab (1 - o) = 0
    b2, c2 = 2 * (a + b), a * b * (1 - o)
    r2 = (b2 - np.sqrt(max(b2 * b2 - 16 * c2, 0.0))) / 8
    # grown: 4 o r^2 + 2 o (a + b) r - ab (1 - o) = 0
    b3, c3 = 2 * o * (a + b), -a * b * (1 - o)
    r3 = (-b3 + np.sqrt(b3 * b3 - 16 * o * c3)) / (8 * o)
    return float(min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, row: int, col: int, radius: int) -> None:
    """Raise ``heatmap`` [H, W] in place to a Gaussian of height 1 at (row, col), over the (2r + 1)^2
    cells around it, sigma = (2r + 1) / 6 (the window holds +-3 sigma)."""
    sigma = (2 * radius + 1) / 6
    d = np.arange(-radius, radius + 1)
    g = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma * sigma))
    h, w = heatmap.shape
    r0, r1 = max(row - radius, 0), min(row + radius + 1, h)
    c0, c1 = max(col - radius, 0), min(col + radius + 1, w)
    window = g[r0 - row + radius:r1 - row + radius, c0 - col + radius:c1 - col + radius]
    np.maximum(heatmap[r0:r1, c0:c1], window, out=heatmap[r0:r1, c0:c1])


def box_radius(size: np.ndarray, cfg: DetectionConfig) -> int:
    """A box's Gaussian radius in whole cells: ``gaussian_radius`` of its (length, width) in cells, floored,
    at least ``min_radius``."""
    r = gaussian_radius(size[1] / cfg.cell_m, size[0] / cfg.cell_m, cfg.min_overlap)
    return max(cfg.min_radius, int(r))


@dataclass
class DetectionTargets:
    """What one sweep's boxes ask of the head (M kept boxes), or of a batch of B sweeps (fields gain a
    leading B; the per-box ones are padded to the largest M with ``valid`` False and zero masks)."""

    heatmap: torch.Tensor  # [K, H, W] float32, 1 at box centre cells
    index: torch.Tensor  # [M] int64, flat cell (row * W + column) of each box's centre
    regression: torch.Tensor  # [M, 10] float32, REGRESSION of each box (0 where unknown)
    mask: torch.Tensor  # [M, 10] float32, 1 where the channel counts in the loss (velocity: where known)
    labels: torch.Tensor  # [M] int64, class of each box
    valid: torch.Tensor  # [M] bool, a real box (False: batch padding)

    def to(self, device) -> DetectionTargets:
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def num_boxes(self) -> int:
        return int(self.valid.sum())


def box_cells(centre: np.ndarray, cfg: DetectionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(column [b], row [b], inside [b] bool) of the cells holding the centres [b, 3]; ``inside`` is False
    for centres outside the grid (their column and row are then meaningless)."""
    h, w = cfg.grid_shape
    gx = (centre[:, 0] - cfg.x_range[0]) / cfg.cell_m
    gy = (centre[:, 1] - cfg.y_range[0]) / cfg.cell_m
    col, row = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return col, row, inside


def detection_targets(boxes: dict[str, np.ndarray], cfg: DetectionConfig) -> DetectionTargets:
    """One sweep's boxes (``box_centre``, ``box_size``, ``box_yaw``, ``box_velocity``, ``box_class``: the
    arrays of ``pipeline.store.read_boxes``, LiDAR frame) -> its ``DetectionTargets``. Boxes whose centre
    lies outside the grid are dropped; the offset is computed in float64 so that the cell plus offset gives
    the centre back to float32 precision."""
    centre = np.asarray(boxes["box_centre"], np.float64).reshape(-1, 3)
    size = np.asarray(boxes["box_size"], np.float64).reshape(-1, 3)
    yaw = np.asarray(boxes["box_yaw"], np.float64).reshape(-1)
    velocity = np.asarray(boxes["box_velocity"], np.float64).reshape(-1, 2)
    labels = np.asarray(boxes["box_class"], np.int64).reshape(-1)
    if len(labels) and not ((labels >= 0) & (labels < cfg.num_classes)).all():
        raise ValueError(f"box classes {sorted(set(labels.tolist()))} outside the {cfg.num_classes} classes of the "
                         f"detection config")
    col, row, inside = box_cells(centre, cfg)
    centre, size, yaw, velocity, labels = centre[inside], size[inside], yaw[inside], velocity[inside], labels[inside]
    col, row = col[inside], row[inside]
    h, w = cfg.grid_shape
    heatmap = np.zeros((cfg.num_classes, h, w), np.float32)
    for k, r, c, s in zip(labels, row, col, size):
        draw_gaussian(heatmap[k], int(r), int(c), box_radius(s, cfg))
    known = np.isfinite(velocity).all(axis=1)
    regression = np.concatenate([
        ((centre[:, 0] - cfg.x_range[0]) / cfg.cell_m - col)[:, None],
        ((centre[:, 1] - cfg.y_range[0]) / cfg.cell_m - row)[:, None],
        centre[:, 2:3], np.log(size), np.sin(yaw)[:, None], np.cos(yaw)[:, None],
        np.where(known[:, None], velocity, 0.0)], axis=1)
    mask = np.ones_like(regression)
    mask[:, VELOCITY] = known[:, None]
    return DetectionTargets(heatmap=torch.from_numpy(heatmap), index=torch.from_numpy(row * w + col),
                            regression=torch.from_numpy(regression.astype(np.float32)),
                            mask=torch.from_numpy(mask.astype(np.float32)), labels=torch.from_numpy(labels),
                            valid=torch.ones(len(labels), dtype=torch.bool))


def check_store_classes(cfg: DetectionConfig, attrs: dict) -> None:
    """Refuse, in one line, a store whose ``detection_classes`` are not the config's ``classes`` in the
    same order: a box's class is an index into the store's list and picks its heatmap channel as it is."""
    stored = tuple(attrs.get("detection_classes") or ())
    if stored != tuple(cfg.classes):
        raise ValueError(f"the store's detection classes {list(stored)} are not the detection config's "
                         f"{list(cfg.classes)}: give --classes in the store's order")


def collate_targets(targets: list[DetectionTargets]) -> DetectionTargets:
    """Stack the targets of B sweeps, in the order of their ``Batch``: heatmaps [B, K, H, W], per-box
    fields padded to the most boxes of any sweep (padding: ``valid`` False, mask 0, index 0)."""
    m = max((len(t.index) for t in targets), default=0)

    def padded(name: str) -> torch.Tensor:
        parts = []
        for t in targets:
            x = getattr(t, name)
            pad = x.new_zeros((m - len(x),) + tuple(x.shape[1:]))
            parts.append(torch.cat([x, pad]))
        return torch.stack(parts)

    return DetectionTargets(heatmap=torch.stack([t.heatmap for t in targets]),
                            **{name: padded(name) for name in ("index", "regression", "mask", "labels", "valid")})


class DetectionCollate:
    """Samples with boxes (a ``StoreDataset`` with the ``boxes`` target) -> (their ``Batch``, as
    ``trainer.batch.collate`` makes it for segmentation, and their batched ``DetectionTargets``, in the
    same sweep order); picklable for DataLoader workers."""

    def __init__(self, cfg: DetectionConfig, voxel_size: float):
        self.cfg = cfg
        self.voxel_size = voxel_size

    def __call__(self, samples: list[Sample]) -> tuple[Batch, DetectionTargets]:
        for sample in samples:
            require(sample, "boxes", purpose="the detection head")
        return (collate(samples, self.voxel_size),
                collate_targets([detection_targets(s.boxes, self.cfg) for s in samples]))


# ---------------------------------------------------------------------------------------------------
# model


def bev_scatter(feats: torch.Tensor, coords: torch.Tensor, num_sweeps: int, voxel_size: float,
                cfg: DetectionConfig) -> torch.Tensor:
    """Voxel features [V, C] at voxel coordinates [V, 4] (sweep, x, y, z in voxels) -> a dense BEV grid
    [B, C, H, W]: each voxel goes to the cell under its centre, of its own sweep, and a cell holds the
    max (``cfg.pool`` "max") or mean ("mean") over its voxels; cells with no voxel, and voxels outside the
    grid, give 0 and nothing."""
    h, w = cfg.grid_shape
    centre = (coords[:, 1:3].to(feats.dtype) + 0.5) * voxel_size
    col = torch.floor((centre[:, 0] - cfg.x_range[0]) / cfg.cell_m).long()
    row = torch.floor((centre[:, 1] - cfg.y_range[0]) / cfg.cell_m).long()
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    cell = (coords[inside, 0].long() * h + row[inside]) * w + col[inside]
    src = feats[inside]
    reduce = "amax" if cfg.pool == "max" else "mean"
    grid = feats.new_zeros(num_sweeps * h * w, feats.shape[1])
    grid = grid.scatter_reduce(0, cell[:, None].expand_as(src), src, reduce, include_self=False)
    return grid.view(num_sweeps, h, w, -1).permute(0, 3, 1, 2).contiguous()


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class BEVHead(nn.Module):
    """BEV features [B, C, H, W] -> heatmap logits [B, K, H, W] and regression [B, 10, H, W]: a trunk of
    ``trunk_layers`` 3x3 conv + BN + ReLU, then per output a 3x3 conv + BN + ReLU and a 1x1 conv."""

    def __init__(self, c_in: int, cfg: DetectionConfig):
        super().__init__()
        ch = cfg.trunk_channels
        self.trunk = nn.Sequential(*[conv_bn_relu(c_in if i == 0 else ch, ch) for i in range(cfg.trunk_layers)])
        self.heatmap = nn.Sequential(conv_bn_relu(ch, ch), nn.Conv2d(ch, cfg.num_classes, 1))
        self.regression = nn.Sequential(conv_bn_relu(ch, ch), nn.Conv2d(ch, len(REGRESSION), 1))
        nn.init.constant_(self.heatmap[-1].bias, HEATMAP_PRIOR_BIAS)

    def forward(self, bev: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.trunk(bev)
        return {"heatmap": self.heatmap(x), "regression": self.regression(x)}


class Detector(nn.Module):
    """A MinkUNet backbone (the same module, under the same name ``backbone``, as the Segmenter's, so that
    ``trainer.checkpoint.load_backbone`` fills it from a pretraining checkpoint) and a ``BEVHead`` on its
    voxel features pooled to the BEV grid. ``voxel_size``: the voxels of the batches it is given (m)."""

    def __init__(self, arch: str, cfg: DetectionConfig, voxel_size: float = 0.1):
        super().__init__()
        self.cfg = cfg
        self.voxel_size = float(voxel_size)
        self.backbone = MinkUNet(arch, IN_CHANNELS)
        self.head = BEVHead(self.backbone.out_channels, cfg)

    def bev(self, batch: Batch) -> torch.Tensor:
        """The backbone's features of a batch as BEV grids [B, C, H, W], one per sweep."""
        x = self.backbone(SparseTensor(batch.voxel_feats, batch.voxel_coords))
        return bev_scatter(x.feats, x.coords, batch.num_sweeps, self.voxel_size, self.cfg)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Heatmap logits [B, K, H, W] and regression [B, 10, H, W] of each sweep of ``batch``."""
        return self.head(self.bev(batch))


def new_detector(arch: str, cfg: DetectionConfig, checkpoint: str | None, seed: int,
                 voxel_size: float = 0.1) -> tuple[Detector, str]:
    """A detector to train: its backbone from a pretraining checkpoint, or random (initialised after
    ``torch.manual_seed(seed)``), its head random; returns it and where its backbone came from."""
    from trainer.checkpoint import load_backbone

    torch.manual_seed(seed)
    model = Detector(arch, cfg, voxel_size)
    if checkpoint is None:
        return model, "random initialisation"
    load_backbone(model, checkpoint, arch)
    return model, checkpoint


# ---------------------------------------------------------------------------------------------------
# loss


def gaussian_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0, beta: float = 4.0,
                        num_boxes: int | None = None) -> torch.Tensor:
    """CenterNet's focal loss on a heatmap of Gaussian peaks, from logits (p = sigmoid(logits)):

        -sum_peaks (1 - p)^alpha log p  -  sum_others (1 - y)^beta p^alpha log(1 - p),  / max(num_boxes, 1)

    where peaks are the cells with target y = 1; ``(1 - y)^beta`` spares the cells near a peak.
    ``num_boxes`` defaults to the number of peaks. Log-probabilities come from ``logsigmoid``, so that
    confident logits neither overflow nor give infinite gradients."""
    p = torch.sigmoid(logits)
    peak = target == 1
    log_p, log_not_p = nn.functional.logsigmoid(logits), nn.functional.logsigmoid(-logits)
    pos = ((1 - p) ** alpha * log_p)[peak].sum()
    neg = ((1 - target) ** beta * p ** alpha * log_not_p)[~peak].sum()
    n = int(peak.sum()) if num_boxes is None else num_boxes
    return -(pos + neg) / max(n, 1)


def gather_cells(maps: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Maps [B, C, H, W] read at flat cells ``index`` [B, M] -> [B, M, C]."""
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    return flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).transpose(1, 2)


def regression_weights(cfg: DetectionConfig, device=None) -> torch.Tensor:
    """Weight [10] of each REGRESSION channel in the L1: 1, and ``velocity_weight`` for the velocity."""
    w = torch.ones(len(REGRESSION), device=device)
    w[VELOCITY] = cfg.velocity_weight
    return w


def detection_loss(out: dict[str, torch.Tensor], targets: DetectionTargets, cfg: DetectionConfig) -> dict:
    """``total`` = heatmap_weight x Gaussian focal loss + regression_weight x L1 at the box cells, with
    the two parts (``heatmap``, ``regression``); both are divided by the batch's number of boxes."""
    n = targets.num_boxes
    heat = gaussian_focal_loss(out["heatmap"], targets.heatmap, cfg.focal_alpha, cfg.focal_beta, num_boxes=n)
    pred = gather_cells(out["regression"], targets.index)
    weight = targets.mask * regression_weights(cfg, pred.device)
    reg = ((pred - targets.regression).abs() * weight).sum() / max(n, 1)
    total = cfg.heatmap_weight * heat + cfg.regression_weight * reg
    return {"total": total, "heatmap": heat.detach(), "regression": reg.detach()}


# ---------------------------------------------------------------------------------------------------
# decoding


def decode(heatmap: torch.Tensor, regression: torch.Tensor, cfg: DetectionConfig) -> dict[str, torch.Tensor]:
    """One sweep's heatmap probabilities [K, H, W] and regression [10, H, W] -> its boxes, best first:
    ``centre`` [n, 3], ``size`` [n, 3] (width, length, height), ``yaw`` [n], ``velocity`` [n, 2],
    ``label`` [n] and ``score`` [n]. A box is a cell that is the max of its ``peak_window`` neighbourhood
    in its class's channel and scores at least ``score_threshold``; the ``max_detections`` best are kept.
    For a batch, call it per sweep (``decode_batch``)."""
    k, h, w = heatmap.shape
    pad = cfg.peak_window // 2
    pooled = nn.functional.max_pool2d(heatmap[None], cfg.peak_window, stride=1, padding=pad)[0]
    keep = (heatmap == pooled) & (heatmap >= cfg.score_threshold)
    scores = torch.where(keep, heatmap, torch.full_like(heatmap, -1.0)).reshape(-1)
    n = min(int(keep.sum()), cfg.max_detections)
    score, flat = torch.topk(scores, n)
    label, cell = flat // (h * w), flat % (h * w)
    row, col = cell // w, cell % w
    reg = regression.reshape(len(REGRESSION), -1)[:, cell].T.to(torch.float64)  # [n, 10]
    x = cfg.x_range[0] + (col.to(torch.float64) + reg[:, 0]) * cfg.cell_m
    y = cfg.y_range[0] + (row.to(torch.float64) + reg[:, 1]) * cfg.cell_m
    dtype = regression.dtype
    return {"centre": torch.stack([x, y, reg[:, 2]], dim=1).to(dtype), "size": reg[:, 3:6].exp().to(dtype),
            "yaw": torch.atan2(reg[:, 6], reg[:, 7]).to(dtype), "velocity": reg[:, VELOCITY].to(dtype),
            "label": label, "score": score}


@torch.no_grad()
def decode_batch(out: dict[str, torch.Tensor], cfg: DetectionConfig) -> list[dict[str, torch.Tensor]]:
    """A ``Detector``'s output for B sweeps -> the boxes of each (``decode`` of the sigmoid of its logits)."""
    probs = torch.sigmoid(out["heatmap"])
    return [decode(probs[b], out["regression"][b], cfg) for b in range(len(probs))]
