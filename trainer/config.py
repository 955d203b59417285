"""Every setting of the trainer, in frozen dataclasses that check themselves on construction.

One default per setting, defined here and nowhere else: ``cdtrain`` reads its options' defaults from
these classes, checkpoints and segmenter files store them (``to_dict``), and a resumed run compares
them field by field (``trainer/checkpoint.check_resume``). A value that cannot work is refused in one
line that names the command-line flag (``--field-name``). This module imports neither torch nor the
store, so ``cdtrain --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from pipeline.classes import DETECTION_CLASSES

ARCHS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    # name: (blocks per stage, planes per stage), encoder x4 then decoder x4
    "minkunet34": ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)),
    "minkunet18": ((2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)),
    "minkunet14": ((1, 1, 1, 1, 1, 1, 1, 1), (32, 64, 128, 256, 256, 128, 96, 96)),
    "minkunet-small": ((1, 1, 1, 1, 1, 1, 1, 1), (16, 32, 64, 128, 128, 64, 48, 48)),
    "minkunet-tiny": ((1, 1, 1, 1, 1, 1, 1, 1), (8, 16, 24, 32, 32, 24, 16, 16)),
}
CPU_SIZED_ARCHS = ("minkunet-small", "minkunet-tiny")  # a step on all points of a sweep takes seconds on a CPU
DISTILLATION_LOSSES = ("cosine", "l2")
STORE_SPLITS = ("train", "val", "all")  # the scenes of a store a run may use
LABEL_UNITS = ("scenes", "sweeps")  # what a labelled subset is drawn in (trainer/splits.py)


def check_fields(config, positive: tuple[str, ...] = (), not_negative: tuple[str, ...] = ()) -> None:
    """Refuse, in one line naming the flag (``--field-name``), a config field that must be positive or
    not negative and is not (NaN is neither)."""
    for names, ok, want in ((positive, lambda v: v > 0, "positive"), (not_negative, lambda v: v >= 0, "0 or more")):
        for name in names:
            value = getattr(config, name)
            if not ok(value):
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be {want}")


def check_choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{flag} {value!r}: choose one of {', '.join(map(str, choices))}")


def field_defaults(config_class) -> dict:
    """The default of each field of a config dataclass that has one: what a field added since a file was
    written was, in effect, when it was written."""
    out = {}
    for f in dataclasses.fields(config_class):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


@dataclass(frozen=True)
class MaskConfig:
    """The occupancy task's hidden cubes (``trainer/occupancy.py``)."""

    ratio: tuple[float, float] = (0.3, 0.5)  # fraction of cubes hidden, uniform in this range; (0, 0): off
    cell_m: float = 2.0  # cube edge (m)
    bin_m: float = 0.1  # offset bins of the query balance (m)

    def __post_init__(self):
        lo, hi = self.ratio
        if not 0 <= lo <= hi < 1:
            raise ValueError(f"--mask-ratio {lo} {hi}: need 0 <= low <= high < 1")
        if self.cell_m <= 0 or self.bin_m <= 0:
            raise ValueError(f"--mask-cell {self.cell_m} and the offset bin {self.bin_m} must be positive")

    @property
    def active(self) -> bool:
        return self.ratio[1] > 0


NO_MASK = (0.0, 0.0)


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "minkunet34"
    feature_dim: int = 384  # teacher D
    head_layers: int = 3
    head_hidden: int = 512
    occ_hidden: int = 64
    occ_radius: float = 1.0  # metres: offsets are divided by it

    def __post_init__(self):
        check_choice("--model", self.arch, ARCHS)
        if not 1 <= self.head_layers <= 4:
            raise ValueError(f"--head-layers {self.head_layers}: must be within 1..4 (1 = linear head)")
        check_fields(self, positive=("feature_dim", "head_hidden", "occ_hidden", "occ_radius"))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataConfig:
    store: str
    split: str = "train"  # scenes of the store to use: train, val or all
    voxel_size: float = 0.1
    augment: bool = True
    scale: float = 0.1
    max_queries: int = 4096  # occupancy queries per sweep (balanced subsample)
    seed: int = 0
    scenes: tuple[str, ...] | None = None  # restrict to these scene names (labelled subsets)
    sweeps: tuple[int, ...] | None = None  # and to these store rows (labelled subsets by sweep)
    corruption: str | None = None  # e.g. "fog:0.02" (trainer/corruptions.py), applied before everything else
    # occupancy task: fraction of cubes hidden; None follows the task: MaskConfig's ratio when the run has
    # an occupancy loss, no mask when it has none (``with_task_mask``)
    mask_ratio: tuple[float, float] | None = None
    mask_cell: float = MaskConfig.cell_m  # occupancy task: edge of the hidden cubes (m)
    max_points: int = 0  # keep a random subset of this many points per sweep (0: all), as loaders cap clouds

    def __post_init__(self):
        check_choice("--split", self.split, STORE_SPLITS)
        check_fields(self, positive=("voxel_size", "max_queries"), not_negative=("max_points",))
        if self.sweeps is not None and not self.sweeps:
            raise ValueError("DataConfig sweeps: an empty tuple keeps no sweep; give None to keep them all")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale {self.scale}: the augmentation's scaling must lie in [0, 1)")
        self.mask  # validates

    @property
    def mask(self) -> MaskConfig:
        return MaskConfig(ratio=tuple(self.mask_ratio or NO_MASK), cell_m=self.mask_cell)

    def with_task_mask(self, occupancy_task: bool) -> DataConfig:
        """This config with ``mask_ratio`` settled: the default mask when the run has the occupancy task,
        none when it has not; a ratio given that hides points with no task to ask about them is refused."""
        if self.mask_ratio is None:
            return dataclasses.replace(self, mask_ratio=MaskConfig.ratio if occupancy_task else NO_MASK)
        if not occupancy_task and self.mask.active:
            raise ValueError(f"--mask-ratio {self.mask_ratio[0]} {self.mask_ratio[1]} hides points for the "
                             f"occupancy task, which --occ-weight 0 turns off: drop --mask-ratio (or give 0 0)")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainConfig:
    out: str
    steps: int = 200
    batch_size: int = 2
    lr: float = 2e-3
    weight_decay: float = 0.03
    warmup: int = 20
    loss: str = "cosine"
    occ_weight: float = 1.0
    clip: float = 1.0
    workers: int = 0
    checkpoint_every: int = 100
    seed: int = 0
    skip_bad_sweeps: bool = False  # record damaged sweeps in OUT/skipped_sweeps.jsonl and go on (default: stop)

    def __post_init__(self):
        check_choice("--loss", self.loss, DISTILLATION_LOSSES)
        check_fields(self, positive=("steps", "batch_size", "lr", "clip", "checkpoint_every"),
                     not_negative=("weight_decay", "warmup", "occ_weight", "workers"))


@dataclass(frozen=True)
class FinetuneConfig:
    out: str
    labels_percent: float = 100.0
    labels_unit: str = "scenes"  # the subset is whole train scenes, or single train sweeps (scans)
    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 10
    lovasz: bool = False
    max_points: int = 0  # random subset of points per training sweep (0: all); evaluation sees all
    checkpoint_every: int = 100
    eval_every: int = 0  # 0: evaluate at the end only
    seed: int = 0

    def __post_init__(self):
        check_fields(self, positive=("labels_percent", "steps", "batch_size", "lr", "checkpoint_every"),
                     not_negative=("weight_decay", "warmup", "max_points", "eval_every"))
        if self.labels_percent > 100:
            raise ValueError(f"--labels-percent {self.labels_percent}: must be at most 100")
        check_choice("--labels-unit", self.labels_unit, LABEL_UNITS)


@dataclass(frozen=True)
class ProbeConfig:
    out: str
    labels_percent: float = 100.0
    points_per_sweep: int = 2000  # labelled points per train sweep in the fit (0: all)
    l2: float = 1e-4
    max_iter: int = 1000
    seed: int = 0

    def __post_init__(self):
        check_fields(self, positive=("labels_percent", "max_iter"), not_negative=("points_per_sweep", "l2"))
        if self.labels_percent > 100:
            raise ValueError(f"--labels-percent {self.labels_percent}: must be at most 100")


@dataclass(frozen=True)
class DetectionConfig:
    """The CenterPoint-style detection head (``trainer/detection.py``): its bird's-eye-view grid, the
    classes it detects, how box centres become heatmap peaks, how peaks become boxes, and the loss weights.

    The grid covers ``x_range`` x ``y_range`` (LiDAR frame, metres) in square cells of ``cell_m``; each
    range must span a whole number of cells. A box's peak is a Gaussian of radius
    ``max(min_radius, gaussian_radius(length / cell, width / cell, min_overlap))`` cells (the CenterNet rule).
    """

    x_range: tuple[float, float] = (-51.2, 51.2)  # metres
    y_range: tuple[float, float] = (-51.2, 51.2)  # metres
    cell_m: float = 0.8  # BEV cell edge (m): 128 x 128 cells over the default ranges
    classes: tuple[str, ...] = DETECTION_CLASSES  # one heatmap channel each, in the store's detection_classes order
    min_overlap: float = 0.1  # Gaussian radius rule: IoU a box shifted within the radius still has with the truth
    min_radius: int = 2  # Gaussian radius floor (cells)
    pool: str = "max"  # voxels -> BEV cells over z: "max" or "mean"
    trunk_channels: int = 64  # width of the 2D conv trunk
    trunk_layers: int = 3  # 3x3 conv + BN + ReLU layers of the trunk
    score_threshold: float = 0.1  # decoding: peaks below this score are dropped
    max_detections: int = 500  # decoding: at most this many boxes per sweep (highest scores)
    peak_window: int = 3  # decoding: a peak is the maximum of its peak_window x peak_window neighbourhood
    focal_alpha: float = 2.0  # Gaussian focal loss: power of (1 - p) at peaks, of p elsewhere
    focal_beta: float = 4.0  # Gaussian focal loss: power of (1 - heatmap) that spares cells near a peak
    heatmap_weight: float = 1.0
    regression_weight: float = 0.25  # L1 on offset, z, log size, sin/cos yaw and velocity at the box cells
    velocity_weight: float = 0.2  # extra factor on the velocity channels' L1 (within regression_weight)

    def __post_init__(self):
        for name in ("x_range", "y_range"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"--{name.replace('_', '-')} {lo} {hi}: need low < high")
        check_fields(self, positive=("cell_m", "trunk_channels", "trunk_layers", "max_detections", "focal_alpha"),
                     not_negative=("min_radius", "score_threshold", "focal_beta", "heatmap_weight",
                                   "regression_weight", "velocity_weight"))
        for name in ("x_range", "y_range"):
            lo, hi = getattr(self, name)
            cells = (hi - lo) / self.cell_m
            if abs(cells - round(cells)) > 1e-6:
                raise ValueError(f"--{name.replace('_', '-')} {lo} {hi}: must span a whole number of "
                                 f"--cell-m {self.cell_m} cells (it spans {cells:g})")
        if not 0 < self.min_overlap < 1:
            raise ValueError(f"--min-overlap {self.min_overlap}: must lie in (0, 1)")
        if not self.score_threshold < 1:
            raise ValueError(f"--score-threshold {self.score_threshold}: must be below 1 (scores are probabilities)")
        if self.peak_window < 1 or self.peak_window % 2 == 0:
            raise ValueError(f"--peak-window {self.peak_window}: must be an odd number of cells, 1 or more")
        check_choice("--pool", self.pool, ("max", "mean"))
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"--classes {list(self.classes)}: need at least one class, each once")

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(H, W) of the BEV grid: rows along y, columns along x."""
        return (round((self.y_range[1] - self.y_range[0]) / self.cell_m),
                round((self.x_range[1] - self.x_range[0]) / self.cell_m))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return asdict(self)
