"""Pictures: the store preview (both layouts, by path and by URL), the dataroot preview, training curves,
evaluation charts, the ablation figure, and TensorBoard scalars beside metrics.jsonl. Each PNG is checked
for its size and for not being blank; the preview's colours are checked against a PCA computed here, with
scikit-learn, from features read with plain zarr. What the charts say is checked on their figures: the
y-range of each training curve against the scale of its measure (a loss from 0, chance drawn), integer
step ticks, a one-point series on a sensible range, the confusion matrix's cells and colour bar in one
unit, and the previews' legends naming exactly the classes they paint."""

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


@pytest.mark.parametrize("layout", ["patches", pytest.param("points", marks=pytest.mark.slow)])
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


def _legend_entries(legend) -> dict[str, tuple[int, ...]]:
    """A legend's names -> the RGB (0-255) of their swatches."""
    return {t.get_text(): tuple(int(round(255 * v)) for v in h.get_facecolor()[:3])
            for t, h in zip(legend.get_texts(), legend.legend_handles)}


def test_preview_legends_name_the_classes_in_view(small_store):
    import dataclasses

    from pipeline.classes import EVAL_CLASSES, EVAL_COLOURS
    from pipeline.preview import BEV_HALF_M, OCC_COLOURS, preview_figure, sweep_preview

    view = sweep_preview(small_store[0].out, 1)

    def labels_legend(v):
        (ax,) = [ax for ax in preview_figure(v).axes if ax.get_title().startswith("lidarseg labels")]
        return ax.get_legend()

    # every class the labels panel paints, in its colour, and no other
    in_view = (np.abs(view.xyz[:, :2]) <= BEV_HALF_M).all(1)
    present = sorted(set(view.eval_labels[in_view].tolist()))
    assert len([c for c in present if c]) >= 3  # something to name
    expected = {("ignore (not scored)" if c == 0 else EVAL_CLASSES[c]): EVAL_COLOURS[c] for c in present}
    assert _legend_entries(labels_legend(view)) == expected
    # a sweep of road alone names the road alone; a store without labels has no legend to show
    road = EVAL_CLASSES.index("driveable_surface")
    only_road = dataclasses.replace(view, eval_labels=np.full_like(view.eval_labels, road))
    assert _legend_entries(labels_legend(only_road)) == {"driveable_surface": EVAL_COLOURS[road]}
    assert labels_legend(dataclasses.replace(view, eval_labels=None)) is None
    # the occupancy slices: the three states of a target
    (legend,) = [ax.get_legend() for ax in preview_figure(view).axes
                 if ax.get_legend() is not None and ax.get_legend().get_title().get_text() == "occupancy targets"]
    assert _legend_entries(legend) == {k: tuple(int(round(255 * c)) for c in v) for k, v in OCC_COLOURS.items()}


def test_dataroot_preview_has_a_legend_of_the_classes_painted(small_dataroot, tmp_path):
    from numpy.lib.stride_tricks import sliding_window_view

    pytest.importorskip("nuscenes")
    from nuscenes.utils.data_classes import LidarPointCloud

    from pipeline.classes import FINE_COLOURS
    from pipeline.dataroot import write_preview
    from pipeline.frames import LIDAR, load_nuscenes

    cfg, _ = small_dataroot
    root = tmp_path / "nuscenes"  # the session's dataroot, seen through links, so that preview.png lands here
    root.mkdir()
    for name in os.listdir(cfg.out):
        os.symlink(os.path.join(cfg.out, name), root / name)
    out = write_preview(root, cfg.version)
    with Image.open(out) as im:
        rgb = np.asarray(im.convert("RGB"))
    tile_h = round(cfg.height * 400 / cfg.width)  # six 400-pixel-wide cameras in two rows, then the legend
    legend = rgb[2 * tile_h:]
    assert legend.shape[0] > 30
    swatches = {i for i, c in enumerate(FINE_COLOURS)
                if sliding_window_view((legend == c).all(-1), (14, 14)).all((-2, -1)).any()}
    # the sweep's classes: all those near the sensor (painted from above) are named, none it lacks is
    nusc = load_nuscenes(root, cfg.version)
    sd = nusc.get("sample_data", nusc.sample[0]["data"][LIDAR])
    xyz = LidarPointCloud.from_file(os.path.join(nusc.dataroot, sd["filename"])).points[:3]
    labels = np.fromfile(os.path.join(nusc.dataroot, nusc.get("lidarseg", sd["token"])["filename"]), np.uint8)
    near = np.hypot(xyz[0], xyz[1]) < 45  # inside the 100 m bird's-eye square, whatever the sensor's yaw
    assert len(swatches) >= 3 and set(labels[near].tolist()) <= swatches <= set(labels.tolist())


def test_one_table_of_class_colours_the_devkits():
    import pipeline.preview
    from pipeline.classes import EVAL_CLASSES, EVAL_COLOURS, FINE_CLASSES, FINE_COLOURS, FINE_TO_EVAL

    assert pipeline.preview.EVAL_COLOURS is EVAL_COLOURS
    assert len(FINE_COLOURS) == len(FINE_CLASSES) and len(EVAL_COLOURS) == len(EVAL_CLASSES)
    assert len(set(FINE_COLOURS)) == len(FINE_COLOURS)  # a colour names one class
    # each evaluation class in the colour of one of its own fine classes
    for e, colour in enumerate(EVAL_COLOURS):
        assert colour in {FINE_COLOURS[f] for f in np.flatnonzero(FINE_TO_EVAL == e)}, EVAL_CLASSES[e]
    pytest.importorskip("nuscenes")
    from nuscenes.utils.color_map import get_colormap

    assert dict(zip(FINE_CLASSES, FINE_COLOURS)) == get_colormap()


@pytest.mark.slow
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


@pytest.mark.slow
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


def _write_run(folder, rows: list[dict], name: str = "metrics.jsonl") -> str:
    folder.mkdir(parents=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(folder)


def _axes_by_series(fig) -> dict:
    return {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}


def _plotted(ax) -> list[np.ndarray]:
    """The y values of the data lines of ``ax`` (not the chance line)."""
    return [np.asarray(line.get_ydata(), float) for line in ax.lines if line.get_gid() != "chance"]


def _step_ticks_are_integers(ax) -> None:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.xaxis.get_major_locator()() if lo <= t <= hi]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
    assert lo == 0


def test_y_ranges_show_each_measure_on_its_own_scale():
    from trainer.plots import LN2, step_range, y_range

    # a loss from 0; the occupancy loss up past chance; 5% of the span above the top
    assert y_range([[0.60, 0.69]], (0.0, LN2)) == (0.0, pytest.approx(1.05 * LN2))
    assert y_range([[1.2, 0.4, 0.9]]) == (0.0, pytest.approx(1.26))
    # a series that barely changes stays flat: 0.0002 of change is under 0.1% of the axis
    bottom, top = y_range([[0.5, 0.5002]])
    assert bottom == 0 and 0.0002 / (top - bottom) < 0.001
    # balanced accuracy: chance (0.5) to 1 always in view, and worse than chance when it is
    bottom, top = y_range([[0.55, 0.60]], (0.5, 1.0))
    assert bottom < 0.5 and top > 1.0 and top - bottom == pytest.approx(0.55)
    assert y_range([[0.40, 0.60]], (0.5, 1.0))[0] < 0.40
    # one point: from 0 to a little above it
    assert y_range([[8.4]]) == (0.0, pytest.approx(8.82))
    # mIoU in %: not past 100 when nothing is; a negative value (none should be) still shown
    assert y_range([[100.0, 40.0]], (0.0,), 0.0, 100.0) == (0.0, 100.0)
    assert y_range([[-1.0, 3.0]])[0] < -1.0
    # a diverged run's inf and NaN do not blow the axis up; nothing at all gives a unit range
    assert y_range([[np.inf, np.nan, 1.0]]) == (0.0, pytest.approx(1.05))
    assert y_range([], ()) == (0.0, 1.0)
    assert step_range([np.array([1, 80]), np.array([20])]) == (0.0, pytest.approx(82.4))
    assert step_range([np.array([20])]) == (0.0, 21.0)


def test_training_curves_read_on_honest_scales(tmp_path):
    from trainer.plots import LN2, read_run, runs_figure

    runs = [read_run(d) for d in _fake_runs(tmp_path)]
    axes = _axes_by_series(runs_figure(runs))
    assert set(axes) == {"distill", "occ", "loss", "lr", "occ_bal_acc", "rankme", "train_loss", "val_miou"}
    for key, ax in axes.items():
        bottom, top = ax.get_ylim()
        values = np.concatenate(_plotted(ax))
        assert bottom <= values.min() and values.max() <= top, key  # nothing drawn off the axis
        _step_ticks_are_integers(ax)
        if key != "occ_bal_acc":
            assert bottom == 0, key  # losses, lr, RankMe and mIoU from 0
    # the occupancy loss against chance: ln 2, drawn and labelled
    occ = axes["occ"]
    assert occ.get_ylim()[1] > LN2
    (chance,) = [line for line in occ.lines if line.get_gid() == "chance"]
    np.testing.assert_allclose(chance.get_ydata(), LN2)
    assert any("chance" in t.get_text() and "0.693" in t.get_text() for t in occ.texts)
    # balanced accuracy: from chance, drawn and labelled, to 1
    acc = axes["occ_bal_acc"]
    bottom, top = acc.get_ylim()
    assert bottom < 0.5 and top >= 1.0
    (chance,) = [line for line in acc.lines if line.get_gid() == "chance"]
    np.testing.assert_allclose(chance.get_ydata(), 0.5)
    assert any("chance" in t.get_text() for t in acc.texts)
    # the distillation loss (in [0, 2]) from 0 to just above the data, not to 2
    assert axes["distill"].get_ylim()[1] < 1.2
    # mIoU in %: the data (6.25 to 25%) drawn in %, on an axis from 0 that stops below 100
    miou = axes["val_miou"]
    np.testing.assert_allclose(np.concatenate(_plotted(miou)), [6.25, 12.5, 18.75, 25.0])
    assert 25 < miou.get_ylim()[1] <= 100 and "%" in miou.get_ylabel()


def test_a_loss_at_chance_is_drawn_flat(tmp_path):
    from trainer.plots import LN2, read_run, runs_figure

    # the occupancy loss sitting at chance, moving by 1e-4: zoomed to the data it would fill the panel
    rows = [{"step": s, "distill": 0.9, "occ": LN2 - 1e-4 * (s % 2), "loss": 1.6, "lr": 1e-3} for s in range(1, 61)]
    axes = _axes_by_series(runs_figure([read_run(_write_run(tmp_path / "flat", rows))]))
    for key in ("occ", "distill", "lr"):
        bottom, top = axes[key].get_ylim()
        spread = max(np.ptp(v) for v in _plotted(axes[key]))
        assert bottom == 0 and spread / (top - bottom) < 0.001, key


def test_a_series_of_one_point_reads_on_a_sensible_range(tmp_path):
    from trainer.plots import read_run, runs_figure

    rows = [{"step": s, "distill": 1.0 - s / 100, **({"rankme": 8.4} if s == 20 else {})} for s in range(1, 21)]
    pretrain = _write_run(tmp_path / "short", rows)
    finetune = _write_run(tmp_path / "ft", [{"step": 50, "train_loss": 2.1, "val_miou": 0.123}], "curve.jsonl")
    axes = _axes_by_series(runs_figure([read_run(pretrain), read_run(finetune)]))
    for key, value, written in (("rankme", 8.4, "8.4"), ("val_miou", 12.3, "12.3"), ("train_loss", 2.1, "2.1")):
        ax = axes[key]
        bottom, top = ax.get_ylim()
        left, right = ax.get_xlim()
        assert np.isfinite([bottom, top, left, right]).all()
        assert bottom == 0 and value < top <= 1.2 * value, (key, bottom, top)
        step = 20 if key == "rankme" else 50
        assert left == 0 and step < right <= 1.1 * step
        _step_ticks_are_integers(ax)
        (line,) = ax.lines
        assert line.get_marker() == "o"  # a marker, not a line of one point
        assert [t.get_text() for t in ax.texts] == [written]  # and its value written beside it


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


def test_confusion_cells_and_colour_bar_are_in_one_unit():
    from pipeline.classes import EVAL_CLASSES
    from pipeline.classes import NUM_EVAL_CLASSES as NUM_CLASSES
    from trainer.evaluate import scores
    from trainer.plots import confusion_figure

    car, road = EVAL_CLASSES.index("car"), EVAL_CLASSES.index("driveable_surface")
    conf = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64)
    conf[car, car], conf[car, road], conf[road, road] = 30, 10, 50
    fig = confusion_figure(scores(conf) | {"split": "val", "sweeps": 1})
    ax, bar = fig.axes
    # the colour bar reads % of the row, from 0 to 100, as the cells and the title do
    assert "%" in bar.get_ylabel() and "true class" in bar.get_ylabel()
    assert "%" in ax.get_title()
    image = ax.get_images()[0]
    assert image.get_clim() == (0, 100)
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(car - 1, car - 1): "75", (car - 1, road - 1): "25", (road - 1, road - 1): "100"}
    # a cell's colour is its number on the colour bar
    for (t, p), text in cells.items():
        assert image.get_array()[t, p] == pytest.approx(float(text))


def test_a_paired_difference_is_coloured_by_its_t_interval_where_it_has_one(tmp_path):
    """The claims read the Student t interval, so the figure colours by it: a difference whose bootstrap
    interval clears 0 but whose t interval holds 0 is drawn grey, not green."""
    from trainer.plots import Difference, plot_paired_differences

    green = np.array([44, 160, 44])  # matplotlib's C2

    def green_pixels(diff: Difference) -> int:
        out = plot_paired_differences({"probe": [diff]}, tmp_path / "d.png", "one difference")
        rgb = np.asarray(Image.open(out).convert("RGB"), np.int64)
        return int((np.abs(rgb - green).sum(-1) < 30).sum())

    d = np.array([0.1, 0.9, 0.2, 0.8])
    assert green_pixels(Difference("a - b", d, 0.5, 0.2, 0.8)) > 50  # bootstrap only: above 0, green
    assert green_pixels(Difference("a - b", d, 0.5, 0.2, 0.8, -0.1, 1.1)) == 0  # t holds 0: grey
    assert green_pixels(Difference("a - b", d, 0.5, 0.2, 0.8, 0.05, 0.95)) > 50  # t above 0: green


def test_paper_table_figure_from_the_committed_seed_files(tmp_path):
    """The table's paired differences and figure, from the committed seed files of the version-2 worlds
    (benchmarks/results/paper_table_v2; the version-3 table reads its own folder the same way)."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("paper_table", os.path.join(root, "benchmarks", "paper_table.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    results = os.path.join(root, "benchmarks", "results", "paper_table_v2")
    seeds = module.load_seeds(results)
    d, lo, hi = module.paired_difference(seeds, "3-layer MLP head", "linear head", "probe")
    per_seed = [100 * (s["rows"]["3-layer MLP head"]["probe"] - s["rows"]["linear head"]["probe"]) for s in seeds]
    np.testing.assert_allclose(d, per_seed)
    assert lo <= d.mean() <= hi
    tlo, thi = module.t_ci(d)
    assert tlo < lo <= hi < thi  # over 6 seeds the t interval is the wider one
    out = module.make_figure(str(tmp_path / "table.png"), results)
    # five measures with differences (the version-2 seeds have no probe + raw and no occupancy differences)
    # in three columns, five pairs each
    png_checked(out, (1500, 850))
