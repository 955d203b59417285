"""The store's writer and readers round-trip: a store written through ``StoreWriter`` from arrays made here
(numpy only: no Dask, no timm, no dataset), in each layout and encoding, reads back equal through
``read_sweep`` and through storage_schema.md's own tables and recipes, and ``cdpipe verify`` passes it;
a failed sweep is recorded and every reader sees it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.classes import DETECTION_CLASSES, LabelClasses
from pipeline.geometry import make_transform, yaw_matrix
from pipeline.store import (
    ARRAY_SPECS,
    BOX_FIELDS,
    FEATURE_ARRAYS,
    SCHEMA_VERSION,
    StoreError,
    decode_int8,
    encode_int8,
    read_boxes,
    read_sweep,
)
from pipeline.store_writer import StoreWriter
from pipeline.verify import store_info, verify_store
from tests.test_packaging import heavy_imports
from tests.test_schema_doc import (
    assert_arrays_as_the_tables_say,
    assert_read_boxes_reads_as_the_document,
    assert_read_sweep_reads_as_the_document,
)

S, P, Q, B, D = 4, 200, 64, 6, 8  # sweeps, padded points, queries and boxes, feature size
CAMERAS = ("CAM_FRONT", "CAM_BACK")
PATCH, GRID = 14, (2, 4)  # the teacher's patch size and its map per camera, (h, w)
IMAGE_HW = np.array([[64, 128], [64, 128]])  # each camera's (H, W): a map cell spans 32 x 32 pixels
OCC_SHAPE = (32, 32, 8)
LAYOUTS = [("patches", "float16"), ("patches", "int8"), ("points", "float16"), ("points", "int8")]


def attrs_for(layout: str, encoding: str, has_labels: bool = True, has_boxes: bool = True) -> dict:
    """Attributes of a small store, every one storage_schema.md lists."""
    h, w = GRID
    return {
        "schema_version": SCHEMA_VERSION, "num_sweeps": S, "max_points": P, "max_queries": Q,
        "max_boxes": B if has_boxes else 0, "has_boxes": has_boxes, "detection_classes": list(DETECTION_CLASSES),
        "feature_dim": D,
        "layout": layout, "feature_encoding": encoding, "patch_grid": [h, w], "sweeps_per_shard": 2,
        "cameras": list(CAMERAS),
        "scenes": [{"name": "scene-0001", "token": "scene-token", "split": "train", "first_sweep": 0, "num_sweeps": S}],
        "has_labels": has_labels,
        "classes": LabelClasses.of("nuscenes").to_dict(),
        "sensors": {"lidar": "LIDAR_TOP", "beams": 32, "intensity_max": 255.0, "has_ring": True},
        "dataset": {"name": "nuscenes", "version": "v1.0-test", "split": "all", "dataroot": "/made/in/the/test"},
        "teacher": {"name": "made-in-the-test", "weights": "random", "architecture": {}, "stand_in": None,
                    "random_init_seed": 0, "layer": "last_prenorm", "image_size": [h * PATCH, w * PATCH],
                    "patch_size": PATCH, "mean": [0.5] * 3, "std": [0.25] * 3, "timm_version": None,
                    "create_model": None, "resize": None, "normalise": None, "forward": None, "device": "cpu"},
        "projection": {"min_depth_m": 1.0, "multi_view_rule": "", "pixel_convention": "", "sampling": ""},
        "occupancy": {"voxel_size_m": 0.5, "lower": [-8.0, -8.0, -2.0], "shape": list(OCC_SHAPE),
                      "free_per_occupied": 1.0, "near_surface_m": 1.5, "frame": "LiDAR", "seed": 0, "free_draw": ""},
        "provenance": {"code_version": "test", "created_utc": "2026-01-01T00:00:00+00:00", "command": "",
                       "torch_version": None, "zarr_version": zarr.__version__},
    }


def make_sweep(s: int, layout: str, encoding: str, has_labels: bool = True, has_boxes: bool = True) -> dict:
    """Sweep ``s``'s rows as ``StoreWriter.write_sweep`` takes them, random but valid; its first point lies
    at the centre of patch cell (1, 2) of camera 0, so that its feature is that cell's vector. With boxes:
    B of them in sweep 0 (one with a velocity that cannot be computed), none in sweep 2."""
    rng = np.random.default_rng(s)
    n, q = int(rng.integers(50, P)), int(rng.integers(10, Q))
    xyz = rng.uniform(-7.5, 7.5, (n, 3))
    points = np.column_stack([xyz, rng.uniform(0, 255, n), rng.integers(0, 32, n)]).astype(np.float32)
    camera = rng.integers(-1, len(CAMERAS), n).astype(np.int8)
    valid = camera >= 0
    wh = IMAGE_HW[np.maximum(camera, 0)][:, ::-1]
    pixel = np.where(valid[:, None], rng.uniform(0, 1, (n, 2)) * wh, -1).astype(np.float32)
    camera[0], valid[0] = 0, True
    pixel[0] = [(2 + 0.5) * IMAGE_HW[0, 1] / GRID[1], (1 + 0.5) * IMAGE_HW[0, 0] / GRID[0]]
    rows = {"points": points, "valid": valid, "camera": camera, "pixel": pixel,
            "occ_voxels": rng.integers(0, OCC_SHAPE, (q, 3)).astype(np.int16),
            "occ_labels": rng.integers(0, 2, q).astype(np.uint8),
            "scene_index": 0, "timestamp": 1_000_000 * s, "camera_timestamp": [1_000_000 * s + 10, 1_000_000 * s + 20],
            "camera_hw": IMAGE_HW, "sample_token": f"sample-{s}", "lidar_token": f"lidar-{s}",
            "warnings": "CAM_BACK left out: made up by the test" if s == 1 else ""}
    if has_labels:
        rows["labels"] = rng.integers(0, 32, n).astype(np.uint8)
    if has_boxes:
        b = {0: B, 2: 0}.get(s, int(rng.integers(1, B)))
        velocity = rng.normal(0, 3, (b, 2)).astype(np.float32)
        velocity[:1] = np.nan
        rows.update(box_centre=rng.uniform(-7, 7, (b, 3)).astype(np.float32),
                    box_size=rng.uniform(0.3, 5, (b, 3)).astype(np.float32),
                    box_yaw=rng.uniform(-np.pi, np.pi, b).astype(np.float32), box_velocity=velocity,
                    box_class=rng.integers(0, len(DETECTION_CLASSES), b).astype(np.int8),
                    box_num_lidar_pts=rng.integers(0, 500, b).astype(np.int32),
                    box_token=np.array([f"ann-{s}-{i}" for i in range(b)], dtype=object),
                    global_from_lidar=make_transform(yaw_matrix(rng.uniform(-np.pi, np.pi)), rng.uniform(-500, 500, 3)))
    if layout == "points":
        feats = np.where(valid[:, None], rng.standard_normal((n, D)), 0).astype(np.float32)
        if encoding == "float16":
            rows["features"] = feats.astype(np.float16)
        else:
            rows["features_int8"], rows["features_scale"] = encode_int8(feats)
    else:
        maps = rng.standard_normal((len(CAMERAS), *GRID, D)).astype(np.float32)
        if encoding == "float16":
            rows["patches"] = maps.astype(np.float16)
        else:
            rows["patches_int8"], rows["patches_scale"] = encode_int8(maps)
    return rows


def stored_features(rows: dict) -> np.ndarray:
    """What a sweep's arrays hold of its features, decoded: [n, D] per point or [C, h, w, D] maps, float32."""
    for name in ("features", "patches"):
        if name in rows:
            return rows[name].astype(np.float32)
        if f"{name}_int8" in rows:
            return decode_int8(rows[f"{name}_int8"], rows[f"{name}_scale"])
    raise KeyError("no feature arrays")


def write_store(out: str, layout: str, encoding: str, has_labels: bool = True, has_boxes: bool = True) -> list[dict]:
    writer = StoreWriter(out, attrs_for(layout, encoding, has_labels, has_boxes))
    sweeps = [make_sweep(s, layout, encoding, has_labels, has_boxes) for s in range(S)]
    for s, rows in enumerate(sweeps):
        writer.write_sweep(s, rows)
    return sweeps


@pytest.mark.parametrize("layout, encoding", LAYOUTS)
def test_store_written_from_arrays_reads_back_equal(tmp_path, layout, encoding):
    """Every array reads back as written, through read_sweep and through the document's tables and recipes;
    a point at a patch cell's centre reads that cell's vector; the boxes read back through read_boxes and the
    document's recipe; verify finds nothing wrong."""
    out = str(tmp_path / "store.zarr")
    has_labels = layout == "patches"  # a store without labels too
    has_boxes = encoding == "float16"  # and without boxes
    sweeps = write_store(out, layout, encoding, has_labels, has_boxes)
    assert_arrays_as_the_tables_say(out)
    g = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(g["done"][:], 1)
    for s, rows in enumerate(sweeps):
        got = read_sweep(out, s)
        n, q = len(rows["points"]), len(rows["occ_labels"])
        for name in ("points", "labels", "valid", "camera", "pixel", "occ_voxels", "occ_labels"):
            if name in rows:
                np.testing.assert_array_equal(got[name], rows[name], err_msg=name)
        assert ("labels" in got) == has_labels
        lower, size = np.float32([-8.0, -8.0, -2.0]), np.float32(0.5)
        np.testing.assert_array_equal(got["occ_centres"], lower + (rows["occ_voxels"] + np.float32(0.5)) * size)
        for name in ("scene_index", "timestamp", "camera_timestamp", "camera_hw", "sample_token", "lidar_token",
                     "warnings", "failure"):
            np.testing.assert_array_equal(g[name][s], rows.get(name, ""), err_msg=name)
        assert (g["num_points"][s], g["num_queries"][s]) == (n, q)
        for name in FEATURE_ARRAYS:  # the feature arrays as written
            if name in rows:
                np.testing.assert_array_equal(g[name][s][:n] if name.startswith("features") else g[name][s],
                                              rows[name], err_msg=name)
        features = stored_features(rows)
        assert got["features"].dtype == np.float16 and got["features"].shape == (n, D)
        assert not got["features"][~rows["valid"]].any()
        if layout == "points":
            np.testing.assert_array_equal(got["features"], features.astype(np.float16))
            np.testing.assert_array_equal(g["features" if encoding == "float16" else "features_int8"][s, n:], 0)
        else:  # the point at the centre of cell (1, 2) of camera 0 reads that cell, to float16 rounding
            np.testing.assert_array_equal(got["features"][0], features[0, 1, 2].astype(np.float16))
        assert_read_sweep_reads_as_the_document(out, s)
        if not has_boxes:
            with pytest.raises(StoreError, match="holds no boxes"):
                read_boxes(out, s)
            continue
        boxes = read_boxes(out, s)
        assert g["num_boxes"][s] == len(rows["box_class"]) == len(boxes["box_class"])
        for name in BOX_FIELDS:
            np.testing.assert_array_equal(boxes[name], rows[name], err_msg=name)
        assert_read_boxes_reads_as_the_document(out, s)
    report = verify_store(out, progress=False)
    assert report["problems"] == [] and report["sweeps_done"] == S
    assert [(w["sweep"], w["sample_token"]) for w in report["warnings"]] == [(1, "sample-1")]


@pytest.mark.parametrize("layout, encoding", [("patches", "float16"), ("points", "int8")])
def test_a_whole_group_written_at_once_equals_one_sweep_at_a_time(tmp_path, layout, encoding):
    """write_sweeps (a whole shard of sweeps, the extract's write) and write_sweep (one sweep, merged into
    its shard) write the same store."""
    one = str(tmp_path / "one.zarr")
    sweeps = write_store(one, layout, encoding)
    group = str(tmp_path / "group.zarr")
    writer = StoreWriter(group, attrs_for(layout, encoding))
    for first in range(0, S, 2):
        block = writer.blank(2)
        for i, rows in enumerate(sweeps[first:first + 2]):
            for name, value in rows.items():
                if ARRAY_SPECS[name].trailing[:1] in (("P",), ("Q",), ("B",)):
                    block[name][i, :len(value)] = value
                else:
                    block[name][i] = value
            block["num_points"][i], block["num_queries"][i] = len(rows["points"]), len(rows["occ_labels"])
            block["num_boxes"][i] = len(rows["box_class"])
            block["done"][i] = 1
        writer.write_sweeps(first, block)
    a, b = zarr.open_group(one, mode="r"), zarr.open_group(group, mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for name in a.array_keys():
        np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
    with pytest.raises(ValueError, match="points missing"):
        writer.write_sweeps(0, {name: value for name, value in writer.blank(2).items() if name != "points"})


def test_a_failed_sweep_is_recorded_and_every_reader_sees_it(tmp_path):
    """A sweep failed through the writer: read_sweep refuses it naming why, verify and info list it with
    its token; a complete sweep cannot be failed over; writing the sweep later completes it."""
    out = str(tmp_path / "store.zarr")
    writer = StoreWriter(out, attrs_for("patches", "float16"))
    sweeps = [make_sweep(s, "patches", "float16") for s in range(S)]
    for s in (0, 1, 3):
        writer.write_sweep(s, sweeps[s])
    why = "camera image unreadable (corrupt or truncated): CAM_FRONT.jpg"
    assert writer.fail_sweep(2, why, sample_token="sample-2", lidar_token="lidar-2")
    np.testing.assert_array_equal(writer.done(), [1, 1, 0, 1])
    with pytest.raises(StoreError, match=r"sweep 2 is not complete \(it failed: camera image unreadable"):
        read_sweep(out, 2)
    problems = verify_store(out, progress=False)["problems"]
    assert [(p["kind"], p["sweep"], p["sample_token"], p["message"]) for p in problems] == [
        ("failed", 2, "sample-2", why)]
    info = store_info(out)
    assert (info["sweeps"], info["sweeps_failed"]) == (3, 1)
    assert info["failures"] == [{"sweep": 2, "sample_token": "sample-2", "reason": why}]
    assert not writer.fail_sweep(0, "too late: the sweep is complete")  # kept, data and record
    assert read_sweep(out, 0)["points"].shape == sweeps[0]["points"].shape
    writer.write_sweep(2, sweeps[2])  # a rerun that succeeds clears the record
    assert verify_store(out, progress=False)["problems"] == [] and not store_info(out)["failures"]


def test_a_store_resumes_only_with_the_same_settings(tmp_path):
    """Opening a written store again with its own attributes resumes it (what is done stays done); another
    layout names the options that resume it; other settings, or attributes that lack one the document
    lists, are refused."""
    out = str(tmp_path / "store.zarr")
    writer = StoreWriter(out, attrs_for("points", "float16"))
    writer.write_sweep(1, make_sweep(1, "points", "float16"))
    again = StoreWriter(out, attrs_for("points", "float16"))
    np.testing.assert_array_equal(again.done(), [0, 1, 0, 0])
    with pytest.raises(StoreError, match="rerun with --layout points to resume it"):
        StoreWriter(out, attrs_for("patches", "float16"))
    moved = attrs_for("points", "float16")
    moved["occupancy"] = {**moved["occupancy"], "voxel_size_m": 0.25}
    with pytest.raises(StoreError, match=r"other settings \(occupancy differ\)"):
        StoreWriter(out, moved)
    started = StoreWriter(out, moved, overwrite=True)
    np.testing.assert_array_equal(started.done(), 0)
    with pytest.raises(StoreError, match="lack provenance"):
        StoreWriter(str(tmp_path / "other.zarr"), {k: v for k, v in moved.items() if k != "provenance"})


def test_the_writer_needs_no_heavy_module():
    """A store can be written where only the trainer's packages are installed: no devkit, Dask or timm."""
    problems, reached = heavy_imports(Path(__file__).resolve().parent.parent, ("pipeline/store_writer.py",))
    assert not problems, "\n".join(problems)
    assert "pipeline/store.py" in reached
