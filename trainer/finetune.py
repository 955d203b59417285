"""Fine-tuning: train a segmenter (backbone + ``Linear(BN(f))`` head) on the store's labels.

Labels are the store's fine classes mapped to its evaluation classes by its attribute ``classes``
(nuScenes: 16, SemanticKITTI: 19; 0 = ignore, never a target), and the head predicts those; the backbone
may come from a pretraining checkpoint of any store (of either dataset);
the labelled sweeps are the whole train scenes ``splits.label_subset`` picks for ``labels_percent``, or with
``labels_unit="sweeps"`` the single train sweeps ``splits.label_sweeps`` picks (recorded as ``label_sweeps``
in OUT/segmenter.pt and OUT/result.json; a resume that would draw others is refused).
Loss: cross-entropy over labelled points, plus the Lovasz-softmax loss with ``lovasz``
(``trainer/losses.py``). Learning rate: linear warm-up over ``warmup`` steps (0: none), then
cosine decay to 0 at ``steps``. Step t's batch is drawn from ``stream_rng(FINETUNE_BATCH_STREAM, seed,
t)`` and its augmentation from epoch t, so a resumed run sees the batches a straight one would.
Every ``checkpoint_every`` steps OUT/segmenter.pt is rewritten (atomically) with the weights, the
optimiser and the step; ``resume`` continues from it after checking that the settings match
(``trainer/checkpoint.check_resume``: a changed setting is refused, naming it, unless forced). With
``eval_every``, the val mIoU is measured along the way into OUT/curve.jsonl (with the mean training
loss of the steps since the last entry), so a reader can see whether training had converged
(``cdtrain plot`` draws it); with tensorboard installed, each step's loss and rate and every val mIoU
also go to TensorBoard scalars in OUT/tb.
The linear probe is ``trainer/probe.py`` (a convex fit, not SGD); scoring is ``trainer/evaluate.py``.
Detection fine-tuning (``trainer/finetune_detection.py``) shares the labelled train set, the optimiser, the
batches of each step and the resume check with this loop (the helpers at the end of this module).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import numpy as np
import torch

from trainer.batch import collate
from trainer.checkpoint import (
    check_resume,
    new_segmenter,
    read_checkpoint,
    segmenter_record,
    store_fingerprint,
    write_atomic,
)
from trainer.config import DataConfig, FinetuneConfig, field_defaults
from trainer.data import FINETUNE_BATCH_STREAM, SEGMENTATION, StoreDataset, stream_rng
from trainer.evaluate import evaluate_model
from trainer.losses import seg_loss
from trainer.run import RunFolder
from trainer.splits import label_subset, label_sweeps, scenes_of

SEGMENTER, CURVE, RESULT = "segmenter.pt", "curve.jsonl", "result.json"  # the run folder's files

# settings a resumed fine-tuning may change freely (evaluation along the way does not touch training)
RESUME_IGNORES = ("finetune_config.out", "finetune_config.checkpoint_every", "finetune_config.eval_every")


def finetune(store: str, checkpoint: str | None, arch: str, cfg: FinetuneConfig, voxel_size: float = 0.1,
             progress: bool = True, device: str = "cpu", resume: bool = False, skip_bad_sweeps: bool = False,
             force_config: bool = False) -> dict:
    """Train the segmenter on the labelled subset (or continue OUT/segmenter.pt), evaluate it on the val
    scenes, write OUT/segmenter.pt and OUT/result.json; returns the result. ``skip_bad_sweeps``: training
    sweeps whose chunks do not decode are recorded in OUT/skipped_sweeps.jsonl and replaced (evaluation
    still stops on one: a score over other sweeps would not be comparable). ``force_config``: resume even
    though the fine-tuning settings or the store differ from the file's."""
    from tqdm import tqdm

    from pipeline.store import open_store, store_classes
    from trainer.train import lr_at

    run = RunFolder(cfg.out)
    group = open_store(store)
    if not group.attrs["has_labels"]:
        raise ValueError(f"store {store} has no labels to fine-tune on")
    fingerprint = store_fingerprint(dict(group.attrs))
    classes = store_classes(dict(group.attrs))  # the head predicts the store's evaluation classes
    model, init = new_segmenter(arch, checkpoint or None, cfg.seed, classes.num_classes)
    scenes, ds = labelled_train_set(store, dict(group.attrs), cfg, voxel_size, run, skip_bad_sweeps, SEGMENTATION)
    dev = torch.device(device)
    model.to(dev)
    opt, scaler = optimiser(model, cfg, dev)
    path = run.file(SEGMENTER)
    about = {"linear_probe": False, "init": init, "pretrained": checkpoint or None, "store": store,
             "labels_percent": cfg.labels_percent, "label_scenes": list(scenes), "finetune_config": asdict(cfg),
             "store_fingerprint": fingerprint}
    if ds.cfg.sweeps is not None:
        about["label_sweeps"] = list(ds.cfg.sweeps)
    start, losses = 0, []  # losses: training losses since the last curve row
    changes: list[str] = []  # settings that --force-config let differ from the checkpoint's
    if resume:
        now = {"init": init, "arch": arch, "voxel_size": voxel_size, "finetune_config": asdict(cfg),
               "store_fingerprint": fingerprint}
        ck, changes = resume_from(path, now, force_config, model, opt, scaler, label_sweeps=about.get("label_sweeps"))
        start, losses = int(ck["step"]), list(ck["pending_losses"])

    def save(step: int) -> None:
        write_atomic(segmenter_record(model, arch, voxel_size, classes.eval, step=step, optimizer=opt.state_dict(),
                                      scaler=scaler.state_dict(), pending_losses=losses, **about), path)

    run.start(CURVE, start)  # rows written after the checkpoint will be written again
    bar = tqdm(total=cfg.steps, initial=start, desc="finetune", unit="step", disable=not progress)
    try:  # the bar and the run's files are closed however the loop ends, so an error prints on its own line
        for step in range(start, cfg.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            model.train()
            batch = collate(step_samples(ds, cfg, step), voxel_size).to(dev)
            with torch.autocast("cuda", dtype=torch.float16, enabled=dev.type == "cuda"):
                loss = seg_loss(model(batch), batch.labels, cfg.lovasz)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            labelled = bool((batch.labels > 0).any())  # a batch of unlabelled points has no loss to log
            if labelled:
                losses.append(loss.item())
            if labelled:
                run.scalars({"loss": loss.item(), "lr": lr_at(step, cfg)}, step + 1)
            bar.set_postfix(loss=f"{loss.item():.3f}" if labelled else "n/a")
            bar.update()
            done = step + 1
            if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
                bar.set_description(f"finetune (val mIoU at step {done})")
                r = evaluate_model(model, store, "val", voxel_size, device=device)
                bar.set_description("finetune")
                point = {"step": done, "train_loss": float(np.mean(losses)) if losses else None, "val_miou": r["miou"]}
                run.log(point)
                run.scalars({"val_miou": r["miou"]}, done)
                losses.clear()
            if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                save(done)
        bar.close()
        result = evaluate_model(model, store, "val", voxel_size, device=device, progress=progress)
        run.scalars({"val_miou": result["miou"]}, cfg.steps)
        if run.last_logged_step() < cfg.steps:
            run.log({"step": cfg.steps, "train_loss": float(np.mean(losses)) if losses else None,
                     "val_miou": result["miou"]})
    finally:
        bar.close()
        run.close()
    result.update(about, arch=arch, config_changes=changes)
    with open(run.file(RESULT), "w") as f:
        json.dump(result, f, indent=1)
    return result


# ---------------------------------------------------------------------------------------------------
# shared with detection fine-tuning (trainer/finetune_detection.py)


def labelled_train_set(store: str, attrs: dict, cfg: FinetuneConfig, voxel_size: float, run: RunFolder,
                       skip_bad_sweeps: bool, targets: tuple[str, ...]) -> tuple[tuple[str, ...], StoreDataset]:
    """The labelled train scenes (``label_subset`` of ``cfg.labels_percent``, by seed; by ``cfg.labels_unit``
    "sweeps", the scenes that hold the sweeps ``label_sweeps`` picks, which the dataset's ``cfg.sweeps``
    records) and the augmented dataset over the labelled sweeps with ``targets``; damaged sweeps are skipped
    into the run folder's log when ``skip_bad_sweeps``."""
    sweeps = None
    if cfg.labels_unit == "sweeps":
        from pipeline.store import open_store
        from trainer.data import store_sweeps

        complete = store_sweeps(open_store(store), "train",
                                on_damage=(lambda s, error: None) if skip_bad_sweeps else None)
        sweeps = tuple(label_sweeps(attrs["scenes"], cfg.labels_percent, cfg.seed, complete))
        scenes = tuple(scenes_of(attrs["scenes"], list(sweeps)))
    else:
        scenes = tuple(label_subset(attrs["scenes"], cfg.labels_percent, cfg.seed))
    ds = StoreDataset(DataConfig(store=store, split="train", voxel_size=voxel_size, seed=cfg.seed, scenes=scenes,
                                 sweeps=sweeps, max_points=cfg.max_points),
                      skip_log=run.skipped_sweeps if skip_bad_sweeps else None, targets=targets)
    return scenes, ds


def optimiser(model: torch.nn.Module, cfg: FinetuneConfig, dev: torch.device):
    """AdamW over every weight of ``model`` and the gradient scaler (active on a GPU only)."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.amp.GradScaler("cuda", enabled=dev.type == "cuda")


def step_samples(ds: StoreDataset, cfg: FinetuneConfig, step: int) -> list:
    """The samples of step ``step``: ``batch_size`` sweeps drawn from ``stream_rng(FINETUNE_BATCH_STREAM,
    seed, step)``, augmented as epoch ``step``, so that a resumed run sees what a straight one would."""
    ds.epoch = step
    rng = stream_rng(FINETUNE_BATCH_STREAM, cfg.seed, step)
    picks = rng.choice(len(ds), min(cfg.batch_size, len(ds)), replace=False)
    return [ds[int(i)] for i in picks]


def resume_from(path: str, now: dict, force_config: bool, model: torch.nn.Module, opt, scaler,
                forceable: tuple[str, ...] = ("finetune_config", "store_fingerprint"),
                defaults: dict | None = None, label_sweeps: list[int] | None = None) -> tuple[dict, list[str]]:
    """Load the run's own file ``path`` into ``model``, ``opt`` and ``scaler`` after ``check_resume``
    compared its settings with ``now`` and, unless ``--force-config`` let a setting change, the labelled
    sweeps drawn now (``label_sweeps``, None for whole scenes) with those the run trained on; returns the
    file's record and the settings ``--force-config`` let change."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--resume: no {os.path.basename(path)} in {os.path.dirname(path)}")
    ck = read_checkpoint(path)
    defaults = {"finetune_config": field_defaults(FinetuneConfig), **(defaults or {})}
    changes = check_resume(path, ck, now, force=force_config, forceable=forceable, ignore=RESUME_IGNORES,
                           defaults=defaults)
    if not changes and ck.get("label_sweeps") != label_sweeps:
        raise ValueError(f"--resume: {path} trained on other labelled sweeps than the same store, "
                         f"--labels-percent and --seed draw now; start a new run")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    scaler.load_state_dict(ck["scaler"])
    return ck, changes
