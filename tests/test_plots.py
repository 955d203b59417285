"""Pictures: the store preview (both layouts, by path and by URL), training curves, evaluation charts, the
ablation figure, and TensorBoard scalars beside metrics.jsonl. Each PNG is checked for its size and for
not being blank; the preview's colours are checked against a PCA computed here, with scikit-learn, from
features read with plain zarr."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import zarr
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli import app as cdpipe
from trainer.cli import app as cdtrain

runner = CliRunner()


def png_checked(path, size: tuple[int, int]) -> np.ndarray:
    """The PNG at ``path`` as RGB, after checking it exists, has ``size`` (width, height) and is not blank."""
    assert os.path.isfile(path), path
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == size, (im.format, im.size)
        rgb = np.asarray(im.convert("RGB"), np.float64)
    assert rgb.std() > 20, f"{path} is nearly blank (pixel std {rgb.std():.1f})"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 8, f"{path} has almost no colours"
    return rgb


def plain_zarr_features(path: str, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Sweep ``s``'s per-point features and valid flags read with zarr and numpy only, by the recipes of
    storage_schema.md (float16 stores), not through pipeline.store."""
    g = zarr.open_group(path, mode="r")
    n = int(g["num_points"][s])
    valid = g["valid"][s, :n]
    if g.attrs["layout"] == "points":
        return g["features"][s, :n], valid
    maps = g["patches"][s].astype(np.float32)
    c, h, w, d = maps.shape
    cam, uv = np.maximum(g["camera"][s, :n], 0).astype(np.int64), g["pixel"][s, :n]
    h0, w0 = np.maximum(g["camera_hw"][s][cam], 1).T
    x = np.clip(uv[:, 0] * w / w0 - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * h / h0 - 0.5, 0, h - 1)
    x0, y0 = np.minimum(np.floor(x), w - 2), np.minimum(np.floor(y), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    cells = maps.reshape(c * h * w, d)
    i = cam * h * w + y0.astype(int) * w + x0.astype(int)
    feats = ((1 - fx) * (1 - fy) * cells[i] + fx * (1 - fy) * cells[i + 1]
             + (1 - fx) * fy * cells[i + w] + fx * fy * cells[i + w + 1])
    return np.where(valid[:, None], feats, 0).astype(np.float16), valid


# 480x270 cameras: three 4.6-inch panels wide, two of 4.6 x 270/480 high, the 4.6-inch bird's-eye row,
# 0.75 in of caption and 0.6 in of spacing, at 100 dpi
PREVIEW_SIZE = (1380, 1112)


@pytest.mark.parametrize("layout", ["patches", "points"])
def test_preview_colours_are_a_pca_of_the_stored_features(layout, request, tmp_path):
    from sklearn.decomposition import PCA

    from pipeline.preview import NO_FEATURE, draw_preview, sweep_preview

    store = request.getfixturevalue("small_store" if layout == "patches" else "small_points_store")[0].out
    view = sweep_preview(store, 1)
    # the same PCA, independently: scikit-learn's (SVD) on features read with plain zarr, signed so that
    # each component's largest entry is positive, scaled between the 1st and 99th percentiles
    feats, valid = plain_zarr_features(store, 1)
    np.testing.assert_array_equal(valid, view.valid)
    f = feats[valid].astype(np.float64)
    pca = PCA(3).fit(f)
    comps = pca.components_ * np.sign(pca.components_[np.arange(3), np.abs(pca.components_).argmax(1)])[:, None]
    np.testing.assert_allclose(view.pca.components, comps, atol=1e-6)
    proj = (f - f.mean(0)) @ comps.T
    lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
    expected = np.clip((proj - lo) / (hi - lo), 0, 1)
    # one point: the colour the preview gives it is the one its own stored feature gives
    k = int(np.flatnonzero(valid)[len(f) // 2])
    one = np.clip(((feats[k].astype(np.float64) - f.mean(0)) @ comps.T - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(view.colours[k], one, atol=2e-3)
    # and every point
    np.testing.assert_allclose(view.colours[valid], expected, atol=2e-3)
    assert (view.colours[~valid] == NO_FEATURE).all()
    assert len(np.unique(np.round(expected, 2), axis=0)) > 100  # the colours do vary
    # the dataroot the store records is here: every camera has its image
    assert view.image_note == "" and all(im is not None for im in view.images)
    assert view.eval_labels is not None and (view.occ_labels == 1).any() and (view.occ_labels == 0).any()
    out = draw_preview(view, tmp_path / "preview.png")
    rgb = png_checked(out, PREVIEW_SIZE)
    assert os.path.getsize(out) < 400_000
    # the camera panels show the points' colours (not just grey image): strongly coloured pixels up there
    top = rgb[: PREVIEW_SIZE[1] // 2]
    assert ((top.max(-1) - top.min(-1)) > 60).mean() > 0.01


def test_preview_by_url_without_the_dataroot(small_store, tmp_path):
    from tests.http_store import serve

    store = small_store[0].out
    folder, name = os.path.split(store)
    with serve(folder) as base:
        res = runner.invoke(cdpipe, ["preview", f"{base}/{name}", "--sweep", "4", "--out", str(tmp_path / "p.png"),
                                     "--dataroot", str(tmp_path / "elsewhere")])
    assert res.exit_code == 0, res.output
    assert "no camera images" in res.output
    png_checked(tmp_path / "p.png", PREVIEW_SIZE)


def test_preview_errors_are_one_line(small_store, tmp_path):
    store = small_store[0].out
    out = str(tmp_path / "p.png")
    for args, words in (([store, "--sweep", "6", "--out", out], "no sweep 6; the store has sweeps 0-5"),
                        ([store, "--sweep", "-1", "--out", out], "no sweep -1"),
                        ([str(tmp_path / "missing.zarr"), "--out", out], "no store at"),
                        ([store, "--out", str(tmp_path / "p.jpg")], "PNG"),
                        ([store, "--out", str(tmp_path / "no" / "p.png")], "no folder")):
        res = runner.invoke(cdpipe, ["preview", *args])
        assert res.exit_code == 2, (args, res.output)
        assert words in res.output and res.output.strip().count("\n") == 0, res.output
    assert not os.path.exists(out)


def _fake_runs(tmp_path) -> list[str]:
    """Two pretraining run directories (one without occupancy) and a fine-tuning one, as train.py and
    finetune.py write them."""
    rng = np.random.default_rng(0)
    dirs = []
    for name, occ in (("mlp_occ", True), ("linear", False)):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        with open(d / "metrics.jsonl", "w") as f:
            for step in range(1, 81):
                m = {"distill": 1 / (1 + step / 20) + 0.03 * rng.standard_normal(), "lr": 2e-3 * min(1, step / 10),
                     "step": step, "data_s": 0.01, "step_s": 0.1, "world": 1}
                if occ:
                    m.update(occ=0.69 - step / 1000 + 0.01 * rng.standard_normal(), occ_bal_acc=0.5 + step / 400)
                m["loss"] = m["distill"] + m.get("occ", 0.0)
                if step % 20 == 0:
                    m["rankme"] = 8.0 + step / 40
                f.write(json.dumps(m) + "\n")
            f.write('{"distill": 0.2, "st')  # a run still writing its last line
        dirs.append(str(d))
    d = tmp_path / "runs" / "ft"
    d.mkdir()
    (d / "curve.jsonl").write_text("".join(json.dumps({"step": s, "train_loss": 2.5 - s / 100, "val_miou": s / 400})
                                           + "\n" for s in (25, 50, 75, 100)))
    return [*dirs, str(d)]


def test_plot_overlays_runs(tmp_path):
    from trainer.plots import read_run

    runs = _fake_runs(tmp_path)
    res = runner.invoke(cdtrain, ["plot", *runs, "--out", str(tmp_path / "curves.png")])
    assert res.exit_code == 0, res.output
    # eight panels (every series is logged by some run) in three columns of 4.6 x 3.1 inches, plus the legend
    png_checked(tmp_path / "curves.png", (1380, 980))
    run = read_run(runs[0])
    assert run.name == "mlp_occ" and len(run.series["distill"][0]) == 80 and len(run.series["rankme"][0]) == 4
    assert set(read_run(runs[2]).series) == {"train_loss", "val_miou"}
    # one run: only its panels
    res = runner.invoke(cdtrain, ["plot", runs[1], "--out", str(tmp_path / "one.png")])
    assert res.exit_code == 0, res.output
    png_checked(tmp_path / "one.png", (1380, 670))  # distill, total loss, lr, rankme: two rows of three


def test_plot_errors_are_one_line(tmp_path):
    runs = _fake_runs(tmp_path)
    (tmp_path / "empty").mkdir()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 1, "distill": 0.5}\nnot json\n{"step": 2, "distill": 0.4}\n')
    for args, words in (([runs[0], str(tmp_path / "nope")], "no run directory"),
                        ([str(tmp_path / "empty")], "has no metrics.jsonl or curve.jsonl"),
                        ([str(bad)], "metrics.jsonl, line 2: not JSON")):
        res = runner.invoke(cdtrain, ["plot", *args, "--out", str(tmp_path / "x.png")])
        assert res.exit_code == 2 and words in res.output, (args, res.output)
        assert res.output.strip().count("\n") == 0
    assert not (tmp_path / "x.png").exists()


def test_smoothing_is_a_debiased_moving_average():
    from trainer.plots import smooth

    np.testing.assert_allclose(smooth(np.full(50, 3.0)), 3.0)  # debiased: no ramp up from 0
    x = np.arange(10.0)
    np.testing.assert_array_equal(smooth(x, span=1), x)
    s = smooth(x, span=2)  # a = 0.5: m1 = 0.5 * 0 + 0.5 * 1 = 0.5, shown as 0.5 / (1 - 0.25)
    assert s[0] == 0 and s[1] == pytest.approx(0.5 / 0.75)


def test_pretraining_writes_tensorboard_scalars_and_plots(small_store, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    res = runner.invoke(cdtrain, ["pretrain", "--store", small_store[0].out, "--out", str(out), "--model",
                                  "minkunet-tiny", "--head-hidden", "16", "--steps", "3", "--warmup", "1",
                                  "--voxel-size", "0.4", "--max-points", "4000", "--checkpoint-every", "3"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in open(out / "metrics.jsonl")]
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    for key in ("distill", "occ", "loss", "lr", "rankme"):
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert logged == [(m["step"], pytest.approx(m[key], rel=1e-6)) for m in lines if key in m], key
    res = runner.invoke(cdtrain, ["plot", str(out), "--out", str(tmp_path / "run.png")])
    assert res.exit_code == 0, res.output
    png_checked(tmp_path / "run.png", (1380, 670))


def test_evaluate_writes_iou_and_confusion_charts(small_store, tmp_path):
    import torch

    from trainer.checkpoint import new_segmenter, segmenter_record

    model, init = new_segmenter("minkunet-tiny", None, 0)
    torch.save(segmenter_record(model, "minkunet-tiny", 0.4, init=init, labels_percent=0.0, label_scenes=[]),
               tmp_path / "segmenter.pt")
    res = runner.invoke(cdtrain, ["evaluate", "--store", small_store[0].out, "--checkpoint",
                                  str(tmp_path / "segmenter.pt"), "--out", str(tmp_path / "eval.json"), "--device",
                                  "cpu", "--corruption", "fog:0.05"])
    assert res.exit_code == 0, res.output
    assert "eval_iou.png" in res.output and "eval_confusion.png" in res.output
    png_checked(tmp_path / "eval_iou.png", (750, 608))  # 7.5 in wide, 0.28 in per class + 1.6 in
    png_checked(tmp_path / "eval_confusion.png", (820, 740))


def test_confusion_chart_is_normalised_by_row(tmp_path):
    from pipeline.classes import EVAL_CLASSES
    from pipeline.classes import NUM_EVAL_CLASSES as NUM_CLASSES
    from trainer.evaluate import scores
    from trainer.plots import plot_evaluation, row_normalised

    car, road = EVAL_CLASSES.index("car"), EVAL_CLASSES.index("driveable_surface")
    conf = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64)
    conf[car, car], conf[car, road], conf[road, road] = 30, 10, 50  # car: 75% right, 25% taken for road
    norm = row_normalised(conf)
    assert norm.shape == (NUM_CLASSES, NUM_CLASSES)
    assert norm[car - 1, car - 1] == 0.75 and norm[car - 1, road - 1] == 0.25 and norm[road - 1, road - 1] == 1
    assert np.isnan(norm[0]).all()  # barrier: not in the truth
    result = scores(conf) | {"split": "val", "sweeps": 1}
    iou_png, conf_png = plot_evaluation(result, tmp_path / "r.json")
    assert (iou_png.name, conf_png.name) == ("r_iou.png", "r_confusion.png")
    png_checked(iou_png, (750, 608))
    png_checked(conf_png, (820, 740))


def test_paper_table_figure_from_the_committed_seed_files(tmp_path):
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("paper_table", os.path.join(root, "benchmarks", "paper_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seeds = module.load_seeds()
    d, lo, hi = module.paired_difference(seeds, "3-layer MLP head", "linear head", "probe")
    per_seed = [100 * (s["rows"]["3-layer MLP head"]["probe"] - s["rows"]["linear head"]["probe"]) for s in seeds]
    np.testing.assert_allclose(d, per_seed)
    assert lo <= d.mean() <= hi
    out = module.make_figure(str(tmp_path / "table.png"))
    # five measures with differences (occupancy accuracy has none) in three columns, three pairs each
    png_checked(out, (1500, 630))
