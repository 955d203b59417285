"""The paper's ablation table on synthetic worlds, version 2: does distillation help, does the MLP head
beat the linear one, does occupancy help, measured against floors, at convergence, over paired seeds.

    .venv/bin/python benchmarks/paper_table.py sweep-occ [--seed 900]   # once: pick the occupancy weight
    .venv/bin/python benchmarks/paper_table.py run --seed K             # one seed (resumable), K = 0, 1, ...
    .venv/bin/python benchmarks/paper_table.py table                    # paper_table.md from the seed files

A seed K sets everything that varies: the synthetic world (``cdpipe synth --seed K``), every
initialisation, the data order and which scenes are labelled; every row sees the same K, so rows are
compared seed by seed (paired). Per seed, in WORK/seed_K (each finished part is kept, so a killed run
continues where it stopped):

1. a world of ``--scenes`` x ``--samples-per-scene`` keyframes, every 6th scene in val (nuScenes
   trainval naming), extracted with the teacher the teacher gate names as trained (the semantic
   stand-in, ``tools/teachers/semantic.safetensors``) at 224x448;
2. floor and ceiling rows: the linear probe (``trainer/probe.py``: softmax regression solved by
   L-BFGS to tolerance) on the raw point inputs, on the stored teacher features, and on both;
3. rows random init (no pretraining), linear head, 3-layer MLP head, MLP head + occupancy (weight
   picked by ``sweep-occ`` on world seed 900, never reported): pretraining, then from the backbone
   the linear probe on all train labels, fine-tuning at 1 scene and at 25% of the train sweeps
   (cross-entropy + Lovasz, whole scenes), the held-out distillation gain 1 - loss / loss_mean
   (``trainer/evaluate.py``), RankMe on train sweeps and the occupancy balanced accuracy on held-out
   sweeps.
mIoU is over the classes present in the val truth of that world (listed in the seed file).
The seed's results land in ``benchmarks/results/paper_table/seed_K.json``:
``{"seed": K, "rows": {row: {column: value}}, ...details}``. ``table`` writes
``benchmarks/results/paper_table.md``: means over seeds, and the paired differences (linear - random,
MLP - linear, MLP+occ - MLP) with 95% bootstrap confidence intervals over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "paper_table")
TEACHER = os.path.join(ROOT, "tools", "teachers", "semantic.safetensors")
ROWS = {  # name -> (pretrain?, projection head layers, occupancy on?)
    "random init": (False, 0, False),
    "linear head": (True, 1, False),
    "3-layer MLP head": (True, 3, False),
    "MLP head + occupancy": (True, 3, True),
}
FLOORS = {"logreg: raw point inputs": "raw", "logreg: teacher features": "teacher",
          "logreg: raw + teacher": "raw+teacher"}
COLUMNS = {  # key -> (title, digits, scale)
    "probe": ("linear probe mIoU", 1, 100.0),
    "ft_1scene": ("fine-tune 1 scene mIoU", 1, 100.0),
    "ft_25pct": ("fine-tune 25% mIoU", 1, 100.0),
    "distill_gain": ("held-out distill gain", 3, 1.0),
    "rankme": ("RankMe (train)", 1, 1.0),
    "occ_bal_acc": ("occupancy bal. acc", 3, 1.0),
}
DIFFS = (("linear head", "random init"), ("3-layer MLP head", "linear head"),
         ("MLP head + occupancy", "3-layer MLP head"))
OCC_WEIGHTS = (0.1, 0.3, 1.0)
MIN_SEEDS = 6  # the table is interim below this many seeds
SWEEP_SEED = 900


def settings(args) -> dict:
    return {"scenes": args.scenes, "samples_per_scene": args.samples_per_scene, "image_size": args.image_size,
            "teacher_size": "224x448", "teacher": os.path.relpath(TEACHER, ROOT), "arch": args.arch,
            "head_hidden": args.head_hidden, "voxel_size": 0.1, "max_points": args.max_points,
            "pretrain_steps": args.pretrain_steps, "pretrain_batch": 2, "pretrain_lr": 2e-3,
            "pretrain_warmup": args.pretrain_steps // 10, "mask_ratio": [0.3, 0.5],
            "finetune_steps": {"ft_1scene": args.ft_steps_1scene, "ft_25pct": args.ft_steps_25},
            "finetune_batch": 2, "finetune_lr": args.ft_lr, "finetune_warmup": 10, "lovasz": True,
            "probe_points_per_sweep": 2000, "label_percent": {"ft_1scene": 1.0, "ft_25pct": 25.0}}


def _width_by_height(size: str) -> str:
    """The table's configs keep the teacher input HEIGHTxWIDTH, as the store records it; the flag is
    WIDTHxHEIGHT."""
    return "x".join(size.split("x")[::-1])


def _cli(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def _run(cmd: list[str], log: str) -> None:
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}); see {log}")


def build_world(work: str, seed: int, cfg: dict) -> str:
    """Synthetic world + store for ``seed`` (kept once finished; extraction resumes by itself)."""
    os.makedirs(work, exist_ok=True)
    dataroot, store = os.path.join(work, "world"), os.path.join(work, "store.zarr")
    if not os.path.exists(dataroot + ".done"):
        _run([_cli("cdpipe"), "synth", "--out", dataroot, "--scenes", str(cfg["scenes"]), "--samples-per-scene",
              str(cfg["samples_per_scene"]), "--seed", str(seed), "--camera-size", cfg["image_size"], "--version",
              "v1.0-trainval", "--no-preview", "--workers", "1"], os.path.join(work, "synth.log"))
        open(dataroot + ".done", "w").close()
    if not os.path.exists(store + ".done"):
        _run([_cli("cdpipe"), "extract", "--dataroot", dataroot, "--version", "v1.0-trainval", "--out", store,
              "--teacher", "vit_small_patch14_dinov2", "--teacher-weights", TEACHER, "--teacher-size",
              _width_by_height(cfg["teacher_size"]), "--workers", "1", "--torch-threads", "1"],
             os.path.join(work, "extract.log"))
        open(store + ".done", "w").close()
    return store


def same_settings(work: str, cfg: dict) -> None:
    """The settings a work directory was started with are kept in it; continuing it with others would
    mix two experiments in one seed, so that is refused."""
    path = os.path.join(work, "settings.json")
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        changed = sorted(k for k in set(before) | set(cfg) if before.get(k) != cfg.get(k))
        if changed:
            sys.exit(f"{work} was started with other settings ({', '.join(changed)}): rerun with the same "
                     f"arguments, or delete the directory to start this seed again")
        return
    if os.path.isdir(os.path.join(work, "parts")):
        sys.exit(f"{work} holds results but no settings.json saying how they were made: delete it to start again")
    os.makedirs(work, exist_ok=True)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=1)


def part(path: str, compute) -> dict:
    """The JSON at ``path``, computed and written first if missing (each finished part survives a kill)."""
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    t0 = time.perf_counter()
    value = compute()
    value["seconds"] = time.perf_counter() - t0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)
    return value


def pretrained(store: str, out: str, seed: int, head_layers: int, occ_weight: float, cfg: dict) -> str:
    """Pretraining checkpoint of one row (continued if a previous run stopped part-way)."""
    from pipeline.store import open_store
    from trainer.config import DataConfig, ModelConfig, TrainConfig
    from trainer.train import pretrain

    ckpt = os.path.join(out, "checkpoint.pt")
    mcfg = ModelConfig(arch=cfg["arch"], feature_dim=int(open_store(store).attrs["feature_dim"]),
                       head_layers=head_layers, head_hidden=cfg["head_hidden"])
    dcfg = DataConfig(store=store, split="train", voxel_size=cfg["voxel_size"], seed=seed,
                      mask_ratio=tuple(cfg["mask_ratio"]) if occ_weight > 0 else (0.0, 0.0),
                      max_points=cfg["max_points"])
    tcfg = TrainConfig(out=out, steps=cfg["pretrain_steps"], batch_size=cfg["pretrain_batch"], lr=cfg["pretrain_lr"],
                       warmup=cfg["pretrain_warmup"], occ_weight=occ_weight, seed=seed, checkpoint_every=50)
    if os.path.exists(ckpt):
        from trainer.checkpoint import read_checkpoint

        ck = read_checkpoint(ckpt)
        if ck["model_config"] != mcfg.to_dict() or ck["train_config"]["occ_weight"] != occ_weight:
            sys.exit(f"{ckpt} was pretrained with other settings (model {ck['model_config']}, occupancy weight "
                     f"{ck['train_config']['occ_weight']}): delete {os.path.dirname(out)} (the row's pretraining "
                     f"and everything scored from it) to run this row again")
        if int(ck["step"]) >= tcfg.steps:
            return ckpt
    pretrain(mcfg, dcfg, tcfg, resume=os.path.exists(ckpt), progress=False)
    return ckpt


def probe_part(store: str, checkpoint: str | None, out: str, seed: int, cfg: dict) -> dict:
    from trainer.config import ProbeConfig
    from trainer.probe import linear_probe

    r = linear_probe(store, checkpoint, cfg["arch"],
                     ProbeConfig(out=out, points_per_sweep=cfg["probe_points_per_sweep"], seed=seed),
                     voxel_size=cfg["voxel_size"])
    return {"miou": r["miou"], "fit": r["probe_fit"], "fit_points": r["fit_points"], "classes": r["classes"]}


def finetune_part(store: str, checkpoint: str | None, out: str, seed: int, key: str, cfg: dict) -> dict:
    from trainer.config import FinetuneConfig
    from trainer.finetune import finetune

    steps = cfg["finetune_steps"][key]
    fc = FinetuneConfig(out=out, labels_percent=cfg["label_percent"][key], steps=steps,
                        batch_size=cfg["finetune_batch"], lr=cfg["finetune_lr"], warmup=cfg["finetune_warmup"],
                        lovasz=cfg["lovasz"], max_points=cfg["max_points"], checkpoint_every=50,
                        eval_every=steps // 4, seed=seed)
    resume = os.path.exists(os.path.join(out, "segmenter.pt"))
    r = finetune(store, checkpoint, cfg["arch"], fc, voxel_size=cfg["voxel_size"], progress=False, resume=resume)
    with open(os.path.join(out, "curve.jsonl")) as f:
        curve = [json.loads(line) for line in f]
    return {"miou": r["miou"], "label_scenes": r["label_scenes"], "curve": curve}


def floor_part(store: str, kind: str, seed: int, cfg: dict) -> dict:
    from pipeline.classes import NUM_EVAL_CLASSES
    from trainer.config import DataConfig
    from trainer.data import StoreDataset
    from trainer.evaluate import scores
    from trainer.metrics import confusion_matrix
    from trainer.probe import feature_table, fit_softmax

    train = StoreDataset(DataConfig(store=store, split="train", voxel_size=cfg["voxel_size"], augment=False))
    val = StoreDataset(DataConfig(store=store, split="val", voxel_size=cfg["voxel_size"], augment=False))
    x, y = feature_table(train, kind, points_per_sweep=cfg["probe_points_per_sweep"], seed=seed)
    probe = fit_softmax(x, y)
    xv, yv = feature_table(val, kind)
    s = scores(confusion_matrix(yv, probe.predict(xv), NUM_EVAL_CLASSES))
    return {"miou": s["miou"], "fit": probe.summary(), "fit_points": int(len(y)), "classes": s["classes"]}


def label_share(store: str, names: list[str]) -> dict:
    from pipeline.store import open_store

    scenes = open_store(store).attrs["scenes"]
    train = [s for s in scenes if s["split"] == "train"]
    chosen = sum(s["num_sweeps"] for s in train if s["name"] in names)
    return {"scenes": len(names), "of_train_scenes": len(train),
            "percent_of_train_sweeps": 100.0 * chosen / sum(s["num_sweeps"] for s in train)}


def run_seed(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    from trainer.evaluate import distillation_gain, occupancy_accuracy, occupancy_items, store_rankme

    cfg = settings(args)
    started = time.perf_counter()
    work = os.path.join(args.work, f"seed_{args.seed}")
    same_settings(work, cfg)
    occ = None
    store = part(os.path.join(work, "parts", "world.json"),
                 lambda: {"store": build_world(work, args.seed, cfg)})["store"]
    seed = args.seed
    rows: dict = {}
    details: dict = {}
    for name, kind in FLOORS.items():
        r = part(os.path.join(work, "parts", f"floor_{kind}.json"), lambda: floor_part(store, kind, seed, cfg))
        rows[name] = {"probe": r["miou"]}
        details[name] = r
    for name, (pre, layers, with_occ) in ROWS.items():
        tag = name.split()[0].lower() + ("_occ" if with_occ else "")
        run = os.path.join(work, tag)
        if with_occ:
            occ = occupancy_weight(cfg)  # read only now: the other rows need not wait for sweep-occ
        checkpoint = (pretrained(store, os.path.join(run, "pretrain"), seed, layers, occ if with_occ else 0.0, cfg)
                      if pre else None)
        probe = part(os.path.join(run, "probe.json"),
                     lambda: probe_part(store, checkpoint, os.path.join(run, "probe"), seed, cfg))
        fts = {key: part(os.path.join(run, f"{key}.json"),
                         lambda key=key: finetune_part(store, checkpoint, os.path.join(run, key), seed, key, cfg))
               for key in ("ft_1scene", "ft_25pct")}
        extra = part(os.path.join(run, "scores.json"), lambda: {
            "rankme": store_rankme(store, checkpoint, sweeps=16, voxel_size=cfg["voxel_size"], arch=cfg["arch"],
                                   seed=seed, split="train")[0],
            **({"distill": distillation_gain(store, checkpoint)} if pre else {}),
            **({"occ_bal_acc": occupancy_accuracy(checkpoint, occupancy_items(store, checkpoint))} if with_occ else {}),
        })
        row = {"probe": probe["miou"], "ft_1scene": fts["ft_1scene"]["miou"], "ft_25pct": fts["ft_25pct"]["miou"],
               "rankme": extra["rankme"]}
        if pre:
            row["distill_gain"] = extra["distill"]["gain"]
        if with_occ:
            row["occ_bal_acc"] = extra["occ_bal_acc"]
        rows[name] = row
        details[name] = {"probe_fit": probe["fit"], "distill": extra.get("distill"),
                         "curves": {k: v["curve"] for k, v in fts.items()},
                         "seconds": {"probe": probe["seconds"], **{k: v["seconds"] for k, v in fts.items()},
                                     "scores": extra["seconds"]}}
    labels = {key: label_share(store, fts["ft_1scene" if key == "ft_1scene" else "ft_25pct"]["label_scenes"])
              for key in ("ft_1scene", "ft_25pct")}
    from pipeline.store import open_store

    attrs = dict(open_store(store).attrs)
    val_scenes = sum(1 for s in attrs["scenes"] if s["split"] == "val")
    result = {"seed": seed, "rows": rows, "classes": details["logreg: raw point inputs"]["classes"],
              "labels": labels, "occ_weight": occ, "settings": cfg,
              "world": {"sweeps": attrs["num_sweeps"], "scenes": len(attrs["scenes"]), "val_scenes": val_scenes},
              "details": details, "seconds_this_sitting": time.perf_counter() - started,
              "threads": args.threads}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"seed_{seed}.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(f"seed {seed}: " + "; ".join(f"{r}: probe {100 * v['probe']:.1f}" for r, v in rows.items()))


PRETRAIN_KEYS = ("scenes", "samples_per_scene", "image_size", "teacher_size", "teacher", "arch", "head_hidden",
                 "voxel_size", "max_points", "pretrain_steps", "pretrain_batch", "pretrain_lr", "pretrain_warmup",
                 "mask_ratio", "probe_points_per_sweep")


def occupancy_weight(cfg: dict) -> float:
    """The weight sweep-occ chose, provided it swept under this run's world and pretraining settings."""
    path = os.path.join(RESULTS, "occ_weight_sweep.json")
    if not os.path.exists(path):
        sys.exit(f"no occupancy weight chosen yet: run `{sys.argv[0]} sweep-occ` first (writes {path})")
    with open(path) as f:
        sweep = json.load(f)
    changed = [k for k in PRETRAIN_KEYS if sweep["settings"].get(k) != cfg.get(k)]
    if changed:
        sys.exit(f"{path} swept the occupancy weight under other settings ({', '.join(changed)}): rerun sweep-occ "
                 f"with this run's arguments")
    return float(sweep["chosen"])


def sweep_occ(args) -> None:
    """Pretrain the MLP + occupancy row with each weight on world SWEEP_SEED (never reported) and keep the
    weight with the best linear probe mIoU there."""
    import torch

    torch.set_num_threads(args.threads)
    cfg = settings(args)
    work = os.path.join(args.work, f"sweep_{args.seed}")
    same_settings(work, cfg)
    store = part(os.path.join(work, "parts", "world.json"),
                 lambda: {"store": build_world(work, args.seed, cfg)})["store"]
    out = {}
    for w in (0.0, *OCC_WEIGHTS):
        run = os.path.join(work, f"occ_{w:g}")
        ck = pretrained(store, os.path.join(run, "pretrain"), args.seed, 3, w, cfg)
        r = part(os.path.join(run, "probe.json"),
                 lambda: probe_part(store, ck, os.path.join(run, "probe"), args.seed, cfg))
        out[f"{w:g}"] = r["miou"]
        print(f"occupancy weight {w:g}: probe mIoU {100 * r['miou']:.1f}", flush=True)
    chosen = max(OCC_WEIGHTS, key=lambda w: out[f"{w:g}"])
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "occ_weight_sweep.json"), "w") as f:
        json.dump({"world_seed": args.seed, "probe_miou_by_weight": out, "chosen": chosen,
                   "note": "weight 0 = the 3-layer MLP row, for reference; chosen among "
                           f"{list(OCC_WEIGHTS)} by linear probe mIoU on this world's val scenes",
                   "settings": cfg}, f, indent=1)
    print(f"chosen occupancy weight: {chosen:g}")


def bootstrap_ci(d: np.ndarray, reps: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of paired differences (resampling seeds)."""
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (reps, len(d)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def load_seeds() -> list[dict]:
    """The seed files in RESULTS, by seed; refused unless they are one experiment (same settings)."""
    files = sorted(f for f in os.listdir(RESULTS) if f.startswith("seed_") and f.endswith(".json"))
    seeds = [json.load(open(os.path.join(RESULTS, f))) for f in files]
    if not seeds:
        sys.exit(f"no seed files in {RESULTS}: run `{sys.argv[0]} run --seed K` first")
    seeds.sort(key=lambda s: s["seed"])
    odd = [s["seed"] for s in seeds
           if (s["settings"], s["occ_weight"]) != (seeds[0]["settings"], seeds[0]["occ_weight"])]
    if odd:
        sys.exit(f"seed files {odd} were made with other settings than seed {seeds[0]['seed']}: one table, one "
                 f"experiment; move them aside or rerun them")
    return seeds


def row_values(seeds: list[dict], row: str, col: str) -> np.ndarray | None:
    """A row's value in one column, per seed (None unless every seed has it)."""
    v = [s["rows"].get(row, {}).get(col) for s in seeds]
    return None if any(x is None for x in v) else np.asarray(v, dtype=float)


def paired_difference(seeds: list[dict], a: str, b: str, col: str) -> tuple[np.ndarray, float, float] | None:
    """Row a minus row b in column ``col`` (in the column's display scale), per seed, with the 95%
    bootstrap interval of its mean; None where either row lacks the column."""
    va, vb = row_values(seeds, a, col), row_values(seeds, b, col)
    if va is None or vb is None:
        return None
    d = COLUMNS[col][2] * (va - vb)
    return (d, *bootstrap_ci(d))


def make_table(args) -> str:
    seeds = load_seeds()
    ks = [s["seed"] for s in seeds]
    names = list(FLOORS) + list(ROWS)

    def values(row, col):
        return row_values(seeds, row, col)

    def cell(v, col, spread=True):
        _, digits, scale = COLUMNS[col]
        if v is None:
            return "-"
        text = f"{scale * v.mean():.{digits}f}"
        return text + (f" ± {scale * v.std(ddof=1):.{digits}f}" if spread and len(v) > 1 else "")

    lines = ["| row | " + " | ".join(t for t, _, _ in COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in names:
        lines.append(f"| {row} | " + " | ".join(cell(values(row, c), c) for c in COLUMNS) + " |")
    diff_lines = ["| paired difference | " + " | ".join(t for t, _, _ in COLUMNS.values()) + " |",
                  "|---" * (len(COLUMNS) + 1) + "|"]
    for a, b in DIFFS:
        cells = []
        for col in COLUMNS:
            diff = paired_difference(seeds, a, b, col)
            if diff is None:
                cells.append("-")
                continue
            d, lo, hi = diff
            digits = COLUMNS[col][1]
            cells.append(f"{d.mean():+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}] ({(d > 0).sum()}/{len(d)})")
        diff_lines.append(f"| {a} - {b} | " + " | ".join(cells) + " |")
    s0 = seeds[0]
    cfg = s0["settings"]
    per_seed = [f"| {s['seed']} | " + " | ".join(f"{100 * s['rows'][r]['probe']:.1f}" for r in names) + " |"
                for s in seeds]
    minutes = [s.get("seconds_this_sitting", float("nan")) / 60 for s in seeds]
    lab = s0["labels"]
    text = "\n".join([
        "# CleverDistiller ablation on synthetic worlds (version 2)",
        "",
        f"{len(seeds)} paired seeds ({', '.join(map(str, ks))}); mean ± sample standard deviation over seeds. "
        f"mIoU in % "
        f"on the val scenes of each seed's world, over the evaluation classes present in its val truth "
        f"({len(s0['classes'])} for seed {s0['seed']}: {', '.join(s0['classes'])}).",
        "",
        *lines,
        "",
        "Paired differences (row minus row, same seed): mean, 95% bootstrap confidence interval over seeds, and "
        "on how many seeds the difference is positive."
        + (f" **Interim: {len(seeds)} of the {MIN_SEEDS} seeds planned; a bootstrap over so few seeds understates "
           "the uncertainty, so read the intervals as provisional.**" if len(seeds) < MIN_SEEDS else ""),
        "",
        *diff_lines,
        "",
        "Linear probe mIoU per seed:",
        "",
        "| seed | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
        *per_seed,
        "",
        "What the columns are:",
        "- *linear probe*: softmax regression on frozen per-point features, fitted by L-BFGS to tolerance "
        f"(trainer/probe.py) on {cfg['probe_points_per_sweep']} labelled points of every train sweep; the "
        "`logreg` rows are the same fit on the raw point inputs (x, y, z, intensity), on the stored teacher "
        "features (+ a valid flag), and on both (floors and a ceiling that need no student).",
        f"- *fine-tune*: the whole segmenter, cross-entropy + Lovasz, AdamW lr {cfg['finetune_lr']}, batch "
        f"{cfg['finetune_batch']}, {cfg['finetune_steps']['ft_1scene']} steps at 1 scene "
        f"({lab['ft_1scene']['percent_of_train_sweeps']:.1f}% of the train sweeps) and "
        f"{cfg['finetune_steps']['ft_25pct']} steps at 25% ({lab['ft_25pct']['scenes']} of "
        f"{lab['ft_25pct']['of_train_scenes']} train scenes) for seed {s0['seed']}; the scenes are drawn per seed.",
        "- *held-out distill gain*: 1 - (cosine distillation loss on the val sweeps) / (loss of the constant "
        "mean teacher direction); 0 = no better than a constant.",
        "- *RankMe*: effective rank of the backbone's point features on 16 train sweeps (the backbone has "
        f"{'16' if cfg['arch'] == 'minkunet-tiny' else '?'} output channels).",
        "- *occupancy bal. acc*: the occupancy head on hidden cubes of the val sweeps "
        "(benchmarks/results/occupancy_shortcut.json: the offsets alone reach 0.53).",
        "",
        "Settings:",
        f"- world per seed: {cfg['scenes']} synthetic scenes x {cfg['samples_per_scene']} keyframes "
        f"({s0['world']['val_scenes']} val scenes, {s0['world']['sweeps']} sweeps), cameras {cfg['image_size']}",
        f"- teacher: the semantic stand-in ({cfg['teacher']}, the one the teacher gate names as trained), input "
        f"{cfg['teacher_size']}",
        f"- student: {cfg['arch']}, voxel {cfg['voxel_size']} m, at most {cfg['max_points']} points per training "
        f"sweep; pretraining {cfg['pretrain_steps']} steps, batch {cfg['pretrain_batch']}, lr {cfg['pretrain_lr']}, "
        f"projection head hidden width {cfg['head_hidden']}; occupancy: {cfg['mask_ratio'][0]}-{cfg['mask_ratio'][1]} "
        f"of 2 m cubes hidden, weight {s0['occ_weight']:g} (chosen on world seed {SWEEP_SEED}: "
        "benchmarks/results/paper_table/occ_weight_sweep.json)",
        f"- time per seed (one sitting, {s0.get('threads', '?')} thread(s)): "
        + ", ".join(f"{m:.0f} min" for m in minutes),
        "",
        "Commands: `.venv/bin/python benchmarks/paper_table.py sweep-occ`, then `... run --seed K` per seed, then "
        "`... table`.",
    ])
    return text


def make_figure(out: str) -> str:
    """The paired differences of the table as a figure: per column, each difference's mean, 95% bootstrap
    interval and per-seed values against 0."""
    from trainer.plots import Difference, plot_paired_differences

    seeds = load_seeds()
    short = {"random init": "random", "linear head": "linear", "3-layer MLP head": "MLP",
             "MLP head + occupancy": "MLP+occ"}
    panels = {}
    for col, (title, _, scale) in COLUMNS.items():
        diffs = []
        for a, b in DIFFS:
            diff = paired_difference(seeds, a, b, col)
            if diff is not None:
                d, lo, hi = diff
                diffs.append(Difference(f"{short[a]} - {short[b]}", d, float(d.mean()), lo, hi))
        panels[title + (" (points)" if scale == 100.0 else "")] = diffs
    n = len(seeds)
    title = (f"Paired differences over {n} seeds ({', '.join(str(s['seed']) for s in seeds)}): mean (diamond), 95% "
             f"bootstrap interval (bar; green above 0, red below), each seed (grey)"
             + (f"; interim, {n} of {MIN_SEEDS} seeds" if n < MIN_SEEDS else ""))
    return str(plot_paired_differences(panels, out, title))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("run", "sweep-occ", "table"))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--work", default=os.path.join(ROOT, "paper_table_work"), help="worlds, stores and runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (run two seeds side by side on 2 cores)")
    ap.add_argument("--scenes", type=int, default=48, help="48 scenes -> 8 val scenes")
    ap.add_argument("--samples-per-scene", type=int, default=2)
    ap.add_argument("--image-size", default="400x225")
    ap.add_argument("--arch", default="minkunet-tiny")
    ap.add_argument("--head-hidden", type=int, default=256)
    ap.add_argument("--max-points", type=int, default=10000)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--ft-steps-1scene", type=int, default=300)
    ap.add_argument("--ft-steps-25", type=int, default=500)
    ap.add_argument("--ft-lr", type=float, default=2e-3)
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "paper_table.md"))
    args = ap.parse_args()
    if args.command == "table":
        text = make_table(args)
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(text)
        print(f"figure: {make_figure(os.path.splitext(args.out)[0] + '.png')}")
    elif args.command == "sweep-occ":
        args.seed = SWEEP_SEED if args.seed is None else args.seed
        sweep_occ(args)
    else:
        if args.seed is None or args.seed >= SWEEP_SEED:
            sys.exit(f"run needs --seed K below {SWEEP_SEED} (seed {SWEEP_SEED} picks the occupancy weight)")
        run_seed(args)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
