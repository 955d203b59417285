"""Evaluation arithmetic: confusion matrix, per-class IoU, mIoU, RankMe and balanced accuracy.

- confusion[t, p] counts points of true class t predicted as p, over classes 1..K (0 = ignore: points
  whose true label is 0 are not counted; a prediction of 0 counts as wrong).
- IoU_c = TP_c / (TP_c + FP_c + FN_c); a class absent from both truth and prediction has no IoU (NaN)
  and is left out of the mean; mIoU = mean of the defined IoUs, or of those of a given class set
  (evaluation uses the classes present in the evaluated truth: ``trainer/evaluate.py``).
- RankMe (Garrido et al., 2023) of features Z [N, D]: with singular values s_k,
  p_k = s_k / sum(s) + 1e-7, RankMe = exp(-sum_k p_k log p_k).
- Balanced accuracy of occupancy logits: the mean of the recalls of occupied and of free queries.
"""

from __future__ import annotations

import numpy as np
import torch


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """[K+1, K+1] int64 counts (row = truth, column = prediction, index 0 = ignore), ignoring truth 0."""
    truth = np.asarray(truth).astype(np.int64).ravel()
    pred = np.asarray(pred).astype(np.int64).ravel()
    keep = truth != 0
    k = num_classes + 1
    return np.bincount(truth[keep] * k + pred[keep], minlength=k * k).reshape(k, k)


def iou_per_class(confusion: np.ndarray) -> np.ndarray:
    """IoU of classes 1..K [K] (NaN where the class is in neither truth nor prediction)."""
    c = confusion.astype(np.float64)
    tp = np.diag(c)[1:]
    fn = c[1:, :].sum(1) - tp  # truth c predicted as anything else, including 0
    fp = c[1:, 1:].sum(0) - tp  # predicted c where truth was another real class
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def mean_iou(confusion: np.ndarray, classes: np.ndarray | None = None) -> float:
    """Mean of the defined IoUs; with ``classes`` (a boolean mask [K] over classes 1..K), the mean over
    those classes exactly (a class in the set that is never predicted nor true counts as NaN -> skipped)."""
    iou = iou_per_class(confusion)
    if classes is not None:
        iou = iou[np.asarray(classes, dtype=bool)]
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def rankme(features: torch.Tensor | np.ndarray, eps: float = 1e-7) -> float:
    """RankMe of an [N, D] feature matrix (effective rank from the singular-value entropy)."""
    z = torch.as_tensor(features, dtype=torch.float64)
    s = torch.linalg.svdvals(z)
    p = s / s.sum() + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))


def balanced_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean of the recall of occupied and of free queries (prediction: logit > 0)."""
    pred = logits > 0
    recalls = [float((pred[labels == v] == bool(v)).float().mean()) for v in (1.0, 0.0) if (labels == v).any()]
    return float(np.mean(recalls)) if recalls else float("nan")
