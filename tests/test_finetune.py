"""cdtrain finetune / evaluate / rankme on the test store: the commands run end to end and report."""

from __future__ import annotations

import json
import math

from typer.testing import CliRunner

from trainer.cli import app

runner = CliRunner()


def test_probe_evaluate_and_rankme_from_a_pretraining_checkpoint(small_store, tmp_path):
    from trainer.data import DataConfig
    from trainer.model import ModelConfig
    from trainer.train import TrainConfig, pretrain

    store = small_store[0].out
    pre = pretrain(ModelConfig(arch="minkunet-tiny", feature_dim=384, head_hidden=32, occ_hidden=8),
                   DataConfig(store=store, voxel_size=0.3, max_queries=256),
                   TrainConfig(out=str(tmp_path / "pre"), steps=2, warmup=1), progress=False)
    res = runner.invoke(app, ["finetune", "--store", store, "--out", str(tmp_path / "probe"), "--checkpoint",
                              pre["checkpoint"], "--linear-probe", "--steps", "3", "--voxel-size", "0.3",
                              "--labels-percent", "50"])
    assert res.exit_code == 0, res.output
    assert "linear probe" in res.output and "mIoU" in res.output
    result = json.loads((tmp_path / "probe" / "result.json").read_text())
    assert result["split"] == "val" and result["sweeps"] == 3 and math.isfinite(result["miou"])
    assert len(result["label_scenes"]) == 1 and len(result["confusion"]) == 17
    ev = runner.invoke(app, ["evaluate", "--store", store, "--checkpoint", str(tmp_path / "probe" / "segmenter.pt"),
                             "--voxel-size", "0.3", "--out", str(tmp_path / "eval.json"),
                             "--corruption", "sparser_sensor:2", "--corruption", "fog:0.05"])
    assert ev.exit_code == 0, ev.output
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["miou"] == result["miou"]
    assert set(evaluated["robustness"]) == {"sparser_sensor:2", "fog:0.05"}
    assert "resilience" in ev.output
    bad = runner.invoke(app, ["evaluate", "--store", store, "--checkpoint", str(tmp_path / "probe" / "segmenter.pt"),
                              "--corruption", "snow:1"])
    assert bad.exit_code != 0 and "snow" in bad.output
    rk = runner.invoke(app, ["rankme", "--store", store, "--checkpoint", pre["checkpoint"], "--sweeps", "2"])
    assert rk.exit_code == 0 and "RankMe" in rk.output


def test_finetune_from_random_init_is_the_baseline(small_store, tmp_path):
    res = runner.invoke(app, ["finetune", "--store", small_store[0].out, "--out", str(tmp_path / "ft"),
                              "--model", "minkunet-tiny", "--steps", "2", "--voxel-size", "0.3"])
    assert res.exit_code == 0, res.output
    assert "random initialisation" in res.output
