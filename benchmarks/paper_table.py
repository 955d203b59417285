"""The paper's ablation table on synthetic worlds, version 3: does distillation help, does the MLP head
beat the linear one, does occupancy help, measured against floors, at the same budget for every row,
over paired seeds, on worlds where a point's position does not give its class away (world version 3).

    .venv/bin/python benchmarks/paper_table.py sweep-occ [--seed 900]   # once: pick the occupancy weight
    .venv/bin/python benchmarks/paper_table.py run --seed K             # one seed (resumable), K = 0, 1, ...
    .venv/bin/python benchmarks/paper_table.py detect --seed K          # its detection columns (after run)
    .venv/bin/python benchmarks/paper_table.py transfer --seed K        # its SemanticKITTI transfer (after run)
    .venv/bin/python benchmarks/paper_table.py table                    # paper_table.md from the seed files
    .venv/bin/python benchmarks/paper_table.py status                   # which seeds' parts are done, minutes

A seed K sets everything that varies: the synthetic world (``cdpipe synth --seed K``), every
initialisation, the data order and which scenes are labelled; every row sees the same K, so rows are
compared seed by seed (paired). Per seed, in WORK/seed_K (each finished part is kept, so a killed run
continues where it stopped, and a part's seconds count every sitting it ran in):

1. a world of ``--scenes`` x ``--samples-per-scene`` keyframes (world version 3), every 6th scene in val
   (nuScenes trainval naming), extracted with the teacher the teacher gate names as trained (the semantic
   stand-in, ``tools/teachers/semantic.safetensors``) at 224x448;
2. floors and a ceiling that need no student, all fitted on the same 2,000 labelled points of every train
   sweep and scored on every labelled point of the val sweeps: softmax regression (``trainer/probe.py``,
   L-BFGS to tolerance) and gradient-boosted trees on the raw inputs (x, y, z, intensity, range), softmax
   regression on the stored teacher features and on raw + teacher;
3. student rows random init (no pretraining), linear head, 3-layer MLP head, MLP head + occupancy (weight
   picked by ``sweep-occ`` on world seed 900, never reported), for minkunet-tiny (16 output channels);
   from each backbone: the linear probe on its features, the linear probe on its features + the raw
   inputs (what the student adds to what the points already say), fine-tuning at 1 scene and at 25% of
   the train sweeps (cross-entropy + Lovasz, whole scenes; the curve's rise over its last quarter is
   kept, to show whether it reached its plateau; every row but the linear head, to keep a seed near 90
   minutes), the held-out distillation gain 1 - loss / loss_mean
   (``trainer/evaluate.py``; it scores head and backbone together), RankMe on train sweeps, and the
   occupancy balanced accuracy on held-out sweeps;
4. the wider student minkunet-small (48 output channels), random init and 3-layer MLP head, pretrained
   for the same number of steps: probe, probe + raw, distillation gain, RankMe;
5. occupancy floors on the MLP + occupancy row's own queries: the offset alone (logistic regression and a
   small tree) and gradient-boosted trees on hand-made geometry (``benchmarks/occupancy_shortcut.py``);
6. ``detect``, in WORK/seed_K/detection: the seed's store upgraded by ``cdpipe migrate`` (the boxes come
   from the world's tables), and random init, linear head, 3-layer MLP head and MLP head + occupancy (their
   checkpoints from step 3) each fine-tuned as a CenterPoint-style detector (``trainer/detection.py``) at
   1 scene and at 25% (the scenes segmentation labelled), scored by the nuScenes devkit on the val
   sweeps (mAP, NDS, per-class AP). Its settings and code version are its own (it runs later, from the
   code that has the detector), recorded beside the segmentation part's code version in
   ``detection_seed_K.json``;
7. ``transfer``, in WORK/seed_K/transfer: a SemanticKITTI world from the same generator at seed
   K + ``TRANSFER_WORLD_OFFSET`` (other streets than the ones pretraining saw; ``cdpipe synth
   --dataset semantickitti``, 11 sequences of ``--transfer-samples-per-scene`` scans, sequence 08 the val one),
   extracted with the seed's teacher at the seed's teacher size, and random init, 3-layer MLP head and MLP head
   + occupancy (their nuScenes pretraining checkpoints from step 3) each fine-tuned on it at 1% and 10% of its
   train scans (the field's transfer protocol: single scans drawn by seed, ``--labels-unit sweeps``, the same
   for every row), cross-entropy + Lovasz with the segmentation fine-tuning's optimiser settings, scored by
   mIoU on every point of sequence 08 over the classes present there; the curve's last-quarter rise is kept.
   Its settings and code version are its own, beside the segmentation part's, in ``transfer_seed_K.json``.

mIoU is over the classes present in the val truth of that world (listed in the seed file). Every run of
a table comes from one code version: ``code_version`` (a hash of pipeline/, trainer/, the teacher's
weights and ``PROTOCOL``) is part of the settings, a seed directory refuses to continue under another, and
``table`` refuses seed files of different versions. Run seeds from a pinned checkout (``git worktree``)
when the working tree is being edited meanwhile.
The seed's results land in ``benchmarks/results/paper_table/seed_K.json``:
``{"seed": K, "rows": {row: {column: value}}, ...details}``. ``table`` writes
``benchmarks/results/paper_table.md``: means over seeds, and the paired differences with 95% intervals
over seeds, percentile bootstrap and Student t side by side; it ends with one verdict per claim of the paper
(``CLAIMS``), read off the t intervals of the comparisons that test it (``claims_section``).
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
PROTOCOL = "3"  # bump when what a seed runs changes outside pipeline/ and trainer/
WORLD_VERSION = 3
WIDE_ARCH = "minkunet-small"
ROWS = {  # name -> (pretrain?, projection head layers, occupancy on?, arch: "" = --arch, else WIDE_ARCH)
    "random init": (False, 0, False, ""),
    "linear head": (True, 1, False, ""),
    "3-layer MLP head": (True, 3, False, ""),
    "MLP head + occupancy": (True, 3, True, ""),
    "random init (wide)": (False, 0, False, WIDE_ARCH),
    "3-layer MLP head (wide)": (True, 3, False, WIDE_ARCH),
}
FINETUNED = ("random init", "3-layer MLP head", "MLP head + occupancy")  # the linear head: probe only (time)
FLOORS = {"logreg: raw point inputs": "raw", "gbdt: raw point inputs": "gbdt",
          "logreg: teacher features": "teacher", "logreg: raw + teacher": "raw+teacher"}
OCC_FLOORS = {"occupancy: offset alone": "offset", "occupancy: geometry + gbdt": "geometry"}
COLUMNS = {  # key -> (title, digits, scale)
    "probe": ("linear probe mIoU", 1, 100.0),
    "probe_raw": ("probe on features + raw mIoU", 1, 100.0),
    "ft_1scene": ("fine-tune 1 scene mIoU", 1, 100.0),
    "ft_25pct": ("fine-tune 25% mIoU", 1, 100.0),
    "distill_gain": ("held-out distill gain", 3, 1.0),
    "rankme": ("RankMe (train)", 1, 1.0),
    "occ_bal_acc": ("occupancy bal. acc", 3, 1.0),
}
DIFFS = (("linear head", "random init"), ("3-layer MLP head", "linear head"),
         ("MLP head + occupancy", "3-layer MLP head"), ("3-layer MLP head", "random init"),
         ("MLP head + occupancy", "random init"), ("3-layer MLP head (wide)", "random init (wide)"))
FLOOR_DIFFS = (("3-layer MLP head", "probe_raw", "logreg: raw point inputs", "probe"),
               ("3-layer MLP head", "probe_raw", "gbdt: raw point inputs", "probe"),
               ("MLP head + occupancy", "occ_bal_acc", "occupancy: geometry + gbdt", "occ_bal_acc"))
OCC_WEIGHTS = (0.1, 0.3, 1.0)
MIN_SEEDS = 8  # the table is interim below this many seeds
SWEEP_SEED = 900
PLATEAU_RISE = 0.5  # mIoU points over a fine-tuning curve's last quarter: under this it has levelled off


def code_version(teacher: str = TEACHER) -> str:
    """What makes this code's numbers: a hash of every .py under pipeline/ and trainer/, the teacher's
    weights and PROTOCOL (16 hex digits)."""
    import hashlib

    h = hashlib.sha256(PROTOCOL.encode())
    for package in ("pipeline", "trainer"):
        for folder, dirs, files in sorted(os.walk(os.path.join(ROOT, package))):
            dirs.sort()
            for name in sorted(f for f in files if f.endswith(".py")):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, ROOT).encode())
                with open(path, "rb") as f:
                    h.update(f.read())
    with open(teacher, "rb") as f:
        h.update(f.read())
    return h.hexdigest()[:16]


def settings(args) -> dict:
    return {"scenes": args.scenes, "samples_per_scene": args.samples_per_scene, "image_size": args.image_size,
            "world_version": WORLD_VERSION, "teacher_size": "224x448", "teacher": os.path.relpath(TEACHER, ROOT),
            "arch": args.arch, "wide_arch": WIDE_ARCH,
            "head_hidden": args.head_hidden, "voxel_size": 0.1, "max_points": args.max_points,
            "pretrain_steps": args.pretrain_steps, "pretrain_batch": 2, "pretrain_lr": 2e-3,
            "pretrain_warmup": args.pretrain_steps // 10, "mask_ratio": [0.3, 0.5],
            "finetune_steps": {"ft_1scene": args.ft_steps_1scene, "ft_25pct": args.ft_steps_25},
            "finetune_batch": 2, "finetune_lr": args.ft_lr, "finetune_warmup": 10, "lovasz": True,
            "finetune_evals": 4, "probe_points_per_sweep": 2000,
            "label_percent": {"ft_1scene": 1.0, "ft_25pct": 25.0}, "code_version": code_version()}


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


def build_world(work: str, seed: int, cfg: dict, dataset: str = "nuscenes", seconds: dict | None = None) -> str:
    """Synthetic world + store for ``seed`` in ``dataset``'s layout (nuScenes trainval naming, or
    SemanticKITTI's sequences), extracted with the table's teacher (each kept once finished; extraction
    resumes by itself); ``seconds`` gains the time of each step run now."""
    os.makedirs(work, exist_ok=True)
    dataroot, store = os.path.join(work, "world"), os.path.join(work, "store.zarr")
    layout = ["--dataset", dataset] + (["--version", "v1.0-trainval"] if dataset == "nuscenes" else [])
    seconds = {} if seconds is None else seconds
    t0 = time.perf_counter()
    if not os.path.exists(dataroot + ".done"):
        _run([_cli("cdpipe"), "synth", *layout, "--out", dataroot, "--scenes", str(cfg["scenes"]),
              "--samples-per-scene", str(cfg["samples_per_scene"]), "--seed", str(seed), "--camera-size",
              cfg["image_size"], "--world-version", str(cfg.get("world_version", WORLD_VERSION)), "--no-preview",
              "--workers", "1"],
             os.path.join(work, "synth.log"))
        open(dataroot + ".done", "w").close()
        seconds["synth"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if not os.path.exists(store + ".done"):
        _run([_cli("cdpipe"), "extract", *layout, "--dataroot", dataroot, "--out", store,
              "--teacher", "vit_small_patch14_dinov2", "--teacher-weights", TEACHER, "--teacher-size",
              _width_by_height(cfg["teacher_size"]), "--workers", "1", "--torch-threads", "1"],
             os.path.join(work, "extract.log"))
        open(store + ".done", "w").close()
        seconds["extract"] = time.perf_counter() - t0
    return store


def same_settings(work: str, cfg: dict) -> None:
    """The settings a work directory was started with are kept in it; continuing it with others would
    mix two experiments in one seed, so that is refused."""
    path = os.path.join(work, "settings.json")
    cfg = json.loads(json.dumps(cfg))  # as it reads back from the file: tuples become lists
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


HEARTBEAT_S = 60.0  # how often a running part notes that it is still running (its sittings' file)


def _write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".tmp", path)


def part(path: str, compute) -> dict:
    """The JSON at ``path``, computed and written first if missing (each finished part survives a kill).

    Its ``seconds`` count every sitting it ran in: ``PATH.sittings`` keeps [start, last seen alive] per
    sitting (noted every HEARTBEAT_S, and when the sitting ends in an error), so a part killed and resumed
    counts the time before the kill too (to within HEARTBEAT_S), not only the last sitting's; ``sittings``
    says how many there were."""
    log = path + ".sittings"
    if os.path.exists(path):
        if os.path.exists(log):  # left by a kill between writing the part and removing its log
            os.remove(log)
        with open(path) as f:
            return json.load(f)
    import threading

    earlier = _read_json(log) or []
    now = [time.time(), time.time()]
    _write_json(log, earlier + [now])
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            now[1] = time.time()
            _write_json(log, earlier + [now])

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        value = compute()
    except BaseException:
        stop.set()
        thread.join()
        now[1] = time.time()
        _write_json(log, earlier + [now])
        raise
    stop.set()
    thread.join()
    value["seconds"] = time.perf_counter() - t0 + sum(end - start for start, end in earlier)
    value["sittings"] = len(earlier) + 1
    _write_json(path, value)
    os.remove(log)
    return value


def pretrained(store: str, out: str, seed: int, head_layers: int, occ_weight: float, cfg: dict, arch: str) -> str:
    """Pretraining checkpoint of one row (continued if a previous run stopped part-way)."""
    from pipeline.store import open_store
    from trainer.config import DataConfig, ModelConfig, TrainConfig
    from trainer.train import pretrain

    ckpt = os.path.join(out, "checkpoint.pt")
    mcfg = ModelConfig(arch=arch, feature_dim=int(open_store(store).attrs["feature_dim"]),
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


def probe_part(store: str, checkpoint: str | None, out: str, seed: int, cfg: dict, arch: str) -> dict:
    from trainer.config import ProbeConfig
    from trainer.probe import linear_probe

    r = linear_probe(store, checkpoint, arch,
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
                        eval_every=steps // cfg["finetune_evals"], seed=seed)
    resume = os.path.exists(os.path.join(out, "segmenter.pt"))
    r = finetune(store, checkpoint, cfg["arch"], fc, voxel_size=cfg["voxel_size"], progress=False, resume=resume)
    with open(os.path.join(out, "curve.jsonl")) as f:
        curve = [json.loads(line) for line in f]
    return {"miou": r["miou"], "label_scenes": r["label_scenes"], "curve": curve,
            "last_quarter_rise": last_quarter_rise(curve, steps)}


def last_quarter_rise(curve: list[dict], steps: int, metric: str = "val_miou") -> float | None:
    """Points (x100) of ``metric`` gained from the last evaluation at or before 3/4 of the steps to the end of
    the curve (None without a validation point there)."""
    scored = [(int(c["step"]), float(c[metric])) for c in curve if c.get(metric) is not None]
    before = [m for step, m in scored if step <= 0.75 * steps]
    if not before:
        return None
    return 100.0 * (scored[-1][1] - before[-1])


def floor_part(store: str, kind: str, seed: int, cfg: dict) -> dict:
    """A floor or ceiling that needs no student: ``raw`` (softmax regression on x, y, z, intensity, range),
    ``gbdt`` (gradient-boosted trees on the same), ``teacher`` or ``raw+teacher`` (softmax regression on the
    stored teacher feature and its valid flag, with the student's raw input for the latter)."""
    from pipeline.classes import NUM_EVAL_CLASSES
    from trainer.config import DataConfig
    from trainer.data import StoreDataset
    from trainer.evaluate import scores
    from trainer.metrics import confusion_matrix
    from trainer.probe import feature_table, fit_softmax

    if kind == "gbdt":
        from benchmarks.world_realism import gbdt_floor

        r = gbdt_floor(store, seed, cfg, class_weight="balanced")
        return {"miou": r["miou"], "rounds": r["rounds"], "fit_points": r["fit_points"], "classes": r["classes"],
                "iou": r["iou"]}

    def dataset(split: str) -> StoreDataset:
        return StoreDataset(DataConfig(store=store, split=split, voxel_size=cfg["voxel_size"], augment=False))

    if kind == "raw":
        from benchmarks.world_realism import raw_table

        x, y = raw_table(dataset("train"), cfg["probe_points_per_sweep"], seed)
        xv, yv = raw_table(dataset("val"), 0, seed)
    else:
        x, y = feature_table(dataset("train"), kind, points_per_sweep=cfg["probe_points_per_sweep"], seed=seed)
        xv, yv = feature_table(dataset("val"), kind)
    probe = fit_softmax(x, y)
    s = scores(confusion_matrix(yv, probe.predict(xv), NUM_EVAL_CLASSES))
    return {"miou": s["miou"], "fit": probe.summary(), "fit_points": int(len(y)), "classes": s["classes"],
            "iou": s["iou"]}


def probe_raw_part(store: str, checkpoint: str | None, seed: int, cfg: dict, arch: str) -> dict:
    """Softmax regression on a frozen backbone's point features beside the raw inputs (x, y, z, intensity,
    range), on the floors' points: what the student knows that the points alone do not say."""
    import torch

    from pipeline.classes import NUM_EVAL_CLASSES
    from trainer.batch import collate
    from trainer.checkpoint import new_segmenter
    from trainer.config import DataConfig
    from trainer.data import PROBE_POINTS_STREAM, SEGMENTATION, StoreDataset, stream_rng
    from trainer.evaluate import scores
    from trainer.metrics import confusion_matrix
    from trainer.probe import fit_softmax

    model, _ = new_segmenter(arch, checkpoint, seed)
    model.eval()

    @torch.no_grad()
    def table(split: str, per_sweep: int) -> tuple[np.ndarray, np.ndarray]:
        ds = StoreDataset(DataConfig(store=store, split=split, voxel_size=cfg["voxel_size"], augment=False),
                          targets=SEGMENTATION)
        xs, ys = [], []
        for i in range(len(ds)):
            item = ds[i]
            labelled = np.nonzero(item.labels > 0)[0]
            if per_sweep and len(labelled) > per_sweep:  # the points raw_table draws for the floors
                labelled = np.sort(stream_rng(PROBE_POINTS_STREAM, seed, int(item.sweep))
                                   .choice(labelled, per_sweep, replace=False))
            f = model.point_features(collate([item], cfg["voxel_size"])).float().numpy()[labelled]
            xyz = item.xyz[labelled]
            xs.append(np.c_[f, xyz, item.intensity[labelled], np.hypot(xyz[:, 0], xyz[:, 1])])
            ys.append(item.labels[labelled].astype(np.int64))
        return np.concatenate(xs).astype(np.float32), np.concatenate(ys)

    x, y = table("train", cfg["probe_points_per_sweep"])
    probe = fit_softmax(x, y)
    xv, yv = table("val", 0)
    s = scores(confusion_matrix(yv, probe.predict(xv), NUM_EVAL_CLASSES))
    return {"miou": s["miou"], "fit": probe.summary(), "fit_points": int(len(y)), "iou": s["iou"]}


def occupancy_floors_part(store: str, checkpoint: str) -> dict:
    """The occupancy floors on the queries the student is scored on (and the same draw of train sweeps):
    the offset to the nearest visible point alone, and hand-made geometry with gradient-boosted trees."""
    from benchmarks.occupancy_shortcut import classifiers, geometry_floor, offsets_of
    from trainer.evaluate import OCCUPANCY_SEED, occupancy_dataset

    train_ds = occupancy_dataset(store, checkpoint, "train", OCCUPANCY_SEED)
    val_ds = occupancy_dataset(store, checkpoint, "val", OCCUPANCY_SEED)
    x_tr, y_tr, train_items = offsets_of(train_ds)
    x_te, y_te, val_items = offsets_of(val_ds)
    offset = classifiers(x_tr, y_tr, x_te, y_te)
    geometry = geometry_floor(train_items, val_items)
    return {"offset": max(offset.values()), "offset_by_classifier": offset, "geometry": geometry["balanced_acc"],
            "geometry_fit": geometry}


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
    for name, (pre, layers, with_occ, wide) in ROWS.items():
        arch = wide or cfg["arch"]
        run = os.path.join(work, row_tag(name))
        if with_occ:
            occ = occupancy_weight(cfg, args.results)  # read only now: the other rows need not wait for sweep-occ
        checkpoint = (pretrained(store, os.path.join(run, "pretrain"), seed, layers, occ if with_occ else 0.0, cfg,
                                 arch) if pre else None)
        probe = part(os.path.join(run, "probe.json"),
                     lambda: probe_part(store, checkpoint, os.path.join(run, "probe"), seed, cfg, arch))
        probe_raw = part(os.path.join(run, "probe_raw.json"),
                         lambda: probe_raw_part(store, checkpoint, seed, cfg, arch))
        fts = {key: part(os.path.join(run, f"{key}.json"),
                         lambda key=key: finetune_part(store, checkpoint, os.path.join(run, key), seed, key, cfg))
               for key in ("ft_1scene", "ft_25pct") if name in FINETUNED}
        extra = part(os.path.join(run, "scores.json"), lambda: {
            "rankme": store_rankme(store, checkpoint, sweeps=16, voxel_size=cfg["voxel_size"], arch=arch,
                                   seed=seed, split="train")[0],
            **({"distill": distillation_gain(store, checkpoint)} if pre else {}),
            **({"occ_bal_acc": occupancy_accuracy(checkpoint, occupancy_items(store, checkpoint))} if with_occ else {}),
        })
        row = {"probe": probe["miou"], "probe_raw": probe_raw["miou"], "rankme": extra["rankme"],
               **{key: ft["miou"] for key, ft in fts.items()}}
        if pre:
            row["distill_gain"] = extra["distill"]["gain"]
        if with_occ:
            row["occ_bal_acc"] = extra["occ_bal_acc"]
            floors = part(os.path.join(work, "parts", "occupancy_floors.json"),
                          lambda: occupancy_floors_part(store, checkpoint))
            for floor_name, key in OCC_FLOORS.items():
                rows[floor_name] = {"occ_bal_acc": floors[key]}
            details["occupancy floors"] = floors
        rows[name] = row
        details[name] = {"arch": arch, "probe_fit": probe["fit"], "probe_raw_fit": probe_raw["fit"],
                         "fit_points": {"probe": probe["fit_points"], "probe_raw": probe_raw["fit_points"]},
                         "distill": extra.get("distill"),
                         "curves": {k: v["curve"] for k, v in fts.items()},
                         "last_quarter_rise": {k: v["last_quarter_rise"] for k, v in fts.items()},
                         "seconds": {"probe": probe["seconds"], "probe_raw": probe_raw["seconds"],
                                     **{k: v["seconds"] for k, v in fts.items()}, "scores": extra["seconds"]}}
        if pre:
            details[name]["seconds"]["pretrain"] = pretrain_seconds(os.path.join(run, "pretrain"))
    labels = {key: label_share(store, fts_labels(work, key)) for key in ("ft_1scene", "ft_25pct")}
    from pipeline.store import open_store

    attrs = dict(open_store(store).attrs)
    val_scenes = sum(1 for s in attrs["scenes"] if s["split"] == "val")
    result = {"seed": seed, "rows": rows, "classes": details["logreg: raw point inputs"]["classes"],
              "labels": labels, "occ_weight": occ, "settings": cfg,
              "world": {"sweeps": attrs["num_sweeps"], "scenes": len(attrs["scenes"]), "val_scenes": val_scenes},
              "details": details, "seconds_this_sitting": time.perf_counter() - started,
              "seconds_all_parts": total_seconds(details), "threads": args.threads}
    write_result(os.path.join(args.results, f"seed_{seed}.json"), result)
    print(f"seed {seed}: " + "; ".join(f"{r}: probe {100 * v['probe']:.1f}" for r, v in rows.items() if "probe" in v))


DET_PROTOCOL = "1"  # bump when what a seed's detection part runs changes outside pipeline/ and trainer/
DET_ROWS = ("random init", "linear head", "3-layer MLP head", "MLP head + occupancy")
DET_BUDGETS = {"det_1scene": 1.0, "det_25pct": 25.0}  # labelled percent: the segmentation budgets' scenes
DET_COLUMNS = {  # key -> (title, digits, scale)
    "det_1scene_map": ("detection 1 scene mAP", 1, 100.0),
    "det_1scene_nds": ("detection 1 scene NDS", 1, 100.0),
    "det_25pct_map": ("detection 25% mAP", 1, 100.0),
    "det_25pct_nds": ("detection 25% NDS", 1, 100.0),
}
DET_DIFFS = (("linear head", "random init"), ("3-layer MLP head", "linear head"),
             ("MLP head + occupancy", "3-layer MLP head"), ("3-layer MLP head", "random init"),
             ("MLP head + occupancy", "random init"))


def write_result(path: str, result: dict) -> None:
    """Write a seed's result file (through a temporary file, so a kill never leaves half of one), but leave
    one that already says the same: a rerun of a finished part changes only how it was rerun
    (``seconds_this_sitting``, ``threads``), so rerunning finished seeds keeps the committed files as they
    are. A file that does not parse is replaced."""
    before = _read_json(path)
    rerun = {"seconds_this_sitting": None, "threads": None}
    if isinstance(before, dict) and {**before, **rerun} == {**json.loads(json.dumps(result)), **rerun}:
        return
    _write_json(path, result)


def row_tag(name: str) -> str:
    """The folder of a row in a seed's work directory."""
    with_occ, wide = ROWS[name][2], ROWS[name][3]
    return name.split()[0].lower() + ("_occ" if with_occ else "") + ("_wide" if wide else "")


def det_settings(args, seg: dict) -> dict:
    """What a seed's detection part runs, beside the segmentation settings it builds on (``seg``)."""
    from trainer.config import DetectionConfig

    return {"segmentation_code_version": seg["code_version"], "code_version": code_version(),
            "protocol": DET_PROTOCOL, "arch": seg["arch"], "voxel_size": seg["voxel_size"],
            "steps": {"det_1scene": args.det_steps_1scene, "det_25pct": args.det_steps_25},
            "batch": 2, "lr": args.det_lr, "warmup": 10, "max_points": args.det_max_points, "evals": 4,
            "label_percent": dict(DET_BUDGETS),
            "detection_config": DetectionConfig(trunk_channels=args.det_trunk_channels).to_dict()}


def boxes_store(work: str, out: str) -> str:
    """The seed's store upgraded by ``cdpipe migrate`` to this code's schema, with the annotated boxes (read
    from the seed's world); the segmentation part's store is left as it is."""
    store = os.path.join(out, "store.zarr")
    if not os.path.exists(store + ".done"):
        if os.path.exists(store):
            import shutil

            shutil.rmtree(store)  # a migration that died part-way: start it again
        _run([_cli("cdpipe"), "migrate", os.path.join(work, "store.zarr"), "--out", store],
             os.path.join(out, "migrate.log"))
        open(store + ".done", "w").close()
    return store


def det_finetune_part(store: str, checkpoint: str | None, out: str, seed: int, key: str, cfg: dict) -> dict:
    """One detector fine-tuned at budget ``key`` (resumed when its file exists), scored on the val sweeps by
    the nuScenes devkit (mAP, NDS over its 10 classes and over those present) and by the built-in
    centre-distance AP at 2 m along the curve."""
    from pipeline.detection_eval import score_predictions
    from trainer.checkpoint import load_detector
    from trainer.config import DetectionConfig, FinetuneConfig
    from trainer.finetune_detection import detector_predictions, finetune_detection

    steps = cfg["steps"][key]
    dcfg = DetectionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["detection_config"].items()})
    fc = FinetuneConfig(out=out, labels_percent=cfg["label_percent"][key], steps=steps, batch_size=cfg["batch"],
                        lr=cfg["lr"], warmup=cfg["warmup"], max_points=cfg["max_points"], checkpoint_every=50,
                        eval_every=steps // cfg["evals"], seed=seed)
    resume = os.path.exists(os.path.join(out, "detector.pt"))
    r = finetune_detection(store, checkpoint, cfg["arch"], fc, dcfg, voxel_size=cfg["voxel_size"], progress=False,
                           resume=resume)
    model, _ = load_detector(r["detector"])
    scores = score_predictions(store, detector_predictions(model, store, dcfg, cfg["voxel_size"]),
                               os.path.join(out, "devkit"))
    with open(os.path.join(out, "curve.jsonl")) as f:
        curve = [json.loads(line) for line in f]
    scored = [c for c in curve if c.get("val_centre_ap_2m") is not None]
    return {"map": scores["mAP"], "nds": scores["NDS"], "map_present": scores["mAP_present"],
            "nds_present": scores["NDS_present"], "ap": scores["ap"], "present": scores["present"],
            "tp_errors": scores["tp_errors"], "predicted": scores["predicted"], "truth": scores["truth"],
            "centre_ap_2m": r["centre_distance_ap_2m"], "label_scenes": r["label_scenes"],
            "curve": [{k: c[k] for k in ("step", "train_loss", "val_loss", "val_centre_ap_2m")} for c in scored],
            "loss_first_last": [curve[0]["train_loss"], curve[-1]["train_loss"]]}


def segmentation_part(args, what: str) -> tuple[str, dict]:
    """The seed's work directory and the settings its segmentation part ran with (refused in one line before
    that part has started: the ``what`` part fine-tunes its pretraining checkpoints)."""
    work = os.path.join(args.work, f"seed_{args.seed}")
    path = os.path.join(work, "settings.json")
    if not os.path.exists(path):
        sys.exit(f"{work} has no segmentation part yet: run `{sys.argv[0]} run --seed {args.seed}` first (the "
                 f"{what} part fine-tunes its pretraining checkpoints)")
    with open(path) as f:
        return work, json.load(f)


def finished_checkpoints(args, work: str, seg: dict, rows) -> dict[str, str | None]:
    """Each row's pretraining checkpoint (None for random init), checked finished before anything is built:
    a missing one is known in a second, not after minutes of work."""
    from trainer.checkpoint import read_checkpoint

    checkpoints = {}
    for name in rows:
        checkpoint = os.path.join(work, row_tag(name), "pretrain", "checkpoint.pt") if ROWS[name][0] else None
        finished = checkpoint is None or (os.path.exists(checkpoint)
                                          and int(read_checkpoint(checkpoint)["step"]) >= seg["pretrain_steps"])
        if not finished:
            sys.exit(f"{checkpoint}: the {name} row's pretraining is not finished: run `{sys.argv[0]} run "
                     f"--seed {args.seed}` first")
        checkpoints[name] = checkpoint
    return checkpoints


def run_detection_seed(args) -> None:
    """The detection columns of one seed: the rows' pretraining checkpoints from the seed's segmentation
    part (same world, same labelled scenes), each fine-tuned as a detector at 1 scene and at 25%."""
    import torch

    torch.set_num_threads(args.threads)

    work, seg = segmentation_part(args, "detection")
    checkpoints = finished_checkpoints(args, work, seg, DET_ROWS)
    cfg = det_settings(args, seg)
    started = time.perf_counter()
    out = os.path.join(work, "detection")
    same_settings(out, cfg)
    store = part(os.path.join(out, "parts", "store.json"), lambda: {"store": boxes_store(work, out)})["store"]
    rows: dict = {}
    details: dict = {}
    for name, checkpoint in checkpoints.items():
        runs = {key: part(os.path.join(out, row_tag(name), f"{key}.json"),
                          lambda key=key: det_finetune_part(store, checkpoint, os.path.join(out, row_tag(name), key),
                                                            args.seed, key, cfg))
                for key in DET_BUDGETS}
        rows[name] = {f"{key}_{m}": r[m] for key, r in runs.items() for m in ("map", "nds")}
        details[name] = runs
        same_det_scenes(args.seed, work, name, {key: r["label_scenes"] for key, r in runs.items()})
    labels = {key: runs[key]["label_scenes"] for key in DET_BUDGETS}
    result = {"seed": args.seed, "rows": rows, "labels": labels, "settings": cfg, "details": details,
              "seconds_this_sitting": time.perf_counter() - started,
              "seconds_all_parts": sum(r["seconds"] for d in details.values() for r in d.values()),
              "threads": args.threads}
    write_result(os.path.join(args.results, f"detection_seed_{args.seed}.json"), result)
    print(f"seed {args.seed} detection: " + "; ".join(
        f"{r}: mAP {100 * v['det_1scene_map']:.1f} / {100 * v['det_25pct_map']:.1f}" for r, v in rows.items()))


def same_det_scenes(seed: int, work: str, name: str, labels: dict[str, list[str]]) -> None:
    """A row's detection runs must have labelled the scenes its segmentation fine-tuning labelled (the two
    tasks are compared on the same labels); checked as each row finishes, so a mismatch stops the seed before
    the next row's runs."""
    for key, seg_key in (("det_1scene", "ft_1scene"), ("det_25pct", "ft_25pct")):
        if not os.path.exists(os.path.join(work, "random", f"{seg_key}.json")):
            continue
        seg_labels = fts_labels(work, seg_key)
        if labels[key] != seg_labels:
            sys.exit(f"seed {seed}: the {name} row's detection at {key} labelled {labels[key]}, segmentation "
                     f"{seg_labels}: the two tasks must fine-tune on the same scenes; delete "
                     f"{os.path.join(work, 'detection', row_tag(name))} and run `detect` again with the code "
                     "that ran the segmentation part")


def fts_labels(work: str, key: str) -> list[str]:
    """The scenes the random-init row fine-tuned on at budget ``key`` (every row draws the same ones)."""
    with open(os.path.join(work, "random", f"{key}.json")) as f:
        return json.load(f)["label_scenes"]


TRANSFER_PROTOCOL = "2"  # bump when what a seed's transfer part runs changes outside pipeline/ and trainer/
# The SemanticKITTI world of seed K is generated from seed K + TRANSFER_WORLD_OFFSET: the generator seeds each
# street from (seed, scene), so seed K itself would give the KITTI world the very streets that seed K's
# nuScenes-format world pretrained every row on; a transfer must meet streets the backbone has not seen.
TRANSFER_WORLD_OFFSET = 5000
TRANSFER_ROWS = ("random init", "3-layer MLP head", "MLP head + occupancy")
TRANSFER_BUDGETS = {"kitti_1pct": 1.0, "kitti_10pct": 10.0}  # percent of the train scans (single scans)
TRANSFER_COLUMNS = {  # key -> (title, digits, scale)
    "kitti_1pct": ("SemanticKITTI 1% scans mIoU", 1, 100.0),
    "kitti_10pct": ("SemanticKITTI 10% scans mIoU", 1, 100.0),
}
TRANSFER_DIFFS = (("3-layer MLP head", "random init"), ("MLP head + occupancy", "random init"),
                  ("MLP head + occupancy", "3-layer MLP head"))
KITTI_SEQUENCES = 11  # 00-10: sequence 08 (scene 1) is val, the ten others train


def transfer_settings(args, seg: dict) -> dict:
    """What a seed's transfer part runs, beside the segmentation settings it builds on (``seg``): its world,
    and the segmentation fine-tuning's optimiser settings."""
    return {"segmentation_code_version": seg["code_version"], "code_version": code_version(),
            "protocol": TRANSFER_PROTOCOL, "dataset": "semantickitti", "scenes": KITTI_SEQUENCES,
            "world_seed_offset": TRANSFER_WORLD_OFFSET,
            "samples_per_scene": args.transfer_samples_per_scene, "image_size": args.transfer_image_size,
            "world_version": seg["world_version"], "teacher": seg["teacher"], "teacher_size": seg["teacher_size"],
            "arch": seg["arch"], "voxel_size": seg["voxel_size"], "max_points": seg["max_points"],
            "steps": {"kitti_1pct": args.transfer_steps_1pct, "kitti_10pct": args.transfer_steps_10pct},
            "batch": seg["finetune_batch"], "lr": seg["finetune_lr"], "warmup": seg["finetune_warmup"],
            "lovasz": seg["lovasz"], "evals": seg["finetune_evals"], "labels_unit": "sweeps",
            "label_percent": dict(TRANSFER_BUDGETS)}


def kitti_world(out: str, seed: int, cfg: dict) -> dict:
    """The seed's SemanticKITTI world (generated from ``seed + cfg["world_seed_offset"]``: other streets than
    the nuScenes-format world the rows pretrained on) and its store (``build_world``), and the seconds each
    step took."""
    seconds: dict = {}
    store = build_world(out, seed + cfg["world_seed_offset"], cfg, "semantickitti", seconds)
    return {"store": store, "seconds_by_step": seconds}


def transfer_finetune_part(store: str, checkpoint: str | None, out: str, seed: int, key: str, cfg: dict) -> dict:
    """One row's backbone fine-tuned on the SemanticKITTI store at budget ``key`` (single scans; resumed when its
    file exists), scored on val sequence 08."""
    from trainer.config import FinetuneConfig
    from trainer.finetune import finetune

    steps = cfg["steps"][key]
    fc = FinetuneConfig(out=out, labels_percent=cfg["label_percent"][key], labels_unit=cfg["labels_unit"],
                        steps=steps, batch_size=cfg["batch"], lr=cfg["lr"], warmup=cfg["warmup"],
                        lovasz=cfg["lovasz"], max_points=cfg["max_points"], checkpoint_every=50,
                        eval_every=steps // cfg["evals"], seed=seed)
    resume = os.path.exists(os.path.join(out, "segmenter.pt"))
    r = finetune(store, checkpoint, cfg["arch"], fc, voxel_size=cfg["voxel_size"], progress=False, resume=resume)
    with open(os.path.join(out, "curve.jsonl")) as f:
        curve = [json.loads(line) for line in f]
    return {"miou": r["miou"], "classes": r["classes"], "iou": r["iou"], "label_sweeps": r["label_sweeps"],
            "label_scenes": r["label_scenes"], "curve": curve, "last_quarter_rise": last_quarter_rise(curve, steps)}


def run_transfer_seed(args) -> None:
    """The SemanticKITTI transfer columns of one seed: the rows' nuScenes pretraining checkpoints from the seed's
    segmentation part, each fine-tuned on the seed's SemanticKITTI world at 1% and 10% of its train scans."""
    import torch

    torch.set_num_threads(args.threads)
    from pipeline.store import open_store

    work, seg = segmentation_part(args, "transfer")
    checkpoints = finished_checkpoints(args, work, seg, TRANSFER_ROWS)
    cfg = transfer_settings(args, seg)
    started = time.perf_counter()
    out = os.path.join(work, "transfer")
    same_settings(out, cfg)
    world = part(os.path.join(out, "parts", "world.json"), lambda: kitti_world(out, args.seed, cfg))
    store = world["store"]
    rows: dict = {}
    details: dict = {}
    drawn: dict = {}  # row -> budget -> the labelled scans
    for name, checkpoint in checkpoints.items():
        runs = {key: part(os.path.join(out, row_tag(name), f"{key}.json"),
                          lambda key=key: transfer_finetune_part(store, checkpoint,
                                                                 os.path.join(out, row_tag(name), key), args.seed,
                                                                 key, cfg))
                for key in TRANSFER_BUDGETS}
        rows[name] = {key: r["miou"] for key, r in runs.items()}
        details[name] = {"curves": {k: r["curve"] for k, r in runs.items()},
                         "last_quarter_rise": {k: r["last_quarter_rise"] for k, r in runs.items()},
                         "iou": {k: r["iou"] for k, r in runs.items()},
                         "seconds": {k: r["seconds"] for k, r in runs.items()}}
        drawn[name] = {key: r["label_sweeps"] for key, r in runs.items()}
        if drawn[name] != drawn[TRANSFER_ROWS[0]]:
            sys.exit(f"seed {args.seed}: the {name} row fine-tuned on other scans than the {TRANSFER_ROWS[0]} row; "
                     f"every row must see the same ones: delete {os.path.join(out, row_tag(name))} and run again")
    attrs = dict(open_store(store).attrs)
    train = sum(s["num_sweeps"] for s in attrs["scenes"] if s["split"] == "train")
    labels = {key: {"sweeps": len(v), "of_train_sweeps": train, "store_rows": v}
              for key, v in drawn[TRANSFER_ROWS[0]].items()}
    details["world"] = {"seconds": world["seconds"], "seconds_by_step": world["seconds_by_step"]}
    result = {"seed": args.seed, "rows": rows, "classes": runs["kitti_10pct"]["classes"], "labels": labels,
              "world": {"sweeps": attrs["num_sweeps"], "train_sweeps": train,
                        "val_sweeps": sum(s["num_sweeps"] for s in attrs["scenes"] if s["split"] == "val")},
              "settings": cfg, "details": details, "seconds_this_sitting": time.perf_counter() - started,
              "seconds_all_parts": total_seconds(details), "threads": args.threads}
    write_result(os.path.join(args.results, f"transfer_seed_{args.seed}.json"), result)
    print(f"seed {args.seed} transfer: " + "; ".join(
        f"{r}: mIoU {100 * v['kitti_1pct']:.1f} / {100 * v['kitti_10pct']:.1f}" for r, v in rows.items()))


def pretrain_seconds(out: str) -> float | None:
    """Seconds of pretraining from its metrics log (the sum over sittings), None if it logs none."""
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.exists(path):
        return None
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill (the trainer repairs it on resume)
                continue
    times = [r.get("data_s", 0.0) + r.get("step_s", 0.0) for r in rows]
    return float(sum(times)) if rows else None


def total_seconds(details: dict) -> float:
    """Every part's seconds, summed (the seed's compute over all its sittings)."""
    total = 0.0
    for d in details.values():
        if isinstance(d, dict):
            if isinstance(d.get("seconds"), dict):
                total += sum(v for v in d["seconds"].values() if v)
            elif isinstance(d.get("seconds"), (int, float)):
                total += d["seconds"]
    return total


PRETRAIN_KEYS = ("scenes", "samples_per_scene", "image_size", "world_version", "teacher_size", "teacher", "arch",
                 "head_hidden", "voxel_size", "max_points", "pretrain_steps", "pretrain_batch", "pretrain_lr",
                 "pretrain_warmup", "mask_ratio", "probe_points_per_sweep", "code_version")


def occupancy_weight(cfg: dict, results: str = RESULTS) -> float:
    """The weight sweep-occ chose, provided it swept under this run's world and pretraining settings."""
    path = os.path.join(results, "occ_weight_sweep.json")
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
        ck = pretrained(store, os.path.join(run, "pretrain"), args.seed, 3, w, cfg, cfg["arch"])
        r = part(os.path.join(run, "probe.json"),
                 lambda: probe_part(store, ck, os.path.join(run, "probe"), args.seed, cfg, cfg["arch"]))
        out[f"{w:g}"] = r["miou"]
        print(f"occupancy weight {w:g}: probe mIoU {100 * r['miou']:.1f}", flush=True)
    chosen = max(OCC_WEIGHTS, key=lambda w: out[f"{w:g}"])
    os.makedirs(args.results, exist_ok=True)
    with open(os.path.join(args.results, "occ_weight_sweep.json"), "w") as f:
        json.dump({"world_seed": args.seed, "probe_miou_by_weight": out, "chosen": chosen,
                   "note": "weight 0 = the 3-layer MLP row, for reference; chosen among "
                           f"{list(OCC_WEIGHTS)} by linear probe mIoU on this world's val scenes",
                   "settings": cfg}, f, indent=1)
    print(f"chosen occupancy weight: {chosen:g}")


def part_files(folder: str) -> tuple[list[str], list[str]]:
    """A part's steps: the JSON files ``part`` wrote (finished steps) and the sittings' files of steps not
    finished, in ``folder``/parts and the row folders beside it (the detection and transfer folders of a
    segmentation part are parts of their own)."""
    done, unfinished = [], []
    for sub in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, sub)
        if os.path.isdir(path) and sub not in ("detection", "transfer") and not sub.endswith((".zarr", "world")):
            names = sorted(os.listdir(path))
            done += [os.path.join(path, f) for f in names if f.endswith(".json")]
            unfinished += [os.path.join(path, f) for f in names
                           if f.endswith(".json.sittings") and f[:-len(".sittings")] not in names]
    return done, unfinished


def _read_json(path: str):
    """A JSON file, or None where it is being replaced or was cut short."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def part_minutes(folder: str) -> tuple[float, int, int, int]:
    """Minutes a part's work folder has taken so far (finished steps, the sittings of unfinished ones, and
    pretraining from its metrics logs, which lose the steps after a killed run's last checkpoint), its
    finished steps, its steps running now (alive within 2 x HEARTBEAT_S; a pretraining, which logs every step,
    when its log grew as recently) and its stopped steps."""
    done, unfinished = part_files(folder)
    seconds, running, stopped = 0.0, 0, 0
    for path in done:
        seconds += (_read_json(path) or {}).get("seconds") or 0.0
    for path in unfinished:
        sittings = _read_json(path) or []
        seconds += sum(end - start for start, end in sittings)
        alive = bool(sittings) and time.time() - sittings[-1][1] < 2 * HEARTBEAT_S
        running, stopped = running + alive, stopped + (not alive)
    for sub in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        seconds += pretrain_seconds(os.path.join(folder, sub, "pretrain")) or 0.0
        log = os.path.join(folder, sub, "pretrain", "metrics.jsonl")
        logged = os.path.getmtime(log) if os.path.exists(log) else 0.0
        if time.time() - logged < 2 * HEARTBEAT_S:  # once the row's next step has started, pretraining has finished
            running += not any(os.path.dirname(p) == os.path.join(folder, sub) and os.path.getmtime(p) > logged
                               for p in unfinished)
    return seconds / 60, len(done), running, stopped


PARTS = (("segmentation", "", "seed_"), ("detection", "detection", "detection_seed_"),
         ("transfer", "transfer", "transfer_seed_"))  # title, folder in the seed's work folder, result file


def status(work: str, results: str = RESULTS) -> list[str]:
    """Where the ablation stands, per seed and part: finished (its result file), under way (its steps
    finished, running and stopped) or not started, with the minutes its work folder has taken (world and
    store builds, every run, pretraining; a finished part without its work folder: the result file's runs),
    then the mean minutes of a finished part, so what is left can be judged."""
    seeds = sorted(int(d[5:]) for d in os.listdir(work) if d.startswith("seed_") and d[5:].isdigit()
                   and int(d[5:]) < SWEEP_SEED) if os.path.isdir(work) else []
    finished: dict[str, list[float]] = {title: [] for title, *_ in PARTS}
    lines = []
    for k in seeds:
        cells = []
        for title, folder, prefix in PARTS:
            result = _read_json(os.path.join(results, f"{prefix}{k}.json"))
            here = os.path.join(work, f"seed_{k}", folder)
            minutes, done, running, stopped = part_minutes(here)
            if result is not None:
                if not done and result.get("seconds_all_parts") is not None:
                    minutes = result["seconds_all_parts"] / 60
                finished[title].append(minutes)
                cells.append(f"{title} finished ({minutes:.0f} min)")
            elif os.path.exists(os.path.join(here, "settings.json")):
                cells.append(f"{title} under way ({done} steps finished, {running} running, {stopped} stopped; "
                             f"{minutes:.0f} min so far)")
            else:
                cells.append(f"{title} not started")
        lines.append(f"seed {k}: " + "; ".join(cells))
    if not seeds:
        lines.append(f"no seed started in {work}")
    lines.append("a finished part took on average: " + "; ".join(
        f"{title} {np.mean(m):.0f} min over {len(m)} seed(s)" if m else f"{title} none finished yet"
        for title, m in finished.items()))
    return lines


def bootstrap_ci(d: np.ndarray, reps: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of paired differences (resampling seeds)."""
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (reps, len(d)))].mean(1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def t_ci(d: np.ndarray) -> tuple[float, float]:
    """95% Student t interval of the mean of paired differences (NaN with one seed)."""
    from scipy.stats import t

    if len(d) < 2:
        return float("nan"), float("nan")
    half = float(t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean()) - half, float(d.mean()) + half


def load_seeds(results: str = RESULTS, prefix: str = "seed_") -> list[dict]:
    """The seed files in ``results`` (``seed_K.json``, or the detection parts' ``detection_seed_K.json``), by
    seed; refused unless they are one experiment (same settings, code version included)."""
    files = sorted(f for f in os.listdir(results) if f.startswith(prefix) and f.endswith(".json"))
    seeds = [json.load(open(os.path.join(results, f))) for f in files]
    if not seeds:
        if prefix != "seed_":
            return []
        sys.exit(f"no seed files in {results}: run `{sys.argv[0]} run --seed K` first")
    seeds.sort(key=lambda s: s["seed"])
    odd = {s["seed"]: sorted(k for k in set(s["settings"]) | set(seeds[0]["settings"])
                             if s["settings"].get(k) != seeds[0]["settings"].get(k))
           for s in seeds if (s["settings"], s.get("occ_weight")) != (seeds[0]["settings"], seeds[0].get("occ_weight"))}
    if odd:
        sys.exit(f"seed files {sorted(odd)} were made with other settings than seed {seeds[0]['seed']} "
                 f"({', '.join(sorted({k for v in odd.values() for k in v}) or ['occupancy weight'])}): one table, "
                 f"one experiment and one code version; move them aside or rerun them")
    return seeds


def row_values(seeds: list[dict], row: str, col: str) -> np.ndarray | None:
    """A row's value in one column, per seed (None unless every seed has it)."""
    v = [s["rows"].get(row, {}).get(col) for s in seeds]
    return None if any(x is None for x in v) else np.asarray(v, dtype=float)


def paired_difference(seeds: list[dict], a: str, b: str, col: str, col_b: str | None = None):
    """Row a in column ``col`` minus row b in column ``col_b`` (default the same), per seed, in the column's
    display scale, with the 95% bootstrap interval of its mean; None where either row lacks the column."""
    va, vb = row_values(seeds, a, col), row_values(seeds, b, col_b or col)
    if va is None or vb is None:
        return None
    d = (COLUMNS | DET_COLUMNS | TRANSFER_COLUMNS)[col][2] * (va - vb)
    return (d, *bootstrap_ci(d))


def difference_cells(seeds: list[dict], a: str, b: str, col: str, col_b: str | None = None) -> str:
    diff = paired_difference(seeds, a, b, col, col_b)
    if diff is None:
        return "-"
    d, lo, hi = diff
    k = (COLUMNS | DET_COLUMNS | TRANSFER_COLUMNS)[col][1]
    if len(d) < 2:  # no interval from one seed
        return f"{d.mean():+.{k}f} | - | - | {(d > 0).sum()}/1"
    tlo, thi = t_ci(d)
    return (f"{d.mean():+.{k}f} | [{lo:+.{k}f}, {hi:+.{k}f}] | [{tlo:+.{k}f}, {thi:+.{k}f}] | "
            f"{(d > 0).sum()}/{len(d)}")


def fits(seeds: list[dict]) -> tuple[int, int, list[int]]:
    """Softmax-regression fits in the seed files: (converged, all, their numbers of fit points)."""
    done = total = 0
    points: list[int] = []
    for s in seeds:
        for d in s.get("details", {}).values():
            for key in ("fit", "probe_fit", "probe_raw_fit"):
                if isinstance(d, dict) and isinstance(d.get(key), dict):
                    total += 1
                    done += bool(d[key].get("converged"))
            if isinstance(d, dict) and isinstance(d.get("fit_points"), dict):
                points += list(d["fit_points"].values())
            elif isinstance(d, dict) and isinstance(d.get("fit_points"), int):
                points.append(d["fit_points"])
    return done, total, points


def plateau(seeds: list[dict], keys: tuple[str, ...] = ("ft_1scene", "ft_25pct")) -> dict:
    """Per budget in ``keys``: the fine-tuning runs whose last quarter still rose by PLATEAU_RISE or more."""
    out = {}
    for key in keys:
        rises = [(s["seed"], row, d["last_quarter_rise"][key]) for s in seeds for row, d in s.get("details", {}).items()
                 if isinstance(d, dict) and isinstance(d.get("last_quarter_rise"), dict)
                 and d["last_quarter_rise"].get(key) is not None]
        out[key] = {"runs": len(rises), "rising": [r for r in rises if r[2] >= PLATEAU_RISE],
                    "mean": float(np.mean([r[2] for r in rises])) if rises else float("nan"),
                    "max": max((r[2] for r in rises), default=float("nan"))}
    return out


def seeds_phrase(n: int) -> str:
    return "1 seed" if n == 1 else f"{n} paired seeds"


def interim_note(n: int) -> str:
    """What a section adds while it has fewer than MIN_SEEDS seeds."""
    return f" **Interim: {n} of the {MIN_SEEDS} seeds planned.**" if n < MIN_SEEDS else ""


def make_table(args) -> str:
    seeds = load_seeds(args.results)
    ks = [s["seed"] for s in seeds]
    names = list(FLOORS) + list(OCC_FLOORS) + list(ROWS)

    def cell(v, col):
        _, digits, scale = COLUMNS[col]
        if v is None:
            return "-"
        return f"{scale * v.mean():.{digits}f}" + (f" ± {scale * v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")

    lines = ["| row | " + " | ".join(t for t, _, _ in COLUMNS.values()) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in names:
        lines.append(f"| {row} | " + " | ".join(cell(row_values(seeds, row, c), c) for c in COLUMNS) + " |")
    head = "| difference | column | mean | 95% bootstrap | 95% t | positive |\n|---|---|---|---|---|---|"
    diff_lines = [head]
    for a, b in DIFFS:
        for col in COLUMNS:
            cells = difference_cells(seeds, a, b, col)
            if cells != "-":
                diff_lines.append(f"| {a} - {b} | {COLUMNS[col][0]} | {cells} |")
    for a, col_a, b, col_b in FLOOR_DIFFS:
        cells = difference_cells(seeds, a, b, col_a, col_b)
        if cells != "-":
            what = COLUMNS[col_a][0] if col_a == col_b else f"{COLUMNS[col_a][0]} vs {COLUMNS[col_b][0]}"
            diff_lines.append(f"| {a} - {b} | {what} | {cells} |")
    s0 = seeds[0]
    cfg = s0["settings"]
    probed = [r for r in names if r not in OCC_FLOORS]
    per_seed = [f"| {s['seed']} | " + " | ".join(f"{100 * s['rows'][r]['probe']:.1f}" for r in probed) + " |"
                for s in seeds]
    minutes = [s.get("seconds_all_parts", float("nan")) / 60 for s in seeds]
    lab = s0["labels"]
    done, total, points = fits(seeds)
    flat = plateau(seeds)
    plateau_lines = []
    for key, title in (("ft_1scene", "1 scene"), ("ft_25pct", "25%")):
        f = flat[key]
        rising = ", ".join(f"seed {k} {row} +{r:.1f}" for k, row, r in f["rising"]) or "none"
        plateau_lines.append(f"- {title}: {f['runs']} runs, last-quarter rise mean {f['mean']:+.2f}, max "
                             f"{f['max']:+.2f} mIoU points; still rising by {PLATEAU_RISE} or more: {rising}")
    interim = len(seeds) < MIN_SEEDS
    text = "\n".join([
        f"# CleverDistiller ablation on synthetic worlds (version {cfg.get('world_version', '?')})",
        "",
        f"{seeds_phrase(len(seeds))} ({', '.join(map(str, ks))}), code version {cfg.get('code_version', '?')}; "
        f"mean ± sample standard deviation over seeds. mIoU in % on the val scenes of each seed's world, over "
        f"the evaluation classes present in its val truth ({len(s0['classes'])} for seed {s0['seed']}: "
        f"{', '.join(s0['classes'])})."
        + interim_note(len(seeds)),
        "",
        *lines,
        "",
        "Paired differences (same seed): mean, 95% percentile-bootstrap and Student t intervals over seeds, and "
        "on how many seeds the difference is positive."
        + (" With so few seeds the bootstrap interval is too narrow: read the t interval." if interim else ""),
        "",
        *diff_lines,
        "",
        "Linear probe mIoU per seed:",
        "",
        "| seed | " + " | ".join(probed) + " |",
        "|---" * (len(probed) + 1) + "|",
        *per_seed,
        "",
        "Did fine-tuning reach its plateau (mIoU gained over the last quarter of the steps, from the last "
        "validation at or before 3/4 to the end)?",
        "",
        *plateau_lines,
        "",
        f"Probe fits (softmax regression by L-BFGS): {done} of {total} converged to tolerance; fit points per fit "
        f"{min(points) if points else '?'}-{max(points) if points else '?'}.",
        "",
        "What the columns are:",
        "- *linear probe*: softmax regression on frozen per-point features, fitted by L-BFGS to tolerance "
        f"(trainer/probe.py) on {cfg['probe_points_per_sweep']} labelled points of every train sweep, scored on "
        "every labelled point of the val sweeps. Floors: the same fit (`logreg`) and gradient-boosted trees "
        "(`gbdt`, class-balanced, stopped early) on the raw point inputs (x, y, z, intensity, range); the "
        "stored teacher features (+ a valid flag), alone and with the raw inputs, are the ceiling a student "
        "could reach by copying the teacher.",
        "- *probe on features + raw*: the same fit on the backbone's features beside the raw inputs: what the "
        "student knows that the points alone do not say.",
        f"- *fine-tune*: the whole segmenter, cross-entropy + Lovasz, AdamW lr {cfg['finetune_lr']}, batch "
        f"{cfg['finetune_batch']}, {cfg['finetune_steps']['ft_1scene']} steps at 1 scene "
        f"({lab['ft_1scene']['percent_of_train_sweeps']:.1f}% of the train sweeps) and "
        f"{cfg['finetune_steps']['ft_25pct']} steps at 25% ({lab['ft_25pct']['scenes']} of "
        f"{lab['ft_25pct']['of_train_scenes']} train scenes) for seed {s0['seed']}; the scenes are drawn per seed "
        "and are the same for every row.",
        "- *held-out distill gain*: 1 - (cosine distillation loss on the val sweeps) / (loss of the constant "
        "mean teacher direction); 0 = no better than a constant. It scores head and backbone together, so a "
        "bigger head gains here by construction; the probe columns score the backbone alone.",
        f"- *RankMe*: effective rank of the backbone's point features on 16 train sweeps ({cfg['arch']}: 16 "
        f"output channels, {cfg.get('wide_arch', '?')}: 48).",
        "- *occupancy bal. acc*: the occupancy head on hidden cubes of the val sweeps; the floors on the same "
        "queries: the offset to the nearest visible point alone, and gradient-boosted trees on hand-made "
        "geometry (neighbour counts, height above the local ground, free-space evidence along the LiDAR rays; "
        "benchmarks/occupancy_shortcut.py).",
        "",
        "Settings:",
        f"- world per seed: {cfg['scenes']} synthetic scenes x {cfg['samples_per_scene']} keyframes, world version "
        f"{cfg.get('world_version', '?')} ({s0['world']['val_scenes']} val scenes, {s0['world']['sweeps']} sweeps), "
        f"cameras {cfg['image_size']}",
        f"- teacher: the semantic stand-in ({cfg['teacher']}, the one the teacher gate names as trained), input "
        f"{cfg['teacher_size']}",
        f"- students: {cfg['arch']} (every row) and {cfg.get('wide_arch', '?')} (rows marked wide: probes, distill "
        f"gain and RankMe only), voxel {cfg['voxel_size']} m, at most {cfg['max_points']} points per training "
        f"sweep; pretraining {cfg['pretrain_steps']} steps, batch {cfg['pretrain_batch']}, lr {cfg['pretrain_lr']}, "
        f"projection head hidden width {cfg['head_hidden']}; occupancy: {cfg['mask_ratio'][0]}-{cfg['mask_ratio'][1]} "
        f"of 2 m cubes hidden, weight {s0['occ_weight']:g} (chosen on world seed {SWEEP_SEED}: "
        "benchmarks/results/paper_table/occ_weight_sweep.json)",
        f"- compute per seed (every part, summed over sittings; {s0.get('threads', '?')} thread(s), two seeds side "
        "by side on 2 cores): " + ", ".join(f"{m:.0f} min" for m in minutes),
        "",
        "Commands: `.venv/bin/python benchmarks/paper_table.py sweep-occ`, then `... run --seed K` per seed, then "
        "`... detect --seed K` and `... transfer --seed K` per seed (after its run), then `... table`.",
        *detection_section(args.results),
        *transfer_section(args.results),
        *claims_section(args.results),
    ])
    return text


def means_and_differences(seeds: list[dict], rows, columns: dict, diffs) -> tuple[list[str], list[str]]:
    """A section's two markdown tables: each row's mean ± sample standard deviation over seeds per column,
    and the paired differences ``diffs`` (row a, row b) per column (``difference_cells``)."""
    def cell(v, col):
        _, digits, scale = columns[col]
        if v is None:
            return "-"
        return f"{scale * v.mean():.{digits}f}" + (f" ± {scale * v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")

    means = ["| row | " + " | ".join(t for t, _, _ in columns.values()) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in rows:
        means.append(f"| {row} | " + " | ".join(cell(row_values(seeds, row, c), c) for c in columns) + " |")
    paired = ["| difference | column | mean | 95% bootstrap | 95% t | positive |", "|---|---|---|---|---|---|"]
    for a, b in diffs:
        for col in columns:
            cells = difference_cells(seeds, a, b, col)
            if cells != "-":
                paired.append(f"| {a} - {b} | {columns[col][0]} | {cells} |")
    return means, paired


def detection_section(results: str) -> list[str]:
    """The detection columns' part of paper_table.md (nothing before a seed's detection part has finished)."""
    seeds = load_seeds(results, "detection_seed_")
    if not seeds:
        return []
    s0, cfg = seeds[0], seeds[0]["settings"]
    seg_versions = {s["settings"]["segmentation_code_version"] for s in seeds}

    lines, diffs = means_and_differences(seeds, DET_ROWS, DET_COLUMNS, DET_DIFFS)
    present = sorted({c for s in seeds for d in s["details"].values() for r in d.values() for c in r["present"]})
    per_class = []
    for row in DET_ROWS:
        for key, title in (("det_1scene", "1 scene"), ("det_25pct", "25%")):
            aps = [s["details"][row][key]["ap"] for s in seeds]
            per_class.append(f"| {row}, {title} | " + " | ".join(
                f"{100 * np.mean([a[c] for a in aps]):.1f}" for c in present) + " |")
    minutes = [s["seconds_all_parts"] / 60 for s in seeds]
    rises = [(s["seed"], row, key, d[key]["curve"]) for s in seeds for row, d in s["details"].items() for key in d]
    late = []
    for k, row, key, curve in rises:
        rise = last_quarter_rise(curve, cfg["steps"][key], "val_centre_ap_2m")
        if rise is not None and rise >= 1.0:
            late.append(f"seed {k} {row} {key} +{rise:.1f}")
    return [
        "",
        "## 3D object detection",
        "",
        f"{seeds_phrase(len(seeds))} ({', '.join(str(s['seed']) for s in seeds)}), the same worlds, pretraining "
        f"checkpoints and labelled scenes as the segmentation rows above (segmentation code version "
        f"{', '.join(sorted(seg_versions))}); detection code version {cfg['code_version']}. Each row's backbone "
        f"with a CenterPoint-style head (trainer/detection.py: BEV cells of {cfg['detection_config']['cell_m']} m, a "
        f"{cfg['detection_config']['trunk_layers']}-layer {cfg['detection_config']['trunk_channels']}-channel 2D "
        f"trunk) fine-tuned as a whole, AdamW lr {cfg['lr']}, batch {cfg['batch']}, at most {cfg['max_points']} "
        f"points per training sweep, {cfg['steps']['det_1scene']} steps at 1 scene and {cfg['steps']['det_25pct']} "
        "at 25%, then scored on the val sweeps by the nuScenes devkit's detection evaluation (detection_cvpr_2019): "
        "mAP and NDS in %, over its 10 classes (a class absent from the val truth scores 0)."
        + interim_note(len(seeds)),
        "",
        *lines,
        "",
        "Paired differences (same seed), as above:",
        "",
        *diffs,
        "",
        "Devkit AP per class in % (mean over seeds; the classes present in the val truth of any seed):",
        "",
        "| row | " + " | ".join(present) + " |",
        "|---" * (len(present) + 1) + "|",
        *per_class,
        "",
        "Did detection fine-tuning level off? Built-in centre-distance AP at 2 m gained over the last quarter "
        "of the steps, 1 point or more: " + (", ".join(late) or "none") + ".",
        "",
        f"- compute per seed (the detection part, every run, {s0.get('threads', '?')} thread(s)): "
        + ", ".join(f"{m:.0f} min" for m in minutes),
    ]


def transfer_section(results: str) -> list[str]:
    """The SemanticKITTI transfer part of paper_table.md (nothing before a seed's transfer part has finished)."""
    seeds = load_seeds(results, "transfer_seed_")
    if not seeds:
        return []
    s0, cfg = seeds[0], seeds[0]["settings"]
    seg_versions = {s["settings"]["segmentation_code_version"] for s in seeds}

    lines, diffs = means_and_differences(seeds, TRANSFER_ROWS, TRANSFER_COLUMNS, TRANSFER_DIFFS)
    flat = plateau(seeds, tuple(TRANSFER_BUDGETS))
    plateau_lines = []
    for key in TRANSFER_BUDGETS:
        f = flat[key]
        rising = ", ".join(f"seed {k} {row} +{r:.1f}" for k, row, r in f["rising"]) or "none"
        plateau_lines.append(f"- {TRANSFER_COLUMNS[key][0]}: {f['runs']} runs, last-quarter rise mean "
                             f"{f['mean']:+.2f}, max {f['max']:+.2f} mIoU points; still rising by {PLATEAU_RISE} or "
                             f"more: {rising}")
    minutes = [s["seconds_all_parts"] / 60 for s in seeds]
    lab, world = s0["labels"], s0["world"]
    return [
        "",
        "## Transfer to SemanticKITTI",
        "",
        f"{seeds_phrase(len(seeds))} ({', '.join(str(s['seed']) for s in seeds)}), the same pretraining checkpoints "
        f"as the segmentation rows above (segmentation code version {', '.join(sorted(seg_versions))}); transfer "
        f"code version {cfg['code_version']}. Per seed K a SemanticKITTI world from the same generator at "
        f"seed K + {cfg['world_seed_offset']} (streets the pretraining never saw; {cfg['scenes']} sequences x "
        f"{cfg['samples_per_scene']} scans, cameras {cfg['image_size']}, teacher input "
        f"{cfg['teacher_size']}; {world['train_sweeps']} train scans, {world['val_sweeps']} in val sequence 08), "
        f"and each row's backbone fine-tuned as a whole on {lab['kitti_1pct']['sweeps']} and "
        f"{lab['kitti_10pct']['sweeps']} of its train scans (1% and 10%, drawn per seed, the same for every "
        f"row), cross-entropy + Lovasz, AdamW lr {cfg['lr']}, batch {cfg['batch']}, at most {cfg['max_points']} "
        f"points per training scan, {cfg['steps']['kitti_1pct']} and {cfg['steps']['kitti_10pct']} steps. mIoU in % "
        f"on every point of sequence 08, over the SemanticKITTI classes present there ({len(s0['classes'])} for "
        f"seed {s0['seed']}: {', '.join(s0['classes'])})."
        + interim_note(len(seeds)),
        "",
        *lines,
        "",
        "Paired differences (same seed), as above:",
        "",
        *diffs,
        "",
        "Did transfer fine-tuning reach its plateau (mIoU gained over the last quarter of the steps)?",
        "",
        *plateau_lines,
        "",
        f"- compute per seed (the transfer part: world, extract and every run, {s0.get('threads', '?')} thread(s)): "
        + ", ".join(f"{m:.0f} min" for m in minutes),
    ]


CLAIMS = (  # (the paper's claim, its comparisons: (part, row a, row b, column of a, column of b or None))
    ("Distillation puts the camera teacher's semantics into the 3D backbone: a frozen linear probe on its "
     "features beats one on a random-init backbone's, and with the raw inputs beside them it beats the "
     "strongest raw-input floor",
     (("segmentation", "3-layer MLP head", "random init", "probe", None),
      ("segmentation", "3-layer MLP head", "random init", "probe_raw", None),
      ("segmentation", "3-layer MLP head", "gbdt: raw point inputs", "probe_raw", "probe"))),
    ("Pretraining helps segmentation at low label budgets: fine-tuned from the distilled backbone, the "
     "segmenter beats one fine-tuned from random init with 1 train scene labelled and with 25% of them",
     (("segmentation", "3-layer MLP head", "random init", "ft_1scene", None),
      ("segmentation", "3-layer MLP head", "random init", "ft_25pct", None))),
    ("The non-linear MLP projection head beats a linear one (better backbone features, higher RankMe)",
     (("segmentation", "3-layer MLP head", "linear head", "probe", None),
      ("segmentation", "3-layer MLP head", "linear head", "probe_raw", None),
      ("segmentation", "3-layer MLP head", "linear head", "rankme", None),
      ("detection", "3-layer MLP head", "linear head", "det_1scene_map", None),
      ("detection", "3-layer MLP head", "linear head", "det_25pct_map", None))),
    ("The auxiliary occupancy task adds to the MLP head",
     (("segmentation", "MLP head + occupancy", "3-layer MLP head", "probe", None),
      ("segmentation", "MLP head + occupancy", "3-layer MLP head", "ft_1scene", None),
      ("segmentation", "MLP head + occupancy", "3-layer MLP head", "ft_25pct", None),
      ("detection", "MLP head + occupancy", "3-layer MLP head", "det_1scene_map", None),
      ("detection", "MLP head + occupancy", "3-layer MLP head", "det_25pct_map", None),
      ("transfer", "MLP head + occupancy", "3-layer MLP head", "kitti_1pct", None),
      ("transfer", "MLP head + occupancy", "3-layer MLP head", "kitti_10pct", None))),
    ("The distilled backbone helps 3D object detection",
     (("detection", "3-layer MLP head", "random init", "det_1scene_map", None),
      ("detection", "3-layer MLP head", "random init", "det_1scene_nds", None),
      ("detection", "3-layer MLP head", "random init", "det_25pct_map", None),
      ("detection", "3-layer MLP head", "random init", "det_25pct_nds", None))),
    ("It generalises across datasets: pretrained on nuScenes-format data, it helps on SemanticKITTI at low "
     "label budgets",
     (("transfer", "3-layer MLP head", "random init", "kitti_1pct", None),
      ("transfer", "3-layer MLP head", "random init", "kitti_10pct", None))),
)


def reading(d: np.ndarray) -> str:
    """How one paired difference reads, by its 95% Student t interval over seeds: 'holds' when the interval
    lies above 0, 'reversed' when below, 'undecided' when it holds 0, 'one seed' when there is no interval."""
    if len(d) < 2:
        return "one seed"
    lo, hi = t_ci(d)
    return "holds" if lo > 0 else "reversed" if hi < 0 else "undecided"


def claim_verdict(readings: list[str]) -> str:
    """A claim's verdict from its comparisons' readings."""
    if not readings:
        return "not measured yet"
    if "one seed" in readings:
        return "undecided (one seed)"
    if all(r == "holds" for r in readings):
        return "reproduced"
    if all(r == "reversed" for r in readings):
        return "not reproduced (the opposite holds)"
    if "holds" not in readings and "reversed" not in readings:
        return "undecided at this size"
    if "reversed" not in readings:
        return "partly reproduced"
    if "holds" not in readings:
        return "not reproduced (reversed on some comparisons, undecided on the rest)"
    return "mixed (some hold, some are reversed)"


def claims_section(results: str) -> list[str]:
    """One sentence per claim of the paper, its verdict read off the paired t intervals of the parts that
    have finished seeds (the comparisons of a part without seed files are left out and said so)."""
    parts = {name: load_seeds(results, prefix) for name, _, prefix in PARTS}
    columns = COLUMNS | DET_COLUMNS | TRANSFER_COLUMNS
    counts = {name: len(seeds) for name, seeds in parts.items() if seeds}
    out = ["", "## The paper's claims at this size", "",
           "Each claim of the paper with the paired differences that test it here: mean, 95% Student t interval "
           "over seeds, seeds where the difference is positive; a difference *holds* when its interval lies "
           "above 0, is *reversed* below 0, and is *undecided* when the interval holds 0. A claim is reproduced "
           "when every difference holds, partly reproduced when some hold and none is reversed, not reproduced "
           "when some or all are reversed and none holds, undecided at this size when none holds or is reversed "
           "(with many comparisons at 95%, about one in twenty holds by chance alone, so a partial verdict is "
           "weak evidence). Seeds per "
           "part: " + ", ".join(f"{name} {n}" for name, n in counts.items()) + "."
           + (f" **Interim: fewer than {MIN_SEEDS} seeds in " + ", ".join(
               name for name, n in counts.items() if n < MIN_SEEDS) + ".**"
              if any(n < MIN_SEEDS for n in counts.values()) else ""),
           ""]
    for claim, comparisons in CLAIMS:
        said, readings, missing = [], [], []
        for part_name, a, b, col, col_b in comparisons:
            seeds = parts[part_name]
            diff = paired_difference(seeds, a, b, col, col_b) if seeds else None
            if diff is None:
                missing.append(part_name)
                continue
            d, k = diff[0], columns[col][1]
            r = reading(d)
            readings.append(r)
            what = columns[col][0] if col_b is None else f"{columns[col][0]} vs {columns[col_b][0]}"
            interval = "no interval" if len(d) < 2 else "[{:+.{k}f}, {:+.{k}f}]".format(*t_ci(d), k=k)
            said.append(f"{a} - {b}, {what}: {d.mean():+.{k}f} {interval}, {(d > 0).sum()}/{len(d)} ({r})")
        verdict = claim_verdict(readings)
        gap = (f" Not measured yet: the {', '.join(sorted(set(missing)))} part's comparisons (no seed files)."
               if missing else "")
        few = readings and min(len(parts[p]) for p, *_ in comparisons if parts[p]) < MIN_SEEDS
        out.append(f"- **{'Interim, ' + verdict if few else verdict.capitalize()}**: {claim}."
                   + (" " + "; ".join(said) + "." if said else "") + gap)
    return out


def make_figure(out: str, results: str = RESULTS) -> str:
    """The paired differences of the table as a figure: per column (segmentation, then detection and
    transfer where their seed files exist), each difference's mean, 95% Student t interval (the bar, coloured
    as the claims read it), 95% bootstrap interval (thin line) and per-seed values against 0."""
    from trainer.plots import Difference, plot_paired_differences

    short = {"random init": "random", "linear head": "linear", "3-layer MLP head": "MLP",
             "MLP head + occupancy": "MLP+occ", "random init (wide)": "random wide",
             "3-layer MLP head (wide)": "MLP wide"}
    panels, counts = {}, {}
    measures = {"segmentation": (COLUMNS, DIFFS), "detection": (DET_COLUMNS, DET_DIFFS),
                "transfer": (TRANSFER_COLUMNS, TRANSFER_DIFFS)}
    for what, _, prefix in PARTS:
        columns, pairs = measures[what]
        seeds = load_seeds(results, prefix)
        if not seeds:
            continue
        counts[what] = len(seeds)
        for col, (title, _, scale) in columns.items():
            diffs = []
            for a, b in pairs:
                diff = paired_difference(seeds, a, b, col)
                if diff is not None:
                    d, lo, hi = diff
                    diffs.append(Difference(f"{short[a]} - {short[b]}", d, float(d.mean()), lo, hi, *t_ci(d)))
            unit = " (points)" if scale == 100.0 else ""
            panels[title + unit + ("" if what == "segmentation" else f", {len(seeds)} seeds")] = diffs
    title = (f"Paired differences over seeds ({', '.join(f'{k} {n}' for k, n in counts.items())}): mean (diamond), "
             f"95% Student t interval (bar; green above 0, red below), 95% bootstrap interval (thin line), each seed "
             f"(grey)" + (f"; interim, fewer than {MIN_SEEDS} seeds" if min(counts.values()) < MIN_SEEDS else ""))
    return str(plot_paired_differences(panels, out, title))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("run", "detect", "transfer", "sweep-occ", "table", "status"))
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--work", default=os.path.join(ROOT, "paper_table_work"), help="worlds, stores and runs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (run two seeds side by side on 2 cores)")
    ap.add_argument("--scenes", type=int, default=48, help="48 scenes -> 8 val scenes")
    ap.add_argument("--samples-per-scene", type=int, default=2)
    ap.add_argument("--image-size", default="400x225")
    ap.add_argument("--arch", default="minkunet-tiny")
    ap.add_argument("--head-hidden", type=int, default=256)
    ap.add_argument("--max-points", type=int, default=8000)
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--ft-steps-1scene", type=int, default=400)
    ap.add_argument("--ft-steps-25", type=int, default=600)
    ap.add_argument("--ft-lr", type=float, default=2e-3)
    ap.add_argument("--det-steps-1scene", type=int, default=300, help="detection fine-tuning steps at 1 scene")
    ap.add_argument("--det-steps-25", type=int, default=600, help="detection fine-tuning steps at 25%%")
    ap.add_argument("--det-lr", type=float, default=2e-3)
    ap.add_argument("--det-max-points", type=int, default=8000)
    ap.add_argument("--det-trunk-channels", type=int, default=32, help="width of the detection head's 2D trunk")
    ap.add_argument("--transfer-samples-per-scene", type=int, default=10, help="SemanticKITTI scans per sequence "
                    "(11 sequences: 10 train, val 08)")
    ap.add_argument("--transfer-image-size", default="621x188", help="SemanticKITTI camera size (KITTI's aspect)")
    ap.add_argument("--transfer-steps-1pct", type=int, default=300, help="transfer fine-tuning steps at 1%% of scans")
    ap.add_argument("--transfer-steps-10pct", type=int, default=400, help="transfer fine-tuning steps at 10%%")
    ap.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "paper_table.md"))
    ap.add_argument("--results", default=RESULTS, help="folder of the seed files and the occupancy weight sweep")
    args = ap.parse_args()
    if args.command == "status":
        print("\n".join(status(args.work, args.results)))
    elif args.command == "table":
        text = make_table(args)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
        print(text)
        print(f"figure: {make_figure(os.path.splitext(args.out)[0] + '.png', args.results)}")
    elif args.command == "sweep-occ":
        args.seed = SWEEP_SEED if args.seed is None else args.seed
        sweep_occ(args)
    else:
        if args.seed is None or args.seed >= SWEEP_SEED:
            sys.exit(f"{args.command} needs --seed K below {SWEEP_SEED} (seed {SWEEP_SEED} picks the occupancy weight)")
        {"run": run_seed, "detect": run_detection_seed, "transfer": run_transfer_seed}[args.command](args)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
