"""``cdpipe``: the data half of the tool (synthetic world, teacher-feature extraction)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="cdpipe: camera frames + LiDAR -> teacher features and occupancy targets -> Zarr store.",
                  no_args_is_help=True, add_completion=False)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H), with an error that names the bad value."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not WIDTHxHEIGHT, e.g. 800x450") from None
    return w, h


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Dataroot to write (created; existing files are overwritten)."),
    scenes: int = typer.Option(2, help="Number of scenes (streets)."),
    samples_per_scene: int = typer.Option(10, help="Keyframes per scene (2 Hz)."),
    seed: int = typer.Option(0, help="World seed: each seed is a different street."),
    image_size: str = typer.Option("800x450", help="Camera image size WxH (nuScenes: 1600x900)."),
    version: str = typer.Option("v1.0-mini", help="nuScenes version folder name."),
    workers: int = typer.Option(0, help="Processes (0: one per core)."),
    preview: bool = typer.Option(True, help="Also write preview.png: six cameras and a bird's-eye view."),
):
    """Write a synthetic street in nuScenes format (tables, LiDAR, six cameras, lidarseg labels)."""
    from pipeline.synth.write import SynthConfig, write_dataroot

    w, h = parse_size(image_size)
    try:
        cfg = SynthConfig(out=str(out), scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                          width=w, height=h, version=version, workers=workers)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    summary = write_dataroot(cfg)
    if preview:
        from pipeline.dataroot import write_preview

        summary["preview"] = str(write_preview(out, version))
    print_summary(summary)


def print_summary(summary: dict) -> None:
    typer.echo(f"\nnuScenes-format dataroot: {summary['dataroot']}  (version {summary['version']}, "
               f"seed {summary['seed']})")
    typer.echo(f"  scenes     {len(summary['scenes'])}: {', '.join(summary['scenes'])}  "
               f"(train {summary['splits']['train']}, val {summary['splits']['val']})")
    p = summary["points_per_sweep"]
    typer.echo(f"  keyframes  {summary['keyframes']}  LiDAR points/sweep mean {p['mean']:.0f} "
               f"(min {p['min']}, max {p['max']})")
    typer.echo(f"  images     {summary['images']} at {summary['image_size']}  annotations {summary['annotations']}")
    typer.echo(f"  evaluation classes present: {summary['eval_classes_present']} of 16")
    total = sum(summary["points_per_eval_class"].values())
    for name, n in summary["points_per_eval_class"].items():
        typer.echo(f"    {name:<20} {n:>9}  {100.0 * n / max(total, 1):5.1f}%")
    if "seconds" in summary:
        typer.echo(f"  written in {summary['seconds']:.1f} s")
    if "preview" in summary:
        typer.echo(f"  preview    {summary['preview']}")


@app.command()
def inspect(
    dataroot: Path = typer.Argument(..., help="A nuScenes-format dataroot."),
    version: str = typer.Option("v1.0-mini", help="Version folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
):
    """Load a dataroot with the nuScenes devkit and print what is in it."""
    from pipeline.dataroot import inspect_dataroot

    try:
        summary = inspect_dataroot(dataroot, version)
    except FileNotFoundError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        print_summary(summary)


if __name__ == "__main__":
    app()
