"""``cdpipe``: the data half of the tool (synthetic world, teacher-feature extraction)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from pipeline.dialect import DEVICE_HELP, JSON_HELP, STORE_HELP, fail, new_app, parse_size, plural, store_from
from pipeline.occupancy import FREE_PER_OCCUPIED, NEAR_SURFACE_M, VOXEL_SIZE_M
from pipeline.store import ENCODINGS, LAYOUTS

Layout = Literal[LAYOUTS]
Encoding = Literal[ENCODINGS]
Dataset = Literal["nuscenes", "semantickitti"]
ExtractSplit = Literal["all", "train", "val", "test", "mini_train", "mini_val"]
#: --camera-size when none is given: nuScenes' aspect, and KITTI's colour cameras' (1241x376, rounded)
DEFAULT_CAMERA_SIZE = {"nuscenes": "800x450", "semantickitti": "1242x375"}

app = new_app("cdpipe: camera frames + LiDAR -> teacher features and occupancy targets -> Zarr store.")


def _store_argument(old_name: str = "URL"):
    """The store as a positional argument: the old spelling of --store, hidden, kept for one release."""
    return typer.Argument(None, hidden=True, metavar=old_name)


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", metavar="DIR", help="Dataroot to write (created; existing files are "
                             "overwritten)."),
    scenes: int = typer.Option(2, help="Number of scenes (streets)."),
    samples_per_scene: int = typer.Option(10, help="Keyframes per scene (nuScenes: 2 Hz; semantickitti: scans, "
                                                   "10 Hz)."),
    seed: int = typer.Option(0, help="World seed: each seed is a different street."),
    dataset: Dataset = typer.Option("nuscenes", help="Rig and layout: nuscenes (six cameras, 32-beam LiDAR, the "
                                    "nuScenes tables) or semantickitti (two front cameras, 64-beam LiDAR, "
                                    "sequences/NN/ of SemanticKITTI)."),
    camera_size: str = typer.Option(None, metavar="WIDTHxHEIGHT", show_default="800x450; semantickitti: 1242x375",
                                    help="Camera image size (nuScenes: 1600x900)."),
    image_size: str = typer.Option(None, hidden=True, help="Old name of --camera-size."),
    version: str = typer.Option("v1.0-mini", help="nuScenes version folder name."),
    workers: int = typer.Option(None, show_default="one per core", help="Processes rendering keyframes (0: this "
                                "process)."),
    preview: bool = typer.Option(True, help="Also write preview.png: six cameras and a bird's-eye view."),
    camera_labels: bool = typer.Option(False, "--camera-labels",
                                       help="Also write camseg/CAM_*/*.png: the class of every camera pixel "
                                            "(255 = sky), for training and gating stand-in teachers."),
    world_version: Literal["1", "3"] = typer.Option("3", "--world-version",
                                                  help="Which street generator: 3 = curved streets and "
                                                       "junctions on hilly terrain, where a point's position "
                                                       "does not give its class away; 1 = the first generator "
                                                       "(one straight road on flat ground), byte for byte."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Write a synthetic street in nuScenes format (tables, LiDAR, six cameras, lidarseg labels) or, with
    --dataset semantickitti, in SemanticKITTI's (sequences of scans, labels, two cameras, calib and poses)."""
    from pipeline.synth.write import SynthConfig, write_dataroot

    flag = "--image-size" if image_size else "--camera-size"
    w, h = parse_size(flag, image_size or camera_size or DEFAULT_CAMERA_SIZE[dataset])
    try:
        cfg = SynthConfig(out=str(out), scenes=scenes, samples_per_scene=samples_per_scene, seed=seed,
                          width=w, height=h, version=version, workers=workers, camera_labels=camera_labels,
                          world_version=int(world_version), dataset=dataset)
    except ValueError as e:
        fail(str(e))
    summary = write_dataroot(cfg, progress=not as_json)
    if preview and dataset == "semantickitti":
        from pipeline.semantickitti import write_preview as kitti_preview

        summary["preview"] = str(kitti_preview(out))
    elif preview:
        from pipeline.dataroot import write_preview

        summary["preview"] = str(write_preview(out, version))
    if as_json:
        typer.echo(json.dumps(summary, indent=1, default=str))
    else:
        print_summary(summary)


def print_summary(summary: dict) -> None:
    what = (f"SemanticKITTI-format dataroot: {summary['dataroot']}  (" if summary.get("dataset") == "semantickitti"
            else f"nuScenes-format dataroot: {summary['dataroot']}  (version {summary['version']}, ")
    typer.echo(f"\n{what}seed {summary['seed']}, world version {summary['world_version']})")
    typer.echo(f"  scenes     {len(summary['scenes'])}: {', '.join(summary['scenes'])}  "
               f"(train {summary['splits']['train']}, val {summary['splits']['val']})")
    p = summary["points_per_sweep"]
    typer.echo(f"  keyframes  {summary['keyframes']}  LiDAR points/sweep mean {p['mean']:.0f} "
               f"(min {p['min']}, max {p['max']})")
    boxes = ("no boxes (SemanticKITTI has none)" if summary.get("dataset") == "semantickitti"
             else f"annotations {summary['annotations']}")
    typer.echo(f"  images     {summary['images']} at {summary['image_size']}  {boxes}")
    typer.echo(f"  evaluation classes present: {summary['eval_classes_present']} of "
               f"{summary.get('num_eval_classes', 16)}")
    total = sum(summary["points_per_eval_class"].values())
    for name, n in summary["points_per_eval_class"].items():
        typer.echo(f"    {name:<20} {n:>9}  {100.0 * n / max(total, 1):5.1f}%")
    if "seconds" in summary:
        typer.echo(f"  written in {summary['seconds']:.1f} s")
    if "preview" in summary:
        typer.echo(f"  preview    {summary['preview']}")


@app.command()
def inspect(
    dataroot: Path = typer.Option(None, "--dataroot", metavar="DIR", help="A nuScenes-format dataroot."),
    root: Path = typer.Argument(None, hidden=True, metavar="DATAROOT"),
    version: str = typer.Option("v1.0-mini", help="Version folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
):
    """Load a dataroot with the nuScenes devkit and print what is in it."""
    from pipeline.dataroot import inspect_dataroot

    if dataroot and root and dataroot != root:
        fail(f"cdpipe inspect: two dataroots given ({root} and --dataroot {dataroot}); name one, with --dataroot")
    dataroot = dataroot or root
    if dataroot is None:
        fail("cdpipe inspect: name the dataroot with --dataroot DIR (see `cdpipe inspect --help`)")
    if (Path(dataroot) / "sequences").is_dir() and not (Path(dataroot) / version).is_dir():
        fail(f"{dataroot} is a SemanticKITTI-format dataroot; cdpipe inspect reads nuScenes tables (extract it with "
             f"`cdpipe extract --dataset semantickitti --dataroot {dataroot}`)")
    try:
        summary = inspect_dataroot(dataroot, version)
    except FileNotFoundError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        print_summary(summary)


@app.command()
def extract(
    dataroot: Path = typer.Option(..., "--dataroot", metavar="DIR", help="Dataroot in the format of --dataset."),
    out: str = typer.Option(..., "--out", metavar="STORE", help="Store to write: a local path or a file:// URL (a "
                            "shared file system; read it anywhere by URL)."),
    dataset: Dataset = typer.Option("nuscenes", help="Dataset format: nuscenes (tables read by the devkit) or "
                                    "semantickitti (sequences/NN/ of scans, labels, image_2, image_3, calib.txt)."),
    version: str = typer.Option("v1.0-mini", help="Dataset version folder (nuscenes only)."),
    split: ExtractSplit = typer.Option("all", help="Scenes to extract (mini_train/mini_val: the same as train/val "
                                       "in a v1.0-mini dataroot)."),
    teacher: str = typer.Option("vit_small_patch14_dinov2", help="timm ViT name (DINOv2 S/B/L/G, _reg4 variants...)."),
    teacher_weights: Path = typer.Option(None, help="Local teacher weights (.safetensors/.pth), loaded by timm."),
    random_teacher: bool = typer.Option(False, "--random-teacher",
                                        help="Run a randomly initialised teacher on purpose (named so everywhere)."),
    teacher_seed: int = typer.Option(0, help="Initialisation seed of a random teacher."),
    teacher_size: str = typer.Option("448x224", metavar="WIDTHxHEIGHT", help="Size of the images the teacher sees "
                                     "(ScaLR: 448x224); the store records it as teacher.image_size [H, W]."),
    image_size: str = typer.Option(None, hidden=True, help="Old spelling of --teacher-size, HEIGHTxWIDTH."),
    normed: bool = typer.Option(False, "--normed", help="Take the last block after the final norm (default: before)."),
    min_depth: float = typer.Option(1.0, help="Keep projections deeper than this (m)."),
    occ_voxel: float = typer.Option(VOXEL_SIZE_M, help="Occupancy voxel size (m)."),
    occ_free_ratio: float = typer.Option(FREE_PER_OCCUPIED, help="Near-surface free voxels sampled per occupied "
                                         "voxel."),
    occ_near: float = typer.Option(NEAR_SURFACE_M, help="Free voxels are drawn among those a ray enters at most "
                                   "this many metres before its return (storage_schema.md, Occupancy)."),
    layout: Layout = typer.Option("patches", help="How the store carries the teacher features: patches (each camera's "
                                  "patch map; ~10x smaller) or points (a feature per point; the simplest to read "
                                  "with plain zarr). storage_schema.md compares them."),
    feature_encoding: Encoding = typer.Option("float16", help="float16, or int8 (each vector with its own scale: "
                                              "half the size, cosine >= 0.9999 to float16)."),
    sweeps_per_shard: int = typer.Option(2, help="Sweeps per shard = per task (small tasks keep the last workers "
                                                 "busy at the end of a job)."),
    workers: int = typer.Option(1, help="Dask worker processes of the local cluster, one teacher each (0: one "
                                "worker in this process)."),
    tasks_per_worker: int = typer.Option(0, help="Tasks a local worker runs at once in threads sharing its "
                                                 "teacher (0: cores / workers)."),
    torch_threads: int = typer.Option(0, help="torch threads per task (0: cores / (workers x tasks per worker); 1 "
                                              "with --scheduler)."),
    scheduler: str = typer.Option(None, help="Address of a running Dask scheduler instead of a local cluster."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the store again instead of resuming it."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first sweep that fails (default: record it in "
                                                        "the store, finish the others, exit 1)."),
    break_lock: bool = typer.Option(False, "--break-lock", help="Break the store's lock when its job is gone "
                                                                "(never a live job's)."),
    device: str = typer.Option(None, metavar="DEVICE", help="Where the teacher runs: " + DEVICE_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
):
    """Run the frozen teacher once over every camera frame; write its patch maps (or per-point features),
    each point's camera and pixel, occupancy targets, points and labels into a Zarr store
    (resumable: rerun the same command after an interruption)."""
    import sys

    from pipeline.errors import ExtractError
    from pipeline.extract import ExtractConfig, run_extract
    from pipeline.lock import LockError
    from pipeline.occupancy import OccupancyGrid
    from pipeline.store import StoreError, StoreWriteError, check_out
    from pipeline.teacher import TeacherConfig, check_teacher

    if image_size:  # the old spelling, HEIGHTxWIDTH
        h, w = parse_size("--image-size", image_size)
    else:
        w, h = parse_size("--teacher-size", teacher_size)
    try:
        grid = OccupancyGrid(voxel_size=occ_voxel, free_per_occupied=occ_free_ratio, near_surface_m=occ_near)
        cfg = ExtractConfig(
            dataroot=str(dataroot), version=version if dataset == "nuscenes" else "", out=out, dataset=dataset,
            split=split,
            teacher=TeacherConfig(name=teacher, weights=str(teacher_weights) if teacher_weights else None,
                                  random=random_teacher, seed=teacher_seed, image_size=(h, w),
                                  layer="last_norm" if normed else "last_prenorm"),
            min_depth=min_depth, occupancy=grid, layout=layout, feature_encoding=feature_encoding,
            sweeps_per_shard=sweeps_per_shard, workers=workers, tasks_per_worker=tasks_per_worker,
            torch_threads=torch_threads, scheduler=scheduler, overwrite=overwrite, device=device)
    except ValueError as e:
        fail(str(e))
    try:  # everything that can be checked before a cluster starts
        check_out(out, overwrite)
        check_teacher(cfg.teacher)
        if dataset == "nuscenes" and not (dataroot / version).is_dir():
            raise FileNotFoundError(f"--dataroot {dataroot}: no table folder {version} in it")
        if dataset == "semantickitti" and not (dataroot / "sequences").is_dir():
            raise FileNotFoundError(f"--dataroot {dataroot}: no sequences/ folder in it (the SemanticKITTI layout)")
        if dataset == "semantickitti":  # (nuScenes' splits are known once its tables are read, in the job)
            from pipeline.semantickitti import split_sequences

            split_sequences(str(dataroot), split)
    except (StoreError, ExtractError, ValueError, FileNotFoundError) as e:
        fail(str(e))
    try:
        summary = run_extract(cfg, command=" ".join(["cdpipe", *sys.argv[1:]]), strict=strict, break_lock=break_lock,
                              progress=not as_json)
    except StoreWriteError as e:  # the job ran and stopped: exit 1
        fail(str(e), 1)
    except (StoreError, ExtractError, LockError, FileNotFoundError) as e:
        fail(str(e))
    job = summary["job"]
    if as_json:
        typer.echo(json.dumps(summary, indent=1, default=str))
    else:
        print_store_summary(summary)
    if job["broken_lock"] and not as_json:
        typer.echo(f"  lock       broke the stale lock of job {job['broken_lock'].get('job')} "
                   f"(pid {job['broken_lock'].get('pid')})")
    if not as_json:
        typer.echo(f"  this job   {len(job['failures'])} sweeps failed, {sum(map(len, job['warnings'].values()))} "
                   f"warnings, {job['retries']} task attempts lost to dying workers (retried)")
    for s, why in sorted(job["failures"].items())[:20]:
        typer.echo(f"    failed  sweep {s}: {why}", err=True)
    for s, ws in sorted(job["warnings"].items())[:20]:
        for w in ws:
            typer.echo(f"    warning sweep {s}: {w}", err=True)
    if job["failures"]:
        fail(f"{len(job['failures'])} of {summary['sweeps_total']} sweeps failed and are recorded in the store "
             f"(`cdpipe info --store {out}` lists them); fix their input and rerun the same command to extract them", 1)


def sensors_words(sensors: dict) -> str:
    """A store's attribute ``sensors`` in words: ``velodyne, 64 beams, intensity 0..1, no ring per point``."""
    return (f"{sensors['lidar']}, {sensors['beams']} beams, intensity 0..{float(sensors['intensity_max']):g}, "
            + ("ring per point" if sensors["has_ring"] else "no ring per point"))


def classes_words(classes: dict) -> str:
    """A store's attribute ``classes`` in words: ``semantickitti: 34 raw -> 19 evaluation classes (ignore 0)``."""
    fine = {"nuscenes": "lidarseg", "semantickitti": "raw"}.get(classes["dataset"], "fine")
    return (f"{classes['dataset']}: {len(classes['fine'])} {fine} -> {len(classes['eval'])} evaluation classes "
            f"(ignore {classes['ignore_index']})")


def print_store_summary(s: dict) -> None:
    from pipeline.verify import teacher_label

    typer.echo(f"\nteacher-feature store: {s['store']}  (schema version {s['schema_version']})")
    typer.echo(f"  teacher    {teacher_label(s)}, layer {s['layer']}, input {s['image_size'][1]}x"
               f"{s['image_size'][0]} (WIDTHxHEIGHT)")
    d = s["dataset"]
    typer.echo(f"  dataset    {d['name']} {d['version']} split {d['split']}, {plural(s['scenes'], 'scene')}, from "
               f"{d['dataroot']}")
    typer.echo(f"  lidar      {sensors_words(s['sensors'])}")
    typer.echo(f"  classes    {classes_words(s['classes'])}")
    typer.echo(f"  sweeps     {s['sweeps']} of {s['sweeps_total']} written ({s['sweeps_failed']} failed), "
               f"{s['points']} points, {100.0 * s['fraction_with_feature']:.1f}% with a teacher feature "
               f"(D = {s['feature_dim']})")
    lo, hi = s["occupancy_queries_min_max"]
    typer.echo(f"  occupancy  {s['occupancy_queries_per_sweep']:.0f} query voxels per sweep ({lo}-{hi}), "
               f"{100.0 * s['occupancy_occupied_fraction']:.1f}% occupied")
    if s["has_boxes"]:
        per = ", ".join(f"{name} {n}" for name, n in s["boxes_per_class"].items() if n) or "none annotated"
        typer.echo(f"  boxes      {s['boxes']} in {s['sweeps']} sweeps: {per}")
    else:
        typer.echo("  boxes      none (has_boxes false: " + ("the dataset annotates none)" if d["name"] != "nuscenes"
                                                         else "migrated without the dataset's tables)"))
    h, w = s["patch_grid"]
    grid = f" ({h}x{w} patch map per camera)" if s["layout"] == "patches" else " (one vector per point)"
    typer.echo(f"  features   layout {s['layout']}{grid}, {s['feature_encoding']}")
    if s.get("bytes") and not s["points"]:
        typer.echo(f"  size       {s['bytes'] / 2**20:.1f} MiB, no complete sweep yet")
    elif s.get("bytes"):
        typer.echo(f"  size       {s['bytes'] / 2**20:.1f} MiB, {s['bytes_per_point']:.0f} bytes/point, "
                   f"{s['store_fraction_of_raw']:.3f} of raw float16 per-point features "
                   f"({s['raw_float16_bytes_per_point']} bytes/point); the feature arrays alone "
                   f"{s['feature_bytes_per_point']:.1f} bytes/point, {s['feature_fraction_of_raw']:.3f} of raw")
        per = {k: v for k, v in s["bytes_per_point_per_array"].items() if v is not None and v >= 0.05}
        typer.echo("             per point: " + ", ".join(f"{k} {v:.1f}" for k, v in
                                                          sorted(per.items(), key=lambda kv: -kv[1])))
    p = s.get("provenance") or {}
    if p:
        typer.echo(f"  written    {p.get('created_utc')} by cdpipe {p.get('code_version')} (torch "
                   f"{p.get('torch_version')}, zarr {p.get('zarr_version')}): {p.get('command')}")
    if s.get("seconds") is not None:
        typer.echo(f"  time       {s['seconds']:.1f} s" + (f" (resumed: {s['resumed_from']} sweeps were already done)"
                                                        if s.get("resumed_from") else ""))
    if s["failures"]:
        typer.echo(f"  failures   {len(s['failures'])}")
        for f in s["failures"][:20]:
            typer.echo(f"    sweep {f['sweep']} (sample {f['sample_token']}): {f['reason']}")
    if s["warnings"]:
        typer.echo(f"  warnings   {len(s['warnings'])}")
        for w in s["warnings"][:20]:
            typer.echo(f"    sweep {w['sweep']} (sample {w['sample_token']}): {w['warning']}")


@app.command()
def info(store: str = typer.Option(None, "--store", metavar="STORE", help=STORE_HELP),
         url: str = _store_argument(),
         as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """What is in a store: provenance, teacher, counts, coverage, occupancy, bytes per array and per point,
    failures and warnings."""
    from pipeline.store import StoreError
    from pipeline.verify import store_info

    url = store_from(store, url, "cdpipe info")
    try:
        summary = store_info(url)
    except StoreError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
    else:
        print_store_summary(summary)
    for line in summary["metadata_problems"]:
        typer.echo(f"problem: {line} (`cdpipe verify --store {url}` checks everything)", err=True)
    if summary["metadata_problems"]:
        raise typer.Exit(1)


@app.command()
def migrate(store: str = typer.Option(None, "--store", metavar="STORE", help="Store of schema version 1 to 5 (left "
                                     "as it is)."),
            old: str = _store_argument("OLD"),
            out: str = typer.Option(..., "--out", metavar="STORE", help="New store to write (a local path)."),
            dataroot: Path = typer.Option(None, metavar="DIR", help="Dataset the store was extracted from (default: "
                                          "the dataroot it records), for the annotated boxes, LiDAR poses and "
                                          "(schema 1 and 2) camera image sizes."),
            no_boxes: bool = typer.Option(False, "--no-boxes", help="Write the store without boxes (has_boxes "
                                          "false) when the dataset's tables are not at hand."),
            as_json: bool = typer.Option(False, "--json", help=JSON_HELP)):
    """Rewrite an older store in the current schema without the teacher. Every older store gains the record of
    its (nuScenes) class set and LiDAR; schema 1 to 4 also each sweep's annotated boxes and LiDAR-to-global
    transform from the dataset's tables (schema 5 is copied as it is, no tables needed). Schema 1 to 3 are
    written in the points layout (they hold a feature per point; re-extract for the ~10x smaller patches
    layout); schema 1 and 2 also gain checksums on every chunk, camera image sizes from the tables and the
    teacher's construction record, and schema 1 today's occupancy targets from the stored points."""
    import sys

    from pipeline.migrate import migrate as run
    from pipeline.store import StoreError

    old = store_from(store, old, "cdpipe migrate")
    try:
        result = run(old, out, str(dataroot) if dataroot else None, command=" ".join(["cdpipe", *sys.argv[1:]]),
                     boxes=not no_boxes)
    except StoreError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(result, indent=1, default=str))
        return
    typer.echo(f"migrated {result['sweeps']} sweeps from schema {result['from_schema']} to {result['out']}"
               + ("" if result["has_boxes"] else " without boxes (has_boxes false)")
               + f"; check it with `cdpipe verify --store {result['out']}`")


@app.command("store", hidden=True)
def store_command(url: str = typer.Argument(..., help="Store path or URL.")):
    """The old name of `cdpipe info`."""
    info(None, url, as_json=False)


@app.command()
def verify(store: str = typer.Option(None, "--store", metavar="STORE", help=STORE_HELP),
           url: str = _store_argument(),
           as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
           progress: bool = typer.Option(True, help="Show a progress bar.")):
    """Decode every chunk of a store and check it: checksums, missing chunks of complete sweeps, failure
    records, schema version, shapes, NaN/inf and out-of-range values. One line per problem; exit 1 on any."""
    from pipeline.verify import Problem, verify_store

    url = store_from(store, url, "cdpipe verify")
    report = verify_store(url, progress=progress)
    if as_json:
        typer.echo(json.dumps(report, indent=1))
    else:
        for p in report["problems"]:
            typer.echo(Problem(**p).line())
        for w in report["warnings"]:
            typer.echo(f"warning: sweep {w['sweep']}, sample {w['sample_token']}: {w['warning']}")
        n = len(report["problems"])
        typer.echo(f"{url}: {report['sweeps_done']} of {report['sweeps']} sweeps complete, "
                   f"{report['chunks_read']} chunks decoded, {n} problem{'s' if n != 1 else ''}, "
                   f"{len(report['warnings'])} warnings"
                   + ("" if n else ": OK"))
    if report["problems"]:
        raise typer.Exit(1)


@app.command()
def preview(store: str = typer.Option(None, "--store", metavar="STORE", help=STORE_HELP),
            url: str = _store_argument(),
            out: Path = typer.Option(..., "--out", metavar="FILE.png", help="PNG to write."),
            sweep: int = typer.Option(0, help="Sweep index (0 .. num_sweeps - 1), counted within --split."),
            split: Literal["all", "train", "val"] = typer.Option("all", help="Count --sweep within these scenes "
                                                                 "(val: --sweep 0 is the first val sweep)."),
            dataroot: Path = typer.Option(None, metavar="DIR", help="Where the camera images are (default: the "
                                          "dataroot the store records; without them the points are drawn alone).")):
    """Picture one sweep: each camera with its points coloured by a PCA of their teacher features, the
    same from above, the lidarseg labels from above, and slices of the occupancy targets."""
    from pipeline.preview import draw_preview, sweep_preview
    from pipeline.store import StoreError

    url = store_from(store, url, "cdpipe preview")
    if split != "all":
        sweep = _sweep_of_split(url, split, sweep)
    if out.suffix.lower() != ".png":
        fail(f"--out {out}: the preview is a PNG; name it FILE.png")
    if not out.parent.is_dir():
        fail(f"--out {out}: no folder {out.parent}")
    try:
        view = sweep_preview(url, sweep, str(dataroot) if dataroot else None)
    except StoreError as e:
        fail(str(e))
    typer.echo(f"drawing sweep {sweep} of {url} ...", err=True)
    draw_preview(view, out)
    typer.echo(f"{out}: sweep {sweep} of {url}" + (f" ({view.image_note})" if view.image_note else ""))


def _sweep_of_split(url: str, split: str, k: int) -> int:
    """The store index of the ``k``-th sweep of the scenes of ``split`` (store order)."""
    from pipeline.store import StoreError, open_store

    try:
        scenes = open_store(url).attrs["scenes"]
    except StoreError as e:
        fail(str(e))
    rows = [s for sc in scenes if sc["split"] == split
            for s in range(sc["first_sweep"], sc["first_sweep"] + sc["num_sweeps"])]
    if not 0 <= k < len(rows):
        fail(f"--sweep {k} --split {split}: the store has {len(rows)} {split} sweeps" + (f" (0 .. {len(rows) - 1})"
                                                                                          if rows else ""))
    return rows[k]


def console_script() -> None:
    """The installed script (pyproject.toml's [project.scripts])."""
    from pipeline.errors import run_cli

    run_cli(app)


if __name__ == "__main__":
    console_script()
