"""Stand-in teachers (tools/): the label-free recipe never reads a label, both recipes train and resume
deterministically, and their weights load in ``cdpipe extract`` with the store naming what they are."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.cli import app as cdpipe
from pipeline.synth.write import SynthConfig, camera_label_path, write_dataroot
from pipeline.teacher import FrozenTeacher, TeacherConfig, file_sha256
from tools import stand_in_teacher as sit
from tools.camera_frames import SKY_CLASS, load_frames, patch_classes

TINY = dict(steps=3, batch_size=3, embed_dim=48, depth=2, num_heads=2, prototypes=64, image_size=(112, 224),
            crop_size=(56, 112), warmup=1, checkpoint_every=100, threads=1)


@pytest.fixture(scope="module")
def labelled_world(tmp_path_factory):
    cfg = SynthConfig(out=str(tmp_path_factory.mktemp("world") / "nuscenes"), scenes=1, samples_per_scene=1,
                      seed=10_001, width=224, height=126, camera_labels=True, workers=1)
    write_dataroot(cfg, progress=False)
    return cfg.out


def _frames_only_copy(src: str, dst: Path) -> str:
    """A dataroot holding only the camera frames: no lidarseg, no camseg, no tables."""
    for image in Path(src).glob("samples/CAM_*/*.jpg"):
        target = dst / image.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
    return str(dst)


def test_camera_labels_match_the_images(labelled_world):
    from PIL import Image

    images = sorted(Path(labelled_world).glob("samples/CAM_*/*.jpg"))
    assert len(images) == 6
    for image in images:
        label = Path(labelled_world) / camera_label_path(str(image.relative_to(labelled_world)))
        with Image.open(image) as im, Image.open(label) as lab:
            assert lab.size == im.size and lab.mode == "L"
    _, classes = load_frames(labelled_world, [str(images[0].relative_to(labelled_world))], (112, 224),
                             labels=True, progress=False)
    assert (classes == SKY_CLASS).any() and ((classes > 0) & (classes < SKY_CLASS)).any()
    with pytest.raises(ValueError, match="not a camera image"):
        camera_label_path("sweeps/LIDAR_TOP/x.pcd.bin")


def test_patch_classes_take_the_majority_of_labelled_pixels():
    classes = np.zeros((1, 4, 4), np.uint8)
    classes[0, :2, :2] = [[3, 3], [3, 5]]  # patch (0, 0): majority 3
    classes[0, :2, 2:] = [[0, 0], [0, 7]]  # patch (0, 1): ignore never wins against a labelled pixel
    out = patch_classes(classes, 2)
    assert out.tolist() == [[[3, 7], [0, 0]]]


def test_crop_geometry_round_trips_and_samples_the_frame():
    rng = np.random.default_rng(0)
    boxes = torch.from_numpy(sit.sample_boxes(rng, 8, (0.2, 0.9))).float()
    assert (boxes[:, 2] <= 1 + 1e-6).all() and (boxes[:, 3] <= 1 + 1e-6).all()
    assert set(boxes[:, 4].tolist()) == {0.0, 1.0}
    a, b = torch.rand(8, 5, 7), torch.rand(8, 5, 7)
    x, y = sit.crop_to_frame(boxes, a, b)
    a2, b2 = sit.frame_to_crop(boxes, x, y)
    torch.testing.assert_close(a2, a)
    torch.testing.assert_close(b2, b)
    # a frame whose value is its own x coordinate: each crop pixel reads the x its box maps it to
    h, w = 20, 40
    frame = ((torch.arange(w) + 0.5) / w).expand(8, 1, h, w).contiguous()
    out = sit.crop(frame, boxes, (10, 14))
    ca, cb = sit._centres(10, 14, 8)
    want, _ = sit.crop_to_frame(boxes, ca, cb)
    inner = (want > 0.5 / w) & (want < 1 - 0.5 / w)  # away from the border clamp
    torch.testing.assert_close(out[:, 0][inner], want[inner].float(), atol=1e-5, rtol=0)


def test_ssl_recipe_never_reads_a_label_and_resumes_exactly(small_dataroot, tmp_path, monkeypatch):
    import PIL.Image

    synth_cfg, _ = small_dataroot
    root = _frames_only_copy(synth_cfg.out, tmp_path / "frames_only")
    assert not (Path(root) / "lidarseg").exists() and not (Path(root) / "camseg").exists()
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))

    straight = sit.RecipeConfig(recipe="ssl", dataroot=root, out=str(tmp_path / "a" / "ssl.safetensors"), **TINY)
    summary = sit.train(straight, progress=False)
    assert opened and all(p.endswith(".jpg") and "/samples/CAM_" in p for p in opened)
    losses = [row["loss"] for row in summary["curve"]]
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert all(np.isfinite(row[k]) for row in summary["curve"] for k in ("cls", "mim", "dense"))

    # the same run in two sittings writes the same bytes
    resumed = sit.RecipeConfig(recipe="ssl", dataroot=root, out=str(tmp_path / "b" / "ssl.safetensors"), **TINY)
    first = sit.train(resumed, progress=False, until=2)
    assert first["weights"] is None and Path(sit.checkpoint_path(resumed)).exists()
    second = sit.train(resumed, progress=False)
    assert second["sha256"] == summary["sha256"] == file_sha256(straight.out)
    # a changed setting is refused, naming it
    changed = sit.RecipeConfig(recipe="ssl", dataroot=root, out=resumed.out, **{**TINY, "lr": 1e-3})
    with pytest.raises(ValueError, match="lr"):
        sit.train(changed, progress=False)


def test_semantic_recipe_needs_labels_and_says_where(small_dataroot, tmp_path):
    synth_cfg, _ = small_dataroot  # written without --camera-labels
    cfg = sit.RecipeConfig(recipe="semantic", dataroot=synth_cfg.out, out=str(tmp_path / "s.safetensors"), **TINY)
    with pytest.raises(FileNotFoundError, match="--camera-labels"):
        sit.train(cfg, progress=False)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["ssl", "semantic"])
def test_weights_load_in_extract_and_the_store_names_them(recipe, labelled_world, small_dataroot, tmp_path):
    """Tiny recipe -> safetensors -> ``cdpipe extract --teacher-weights`` -> store attributes and summary."""
    cfg = sit.RecipeConfig(recipe=recipe, dataroot=labelled_world, out=str(tmp_path / f"{recipe}.safetensors"),
                           **TINY)
    summary = sit.train(cfg, progress=False)
    assert np.isfinite([row["loss"] for row in summary["curve"]]).all()
    teacher = FrozenTeacher(TeacherConfig(weights=cfg.out, image_size=(112, 224)))
    assert teacher.feature_dim == TINY["embed_dim"] and len(teacher.model.blocks) == TINY["depth"]

    synth_cfg, _ = small_dataroot
    store = str(tmp_path / "store.zarr")
    res = CliRunner().invoke(cdpipe, ["extract", "--dataroot", synth_cfg.out, "--out", store,
                                      "--teacher", sit.TIMM_NAME, "--teacher-weights", cfg.out,
                                      "--teacher-size", "224x112", "--workers", "0", "--tasks-per-worker", "1",
                                      "--torch-threads", "1"])
    assert res.exit_code == 0, res.output
    import zarr

    attrs = dict(zarr.open_group(store, mode="r").attrs)
    t = attrs["teacher"]
    assert t["weights"] == file_sha256(cfg.out) and attrs["feature_dim"] == TINY["embed_dim"]
    assert t["architecture"] == {"depth": 2, "embed_dim": 48, "num_heads": 2}
    assert t["stand_in"]["recipe"] == recipe and t["stand_in"]["labels_used"] == (recipe == "semantic")
    assert t["stand_in"]["world"]["seed"] == 10_001
    out = CliRunner().invoke(cdpipe, ["store", store]).output
    assert "STAND-IN TEACHER" in out and file_sha256(cfg.out) in out
    assert ("WITH per-pixel labels" in out) == (recipe == "semantic")
    json.dumps(t)  # the record stays plain JSON


def test_extract_refuses_the_world_a_stand_in_trained_on(labelled_world, tmp_path):
    """A stand-in teacher records its world; extracting that same world is refused before any work."""
    cfg = sit.RecipeConfig(recipe="semantic", dataroot=labelled_world, out=str(tmp_path / "sem.safetensors"),
                           **{**TINY, "steps": 1})
    sit.train(cfg, progress=False)
    store = tmp_path / "store.zarr"
    res = CliRunner().invoke(cdpipe, ["extract", "--dataroot", labelled_world, "--version", "v1.0-mini",
                                      "--out", str(store), "--teacher-weights", cfg.out, "--teacher-size", "224x112"])
    assert res.exit_code != 0 and "seed 10001" in res.output and "another --seed" in res.output
    assert not store.exists()


def test_sinkhorn_targets_are_distributions_that_share_the_prototypes():
    """Sinkhorn-Knopp targets: each row a distribution, each prototype about an equal share of the batch,
    even where every logit row prefers the same prototype (which a softmax would follow into collapse)."""
    import torch

    from tools.stand_in_teacher import sinkhorn

    torch.manual_seed(0)
    logits = torch.randn(512, 16)
    logits[:, 3] += 4.0  # every row leans to prototype 3
    q = sinkhorn(logits / 0.1, iterations=50)
    torch.testing.assert_close(q.sum(1), torch.ones(512), rtol=0, atol=1e-5)
    share = q.sum(0) / 512
    assert share.max() < 1.5 / 16 and share.min() > 0.5 / 16, share
    assert torch.softmax(logits / 0.1, 1).sum(0)[3] / 512 > 0.8  # what a plain softmax would give
    # three iterations (the recipe's) already spread the prototypes far from the collapse
    assert sinkhorn(logits / 0.1).sum(0).max() / 512 < 0.2
