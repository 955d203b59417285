"""cdtrain pretrain: resume equals a straight run, distillation learns, the schedule and the refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from trainer.batch import collate
from trainer.checkpoint import read_checkpoint as load_checkpoint
from trainer.config import DataConfig, ModelConfig, TrainConfig
from trainer.data import StoreDataset
from trainer.model import Student
from trainer.train import lr_at, pretrain

MODEL = dict(arch="minkunet-tiny", head_hidden=64, occ_hidden=16)


def _configs(store, out, steps, **train):
    mcfg = ModelConfig(feature_dim=384, **MODEL)
    dcfg = DataConfig(store=store, split="train", voxel_size=0.2, max_queries=512, max_points=10000)
    tcfg = TrainConfig(out=str(out), steps=steps, batch_size=2, warmup=2, checkpoint_every=5, **train)
    return mcfg, dcfg, tcfg


def _heldout_cosine(model: Student, store: str) -> float:
    ds = StoreDataset(DataConfig(store=store, split="val", voxel_size=0.2, augment=False, max_queries=512))
    model.eval()
    sims = []
    with torch.no_grad():
        for i in range(len(ds)):
            b = collate([ds[i]], 0.2)
            k = model.head(model.point_features(b)[b.valid])
            q = torch.nn.functional.normalize(b.teacher[b.valid].float(), dim=1)
            sims.append(float((k * q).sum(1).mean()))
    return float(np.mean(sims))


@pytest.mark.slow
def test_resume_equals_straight_run_and_student_learns(small_store, tmp_path):
    store = small_store[0].out
    mcfg, dcfg, tcfg = _configs(store, tmp_path / "straight", 10)
    torch.manual_seed(0)
    before = _heldout_cosine(Student(mcfg), store)  # the same initialisation pretrain() starts from
    straight = pretrain(mcfg, dcfg, tcfg, progress=False)
    # 5 steps, stop, resume, 5 more
    _, _, t5 = _configs(store, tmp_path / "resumed", 10)
    _run_until(mcfg, dcfg, t5, stop_at=5)
    resumed = pretrain(mcfg, dcfg, t5, resume=True, progress=False)
    assert resumed["step"] == straight["step"] == 10
    a, b = load_checkpoint(straight["checkpoint"]), load_checkpoint(resumed["checkpoint"])
    # bit for bit, on 2 threads of a busy machine too: every gather with repeated indices sums its gradient
    # in a fixed order (trainer/model.py, point_features)
    differ = {name: (value.float() - b["model"][name].float()).abs().max().item() for name, value in a["model"].items()
              if not torch.equal(value, b["model"][name])}
    assert not differ, f"resumed weights differ from the straight run's (max abs difference): {differ}"
    # distillation learned something that carries to held-out sweeps
    model = Student(mcfg)
    model.load_state_dict(a["model"])
    after = _heldout_cosine(model, store)
    print(f"held-out cosine similarity before {before:.3f}, after 10 steps {after:.3f}")
    assert after > before + 0.05
    import json

    losses = [json.loads(line) for line in open(tmp_path / "straight" / "metrics.jsonl")]
    assert losses[-1]["distill"] < losses[0]["distill"] - 0.05
    assert [round(line["rankme"], 6) for line in losses if "rankme" in line][-1] > 1.0  # logged at checkpoints


def _run_until(mcfg, dcfg, tcfg, stop_at: int) -> None:
    """A run interrupted after ``stop_at`` steps: same schedule (steps=10), checkpoint at step 5."""
    import trainer.train as tr

    class Stop(Exception):
        pass

    original = tr.save_pretraining

    def save_then_stop(path, model, optimizer, scaler, step, *args):
        original(path, model, optimizer, scaler, step, *args)
        if step == stop_at:
            raise Stop

    tr.save_pretraining = save_then_stop
    try:
        with pytest.raises(Stop):
            pretrain(mcfg, dcfg, tcfg, progress=False)
    finally:
        tr.save_pretraining = original


def test_lr_schedule():
    cfg = TrainConfig(out="x", steps=100, warmup=10, lr=1.0)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(100, cfg) == pytest.approx(0.0)


def test_refuses_feature_size_mismatch(small_store, tmp_path):
    mcfg, dcfg, tcfg = _configs(small_store[0].out, tmp_path, 1)
    with pytest.raises(ValueError, match="384-dim"):
        pretrain(ModelConfig(feature_dim=768, **MODEL), dcfg, tcfg, progress=False)


@pytest.mark.slow
def test_torchrun_two_ranks_stay_in_sync(small_store, tmp_path):
    import json

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
           "-m", "trainer.cli", "pretrain", "--store", small_store[0].out, "--out", str(out),
           "--model", "minkunet-tiny", "--head-hidden", "32", "--steps", "4", "--batch-size", "1",
           "--voxel-size", "0.4", "--checkpoint-every", "2", "--split", "all"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert len(lines) == 4 and all(line["world"] == 2 for line in lines)
    assert [line["ranks_in_sync"] for line in lines if "ranks_in_sync" in line] == [True, True]
    assert load_checkpoint(str(out / "checkpoint.pt"))["step"] == 4
