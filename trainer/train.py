"""The pretraining loop: distil the student from a store, with the occupancy task alongside.

Loss of a batch (``loss_step``): the distillation loss (cosine or l2) over the points that have a teacher
feature, plus ``occ_weight`` times the balanced binary cross-entropy of the occupancy logits (the maths:
``trainer/losses.py``; the task, its hidden input and its queries: ``trainer/occupancy.py``).
Learning rate (``lr_at``): linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``.
A checkpoint (``trainer/checkpoint.py``) holds the model, data and train configs, the store's
fingerprint, the optimiser and gradient-scaler state, the step and the RNG state; ``resume`` refuses a
run whose configuration differs from the checkpoint's in any field that changes the result (all but
``RESUME_IGNORES``), naming the fields, unless ``force_config``. On a GPU the step runs under fp16
autocast with gradient scaling; under torchrun each rank takes its slice of every global batch (DDP).
RankMe of the backbone's point features is logged with every checkpoint. Every step's metrics go to
OUT/metrics.jsonl (``cdtrain plot`` draws them), and also to TensorBoard scalars in OUT/tb when tensorboard
is installed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict

import torch

from trainer.batch import Batch, Collate, require
from trainer.checkpoint import check_resume, read_checkpoint, save_pretraining, store_fingerprint
from trainer.config import DataConfig, ModelConfig, TrainConfig, field_defaults
from trainer.data import EPOCH_ORDER_STREAM, PRETRAINING, StoreDataset, stream_rng
from trainer.losses import balanced_bce, distillation_loss
from trainer.metrics import balanced_accuracy
from trainer.model import Student
from trainer.run import SKIPPED_SWEEPS, RunFolder

METRICS = "metrics.jsonl"  # the run folder's per-step log

# what may change on resume without changing the result: where things are written and read (the store is
# identified by its fingerprint, wherever it lies now), the loader's workers, and skipping damaged sweeps
# (the error that stops a run on one tells the user to resume with --skip-bad-sweeps)
RESUME_IGNORES = ("train_config.out", "train_config.workers", "train_config.checkpoint_every",
                  "train_config.skip_bad_sweeps", "data_config.store")


def lr_at(step: int, cfg) -> float:
    """The learning rate of step ``step`` (from 0) for a config with ``lr``, ``warmup`` and ``steps``
    (pretraining's and fine-tuning's): linear warm-up to ``lr``, then cosine decay to 0 at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def loss_step(model: torch.nn.Module, batch: Batch, cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """Loss of one batch and its parts (floats) for logging. ``model`` is a Student, or one wrapped in DDP."""
    require(batch, "teacher", "valid", *(("occ",) if cfg.occ_weight > 0 else ()), purpose="the pretraining loss")
    out = model(batch, occupancy=cfg.occ_weight > 0)
    distill = distillation_loss(out["proj"], batch.teacher[batch.valid], cfg.loss)
    # a batch with no point a camera saw has nothing to distil: its term is 0 and its metric null, not NaN
    metrics = {"distill": distill.item() if batch.valid.any() else None}
    loss = distill
    if cfg.occ_weight > 0:
        logits = out["occ_logits"]
        occ = balanced_bce(logits, batch.occ)
        loss = loss + cfg.occ_weight * occ
        metrics["occ"] = occ.item()
        metrics["occ_bal_acc"] = balanced_accuracy(logits.detach(), batch.occ)
    metrics["loss"] = loss.item()
    return loss, metrics


class EpochBatches(torch.utils.data.Sampler):
    """Batches of (index, epoch): a seeded permutation per epoch cut into global batches of
    ``batch_size x world`` sweeps (last partial one dropped), rank r taking its r-th slice. Starts at
    ``start_step`` so that a resumed run sees exactly the batches a straight run would."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, steps: int, rank: int = 0,
                 world: int = 1):
        if batch_size * world > n:  # never a smaller batch than the one the checkpoint records
            raise ValueError(f"{n} sweeps cannot fill a batch of {batch_size} on each of {world} ranks")
        self.n, self.seed, self.start, self.steps, self.rank = n, seed, start_step, steps, rank
        self.bs = batch_size
        self.global_bs = self.bs * world
        self.per_epoch = max(1, n // self.global_bs)

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.steps):
            epoch, j = divmod(step, self.per_epoch)
            perm = stream_rng(EPOCH_ORDER_STREAM, self.seed, epoch).permutation(self.n)
            first = j * self.global_bs + self.rank * self.bs
            yield [(int(i), epoch) for i in perm[first:first + self.bs]]


class _EpochDataset(torch.utils.data.Dataset):
    def __init__(self, ds: StoreDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, item):
        i, epoch = item
        self.ds.epoch = epoch
        return self.ds[i]


def pretrain(mcfg: ModelConfig, dcfg: DataConfig, tcfg: TrainConfig, resume: bool = False,
             progress: bool = True, force_config: bool = False, device: str | None = None) -> dict:
    """Run (or resume, from OUT/checkpoint.pt) pretraining in the run folder OUT; returns the last metrics,
    the run's files and, for a forced resume, the settings that changed (``config_changes``). ``device``:
    cpu, cuda or cuda:N (default: cuda when there is one; under torchrun, each rank's LOCAL_RANK GPU)."""
    import torch.distributed as dist
    from tqdm import tqdm

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():  # launched by torchrun
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    torch.manual_seed(tcfg.seed)
    run = RunFolder(tcfg.out) if rank == 0 else None
    dcfg = dcfg.with_task_mask(tcfg.occ_weight > 0)
    ds = StoreDataset(dcfg, skip_log=os.path.join(tcfg.out, SKIPPED_SWEEPS) if tcfg.skip_bad_sweeps else None,
                      targets=PRETRAINING)
    if ds.attrs["feature_dim"] != mcfg.feature_dim:
        raise ValueError(f"store {dcfg.store} holds {ds.attrs['feature_dim']}-dim teacher features but the "
                         f"projection head outputs {mcfg.feature_dim}")
    if tcfg.batch_size * world > len(ds):
        raise ValueError(f"--batch-size {tcfg.batch_size}{f' on {world} ranks' if world > 1 else ''}: the store has "
                         f"only {len(ds)} complete sweeps in split {dcfg.split!r}; lower --batch-size to "
                         f"{max(1, len(ds) // world)} or less")
    warn_incomplete(ds)
    fingerprint = store_fingerprint(ds.attrs, sweeps=ds.sweeps)
    model = Student(mcfg).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    ckpt_path = os.path.join(tcfg.out, "checkpoint.pt")
    start, changes = 0, []
    if resume:
        if not os.path.exists(ckpt_path):
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt_path}")
        ck = read_checkpoint(ckpt_path)
        # the model must be the same to load its weights; the rest may be forced
        changes = check_resume(ckpt_path, ck, {"model_config": mcfg.to_dict(), "data_config": dcfg.to_dict(),
                                               "train_config": asdict(tcfg), "store_fingerprint": fingerprint},
                               force=force_config, forceable=("data_config", "train_config", "store_fingerprint"),
                               ignore=RESUME_IGNORES, defaults={"model_config": field_defaults(ModelConfig),
                                                                "data_config": field_defaults(DataConfig),
                                                                "train_config": field_defaults(TrainConfig)})
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scaler.load_state_dict(ck["scaler"])
        torch.set_rng_state(ck["torch_rng"])
        start = int(ck["step"])
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=tcfg.occ_weight == 0)
    loader = torch.utils.data.DataLoader(
        _EpochDataset(ds),
        batch_sampler=EpochBatches(len(ds), tcfg.batch_size, tcfg.seed, start, tcfg.steps, rank, world),
        collate_fn=Collate(dcfg.voxel_size), num_workers=tcfg.workers,
        multiprocessing_context="spawn" if tcfg.workers > 0 else None, persistent_workers=False)
    model.train()
    lead = rank == 0
    if run is not None:
        run.start(METRICS, start)
    bar = tqdm(total=tcfg.steps, initial=start, desc="pretrain", unit="step", disable=not (progress and lead))
    metrics: dict = {}
    step = start
    t_data = time.perf_counter()
    try:  # the bar and the run's files are closed however the loop ends, so an error prints on its own line
        for batch in loader:
            data_s = time.perf_counter() - t_data
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, tcfg)
            batch = batch.to(device, non_blocking=True)
            with torch.autocast("cuda", dtype=torch.float16, enabled=device.type == "cuda"):
                loss, metrics = loss_step(net, batch, tcfg)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg.clip)
            scaler.step(optimizer)
            scaler.update()
            step += 1
            metrics.update(step=step, lr=lr_at(step - 1, tcfg), data_s=data_s,
                           step_s=time.perf_counter() - t_data - data_s, world=world)
            if step % tcfg.checkpoint_every == 0 or step == tcfg.steps:
                metrics["rankme"] = backbone_rankme(model, batch)
                if world > 1:
                    metrics["ranks_in_sync"] = ranks_in_sync(model)
            if lead:
                run.log(metrics)
                run.scalars(metrics, step)
                bar.set_postfix(loss=f"{metrics['loss']:.4f}", distill=_shown(metrics["distill"]))
                bar.update()
                if step % tcfg.checkpoint_every == 0 or step == tcfg.steps:
                    save_pretraining(ckpt_path, model, optimizer, scaler, step, mcfg, dcfg, tcfg, fingerprint)
            t_data = time.perf_counter()
    finally:
        bar.close()
        if run is not None:
            run.close()
    if world > 1:
        dist.barrier()  # the checkpoint is complete before any rank returns
    return {"metrics": metrics, "checkpoint": ckpt_path, "step": step, "config_changes": changes}


def _shown(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def warn_incomplete(ds: StoreDataset) -> None:
    """Say in one line on stderr when the store has sweeps of the run's scenes that are not complete (an
    extract still running, interrupted, or with failed sweeps): the run trains on the complete ones."""
    import sys

    missing = ds.incomplete
    if missing["not_written"] or missing["failed"]:
        parts = [f"{missing['not_written']} not written yet (the extract is still running or was "
                 "interrupted: rerun it to finish)"] if missing["not_written"] else []
        parts += [f"{missing['failed']} failed (`cdpipe info` lists them)"] if missing["failed"] else []
        print(f"warning: {ds.cfg.store}: {len(ds)} of {len(ds) + missing['not_written'] + missing['failed']} sweeps "
              f"of split {ds.cfg.split!r} are complete; {', '.join(parts)}; training on the {len(ds)}",
              file=sys.stderr)


@torch.no_grad()
def backbone_rankme(model: Student, batch: Batch, max_points: int = 4096) -> float:
    """RankMe of the backbone's point features on (a fixed subsample of) this batch."""
    from trainer.metrics import rankme

    was_training = model.training
    model.eval()
    feats = model.point_features(batch)
    model.train(was_training)
    pick = torch.linspace(0, len(feats) - 1, min(max_points, len(feats)), device=feats.device).long()
    return rankme(feats[pick].float().cpu())


def ranks_in_sync(model: torch.nn.Module) -> bool:
    """True when every rank holds the same weights (max and min of a checksum agree across ranks)."""
    import torch.distributed as dist

    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    lo, hi = checksum.clone(), checksum.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return bool(lo.item() == hi.item())

