"""mIoU, RankMe and corruptions against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.corruptions import Corruption, parse
from trainer.metrics import confusion_matrix, iou_per_class, mean_iou, rankme


def test_confusion_and_iou_by_hand():
    # classes 1..3; truth 0 is ignored whatever is predicted; class 3 is never true and never predicted
    truth = np.array([1, 1, 1, 2, 2, 0, 0, 1])
    pred = np.array([1, 1, 2, 2, 0, 2, 1, 1])
    c = confusion_matrix(truth, pred, 3)
    expected = np.zeros((4, 4), int)
    expected[1, 1], expected[1, 2], expected[2, 2], expected[2, 0] = 3, 1, 1, 1
    np.testing.assert_array_equal(c, expected)
    iou = iou_per_class(c)
    # class 1: TP 3, FN 1 (predicted 2), FP 0 -> 3/4; class 2: TP 1, FN 1 (predicted 0), FP 1 -> 1/3
    np.testing.assert_allclose(iou[:2], [3 / 4, 1 / 3])
    assert np.isnan(iou[2])  # absent from truth and prediction: no IoU, not in the mean
    assert mean_iou(c) == pytest.approx((3 / 4 + 1 / 3) / 2)


def test_class_predicted_but_absent_from_truth_counts_zero():
    c = confusion_matrix(np.array([1, 1]), np.array([1, 3]), 3)
    iou = iou_per_class(c)
    assert iou[2] == 0.0 and iou[0] == pytest.approx(0.5)
    assert mean_iou(c) == pytest.approx(0.25)


def test_rankme_of_rank_k_and_collapsed():
    rng = np.random.default_rng(0)
    k = 5
    # equal singular values: a rank-k matrix with orthogonal directions of equal energy
    q, _ = np.linalg.qr(rng.normal(size=(400, k)))
    r, _ = np.linalg.qr(rng.normal(size=(64, k)))
    z = q @ r.T
    assert rankme(z) == pytest.approx(k, rel=1e-3)
    assert rankme(np.ones((400, 64))) == pytest.approx(1.0, abs=1e-3)  # collapsed: every row the same
    assert 1.0 < rankme(rng.normal(size=(400, 64))) <= 64


def _cloud(n=20000, seed=0):
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-40, 40, (n, 3)).astype(np.float32)
    ring = rng.integers(0, 32, n).astype(np.float32)
    return np.c_[xyz, rng.uniform(0, 100, n).astype(np.float32), ring]


def test_beams_missing_drops_whole_rings():
    pts = _cloud()
    keep, out = Corruption("beams_missing", 0.25)(pts, np.random.default_rng(1))
    rings = set(np.unique(out[:, 4]).astype(int))
    assert len(rings) == 24  # 8 of 32 rings gone, entirely
    dropped = set(range(32)) - rings
    assert not np.isin(out[:, 4].astype(int), list(dropped)).any()
    np.testing.assert_array_equal(out, pts[keep])


def test_sparser_sensor_keeps_one_ring_in_n():
    pts = _cloud()
    for n in (2, 4):
        keep, out = parse(f"sparser_sensor:{n}")(pts, np.random.default_rng(0))
        assert set(np.unique(out[:, 4]).astype(int)) == set(range(0, 32, n))
        assert len(out) == (pts[:, 4].astype(int) % n == 0).sum()


def test_jitter_moves_points_by_sigma():
    pts = _cloud()
    keep, out = Corruption("jitter", 0.05)(pts, np.random.default_rng(0))
    assert len(keep) == len(pts)
    d = out[:, :3] - pts[:, :3]
    assert abs(d.std() - 0.05) < 0.002 and abs(d.mean()) < 0.002
    np.testing.assert_array_equal(out[:, 3:], pts[:, 3:])


def test_fog_drops_more_with_range():
    pts = _cloud(50000)
    keep, out = Corruption("fog", 0.02)(pts, np.random.default_rng(0))
    r = np.linalg.norm(pts[:, :3], axis=1)
    kept = np.zeros(len(pts), bool)
    kept[keep] = True
    near, far = r < 20, r > 50
    assert kept[near].mean() > kept[far].mean() + 0.3
    assert kept[near].mean() == pytest.approx(np.exp(-0.02 * r[near]).mean(), abs=0.02)


def test_unknown_corruption_named():
    with pytest.raises(ValueError, match="snow"):
        parse("snow:1")


def test_label_subset_by_scene_stable_and_sized():
    from trainer.splits import label_subset

    scenes = [{"name": f"scene-{i:04d}", "split": "train", "num_sweeps": 40} for i in range(100)]
    scenes += [{"name": f"scene-{i:04d}", "split": "val", "num_sweeps": 40} for i in range(100, 120)]
    total = 100 * 40
    for pct in (1, 5, 10, 25, 100):
        chosen = label_subset(scenes, pct, seed=0)
        assert chosen == label_subset(scenes, pct, seed=0)  # stable
        assert all(int(n.split("-")[1]) < 100 for n in chosen)  # train scenes only
        assert abs(len(chosen) * 40 - pct / 100 * total) <= 40 / 2 + 1e-9  # within half a scene
    assert label_subset(scenes, 10, seed=0) != label_subset(scenes, 10, seed=1)
    assert set(label_subset(scenes, 1, seed=0)) <= set(label_subset(scenes, 100, seed=0))
    with pytest.raises(ValueError, match="labels-percent"):
        label_subset(scenes, 0)


def test_lovasz_softmax_perfect_and_wrong():
    import torch

    from trainer.losses import lovasz_softmax

    target = torch.tensor([0, 1, 2, 1])
    perfect = torch.nn.functional.one_hot(target, 3).float()
    assert lovasz_softmax(perfect, target).item() == pytest.approx(0.0)
    wrong = torch.nn.functional.one_hot((target + 1) % 3, 3).float()
    assert lovasz_softmax(wrong, target).item() == pytest.approx(1.0)
