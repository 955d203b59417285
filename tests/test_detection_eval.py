"""The devkit's scoring of a detector (pipeline/detection_eval.py, `cdtrain evaluate --task detection`):
predictions in a sweep's LiDAR frame become the annotations' global boxes; the command decodes every val
sweep and writes the devkit's metrics; bad or missing input ends in one line."""

from __future__ import annotations

import json
import os
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
    near 0, only their presence and range are checked. The detector's run folder plots as a detection run."""
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
    assert set(result["pictures"]) == {"ap_per_class", "bev"}
    for path in result["pictures"].values():
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 10_000, path
    printed = runner.invoke(app, ["evaluate", "--task", "detection", "--detector", detector, "--store", store, "--out",
                                  str(tmp_path / "again"), "--device", "cpu", "--json"])
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout)["mAP"] == result["mAP"]
    # the detector's run folder: `cdtrain plot` draws its loss parts, held-out detection loss and AP
    from trainer.plots import read_run, runs_figure

    run = read_run(os.path.dirname(detector))
    assert {"train_loss", "heatmap_loss", "regression_loss", "val_loss", "val_centre_ap_2m"} <= set(run.series)
    gids = {ax.get_gid() for ax in runs_figure([run]).axes}
    assert {"heatmap_loss", "regression_loss", "val_loss", "val_centre_ap_2m"} <= gids


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


def test_detection_pictures_draw_every_box_and_class():
    """The BEV picture draws each truth box solid and each prediction dashed (boxes outside the view are
    left out), and the AP chart a bar per class with the classes absent from the truth named so."""
    from matplotlib.patches import Polygon

    from pipeline.classes import DETECTION_CLASSES
    from trainer.plots import detection_ap_figure, detection_bev_figure

    rng = np.random.default_rng(0)
    xyz = rng.uniform(-40, 40, (500, 3))
    truth = {"centre": np.array([[5.0, 2, 0], [-10, 8, 0], [80, 0, 0]]), "size": np.array([[1.9, 4.5, 1.6]] * 3),
             "yaw": np.array([0.0, 1.0, 0.0]), "label": np.array([0, 5, 0])}
    predicted = {"centre": np.array([[5.5, 2, 0]]), "size": np.array([[1.8, 4.2, 1.5]]), "yaw": np.array([0.1]),
                 "label": np.array([0]), "score": np.array([0.7])}
    fig = detection_bev_figure(xyz, truth, predicted, DETECTION_CLASSES, "t")
    polygons = [p for p in fig.axes[0].patches if isinstance(p, Polygon)]
    assert sorted(p.get_linestyle() for p in polygons) == ["-", "-", "--"]  # the box at x = 80 m is out of view
    assert any(t.get_text() == "0.70" for t in fig.axes[0].texts)
    result = {"ap": {n: 0.0 for n in DETECTION_CLASSES} | {"car": 0.5, "pedestrian": 0.25},
              "present": ["car", "pedestrian"], "mAP": 0.075, "NDS": 0.2, "mAP_present": 0.375, "sweeps": 3}
    fig = detection_ap_figure(result)
    ax = fig.axes[0]
    assert len(ax.patches) == len(DETECTION_CLASSES)
    assert [t.get_text() for t in ax.texts].count("not in the val truth") == len(DETECTION_CLASSES) - 2
    assert {"50.0", "25.0"} <= {t.get_text() for t in ax.texts}
    assert any("mAP 37.5 over the 2 classes present" in t.get_text() for t in ax.get_legend().get_texts())

