"""The same arguments write byte-identical files, whatever the number of worker processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.synth.world import build_world
from pipeline.synth.write import SynthConfig, write_dataroot


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_arguments_same_bytes(tmp_path):
    kwargs = dict(scenes=1, samples_per_scene=2, seed=3, width=160, height=90)
    a = write_dataroot(SynthConfig(out=str(tmp_path / "a"), workers=1, **kwargs), progress=False)
    b = write_dataroot(SynthConfig(out=str(tmp_path / "b"), workers=2, **kwargs), progress=False)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    assert len(da) == 1 + 2 * 7 + 2 + 1 + 14  # synth.json, 2 x (sweep + 6 images), 2 labels, map, tables
    assert da == db
    assert a["points_per_sweep"] == b["points_per_sweep"]
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["world_version"] == 3  # the default


@pytest.mark.parametrize("version", [1, 3])
def test_each_seed_is_a_different_street(version):
    w0, w1 = build_world(0, 0, 4.6, version), build_world(1, 0, 4.6, version)
    assert len(w0.prims) != len(w1.prims) or not np.allclose(w0.prims.centre, w1.prims.centre)
    assert build_world(0, 1, 4.6, version).speed != w0.speed  # scenes of one seed differ too
    again = build_world(0, 0, 4.6, version)
    assert np.array_equal(again.prims.centre, w0.prims.centre) and again.speed == w0.speed
    assert np.array_equal(again.prims.reflectivity, w0.prims.reflectivity)


def test_semantickitti_layout_same_arguments_same_bytes(tmp_path):
    """The KITTI rig's world too: byte-identical files whatever --workers, and synth.json records the
    dataset."""
    kwargs = dict(scenes=2, samples_per_scene=1, seed=3, width=224, height=64, dataset="semantickitti")
    a = write_dataroot(SynthConfig(out=str(tmp_path / "a"), workers=0, **kwargs), progress=False)
    write_dataroot(SynthConfig(out=str(tmp_path / "b"), workers=2, **kwargs), progress=False)
    da, db = _digests(tmp_path / "a"), _digests(tmp_path / "b")
    per_sequence = ("calib.txt", "poses.txt", "times.txt", "velodyne/000000.bin", "labels/000000.label",
                    "image_2/000000.png", "image_3/000000.png")
    assert set(da) == {"synth.json", *(f"sequences/{q}/{f}" for q in ("00", "08") for f in per_sequence)}
    assert da == db
    assert json.loads((tmp_path / "a" / "synth.json").read_text())["dataset"] == "semantickitti"
    assert a["splits"] == {"train": 1, "val": 1} and a["points_per_sweep"]["min"] > 50_000
