"""storage_schema.md is exactly true: stores of every layout and encoding read with only the names,
dtypes, shapes, chunks, shards and fill values that its tables give, and with its reading recipes run
as written, agree with pipeline/store.py and with ``read_sweep``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.frames import LIDAR_FIELDS
from pipeline.geometry import boxes_to_frame, yaw_quaternion
from pipeline.store import ARRAYS, ATTRIBUTES, BOX_FIELDS, SCHEMA_VERSION, read_boxes, read_sweep
from tests.conftest import built_once

DOC = Path(__file__).resolve().parents[1] / "storage_schema.md"


def _section(name: str) -> str:
    return DOC.read_text().split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]


def _table(section: str) -> list[list[str]]:
    rows = [line for line in _section(section).splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _recipes(section: str = "Layouts and encodings") -> list[str]:
    """The python blocks of a section: of "Layouts and encodings", the common part, the points layout and the
    patches layout; of "Boxes", the boxes of a sweep in the global frame."""
    return re.findall(r"```python\n(.*?)```", _section(section), re.S)


def _dims(text: str, d: dict) -> tuple:
    if text == "-":
        return None
    return tuple(d[t] if t in d else int(t) for t in (p.strip() for p in text.split(",")))


def _held_by(row_in: str, attrs: dict) -> bool:
    """Whether a store with these attributes holds an array whose "in" column says ``row_in``."""
    have = {attrs["layout"], attrs["feature_encoding"], *(("labels",) if attrs["has_labels"] else ()),
            *(("boxes",) if attrs["has_boxes"] else ())}
    return row_in == "all" or {w.strip() for w in row_in.split(",")} <= have


def test_doc_tables_match_schema_module():
    arrays = {row[0]: row for row in _table("Arrays")}
    assert set(arrays) == {a.name for a in ARRAYS}
    for spec in ARRAYS:
        assert arrays[spec.name][1] == spec.dtype, spec.name
        assert arrays[spec.name][2] == ", ".join(["S", *map(str, spec.trailing)]), spec.name
        assert arrays[spec.name][6] == (", ".join(spec.when) or "all"), spec.name
    assert {row[0] for row in _table("Attributes")} == set(ATTRIBUTES)
    assert f"schema version {SCHEMA_VERSION}" in DOC.read_text().splitlines()[0]
    assert len(_recipes()) == 3 and len(_recipes("Boxes")) == 1
    assert not re.search(r"TODO|TBD|XXX|\b[A-Z]{4,}_[A-Z]{4,}\b", DOC.read_text())  # no placeholder left
    # a stored point is the dataset file's record (store.py cannot import frames.py: it stays light)
    assert next(a for a in ARRAYS if a.name == "points").trailing == ("P", LIDAR_FIELDS)


@pytest.fixture(scope="session")
def stores(small_store, small_points_store, tmp_path_factory):
    """The small world in all four layouts and encodings (two extracted here, int8)."""
    import dataclasses

    from pipeline.extract import run_extract

    def build(folder):
        out = {("patches", "float16"): small_store[0].out, ("points", "float16"): small_points_store[0].out}
        for cfg in (small_store[0], small_points_store[0]):
            int8 = dataclasses.replace(cfg, feature_encoding="int8", out=str(folder / f"{cfg.layout}.zarr"))
            run_extract(int8, progress=False)
            out[cfg.layout, "int8"] = int8.out
        return out

    return built_once(tmp_path_factory, "int8_stores", build)


@pytest.mark.parametrize("layout, encoding", [("patches", "float16"), ("points", "float16"), ("patches", "int8"),
                                              ("points", "int8")])
def test_store_read_with_the_document_alone(stores, layout, encoding):
    """The tables give every array of the store (and no other), with its dtype, shape, chunks, shards and
    fill; the document's recipe for the store's layout, run as written, gives what read_sweep gives."""
    store = stores[layout, encoding]
    attrs = zarr.open_group(store, mode="r").attrs
    assert (attrs["layout"], attrs["feature_encoding"]) == (layout, encoding)
    assert_arrays_as_the_tables_say(store)
    for s in (0, 3):
        scope = assert_read_sweep_reads_as_the_document(store, s)
        assert scope["valid"].mean() > 0.5
        scope = assert_read_boxes_reads_as_the_document(store, s)
        assert scope["b"] > 10 and len(set(scope["names"])) >= 3


def assert_arrays_as_the_tables_say(store: str) -> None:
    """The attributes are those of the Attributes table, and the store holds the arrays of the Arrays table
    that its layout, encoding and labels call for, and no other, each with the dtype, shape, chunks,
    shards and fill value the table gives."""
    g = zarr.open_group(store, mode="r")
    attrs = dict(g.attrs)
    assert set(attrs) == {row[0] for row in _table("Attributes")}
    d = {"S": attrs["num_sweeps"], "P": attrs["max_points"], "Q": attrs["max_queries"], "B": attrs["max_boxes"],
         "D": attrs["feature_dim"], "C": len(attrs["cameras"]), "k": attrs["sweeps_per_shard"],
         "h": attrs["patch_grid"][0], "w": attrs["patch_grid"][1]}
    rows = [r for r in _table("Arrays") if _held_by(r[6], attrs)]
    assert set(g.array_keys()) == {r[0] for r in rows}
    for name, dtype, shape, chunk, shard, fill, _, _ in rows:
        a = g[name]
        if dtype == "str":
            assert a.dtype.kind in "OUT", name
            assert a.fill_value == ""
        else:
            assert a.dtype == np.dtype(dtype), name
            expected_fill = {"false": False, "true": True}.get(fill, None)
            assert a.fill_value == (expected_fill if expected_fill is not None else float(fill)), name
        assert a.shape == _dims(shape, d), name
        assert a.chunks == _dims(chunk, d), name
        assert a.shards == _dims(shard, d), name


def read_by_the_document(store: str, s: int) -> dict:
    """Sweep ``s`` of ``store`` read with the document's recipes alone (the common one and the one of the
    store's layout), run as written: the variables they leave (``n``, ``xyz``, ``valid``, ``q``,
    ``centres``, ``feats``...)."""
    common, points, patches = _recipes()
    scope = {"STORE": store, "s": s}
    exec(common + (points if zarr.open_group(store, mode="r").attrs["layout"] == "points" else patches), scope)
    return scope


def assert_read_sweep_reads_as_the_document(store: str, s: int) -> dict:
    """``read_sweep`` gives sweep ``s`` as the document's recipes read it: points, valid and voxel centres
    exactly, the features to float16 rounding (numpy and read_sweep sum a patch map's four cells in
    different orders). Returns the recipes' variables."""
    scope = read_by_the_document(store, s)
    sweep = read_sweep(store, s)
    n, q = scope["n"], scope["q"]
    assert scope["xyz"].shape == (n, 3) and scope["centres"].shape == (q, 3)
    np.testing.assert_array_equal(sweep["points"][:, :3], scope["xyz"])
    np.testing.assert_array_equal(sweep["valid"], scope["valid"])
    np.testing.assert_array_equal(sweep["occ_centres"], scope["centres"])
    feats = scope["feats"]
    assert feats.dtype == np.float16 and feats.shape == (n, sweep["features"].shape[1])
    np.testing.assert_allclose(sweep["features"].astype(np.float32), feats.astype(np.float32), rtol=2 ** -10,
                               atol=1e-3)
    labels = {"labels"} if zarr.open_group(store, mode="r").attrs["has_labels"] else set()
    assert set(sweep) == {"points", *labels, "features", "valid", "camera", "pixel", "occ_voxels", "occ_labels",
                          "occ_centres"}
    return scope


def assert_read_boxes_reads_as_the_document(store: str, s: int) -> dict:
    """``read_boxes`` gives sweep ``s``'s boxes as the document's "Boxes" recipe reads them, and
    ``geometry.boxes_to_frame`` takes them to the global frame as the recipe does (the recipe's quaternion
    being ``yaw_quaternion`` of its yaw). Returns the recipe's variables."""
    scope = {"STORE": store, "s": s}
    exec(_recipes("Boxes")[0], scope)
    boxes = read_boxes(store, s)
    b = scope["b"]
    assert set(boxes) == set(BOX_FIELDS) and all(len(boxes[name]) == b for name in BOX_FIELDS[:-1])
    np.testing.assert_array_equal(boxes["box_centre"].astype(np.float64), scope["centre"])
    np.testing.assert_array_equal(boxes["box_size"], scope["size"])
    np.testing.assert_array_equal(boxes["global_from_lidar"], scope["T"])
    names = zarr.open_group(store, mode="r").attrs["detection_classes"]
    assert [names[c] for c in boxes["box_class"]] == scope["names"]
    translation, yaw, velocity = boxes_to_frame(boxes["global_from_lidar"], boxes["box_centre"], boxes["box_yaw"],
                                                boxes["box_velocity"])
    np.testing.assert_allclose(translation, scope["translation"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(yaw, scope["yaw_global"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(yaw_quaternion(yaw), scope["rotation"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(velocity, scope["velocity_global"], rtol=0, atol=1e-12)  # NaN where NaN
    return scope


def test_both_layouts_and_encodings_give_the_same_features(stores):
    """The patch layout gives the per-point features of the points layout through read_sweep, to float16
    rounding; int8 in either layout stays within cosine 0.9999 of them."""
    for s in range(6):
        ref = read_sweep(stores["points", "float16"], s)
        valid = ref["valid"]
        exact = ref["features"].astype(np.float32)
        for key, store in stores.items():
            got = read_sweep(store, s)
            for name in ("points", "valid", "camera", "pixel", "occ_voxels", "occ_labels"):
                np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{key} {name}")
            feats = got["features"].astype(np.float32)
            assert not feats[~valid].any()
            if key[1] == "float16":  # the maps are rounded to float16 before the blend, the features after
                np.testing.assert_allclose(feats, exact, rtol=2 ** -9, atol=2e-3, err_msg=str(key))
            cos = (feats[valid] * exact[valid]).sum(1) / (np.linalg.norm(feats[valid], axis=1)
                                                          * np.linalg.norm(exact[valid], axis=1))
            assert cos.min() >= (0.99999 if key[1] == "float16" else 0.9999), (key, cos.min())


def test_semantickitti_store_read_with_the_document_alone(small_kitti_store):
    """A SemanticKITTI store follows the same tables and recipes: its own cameras, LiDAR and classes in its
    attributes, no box arrays, and the labels recipe gives the published learning map's classes."""
    from pipeline.classes import LabelClasses

    store = small_kitti_store[0].out
    attrs = dict(zarr.open_group(store, mode="r").attrs)
    assert attrs["dataset"]["name"] == "semantickitti" and not attrs["has_boxes"] and attrs["max_boxes"] == 0
    assert attrs["cameras"] == ["image_2", "image_3"] and attrs["sensors"]["beams"] == 64
    assert LabelClasses.from_dict(attrs["classes"]) == LabelClasses.of("semantickitti")
    assert_arrays_as_the_tables_say(store)
    for s in (0, 3):
        scope = assert_read_sweep_reads_as_the_document(store, s)
        assert 0.05 < scope["valid"].mean() < 0.5  # two front cameras see a part of the spin
        assert (scope["g"]["points"][s, :scope["n"], 4] == -1).all()  # no ring in KITTI's files
        names = {attrs["classes"]["eval"][c - 1] for c in np.unique(scope["eval_labels"]) if c}
        assert {"car", "road", "building", "vegetation"} <= names
    with pytest.raises(Exception, match="holds no boxes"):
        read_boxes(store, 0)


def test_nuscenes_labels_recipe_gives_the_lidarseg_mapping(small_store):
    from pipeline.classes import FINE_TO_EVAL

    scope = read_by_the_document(small_store[0].out, 1)
    np.testing.assert_array_equal(scope["eval_labels"], FINE_TO_EVAL[read_sweep(small_store[0].out, 1)["labels"]])
