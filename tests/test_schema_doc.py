"""storage_schema.md is exactly true: a store read with only the names, dtypes, shapes, chunks, shards
and fill values that its tables give, and nothing else in the store or in pipeline/store.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from pipeline.store import ARRAYS, ATTRIBUTES, read_sweep

DOC = Path(__file__).resolve().parents[1] / "storage_schema.md"


def _table(section: str) -> list[list[str]]:
    text = DOC.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _dims(text: str, d: dict) -> tuple:
    if text == "-":
        return None
    return tuple(d[t] if t in d else int(t) for t in (p.strip() for p in text.split(",")))


def test_doc_tables_match_schema_module():
    arrays = {row[0]: row for row in _table("Arrays")}
    assert set(arrays) == {a.name for a in ARRAYS}
    for spec in ARRAYS:
        assert arrays[spec.name][1] == spec.dtype, spec.name
        assert arrays[spec.name][2] == ", ".join(["S", *map(str, spec.trailing)]), spec.name
    assert {row[0] for row in _table("Attributes")} == set(ATTRIBUTES)


def test_store_read_with_the_document_alone(small_store):
    cfg, _ = small_store
    g = zarr.open_group(cfg.out, mode="r")
    attrs = dict(g.attrs)
    assert set(attrs) == {row[0] for row in _table("Attributes")}
    assert attrs["schema_version"] == 3
    d = {"S": attrs["num_sweeps"], "P": attrs["max_points"], "Q": attrs["max_queries"], "D": attrs["feature_dim"],
         "C": len(attrs["cameras"]), "k": attrs["sweeps_per_shard"]}
    rows = _table("Arrays")
    assert set(g.array_keys()) == {r[0] for r in rows}  # has_labels is true here
    for name, dtype, shape, chunk, shard, fill, _ in rows:
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
    # the reading recipe of the document works
    s = 0
    assert g["done"][s] == 1
    n = g["num_points"][s]
    xyz, feats = g["points"][s, :n, :3], g["features"][s, :n]
    q = g["num_queries"][s]
    occ = attrs["occupancy"]
    centres = (np.asarray(occ["lower"], np.float32)
               + (g["occ_voxels"][s, :q].astype(np.float32) + 0.5) * np.float32(occ["voxel_size_m"]))
    assert xyz.shape == (n, 3) and feats.shape == (n, d["D"]) and centres.shape == (q, 3)
    assert (centres >= np.array(occ["lower"])).all()
    # and gives what the reader API gives
    sweep = read_sweep(cfg.out, s)
    np.testing.assert_array_equal(sweep["points"][:, :3], xyz)
    np.testing.assert_array_equal(sweep["features"], feats)
    np.testing.assert_array_equal(sweep["valid"], g["valid"][s, :n])
    np.testing.assert_array_equal(sweep["occ_centres"], centres)
    assert set(sweep) == {"points", "labels", "features", "valid", "camera", "pixel", "occ_voxels", "occ_labels",
                          "occ_centres"}
