"""The occupancy pretext task, trainer side: hide part of the sweep, ask about what was hidden.

The store holds per sweep all occupied voxels and as many **near-surface** free voxels (entered by a
ray at most ``near_surface_m`` before its return; ``pipeline/occupancy.py``, storage_schema.md). Each
step, per sweep:

1. **Hide.** Space is cut into cubes of edge ``cell_m`` aligned with the occupancy grid (``cell_m`` a
   multiple of its voxel, so a query voxel lies in exactly one cube). Every cube is hidden with
   probability r, r ~ U(ratio[0], ratio[1]) drawn per sweep and step. Points in hidden cubes are
   removed from the student's input, and so from distillation.
2. **Ask.** The queries are the store's targets whose voxel lies in a hidden cube, so an occupied query
   contains no visible point. Even so, hidden free voxels lie a little farther from the visible points
   than hidden occupied ones (median 0.82 vs 0.45 m; a depth-6 tree on the offsets alone scored 0.77
   balanced accuracy). So the queries are **balanced by offset**: with d = q - p (p the nearest
   visible point), queries are binned by (|d|, d_z) in ``bin_m`` steps (|d| up to 4 m, d_z within
   +-2 m) and each bin keeps as many occupied as free queries (min of the two, drawn at random); pairs
   are then drawn at random up to ``max_queries``. Within a bin the offset's length and height say
   nothing about the label.
3. **Answer.** With q the query's voxel centre, p its nearest *visible* point and f_p the backbone
   feature there, ``logit = MLP([f_p, (q - p) / radius])`` (``OccupancyHead``), trained with the
   balanced binary cross-entropy ``(mean BCE over occupied + mean BCE over free) / 2`` (``trainer/losses.py``).

Whether the offsets q - p alone still give the answer away is measured, not assumed:
``benchmarks/occupancy_shortcut.py`` fits classifiers on them (they should stay near chance, <= 0.65
balanced accuracy) beside the trained student's own occupancy balanced accuracy.
Replace this module to try another recipe; the store's targets stay as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from trainer.batch import gather_rows
from trainer.config import MaskConfig


def hide(points_xyz: np.ndarray, query_centres: np.ndarray, grid_lower: np.ndarray, voxel_size: float,
         cfg: MaskConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (hidden points [N], queries in hidden cubes [Q]) of one sweep (LiDAR frame).

    A cube is identified by floor((x - grid_lower) / cell_m); a query is in the cube of its voxel centre."""
    cells_per_voxel = cfg.cell_m / voxel_size
    if abs(cells_per_voxel - round(cells_per_voxel)) > 1e-6 or round(cells_per_voxel) < 1:
        raise ValueError(f"mask cube {cfg.cell_m} m is not a multiple of the store's occupancy voxel {voxel_size} m")
    lower = np.asarray(grid_lower, np.float64)
    p_cell = np.floor((points_xyz - lower) / cfg.cell_m).astype(np.int64)
    q_cell = np.floor((query_centres - lower) / cfg.cell_m).astype(np.int64)
    keys, inverse = np.unique(np.concatenate([p_cell, q_cell]), axis=0, return_inverse=True)
    ratio = rng.uniform(*cfg.ratio)
    hidden_cube = rng.random(len(keys)) < ratio
    hidden = hidden_cube[inverse.reshape(-1)]
    return hidden[:len(p_cell)], hidden[len(p_cell):]


BIN_MAX_DIST_M, BIN_MAX_HEIGHT_M = 4.0, 2.0  # offsets beyond share the outermost bins


def balance_by_offset(offsets: np.ndarray, labels: np.ndarray, bin_m: float, max_queries: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Indices of queries, as many label-1 as label-0 in every (|d|, d_z) bin of ``offsets`` [Q,3],
    at most ``max_queries`` in all (whole pairs drawn at random across bins); order: occupied, then free."""
    dist = np.minimum(np.linalg.norm(offsets, axis=1), BIN_MAX_DIST_M)
    height = np.clip(offsets[:, 2], -BIN_MAX_HEIGHT_M, BIN_MAX_HEIGHT_M) + BIN_MAX_HEIGHT_M
    n_height = int(np.ceil(2 * BIN_MAX_HEIGHT_M / bin_m)) + 1
    key = np.floor(dist / bin_m).astype(np.int64) * n_height + np.floor(height / bin_m).astype(np.int64)
    order = np.lexsort((rng.random(len(key)), key))  # by bin, random within a bin
    starts = np.unique(key[order], return_index=True)[1][1:]
    occ_pairs, free_pairs = [], []
    for in_bin in np.split(order, starts):
        lab = labels[in_bin]
        occ, free = in_bin[lab == 1], in_bin[lab == 0]
        m = min(len(occ), len(free))
        occ_pairs.append(occ[:m])
        free_pairs.append(free[:m])
    if not occ_pairs:
        return np.zeros(0, np.int64)
    occ_pairs, free_pairs = np.concatenate(occ_pairs), np.concatenate(free_pairs)
    pick = rng.permutation(len(occ_pairs))[:max_queries // 2]
    return np.concatenate([occ_pairs[pick], free_pairs[pick]]).astype(np.int64)


class OccupancyHead(nn.Module):
    """logit(q) = MLP([f_p, (q - p) / radius]) with p the nearest visible input point of query q."""

    def __init__(self, c_in: int, hidden: int, radius: float):
        super().__init__()
        self.radius = radius
        self.net = nn.Sequential(nn.Linear(c_in + 3, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                                 nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, point_feats, points_xyz, queries_xyz, nearest) -> torch.Tensor:
        offset = (queries_xyz - points_xyz[nearest]) / self.radius
        # many queries share a nearest point: gather_rows keeps their gradient the same every run
        return self.net(torch.cat([gather_rows(point_feats, nearest), offset], dim=1)).squeeze(1)
