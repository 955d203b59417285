"""Checkpoints: resuming refuses changed settings in one line that names them (unless forced), and a file
trained on other point inputs is refused."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from trainer.batch import INPUT_SCALE
from trainer.checkpoint import check_resume, config_differences, read_checkpoint
from trainer.cli import app
from trainer.config import TrainConfig, field_defaults

runner = CliRunner()


def test_config_differences_name_each_field():
    then = {"train_config": {"lr": 0.002, "steps": 10, "out": "a"}, "model_config": {"arch": "minkunet-tiny"},
            "init": "random initialisation"}
    now = {"train_config": {"lr": 0.001, "steps": 10, "out": "b", "new_field": 3},
           "model_config": {"arch": "minkunet-tiny"}, "init": "pre.pt"}
    assert config_differences(then, now, ignore=("train_config.out",)) == [
        "train_config.lr: 0.002 -> 0.001", "init: 'random initialisation' -> 'pre.pt'"]
    # tuples (a fresh config) and lists (read back from a file) are the same value
    assert config_differences({"d": {"r": [0.3, 0.5]}}, {"d": {"r": (0.3, 0.5)}}) == []
    # a field added since the file was written had, in effect, its default then
    defaults = {"train_config": field_defaults(TrainConfig)}
    assert config_differences({"train_config": {}}, {"train_config": {"clip": 9.0}}, defaults=defaults) == [
        f"train_config.clip: {TrainConfig.clip!r} -> 9.0"]
    assert config_differences({"train_config": {}}, {"train_config": {"clip": TrainConfig.clip}},
                              defaults=defaults) == []


def test_check_resume_forces_only_what_may_be_forced():
    then = {"model_config": {"arch": "minkunet-tiny"}, "train_config": {"lr": 0.002}}
    same_model = {"model_config": {"arch": "minkunet-tiny"}, "train_config": {"lr": 0.001}}
    with pytest.raises(ValueError, match=r"train_config.lr: 0.002 -> 0.001; pass --force-config"):
        check_resume("ck.pt", then, same_model, force=False, forceable=("train_config",))
    assert check_resume("ck.pt", then, same_model, force=True, forceable=("train_config",)) == [
        "train_config.lr: 0.002 -> 0.001"]
    other_model = {"model_config": {"arch": "minkunet-small"}, "train_config": {"lr": 0.002}}
    with pytest.raises(ValueError, match="model_config.arch") as e:
        check_resume("ck.pt", then, other_model, force=True, forceable=("train_config",))
    assert "--force-config" not in str(e.value)


def test_pretrain_resume_refuses_a_changed_setting_and_forcing_reports_it(small_store, tmp_path):
    store, out = small_store[0].out, str(tmp_path / "run")
    args = ["pretrain", "--store", store, "--out", out, "--model", "minkunet-tiny", "--head-hidden", "32",
            "--voxel-size", "0.4", "--max-points", "4000", "--warmup", "1", "--checkpoint-every", "2"]
    first = runner.invoke(app, args + ["--steps", "2"])
    assert first.exit_code == 0, first.output
    ck = out + "/checkpoint.pt"
    res = runner.invoke(app, args + ["--steps", "3", "--lr", "0.001", "--resume", ck])
    assert res.exit_code == 2
    line = res.output.strip()
    assert line.count("\n") == 0 and line.startswith("error: --resume")
    assert "train_config.lr: 0.002 -> 0.001" in line and "train_config.steps: 2 -> 3" in line
    assert "--force-config" in line and read_checkpoint(out + "/checkpoint.pt")["step"] == 2
    assert read_checkpoint(out + "/checkpoint.pt")["input_scale"] == list(INPUT_SCALE)  # written, to be checked
    # where things go and how often: not a change of settings
    moved = runner.invoke(app, args + ["--steps", "2", "--resume", ck, "--checkpoint-every", "5", "--skip-bad-sweeps"])
    assert moved.exit_code == 0, moved.output
    alone = runner.invoke(app, ["pretrain", "--resume", ck])  # the checkpoint holds every setting
    assert alone.exit_code == 0 and "pretrained minkunet-tiny for 2 steps" in alone.output, alone.output
    elsewhere = runner.invoke(app, ["pretrain", "--resume", ck, "--out", str(tmp_path / "other")])
    assert elsewhere.exit_code == 2 and "continues the run in" in elsewhere.output
    forced = runner.invoke(app, args + ["--steps", "3", "--lr", "0.001", "--resume", ck, "--force-config"])
    assert forced.exit_code == 0, forced.output
    warning = "resumed with a changed setting (--force-config): train_config.lr: 0.002 -> 0.001"
    assert warning in forced.output
    assert forced.output.index(warning) < forced.output.index("pretrained minkunet-tiny")  # said before it runs
    assert read_checkpoint(out + "/checkpoint.pt")["step"] == 3
    # a different model is never forced: its weights would not fit
    res = runner.invoke(app, args + ["--head-hidden", "64", "--steps", "4", "--resume", ck, "--force-config"])
    assert res.exit_code == 2 and "model_config.head_hidden: 32 -> 64" in res.output
    res = runner.invoke(app, args + ["--steps", "2", "--force-config"])
    assert res.exit_code != 0 and "--force-config goes with --resume" in res.output


def test_a_checkpoint_of_other_point_inputs_is_refused(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {}, "input_scale": [100.0, 100.0, 10.0, 1.0]}, path)
    with pytest.raises(ValueError, match=r"divided by \(100.0, 100.0, 10.0, 1.0\)"):
        read_checkpoint(str(path))
    torch.save({"model": {}}, path)  # written before the field existed: today's scale
    assert read_checkpoint(str(path)) == {"model": {}}
