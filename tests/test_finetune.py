"""cdtrain finetune / evaluate / rankme on the test store: the commands run end to end and report."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from trainer.batch import INPUT_SCALE
from trainer.cli import app

runner = CliRunner()


def _pretrain(store, out):
    from trainer.config import DataConfig, ModelConfig, TrainConfig
    from trainer.train import pretrain

    return pretrain(ModelConfig(arch="minkunet-tiny", feature_dim=384, head_hidden=32, occ_hidden=8),
                    DataConfig(store=store, voxel_size=0.3, max_queries=256),
                    TrainConfig(out=str(out), steps=2, warmup=1), progress=False)


@pytest.mark.slow
def test_probe_evaluate_and_rankme_from_a_pretraining_checkpoint(small_store, tmp_path):
    store = small_store[0].out
    pre = _pretrain(store, tmp_path / "pre")
    res = runner.invoke(app, ["finetune", "--store", store, "--out", str(tmp_path / "probe"), "--pretrained",
                              pre["checkpoint"], "--linear-probe", "--voxel-size", "0.3", "--labels-percent", "50",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "linear probe" in res.output and "mIoU" in res.output and "L-BFGS" in res.output
    result = json.loads((tmp_path / "probe" / "result.json").read_text())
    assert result["split"] == "val" and result["sweeps"] == 3 and math.isfinite(result["miou"])
    assert result["probe_fit"]["converged"] and len(result["label_scenes"]) == 1 and len(result["confusion"]) == 17
    assert result["classes"] and set(result["classes"]) <= set(result["iou"])
    # the segmenter file describes itself: evaluate needs neither --voxel-size nor --model
    ev = runner.invoke(app, ["evaluate", "--store", store, "--segmenter", str(tmp_path / "probe" / "segmenter.pt"),
                             "--out", str(tmp_path / "eval.json"), "--device", "cpu",
                             "--corruption", "sparser_sensor:2", "--corruption", "fog:0.05"])
    assert ev.exit_code == 0, ev.output
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["miou"] == result["miou"] and evaluated["voxel_size"] == 0.3
    assert set(evaluated["robustness"]) == {"sparser_sensor:2", "fog:0.05"}
    assert "resilience" in ev.output
    bad = runner.invoke(app, ["evaluate", "--store", store, "--checkpoint", str(tmp_path / "probe" / "segmenter.pt"),
                              "--corruption", "snow:1"])
    assert bad.exit_code != 0 and "snow" in bad.output
    rk = runner.invoke(app, ["rankme", "--store", store, "--pretrained", pre["checkpoint"], "--sweeps", "2"])
    assert rk.exit_code == 0 and "RankMe" in rk.output and "train sweeps" in rk.output


def test_evaluate_refuses_a_pretraining_checkpoint_in_one_line(small_store, tmp_path):
    store = small_store[0].out
    pre = _pretrain(store, tmp_path / "pre")
    res = runner.invoke(app, ["evaluate", "--store", store, "--checkpoint", pre["checkpoint"]])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "pretraining checkpoint" in res.output
    assert "cdtrain finetune --pretrained" in res.output and "Traceback" not in res.output
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    res = runner.invoke(app, ["evaluate", "--store", store, "--checkpoint", str(tmp_path / "junk.pt")])
    assert res.exit_code == 2 and "junk.pt" in res.output and "Traceback" not in res.output
    # a backbone of another size than --model: one line before any training
    res = runner.invoke(app, ["finetune", "--store", store, "--out", str(tmp_path / "ft"), "--checkpoint",
                              pre["checkpoint"], "--model", "minkunet-small", "--steps", "1"])
    assert res.exit_code == 2 and "holds a minkunet-tiny backbone, not minkunet-small" in res.output
    res = runner.invoke(app, ["rankme", "--store", store, "--checkpoint", str(tmp_path / "junk.pt")])
    assert res.exit_code == 2 and "junk.pt" in res.output and "Traceback" not in res.output


def test_finetune_from_random_init_is_the_baseline(small_store, tmp_path):
    """From scratch: no checkpoint is read, every weight trains, the loss falls, and the file it writes
    scores on its own what the run reported."""
    import torch

    from trainer.checkpoint import new_segmenter

    store = small_store[0].out
    res = runner.invoke(app, ["finetune", "--store", store, "--out", str(tmp_path / "ft"), "--model", "minkunet-tiny",
                              "--steps", "12", "--lr", "0.01", "--batch-size", "1", "--max-points", "4000",
                              "--voxel-size", "0.3", "--device", "cpu", "--warmup", "0", "--lovasz",
                              "--eval-every", "6"])
    assert res.exit_code == 0, res.output
    assert "random initialisation" in res.output
    curve = [json.loads(line) for line in (tmp_path / "ft" / "curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [6, 12] and all(math.isfinite(c["train_loss"]) for c in curve)
    assert curve[1]["train_loss"] < curve[0]["train_loss"] - 0.1, curve  # cross-entropy + Lovasz, from ~3.7
    result = json.loads((tmp_path / "ft" / "result.json").read_text())
    assert result["init"] == "random initialisation" and result["finetune_config"]["steps"] == 12
    assert result["miou"] == curve[-1]["val_miou"] and 0 < result["miou"] <= 1
    # the seeded initialisation it started from, and what training did to it
    start, _ = new_segmenter("minkunet-tiny", None, seed=0)
    trained = torch.load(tmp_path / "ft" / "segmenter.pt", weights_only=True)["model"]
    moved = [k for k, v in start.state_dict().items() if v.is_floating_point() and not torch.equal(trained[k], v)]
    assert "backbone.stem.weight" in moved and "classifier.weight" in moved
    ev = runner.invoke(app, ["evaluate", "--store", store, "--checkpoint", str(tmp_path / "ft" / "segmenter.pt"),
                             "--device", "cpu"])
    assert ev.exit_code == 0 and f"{100 * result['miou']:5.1f}" in ev.output


def test_finetune_resumes_where_it_stopped(small_store, tmp_path, monkeypatch):
    """A run killed after its step-2 checkpoint and resumed (`cdtrain finetune --resume RUN/segmenter.pt`, no
    other flag) ends with the weights of a straight run."""
    import torch

    import trainer.finetune as ft

    store = small_store[0].out

    def cfg(out):
        return ft.FinetuneConfig(out=str(out), steps=4, checkpoint_every=2, eval_every=3, warmup=0, batch_size=1,
                                 max_points=3000)

    ft.finetune(store, None, "minkunet-tiny", cfg(tmp_path / "straight"), voxel_size=0.3, progress=False)
    real, calls = ft.collate, []

    def dying_collate(*a, **k):
        calls.append(1)
        if len(calls) == 4:  # step 4, after the step-2 checkpoint and the step-3 curve row
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(ft, "collate", dying_collate)
    with pytest.raises(KeyboardInterrupt):
        ft.finetune(store, None, "minkunet-tiny", cfg(tmp_path / "resumed"), voxel_size=0.3, progress=False)
    monkeypatch.setattr(ft, "collate", real)
    assert torch.load(tmp_path / "resumed" / "segmenter.pt", weights_only=True)["step"] == 2
    with pytest.raises(ValueError, match=r"finetune_config.steps: 4 -> 5; pass --force-config"):
        ft.finetune(store, None, "minkunet-tiny", ft.FinetuneConfig(out=str(tmp_path / "resumed"), steps=5,
                                                                    checkpoint_every=2, eval_every=3, warmup=0,
                                                                    batch_size=1, max_points=3000),
                    voxel_size=0.3, progress=False, resume=True)
    # the file alone resumes: store, backbone, voxel size and settings come from it
    res = runner.invoke(app, ["finetune", "--resume", str(tmp_path / "resumed" / "segmenter.pt"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    a = torch.load(tmp_path / "straight" / "segmenter.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "segmenter.pt", weights_only=True)
    assert a["step"] == b["step"] == 4 and a["arch"] == "minkunet-tiny" and a["voxel_size"] == 0.3
    assert a["input_scale"] == list(INPUT_SCALE)  # what read_checkpoint checks is written
    assert len(a["classes"]) == 16 and a["head"].startswith("Linear(BatchNorm1d")
    for k, v in a["model"].items():
        torch.testing.assert_close(b["model"][k], v, msg=k)
    # the curve is the straight run's: the step-3 row written before the kill is not repeated
    curves = [[json.loads(line) for line in (tmp_path / d / "curve.jsonl").read_text().splitlines()]
              for d in ("straight", "resumed")]
    assert [r["step"] for r in curves[1]] == [r["step"] for r in curves[0]] == [3, 4]
    assert json.loads((tmp_path / "resumed" / "result.json").read_text())["config_changes"] == []
    for ra, rb in zip(*curves):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"]) and rb["val_miou"] == pytest.approx(ra["val_miou"])


def test_probe_standardises_a_random_backbone_and_keeps_it_frozen(small_store, tmp_path):
    """A random backbone's features are tiny; the probe fits on them standardised, and its head passes
    each live channel on with variance ~1 (not flattened by BatchNorm's eps); probing changes no
    backbone weight."""
    import torch

    from trainer.batch import collate
    from trainer.config import DataConfig, ProbeConfig
    from trainer.data import StoreDataset
    from trainer.model import Segmenter
    from trainer.probe import linear_probe

    store = small_store[0].out
    torch.manual_seed(0)
    model = Segmenter("minkunet-tiny", 16)
    torch.save({"model": {f"backbone.{k}": v for k, v in model.backbone.state_dict().items()},
                "model_config": {"arch": "minkunet-tiny"}}, tmp_path / "random.pt")
    result = linear_probe(store, str(tmp_path / "random.pt"), "minkunet-tiny",
                          ProbeConfig(out=str(tmp_path / "probe"), points_per_sweep=4000), voxel_size=0.3)
    assert result["probe_fit"]["converged"]
    after = torch.load(tmp_path / "probe" / "segmenter.pt", weights_only=True)
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(after["model"][k], v), k
    model.load_state_dict(after["model"])
    model.eval()
    ds = StoreDataset(DataConfig(store=store, split="train", voxel_size=0.3, augment=False))
    with torch.no_grad():
        batches = [collate([ds[i]], 0.3) for i in range(len(ds))]
        f = torch.cat([model.point_features(b)[b.labels > 0] for b in batches])  # the population the fit drew from
        out = model.norm(f)
    raw_var, out_var = f.var(0), out.var(0)
    live = raw_var > 1e-20
    assert live.sum() >= 8
    assert raw_var[live].median() < 1e-2  # the raw features are small ...
    assert ((out_var[live] > 0.8) & (out_var[live] < 1.25)).all()  # ... the probe's input is standardised
    assert after["model"]["classifier.weight"].abs().sum() > 0


def test_softmax_fit_matches_scikit_learn():
    """Equivalence: the L-BFGS probe and sklearn's multinomial logistic regression minimise the same
    objective (C = 1 / (l2 N) on standardised inputs), so their probabilities agree."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from trainer.probe import fit_softmax

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5)) * np.array([1e-4, 1.0, 10.0, 1.0, 3.0]) + 2.0
    y = 1 + (x[:, 1] + 0.1 * x[:, 2] + rng.normal(scale=0.5, size=600) > 2).astype(int) + 2 * (x[:, 4] > 8)
    probe = fit_softmax(x, y, num_classes=4, l2=1e-2, max_iter=2000, tol=1e-12)
    assert probe.converged
    z = StandardScaler().fit_transform(x)
    sk = LogisticRegression(C=1 / (1e-2 * len(x)), tol=1e-10, max_iter=10000).fit(z, y)
    ours = np.exp(probe.logits(x))
    ours /= ours.sum(1, keepdims=True)
    np.testing.assert_allclose(ours[:, np.unique(y) - 1], sk.predict_proba(z), atol=2e-4)


def test_distillation_gain_is_measured_against_the_mean_teacher_direction(small_store, tmp_path):
    """loss_mean is the cosine loss of the normalised mean of the train sweeps' normalised teacher
    features, recomputed here from the store with numpy."""
    import numpy as np
    import zarr

    from pipeline.store import read_sweep
    from trainer.evaluate import distillation_gain

    store = small_store[0].out
    pre = _pretrain(store, tmp_path / "pre")
    got = distillation_gain(store, pre["checkpoint"])
    g = zarr.open_group(store, mode="r")
    split_of = np.array([s["split"] for s in g.attrs["scenes"]])[g["scene_index"][:]]

    def unit_feats(s):
        n = int(g["num_points"][s])
        q = read_sweep(g, s, ("features",))["features"].astype(np.float64)[g["valid"][s, :n]]
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    m = sum(unit_feats(s).sum(0) for s in np.nonzero(split_of == "train")[0])
    m /= np.linalg.norm(m)
    val = np.concatenate([unit_feats(s) for s in np.nonzero(split_of == "val")[0]])
    assert got["points"] == len(val)
    assert abs(got["loss_mean_direction"] - (1 - val @ m).mean()) < 1e-6
    assert got["gain"] == pytest.approx(1 - got["loss"] / got["loss_mean_direction"])


def test_lovasz_softmax_equals_the_integral_form_of_the_lovasz_extension():
    """Lovasz extension of the Jaccard loss, computed independently: for errors m_i = |1{y_i = c} - p_ic|,
    f(m) = integral over t >= 0 of Delta({i : m_i > t}) dt, Delta(S) = 1 - |fg - S| / |fg + (S - fg)|
    (S: the points counted wrong); averaged over the classes present."""
    import numpy as np
    import torch

    from trainer.losses import lovasz_softmax

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


def test_label_sweeps_are_seeded_sized_and_from_train_only():
    """--labels-unit sweeps: round(percent x train sweeps) of them (at least one), drawn from the train scenes
    only, the same for the same table, percent and seed, and the scenes that hold them."""
    from trainer.splits import label_sweeps, scenes_of

    scenes, first = [], 0
    for i in range(11):  # SemanticKITTI's layout: scene 1 is the val sequence
        n = 30 + i
        scenes.append({"name": f"{i:02d}", "split": "val" if i == 1 else "train", "first_sweep": first,
                       "num_sweeps": n})
        first += n
    train_rows = {r for s in scenes if s["split"] == "train" for r in range(s["first_sweep"], s["first_sweep"] +
                                                                          s["num_sweeps"])}
    for pct, want in ((1, round(0.01 * len(train_rows))), (10, round(0.1 * len(train_rows))), (0.01, 1),
                      (100, len(train_rows))):
        rows = label_sweeps(scenes, pct, seed=3)
        assert rows == label_sweeps(scenes, pct, seed=3) == sorted(set(rows))  # stable, ascending, no repeats
        assert len(rows) == want and set(rows) <= train_rows, (pct, rows)
    assert label_sweeps(scenes, 10, seed=3) != label_sweeps(scenes, 10, seed=4)
    rows = label_sweeps(scenes, 1, seed=3)
    assert set(scenes_of(scenes, rows)) == {s["name"] for s in scenes
                                            if any(s["first_sweep"] <= r < s["first_sweep"] + s["num_sweeps"]
                                                   for r in rows)}
    with pytest.raises(ValueError, match="labels-percent"):
        label_sweeps(scenes, 0)
    # only among the store's complete sweeps: a failed or unwritten one is never drawn, nor counted
    complete = sorted(train_rows)[::2]
    rows = label_sweeps(scenes, 10, seed=3, complete=complete)
    assert set(rows) <= set(complete) and len(rows) == round(0.1 * len(complete))
    assert label_sweeps(scenes, 10, seed=3, complete=sorted(train_rows)) == label_sweeps(scenes, 10, seed=3)


def test_finetune_by_sweeps_trains_on_them_records_them_and_resumes_with_them(small_store, tmp_path, monkeypatch):
    """A run with labels_unit "sweeps" trains on exactly the drawn sweeps, records them in result.json and
    segmenter.pt; a resume draws the same ones, and one that would draw others is refused."""
    import torch

    import trainer.finetune as ft
    from pipeline.store import open_store
    from trainer.splits import label_sweeps

    store = small_store[0].out
    scenes = open_store(store).attrs["scenes"]
    cfg = ft.FinetuneConfig(out=str(tmp_path / "ft"), labels_percent=50, labels_unit="sweeps", steps=2, warmup=0,
                            batch_size=1, max_points=2000, checkpoint_every=1)
    seen = []
    real = ft.collate

    def spy(samples, *a, **k):
        seen.extend(int(s.sweep) for s in samples)
        return real(samples, *a, **k)

    monkeypatch.setattr(ft, "collate", spy)
    result = ft.finetune(store, None, "minkunet-tiny", cfg, voxel_size=0.3, progress=False)
    drawn = label_sweeps(scenes, 50, seed=0)
    train = sum(s["num_sweeps"] for s in scenes if s["split"] == "train")
    assert result["label_sweeps"] == drawn and len(drawn) == max(1, round(train / 2)) and set(seen) <= set(drawn)
    assert result["finetune_config"]["labels_unit"] == "sweeps"
    assert json.loads((tmp_path / "ft" / "result.json").read_text())["label_sweeps"] == drawn
    assert torch.load(tmp_path / "ft" / "segmenter.pt", weights_only=False)["label_sweeps"] == drawn
    again = ft.finetune(store, None, "minkunet-tiny", cfg, voxel_size=0.3, progress=False, resume=True)
    assert again["label_sweeps"] == drawn and again["config_changes"] == []
    every = [r for s in scenes if s["split"] == "train" for r in range(s["first_sweep"], s["first_sweep"] +
                                                                        s["num_sweeps"])]
    assert len(drawn) < len(every)
    monkeypatch.setattr(ft, "label_sweeps", lambda *a, **k: every)  # as if the draw had changed since
    with pytest.raises(ValueError, match="other labelled sweeps"):
        ft.finetune(store, None, "minkunet-tiny", cfg, voxel_size=0.3, progress=False, resume=True)


def test_labels_unit_refused_in_one_line():
    """A unit outside the choices, and sweeps for the linear probe, end in one line naming --labels-unit."""
    for args in (["--labels-unit", "scans"], ["--labels-unit", "sweeps", "--linear-probe"]):
        res = runner.invoke(app, ["finetune", "--store", "s.zarr", "--out", "o", *args])
        line = res.output.strip()
        assert res.exit_code == 2 and line.count("\n") == 0 and "--labels-unit" in line, (args, line)
