"""``cdtrain``: the training half of the tool (distil the LiDAR student from a store, evaluate it)."""

from __future__ import annotations

import typer

app = typer.Typer(help="cdtrain: Zarr store -> batches -> sparse student + heads -> checkpoints, metrics.",
                  no_args_is_help=True, add_completion=False)


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
    typer.echo(f"torchsparse: {'installed' if has_ts else 'not installed'}")


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
    steps: int = typer.Option(200, help="Optimisation steps."),
    batch_size: int = typer.Option(2, help="Sweeps per batch."),
    lr: float = typer.Option(2e-3, help="Peak learning rate (AdamW)."),
    warmup: int = typer.Option(20, help="Warm-up steps."),
    voxel_size: float = typer.Option(0.1, help="Voxel size (m)."),
    split: str = typer.Option("train", help="Store scenes to train on: train, val or all."),
    workers: int = typer.Option(0, help="DataLoader worker processes (spawned)."),
    checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
    seed: int = typer.Option(0, help="Seed of initialisation, data order and augmentation."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt."),
):
    """Distil the LiDAR student from a teacher-feature store (no teacher in memory)."""
    from pipeline.schema import StoreError
    from trainer.data import DataConfig
    from trainer.model import ModelConfig
    from trainer.train import TrainConfig
    from trainer.train import pretrain as run

    try:
        from pipeline.schema import open_store

        feature_dim = int(open_store(store).attrs["feature_dim"])
        mcfg = ModelConfig(arch=model, feature_dim=feature_dim, head_layers=head_layers, head_hidden=head_hidden)
        dcfg = DataConfig(store=store, split=split, voxel_size=voxel_size, seed=seed)
        tcfg = TrainConfig(out=out, steps=steps, batch_size=batch_size, lr=lr, warmup=warmup, loss=loss,
                           occ_weight=occ_weight, workers=workers, checkpoint_every=checkpoint_every, seed=seed)
        result = run(mcfg, dcfg, tcfg, resume=resume)
    except (StoreError, ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    m = result["metrics"]
    first = _first_metrics(out)
    typer.echo(f"\npretrained {model} for {result['step']} steps on {store}")
    typer.echo(f"  distillation loss {first.get('distill', float('nan')):.4f} -> {m.get('distill', float('nan')):.4f}"
               + (f", occupancy loss {first.get('occ', float('nan')):.4f} -> {m['occ']:.4f}" if "occ" in m else ""))
    typer.echo(f"  checkpoint {result['checkpoint']}, metrics {out}/metrics.jsonl")


def _first_metrics(out: str) -> dict:
    import json
    import os

    path = os.path.join(out, "metrics.jsonl")
    with open(path) as f:
        line = f.readline()
    return json.loads(line) if line else {}


if __name__ == "__main__":
    app()
