"""Occupancy targets: the plane-crossing fast path equals a brute-force segment-box test."""

from __future__ import annotations

import numpy as np

from pipeline.occupancy import OccupancyGrid, occupancy_targets, occupied_and_free


def brute_force(xyz: np.ndarray, grid: OccupancyGrid):
    """Every voxel against every segment origin -> point, by the slab test with positive length; a crossed
    voxel is near the surface when the segment enters it at most near_surface_m before its point."""
    nx, ny, nz = grid.shape
    ijk = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1).reshape(-1, 3)
    lo = np.asarray(grid.lower) + ijk * grid.voxel_size
    hi = lo + grid.voxel_size
    occupied = np.zeros(len(ijk), bool)
    crossed = np.zeros(len(ijk), bool)
    near = np.zeros(len(ijk), bool)
    for p in xyz:
        occupied |= np.all((p >= lo) & (p < hi), axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = lo / p, hi / p
        t_near = np.where(p != 0, np.minimum(t1, t2), -np.inf)
        t_far = np.where(p != 0, np.maximum(t1, t2), np.inf)
        inside_slab = np.where(p != 0, True, (lo <= 0) & (hi > 0))
        a = np.maximum(t_near.max(axis=1), 0.0)
        b = np.minimum(t_far.min(axis=1), 1.0)
        hit = inside_slab.all(axis=1) & (b > a)
        crossed |= hit
        near |= hit & ((1.0 - a) * np.linalg.norm(p) <= grid.near_surface_m)
    return occupied, crossed & ~occupied, near & ~occupied


def test_fast_path_equals_brute_force():
    rng = np.random.default_rng(0)
    grid = OccupancyGrid(voxel_size=0.5, lower=(-4.0, -3.0, -2.0), shape=(16, 12, 8))
    # a small "sweep": points on a ground plane, on a wall, some outside the grid, some behind the sensor
    ground = np.c_[rng.uniform(-6, 6, 120), rng.uniform(-5, 5, 120), np.full(120, -1.7)]
    wall = np.c_[np.full(60, 3.3), rng.uniform(-2, 2, 60), rng.uniform(-1.5, 1.5, 60)]
    far = rng.uniform(-9, 9, (40, 3))
    xyz = np.concatenate([ground, wall, far])
    occ_fast, free_fast, near_fast = occupied_and_free(xyz, grid)
    occ_bf, free_bf, near_bf = brute_force(xyz, grid)
    assert occ_fast.sum() > 50 and free_fast.sum() > 100 and 50 < near_fast.sum() < free_fast.sum()
    np.testing.assert_array_equal(occ_fast, occ_bf)
    np.testing.assert_array_equal(free_fast, free_bf)
    np.testing.assert_array_equal(near_fast, near_bf)


def test_targets_balanced_and_deterministic():
    rng = np.random.default_rng(1)
    xyz = np.c_[rng.uniform(-20, 20, 3000), rng.uniform(-20, 20, 3000), np.full(3000, -1.8)]
    grid = OccupancyGrid()
    v1, l1 = occupancy_targets(xyz, grid, np.random.default_rng([0, 5]))
    v2, l2 = occupancy_targets(xyz, grid, np.random.default_rng([0, 5]))
    np.testing.assert_array_equal(v1, v2)
    n_occ = int(l1.sum())
    assert n_occ > 0 and (l1 == 0).sum() == n_occ  # one free voxel per occupied voxel
    assert v1.dtype == np.int16 and (v1 >= 0).all() and (v1 < np.array(grid.shape)).all()
    occ, free, near = occupied_and_free(xyz, grid)
    lin = grid.linear(v1.astype(np.int64))
    assert occ[lin[l1 == 1]].all() and near[lin[l1 == 0]].all()
    assert not (occ & free).any() and not (near & ~free).any()  # a point's voxel is never free
    assert free.sum() > occ.sum()  # rays to a ground plane cross far more voxels than they end in
    # free targets lie near the surface: within near_surface_m (plus a voxel diagonal) of some point
    from scipy.spatial import cKDTree

    centres = grid.centres(v1[l1 == 0].astype(np.int64))
    dist = cKDTree(xyz).query(centres)[0]
    assert dist.max() <= grid.near_surface_m + grid.voxel_size * np.sqrt(3)
