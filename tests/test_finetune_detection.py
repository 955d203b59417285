"""cdtrain finetune --task detection (trainer/finetune_detection.py): the command trains a detector from a
pretraining checkpoint and writes its file, curve and result; a resumed run ends where a straight one
does; the built-in centre-distance AP scores known cases as computed by hand."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trainer.cli import app
from trainer.config import DetectionConfig, FinetuneConfig
from trainer.finetune_detection import centre_distance_ap

runner = CliRunner()
# a coarse grid and a narrow trunk: the head is cheap on one CPU thread
SMALL = ["--cell-m", "1.6", "--voxel-size", "0.3", "--batch-size", "1", "--max-points", "3000", "--device", "cpu"]
SMALL_CFG = DetectionConfig(cell_m=1.6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
def test_finetune_detection_from_a_pretraining_checkpoint(small_store, tmp_path):
    """From a pretraining checkpoint: the detector file, the per-step curve with the val measures every
    --eval-every steps, and the result; the training loss falls; the file loads back as a Detector, and
    is refused as a segmenter in one line."""
    from tests.test_finetune import _pretrain
    from trainer.checkpoint import DETECTOR_KIND, load_detector, load_segmenter
    from trainer.detection import Detector

    store = small_store[0].out
    pre = _pretrain(store, tmp_path / "pre")
    out = tmp_path / "det"
    res = runner.invoke(app, ["finetune", "--task", "detection", "--store", store, "--out", str(out), "--pretrained",
                              pre["checkpoint"], "--steps", "24", "--lr", "0.01", "--warmup", "2", "--eval-every",
                              "12", "--trunk-channels", "16", *SMALL])
    assert res.exit_code == 0, res.output
    assert "centre-distance AP at 2 m (built-in)" in res.output and "not the devkit's mAP" in res.output
    curve = [json.loads(line) for line in (out / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == list(range(1, 25))
    assert [c["step"] for c in curve if "val_loss" in c] == [12, 24]
    first, last = np.mean([c["train_loss"] for c in curve[:4]]), np.mean([c["train_loss"] for c in curve[-4:]])
    assert last < first - 0.5, (first, last)
    result = json.loads((out / "result.json").read_text())
    assert result["init"] == pre["checkpoint"] and result["task"] == "detection" and result["sweeps"] == 3
    assert result["val_loss"] == curve[-1]["val_loss"] and math.isfinite(result["val_loss"])
    assert 0 <= result["centre_distance_ap_2m"] <= 1 and result["ap_per_class"]
    assert result["detection_config"]["cell_m"] == 1.6 and len(result["label_scenes"]) == 1
    assert result["detection_config"]["trunk_channels"] == 16
    model, record = load_detector(str(out / "detector.pt"))
    assert isinstance(model, Detector) and record["kind"] == DETECTOR_KIND and record["step"] == 24
    assert model.cfg == replace(SMALL_CFG, trunk_channels=16)
    assert record["voxel_size"] == 0.3 and record["arch"] == "minkunet-tiny"
    with pytest.raises(ValueError, match=r"is a detector .* not a segmenter") as e:
        load_segmenter(str(out / "detector.pt"))
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="is a pretraining checkpoint"):
        load_detector(pre["checkpoint"])
    bad = runner.invoke(app, ["evaluate", "--store", store, "--segmenter", str(out / "detector.pt")])
    assert bad.exit_code == 2 and "is a detector" in bad.output and bad.output.strip().count("\n") == 0


def test_detection_resume_ends_with_the_straight_runs_weights(small_store, tmp_path, monkeypatch):
    """A run killed after its step-2 checkpoint and resumed from its detector.pt alone ends with the
    weights and curve of a straight run; a detector file refuses --task segmentation and a segmenter
    file load_detector."""
    import trainer.finetune_detection as fd
    from trainer.checkpoint import load_detector

    store = small_store[0].out

    def cfg(out):
        return FinetuneConfig(out=str(out), steps=4, checkpoint_every=2, warmup=0, batch_size=1, max_points=2000)

    fd.finetune_detection(store, None, "minkunet-tiny", cfg(tmp_path / "straight"), SMALL_CFG, voxel_size=0.3,
                          progress=False)
    real, calls = fd.step_samples, []

    def dying(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # step 4, after the step-2 checkpoint and the step-3 curve row
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(fd, "step_samples", dying)
    with pytest.raises(KeyboardInterrupt):
        fd.finetune_detection(store, None, "minkunet-tiny", cfg(tmp_path / "resumed"), SMALL_CFG, voxel_size=0.3,
                              progress=False)
    monkeypatch.setattr(fd, "step_samples", real)
    path = tmp_path / "resumed" / "detector.pt"
    assert torch.load(path, weights_only=True)["step"] == 2
    bad = runner.invoke(app, ["finetune", "--resume", str(path), "--task", "segmentation"])
    assert bad.exit_code == 2 and "is a detection run" in bad.output
    res = runner.invoke(app, ["finetune", "--resume", str(path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    a = torch.load(tmp_path / "straight" / "detector.pt", weights_only=True)
    b = torch.load(path, weights_only=True)
    assert a["step"] == b["step"] == 4 and b["detection_config"]["cell_m"] == 1.6
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)
    curves = [[json.loads(line) for line in (tmp_path / d / "curve.jsonl").read_text().splitlines()]
              for d in ("straight", "resumed")]
    assert [r["step"] for r in curves[1]] == [r["step"] for r in curves[0]] == [1, 2, 3, 4]
    for ra, rb in zip(*curves):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"])
    assert json.loads((tmp_path / "resumed" / "result.json").read_text())["config_changes"] == []
    model, _ = load_detector(str(path))
    assert model.voxel_size == 0.3


CLASSES = ("car", "pedestrian")


def truth(*centres, label=0) -> dict:
    return {"centre": np.asarray(centres, np.float64).reshape(-1, 3), "label": np.full(len(centres), label)}


def predicted(centres, scores, label=0) -> dict:
    return {"centre": np.asarray(centres, np.float64).reshape(-1, 3), "label": np.full(len(centres), label),
            "score": np.asarray(scores, np.float64)}


def test_centre_distance_ap_of_truth_and_of_shifted_boxes():
    """Ground truth given as predictions scores 1.0; the same boxes shifted by 3 m (beyond the 2 m match)
    score 0.0; the mean is over the classes present only."""
    rng = np.random.default_rng(0)
    sweeps = [rng.uniform(-40, 40, (5, 3)) for _ in range(3)]
    truths = [truth(*c) for c in sweeps]
    exact = [predicted(c, rng.uniform(0.2, 1, len(c))) for c in sweeps]
    ap = centre_distance_ap(exact, truths, CLASSES)
    assert ap["ap"] == pytest.approx(1.0) and list(ap["per_class"]) == ["car"]
    shifted = [predicted(c + [3.0, 0, 0], rng.uniform(0.2, 1, len(c))) for c in sweeps]
    assert centre_distance_ap(shifted, truths, CLASSES)["ap"] == 0.0
    assert centre_distance_ap([predicted([], []) for _ in sweeps], truths, CLASSES)["ap"] == 0.0
    # the class of a prediction counts: a pedestrian on a car's centre matches nothing
    assert centre_distance_ap([predicted(c, np.ones(len(c)), label=1) for c in sweeps], truths, CLASSES) == {
        "ap": 0.0, "per_class": {"car": 0.0}}
    assert centre_distance_ap([], [], CLASSES)["ap"] is None


def test_centre_distance_ap_by_hand():
    """Two hand-made cases. (1) Four cars, two found first with precision 1, the others missed: precision
    is 1 up to recall 0.5 and 0 beyond, so AP = (recalls 0.11..0.50: 40 of the 90) x (1 - 0.1) / 0.9 = 4/9.
    (2) Two cars; by score: a false positive, then both: (recall, precision) = (0, 0), (0.5, 0.5), (1, 2/3);
    read linearly, p(r) = r up to 0.5 and 0.5 + (r - 0.5) / 3 beyond, so AP = [sum_{i=11..50} (i/100 - 0.1)
    + sum_{i=51..100} (0.4 + (i - 50)/300)] / 90 / 0.9 = (8.2 + 24.25) / 81. A prediction matches the
    closest free truth: two predictions near one car take it once."""
    cars = truth([0, 0, 0], [10, 0, 0], [20, 0, 0], [30, 0, 0])
    found = predicted([[0.5, 0, 0], [10, 1.5, 0]], [0.9, 0.8])
    assert centre_distance_ap([found], [cars], CLASSES)["ap"] == pytest.approx(4 / 9)
    two = truth([0, 0, 0], [10, 0, 0])
    ranked = predicted([[50, 50, 0], [0, 1, 0], [10, -1, 0]], [0.9, 0.8, 0.7])
    assert centre_distance_ap([ranked], [two], CLASSES)["ap"] == pytest.approx((8.2 + 24.25) / 81)
    # two sweeps: predictions match truths of their own sweep only, and a truth once
    twice = [predicted([[0, 0.5, 0], [0, -0.5, 0]], [0.9, 0.8]), predicted([], [])]
    ap = centre_distance_ap(twice, [truth([0, 0, 0]), truth([0, 0.5, 0])], CLASSES)["ap"]
    # (recall, precision) = (0.5, 1), (0.5, 0.5): p = 1 below recall 0.5, at 0.5 the last of the equal recalls'
    # (0.5), 0 beyond the last recall: AP = (39 x 0.9 + 0.4) / 81
    assert ap == pytest.approx(35.5 / 81)


@pytest.mark.parametrize("flag", ["--cell-m", "--score-threshold", "--trunk-channels"])
def test_detection_head_flags_are_refused_for_segmentation(flag, tmp_path):
    """The detection head's options given to a segmentation run: one line naming the flag, nothing run."""
    res = runner.invoke(app, ["finetune", "--store", str(tmp_path / "s.zarr"), "--out", str(tmp_path / "o"), flag, "2"])
    assert res.exit_code == 2 and f"{flag} is for --task detection" in res.output
    assert res.output.strip().count("\n") == 0 and not (tmp_path / "o").exists()


def test_detection_on_single_labelled_sweeps_records_them(small_store, tmp_path, monkeypatch):
    """--labels-unit sweeps reaches the detector too: it trains on the drawn sweeps and result.json names them;
    a resume that would draw other sweeps is refused, as for segmentation."""
    import trainer.finetune as ft
    from pipeline.store import open_store
    from trainer.finetune_detection import finetune_detection
    from trainer.splits import label_sweeps

    store = small_store[0].out
    cfg = FinetuneConfig(out=str(tmp_path / "det"), labels_percent=50, labels_unit="sweeps", steps=1, warmup=0,
                         batch_size=1, max_points=2000)
    result = finetune_detection(store, None, "minkunet-tiny", cfg, SMALL_CFG, voxel_size=0.3, progress=False)
    drawn = label_sweeps(open_store(store).attrs["scenes"], 50, 0)
    assert result["label_sweeps"] == drawn and result["finetune_config"]["labels_unit"] == "sweeps"
    assert json.loads((tmp_path / "det" / "result.json").read_text())["label_sweeps"] == drawn
    monkeypatch.setattr(ft, "label_sweeps", lambda *a, **k: drawn[:-1] or [drawn[0] + 1])
    with pytest.raises(ValueError, match="other labelled sweeps"):
        finetune_detection(store, None, "minkunet-tiny", cfg, SMALL_CFG, voxel_size=0.3, progress=False, resume=True)
