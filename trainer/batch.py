"""Sweeps -> a batch: one prepared sweep (``Sample``, what ``StoreDataset`` returns), the student's
per-point input, voxelisation, and the collate that concatenates sweeps with offsets (no padding to the
largest cloud).

Student input per point: (x, y, z, intensity) / ``INPUT_SCALE`` (metres, metres, metres, the 0..255
intensity), so that every channel is O(1) over the 100 m x 100 m x 8 m the sensors see; a voxel's input
is the mean over its points. The scale is written into every checkpoint (``input_scale``) and checked when
one is read, since weights trained on one scale are meaningless on another.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np
import torch

INPUT_SCALE: tuple[float, float, float, float] = (50.0, 50.0, 5.0, 255.0)  # x, y, z (m), intensity
IN_CHANNELS = len(INPUT_SCALE)


def point_inputs(xyz: np.ndarray, intensity: np.ndarray) -> np.ndarray:
    """The student's input of each point: (x, y, z, intensity) / INPUT_SCALE, [N, 4] float32, for
    ``xyz`` [N, 3] (m) and ``intensity`` [N]."""
    raw = np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)
    return raw / np.asarray(INPUT_SCALE, np.float32)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a 1-D ``index`` that may repeat rows (points sharing a voxel, queries sharing a
    nearest point), with a backward that sums the repeated rows in the same order every run. On the CPU,
    ``x[index]``'s backward adds them with atomic float adds across threads, in an order that changes
    when the machine is busy (measured: 132 different gradients in 132 repeats), while ``index_select``'s
    sums in index order; on CUDA it is the other way round (``index_select``'s backward uses atomics,
    ``x[index]``'s sorts the indices first)."""
    return x[index] if x.is_cuda else torch.index_select(x, 0, index)


def require(data, *names: str, purpose: str) -> None:
    """Refuse, in one line, a ``Sample`` or ``Batch`` that lacks (None) one of the fields ``names``."""
    missing = [name for name in names if getattr(data, name) is None]
    if missing:
        raise ValueError(f"{purpose} needs {', '.join(missing)}, which this {type(data).__name__.lower()} lacks: "
                         f"make its dataset with the target that carries them (StoreDataset targets=...)")


@dataclass
class Sample:
    """One sweep, read from the store and prepared (``trainer/data.py``). N points, Q occupancy queries,
    D teacher channels; the fields a dataset was not asked for are None."""

    sweep: int  # its row in the store
    xyz: np.ndarray  # [N, 3] float32, LiDAR frame, augmented
    intensity: np.ndarray  # [N] float32, 0..255
    labels: np.ndarray | None = None  # [N] uint8, evaluation classes 1..16, 0 = ignore (stores with labels)
    teacher: np.ndarray | None = None  # [N, D] float16, the stored teacher feature (0 where ``valid`` is False)
    valid: np.ndarray | None = None  # [N] bool, a camera saw the point
    queries: np.ndarray | None = None  # [Q, 3] float32, occupancy query voxel centres, augmented with the points
    occ: np.ndarray | None = None  # [Q] float32, 1 occupied, 0 free
    nearest: np.ndarray | None = None  # [Q] int64, the point (row of xyz) nearest each query
    hidden: np.ndarray | None = None  # [N before masking] bool, the points the occupancy task hid
    boxes: dict[str, np.ndarray] | None = None  # the sweep's boxes (``read_boxes``), augmented with the points


@dataclass
class Batch:
    """B sweeps concatenated: N points, V voxels, Q queries in all. Indices that point into points or
    voxels (``nearest``, ``point_to_voxel``) are shifted to the concatenation; the optional fields are
    None unless every sample has them."""

    voxel_coords: torch.Tensor  # [V, 4] int64: sweep b in the batch, then the voxel's integer x, y, z
    voxel_feats: torch.Tensor  # [V, 4] float32: mean ``point_inputs`` of the voxel's points
    point_to_voxel: torch.Tensor  # [N] int64: row of each point's voxel
    xyz: torch.Tensor  # [N, 3] float32
    offsets: torch.Tensor  # [B] int64: first point of each sweep
    sweeps: torch.Tensor  # [B] int64: store rows of the sweeps
    labels: torch.Tensor | None = None  # [N] int64, 0 = ignore
    teacher: torch.Tensor | None = None  # [N, D] float16
    valid: torch.Tensor | None = None  # [N] bool
    queries: torch.Tensor | None = None  # [Q, 3] float32
    occ: torch.Tensor | None = None  # [Q] float32
    nearest: torch.Tensor | None = None  # [Q] int64 into the N points

    def to(self, device, non_blocking: bool = False) -> Batch:
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self) if getattr(self, f.name) is not None})

    @property
    def num_sweeps(self) -> int:
        return len(self.offsets)

    def point_slice(self, b: int) -> slice:
        """The points of sweep b."""
        end = self.offsets[b + 1] if b + 1 < self.num_sweeps else len(self.xyz)
        return slice(int(self.offsets[b]), int(end))


def voxelise(xyz: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Points [N,3] -> (voxel coordinates [V,3] int64, inverse [N] int64 with coords[inverse] = floor(xyz / v))."""
    grid = np.floor(xyz / voxel_size).astype(np.int64)
    coords, inverse = np.unique(grid, axis=0, return_inverse=True)
    return coords, inverse.reshape(-1)


def collate(samples: list[Sample], voxel_size: float) -> Batch:
    """Concatenate sweeps into a ``Batch``; each voxel's features are the mean ``point_inputs`` of its points."""
    coords, p2v, nearest, point_off, voxel_off = [], [], [], [0], 0
    for b, smp in enumerate(samples):
        c, inv = voxelise(smp.xyz, voxel_size)
        coords.append(np.concatenate([np.full((len(c), 1), b), c], axis=1))
        p2v.append(inv + voxel_off)
        if smp.nearest is not None:
            nearest.append(smp.nearest + point_off[-1])
        voxel_off += len(c)
        point_off.append(point_off[-1] + len(smp.xyz))
    xyz = np.concatenate([s.xyz for s in samples])
    inputs = torch.from_numpy(point_inputs(xyz, np.concatenate([s.intensity for s in samples])))
    p2v_t = torch.from_numpy(np.concatenate(p2v))
    sums = torch.zeros(voxel_off, inputs.shape[1]).index_add_(0, p2v_t, inputs)
    counts = torch.bincount(p2v_t, minlength=voxel_off).clamp_(min=1)

    def joined(name: str, dtype=None) -> torch.Tensor | None:
        parts = [getattr(s, name) for s in samples]
        if any(p is None for p in parts):
            return None
        out = np.concatenate(parts)
        return torch.from_numpy(out if dtype is None else out.astype(dtype))

    return Batch(
        voxel_coords=torch.from_numpy(np.concatenate(coords)),
        voxel_feats=sums / counts[:, None],
        point_to_voxel=p2v_t,
        xyz=torch.from_numpy(xyz),
        offsets=torch.tensor(point_off[:-1]),
        sweeps=torch.tensor([s.sweep for s in samples]),
        labels=joined("labels", np.int64),
        teacher=joined("teacher"),
        valid=joined("valid"),
        queries=joined("queries"),
        occ=joined("occ"),
        nearest=torch.from_numpy(np.concatenate(nearest)) if len(nearest) == len(samples) else None,
    )


class Collate:
    """``collate`` with a fixed voxel size, picklable for DataLoader workers."""

    def __init__(self, voxel_size: float):
        self.voxel_size = voxel_size

    def __call__(self, samples: list[Sample]) -> Batch:
        return collate(samples, self.voxel_size)
