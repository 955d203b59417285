"""The console scripts: help lists the commands; bad input gets an error that names it."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from pipeline.cli import app as cdpipe
from trainer.cli import app as cdtrain

runner = CliRunner()


def test_help_lists_commands():
    out = runner.invoke(cdpipe, ["--help"]).output
    assert "synth" in out and "inspect" in out
    assert "info" in runner.invoke(cdtrain, ["--help"]).output


def test_bad_image_size_is_named(tmp_path):
    res = runner.invoke(cdpipe, ["synth", "--out", str(tmp_path / "x"), "--image-size", "800by450"])
    assert res.exit_code != 0 and "800by450" in res.output


def test_too_many_mini_scenes_refused(tmp_path):
    res = runner.invoke(cdpipe, ["synth", "--out", str(tmp_path / "x"), "--scenes", "11"])
    assert res.exit_code != 0 and "v1.0-mini" in res.output


def test_inspect_missing_version_names_folder(tmp_path):
    res = runner.invoke(cdpipe, ["inspect", str(tmp_path), "--version", "v1.0-mini"])
    assert res.exit_code == 2 and "v1.0-mini" in res.output


def test_inspect_reads_synth_dataroot(small_dataroot):
    cfg, summary = small_dataroot
    res = runner.invoke(cdpipe, ["inspect", cfg.out, "--version", cfg.version, "--json"])
    assert res.exit_code == 0, res.output
    import json

    seen = json.loads(res.output)
    for key in ("scenes", "keyframes", "images", "points_per_eval_class", "annotations", "points_per_sweep"):
        assert seen[key] == summary[key], key


def test_console_scripts_installed():
    """The scripts that the install put beside this Python (pyproject's [project.scripts]) run."""
    from pathlib import Path

    for script, command in (("cdpipe", "extract"), ("cdtrain", "pretrain")):
        path = Path(sys.executable).parent / script
        assert path.is_file(), f"{path} not installed: pip install -e '.[pipeline,train,dev]'"
        res = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "Usage" in res.stdout and command in res.stdout, res.stdout


def test_extract_refuses_without_weights(small_dataroot, tmp_path):
    cfg, _ = small_dataroot
    res = runner.invoke(cdpipe, ["extract", "--dataroot", cfg.out, "--out", str(tmp_path / "s.zarr")])
    assert res.exit_code != 0 and "--random-teacher" in res.output
    assert not (tmp_path / "s.zarr").exists()


def test_extract_bad_image_size_is_named(small_dataroot, tmp_path):
    cfg, _ = small_dataroot
    res = runner.invoke(cdpipe, ["extract", "--dataroot", cfg.out, "--out", str(tmp_path / "s.zarr"),
                                 "--random-teacher", "--image-size", "224"])
    assert res.exit_code != 0 and "224" in res.output


def test_store_summary_names_random_teacher(small_store):
    cfg, _ = small_store
    res = runner.invoke(cdpipe, ["store", cfg.out])
    assert res.exit_code == 0, res.output
    assert "RANDOM INITIALISATION" in res.output and "6 of 6 written" in res.output


def test_store_command_on_missing_store(tmp_path):
    res = runner.invoke(cdpipe, ["store", str(tmp_path / "nothing.zarr")])
    assert res.exit_code == 2 and "nothing.zarr" in res.output


def test_cli_defaults_are_the_configs_defaults():
    """The CLIs restate the config dataclasses' defaults (so that --help needs no torch); each option named
    like a config field (or mapped to one below) must have that field's default."""
    import typer.main

    from pipeline.extract import ExtractConfig
    from pipeline.occupancy import OccupancyGrid
    from pipeline.store import as_attribute
    from pipeline.teacher import TeacherConfig
    from trainer.checkpoint import field_defaults
    from trainer.data import DataConfig
    from trainer.finetune import FinetuneConfig
    from trainer.model import ModelConfig
    from trainer.probe import ProbeConfig
    from trainer.train import TrainConfig

    def defaults(*classes):
        out = {}
        for cls in classes:
            out.update(field_defaults(cls))
        return out

    grid, teacher = field_defaults(OccupancyGrid), field_defaults(TeacherConfig)
    expected = {
        # --mask-ratio has no fixed default: it follows --occ-weight
        (cdtrain, "pretrain"): defaults(DataConfig, ModelConfig, TrainConfig) | {"mask_ratio": None},
        (cdtrain, "finetune"): defaults(DataConfig, ProbeConfig, FinetuneConfig)
        | {"probe_points": ProbeConfig.points_per_sweep},
        (cdpipe, "extract"): defaults(ExtractConfig) | {
            "teacher": teacher["name"], "teacher_seed": teacher["seed"], "random_teacher": teacher["random"],
            "image_size": "x".join(map(str, teacher["image_size"])), "occ_voxel": grid["voxel_size"],
            "occ_free_ratio": grid["free_per_occupied"], "occ_near": grid["near_surface_m"]},
    }
    checked = 0
    for (app, name), want in expected.items():
        for param in typer.main.get_command(app).commands[name].params:
            if param.name in want:
                value, default = want[param.name], param.default
                assert as_attribute(default) == as_attribute(value), f"{name} --{param.name}: CLI {default!r}, " \
                                                                     f"config {value!r}"
                checked += 1
    assert checked >= 40, checked
