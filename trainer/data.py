"""Store -> batches: a random-access dataset over a teacher-feature store, 3D augmentation, voxelisation,
and a collate that concatenates clouds with offsets (no padding to the largest cloud).

Per sweep the dataset returns its points and, riding along, their teacher features and valid mask,
and the occupancy queries (voxel centres) with labels and the index of each query's nearest point.
With ``max_points`` set, a random subset of that many points is kept first (drawn from
``default_rng([seed, epoch, sweep, CAP_STREAM])``; evaluation keeps every point). With masking on
(``mask_ratio``, pretraining), the points of randomly hidden cubes are dropped before
anything else and only the queries in hidden cubes are kept, balanced by their offset to the nearest
visible point (``trainer/occupancy.py``); the mask is drawn from
``default_rng([seed, epoch, sweep, MASK_STREAM])``.
Augmentation is one similarity transform per sweep applied to points and queries alike:
``x <- s R_z(theta) F x`` with F a random flip of x and/or y, theta uniform in [0, 2 pi), s uniform in
[1 - scale, 1 + scale]; it is drawn from ``default_rng([seed, epoch, sweep])``, so it does not depend
on the number of loader workers. Nearest points are found before augmentation (a similarity keeps them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from pipeline.classes import FINE_TO_EVAL
from pipeline.store import DamagedChunk, open_store, read_column, sweep_rows
from trainer.occupancy import MaskConfig, balance_by_offset, hide

MASK_STREAM = 1  # the mask's random stream, apart from the augmentation's
CAP_STREAM = 2  # the point cap's random stream


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
    corruption: str | None = None  # e.g. "fog:0.02" (trainer/corruptions.py), applied before everything else
    mask_ratio: tuple[float, float] = (0.0, 0.0)  # occupancy task: fraction of cubes hidden (0, 0: no mask)
    mask_cell: float = 2.0  # occupancy task: edge of the hidden cubes (m)
    max_points: int = 0  # keep a random subset of this many points per sweep (0: all), as loaders cap clouds

    def __post_init__(self):
        if self.max_points < 0:
            raise ValueError(f"--max-points {self.max_points}: must be 0 (all points) or positive")
        self.mask  # validates

    @property
    def mask(self) -> MaskConfig:
        return MaskConfig(ratio=tuple(self.mask_ratio), cell_m=self.mask_cell)

    def to_dict(self) -> dict:
        return asdict(self)


def store_sweeps(group, split: str, names: tuple[str, ...] | None = None, on_damage=None) -> np.ndarray:
    """Indices of the complete sweeps of the scenes in ``split`` (and in ``names`` when given). A damaged
    chunk of ``done`` or ``scene_index`` raises, or with ``on_damage(first_sweep, error)`` leaves its
    sweeps out."""
    n, step = group["done"].shape[0], group["done"].chunks[0]
    unreadable = np.zeros(n, bool)

    def mark(s0: int, error) -> None:
        unreadable[s0:s0 + step] = True
        on_damage(s0, error)

    done = read_column(group, "done", on_damage=mark if on_damage else None).astype(bool)
    scene_of = read_column(group, "scene_index", on_damage=mark if on_damage else None)
    done &= ~unreadable
    scene_of = np.where(unreadable, 0, scene_of)
    scenes = group.attrs["scenes"]
    keep = np.array([(split == "all" or sc["split"] == split) and (names is None or sc["name"] in names)
                     for sc in scenes])
    return np.nonzero(done & keep[scene_of])[0]


class StoreDataset(torch.utils.data.Dataset):
    """Sweep i of the chosen scenes, read and prepared (see the module docstring).

    A sweep whose chunks do not decode raises ``DamagedChunk`` (one line naming array, sweep and chunk),
    unless ``skip_log`` is given: then it is recorded there (one JSON line per damaged sweep, appended) and
    the next sweep in order is returned in its place, so training batches stay full and deterministic.
    """

    def __init__(self, cfg: DataConfig, skip_log: str | None = None):
        self.cfg = cfg
        self.skip_log = skip_log
        self.skipped: set[int] = set()  # damaged sweeps met by this process
        group = open_store(cfg.store)
        self.attrs = dict(group.attrs)
        self.sweeps = store_sweeps(group, cfg.split, cfg.scenes, on_damage=self._skip if skip_log else None)
        if len(self.sweeps) == 0:
            raise ValueError(f"store {cfg.store} has no complete sweeps in split {cfg.split!r}")
        occ = self.attrs["occupancy"]
        self.occ_lower = np.asarray(occ["lower"], dtype=np.float32)
        self.occ_voxel = float(occ["voxel_size_m"])
        self.epoch = 0
        self._group = None  # opened lazily in each loader worker
        self.corruption = None
        if cfg.corruption:
            from trainer.corruptions import parse

            self.corruption = parse(cfg.corruption)

    def __len__(self) -> int:
        return len(self.sweeps)

    @property
    def group(self):
        if self._group is None:
            self._group = open_store(self.cfg.store)
        return self._group

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_group"] = None
        return state

    def __getitem__(self, i: int) -> dict:
        if self.skip_log is None:
            return self._item(int(self.sweeps[i]))
        for j in range(len(self.sweeps)):
            s = int(self.sweeps[(i + j) % len(self.sweeps)])
            if s in self.skipped:
                continue
            try:
                return self._item(s)
            except DamagedChunk as e:
                self._skip(s, e)
        raise DamagedChunk(f"every sweep of {self.cfg.store} in split {self.cfg.split!r} is damaged; see {self.skip_log}")

    def _skip(self, s: int, error: DamagedChunk) -> None:
        import json
        import sys

        self.skipped.add(s)
        print(f"warning: skipping sweep {s}: {error}", file=sys.stderr)
        with open(self.skip_log, "a") as f:  # one short line per write: appends from loader workers stay whole
            f.write(json.dumps({"sweep": s, "error": str(error)}) + "\n")

    def _item(self, s: int) -> dict:
        from scipy.spatial import cKDTree

        has_labels = self.attrs["has_labels"]
        sweep = sweep_rows(self.group, s, ("points", "features", "valid", "occ_centres", "occ_labels")
                           + (("labels",) if has_labels else ()))
        points, feats, valid = sweep["points"], sweep["features"], sweep["valid"]
        queries, labels = sweep["occ_centres"], sweep["occ_labels"]
        point_labels = FINE_TO_EVAL[sweep["labels"]] if has_labels else None

        def keep_points(keep):  # every per-point array, as it stands now, follows the points
            return (points[keep], feats[keep], valid[keep],
                    point_labels[keep] if point_labels is not None else None)

        if self.corruption is not None:
            keep, corrupted = self.corruption(points, np.random.default_rng([self.cfg.seed, 99, s]))
            _, feats, valid, point_labels = keep_points(keep)
            points = corrupted
        if 0 < self.cfg.max_points < len(points):
            keep = np.sort(np.random.default_rng([self.cfg.seed, self.epoch, s, CAP_STREAM])
                           .choice(len(points), self.cfg.max_points, replace=False))
            points, feats, valid, point_labels = keep_points(keep)
        hidden = None
        if self.cfg.mask.active:
            hidden, asked = hide(points[:, :3], queries, self.occ_lower, self.occ_voxel, self.cfg.mask,
                                 np.random.default_rng([self.cfg.seed, self.epoch, s, MASK_STREAM]))
            points, feats, valid, point_labels = keep_points(~hidden)
            queries, labels = queries[asked], labels[asked]
        rng = np.random.default_rng([self.cfg.seed, self.epoch, s])
        xyz = points[:, :3].astype(np.float32)
        if self.cfg.mask.active:  # nearest visible points, then queries balanced by offset
            nearest = cKDTree(xyz).query(queries, k=1)[1].astype(np.int64)
            pick = balance_by_offset(queries - xyz[nearest], labels, self.cfg.mask.bin_m, self.cfg.max_queries, rng)
            queries, labels, nearest = queries[pick], labels[pick], nearest[pick]
        else:
            if len(labels) > self.cfg.max_queries:  # keep the occupied/free balance
                pick = np.concatenate([rng.permutation(np.nonzero(labels == v)[0])[: self.cfg.max_queries // 2]
                                       for v in (1, 0)])
                queries, labels = queries[pick], labels[pick]
            nearest = cKDTree(xyz).query(queries, k=1)[1].astype(np.int64)
        if self.cfg.augment:
            m = augmentation_matrix(rng, self.cfg.scale)
            xyz, queries = xyz @ m.T, queries @ m.T
        out = {"xyz": xyz, "intensity": points[:, 3].astype(np.float32), "teacher": feats, "valid": valid,
               "queries": queries.astype(np.float32), "occ": labels.astype(np.float32), "nearest": nearest,
               "sweep": s, "hidden": hidden}
        if point_labels is not None:
            out["labels"] = point_labels  # 16 evaluation classes, 0 = ignore
        return out


def augmentation_matrix(rng: np.random.Generator, scale: float) -> np.ndarray:
    """s R_z(theta) F as a 3x3 float32 matrix (see the module docstring)."""
    flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, -1.0 if rng.random() < 0.5 else 1.0, 1.0])
    theta = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return (rng.uniform(1 - scale, 1 + scale) * rot @ flip).astype(np.float32)


def voxelise(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Points [N,3] -> (voxel coordinates [V,3] int64, inverse [N] int64 with coords[inverse] = floor(xyz / v))."""
    grid = np.floor(xyz / voxel_size).astype(np.int64)
    coords, inverse = np.unique(grid, axis=0, return_inverse=True)
    return coords, inverse.reshape(-1)


def collate(samples: list[dict], voxel_size: float) -> dict:
    """Concatenate sweeps; voxel features are the mean of (x/50, y/50, z/5, intensity/255) of their points.

    ``offsets[b]`` is the first point of sweep b; ``voxel_coords`` carry the batch index; indices into
    points (``nearest``) and voxels (``point_to_voxel``) are shifted to the concatenation.
    """
    coords, p2v, nearest, point_off, voxel_off = [], [], [], [0], 0
    for b, smp in enumerate(samples):
        c, inv = voxelise(smp["xyz"], voxel_size)
        coords.append(np.concatenate([np.full((len(c), 1), b), c], axis=1))
        p2v.append(inv + voxel_off)
        nearest.append(smp["nearest"] + point_off[-1])
        voxel_off += len(c)
        point_off.append(point_off[-1] + len(smp["xyz"]))
    xyz = np.concatenate([s["xyz"] for s in samples])
    point_feats = np.concatenate([xyz / np.array([50.0, 50.0, 5.0], np.float32),
                                  np.concatenate([s["intensity"] for s in samples])[:, None] / 255.0], axis=1)
    p2v_t = torch.from_numpy(np.concatenate(p2v))
    sums = torch.zeros(voxel_off, point_feats.shape[1]).index_add_(0, p2v_t, torch.from_numpy(point_feats))
    counts = torch.bincount(p2v_t, minlength=voxel_off).clamp_(min=1)
    return {
        "voxel_coords": torch.from_numpy(np.concatenate(coords)),
        "voxel_feats": sums / counts[:, None],
        "point_to_voxel": p2v_t,
        "xyz": torch.from_numpy(xyz),
        "teacher": torch.from_numpy(np.concatenate([s["teacher"] for s in samples])),
        "valid": torch.from_numpy(np.concatenate([s["valid"] for s in samples])),
        "queries": torch.from_numpy(np.concatenate([s["queries"] for s in samples])),
        "occ": torch.from_numpy(np.concatenate([s["occ"] for s in samples])),
        "nearest": torch.from_numpy(np.concatenate(nearest)),
        "offsets": torch.tensor(point_off[:-1]),
        "sweeps": torch.tensor([s["sweep"] for s in samples]),
        **({"labels": torch.from_numpy(np.concatenate([s["labels"] for s in samples]).astype(np.int64))}
           if all("labels" in s for s in samples) else {}),
    }
