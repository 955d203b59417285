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


if __name__ == "__main__":
    app()
