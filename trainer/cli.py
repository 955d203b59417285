"""``cdtrain``: the training half of the tool (distil the LiDAR student from a store, evaluate it).

Every option's default is its config field's default (``trainer/config.py``); the conventions shared with
``cdpipe`` (``--store``, ``--device``, ``--json``, one-line errors) are ``pipeline/dialect.py``'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Literal

import typer

from pipeline.dialect import DEVICE_HELP, JSON_HELP, STORE_HELP, absolute, fail, given, new_app, plural
from trainer.config import (
    ARCHS,
    CPU_SIZED_ARCHS,
    DISTILLATION_LOSSES,
    LABEL_UNITS,
    STORE_SPLITS,
    DataConfig,
    DetectionConfig,
    FinetuneConfig,
    ModelConfig,
    ProbeConfig,
    TrainConfig,
)

Arch = Literal[tuple(ARCHS)]
Loss = Literal[DISTILLATION_LOSSES]
Split = Literal[STORE_SPLITS]
LabelsUnit = Literal[LABEL_UNITS]
FINETUNE_TASKS = ("segmentation", "detection")
Task = Literal[FINETUNE_TASKS]

app = new_app("cdtrain: Zarr store -> batches -> sparse student + heads -> checkpoints, metrics.")


@app.callback()
def main() -> None:
    """Train and evaluate LiDAR students from teacher-feature stores written by ``cdpipe extract``."""


def _emit(report: dict, as_json: bool) -> bool:
    """Print ``report`` as JSON when asked; True when it was (the human summary is then left out)."""
    if as_json:
        from trainer.run import finite

        typer.echo(json.dumps(finite(report), indent=1, default=str))
    return as_json


@app.command()
def env(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Print the training environment: torch, CPU threads, accelerator, whether torchsparse is installed."""
    import importlib.util

    import torch

    cuda = torch.cuda.is_available()
    report = {"torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
              "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
              "torchsparse": importlib.util.find_spec("torchsparse") is not None}
    if _emit(report, as_json):
        return
    typer.echo(f"torch {report['torch']}, {report['cpu_threads']} CPU threads")
    typer.echo(f"accelerator: CUDA, {len(report['cuda_devices'])} x {report['cuda_devices'][0]}" if cuda
               else "accelerator: none (training runs on the CPU)")
    typer.echo(f"torchsparse: {'installed' if report['torchsparse'] else 'not installed'}"
               + (" (used for submanifold convolutions where it calibrates against the built-in backend; "
                  "CD_SPARSE_BACKEND=builtin|torchsparse|auto)" if report["torchsparse"] else ""))


@app.command(hidden=True)
def info(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """The old name of `cdtrain env`."""
    env(as_json)


def _config(cls, record: dict, values: dict, ctx: typer.Context, rename: dict | None = None):
    """``cls`` built from ``record`` (a checkpoint's copy of it; empty for a new run) and the options in
    ``values`` named like its fields (or mapped by ``rename``): for a new run every option, for a resumed
    one only those the user gave, so that the checkpoint's settings stand unless a flag changes them."""
    rename = rename or {}
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in record.items() if k in names}
    for param, value in values.items():
        name = rename.get(param, param)
        if name in names and (not record or given(ctx, param)):
            kw[name] = tuple(value) if isinstance(value, list) else value
    return cls(**kw)


def _run_folder(resume: str, out: str | None, name: str, command: str) -> str:
    """The run folder of ``--resume PATH``: PATH's folder (a run continues in its own folder)."""
    folder = os.path.dirname(os.path.abspath(resume))
    if os.path.basename(resume) != name:
        fail(f"--resume {resume}: give the run folder's {name} (written by {command})")
    if out is not None and os.path.abspath(out) != folder:
        fail(f"--resume {resume} continues the run in {folder}; drop --out {out} (or copy the run folder there and "
             f"resume from its {name})")
    return folder


def _cpu_hint(arch: str, max_points: int, device: str | None) -> None:
    import torch

    on_cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
    if on_cpu and arch not in CPU_SIZED_ARCHS and not max_points:
        typer.echo(f"note: {arch} on every point of a sweep takes minutes per step on a CPU; for a quick run try "
                   f"--model minkunet-tiny --max-points 20000", err=True)


@app.command()
def pretrain(
    ctx: typer.Context,
    store: str = typer.Option(None, "--store", metavar="STORE", help=STORE_HELP + " Written by cdpipe extract; "
                              "needed unless --resume (then the checkpoint's)."),
    out: str = typer.Option(None, "--out", metavar="DIR", help="Run folder to write: checkpoint.pt, metrics.jsonl "
                            "(needed unless --resume, which continues in the checkpoint's folder)."),
    model: Arch = typer.Option(ModelConfig.arch, help="Backbone (minkunet-tiny and -small are sized for a CPU)."),
    head_layers: int = typer.Option(ModelConfig.head_layers, help="Projection head layers (1 = linear)."),
    head_hidden: int = typer.Option(ModelConfig.head_hidden, help="Hidden width of the MLP head."),
    loss: Loss = typer.Option(TrainConfig.loss, help="Distillation loss."),
    occ_weight: float = typer.Option(TrainConfig.occ_weight, help="Weight of the occupancy loss (0 disables the "
                                     "task)."),
    mask_ratio: tuple[float, float] = typer.Option(None, metavar="LOW HIGH", help="Occupancy task: each step hides "
                                                   "this fraction (uniform between the two) of the sweep's cubes from "
                                                   "the student and asks about them (default: 0.3 0.5 with the "
                                                   "occupancy task, 0 0 with --occ-weight 0)."),
    mask_cell: float = typer.Option(DataConfig.mask_cell, help="Occupancy task: edge of the hidden cubes (m), a "
                                    "multiple of the store's occupancy voxel."),
    max_points: int = typer.Option(DataConfig.max_points, help="Keep a random subset of this many points of each "
                                   "sweep (0: all); cheaper steps on a CPU."),
    steps: int = typer.Option(TrainConfig.steps, help="Optimisation steps."),
    batch_size: int = typer.Option(TrainConfig.batch_size, help="Sweeps per batch."),
    lr: float = typer.Option(TrainConfig.lr, help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(TrainConfig.warmup, help="Warm-up steps."),
    voxel_size: float = typer.Option(DataConfig.voxel_size, help="Voxel size (m)."),
    split: Split = typer.Option(DataConfig.split, help="Store scenes to train on."),
    workers: int = typer.Option(TrainConfig.workers, help="Data loader worker processes (0: in this process)."),
    checkpoint_every: int = typer.Option(TrainConfig.checkpoint_every, help="Steps between checkpoints."),
    seed: int = typer.Option(TrainConfig.seed, help="Seed of initialisation, data order and augmentation."),
    device: str = typer.Option(None, metavar="DEVICE", help=DEVICE_HELP),
    resume: str = typer.Option(None, "--resume", metavar="CHECKPOINT", help="Continue the run of this checkpoint.pt "
                               "with its settings; a flag given that differs from them is refused, naming it, "
                               "unless it may change (--out, --workers, --checkpoint-every, --skip-bad-sweeps, "
                               "--store of the same data) or --force-config is given."),
    force_config: bool = typer.Option(False, "--force-config", help="With --resume: continue even though data or "
                                      "training settings (or the store) differ from the checkpoint's; the model "
                                      "must be the same."),
    skip_bad_sweeps: bool = typer.Option(TrainConfig.skip_bad_sweeps, "--skip-bad-sweeps", help="Record training "
                                         "sweeps whose chunks do not decode in OUT/skipped_sweeps.jsonl and train on "
                                         "(default: stop on the first)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Distil the LiDAR student from a teacher-feature store (no teacher in memory)."""
    from pipeline.dialect import check_device

    if force_config and not resume:
        fail("--force-config goes with --resume")
    store = absolute(store)
    values = dict(locals())
    from pipeline.store import StoreError
    from trainer.checkpoint import read_checkpoint
    from trainer.train import pretrain as run

    try:
        if resume:
            out = _run_folder(resume, out, "checkpoint.pt", "cdtrain pretrain")
            ck = read_checkpoint(resume)
            if "train_config" not in ck:
                raise ValueError(f"--resume {resume} is not a pretraining checkpoint (cdtrain pretrain writes one)")
            records = {k: ck[k] for k in ("model_config", "data_config", "train_config")}
        elif store is None or out is None:
            fail("cdtrain pretrain needs --store STORE and --out DIR (or --resume CHECKPOINT)")
        else:
            records = {"model_config": {}, "data_config": {}, "train_config": {}}
        values.update(out=out)
        mcfg = _config(ModelConfig, records["model_config"], values, ctx, {"model": "arch"})
        if not resume:  # the head outputs the store's teacher feature size
            from pipeline.store import open_store

            mcfg = dataclasses.replace(mcfg, feature_dim=int(open_store(store).attrs["feature_dim"]))
        dcfg = _config(DataConfig, records["data_config"], values, ctx)
        tcfg = _config(TrainConfig, records["train_config"], values, ctx)
        if resume:  # the folder it lies in now, wherever the run was first written
            tcfg = dataclasses.replace(tcfg, out=out)
        dev = check_device(device) if device else None
        _cpu_hint(mcfg.arch, dcfg.max_points, dev)
        result = run(mcfg, dcfg, tcfg, resume=bool(resume), force_config=force_config, device=dev,
                     progress=not as_json)
    except (StoreError, ValueError, FileNotFoundError) as e:
        fail(f"{e}{_skip_hint(e)}")
    except KeyboardInterrupt:
        _interrupted(os.path.join(out, "checkpoint.pt"), "cdtrain pretrain --resume")
    m = result["metrics"]
    first = _first_metrics(out)
    skipped = _skipped(out)
    if _emit({"run": out, "model": mcfg.arch, "store": dcfg.store, "step": result["step"],
              "checkpoint": result["checkpoint"], "metrics": os.path.join(out, "metrics.jsonl"),
              "first_metrics": first, "last_metrics": m, "config_changes": result["config_changes"],
              "skipped_sweeps": skipped}, as_json):
        return

    def shown(value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    typer.echo(f"\npretrained {mcfg.arch} for {result['step']} steps on {dcfg.store}")
    typer.echo(f"  distillation loss {shown(first.get('distill'))} -> {shown(m.get('distill'))}"
               + (f", occupancy loss {shown(first.get('occ'))} -> {shown(m['occ'])}" if "occ" in m else ""))
    typer.echo(f"  checkpoint {result['checkpoint']}, metrics {out}/metrics.jsonl")
    _report_skipped(out, skipped)
    from trainer.sparse import backend_name

    typer.echo(f"  sparse convolution: {backend_name()}")


def _interrupted(path: str, again: str) -> None:
    """Ctrl-C: say which checkpoint survives (and its step) and how to go on, then exit 130."""
    import torch

    try:
        step = torch.load(path, map_location="cpu", weights_only=True).get("step") if os.path.exists(path) else None
    except Exception:  # a file being replaced at that instant
        step = None
    where = (f"the last checkpoint is {path} (step {step}); continue with `{again} {path}`" if step is not None
             else f"no checkpoint was written yet ({path}); start again")
    typer.echo(f"\ninterrupted: {where}", err=True)
    raise typer.Exit(130)


def _skip_hint(error: Exception) -> str:
    from pipeline.store import BadSweep

    return "; --skip-bad-sweeps trains past damaged sweeps, recording them" if isinstance(error, BadSweep) else ""


def _skipped(out: str) -> list[int]:
    """The damaged sweeps that --skip-bad-sweeps left out of the run in ``out``."""
    from trainer.run import SKIPPED_SWEEPS

    path = os.path.join(out, SKIPPED_SWEEPS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return sorted({json.loads(line)["sweep"] for line in f if line.strip()})


def _report_skipped(out: str, sweeps: list[int]) -> None:
    if sweeps:
        from trainer.run import SKIPPED_SWEEPS

        typer.echo(f"  skipped {len(sweeps)} damaged sweeps ({', '.join(map(str, sweeps))}): see "
                   f"{os.path.join(out, SKIPPED_SWEEPS)}", err=True)


def _first_metrics(out: str) -> dict:
    path = os.path.join(out, "metrics.jsonl")
    with open(path) as f:
        line = f.readline()
    return json.loads(line) if line else {}


def _pretrained(new: str | None, old: str | None) -> str | None:
    """``--pretrained``, or its old spelling ``--checkpoint`` (hidden, kept for one release)."""
    if new and old and new != old:
        fail(f"--pretrained {new} and --checkpoint {old}: give one (--checkpoint is the old name of --pretrained)")
    return new or old


@app.command()
def finetune(
    ctx: typer.Context,
    store: str = typer.Option(None, "--store", metavar="STORE", help=STORE_HELP + " It must hold lidarseg labels "
                              "(segmentation) or boxes (detection); needed unless --resume (then the file's)."),
    out: str = typer.Option(None, "--out", metavar="DIR", help="Run folder to write: segmenter.pt (detection: "
                            "detector.pt), result.json, curve.jsonl (needed unless --resume)."),
    task: Task = typer.Option("segmentation", help="What to fine-tune: a segmenter on the lidarseg labels, or a "
                              "CenterPoint-style detector on the annotated boxes (default: the --resume file's, "
                              "else segmentation)."),
    pretrained: str = typer.Option(None, "--pretrained", metavar="CHECKPOINT", help="Backbone from this pretraining "
                                   "checkpoint (cdtrain pretrain's checkpoint.pt); omit for random initialisation, "
                                   "the baseline."),
    checkpoint: str = typer.Option(None, "--checkpoint", hidden=True, help="Old name of --pretrained."),
    model: Arch = typer.Option(None, help="Backbone (default: the checkpoint's, else minkunet34)."),
    labels_percent: float = typer.Option(FinetuneConfig.labels_percent, help="Percent of the train sweeps labelled "
                                         "(whole scenes, or single sweeps with --labels-unit sweeps)."),
    labels_unit: LabelsUnit = typer.Option(FinetuneConfig.labels_unit, help="What the labelled subset is drawn "
                                           "in: whole train scenes, or single train sweeps (scans; at least one)."),
    linear_probe: bool = typer.Option(False, "--linear-probe", help="Freeze the backbone and fit a softmax "
                                      "regression on its features to convergence (L-BFGS) instead of training; "
                                      "the step, rate and point-cap options do not apply."),
    probe_points: int = typer.Option(ProbeConfig.points_per_sweep, help="Linear probe: labelled points per train "
                                     "sweep in the fit (0: all)."),
    lovasz: bool = typer.Option(FinetuneConfig.lovasz, "--lovasz", help="Add the Lovasz-softmax loss to "
                                "cross-entropy."),
    steps: int = typer.Option(FinetuneConfig.steps, help="Optimisation steps."),
    batch_size: int = typer.Option(FinetuneConfig.batch_size, help="Sweeps per batch."),
    lr: float = typer.Option(FinetuneConfig.lr, help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(FinetuneConfig.warmup, help="Warm-up steps (0: none)."),
    max_points: int = typer.Option(FinetuneConfig.max_points, help="Keep a random subset of this many points of each "
                                   "training sweep (0: all); evaluation sees every point."),
    eval_every: int = typer.Option(FinetuneConfig.eval_every, help="Also measure val mIoU (detection: val loss and "
                                   "centre-distance AP at 2 m) every this many steps into OUT/curve.jsonl (0: at the "
                                   "end only)."),
    checkpoint_every: int = typer.Option(FinetuneConfig.checkpoint_every, help="Steps between rewrites of "
                                         "OUT/segmenter.pt (or detector.pt)."),
    voxel_size: float = typer.Option(DataConfig.voxel_size, help="Voxel size (m)."),
    cell_m: float = typer.Option(DetectionConfig.cell_m, help="Detection: edge of the bird's-eye-view grid cells "
                                 "(m); the grid's ranges must span a whole number of them."),
    score_threshold: float = typer.Option(DetectionConfig.score_threshold, help="Detection: decoded boxes scoring "
                                          "below this are dropped."),
    trunk_channels: int = typer.Option(DetectionConfig.trunk_channels, help="Detection: width of the head's 2D "
                                       "conv trunk on the bird's-eye-view grid (32 costs a quarter of 64 on a CPU)."),
    device: str = typer.Option(None, metavar="DEVICE", help=DEVICE_HELP),
    resume: str = typer.Option(None, "--resume", metavar="SEGMENTER", help="Continue the fine-tuning of this "
                               "segmenter.pt (or detector.pt) with its settings; a flag given that differs from them "
                               "is refused, naming it, unless it may change (--out, --checkpoint-every, "
                               "--eval-every) or --force-config is given."),
    force_config: bool = typer.Option(False, "--force-config", help="With --resume: continue even though the "
                                      "fine-tuning settings (or the store) differ from the file's."),
    seed: int = typer.Option(FinetuneConfig.seed, help="Seed of the label subset, initialisation and data order."),
    skip_bad_sweeps: bool = typer.Option(False, "--skip-bad-sweeps", help="Record training sweeps whose chunks do "
                                         "not decode in OUT/skipped_sweeps.jsonl and train on (default: stop on "
                                         "the first)."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Semantic segmentation on the store's labels (fine-tuning or linear probe), or 3D detection on its boxes
    (--task detection), evaluated on val."""
    from pipeline.dialect import check_device

    pretrained = absolute(_pretrained(pretrained, checkpoint))
    store = absolute(store)
    if linear_probe and resume:
        fail("--resume is for fine-tuning; a linear probe is refitted from scratch in seconds")
    if force_config and not resume:
        fail("--force-config goes with --resume")
    if linear_probe and skip_bad_sweeps:
        fail("--skip-bad-sweeps is for training; a probe fits and scores a fixed set of sweeps")
    if linear_probe and labels_unit != "scenes":
        fail(f"--labels-unit {labels_unit} is for fine-tuning; the linear probe labels whole scenes")
    from pipeline.store import StoreError
    from trainer.checkpoint import DETECTOR_KIND, pretraining_arch, read_checkpoint

    try:
        record: dict = {}
        if resume:
            record = read_checkpoint(resume)
            resumed = "detection" if record.get("kind") == DETECTOR_KIND else "segmentation"
            if given(ctx, "task") and task != resumed:
                fail(f"--resume {resume} is a {resumed} run; drop --task {task}")
            task = resumed
        detection = task == "detection"
        if detection and (linear_probe or lovasz):
            fail(f"--task detection trains a detector; {'--linear-probe' if linear_probe else '--lovasz'} is for "
                 f"segmentation")
        if detection and (given(ctx, "probe_points")):
            fail("--probe-points is for the linear probe of segmentation")
        for flag in ("cell_m", "score_threshold", "trunk_channels"):
            if not detection and given(ctx, flag):
                fail(f"--{flag.replace('_', '-')} is for --task detection")
        values = dict(locals())
        if resume:
            out = _run_folder(resume, out, "detector.pt" if detection else "segmenter.pt", "cdtrain finetune")
            if "finetune_config" not in record:
                raise ValueError(f"--resume {resume} is not a fine-tuning segmenter.pt (a linear probe's file cannot "
                                 f"be resumed)")
            store = store or record.get("store")
            if store is None:
                fail(f"--resume {resume} was written before segmenter files recorded their store: give --store")
            if "pretrained" in record and not given(ctx, "pretrained") and not given(ctx, "checkpoint"):
                pretrained = record["pretrained"]
            elif "pretrained" not in record and pretrained is None:
                init = record.get("init")
                pretrained = None if init in (None, "random initialisation") else init
            model = model or record["arch"]
            voxel_size = voxel_size if given(ctx, "voxel_size") else record["voxel_size"]
        elif store is None or out is None:
            fail("cdtrain finetune needs --store STORE and --out DIR (or --resume SEGMENTER)")
        values.update(out=out)
        arch = model or (pretraining_arch(pretrained) if pretrained else ModelConfig.arch)
        dev = check_device(device)
        if detection:
            from trainer.finetune_detection import finetune_detection

            _cpu_hint(arch, max_points, dev)
            cfg = _config(FinetuneConfig, record.get("finetune_config", {}), values, ctx)
            if resume:
                cfg = dataclasses.replace(cfg, out=out)
            dcfg = _config(DetectionConfig, record.get("detection_config", {}), values, ctx)
            result = finetune_detection(store, pretrained, arch, cfg, dcfg, voxel_size=voxel_size, device=dev,
                                        resume=bool(resume), skip_bad_sweeps=skip_bad_sweeps,
                                        force_config=force_config, progress=not as_json)
        elif linear_probe:
            from trainer.probe import linear_probe as fit

            cfg = _config(ProbeConfig, {}, values, ctx, {"probe_points": "points_per_sweep"})
            result = fit(store, pretrained, arch, cfg, voxel_size=voxel_size, device=dev, progress=not as_json)
        else:
            from trainer.finetune import finetune as run

            _cpu_hint(arch, max_points, dev)
            cfg = _config(FinetuneConfig, record.get("finetune_config", {}), values, ctx)
            if resume:
                cfg = dataclasses.replace(cfg, out=out)
            result = run(store, pretrained, arch, cfg, voxel_size=voxel_size, device=dev, resume=bool(resume),
                         skip_bad_sweeps=skip_bad_sweeps, force_config=force_config, progress=not as_json)
    except (StoreError, ValueError, FileNotFoundError) as e:
        fail(f"{e}{_skip_hint(e)}")
    except KeyboardInterrupt:
        if linear_probe:
            typer.echo("\ninterrupted: a linear probe keeps no checkpoint; run it again", err=True)
            raise typer.Exit(130) from None
        _interrupted(os.path.join(out, "detector.pt" if detection else "segmenter.pt"), "cdtrain finetune --resume")
    skipped = _skipped(out)
    if _emit(result | {"run": out, "skipped_sweeps": skipped}, as_json):
        return
    if detection:
        print_detection_result(result)
        typer.echo(f"  wrote {os.path.join(out, 'result.json')} and {os.path.join(out, 'detector.pt')}, the curve in "
                   f"{os.path.join(out, 'curve.jsonl')}")
        _report_skipped(out, skipped)
        return
    print_result(result)
    typer.echo(f"  wrote {os.path.join(out, 'result.json')} and {os.path.join(out, 'segmenter.pt')}"
               + ("" if linear_probe else f", the curve in {os.path.join(out, 'curve.jsonl')}"))
    _report_skipped(out, skipped)


def print_detection_result(result: dict) -> None:
    ap = result["centre_distance_ap_2m"]
    typer.echo(f"\ndetection fine-tuning from {result.get('init', '?')}, {result.get('labels_percent', '?')}% labels "
               f"({plural(len(result.get('label_scenes', [])), 'scene')}); {result['split']}: "
               f"{plural(result['sweeps'], 'sweep')}")
    for name, value in result["ap_per_class"].items():
        typer.echo(f"  {name:<20} {100 * value:5.1f}")
    typer.echo(f"  {result['ap_name']}: {'-' if ap is None else f'{100 * ap:.1f}'} (over the "
               f"{plural(len(result['ap_per_class']), 'class')} present in {result['split']}; not the devkit's mAP)")
    typer.echo(f"  {result['split']} detection loss {result['val_loss']:.4f}")


def print_result(result: dict) -> None:
    kind = "linear probe" if result.get("linear_probe") else "fine-tuning"
    labelled = plural(len(result.get("label_scenes", [])), "scene")
    if result.get("label_sweeps") is not None:
        labelled = f"{plural(len(result['label_sweeps']), 'sweep')} of {labelled}"
    typer.echo(f"\n{kind} from {result.get('init', '?')}, {result.get('labels_percent', '?')}% labels "
               f"({labelled}); {result['split']}: {plural(result['sweeps'], 'sweep')}")
    if result.get("probe_fit"):
        fit = result["probe_fit"]
        typer.echo(f"  probe fit: {fit['rounds']} rounds of L-BFGS, final loss {fit['final_loss']:.4f}"
                   + ("" if fit["converged"] else " (NOT converged: see probe_fit in result.json)"))
    for name, iou in result["iou"].items():
        typer.echo(f"  {name:<20} {'   -' if iou is None else f'{100 * iou:5.1f}'}")
    typer.echo(f"  {'mIoU':<20} {100 * result['miou']:5.1f}  (over the {plural(len(result['classes']), 'class')} "
               f"present in {result['split']})")


@app.command()
def evaluate(
    store: str = typer.Option(..., "--store", metavar="STORE", help=STORE_HELP + " It must hold lidarseg labels "
                              "(--task detection: boxes, and its dataset's dataroot must be readable)."),
    task: Task = typer.Option("segmentation", help="What to evaluate: a segmenter (--segmenter) or a detector "
                              "(--detector, scored by the nuScenes devkit on val; needs the pipeline extra)."),
    segmenter: str = typer.Option(None, "--segmenter", metavar="SEGMENTER", help="segmenter.pt written by cdtrain "
                                  "finetune (needed for segmentation)."),
    detector: str = typer.Option(None, "--detector", metavar="DETECTOR", help="detector.pt written by cdtrain "
                                 "finetune --task detection (needed for detection)."),
    checkpoint: str = typer.Option(None, "--checkpoint", hidden=True, help="Old name of --segmenter."),
    split: Split = typer.Option("val", help="Scenes to evaluate (detection: val only)."),
    out: str = typer.Option(None, metavar="FILE.json", help="Write the result (IoUs, mIoU, confusion matrix) as "
                            "JSON here, and its charts beside it; --task detection: a folder (needed) for "
                            "result.json, the submission and the devkit's metrics."),
    corruption: list[str] = typer.Option(None, metavar="KIND:SEVERITY", help="Also evaluate under this corruption "
                                         "(repeatable): beams_missing:0.25, sparser_sensor:2, jitter:0.05, "
                                         "fog:0.02."),
    device: str = typer.Option(None, metavar="DEVICE", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Per-class IoU, mIoU and confusion matrix of a fine-tuned segmenter (its voxel size and classes come
    from the file); with --corruption, the mIoU under each corruption and its resilience (mIoU corrupted /
    mIoU clean). With --task detection, a detector's boxes on every val sweep scored by the nuScenes devkit
    (mAP, NDS, TP errors, per-class AP; needs the pipeline extra)."""
    from pipeline.dialect import check_device

    if task == "detection":
        if segmenter or checkpoint or corruption:
            fail(f"--task detection scores a detector; {'--corruption' if corruption else '--segmenter'} is for "
                 f"segmentation")
        _evaluate_detection(store, detector, out, split, device, as_json)
        return
    if detector:
        fail("--detector goes with --task detection")
    if segmenter and checkpoint and segmenter != checkpoint:
        fail(f"--segmenter {segmenter} and --checkpoint {checkpoint}: give one (--checkpoint is its old name)")
    segmenter = segmenter or checkpoint
    if segmenter is None:
        fail("cdtrain evaluate needs --segmenter SEGMENTER (a segmenter.pt written by cdtrain finetune)")
    from pipeline.store import StoreError, open_store
    from trainer.checkpoint import load_segmenter
    from trainer.corruptions import parse
    from trainer.data import check_corruption
    from trainer.evaluate import check_segmenter_classes, evaluate_model

    try:
        corruptions = [parse(text) for text in corruption or []]
        if corruptions:  # before the clean evaluation, which a refused corruption would waste
            attrs = dict(open_store(store).attrs)
            for c in corruptions:
                check_corruption(c, attrs, store)
    except (StoreError, ValueError) as e:
        fail(str(e))
    dev = check_device(device)
    try:
        model, record = load_segmenter(segmenter)
        check_segmenter_classes(record, store)
        model.to(dev)
        voxel = record["voxel_size"]
        result = evaluate_model(model, store, split, voxel, device=dev, progress=not as_json)
        result.update(init=record.get("init"), linear_probe=record.get("linear_probe"),
                      labels_percent=record.get("labels_percent"), label_scenes=record.get("label_scenes"),
                      segmenter=segmenter, arch=record["arch"], voxel_size=voxel)
        if not as_json:
            print_result(result)
        robustness = {}
        for text in corruption or []:
            r = evaluate_model(model, store, split, voxel, corruption=text, device=dev, classes=result["classes"],
                               progress=not as_json)
            resilience = r["miou"] / result["miou"] if result["miou"] else None
            robustness[text] = {"miou": r["miou"], "resilience": resilience, "iou": r["iou"]}
            if not as_json:
                typer.echo(f"  under {text:<22} mIoU {100 * r['miou']:5.1f}  resilience "
                           + (f"{resilience:.2f}" if resilience is not None else "-"))
    except (StoreError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    result["robustness"] = robustness
    charts = []
    if out:
        from trainer.plots import plot_evaluation

        with open(out, "w") as f:
            json.dump(result, f, indent=1)
        charts = [str(p) for p in plot_evaluation(result, out)]
    if _emit(result | {"charts": charts}, as_json):
        return
    if out:
        typer.echo(f"  wrote {out}, " + " and ".join(charts))


def _evaluate_detection(store: str, detector: str | None, out: str | None, split: str, device: str | None,
                        as_json: bool) -> None:
    """`cdtrain evaluate --task detection`: the detector's boxes on every val sweep (no augmentation),
    scored by the nuScenes devkit; OUT/result.json holds the scores."""
    from pipeline.dialect import check_device
    from pipeline.errors import missing_extra

    if detector is None:
        fail("cdtrain evaluate --task detection needs --detector DETECTOR (a detector.pt written by cdtrain finetune "
             "--task detection)")
    if out is None:
        fail("cdtrain evaluate --task detection needs --out DIR (the devkit writes its metrics there)")
    if split != "val":
        fail(f"--split {split}: the devkit scores detection on the val scenes only")
    if os.path.isfile(out):
        fail(f"--out {out} is a file; --task detection writes a folder")
    try:
        import pipeline.detection_eval as scoring  # needs the pipeline extra (the devkit), unlike trainer/
    except ModuleNotFoundError as e:
        message = missing_extra(e)
        if message is None:
            raise
        fail(message)
    from pipeline.store import StoreError
    from trainer.checkpoint import load_detector
    from trainer.finetune_detection import detector_predictions

    dev = check_device(device)
    try:
        model, record = load_detector(detector)
        model.to(dev)
        predictions = detector_predictions(model, store, model.cfg, record["voxel_size"], device=dev)
        scores = scoring.score_predictions(store, predictions, out)
    except (StoreError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    result = {"task": "detection", "detector": detector, "store": store, "arch": record["arch"],
              "voxel_size": record["voxel_size"], "init": record.get("init"), "sweeps": len(predictions),
              "boxes": sum(len(p["score"]) for p in predictions), **scores}
    from trainer.finetune_detection import detection_pictures

    result["pictures"] = detection_pictures(result, predictions, store, model.cfg, out, record["voxel_size"])
    path = os.path.join(out, "result.json")
    from trainer.run import finite

    with open(path, "w") as f:
        json.dump(finite(result), f, indent=1, default=str)
    if _emit(result | {"result": path}, as_json):
        return
    print_devkit_detection_result(result)
    typer.echo(f"  wrote {path}, the devkit's {result['metrics']} and the pictures "
               f"{', '.join(result['pictures'].values())}")


def print_devkit_detection_result(result: dict) -> None:
    """The devkit's scores of ``_evaluate_detection``: per-class AP, mAP and NDS (over all 10 classes and
    over those present in the val truth), the mean TP errors."""
    def pct(value) -> str:
        return "    -" if value is None else f"{100 * value:5.1f}"

    typer.echo(f"\ndetector {result['detector']} on {result['sweeps']} val sweeps ({result['boxes']} boxes), "
               f"nuScenes devkit {result['eval_config']} on {result['eval_split']}")
    for name, value in result["ap"].items():
        typer.echo(f"  {name:<20} {pct(value)}" + ("" if name in result["present"] else "  (not in the val truth)"))
    typer.echo(f"  {'mAP':<20} {pct(result['mAP'])}  NDS {pct(result['NDS'])}  (the devkit's, over its 10 classes)")
    typer.echo(f"  {'mAP present':<20} {pct(result['mAP_present'])}  NDS {pct(result['NDS_present'])}  (over the "
               f"{len(result['present'])} classes in the val truth)")
    typer.echo("  TP errors: " + ", ".join(f"{k} {v:.3f}" for k, v in result["tp_errors"].items()))


@app.command()
def rankme(
    store: str = typer.Option(..., "--store", metavar="STORE", help=STORE_HELP + " Sweeps are sampled from it."),
    pretrained: str = typer.Option(None, "--pretrained", metavar="CHECKPOINT", help="Pretraining checkpoint "
                                   "(needed)."),
    checkpoint: str = typer.Option(None, "--checkpoint", hidden=True, help="Old name of --pretrained."),
    sweeps: int = typer.Option(8, help="Sweeps sampled."),
    split: Split = typer.Option("train", help="Scenes to sample (the table reports train)."),
    device: str = typer.Option(None, metavar="DEVICE", help=DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """RankMe of the backbone's point features (higher = less collapsed)."""
    from pipeline.dialect import check_device

    pretrained = _pretrained(pretrained, checkpoint)
    if pretrained is None:
        fail("cdtrain rankme needs --pretrained CHECKPOINT (a checkpoint.pt written by cdtrain pretrain)")
    from pipeline.store import StoreError
    from trainer.evaluate import store_rankme

    dev = check_device(device)
    try:
        value, used = store_rankme(store, pretrained, sweeps, split=split, device=dev)
    except (StoreError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    if _emit({"rankme": value, "sweeps": used, "split": split, "pretrained": pretrained, "store": store}, as_json):
        return
    typer.echo(f"RankMe {value:.1f} ({pretrained}, {used} {split} sweeps of {store})")


@app.command()
def plot(
    runs: list[str] = typer.Argument(None, metavar="RUN", show_default=False, help="Run folders of cdtrain pretrain "
                                     "or finetune (overlaid)."),
    out: str = typer.Option(..., "--out", metavar="FILE.png", help="PNG to write."),
):
    """Training curves of one or more runs: distillation, occupancy and total loss (raw and smoothed), learning
    rate, RankMe, and the fine-tuning loss and held-out mIoU, each where the runs logged it."""
    from trainer.plots import plot_runs

    if not runs:
        fail("cdtrain plot needs at least one RUN folder (the --out of cdtrain pretrain or finetune)")
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
