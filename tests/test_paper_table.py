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


def transfer_cfg(paper_table) -> dict:
    """The transfer part's settings for a seed whose segmentation part ran with the table's settings."""
    args = type("A", (), dict(transfer_samples_per_scene=20, transfer_image_size="621x188", transfer_steps_1pct=300,
                               transfer_steps_10pct=400))()
    seg = {"code_version": "abc", "world_version": 3, "teacher": "tools/teachers/semantic.safetensors",
           "teacher_size": "224x448", "arch": "minkunet-tiny", "voxel_size": 0.1, "max_points": 8000,
           "finetune_batch": 2, "finetune_lr": 2e-3, "finetune_warmup": 10, "lovasz": True, "finetune_evals": 4}
    return paper_table.transfer_settings(args, seg)


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
    assert "**Interim: 3 of the 8 seeds planned.**" in text
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


def test_transfer_columns_pair_rows_by_seed_and_refuse_mixed_settings(paper_table, tmp_path):
    """The transfer part's files (transfer_seed_K.json) give their own section: means, the paired differences
    MLP - random, MLP+occ - random and MLP+occ - MLP with both intervals, the plateau; files of two settings are
    refused."""
    cfg = transfer_cfg(paper_table)
    assert cfg["lr"] == 2e-3 and cfg["labels_unit"] == "sweeps" and cfg["scenes"] == 11
    assert paper_table.load_seeds(str(tmp_path), "transfer_seed_") == []
    for k in range(3):
        rows, details = {}, {}
        for i, name in enumerate(paper_table.TRANSFER_ROWS):
            rows[name] = {"kitti_1pct": 0.1 + 0.01 * k + 0.03 * i, "kitti_10pct": 0.2 + 0.05 * k}
            details[name] = {"last_quarter_rise": {"kitti_1pct": 0.1, "kitti_10pct": 0.8 * i},
                             "seconds": {"kitti_1pct": 300.0, "kitti_10pct": 400.0}}
        (tmp_path / f"transfer_seed_{k}.json").write_text(json.dumps(
            {"seed": k, "rows": rows, "settings": cfg, "details": details, "classes": ["car", "road"],
             "labels": {"kitti_1pct": {"sweeps": 2, "of_train_sweeps": 200},
                        "kitti_10pct": {"sweeps": 20, "of_train_sweeps": 200}},
             "world": {"sweeps": 220, "train_sweeps": 200, "val_sweeps": 20}, "seconds_all_parts": 2400.0,
             "threads": 1}))
    text = "\n".join(paper_table.transfer_section(str(tmp_path)))
    assert "## Transfer to SemanticKITTI" in text and "3 paired seeds (0, 1, 2)" in text
    assert "**Interim: 3 of the 8 seeds planned.**" in text
    assert "segmentation code version abc" in text and f"transfer code version {cfg['code_version']}" in text
    assert "| random init | 11.0 ± 1.0 | 25.0 ± 5.0 |" in text
    line = next(x for x in text.splitlines()
                if x.startswith("| MLP head + occupancy - 3-layer MLP head | SemanticKITTI 1% scans mIoU"))
    assert "| +3.0 | [+3.0, +3.0] | [+3.0, +3.0] | 3/3 |" in line
    line = next(x for x in text.splitlines()
                if x.startswith("| MLP head + occupancy - random init | SemanticKITTI 1% scans mIoU"))
    assert "| +6.0 |" in line
    assert "seed 0 MLP head + occupancy +1.6" in text and "40 min" in text and "2 and 20 of its train scans" in text
    assert "## Transfer to SemanticKITTI" not in "\n".join(paper_table.detection_section(str(tmp_path)))
    other = json.loads((tmp_path / "transfer_seed_2.json").read_text())
    other["settings"]["steps"]["kitti_10pct"] = 500
    (tmp_path / "transfer_seed_2.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="steps"):
        paper_table.transfer_section(str(tmp_path))


def test_transfer_refuses_a_seed_without_finished_pretraining(paper_table, tmp_path):
    """`transfer --seed K` needs the seed's segmentation part: no settings.json, or a row's pretraining
    checkpoint missing, is refused in one line naming what to run."""
    args = type("A", (), dict(work=str(tmp_path), seed=4, threads=1, results=str(tmp_path / "results"),
                               transfer_samples_per_scene=2, transfer_image_size="621x188", transfer_steps_1pct=4,
                               transfer_steps_10pct=4))()
    with pytest.raises(SystemExit, match=r"has no segmentation part yet: run .* run --seed 4"):
        paper_table.run_transfer_seed(args)
    (tmp_path / "seed_4").mkdir()
    (tmp_path / "seed_4" / "settings.json").write_text(json.dumps({"pretrain_steps": 300}))
    with pytest.raises(SystemExit, match=r"3-layer/pretrain/checkpoint.pt: the 3-layer MLP head row's pretraining is "
                                         r"not finished: run .* run --seed 4"):
        paper_table.run_transfer_seed(args)
    assert not (tmp_path / "seed_4" / "transfer").exists()  # refused before any world is built


def test_transfer_world_is_other_streets_than_the_pretraining_world(paper_table, tmp_path, monkeypatch):
    """The generator seeds each street from (seed, scene): the SemanticKITTI world of seed K is made from
    seed K + TRANSFER_WORLD_OFFSET, so the transfer meets streets the backbone was not pretrained on."""
    calls = []
    monkeypatch.setattr(paper_table, "_run", lambda cmd, log: calls.append(cmd))
    cfg = transfer_cfg(paper_table)
    assert cfg["world_seed_offset"] == paper_table.TRANSFER_WORLD_OFFSET > 1000
    paper_table.kitti_world(str(tmp_path / "transfer"), 3, cfg)
    synth = next(c for c in calls if "synth" in c)
    assert synth[synth.index("--seed") + 1] == str(3 + paper_table.TRANSFER_WORLD_OFFSET)


def test_a_seed_resumes_with_settings_that_hold_tuples_and_refuses_changed_ones(paper_table, tmp_path):
    # The detection settings hold tuples (the BEV ranges); they read back from settings.json as lists, and
    # a rerun with the same arguments must resume, not call them changed.
    cfg = {"steps": 300, "detection_config": {"x_range": (-51.2, 51.2), "classes": ("car", "truck")}}
    paper_table.same_settings(str(tmp_path / "det"), cfg)
    paper_table.same_settings(str(tmp_path / "det"), cfg)
    with pytest.raises(SystemExit, match=r"other settings \(detection_config\)"):
        paper_table.same_settings(str(tmp_path / "det"), {**cfg, "detection_config": {"x_range": (-40.0, 40.0)}})


def test_detection_rows_must_label_the_scenes_segmentation_labelled(paper_table, tmp_path):
    work = tmp_path / "seed_0"
    (work / "random").mkdir(parents=True)
    (work / "random" / "ft_1scene.json").write_text(json.dumps({"label_scenes": ["scene-0003"]}))
    # the 25% segmentation run has not finished: only the 1-scene budget is compared
    paper_table.same_det_scenes(0, str(work), "linear head", {"det_1scene": ["scene-0003"], "det_25pct": ["x"]})
    with pytest.raises(SystemExit, match=r"linear head row's detection at det_1scene labelled \['scene-0007'\]"):
        paper_table.same_det_scenes(0, str(work), "linear head",
                                    {"det_1scene": ["scene-0007"], "det_25pct": ["x"]})


def test_a_rerun_of_a_finished_seed_leaves_its_result_file_as_it_was(paper_table, tmp_path):
    path = tmp_path / "results" / "seed_3.json"
    paper_table.write_result(str(path), {"seed": 3, "rows": {"a": 0.5}, "seconds_this_sitting": 3600.0})
    first = path.read_text()
    paper_table.write_result(str(path), {"seed": 3, "rows": {"a": 0.5}, "seconds_this_sitting": 0.4})
    assert path.read_text() == first
    paper_table.write_result(str(path), {"seed": 3, "rows": {"a": 0.5}, "seconds_this_sitting": 0.4, "threads": 2})
    assert path.read_text() == first  # how a finished seed is rerun is not a change of its result
    paper_table.write_result(str(path), {"seed": 3, "rows": {"a": 0.6}, "seconds_this_sitting": 0.4})
    assert json.loads(path.read_text())["rows"] == {"a": 0.6}
    path.write_text('{"seed": 3, "rows": {"a"')  # cut short by a kill (before writes went through a temp file)
    paper_table.write_result(str(path), {"seed": 3, "rows": {"a": 0.6}, "seconds_this_sitting": 0.4})
    assert json.loads(path.read_text())["rows"] == {"a": 0.6} and not os.path.exists(str(path) + ".tmp")


def test_a_part_killed_and_resumed_counts_the_time_of_both_sittings(paper_table, tmp_path, monkeypatch):
    monkeypatch.setattr(paper_table, "HEARTBEAT_S", 0.05)
    path = str(tmp_path / "seed_0" / "random" / "ft_1scene.json")

    def killed():
        import time
        time.sleep(0.3)
        raise KeyboardInterrupt  # as a kill would stop it: nothing written but the sittings' file

    with pytest.raises(KeyboardInterrupt):
        paper_table.part(path, killed)
    first = json.loads((tmp_path / "seed_0" / "random" / "ft_1scene.json.sittings").read_text())
    assert len(first) == 1 and first[0][1] - first[0][0] >= 0.2 and not os.path.exists(path)
    value = paper_table.part(path, lambda: {"miou": 0.5})
    assert value["sittings"] == 2 and value["seconds"] >= 0.2 and value["miou"] == 0.5
    assert json.loads(open(path).read()) == value and not os.path.exists(path + ".sittings")
    assert paper_table.part(path, lambda: pytest.fail("a finished part is read, not run again")) == value
    open(path + ".sittings", "w").write("[[0, 1]]")  # as a kill between the part's two writes leaves it
    assert paper_table.part(path, lambda: pytest.fail("not run again")) == value
    assert not os.path.exists(path + ".sittings")


def test_status_says_per_seed_which_parts_are_finished_under_way_or_not_started(paper_table, tmp_path):
    import time

    work, results = tmp_path / "work", tmp_path / "results"
    results.mkdir()
    (results / "seed_0.json").write_text(json.dumps({"seconds_all_parts": 4800.0}))  # no work folder left
    det = work / "seed_0" / "detection"
    (det / "random").mkdir(parents=True)
    (det / "settings.json").write_text("{}")
    (det / "parts").mkdir()
    (det / "parts" / "store.json").write_text(json.dumps({"seconds": 60.0}))
    (det / "random" / "det_1scene.json").write_text(json.dumps({"seconds": 540.0}))
    (det / "random" / "det_1scene.json.sittings").write_text(json.dumps([[0, 999]]))  # stale: its part finished
    now = time.time()
    (det / "random" / "det_25pct.json.sittings").write_text(json.dumps([[0, 240], [now - 60, now - 1]]))
    # seed 3: segmentation under way, one step stopped by a kill, pretraining logged with a line cut short
    seg = work / "seed_3"
    (seg / "parts").mkdir(parents=True)
    (seg / "settings.json").write_text("{}")
    (seg / "parts" / "world.json").write_text(json.dumps({"seconds": 600.0}))
    (seg / "linear" / "pretrain").mkdir(parents=True)
    (seg / "linear" / "pretrain" / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "data_s": 100.0, "step_s": 200.0}) + "\n" + '{"step": 2, "data_s": 1')
    os.utime(seg / "linear" / "pretrain" / "metrics.jsonl", (now - 4000, now - 4000))  # a killed pretraining
    (seg / "linear" / "probe.json.sittings").write_text(json.dumps([[now - 4000, now - 3700]]))
    (seg / "mlp" / "pretrain").mkdir(parents=True)  # a pretraining logging now: running
    (seg / "mlp" / "pretrain" / "metrics.jsonl").write_text(json.dumps({"step": 1, "data_s": 0.0, "step_s": 0.0}))
    (seg / "occ" / "pretrain").mkdir(parents=True)  # a pretraining that just finished: its next step runs
    (seg / "occ" / "pretrain" / "metrics.jsonl").write_text(json.dumps({"step": 1, "data_s": 0.0, "step_s": 0.0}))
    os.utime(seg / "occ" / "pretrain" / "metrics.jsonl", (now - 30, now - 30))
    (seg / "occ" / "probe.json.sittings").write_text(json.dumps([[now - 20, now - 20]]))
    (seg / "detection" / "random").mkdir(parents=True)  # a part of its own, not counted here
    (seg / "detection" / "random" / "det_1scene.json").write_text(json.dumps({"seconds": 6000.0}))
    (work / "seed_5").mkdir()
    (work / "seed_900").mkdir()  # the occupancy weight sweep's seed is not an ablation seed
    lines = paper_table.status(str(work), str(results))
    assert lines[0] == ("seed 0: segmentation finished (80 min); detection under way (2 steps finished, 1 running, "
                        "0 stopped; 15 min so far); transfer not started")
    assert lines[1] == ("seed 3: segmentation under way (1 steps finished, 2 running, 1 stopped; 20 min so far); "
                        "detection not started; transfer not started")
    assert lines[2] == "seed 5: segmentation not started; detection not started; transfer not started"
    assert lines[3] == ("a finished part took on average: segmentation 80 min over 1 seed(s); detection none "
                        "finished yet; transfer none finished yet")
    assert paper_table.status(str(tmp_path / "nowhere"), str(results))[0].startswith("no seed started")


def test_one_seed_gives_a_difference_but_no_interval(paper_table):
    one = [{"seed": 0, "rows": {"linear head": {"det_25pct_map": 0.093}, "random init": {"det_25pct_map": 0.059}}}]
    assert paper_table.difference_cells(one, "linear head", "random init", "det_25pct_map") == "+3.4 | - | - | 1/1"
    two = one + [{"seed": 1, "rows": {"linear head": {"det_25pct_map": 0.05}, "random init": {"det_25pct_map": 0.06}}}]
    cells = paper_table.difference_cells(two, "linear head", "random init", "det_25pct_map").split(" | ")
    assert cells[0] == "+1.2" and cells[3] == "1/2" and "nan" not in cells[2]


def test_a_difference_reads_by_its_t_interval(paper_table):
    assert paper_table.reading(np.array([1.0, 1.1, 0.9])) == "holds"
    assert paper_table.reading(np.array([-1.0, -1.2, -0.8])) == "reversed"
    assert paper_table.reading(np.array([1.0, -1.0, 0.5])) == "undecided"
    assert paper_table.reading(np.array([3.0])) == "one seed"
    assert paper_table.claim_verdict(["holds", "holds"]) == "reproduced"
    assert paper_table.claim_verdict(["reversed", "reversed"]) == "not reproduced (the opposite holds)"
    assert paper_table.claim_verdict(["undecided", "undecided"]) == "undecided at this size"
    assert paper_table.claim_verdict(["holds", "undecided"]) == "partly reproduced"
    assert paper_table.claim_verdict(["holds", "reversed"]) == "mixed (some hold, some are reversed)"
    assert paper_table.claim_verdict(["reversed", "undecided"]).startswith("not reproduced (reversed on some")
    assert paper_table.claim_verdict([]) == "not measured yet"


def _claim_seed_files(tmp_path, n: int) -> None:
    """Segmentation seed files only: MLP beats random init by 5 +- 0.5 points in every probe column and at one
    scene, ties it at 25%; the linear head beats the MLP head by 2 +- 0.2; occupancy is noise around 0."""
    rng = np.random.default_rng(0)
    for k in range(n):
        base = 0.1 + 0.02 * k
        e = rng.normal(0.0, 0.005, 8)
        rows = {
            "random init": {"probe": base, "probe_raw": base, "ft_1scene": base, "ft_25pct": base + 0.1,
                            "rankme": 10.0},
            "3-layer MLP head": {"probe": base + 0.05 + e[0], "probe_raw": base + 0.05 + e[1],
                                 "ft_1scene": base + 0.05 + e[2], "ft_25pct": base + 0.1 + 0.02 * (-1) ** k,
                                 "rankme": 8.0 + e[3]},
            "gbdt: raw point inputs": {"probe": base + 0.03},
        }
        rows["linear head"] = {c: v + 0.02 + e[4] / 10 for c, v in rows["3-layer MLP head"].items()}
        rows["MLP head + occupancy"] = {c: v + 0.01 * (-1) ** k for c, v in rows["3-layer MLP head"].items()}
        (tmp_path / f"seed_{k}.json").write_text(json.dumps(
            {"seed": k, "rows": rows, "settings": {"code_version": "abc"}, "occ_weight": 0.1}))


def test_the_claims_section_reads_each_claim_off_its_paired_intervals(paper_table, tmp_path):
    """One sentence per claim of the paper: reproduced when every comparison's t interval lies above 0, not
    reproduced when every one lies below, undecided when none clears 0, partly when some do; a part without
    seed files is named as not measured; fewer than 8 seeds make every verdict interim."""
    _claim_seed_files(tmp_path, 4)
    lines = paper_table.claims_section(str(tmp_path))
    claims = [x for x in lines if x.startswith("- **")]
    assert len(claims) == len(paper_table.CLAIMS) == 6
    semantics, low_label, mlp, occupancy, detection, transfer = claims
    assert semantics.startswith("- **Interim, reproduced**") and "4/4 (holds)" in semantics
    assert "3-layer MLP head - random init, linear probe mIoU: +5.0 [" in semantics
    assert low_label.startswith("- **Interim, partly reproduced**") and "fine-tune 25% mIoU: +0.0" in low_label
    assert mlp.startswith("- **Interim, not reproduced (the opposite holds)**") and "0/4 (reversed)" in mlp
    assert "Not measured yet: the detection part's comparisons" in mlp
    assert occupancy.startswith("- **Interim, undecided at this size**") and "2/4 (undecided)" in occupancy
    assert detection.startswith("- **Not measured yet**") and transfer.startswith("- **Not measured yet**")
    assert "Seeds per part: segmentation 4." in "\n".join(lines)
    _claim_seed_files(tmp_path, 8)
    claims = [x for x in paper_table.claims_section(str(tmp_path)) if x.startswith("- **")]
    assert claims[0].startswith("- **Reproduced**") and "8/8 (holds)" in claims[0]
