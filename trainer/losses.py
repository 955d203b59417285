"""The losses, one or two lines of maths each.

- Distillation (``distillation_loss``), over the points that have a teacher feature, with k the
  L2-normalised head output and q the L2-normalised teacher feature:
  cosine: mean(1 - k.q); l2: mean ||k - q||_2, which for unit vectors is mean sqrt(2 - 2 k.q).
- Occupancy (``balanced_bce``): (mean BCE over occupied queries + mean BCE over free queries) / 2.
- Segmentation (``seg_loss``): cross-entropy over labelled points (label 0 = ignore, never a target),
  plus optionally the Lovasz-softmax loss (``lovasz_softmax``; Berman et al., 2018: for each class
  present, the Lovasz extension of the Jaccard loss applied to the sorted errors |1{y = c} - p_c|,
  averaged over the classes present).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.config import DISTILLATION_LOSSES


def distillation_loss(k: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """``k`` [M, D] unit rows (the projection head's output), ``teacher`` [M, D] raw teacher features;
    0 (with a gradient path) when M = 0."""
    if len(k) == 0:
        return k.sum() * 0.0
    q = nn.functional.normalize(teacher.float(), dim=1)
    if kind == "cosine":
        return (1.0 - (k * q).sum(1)).mean()
    if kind == "l2":
        return (k - q).norm(dim=1).mean()
    raise ValueError(f"distillation loss {kind!r}: choose one of {DISTILLATION_LOSSES}")


def balanced_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(mean BCE over label-1 queries + mean BCE over label-0 queries) / 2, over the labels present;
    0 (with a gradient path) when there are no queries."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    parts = [bce[labels == v].mean() for v in (1.0, 0.0) if (labels == v).any()]
    return torch.stack(parts).mean() if parts else logits.sum() * 0.0


def lovasz_softmax(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the classes present of the Lovasz extension of the Jaccard loss (probs [N,K], target [N])."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (target == c).to(probs.dtype)
        if fg.sum() == 0:
            continue
        errors = (fg - probs[:, c]).abs()
        errors, order = torch.sort(errors, descending=True)
        fg_sorted = fg[order]
        inter = fg_sorted.sum() - fg_sorted.cumsum(0)
        union = fg_sorted.sum() + (1 - fg_sorted).cumsum(0)
        jaccard = 1.0 - inter / union
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, grad))
    return torch.stack(losses).mean() if losses else probs.sum() * 0


def seg_loss(logits: torch.Tensor, labels: torch.Tensor, lovasz: bool) -> torch.Tensor:
    """``logits`` [N, K] for classes 1..K, ``labels`` [N] in 0..K (0 = ignore); 0 (with a gradient path)
    when no point is labelled."""
    keep = labels > 0
    if not keep.any():
        return logits.sum() * 0.0
    target = labels[keep] - 1
    loss = nn.functional.cross_entropy(logits[keep].float(), target)
    if lovasz:
        loss = loss + lovasz_softmax(logits[keep].float().softmax(1), target)
    return loss
