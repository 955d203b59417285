"""Store -> samples -> batch: offsets, batched equals one by one, augmentation keeps each point's data
with it, and a segmentation dataset reads neither teacher features nor builds a nearest-point tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.batch import INPUT_SCALE, Sample, collate, point_inputs
from trainer.config import ModelConfig
from trainer.data import (
    AUGMENT_STREAM,
    PRETRAINING,
    SEGMENTATION,
    DataConfig,
    StoreDataset,
    augmentation_matrix,
    stream_rng,
)
from trainer.model import Segmenter, Student
from trainer.probe import stored_inputs


def _sample(sweep: int, n: int, q: int, d: int = 8, seed: int = 0) -> Sample:
    rng = np.random.default_rng([seed, sweep])
    xyz = rng.uniform(-6, 6, (n, 3)).astype(np.float32)
    queries = rng.uniform(-6, 6, (q, 3)).astype(np.float32)
    return Sample(sweep=sweep, xyz=xyz, intensity=rng.uniform(0, 255, n).astype(np.float32),
                  labels=rng.integers(0, 17, n).astype(np.uint8), teacher=rng.normal(size=(n, d)).astype(np.float16),
                  valid=rng.random(n) < 0.7, queries=queries, occ=(rng.random(q) < 0.5).astype(np.float32),
                  nearest=rng.integers(0, n, q))


def test_collate_offsets_and_shifted_indices():
    samples = [_sample(10, 50, 7), _sample(11, 30, 5), _sample(12, 40, 9)]
    voxel = 1.5
    b = collate(samples, voxel)
    assert b.offsets.tolist() == [0, 50, 80] and b.sweeps.tolist() == [10, 11, 12] and b.num_sweeps == 3
    assert len(b.xyz) == 120 and len(b.queries) == 21 and b.teacher.shape == (120, 8)
    for k, s in enumerate(samples):
        rows = b.point_slice(k)
        np.testing.assert_array_equal(b.xyz[rows].numpy(), s.xyz)
        # each point's voxel belongs to its own sweep and holds the point
        vox = b.voxel_coords[b.point_to_voxel[rows]]
        assert (vox[:, 0] == k).all()
        np.testing.assert_array_equal(vox[:, 1:].numpy(), np.floor(s.xyz / voxel).astype(np.int64))
        # the voxel's input is the mean of its points' inputs
        for v in np.unique(b.point_to_voxel[rows].numpy())[:5]:
            members = (b.point_to_voxel[rows] == v).numpy()
            np.testing.assert_allclose(b.voxel_feats[v].numpy(),
                                       point_inputs(s.xyz[members], s.intensity[members]).mean(0), rtol=1e-6)
    # query k of sweep b asks about the same point as before concatenation
    np.testing.assert_array_equal(b.xyz[b.nearest].numpy(), np.concatenate([s.xyz[s.nearest] for s in samples]))
    assert b.labels.dtype == torch.int64 and b.valid.dtype == torch.bool


def test_point_inputs_divide_by_the_named_scale():
    xyz = np.array([[50.0, -25.0, 5.0]], np.float32)
    np.testing.assert_allclose(point_inputs(xyz, np.array([255.0], np.float32)), [[1.0, -0.5, 1.0, 1.0]])
    assert INPUT_SCALE == (50.0, 50.0, 5.0, 255.0)


def test_a_batch_of_two_gives_each_sweep_its_own_outputs():
    """Equivalence: in eval mode, the sweeps of a batch do not see each other (the batch index is part
    of every voxel's coordinates), so a batch of two gives each sweep what it gets alone."""
    torch.manual_seed(0)
    student = Student(ModelConfig(arch="minkunet-tiny", feature_dim=8, head_hidden=16, occ_hidden=8)).eval()
    segmenter = Segmenter("minkunet-tiny").eval()
    torch.nn.init.normal_(segmenter.classifier.weight)
    a, b = _sample(0, 400, 20), _sample(1, 300, 15)
    # the same place in space: without the batch index the two clouds would share voxels
    b.xyz[:100] = a.xyz[:100]
    with torch.no_grad():
        both = collate([a, b], 0.5)
        out2, seg2 = student(both), segmenter(both)
        for k, s in enumerate((a, b)):
            one = collate([s], 0.5)
            out1, seg1 = student(one), segmenter(one)
            rows = both.point_slice(k)
            torch.testing.assert_close(seg2[rows], seg1, rtol=1e-4, atol=1e-5)
            valid_before = int(both.valid[: rows.start].sum())
            n_valid = int(one.valid.sum())
            torch.testing.assert_close(out2["proj"][valid_before:valid_before + n_valid], out1["proj"],
                                       rtol=1e-4, atol=1e-5)
            q0 = 0 if k == 0 else len(a.queries)
            torch.testing.assert_close(out2["occ_logits"][q0:q0 + len(s.queries)], out1["occ_logits"],
                                       rtol=1e-4, atol=1e-5)


def test_augmentation_moves_each_point_with_its_features_labels_and_queries(small_store):
    store = small_store[0].out
    common = dict(store=store, split="all", voxel_size=0.3, max_queries=256, seed=3)
    plain = StoreDataset(DataConfig(augment=False, **common), targets=PRETRAINING)
    moved = StoreDataset(DataConfig(augment=True, scale=0.2, **common), targets=PRETRAINING)
    for i in (0, len(plain) - 1):
        p, m = plain[i], moved[i]
        mat = augmentation_matrix(stream_rng(AUGMENT_STREAM, 3, 0, p.sweep), 0.2)
        assert not np.allclose(mat, np.eye(3))
        np.testing.assert_allclose(m.xyz, p.xyz @ mat.T, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(m.queries, p.queries @ mat.T, rtol=1e-5, atol=1e-4)
        for name in ("teacher", "valid", "labels", "intensity", "occ", "nearest"):
            np.testing.assert_array_equal(getattr(m, name), getattr(p, name), err_msg=name)
        # the nearest point of each query is still the nearest after the similarity
        d_near = np.linalg.norm(m.queries - m.xyz[m.nearest], axis=1)
        d_all = np.linalg.norm(m.queries[:20, None] - m.xyz[None], axis=2).min(1)
        np.testing.assert_allclose(d_near[:20], d_all, rtol=1e-5, atol=1e-5)


def test_a_segmentation_dataset_reads_no_teacher_features_and_builds_no_tree(small_store, monkeypatch):
    import trainer.data as data

    asked, trees = [], []
    real_rows, real_nearest = data.sweep_rows, data._nearest
    monkeypatch.setattr(data, "sweep_rows", lambda g, s, fields: asked.append(fields) or real_rows(g, s, fields))
    monkeypatch.setattr(data, "_nearest", lambda *a: trees.append(1) or real_nearest(*a))
    cfg = DataConfig(store=small_store[0].out, split="val", voxel_size=0.3)
    item = StoreDataset(cfg, targets=SEGMENTATION)[0]
    assert item.teacher is None and item.valid is None and item.queries is None and item.nearest is None
    assert item.labels is not None and len(item.labels) == len(item.xyz)
    assert asked == [("points", "labels")] and trees == []
    full = StoreDataset(cfg, targets=PRETRAINING)[0]
    assert "features" in asked[-1] and trees == [1]
    np.testing.assert_array_equal(full.xyz, item.xyz)  # the same sweep, the same augmentation
    with pytest.raises(ValueError, match="targets"):
        StoreDataset(cfg, targets=("teacher", "depth"))
    # a segmentation batch given to what needs a target: one line naming what is missing
    student = Student(ModelConfig(arch="minkunet-tiny", feature_dim=384, head_hidden=16, occ_hidden=8)).eval()
    with pytest.raises(ValueError, match="the occupancy head needs queries, nearest, which this batch lacks"):
        student(collate([item], 0.3))
    with pytest.raises(ValueError, match="point inputs 'teacher' needs teacher, valid, which this sample lacks"):
        stored_inputs(item, "teacher")


def test_random_streams_never_share_a_draw():
    """Each kind of draw has a stream of its own, first in the key: numpy pads short keys with zeros, so
    [seed, 7, 3] and [seed, 7, 3, 0] would draw alike, and a fine-tuning step's batch key [seed, 7, t] once
    equalled the augmentation key [seed, epoch 7, sweep t]."""
    from trainer.data import AUGMENT_STREAM, FINETUNE_BATCH_STREAM, STREAMS, stream_rng

    assert len(set(STREAMS)) == len(STREAMS) and 0 not in STREAMS
    draws = {(stream, k): stream_rng(stream, 0, *([k] if stream != AUGMENT_STREAM else [7, k])).random()
             for stream in STREAMS for k in range(3)}
    assert len(set(draws.values())) == len(draws)
    assert stream_rng(FINETUNE_BATCH_STREAM, 0, 3).random() != stream_rng(AUGMENT_STREAM, 0, 7, 3).random()
