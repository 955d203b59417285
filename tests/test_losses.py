"""The losses against their stated maths."""

from __future__ import annotations

import math

import pytest
import torch

from trainer.losses import balanced_bce, distillation_loss, seg_loss


def test_l2_distillation_is_sqrt_of_2_minus_2_cos_on_unit_vectors():
    torch.manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(50, 16), dim=1)
    teacher = 7.0 * torch.randn(50, 16)  # raw teacher features: not unit, the loss normalises them
    cos = (k * torch.nn.functional.normalize(teacher, dim=1)).sum(1)
    torch.testing.assert_close(distillation_loss(k, teacher, "l2"), torch.sqrt(2 - 2 * cos).mean())
    torch.testing.assert_close(distillation_loss(k, teacher, "cosine"), (1 - cos).mean())
    # the two agree on what is perfect and what is opposite
    assert distillation_loss(k, 3 * k, "l2").item() == pytest.approx(0.0, abs=1e-3)
    assert distillation_loss(k, -k, "l2").item() == pytest.approx(2.0)
    assert distillation_loss(k, -k, "cosine").item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="cosine"):
        distillation_loss(k, teacher, "huber")


def test_balanced_bce_by_hand():
    """One occupied query at logit 0 and three free at logits 0, 0, 2: the occupied mean is log 2 and
    the free mean (2 log 2 + log(1 + e^2)) / 3, weighed equally whatever the counts."""
    logits = torch.tensor([0.0, 0.0, 0.0, 2.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 0.0])
    free = (2 * math.log(2) + math.log(1 + math.e ** 2)) / 3
    assert balanced_bce(logits, labels).item() == pytest.approx((math.log(2) + free) / 2)
    # a plain mean would weigh the three free queries three times as much
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    assert plain == pytest.approx((math.log(2) + 3 * free) / 4) and plain != pytest.approx((math.log(2) + free) / 2)


def test_seg_loss_ignores_label_0():
    logits = torch.zeros(4, 16)
    logits[0, 2] = 50.0  # a confident prediction on an ignored point costs nothing
    labels = torch.tensor([0, 1, 1, 16])
    assert seg_loss(logits, labels, lovasz=False).item() == pytest.approx(math.log(16))
