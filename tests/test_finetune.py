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


def test_probe_standardises_a_random_backbone_and_keeps_it_frozen(small_store, tmp_path):
    """A random backbone's features are tiny; after calibration the probe sees each live channel with
    variance ~1 (not flattened by BatchNorm's eps), and probing changes neither backbone nor norm."""
    import torch

    from trainer.data import DataConfig, StoreDataset, collate
    from trainer.finetune import Segmenter, calibrate_norm
    from trainer.model import ModelConfig

    store = small_store[0].out
    torch.manual_seed(0)
    model = Segmenter(ModelConfig(arch="minkunet-tiny"))
    ds = StoreDataset(DataConfig(store=store, split="train", voxel_size=0.3, augment=False))
    calibrate_norm(model, ds, 0.3)
    model.eval()
    with torch.no_grad():
        f = torch.cat([model.point_features(collate([ds[i]], 0.3)) for i in range(len(ds))])
        out = model.norm(f)
    raw_var, out_var = f.var(0), out.var(0)
    live = raw_var > 1e-20
    assert live.sum() >= 8
    assert raw_var[live].median() < 1e-2  # the raw features are small ...
    assert ((out_var[live] > 0.8) & (out_var[live] < 1.25)).all()  # ... the probe's input is standardised
    # the probe trains the linear layer only
    from trainer.finetune import FinetuneConfig, finetune

    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"model": {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()},
                "model_config": {"arch": "minkunet-tiny"}}, tmp_path / "random.pt")
    finetune(store, str(tmp_path / "random.pt"), "minkunet-tiny",
             FinetuneConfig(out=str(tmp_path / "probe"), linear_probe=True, steps=3, lr=0.1), voxel_size=0.3,
             progress=False)
    after = torch.load(tmp_path / "probe" / "segmenter.pt", weights_only=True)["model"]
    for k, v in before.items():
        if k.startswith("backbone."):
            assert torch.equal(after[k], v), k
    assert after["classifier.weight"].abs().sum() > 0


def test_lovasz_softmax_equals_the_integral_form_of_the_lovasz_extension():
    """Lovasz extension of the Jaccard loss, computed independently: for errors m_i = |1{y_i = c} - p_ic|,
    f(m) = integral over t >= 0 of Delta({i : m_i > t}) dt, Delta(S) = 1 - |fg - S| / |fg + (S - fg)|
    (S: the points counted wrong); averaged over the classes present."""
    import numpy as np
    import torch

    from trainer.finetune import lovasz_softmax

    rng = np.random.default_rng(3)
    probs = torch.from_numpy(rng.dirichlet(np.ones(3), 7))
    target = torch.tensor([0, 0, 2, 2, 2, 0, 2])  # class 1 absent: not averaged

    def delta(wrong: np.ndarray, fg: np.ndarray) -> float:
        return 1.0 - (fg & ~wrong).sum() / (fg.sum() + (wrong & ~fg).sum())

    losses = []
    for c in (0, 2):
        fg = (target == c).numpy()
        m = np.abs(fg - probs[:, c].numpy())
        levels = np.concatenate([[0.0], np.sort(m)])
        # on (levels[j], levels[j+1]] the set {m_i > t} is fixed: {m_i >= levels[j+1]}
        losses.append(sum((levels[j + 1] - levels[j]) * delta(m >= levels[j + 1], fg) for j in range(len(m))))
    torch.testing.assert_close(lovasz_softmax(probs, target), torch.tensor(np.mean(losses), dtype=probs.dtype))
