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
