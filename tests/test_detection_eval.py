"""The devkit's scoring of a detector (pipeline/detection_eval.py, `cdtrain evaluate --task detection`):
predictions in a sweep's LiDAR frame become the annotations' global boxes; the command decodes every val
sweep and writes the devkit's metrics; bad or missing input ends in one line."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.detection_eval import META, default_attribute, detection_submission, split_samples
from pipeline.frames import load_nuscenes
from pipeline.store import open_store, read_boxes
from trainer.cli import app

runner = CliRunner()


def _stored_predictions(group) -> list[dict]:
    """The stored boxes of the val sweeps as predictions in their LiDAR frame (score 1, no attribute)."""
    classes = group.attrs["detection_classes"]
    found = []
    for s, sample in split_samples(group, "val"):
        b = read_boxes(group, s)
        found.append({"sample_token": sample, "centre": b["box_centre"], "size": b["box_size"], "yaw": b["box_yaw"],
                      "velocity": b["box_velocity"], "name": [classes[k] for k in b["box_class"]],
                      "score": np.ones(len(b["box_class"])), "tokens": b["box_token"]})
    return found


def test_predictions_in_the_lidar_frame_become_the_annotations_in_the_global_frame(small_store):
    """Stored boxes given back as predictions come out of ``detection_submission`` as their own annotations
    (translation, size, heading) in the global frame, every val sample listed, with the devkit's meta and a
    default attribute the devkit accepts; a sample outside val is refused, naming it."""
    from nuscenes.eval.detection.data_classes import DetectionBox
    from pyquaternion import Quaternion

    group = open_store(small_store[0].out)
    attrs = dict(group.attrs)
    nusc = load_nuscenes(attrs["dataset"]["dataroot"], attrs["dataset"]["version"])
    predictions = _stored_predictions(group)
    result = detection_submission(group, predictions)
    assert result["meta"] == META
    assert set(result["results"]) == {sample for _, sample in split_samples(group, "val")}
    compared = 0
    for p in predictions:
        boxes = result["results"][p["sample_token"]]
        assert len(boxes) == len(p["tokens"])
        for box, token in zip(boxes, p["tokens"]):
            DetectionBox.deserialize(box)  # the devkit takes it
            ann = nusc.get("sample_annotation", str(token))
            np.testing.assert_allclose(box["translation"], ann["translation"], atol=1e-3)
            np.testing.assert_allclose(box["size"], ann["size"], atol=1e-5)
            turn = Quaternion(box["rotation"]).yaw_pitch_roll[0] - Quaternion(ann["rotation"]).yaw_pitch_roll[0]
            assert abs(np.angle(np.exp(1j * turn))) < 2e-3
            assert box["detection_score"] == 1.0
            compared += 1
    assert compared >= 20
    train = next(sample for _, sample in split_samples(group, "train"))
    with pytest.raises(ValueError, match=f"sample {train}: not a sample of the store's val scenes"):
        detection_submission(group, [dict(predictions[0], sample_token=train)])


def test_default_attributes_follow_class_and_speed():
    """Vehicles parked or moving, pedestrians standing or moving, cycles without or with a rider, none for
    barriers and cones; an unknown velocity counts as at rest; an unknown class is refused."""
    assert default_attribute("car", [0.0, 0.0]) == "vehicle.parked"
    assert default_attribute("bus", [3.0, 0.0]) == "vehicle.moving"
    assert default_attribute("pedestrian", [np.nan, np.nan]) == "pedestrian.standing"
    assert default_attribute("pedestrian", [0.0, 1.0]) == "pedestrian.moving"
    assert default_attribute("bicycle", [0.0, 0.0]) == "cycle.without_rider"
    assert default_attribute("traffic_cone", [5.0, 0.0]) == default_attribute("barrier", [0.0, 0.0]) == ""
    with pytest.raises(ValueError, match="'animal'"):
        default_attribute("animal", [0.0, 0.0])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def detector(small_store, tmp_path):
    """A detector trained 2 steps from random initialisation on the small store (coarse grid)."""
    from trainer.config import DetectionConfig, FinetuneConfig
    from trainer.finetune_detection import finetune_detection

    out = tmp_path / "detector"
    finetune_detection(small_store[0].out, None, "minkunet-tiny",
                       FinetuneConfig(out=str(out), steps=2, warmup=0, batch_size=1, max_points=2000),
                       DetectionConfig(cell_m=1.6), voxel_size=0.3, progress=False)
    return str(out / "detector.pt")


def test_evaluate_detection_writes_the_devkits_metrics(small_store, detector, tmp_path):
    """`cdtrain evaluate --task detection` decodes every val sweep, scores them with the devkit and writes
    result.json (mAP, NDS, TP errors, per-class AP, over the classes present too) and the devkit's
    metrics_summary.json; --json prints the result. Two training steps find next to nothing: the values are
    near 0, only their presence and range are checked."""
    store = small_store[0].out
    out = tmp_path / "eval"
    res = runner.invoke(app, ["evaluate", "--task", "detection", "--detector", detector, "--store", store, "--out",
                              str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "mAP" in res.output and "NDS" in res.output and "car" in res.output
    result = json.loads((out / "result.json").read_text())
    metrics = json.loads((out / "metrics_summary.json").read_text())
    assert {"mAP", "NDS", "ap", "tp_errors", "present", "mAP_present", "NDS_present"} <= set(result)
    assert {"mean_ap", "nd_score", "mean_dist_aps", "tp_errors"} <= set(metrics)
    assert result["mAP"] == metrics["mean_ap"] and result["NDS"] == metrics["nd_score"]
    assert 0 <= result["mAP"] <= 1 and 0 <= result["NDS"] <= 1 and 0 <= result["mAP_present"] <= 1
    assert result["sweeps"] == 3 and result["present"] and len(result["ap"]) == 10
    assert (out / "submission.json").is_file()
    printed = runner.invoke(app, ["evaluate", "--task", "detection", "--detector", detector, "--store", store, "--out",
                                  str(tmp_path / "again"), "--device", "cpu", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["mAP"] == result["mAP"]


def test_evaluate_detection_bad_input_is_one_line(small_store, tmp_path, monkeypatch):
    """A missing --detector or --out, a segmenter's flag, a split other than val, and a missing devkit (the
    pipeline extra) each end in one line, exit 2."""
    store = small_store[0].out
    det = str(tmp_path / "detector.pt")
    cases = ((["--out", str(tmp_path)], "--detector DETECTOR"),
             (["--detector", det], "--out DIR"),
             (["--detector", det, "--out", str(tmp_path), "--segmenter", det], "--segmenter is for segmentation"),
             (["--detector", det, "--out", str(tmp_path), "--split", "train"], "val scenes only"))
    for args, message in cases:
        res = runner.invoke(app, ["evaluate", "--task", "detection", "--store", store, *args])
        assert res.exit_code == 2 and message in res.output and res.output.strip().count("\n") == 0, res.output
    res = runner.invoke(app, ["evaluate", "--store", store, "--detector", det])
    assert res.exit_code == 2 and "--detector goes with --task detection" in res.output
    for name in [m for m in sys.modules if m == "nuscenes" or m.startswith("nuscenes.")]:
        monkeypatch.setitem(sys.modules, name, None)  # importing it fails as when it is not installed
    monkeypatch.delitem(sys.modules, "pipeline.detection_eval", raising=False)
    res = runner.invoke(app, ["evaluate", "--task", "detection", "--store", store, "--detector", det, "--out",
                              str(tmp_path)])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0, res.output
    assert "needs the 'pipeline' extra" in res.output, res.output
