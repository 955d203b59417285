"""Linear probing solved to convergence: a softmax regression on frozen per-point features.

Given features x [N, D] of labelled points (a frozen backbone's, the raw point inputs, the stored
teacher features, or several side by side) and classes y in 1..K, standardise each column,
z = (x - mean) / std (std of a constant column taken as 1), and minimise over W [K, D], b [K]

    L(W, b) = (1 / N) sum_i CE(W z_i + b, y_i) + (l2 / 2) ||W||^2

a smooth convex problem, by full-batch L-BFGS with a strong-Wolfe line search in float64, in rounds of
20 iterations until a round lowers L by less than ``tol`` (relative) with |grad L| < ``GRAD_TOL``, or
``max_iter // 20`` rounds. The fit records L after every round (``Probe.losses``) and |grad L| at the end,
so a reader sees the end of the curve, not a step count; ``converged`` is that stopping rule met.
Why not SGD on the segmenter: 40 steps of it left every row of the old table below a logistic
regression on the raw inputs; a convex fit to tolerance removes "did the probe converge?" from the
comparison, and the same solver fits the floor and ceiling rows.

``linear_probe`` fits W, b on the frozen backbone's features of up to ``points_per_sweep`` labelled
points of each train sweep (no augmentation) and writes them into a ``Segmenter`` (BatchNorm set to the
standardisation, the linear layer to W, b), so ``cdtrain evaluate`` scores it like any fine-tuned one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from pipeline.classes import NUM_EVAL_CLASSES
from trainer.batch import Sample, collate, point_inputs, require
from trainer.config import DataConfig, ProbeConfig
from trainer.data import PROBE_POINTS_STREAM, SEGMENTATION, StoreDataset, stream_rng

POINT_INPUTS = ("raw", "teacher", "raw+teacher")  # feature kinds read straight from the store
GRAD_TOL = 1e-4  # a fit counts as converged when |grad L| ends below this


@dataclass(frozen=True)
class Probe:
    mean: np.ndarray  # [D]
    std: np.ndarray  # [D]
    weight: np.ndarray  # [K, D] on standardised inputs
    bias: np.ndarray  # [K]
    losses: list[float]  # L after each round of 20 L-BFGS iterations
    grad_norm: float  # |grad L| at the end
    converged: bool  # the last round stalled AND the gradient is small (not a failed line search)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std) @ self.weight.T + self.bias

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Classes 1..K."""
        return self.logits(x).argmax(1) + 1

    def summary(self) -> dict:
        return {"rounds": len(self.losses), "final_loss": self.losses[-1] if self.losses else None,
                "loss_curve_end": self.losses[-5:], "grad_norm": self.grad_norm, "converged": self.converged}


def fit_softmax(x: np.ndarray, y: np.ndarray, num_classes: int = NUM_EVAL_CLASSES, l2: float = 1e-4,
                max_iter: int = 1000, tol: float = 1e-6, progress: bool = False) -> Probe:
    """The L-BFGS fit of the module docstring; y holds classes 1..num_classes (no 0). ``progress``: a bar
    over the rounds (of up to 20 iterations) on stderr, gone when done."""
    from tqdm import tqdm

    if len(x) == 0 or (y < 1).any() or (y > num_classes).any():
        raise ValueError("fit_softmax needs labelled points with classes 1..num_classes")
    mean = x.mean(0, dtype=np.float64)
    std = x.std(0, dtype=np.float64)
    std = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)  # a constant column stays 0
    z = torch.from_numpy((x - mean) / std).double()
    target = torch.from_numpy(y.astype(np.int64) - 1)
    w = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=20, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-9, tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ w.T + b, target) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    losses, stalled, grad_norm = [], False, float("inf")
    rounds = tqdm(range(max(1, max_iter // 20)), desc=f"probe fit ({len(x)} points)", unit="round", leave=False,
                  disable=not progress)
    for _ in rounds:  # each opt.step runs up to 20 L-BFGS iterations
        before = closure().item()
        opt.step(closure)
        after = closure().item()  # also leaves the gradient at the new point in w.grad, b.grad
        losses.append(after)
        grad_norm = float(torch.cat([w.grad.ravel(), b.grad.ravel()]).norm())
        stalled = before - after <= tol * max(1.0, abs(before))
        rounds.set_postfix(loss=f"{after:.4f}")
        if stalled and grad_norm < GRAD_TOL:
            break  # a slow round on an ill-conditioned problem, gradient still large: go on
    rounds.close()
    return Probe(mean=mean, std=std, weight=w.detach().numpy(), bias=b.detach().numpy(), losses=losses,
                 grad_norm=grad_norm, converged=stalled and grad_norm < GRAD_TOL)


def stored_inputs(item: Sample, kind: str) -> np.ndarray:
    """Per-point inputs read from the store: ``raw`` = the student's own input (``batch.point_inputs``);
    ``teacher`` = the stored teacher feature and its valid flag (0 where no camera saw the point);
    ``raw+teacher`` both."""
    if kind not in POINT_INPUTS:
        raise ValueError(f"point inputs {kind!r}: choose one of {POINT_INPUTS}")
    parts = []
    if kind.startswith("raw"):
        parts.append(point_inputs(item.xyz, item.intensity))
    if kind.endswith("teacher"):
        require(item, "teacher", "valid", purpose=f"point inputs {kind!r}")
        parts.append(np.c_[item.teacher.astype(np.float32) * item.valid[:, None], item.valid.astype(np.float32)])
    return np.concatenate(parts, axis=1).astype(np.float32)


@torch.no_grad()
def feature_table(ds: StoreDataset, kind: str, model=None, points_per_sweep: int = 0, seed: int = 0,
                  device: str = "cpu", progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Features [M, D] and classes [M] (1..K) of the labelled points of every sweep of ``ds``: all of them,
    or a random ``points_per_sweep`` of each. ``kind``: one of POINT_INPUTS, or ``backbone`` (the point
    features of ``model``, a Segmenter, which must be in eval mode: a frozen backbone's BatchNorm
    statistics must not move). ``progress``: a bar over the sweeps on stderr, gone when done."""
    from tqdm import tqdm

    if kind == "backbone" and model.training:
        raise ValueError("feature_table: put the model in eval mode first (its BatchNorm statistics would move)")
    xs, ys = [], []
    for i in tqdm(range(len(ds)), desc=f"probe features ({kind})", unit="sweep", leave=False, disable=not progress):
        item = ds[i]
        if kind == "backbone":
            x = model.point_features(collate([item], ds.cfg.voxel_size).to(device)).float().cpu().numpy()
        else:
            x = stored_inputs(item, kind)
        labelled = np.nonzero(item.labels > 0)[0]
        if points_per_sweep and len(labelled) > points_per_sweep:
            rng = stream_rng(PROBE_POINTS_STREAM, seed, int(item.sweep))
            labelled = np.sort(rng.choice(labelled, points_per_sweep, replace=False))
        xs.append(x[labelled])
        ys.append(item.labels[labelled].astype(np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def install(model, probe: Probe) -> None:
    """Write a probe fitted on ``model``'s backbone features into its head: BN(f) = (f - mean) / std,
    classifier = (W, b), so ``model(batch)`` gives the probe's logits."""
    norm = model.norm
    with torch.no_grad():
        var = torch.from_numpy(probe.std.astype(np.float64) ** 2)
        norm.running_mean.copy_(torch.from_numpy(probe.mean.astype(np.float64)))
        norm.running_var.copy_(var)
        norm.weight.copy_(torch.sqrt((var + norm.eps) / var))
        norm.bias.zero_()
        model.classifier.weight.copy_(torch.from_numpy(probe.weight))
        model.classifier.bias.copy_(torch.from_numpy(probe.bias))


def linear_probe(store: str, checkpoint: str | None, arch: str, cfg: ProbeConfig, voxel_size: float = 0.1,
                 device: str = "cpu", progress: bool = False) -> dict:
    """Fit the probe on the frozen backbone (a pretraining checkpoint's, or a random one seeded by
    ``cfg.seed``), evaluate it on the val scenes, write OUT/segmenter.pt and OUT/result.json."""
    from pipeline.store import open_store, store_classes
    from trainer.checkpoint import new_segmenter, segmenter_record, write_atomic
    from trainer.evaluate import evaluate_model
    from trainer.splits import label_subset

    group = open_store(store)
    if not group.attrs["has_labels"]:
        raise ValueError(f"store {store} has no labels to probe with")
    classes = store_classes(dict(group.attrs))
    model, init = new_segmenter(arch, checkpoint or None, cfg.seed, classes.num_classes)
    model.to(device).eval()
    scenes = tuple(label_subset(group.attrs["scenes"], cfg.labels_percent, cfg.seed))
    ds = StoreDataset(DataConfig(store=store, split="train", voxel_size=voxel_size, augment=False, scenes=scenes),
                      targets=SEGMENTATION)
    x, y = feature_table(ds, "backbone", model, cfg.points_per_sweep, cfg.seed, device, progress=progress)
    probe = fit_softmax(x, y, classes.num_classes, cfg.l2, cfg.max_iter, progress=progress)
    install(model, probe)
    result = evaluate_model(model, store, "val", voxel_size, device=device, progress=progress)
    result.update(linear_probe=True, labels_percent=cfg.labels_percent, label_scenes=list(scenes), init=init,
                  pretrained=checkpoint or None, store=store,
                  arch=arch, probe_fit=probe.summary(), fit_points=int(len(y)), config=asdict(cfg))
    os.makedirs(cfg.out, exist_ok=True)
    model.cpu()
    write_atomic(segmenter_record(model, arch, voxel_size, classes.eval, linear_probe=True, init=init,
                                  labels_percent=cfg.labels_percent, label_scenes=list(scenes),
                                  probe_config=asdict(cfg), probe_fit=probe.summary()),
                 os.path.join(cfg.out, "segmenter.pt"))
    with open(os.path.join(cfg.out, "result.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result
