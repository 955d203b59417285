"""``cdtrain``: the training half of the tool (distil the LiDAR student from a store, evaluate it)."""

from __future__ import annotations

import os

import typer

app = typer.Typer(help="cdtrain: Zarr store -> batches -> sparse student + heads -> checkpoints, metrics.",
                  no_args_is_help=True, add_completion=False)


def fail(message: str, code: int = 2):
    """Print one line on stderr and exit (2: bad input, found before any work)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def main() -> None:
    """Train and evaluate LiDAR students from teacher-feature stores written by ``cdpipe extract``."""


@app.command()
def info() -> None:
    """Print the training environment: torch, CPU threads, accelerator, whether torchsparse is installed."""
    import importlib.util

    import torch

    typer.echo(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available():
        typer.echo(f"accelerator: CUDA, {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}")
    else:
        typer.echo("accelerator: none (training runs on the CPU)")
    has_ts = importlib.util.find_spec("torchsparse") is not None
    typer.echo(f"torchsparse: {'installed' if has_ts else 'not installed'}"
               + (" (used for submanifold convolutions where it calibrates against the built-in backend; "
                  "CD_SPARSE_BACKEND=builtin|torchsparse|auto)" if has_ts else ""))


@app.command()
def pretrain(
    store: str = typer.Option(..., "--store", help="Teacher-feature store (path or URL) written by cdpipe extract."),
    out: str = typer.Option(..., "--out", help="Run directory: checkpoint.pt, metrics.jsonl."),
    model: str = typer.Option("minkunet34", help="Backbone: minkunet34, minkunet18, minkunet14, minkunet-small, "
                                                 "minkunet-tiny."),
    head_layers: int = typer.Option(3, help="Projection head layers (1 = linear)."),
    head_hidden: int = typer.Option(512, help="Hidden width of the MLP head."),
    loss: str = typer.Option("cosine", help="Distillation loss: cosine or l2."),
    occ_weight: float = typer.Option(1.0, help="Weight of the occupancy loss (0 disables the task)."),
    mask_ratio: tuple[float, float] = typer.Option(None, help="Occupancy task: each step hides this fraction "
                                                   "(uniform between the two) of the sweep's cubes from the student "
                                                   "and asks about them (default: 0.3 0.5, or 0 0 with --occ-weight "
                                                   "0, which has no task to hide points for)."),
    mask_cell: float = typer.Option(2.0, help="Occupancy task: edge of the hidden cubes (m), a multiple of the "
                                              "store's occupancy voxel."),
    max_points: int = typer.Option(0, help="Keep a random subset of this many points of each sweep (0: all); "
                                           "cheaper steps on a CPU."),
    steps: int = typer.Option(200, help="Optimisation steps."),
    batch_size: int = typer.Option(2, help="Sweeps per batch."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(20, help="Warm-up steps."),
    voxel_size: float = typer.Option(0.1, help="Voxel size (m)."),
    split: str = typer.Option("train", help="Store scenes to train on: train, val or all."),
    workers: int = typer.Option(0, help="DataLoader worker processes (spawned)."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt (refused, naming the "
                                "settings, if they differ from the checkpoint's)."),
    force_config: bool = typer.Option(False, "--force-config", help="With --resume: continue even though data or "
                                      "training settings (or the store) differ from the checkpoint's; the model "
                                      "must be the same."),
    skip_bad_sweeps: bool = typer.Option(False, "--skip-bad-sweeps", help="Record training sweeps whose chunks do "
                                         "not decode in OUT/skipped_sweeps.jsonl and train on (default: stop on "
                                         "the first)."),
):
    """Distil the LiDAR student from a teacher-feature store (no teacher in memory)."""
    if force_config and not resume:
        raise typer.BadParameter("--force-config goes with --resume")
    from pipeline.store import StoreError
    from trainer.data import DataConfig
    from trainer.model import ModelConfig
    from trainer.occupancy import MaskConfig
    from trainer.train import TrainConfig
    from trainer.train import pretrain as run

    try:
        from pipeline.store import open_store

        feature_dim = int(open_store(store).attrs["feature_dim"])
        mcfg = ModelConfig(arch=model, feature_dim=feature_dim, head_layers=head_layers, head_hidden=head_hidden)
        if mask_ratio is None:  # the occupancy task's mask, only when there is a task
            mask_ratio = MaskConfig().ratio if occ_weight > 0 else (0.0, 0.0)
        dcfg = DataConfig(store=store, split=split, voxel_size=voxel_size, seed=seed, mask_ratio=mask_ratio,
                          mask_cell=mask_cell, max_points=max_points)
        tcfg = TrainConfig(out=out, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, loss=loss,
                           occ_weight=occ_weight, workers=workers, checkpoint_every=checkpoint_every, seed=seed,
                           skip_bad_sweeps=skip_bad_sweeps)
        result = run(mcfg, dcfg, tcfg, resume=resume, force_config=force_config)
    except (StoreError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}{_skip_hint(e)}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        _interrupted(os.path.join(out, "checkpoint.pt"), "cdtrain pretrain ... --resume")
    m = result["metrics"]
    first = _first_metrics(out)
    typer.echo(f"\npretrained {model} for {result['step']} steps on {store}")
    def shown(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    typer.echo(f"  distillation loss {shown(first.get('distill'))} -> {shown(m.get('distill'))}"
               + (f", occupancy loss {shown(first.get('occ'))} -> {shown(m['occ'])}" if "occ" in m else ""))
    typer.echo(f"  checkpoint {result['checkpoint']}, metrics {out}/metrics.jsonl")
    _report_skipped(out)
    from trainer.sparse import backend_name

    typer.echo(f"  sparse convolution: {backend_name()}")


def _interrupted(path: str, again: str) -> None:
    """Ctrl-C: say which checkpoint survives (and its step) and how to go on, then exit 130."""
    import torch

    try:
        step = torch.load(path, map_location="cpu", weights_only=True).get("step") if os.path.exists(path) else None
    except Exception:  # a file being replaced at that instant
        step = None
    where = (f"the last checkpoint is {path} (step {step}); continue with `{again}`" if step is not None
             else f"no checkpoint was written yet ({path}); start again")
    typer.echo(f"\ninterrupted: {where}", err=True)
    raise typer.Exit(130)


def _skip_hint(error: Exception) -> str:
    from pipeline.store import BadSweep

    return "; --skip-bad-sweeps trains past damaged sweeps, recording them" if isinstance(error, BadSweep) else ""


def _report_skipped(out: str) -> None:
    """Name the damaged sweeps that --skip-bad-sweeps left out, if any."""
    import json

    path = os.path.join(out, "skipped_sweeps.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            sweeps = sorted({json.loads(line)["sweep"] for line in f if line.strip()})
        typer.echo(f"  skipped {len(sweeps)} damaged sweeps ({', '.join(map(str, sweeps))}): see {path}", err=True)


def _first_metrics(out: str) -> dict:
    import json

    path = os.path.join(out, "metrics.jsonl")
    with open(path) as f:
        line = f.readline()
    return json.loads(line) if line else {}


@app.command()
def finetune(
    store: str = typer.Option(..., "--store", help="Store with lidarseg labels."),
    out: str = typer.Option(..., "--out", help="Run directory: segmenter.pt, result.json, curve.jsonl."),
    checkpoint: str = typer.Option(None, help="Pretraining checkpoint (omit: random initialisation, the baseline)."),
    model: str = typer.Option(None, help="Backbone (default: the checkpoint's, else minkunet34)."),
    labels_percent: float = typer.Option(100.0, help="Percent of the train sweeps labelled (whole scenes)."),
    linear_probe: bool = typer.Option(False, "--linear-probe", help="Freeze the backbone and fit a softmax "
                                      "regression on its features to convergence (L-BFGS) instead of training; "
                                      "the step, rate and point-cap options do not apply."),
    probe_points: int = typer.Option(2000, help="Linear probe: labelled points per train sweep in the fit."),
    lovasz: bool = typer.Option(False, "--lovasz", help="Add the Lovasz-softmax loss to cross-entropy."),
    steps: int = typer.Option(200, help="Optimisation steps."),
    batch_size: int = typer.Option(2, help="Sweeps per batch."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(10, help="Warm-up steps (0: none)."),
    max_points: int = typer.Option(0, help="Keep a random subset of this many points of each training sweep "
                                           "(0: all); evaluation sees every point."),
    eval_every: int = typer.Option(0, help="Also measure val mIoU every this many steps into OUT/curve.jsonl."),
    checkpoint_every: int = typer.Option(100, help="Steps between rewrites of OUT/segmenter.pt."),
    voxel_size: float = typer.Option(0.1, help="Voxel size (m)."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when there is one)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/segmenter.pt (refused, naming the "
                                "settings, if they differ from the file's)."),
    force_config: bool = typer.Option(False, "--force-config", help="With --resume: continue even though the "
                                      "fine-tuning settings (or the store) differ from the file's."),
    seed: int = typer.Option(0, help="Seed of the label subset, initialisation and data order."),
    skip_bad_sweeps: bool = typer.Option(False, "--skip-bad-sweeps", help="Record training sweeps whose chunks do "
                                         "not decode in OUT/skipped_sweeps.jsonl and train on (default: stop on "
                                         "the first)."),
):
    """Semantic segmentation on the store's labels (fine-tuning or linear probe), evaluated on val."""
    from pipeline.store import StoreError
    from trainer.checkpoint import pretraining_arch

    arch = model
    device = device or _default_device()
    if linear_probe and resume:
        raise typer.BadParameter("--resume is for fine-tuning; a linear probe is refitted from scratch in seconds")
    if force_config and not resume:
        raise typer.BadParameter("--force-config goes with --resume")
    if linear_probe and skip_bad_sweeps:
        raise typer.BadParameter("--skip-bad-sweeps is for training; a probe fits and scores a fixed set of sweeps")
    try:
        if arch is None:
            arch = pretraining_arch(checkpoint) if checkpoint else "minkunet34"
        if linear_probe:
            from trainer.probe import ProbeConfig
            from trainer.probe import linear_probe as fit

            result = fit(store, checkpoint, arch, ProbeConfig(out=out, labels_percent=labels_percent,
                                                              points_per_sweep=probe_points, seed=seed),
                         voxel_size=voxel_size, device=device)
        else:
            from trainer.finetune import FinetuneConfig
            from trainer.finetune import finetune as run

            cfg = FinetuneConfig(out=out, labels_percent=labels_percent, steps=steps, batch_size=batch_size, lr=lr,
                                 warmup=warmup, lovasz=lovasz, max_points=max_points, eval_every=eval_every,
                                 checkpoint_every=checkpoint_every, seed=seed)
            result = run(store, checkpoint, arch, cfg, voxel_size=voxel_size, device=device, resume=resume,
                         skip_bad_sweeps=skip_bad_sweeps, force_config=force_config)
    except (StoreError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}{_skip_hint(e)}", err=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if linear_probe:
            typer.echo("\ninterrupted: a linear probe keeps no checkpoint; run it again", err=True)
            raise typer.Exit(130) from None
        _interrupted(os.path.join(out, "segmenter.pt"), "cdtrain finetune ... --resume")
    print_result(result)
    typer.echo(f"  wrote {os.path.join(out, 'result.json')} and {os.path.join(out, 'segmenter.pt')}"
               + ("" if linear_probe else f", the curve in {os.path.join(out, 'curve.jsonl')}"))
    _report_skipped(out)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def print_result(result: dict) -> None:
    kind = "linear probe" if result.get("linear_probe") else "fine-tuning"
    typer.echo(f"\n{kind} from {result.get('init', '?')}, {result.get('labels_percent', '?')}% labels "
               f"({len(result.get('label_scenes', []))} scenes); {result['split']}: {result['sweeps']} sweeps")
    if result.get("probe_fit"):
        fit = result["probe_fit"]
        typer.echo(f"  probe fit: {fit['rounds']} rounds of L-BFGS, final loss {fit['final_loss']:.4f}"
                   + ("" if fit["converged"] else " (NOT converged: see probe_fit in result.json)"))
    for name, iou in result["iou"].items():
        typer.echo(f"  {name:<20} {'   -' if iou is None else f'{100 * iou:5.1f}'}")
    typer.echo(f"  {'mIoU':<20} {100 * result['miou']:5.1f}  (over the {len(result['classes'])} classes present in "
               f"{result['split']})")


@app.command()
def evaluate(
    store: str = typer.Option(..., "--store", help="Store with lidarseg labels."),
    checkpoint: str = typer.Option(..., "--checkpoint", help="segmenter.pt written by cdtrain finetune."),
    split: str = typer.Option("val", help="Scenes to evaluate: val, train or all."),
    out: str = typer.Option(None, help="Write the result (IoUs, mIoU, confusion matrix) as JSON here."),
    corruption: list[str] = typer.Option(None, help="Also evaluate under KIND:SEVERITY (repeatable): "
                                                    "beams_missing:0.25, sparser_sensor:2, jitter:0.05, fog:0.02."),
    device: str = typer.Option(None, help="cpu, cuda or cuda:N (default: cuda when there is one)."),
):
    """Per-class IoU, mIoU and confusion matrix of a fine-tuned segmenter (its voxel size and classes come
    from the file); with --corruption, the mIoU under each corruption and its resilience (mIoU corrupted /
    mIoU clean)."""
    import json

    from pipeline.store import StoreError
    from trainer.checkpoint import load_segmenter
    from trainer.corruptions import parse
    from trainer.evaluate import evaluate_model

    try:
        for text in corruption or []:
            parse(text)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    device = device or _default_device()
    try:
        model, record = load_segmenter(checkpoint)
        model.to(device)
        voxel = record["voxel_size"]
        result = evaluate_model(model, store, split, voxel, device=device)
        result.update(init=record.get("init"), linear_probe=record.get("linear_probe"),
                      labels_percent=record.get("labels_percent"), label_scenes=record.get("label_scenes"),
                      segmenter=checkpoint, arch=record["arch"], voxel_size=voxel)
        print_result(result)
        robustness = {}
        for text in corruption or []:
            r = evaluate_model(model, store, split, voxel, corruption=text, device=device, classes=result["classes"])
            resilience = r["miou"] / result["miou"] if result["miou"] else None
            robustness[text] = {"miou": r["miou"], "resilience": resilience, "iou": r["iou"]}
            typer.echo(f"  under {text:<22} mIoU {100 * r['miou']:5.1f}  resilience "
                       + (f"{resilience:.2f}" if resilience is not None else "-"))
    except (StoreError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    result["robustness"] = robustness
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        from trainer.plots import plot_evaluation

        typer.echo(f"  wrote {out}, " + " and ".join(map(str, plot_evaluation(result, out))))


@app.command()
def rankme(
    store: str = typer.Option(..., "--store", help="Store to sample sweeps from."),
    checkpoint: str = typer.Option(..., "--checkpoint", help="Pretraining checkpoint."),
    sweeps: int = typer.Option(8, help="Sweeps sampled."),
    split: str = typer.Option("train", help="Scenes to sample: train (as the table reports), val or all."),
):
    """RankMe of the backbone's point features (higher = less collapsed)."""
    from pipeline.store import StoreError
    from trainer.evaluate import store_rankme

    try:
        value, used = store_rankme(store, checkpoint, sweeps, split=split)
    except (StoreError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"RankMe {value:.1f} ({checkpoint}, {used} {split} sweeps of {store})")


@app.command()
def plot(
    runs: list[str] = typer.Argument(..., help="Run directories of cdtrain pretrain or finetune (overlaid)."),
    out: str = typer.Option(..., "--out", help="PNG to write."),
):
    """Training curves of one or more runs: distillation, occupancy and total loss (raw and smoothed), learning
    rate, RankMe, and the fine-tuning loss and held-out mIoU, each where the runs logged it."""
    from trainer.plots import plot_runs

    if not out.lower().endswith(".png"):
        fail(f"--out {out}: the plot is a PNG; name it FILE.png")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        fail(f"--out {out}: no folder {os.path.dirname(os.path.abspath(out))}")
    try:
        path = plot_runs(runs, out)
    except (FileNotFoundError, ValueError) as e:
        fail(str(e))
    typer.echo(f"{path}: {len(runs)} run{'s' if len(runs) != 1 else ''}")


def console_script() -> None:
    """The installed script (pyproject.toml's [project.scripts])."""
    from pipeline.errors import run_cli

    run_cli(app)


if __name__ == "__main__":
    console_script()
