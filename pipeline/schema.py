"""The teacher-feature store: every array and attribute, in one place. ``storage_schema.md`` describes
exactly this module; ``tests/test_schema_doc.py`` holds the two together.

A store is one Zarr v3 group. Sweeps (LiDAR keyframes) lie along axis 0 of every array; per-point arrays
are padded to ``P`` (the largest sweep) and per-query arrays to ``Q``, with ``num_points`` and
``num_queries`` saying how many rows of sweep s are real. Along axis 0, chunks hold one sweep, so any
sweep reads without touching the others; shards hold ``sweeps_per_shard`` sweeps, and one extract task
writes one whole shard (or, for unsharded arrays, the whole chunks) of every array: concurrent writers
never share a file. ``features`` is not sharded: a sweep's chunk is already a file of ~10-20 MB, and
zarr's sharding codec costs an extra fill and copy of every chunk it writes. ``done[s]`` is written
after everything else of sweep s: a sweep whose ``done`` is 0 is absent, whatever its other arrays read.

Light module (zarr and numpy only): the trainer imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SCHEMA_VERSION = 2  # 2: free occupancy voxels near the surface (1: anywhere along the rays)
N_CAMERAS_MAX = 6


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    trailing: tuple[str, ...]  # symbolic trailing dims after the sweep axis: "P", "Q", "D", "C" or a number
    fill: float | int | str
    description: str
    per_point: bool = False  # padded to P (or Q) rows, compressed with the heavy codec
    sharded: bool = True  # per-point arrays: shards of sweeps_per_shard one-sweep chunks; False: no shards

    def shape(self, n_sweeps: int, dims: dict[str, int]) -> tuple[int, ...]:
        return (n_sweeps, *(dims[d] if isinstance(d, str) else d for d in self.trailing))


ARRAYS: tuple[ArraySpec, ...] = (
    ArraySpec("points", "float32", ("P", 5), 0.0,
              "x, y, z (m, LiDAR frame of the sweep), intensity, ring; as in the dataset's files", True),
    ArraySpec("labels", "uint8", ("P",), 0, "lidarseg class per point (dataset's fine classes; 0 = noise)", True),
    ArraySpec("features", "float16", ("P", "D"), 0.0,
              "teacher feature at the point's pixel (bilinear on the patch map); 0 where valid is false", True,
              sharded=False),
    ArraySpec("valid", "bool", ("P",), False, "the point has a teacher feature (seen by a camera)", True),
    ArraySpec("camera", "int8", ("P",), -1, "index into attrs cameras of the view used; -1 if none", True),
    ArraySpec("pixel", "float32", ("P", 2), -1.0,
              "(u, v) in that camera's original image, continuous: pixel (i, j) spans [i, i+1) x [j, j+1)", True),
    ArraySpec("occ_voxels", "int16", ("Q", 3), -1, "occupancy query voxel (i, j, k) on attrs occupancy grid", True),
    ArraySpec("occ_labels", "uint8", ("Q",), 0, "1 occupied, 0 free", True),
    ArraySpec("num_points", "int32", (), 0, "real rows of points/labels/features/valid/camera/pixel"),
    ArraySpec("num_queries", "int32", (), 0, "real rows of occ_voxels/occ_labels"),
    ArraySpec("scene_index", "int32", (), -1, "index into attrs scenes"),
    ArraySpec("timestamp", "int64", (), 0, "LiDAR timestamp (microseconds)"),
    ArraySpec("camera_timestamp", "int64", ("C",), 0, "timestamp of each camera image (microseconds)"),
    ArraySpec("sample_token", "str", (), "", "dataset sample token"),
    ArraySpec("lidar_token", "str", (), "", "dataset LiDAR sample_data token"),
    ArraySpec("done", "uint8", (), 0, "1 once every array of the sweep is written"),
)
ARRAY_SPECS: dict[str, ArraySpec] = {a.name: a for a in ARRAYS}

#: Group attributes and what each holds.
ATTRIBUTES: dict[str, str] = {
    "schema_version": "int, this document's version",
    "num_sweeps": "int, S",
    "max_points": "int, P",
    "max_queries": "int, Q",
    "feature_dim": "int, D",
    "sweeps_per_shard": "int, sweeps per shard along axis 0",
    "cameras": "list of camera channel names; the camera array indexes it",
    "scenes": "list of {name, token, split, first_sweep, num_sweeps}",
    "has_labels": "bool, whether labels holds dataset labels",
    "dataset": "{name, version, split, dataroot}",
    "teacher": "{name, weights (sha256 of the file, or 'random'), architecture, stand_in, random_init_seed, layer, "
               "image_size [H, W], patch_size, mean, std, timm_version}",
    "projection": "{min_depth_m, multi_view_rule, pixel_convention, sampling}",
    "occupancy": "{voxel_size_m, lower [x, y, z], shape [nx, ny, nz], free_per_occupied, near_surface_m, frame, seed}",
    "provenance": "{code_version, created_utc, command, torch_version, zarr_version}",
}

MULTI_VIEW_RULE = ("a point seen by several cameras takes the view whose pixel lies farthest from that image's "
                   "border (in pixels); ties go to the lower camera index")
PIXEL_CONVENTION = "continuous (u, v), origin at the top-left corner of pixel (0, 0); centre of pixel (i, j) is (i+0.5, j+0.5)"
SAMPLING = ("bilinear on the D x H/p x W/p patch map, patch centres at ((j+0.5) W/w, (i+0.5) H/h) in image pixels "
            "(grid_sample, align_corners=False, border padding)")


class StoreError(RuntimeError):
    """A store that this code cannot read or extend; the message says why and what to do."""


def check_compatible(attrs: dict, where: str) -> None:
    """Refuse a store written under another schema version."""
    version = attrs.get("schema_version")
    if version is None:
        raise StoreError(f"{where} is not a teacher-feature store (no schema_version attribute)")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{where} has schema_version {version}; this code reads version {SCHEMA_VERSION}. "
                         f"Re-extract the store with this version of cdpipe, or use the cdpipe release that wrote it.")


def open_store(url: str, mode: str = "r"):
    """Open a store (local path or fsspec URL) and check its schema version."""
    import zarr

    try:
        group = zarr.open_group(url, mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as e:
        raise StoreError(f"no store at {url}: {e}") from None
    check_compatible(dict(group.attrs), url)
    return group


def sweep_slice(group, name: str, s: int) -> np.ndarray:
    """The real rows of per-point or per-query array ``name`` for sweep ``s``."""
    spec = ARRAY_SPECS[name]
    count = "num_queries" if spec.trailing and spec.trailing[0] == "Q" else "num_points"
    n = int(group[count][s])
    return group[name][s, :n]
