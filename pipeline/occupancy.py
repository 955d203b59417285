"""Self-supervised occupancy targets of one sweep, from the LiDAR alone.

Grid: voxels of edge ``v`` covering [lower, lower + shape * v) in the LiDAR frame of the sweep (the
sensor at the origin). Voxel (i, j, k) spans lower + ([i, i+1), [j, j+1), [k, k+1)) * v.
- occupied: a voxel that holds at least one point;
- free: a voxel, not occupied, that the segment from the sensor origin to some point passes through
  (with positive length) before it reaches the point;
- near-surface free: a free voxel that some segment enters (or starts in) at most ``near_surface_m``
  before its point: entered at parameter t in [0, 1) of the segment o -> p, (1 - t) |p| <= near_surface_m.
  With the defaults (0.5 m voxels, 1.5 m) these are the last ~3 free voxels before a return along each ray;
- unknown: every other voxel (no target).
The targets are all occupied voxels plus ``round(free_per_occupied * n_occupied)`` near-surface free
voxels drawn uniformly without replacement (all of them if there are fewer), in increasing linear-index
order. Why near the surface: free voxels drawn anywhere along the rays lie mostly far from every point,
so the distance from a query to its nearest point alone told occupied from free (99% of the targets
by one threshold: ``benchmarks/occupancy_shortcut.py``); near the surface, occupied and free queries sit
at similar distances from the points, and the trainer hides the points of the queried regions
(trainer/occupancy.py).

Fast path: a segment enters a new voxel exactly where it crosses a grid plane, so the voxels it
passes through are the voxel it starts in (below a plane it starts on, if it heads down) plus, for each
plane x = lower_x + i v (and y, z) crossed at parameter t in (0, 1), the voxel it enters there. No ray
marching, no sorting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# The defaults of the occupancy targets (``OccupancyGrid``'s, and so ``cdpipe extract``'s), each in one place
LOWER_M = (-50.0, -50.0, -5.0)  # the grid's corner in the LiDAR frame (m)
EXTENT_M = (100.0, 100.0, 8.0)  # and its size: x, y within 50 m of the sensor, z from 5 m below to 3 m above
VOXEL_SIZE_M = 0.5  # the voxels' edge
FREE_PER_OCCUPIED = 1.0  # near-surface free targets drawn per occupied voxel
NEAR_SURFACE_M = 1.5  # free targets: voxels a ray enters at most this far before its return


def grid_shape(voxel_size: float) -> tuple[int, int, int]:
    """Voxels along x, y, z of edge ``voxel_size`` covering EXTENT_M."""
    return tuple(int(round(e / voxel_size)) for e in EXTENT_M)


@dataclass(frozen=True)
class OccupancyGrid:
    voxel_size: float = VOXEL_SIZE_M
    lower: tuple[float, float, float] = LOWER_M
    shape: tuple[int, int, int] | None = None  # None: EXTENT_M in voxels of voxel_size (``grid_shape``)
    free_per_occupied: float = FREE_PER_OCCUPIED
    near_surface_m: float = NEAR_SURFACE_M

    def __post_init__(self):
        if not self.voxel_size > 0 or self.free_per_occupied < 0 or self.near_surface_m <= 0:
            raise ValueError(f"bad occupancy grid {self}")
        if self.shape is None:
            object.__setattr__(self, "shape", grid_shape(self.voxel_size))
        if min(self.shape) < 1:
            raise ValueError(f"bad occupancy grid {self}")
        if max(self.shape) > np.iinfo(np.int16).max:
            raise ValueError("occupancy grid too large for int16 voxel indices")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {"voxel_size_m": d["voxel_size"], "lower": list(d["lower"]), "shape": list(d["shape"]),
                "free_per_occupied": d["free_per_occupied"], "near_surface_m": d["near_surface_m"]}

    def voxel_of(self, xyz: np.ndarray) -> np.ndarray:
        return np.floor((xyz - np.asarray(self.lower)) / self.voxel_size).astype(np.int64)

    def inside(self, ijk: np.ndarray) -> np.ndarray:
        return np.all((ijk >= 0) & (ijk < np.asarray(self.shape)), axis=-1)

    def linear(self, ijk: np.ndarray) -> np.ndarray:
        nx, ny, nz = self.shape
        return (ijk[..., 0] * ny + ijk[..., 1]) * nz + ijk[..., 2]

    def unlinear(self, lin: np.ndarray) -> np.ndarray:
        nx, ny, nz = self.shape
        return np.stack([lin // (ny * nz), (lin // nz) % ny, lin % nz], axis=-1)

    def centres(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel centres [..., 3] (m, LiDAR frame) of voxel indices [..., 3]."""
        return np.asarray(self.lower) + (ijk + 0.5) * self.voxel_size


def occupied_and_free(xyz: np.ndarray, grid: OccupancyGrid,
                      chunk: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean grids (occupied, free, near-surface free), each [nx*ny*nz] by linear index, for points
    ``xyz`` [N,3]."""
    n_vox = int(np.prod(grid.shape))
    occupied = np.zeros(n_vox, dtype=bool)
    ijk = grid.voxel_of(xyz)
    occupied[grid.linear(ijk[grid.inside(ijk)])] = True
    crossed = np.zeros(n_vox, dtype=bool)
    near = np.zeros(n_vox, dtype=bool)
    lower = np.asarray(grid.lower, dtype=np.float64)
    v = grid.voxel_size
    shape = np.asarray(grid.shape)
    stride = np.array([shape[1] * shape[2], shape[2], 1])
    origin_cell = (0.0 - lower) / v
    on_plane = origin_cell == np.floor(origin_cell)  # the sensor sits on grid planes (the default grid)
    for start in range(0, len(xyz), chunk):
        p = xyz[start:start + chunk].astype(np.float64)
        length = np.sqrt((p * p).sum(1))
        # the voxel each segment starts in: on a plane, going down means the voxel below it
        first_cell = np.floor(origin_cell).astype(np.int64) - (on_plane & (p < 0))
        first_in = grid.inside(first_cell)
        crossed[grid.linear(first_cell[first_in])] = True
        near[grid.linear(first_cell[first_in & (length <= grid.near_surface_m)])] = True
        cols = [np.ascontiguousarray(p[:, b]) for b in range(3)]
        for axis in range(3):
            pa = cols[axis]
            # plane indices m with lower + m v strictly between the origin and the point, on the grid
            lo_c, hi_c = np.minimum(0.0, pa), np.maximum(0.0, pa)
            m0 = np.maximum(np.floor((lo_c - lower[axis]) / v).astype(np.int64) + 1, 0)
            m1 = np.minimum(np.ceil((hi_c - lower[axis]) / v).astype(np.int64) - 1, shape[axis])
            count = np.maximum(m1 - m0 + 1, 0)
            total = int(count.sum())
            if total == 0:
                continue
            ray = np.repeat(np.arange(len(p)), count)
            m = np.arange(total) + np.repeat(m0 - (np.cumsum(count) - count), count)
            pa_ray = pa[ray]
            t = (lower[axis] + m * v) / pa_ray
            # the entered voxel along this axis is m going up, m - 1 going down
            cell_a = m - (pa_ray < 0)
            ok = (cell_a >= 0) & (cell_a < shape[axis])
            lin = cell_a * stride[axis]
            for b in range(3):  # the other two indices where the segment meets the plane (in place)
                if b == axis:
                    continue
                c = cols[b][ray]
                c *= t
                c -= lower[b]
                c /= v
                np.floor(c, out=c)
                ok &= (c >= 0) & (c < shape[b])
                lin += c.astype(np.int64) * stride[b]
            crossed[lin[ok]] = True
            near[lin[ok & ((1.0 - t) * length[ray] <= grid.near_surface_m)]] = True
    return occupied, crossed & ~occupied, near & ~occupied


#: The free-voxel draw, exactly (recorded in the store's occupancy attribute).
FREE_DRAW = ("free = numpy.random.default_rng([seed, sweep]).choice(near_free, size=round(free_per_occupied * "
             "n_occupied) capped at len(near_free), replace=False), then sorted; near_free = the near-surface free "
             "voxels' linear indices (i * ny + j) * nz + k in increasing order; sweep = the sweep's index along axis "
             "0; queries = occupied (increasing linear index), then free")


def occupancy_targets(xyz: np.ndarray, grid: OccupancyGrid, rng: np.random.Generator):
    """Query voxels [Q,3] int16 and labels [Q] uint8 (1 occupied, 0 near-surface free) for one sweep."""
    occupied, _, near_free = occupied_and_free(xyz, grid)
    occ_lin = np.nonzero(occupied)[0]
    free_lin = np.nonzero(near_free)[0]
    n_free = min(len(free_lin), int(round(grid.free_per_occupied * len(occ_lin))))
    free_pick = np.sort(rng.choice(free_lin, size=n_free, replace=False)) if n_free else free_lin[:0]
    lin = np.concatenate([occ_lin, free_pick])
    labels = np.concatenate([np.ones(len(occ_lin), np.uint8), np.zeros(len(free_pick), np.uint8)])
    return grid.unlinear(lin).astype(np.int16), labels
