"""The occupancy task, trainer side: what is asked about is hidden from the student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

from pipeline.store import read_sweep
from trainer.config import DataConfig, MaskConfig
from trainer.data import StoreDataset
from trainer.losses import balanced_bce
from trainer.metrics import balanced_accuracy
from trainer.occupancy import balance_by_offset, hide


def _cells(xyz, lower, cell):
    return {tuple(c) for c in np.floor((np.asarray(xyz, np.float64) - lower) / cell).astype(np.int64)}


def test_hidden_points_never_reach_the_student_while_asked_about(small_store):
    cfg, _ = small_store
    g = zarr.open_group(cfg.out, mode="r")
    occ = g.attrs["occupancy"]
    lower, voxel = np.asarray(occ["lower"]), occ["voxel_size_m"]
    ds = StoreDataset(DataConfig(store=cfg.out, split="all", augment=False, mask_ratio=(0.3, 0.5), mask_cell=1.0,
                                 max_queries=10 ** 6))
    for i in range(len(ds)):
        item = ds[i]
        s = item.sweep
        n = int(g["num_points"][s])
        points = g["points"][s, :n]
        hidden = item.hidden
        assert 0.2 < hidden.mean() < 0.6
        # the student's input (and its teacher features) are exactly the visible points
        np.testing.assert_array_equal(item.xyz, points[~hidden, :3])
        np.testing.assert_array_equal(item.teacher, read_sweep(g, s, ("features",))["features"][~hidden])
        # no query lies in a cube that holds a visible point
        visible_cubes = _cells(item.xyz, lower, 1.0)
        assert not (_cells(item.queries, lower, 1.0) & visible_cubes)
        # an occupied query's voxel holds hidden points and no visible one
        occupied = item.queries[item.occ == 1]
        assert len(occupied) > 0 and (item.occ == 0).sum() > 0
        occupied_voxels = _cells(occupied - voxel / 2, lower, voxel)  # centre - v/2 = voxel corner
        assert not (_cells(item.xyz, lower, voxel) & occupied_voxels)
        assert occupied_voxels <= _cells(points[hidden, :3], lower, voxel)
        # nearest points index the visible points
        assert item.nearest.max() < len(item.xyz)


def test_mask_draw_is_seeded_and_off_means_off(small_store):
    cfg, _ = small_store
    a = StoreDataset(DataConfig(store=cfg.out, split="all", augment=False, mask_ratio=(0.3, 0.5)))[0]
    b = StoreDataset(DataConfig(store=cfg.out, split="all", augment=False, mask_ratio=(0.3, 0.5)))[0]
    np.testing.assert_array_equal(a.hidden, b.hidden)
    off = StoreDataset(DataConfig(store=cfg.out, split="all", augment=False))[0]
    assert off.hidden is None and len(off.xyz) > len(a.xyz)


def test_hide_refuses_cubes_that_cut_voxels():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="multiple"):
        hide(np.zeros((3, 3)), np.zeros((2, 3)), np.zeros(3), 0.5, MaskConfig(cell_m=0.75), rng)
    with pytest.raises(ValueError, match="mask-ratio"):
        MaskConfig(ratio=(0.6, 0.3))


def test_balanced_bce_and_accuracy_weigh_both_labels_equally():
    logits = torch.tensor([2.0, -1.0, 0.5, 3.0, -2.0])
    labels = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    want = (bce[:4].mean() + bce[4]) / 2
    torch.testing.assert_close(balanced_bce(logits, labels), want)
    assert balanced_accuracy(logits, labels) == pytest.approx((3 / 4 + 1) / 2)
    empty = balanced_bce(torch.zeros(0, requires_grad=True), torch.zeros(0))
    assert empty.detach().item() == 0.0 and empty.requires_grad


def test_balance_by_offset_pairs_labels_within_every_bin():
    rng = np.random.default_rng(0)
    offsets = rng.normal(0, 1, (4000, 3))
    labels = (rng.random(4000) < 0.3 + 0.4 * (np.linalg.norm(offsets, axis=1) > 1.5)).astype(np.uint8)
    pick = balance_by_offset(offsets, labels, 0.25, 10 ** 6, np.random.default_rng(1))
    assert len(set(pick.tolist())) == len(pick) and labels[pick].mean() == 0.5
    d = np.minimum(np.linalg.norm(offsets[pick], axis=1), 4.0)
    z = np.clip(offsets[pick, 2], -2, 2) + 2
    key = np.floor(d / 0.25) * 100 + np.floor(z / 0.25)
    for k in np.unique(key):
        assert labels[pick][key == k].mean() == 0.5
    capped = balance_by_offset(offsets, labels, 0.25, 100, np.random.default_rng(1))
    assert len(capped) == 100 and labels[capped].mean() == 0.5


def test_geometry_floor_features_see_free_space_along_the_rays():
    """The occupancy geometry floor's features (benchmarks/occupancy_shortcut.py): with a wall of visible
    points 10 m ahead of the sensor, a query half-way is seen through (free evidence), one behind the wall
    is occluded, one on the wall is at the rays' ends; neighbour counts and height above the local ground
    follow the points."""
    from types import SimpleNamespace

    from benchmarks.occupancy_shortcut import geometry_features

    y, z = np.meshgrid(np.arange(-3, 3.01, 0.1), np.arange(0, 3.01, 0.1))
    wall = np.c_[np.full(y.size, 10.0), y.ravel(), z.ravel()].astype(np.float32)
    queries = np.array([[5.0, 0.0, 1.5], [12.0, 0.0, 1.5], [10.0, 0.0, 1.5]], np.float32)
    nearest = np.array([np.argmin(np.linalg.norm(wall - q, axis=1)) for q in queries])
    item = SimpleNamespace(xyz=wall, queries=queries, nearest=nearest)
    f = geometry_features(item)
    assert f.shape == (3, 14)
    through, occluded, at = f[:, 11], f[:, 12], f[:, 13]
    assert through[0] > 0 and occluded[0] == 0 and at[0] == 0  # half-way: rays pass on to the wall
    assert occluded[1] > 0 and through[1] == 0  # behind the wall
    assert at[2] > 0 and through[2] == 0 and occluded[2] == 0  # on the wall
    np.testing.assert_allclose(f[:, 3], [5.0, 2.0, 0.0], atol=1e-5)  # distance to the nearest visible point
    assert f[2, 4] > 0 and f[0, 4] == 0  # points within 0.5 m: only on the wall
    np.testing.assert_allclose(f[1, 7], 1.5, atol=1e-5)  # height above the lowest point within 3 m
