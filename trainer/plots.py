"""Pictures of runs and results: training curves of run directories (``cdtrain plot``), the per-class IoU
and confusion matrix of an evaluation (``cdtrain evaluate --out``), a detector's per-class AP and a
bird's-eye view of its boxes against the truth (``cdtrain evaluate --task detection``), and paired
differences with their confidence intervals (``benchmarks/paper_table.py``).

A run directory is what ``cdtrain pretrain`` writes (``metrics.jsonl``: one line per step with
``distill``, ``occ``, ``loss``, ``lr``, ``occ_bal_acc``, and ``rankme`` at checkpoints) or what
``cdtrain finetune`` writes (``curve.jsonl``: ``train_loss`` and the held-out ``val_miou`` every
``--eval-every`` steps; a detector's run also ``heatmap_loss``, ``regression_loss``, and ``val_loss`` and
``val_centre_ap_2m`` at its evaluations). Per-step series are drawn raw (faint) with an exponential moving average over
them (``smooth``).

Each panel's y-axis shows the series against its whole scale, not zoomed to the data's own spread
(``y_range``): a loss from 0, the occupancy loss with its chance level (ln 2) drawn, balanced accuracy
from chance (0.5) to 1, mIoU in % from 0. A series that barely moves is drawn flat, as it is. Step axes
have integer ticks and start at 0; a series of one point is a marker with its value written beside it.

matplotlib is imported where it is used, and only its object API (``Figure``): no pyplot state, no
backend switched.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LN2 = math.log(2.0)  # binary cross-entropy of a guess of 1/2: the occupancy loss at chance


@dataclass(frozen=True)
class Panel:
    """How one series is drawn: ``title``, ``ylabel``, whether per-step values are ``smoothed``, and the
    factor ``scale`` they are drawn at. Its y-range (``y_range``) always holds the values of ``include``
    (0 for a loss), never goes below ``floor`` or above ``ceiling`` where the values cannot, and
    ``reference`` (value, words) is a labelled horizontal line, e.g. chance."""

    title: str
    ylabel: str
    smoothed: bool
    scale: float = 1.0
    include: tuple[float, ...] = (0.0,)
    floor: float | None = 0.0
    ceiling: float | None = None
    reference: tuple[float, str] | None = None


# series drawn, in this order: key in the run's files -> its panel
SERIES = {
    "distill": Panel("distillation loss", "1 - cos (cosine) or |k - q| (l2); 0 to 2", True),
    "occ": Panel("occupancy loss", "balanced binary cross-entropy", True, include=(0.0, LN2),
                 reference=(LN2, f"chance: ln 2 = {LN2:.3f}")),
    "loss": Panel("total loss (pretraining)", "distillation + weight x occupancy", True),
    "lr": Panel("learning rate", "learning rate", False),
    "occ_bal_acc": Panel("occupancy balanced accuracy (training batches)", "balanced accuracy", True,
                         include=(0.5, 1.0), reference=(0.5, "chance: 0.5")),
    "rankme": Panel("RankMe of backbone features (at checkpoints)", "effective rank", False),
    "train_loss": Panel("fine-tuning loss (mean since last point)", "loss", False),
    "val_miou": Panel("held-out val mIoU, % (fine-tuning)", "mIoU (%)", False, scale=100.0, ceiling=100.0),
    "heatmap_loss": Panel("detection heatmap loss (Gaussian focal)", "loss per box", True),
    "regression_loss": Panel("detection box regression loss (L1)", "loss per box", True),
    "val_loss": Panel("held-out val detection loss", "loss per box", False),
    "val_centre_ap_2m": Panel("held-out val centre-distance AP at 2 m, % (built-in)", "AP (%)", False, scale=100.0,
                              ceiling=100.0),
}
FILES = ("metrics.jsonl", "curve.jsonl")


@dataclass(frozen=True)
class Run:
    """A run directory's logged series: ``series[key] = (steps [n], values [n])``."""

    path: str
    name: str
    series: dict = field(default_factory=dict)


def read_run(run_dir: str | os.PathLike, name: str | None = None) -> Run:
    """The series of ``run_dir``'s ``metrics.jsonl`` and ``curve.jsonl``. A last line cut short (a run
    still writing) is skipped; a ``FileNotFoundError`` or ``ValueError`` says which directory, file or
    line is wrong."""
    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"no run directory {run_dir}")
    found = [f for f in FILES if os.path.isfile(os.path.join(run_dir, f))]
    if not found:
        raise FileNotFoundError(f"{run_dir} has no {' or '.join(FILES)}: is it the --out of cdtrain pretrain or "
                                f"finetune?")
    points: dict[str, tuple[list, list]] = {}
    for f in found:
        path = os.path.join(run_dir, f)
        with open(path) as fh:
            lines = fh.read().splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                if i == len(lines) - 1:  # being written
                    continue
                raise ValueError(f"{path}, line {i + 1}: not JSON: {line[:80]!r}") from None
            for key in SERIES:
                value = row.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and "step" in row:
                    points.setdefault(key, ([], []))
                    points[key][0].append(row["step"])
                    points[key][1].append(float(value))
    if not points:
        raise ValueError(f"{run_dir}: {', '.join(found)} hold no step with any of {', '.join(SERIES)}")
    series = {k: (np.asarray(s, np.float64), np.asarray(v, np.float64)) for k, (s, v) in points.items()}
    return Run(path=run_dir, name=name or os.path.basename(os.path.normpath(run_dir)), series=series)


def run_names(run_dirs: list[str]) -> list[str]:
    """Labels for run directories: their names, with as many parent folders as it takes to tell them apart."""
    parts = [Path(os.path.abspath(d)).parts for d in run_dirs]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(d) for d in run_dirs]


def smooth(values: np.ndarray, span: float | None = None) -> np.ndarray:
    """Exponential moving average, debiased (as TensorBoard draws it): ``m_t = a m_(t-1) + (1 - a) x_t``,
    shown as ``m_t / (1 - a^(t+1))``, with ``a = 1 - 1 / span``; the span defaults to a twentieth of the
    series (at least 1: no smoothing)."""
    values = np.asarray(values, np.float64)
    span = max(1.0, len(values) / 20) if span is None else max(1.0, span)
    a = 1.0 - 1.0 / span
    out = np.empty_like(values)
    m = 0.0
    for t, x in enumerate(values):
        m = a * m + (1 - a) * x
        out[t] = m / (1 - a ** (t + 1)) if a > 0 else m
    return out


def y_range(values, include=(0.0,), floor: float | None = 0.0, ceiling: float | None = None,
            pad: float = 0.05) -> tuple[float, float]:
    """The y-limits (bottom, top) of a panel drawing ``values`` (arrays; non-finite entries ignored): from the
    least to the greatest of the values and ``include``, widened by ``pad`` of that span either side, but
    not below ``floor`` nor above ``ceiling`` when nothing lies beyond them. A single value (no span)
    gets a span of its own magnitude, so that one point reads against a scale from 0 when 0 is included."""
    v = np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in values] + [np.asarray(include, np.float64)])
    v = v[np.isfinite(v)]
    if not len(v):
        return (0.0, 1.0)
    lo, hi = float(v.min()), float(v.max())
    span = hi - lo or max(abs(hi), 1.0)
    bottom, top = lo - pad * span, hi + pad * span
    if floor is not None and lo >= floor:
        bottom = max(bottom, floor)
    if ceiling is not None and hi <= ceiling:
        top = min(top, ceiling)
    return bottom, top


def step_range(steps) -> tuple[float, float]:
    """The x-limits of a step axis drawing ``steps`` (arrays): from 0 to a little past the last step."""
    last = max([float(np.max(s)) for s in steps if len(s)] or [0.0])
    return 0.0, last + max(1.0, 0.03 * last)


def plot_runs(run_dirs: list[str], out: str | os.PathLike, dpi: int = 100) -> Path:
    """Read ``run_dirs`` (``read_run``, named by ``run_names``) and write ``runs_figure`` of them to ``out``."""
    runs = [read_run(d, n) for d, n in zip(run_dirs, run_names(run_dirs))]
    runs_figure(runs, dpi).savefig(out, dpi=dpi, facecolor="white")
    return Path(out)


def runs_figure(runs: list[Run], dpi: int = 100):
    """One panel per series that any run logged (``SERIES``; the axes' gid is the series' key), every run
    overlaid in its own colour and named in the legend; per-step series raw and smoothed."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    keys = [k for k in SERIES if any(k in r.series for r in runs)]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.1 * rows + 0.5), dpi=dpi, facecolor="white", layout="constrained")
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for i, key in enumerate(keys):
        panel = SERIES[key]
        ax = fig.add_subplot(rows, cols, i + 1, gid=key)
        drawn = [(run, colour, *run.series[key]) for run, colour in zip(runs, colours) if key in run.series]
        for run, colour, steps, values in drawn:
            values = panel.scale * values
            if panel.smoothed and len(values) > 2:
                ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smooth(values), color=colour, linewidth=1.6, label=run.name)
            else:
                ax.plot(steps, values, color=colour, linewidth=1.4, marker="o" if len(values) <= 30 else None,
                        markersize=3 if len(values) > 1 else 5, label=run.name)
            if len(values) == 1:  # no line to read it from: write the value beside it
                ax.annotate(f"{values[0]:.3g}", (steps[0], values[0]), xytext=(-6, 0), textcoords="offset points",
                            ha="right", va="center", fontsize=7, color=colour)
        bottom, top = y_range([panel.scale * v for _, _, _, v in drawn], panel.include, panel.floor, panel.ceiling)
        ax.set_ylim(bottom, top)
        if panel.reference is not None:
            level, words = panel.reference
            ax.axhline(level, color="0.35", linestyle="--", linewidth=0.9, gid="chance")
            ax.text(0.99, level, words, transform=ax.get_yaxis_transform(), ha="right", fontsize=7, color="0.35",
                    va="bottom" if level < (bottom + top) / 2 else "top")  # on the side with room
        ax.set_xlim(*step_range([s for _, _, s, _ in drawn]))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel(panel.ylabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside upper center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    return fig


def evaluation_paths(json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Where ``plot_evaluation`` writes beside ``json_path``: STEM_iou.png and STEM_confusion.png."""
    stem = Path(json_path)
    stem = stem.with_suffix("") if stem.suffix.lower() == ".json" else stem
    return stem.with_name(stem.name + "_iou.png"), stem.with_name(stem.name + "_confusion.png")


def plot_evaluation(result: dict, json_path: str | os.PathLike, dpi: int = 100) -> tuple[Path, Path]:
    """Two PNGs beside an evaluation's JSON (``trainer.evaluate.scores`` plus ``robustness``):
    ``iou_figure`` and ``confusion_figure``, at ``evaluation_paths(json_path)``."""
    iou_path, conf_path = evaluation_paths(json_path)
    iou_figure(result, dpi).savefig(iou_path, dpi=dpi, facecolor="white")
    confusion_figure(result, dpi).savefig(conf_path, dpi=dpi, facecolor="white")
    return iou_path, conf_path


def _about(result: dict) -> str:
    return (f"{result.get('split', '?')} split, {result.get('sweeps', '?')} sweeps"
            + (f"; segmenter {result['segmenter']}" if result.get("segmenter") else ""))


def iou_figure(result: dict, dpi: int = 100):
    """The IoU of each class as bars (% from 0 to 100), with the mIoU and, when scored, each corruption's
    IoU as markers."""
    from matplotlib.figure import Figure

    names = list(result["iou"])
    present = set(result["classes"])
    fig = Figure(figsize=(7.5, 0.28 * len(names) + 1.6), dpi=dpi, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    values = np.array([100 * result["iou"][n] if result["iou"][n] is not None and n in present else np.nan
                       for n in names])
    ax.barh(y, np.nan_to_num(values), color=["C0" if n in present else "0.8" for n in names], height=0.7,
            label="clean")
    for yy, v, n in zip(y, values, names):
        ax.text((0 if np.isnan(v) else v) + 0.8, yy, "not in the truth" if n not in present else f"{v:.1f}",
                va="center", fontsize=7, color="0.45" if n not in present else "black")
    for k, (text, r) in enumerate((result.get("robustness") or {}).items()):
        cv = [100 * r["iou"][n] if r["iou"].get(n) is not None and n in present else np.nan for n in names]
        ax.plot(cv, y, linestyle="none", marker="dv^s<>"[k % 6], color=f"C{k + 1}", markersize=5,
                label=f"{text} (mIoU {100 * r['miou']:.1f})")
    ax.axvline(100 * result["miou"], color="black", linestyle="--", linewidth=1,
               label=f"mIoU {100 * result['miou']:.1f} ({len(present)} classes)")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("IoU (%)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"per-class IoU: {_about(result)}", fontsize=9)
    return fig


def confusion_figure(result: dict, dpi: int = 100):
    """The confusion matrix normalised by row, in %: each true class's points, spread over the
    predictions. The cells (those of at least 1%) and the colour bar are in the same unit."""
    from matplotlib.figure import Figure

    names = list(result["iou"])
    pct = 100 * row_normalised(result["confusion"])
    totals = np.asarray(result["confusion"])[1:, 1:].sum(1, keepdims=True)
    fig = Figure(figsize=(8.2, 7.4), dpi=dpi, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")  # rows without truth
    image = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
    for t, p in zip(*np.nonzero(pct >= 1)):
        ax.text(p, t, f"{pct[t, p]:.0f}", ha="center", va="center", fontsize=6,
                color="white" if pct[t, p] > 60 else "black")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, [f"{n} ({int(totals[i, 0])})" for i, n in enumerate(names)], fontsize=7)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("true class (points)", fontsize=9)
    ax.set_title(f"confusion matrix, % of each true class's points: {_about(result)}", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.7, label="% of the true class's points")
    return fig


def row_normalised(confusion) -> np.ndarray:
    """The confusion matrix [K+1, K+1] (index 0: ignore) without its ignore row and column, each row divided
    by its sum: [K, K], row t = how the points of true class t were predicted (NaN for a class absent
    from the truth)."""
    conf = np.asarray(confusion, np.float64)[1:, 1:]
    totals = conf.sum(1, keepdims=True)
    return np.divide(conf, totals, out=np.full_like(conf, np.nan), where=totals > 0)


@dataclass(frozen=True)
class Difference:
    """One paired difference ``label`` (row a minus row b) over seeds: its per-seed values, their mean,
    a confidence interval [lo, hi] and, where given, a second one [t_lo, t_hi] (the Student t interval,
    which then decides the colour: it is the one a verdict reads)."""

    label: str
    per_seed: np.ndarray
    mean: float
    lo: float
    hi: float
    t_lo: float = float("nan")
    t_hi: float = float("nan")


def plot_paired_differences(panels: dict[str, list[Difference]], out: str | os.PathLike, title: str,
                            dpi: int = 100) -> Path:
    """One panel per measure (``panels``: title -> differences): each difference's mean (diamond), its
    interval (bar) and its per-seed values (small grey dots), against a line at 0 (no difference). A
    difference with a t interval draws it as the bar and its other interval as a thin line below it."""
    from matplotlib.figure import Figure

    panels = {k: v for k, v in panels.items() if v}
    labels = list(dict.fromkeys(d.label for diffs in panels.values() for d in diffs))
    row_of = {label: len(labels) - 1 - i for i, label in enumerate(labels)}  # first label on top
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.4 * cols + 1.8, 0.55 * len(labels) * rows + 1.2 * rows + 0.6), dpi=dpi,
                 facecolor="white", layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for ax, (name, diffs) in zip(axes.ravel(), panels.items()):
        for d in diffs:
            yy = row_of[d.label]
            has_t = bool(np.isfinite(d.t_lo) and np.isfinite(d.t_hi))
            lo, hi = (d.t_lo, d.t_hi) if has_t else (d.lo, d.hi)
            colour = "C2" if lo > 0 else "C3" if hi < 0 else "0.3"  # interval clear of 0, or not
            jitter = np.linspace(-0.12, 0.12, len(d.per_seed)) if len(d.per_seed) > 1 else np.zeros(1)
            ax.plot(d.per_seed, yy + jitter, linestyle="none", marker="o", markersize=3, color="0.6")
            ax.plot([lo, hi], [yy, yy], color=colour, linewidth=2.2, solid_capstyle="butt")
            if has_t:
                ax.plot([d.lo, d.hi], [yy - 0.22, yy - 0.22], color="0.35", linewidth=0.9)
            ax.plot([d.mean], [yy], marker="D", markersize=6, color=colour)
        for label in set(labels) - {d.label for d in diffs}:
            ax.text(0.5, row_of[label], "not measured for these rows", transform=ax.get_yaxis_transform(),
                    ha="center", va="center", fontsize=7, color="0.5")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_ylim(-0.6, len(labels) - 0.4)
    axes[0, 0].set_yticks([row_of[label] for label in labels], labels, fontsize=8)
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.savefig(out, dpi=dpi, facecolor="white")
    return Path(out)


def detection_ap_figure(result: dict, dpi: int = 100):
    """A detector's devkit AP of each class as bars (% from 0 to 100; classes absent from the val truth
    grey and named so), with the mAP over the devkit's classes and over those present as lines and the
    NDS in the title (``pipeline.detection_eval.devkit_scores``' result)."""
    from matplotlib.figure import Figure

    names = list(result["ap"])
    present = set(result["present"])
    fig = Figure(figsize=(7.5, 0.3 * len(names) + 1.6), dpi=dpi, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(names))[::-1]
    values = np.array([100 * result["ap"][n] if n in present else np.nan for n in names])
    ax.barh(y, np.nan_to_num(values), color=["C0" if n in present else "0.8" for n in names], height=0.7)
    for yy, v, n in zip(y, values, names):
        ax.text((0 if np.isnan(v) else v) + 0.8, yy, f"{v:.1f}" if n in present else "not in the val truth",
                va="center", fontsize=7, color="black" if n in present else "0.45", zorder=3,
                bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6})  # readable over the mAP lines
    ax.axvline(100 * result["mAP"], color="black", linestyle="--", linewidth=1,
               label=f"mAP {100 * result['mAP']:.1f} (the devkit's, {len(names)} classes)")
    if result.get("mAP_present") is not None and len(present) < len(names):
        ax.axvline(100 * result["mAP_present"], color="C3", linestyle=":", linewidth=1.2,
                   label=f"mAP {100 * result['mAP_present']:.1f} over the {len(present)} classes present")
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 105)
    ax.set_xlabel("AP (%), mean over the 0.5, 1, 2 and 4 m centre-distance thresholds", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"per-class AP, nuScenes devkit ({result.get('eval_config', '?')}, {result.get('eval_split', '?')}"
                 f"): NDS {100 * result['NDS']:.1f}; {result.get('sweeps', '?')} sweeps", fontsize=9)
    return fig


def detection_bev_figure(xyz: np.ndarray, truth: dict, predicted: dict, classes: tuple[str, ...], title: str,
                         half_m: float = 51.2, max_predicted: int | None = None, dpi: int = 100):
    """One sweep from above: its points (grey, darker higher), the truth boxes (solid, in their class's
    colour, a line from the centre to the front) and the predicted boxes (dashed, the same colours, each
    with its score; only the ``max_predicted`` best-scoring when given), LiDAR frame, ``half_m`` metres
    around the sensor. ``truth`` and ``predicted`` hold ``centre`` [n,3], ``size`` [n,3] (w, l, h),
    ``yaw`` [n] and ``label`` [n] (indices into ``classes``); ``predicted`` also ``score`` [n]."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon

    from pipeline.classes import DETECTION_CLASSES, DETECTION_COLOURS
    from pipeline.geometry import box_corners_xy

    colour = {name: np.asarray(c, np.float64) / 255 for name, c in zip(DETECTION_CLASSES, DETECTION_COLOURS)}
    fig = Figure(figsize=(8.4, 7.6), dpi=dpi, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    xyz = np.asarray(xyz, np.float64)
    keep = (np.abs(xyz[:, :2]) <= half_m).all(1)
    order = np.argsort(xyz[keep, 2])
    z = xyz[keep, 2][order]
    shade = np.clip((z - np.percentile(z, 2)) / max(np.ptp(z), 1e-6), 0, 1) if len(z) else z
    ax.scatter(xyz[keep, 0][order], xyz[keep, 1][order], c=0.8 - 0.55 * shade, cmap="gray", vmin=0, vmax=1, s=0.4,
               linewidths=0, antialiased=False)
    if max_predicted is not None:
        best = np.argsort(-np.asarray(predicted["score"], np.float64), kind="stable")[:max_predicted]
        predicted = {k: np.asarray(v)[best] for k, v in predicted.items()}
    drawn = set()
    for boxes, style in ((truth, "-"), (predicted, "--")):
        n = len(np.asarray(boxes["label"]))
        if not n:
            continue
        corners = box_corners_xy(np.asarray(boxes["centre"]).reshape(-1, 3), np.asarray(boxes["size"]).reshape(-1, 3),
                                 np.asarray(boxes["yaw"]).reshape(-1))
        for i, (quad, k) in enumerate(zip(corners, np.asarray(boxes["label"], np.int64))):
            if not (np.abs(quad) <= half_m).all():
                continue
            name = classes[k]
            c = colour.get(name, (0.0, 0.0, 0.0))
            ax.add_patch(Polygon(quad, closed=True, fill=False, edgecolor=c, linewidth=1.6 if style == "-" else 0.9,
                                 linestyle=style))
            centre, front = quad.mean(0), quad[:2].mean(0)
            ax.plot([centre[0], front[0]], [centre[1], front[1]], color=c, linewidth=0.8, linestyle=style)
            if style == "--":
                ax.text(quad[:, 0].max(), quad[:, 1].max(), f"{float(boxes['score'][i]):.2f}", fontsize=5, color=c)
            drawn.add(name)
    handles = [Line2D([], [], color="black", linestyle="-", label="truth"),
               Line2D([], [], color="black", linestyle="--", label="predicted (score)")]
    handles += [Line2D([], [], color=colour[n], linewidth=2, label=n) for n in DETECTION_CLASSES if n in drawn]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=2, framealpha=0.85)
    ax.set_xlim(-half_m, half_m)
    ax.set_ylim(-half_m, half_m)
    ax.set_aspect("equal")
    ax.set_xlabel("x (m), LiDAR frame", fontsize=8)
    ax.set_ylabel("y (m)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(title, fontsize=9)
    return fig
