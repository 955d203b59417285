"""Pictures of runs and results: training curves of run directories (``cdtrain plot``), the per-class IoU
and confusion matrix of an evaluation (``cdtrain evaluate --out``), and paired differences with their
confidence intervals (``benchmarks/paper_table.py``).

A run directory is what ``cdtrain pretrain`` writes (``metrics.jsonl``: one line per step with
``distill``, ``occ``, ``loss``, ``lr``, ``occ_bal_acc``, and ``rankme`` at checkpoints) or what
``cdtrain finetune`` writes (``curve.jsonl``: ``train_loss`` and the held-out ``val_miou`` every
``--eval-every`` steps). Per-step series are drawn raw (faint) with an exponential moving average over
them (``smooth``).

matplotlib is imported where it is used, and only its object API (``Figure``): no pyplot state, no
backend switched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# series drawn, in this order: key in the run's files -> (panel title, smoothed?, scale drawn)
SERIES = {
    "distill": ("distillation loss", True, 1.0),
    "occ": ("occupancy loss", True, 1.0),
    "loss": ("total loss (pretraining)", True, 1.0),
    "lr": ("learning rate", False, 1.0),
    "occ_bal_acc": ("occupancy balanced accuracy (training batches)", True, 1.0),
    "rankme": ("RankMe of backbone features (at checkpoints)", False, 1.0),
    "train_loss": ("fine-tuning loss (mean since last point)", False, 1.0),
    "val_miou": ("held-out val mIoU, % (fine-tuning)", False, 100.0),
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


def plot_runs(run_dirs: list[str], out: str | os.PathLike, dpi: int = 100) -> Path:
    """One panel per series that any run logged (``SERIES``), every run overlaid in its own colour and
    named in the legend; per-step series raw and smoothed."""
    from matplotlib.figure import Figure

    runs = [read_run(d, n) for d, n in zip(run_dirs, run_names(run_dirs))]
    keys = [k for k in SERIES if any(k in r.series for r in runs)]
    cols = min(3, len(keys))
    rows = -(-len(keys) // cols)
    fig = Figure(figsize=(4.6 * cols, 3.1 * rows + 0.5), dpi=dpi, facecolor="white", layout="constrained")
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for i, key in enumerate(keys):
        title, smoothed, scale = SERIES[key]
        ax = fig.add_subplot(rows, cols, i + 1)
        for run, colour in zip(runs, colours):
            if key not in run.series:
                continue
            steps, values = run.series[key]
            values = scale * values
            if smoothed and len(values) > 2:
                ax.plot(steps, values, color=colour, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smooth(values), color=colour, linewidth=1.6, label=run.name)
            else:
                ax.plot(steps, values, color=colour, linewidth=1.4, marker="o" if len(values) <= 30 else None,
                        markersize=3, label=run.name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
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
    fig.savefig(out, dpi=dpi, facecolor="white")
    return Path(out)


def evaluation_paths(json_path: str | os.PathLike) -> tuple[Path, Path]:
    """Where ``plot_evaluation`` writes beside ``json_path``: STEM_iou.png and STEM_confusion.png."""
    stem = Path(json_path)
    stem = stem.with_suffix("") if stem.suffix.lower() == ".json" else stem
    return stem.with_name(stem.name + "_iou.png"), stem.with_name(stem.name + "_confusion.png")


def plot_evaluation(result: dict, json_path: str | os.PathLike, dpi: int = 100) -> tuple[Path, Path]:
    """Two PNGs beside an evaluation's JSON (``trainer.evaluate.scores`` plus ``robustness``): the IoU of
    each class as bars, with the mIoU and, when scored, each corruption's IoU as markers; and the confusion
    matrix normalised by row (each true class's points, spread over the predictions)."""
    from matplotlib.figure import Figure

    iou_path, conf_path = evaluation_paths(json_path)
    names = list(result["iou"])
    present = set(result["classes"])
    about = (f"{result.get('split', '?')} split, {result.get('sweeps', '?')} sweeps"
             + (f"; segmenter {result['segmenter']}" if result.get("segmenter") else ""))

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
    ax.set_title(f"per-class IoU: {about}", fontsize=9)
    fig.savefig(iou_path, dpi=dpi, facecolor="white")

    norm = row_normalised(result["confusion"])
    totals = np.asarray(result["confusion"])[1:, 1:].sum(1, keepdims=True)
    fig = Figure(figsize=(8.2, 7.4), dpi=dpi, facecolor="white", layout="constrained")
    ax = fig.add_subplot()
    ax.set_facecolor("0.85")  # rows without truth
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for t, p in zip(*np.nonzero(norm >= 0.01)):
        ax.text(p, t, f"{100 * norm[t, p]:.0f}", ha="center", va="center", fontsize=6,
                color="white" if norm[t, p] > 0.6 else "black")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(ticks, [f"{n} ({int(totals[i, 0])})" for i, n in enumerate(names)], fontsize=7)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("true class (points)", fontsize=9)
    ax.set_title(f"confusion matrix, % of each true class's points: {about}", fontsize=9)
    fig.colorbar(image, ax=ax, shrink=0.7, label="fraction of the row")
    fig.savefig(conf_path, dpi=dpi, facecolor="white")
    return iou_path, conf_path


def row_normalised(confusion) -> np.ndarray:
    """The confusion matrix [K+1, K+1] (index 0: ignore) without its ignore row and column, each row divided
    by its sum: [K, K], row t = how the points of true class t were predicted (NaN for a class absent
    from the truth)."""
    conf = np.asarray(confusion, np.float64)[1:, 1:]
    totals = conf.sum(1, keepdims=True)
    return np.divide(conf, totals, out=np.full_like(conf, np.nan), where=totals > 0)


@dataclass(frozen=True)
class Difference:
    """One paired difference ``label`` (row a minus row b) over seeds: its per-seed values, their mean
    and a confidence interval [lo, hi]."""

    label: str
    per_seed: np.ndarray
    mean: float
    lo: float
    hi: float


def plot_paired_differences(panels: dict[str, list[Difference]], out: str | os.PathLike, title: str,
                            dpi: int = 100) -> Path:
    """One panel per measure (``panels``: title -> differences): each difference's mean (dot), its
    interval (bar) and its per-seed values (small grey dots), against a line at 0 (no difference)."""
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
            colour = "C2" if d.lo > 0 else "C3" if d.hi < 0 else "0.3"  # interval clear of 0, or not
            jitter = np.linspace(-0.12, 0.12, len(d.per_seed)) if len(d.per_seed) > 1 else np.zeros(1)
            ax.plot(d.per_seed, yy + jitter, linestyle="none", marker="o", markersize=3, color="0.6")
            ax.plot([d.lo, d.hi], [yy, yy], color=colour, linewidth=2.2, solid_capstyle="butt")
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
