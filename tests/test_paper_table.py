"""benchmarks/paper_table.py: the table is built from per-seed files, with paired bootstrap intervals."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def paper_table(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("paper_table", os.path.join(ROOT, "benchmarks", "paper_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", str(tmp_path))
    return module


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_agreement(paper_table):
    d = np.array([1.0, 2.0, 3.0, 2.0, 1.5, 2.5])
    lo, hi = paper_table.bootstrap_ci(d)
    assert lo < d.mean() < hi and lo > 1.0 and hi < 3.0
    lo2, hi2 = paper_table.bootstrap_ci(np.full(6, 2.0))
    assert lo2 == hi2 == 2.0


def test_table_from_seed_files_pairs_rows_by_seed(paper_table, tmp_path):
    """Rows that differ by exactly +1 mIoU on every seed show +1.0 with a [+1.0, +1.0] interval, even
    though their spread across seeds is large (pairing removes the world-to-world variation)."""
    class Args:
        results = str(tmp_path)

    settings = dict(paper_table.settings(type("A", (), dict(
        scenes=48, samples_per_scene=2, image_size="400x225", arch="minkunet-tiny", head_hidden=256,
        max_points=10000, pretrain_steps=300, ft_steps_1scene=200, ft_steps_25=300, ft_lr=2e-3))()))
    for k in range(6):
        base = 0.2 + 0.05 * k  # worlds differ a lot
        rows = {name: {"probe": base - 0.05} for name in paper_table.FLOORS}
        for i, name in enumerate(paper_table.ROWS):
            rows[name] = {"probe": base + 0.01 * i, "probe_raw": base + 0.02 * i, "rankme": 10.0 + i}
            if name in paper_table.FINETUNED:
                rows[name].update(ft_1scene=base, ft_25pct=base + 0.1 + 0.01 * i)
        labels = {"ft_1scene": {"scenes": 1, "of_train_scenes": 40, "percent_of_train_sweeps": 2.5},
                  "ft_25pct": {"scenes": 10, "of_train_scenes": 40, "percent_of_train_sweeps": 25.0}}
        (tmp_path / f"seed_{k}.json").write_text(json.dumps({
            "seed": k, "rows": rows, "classes": ["car", "driveable_surface"], "labels": labels, "occ_weight": 0.3,
            "settings": settings, "world": {"sweeps": 96, "scenes": 48, "val_scenes": 8},
            "details": {name: {"last_quarter_rise": {"ft_1scene": 0.1 * k, "ft_25pct": 0.2},
                               "probe_fit": {"converged": True}, "fit_points": {"probe": 160000}}
                        for name in paper_table.FINETUNED},
            "seconds_all_parts": 1800.0, "threads": 1}))
    text = paper_table.make_table(Args())
    assert "6 paired seeds" in text and "Interim: 6 of the 8 seeds" in text
    assert f"code version {settings['code_version']}" in text
    line = next(x for x in text.splitlines() if x.startswith("| linear head - random init | linear probe"))
    assert "| +1.0 | [+1.0, +1.0] | [+1.0, +1.0] | 6/6 |" in line
    # the wide rows are paired with each other only; the linear head is not fine-tuned
    assert any(x.startswith("| 3-layer MLP head (wide) - random init (wide) | linear probe") for x in text.splitlines())
    assert not any(x.startswith("| linear head - random init | fine-tune") for x in text.splitlines())
    # plateau: seeds 5 (0.5) rise by PLATEAU_RISE or more at one scene, for each fine-tuned row
    assert "still rising by 0.5 or more: seed 5 random init +0.5" in text
    assert "| logreg: raw point inputs |" in text and "| gbdt: raw point inputs |" in text and "30 min" in text
    assert "3 of 3" not in text and "18 of 18 converged" in text


def test_detection_columns_pair_rows_by_seed_and_refuse_mixed_settings(paper_table, tmp_path):
    """The detection part's files (detection_seed_K.json) give their own section: means, paired differences
    with both intervals, the devkit's AP per class present; files of two settings are refused."""
    class Args:
        results = str(tmp_path)

    args = type("A", (), dict(det_steps_1scene=300, det_steps_25=600, det_lr=2e-3, det_max_points=8000,
                               det_trunk_channels=32))()
    cfg = paper_table.det_settings(args, {"code_version": "abc", "arch": "minkunet-tiny", "voxel_size": 0.1})
    assert paper_table.load_seeds(str(tmp_path), "detection_seed_") == []
    for k in range(3):
        rows, details = {}, {}
        for i, name in enumerate(paper_table.DET_ROWS):
            rows[name] = {"det_1scene_map": 0.01 * k, "det_1scene_nds": 0.05, "det_25pct_map": 0.01 * k + 0.02 * i,
                          "det_25pct_nds": 0.1}
            run = {"ap": {"car": 0.1 * i, "pedestrian": 0.2}, "present": ["car", "pedestrian"],
                   "curve": [{"step": 150, "val_centre_ap_2m": 0.0}, {"step": 600, "val_centre_ap_2m": 0.02 * i}],
                   "seconds": 60.0}
            details[name] = {"det_1scene": run, "det_25pct": run}
        (tmp_path / f"detection_seed_{k}.json").write_text(json.dumps(
            {"seed": k, "rows": rows, "settings": cfg, "details": details, "seconds_all_parts": 480.0, "threads": 1}))
    text = "\n".join(paper_table.detection_section(str(tmp_path)))
    assert "## 3D object detection" in text and "3 paired seeds (0, 1, 2)" in text
    assert "segmentation code version abc" in text and f"detection code version {cfg['code_version']}" in text
    line = next(x for x in text.splitlines() if x.startswith("| 3-layer MLP head - random init | detection 25% mAP"))
    assert "| +4.0 | [+4.0, +4.0] | [+4.0, +4.0] | 3/3 |" in line
    assert "| car | pedestrian |" in text and "| random init, 25% | 0.0 | 20.0 |" in text
    assert "seed 0 3-layer MLP head det_25pct +4.0" in text and "8 min" in text
    other = json.loads((tmp_path / "detection_seed_2.json").read_text())
    other["settings"]["lr"] = 1e-3
    (tmp_path / "detection_seed_2.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="lr"):
        paper_table.detection_section(str(tmp_path))
