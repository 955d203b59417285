"""The frozen teacher: frozen by construction, weights from a local file through timm, features and sampling."""

from __future__ import annotations

import os
import sys
from unittest import mock

import numpy as np
import pytest
import timm
import torch

from pipeline.projection import bilinear_cells, sample_cells, sample_features
from pipeline.teacher import FrozenTeacher, TeacherConfig

SIZE = (56, 112)


def _images(n=2, hw=(90, 160), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def _timm_map(model, x):
    """The last block's patch map straight from timm (the in-memory reference)."""
    with torch.inference_mode():
        return model.eval().forward_intermediates(x, indices=1, norm=False, output_fmt="NCHW",
                                                  intermediates_only=True)[-1]


def test_frozen_by_construction():
    t = FrozenTeacher(TeacherConfig(random=True, image_size=SIZE))
    assert not t.training and not any(p.requires_grad for p in t.parameters())
    with pytest.raises(RuntimeError, match="frozen"):
        t.train()
    t.eval()  # allowed: it is already in eval mode
    out = t.features(_images())
    assert out.shape == (2, 384, SIZE[0] // 14, SIZE[1] // 14) and not out.requires_grad


def test_refuses_without_weights_and_names_the_way_out():
    with pytest.raises(ValueError, match="--random-teacher"):
        TeacherConfig()
    with pytest.raises(ValueError, match="not found"):
        TeacherConfig(weights="/nonexistent/dinov2.pth")


def test_random_teacher_blocks_count():
    """init_values=1.0: the blocks change the features (timm's 1e-5 LayerScale would make them a no-op)."""
    t = FrozenTeacher(TeacherConfig(random=True, image_size=SIZE))
    x = t.preprocess(_images())
    m = t.model
    with torch.inference_mode():
        tokens = m._pos_embed(m.patch_embed(x))
        after = m.blocks(m.norm_pre(tokens))
    assert (after - tokens).abs().mean() > 0.1 * tokens.abs().mean()
    # the default layer is the last block before the final norm, prefix tokens dropped
    ref = after[:, m.num_prefix_tokens:].reshape(2, SIZE[0] // 14, SIZE[1] // 14, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(t.forward(x), ref)
    normed = FrozenTeacher(TeacherConfig(random=True, image_size=SIZE, layer="last_norm"))
    ref_n = m.norm(after)[:, m.num_prefix_tokens:].reshape(2, SIZE[0] // 14, SIZE[1] // 14, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(normed.forward(x), ref_n)


def test_weights_from_safetensors_equal_in_memory(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(3)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=SIZE, init_values=0.5)
    path = tmp_path / "dinov2_s14.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    t = FrozenTeacher(TeacherConfig(weights=str(path), image_size=SIZE))
    x = t.preprocess(_images())
    assert torch.equal(t.forward(x), _timm_map(model, x))
    assert len(t.describe()["weights"]) == 64  # sha256 of the file


def test_meta_original_checkpoint_loads(tmp_path):
    """Meta's DINOv2 .pth names (mask_token, 518-pixel position grid) load through timm's filter."""
    torch.manual_seed(4)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=SIZE, init_values=0.5)
    state = dict(model.state_dict())
    state["mask_token"] = torch.zeros(1, 384)  # present in Meta's checkpoints, not in timm's
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(state, path)
    t = FrozenTeacher(TeacherConfig(weights=str(path), image_size=SIZE))
    x = t.preprocess(_images())
    assert torch.equal(t.forward(x), _timm_map(model, x))
    # a checkpoint at Meta's 518-pixel grid is resampled to our input size
    big = timm.create_model("vit_small_patch14_dinov2", pretrained=False, init_values=0.5)
    state = dict(big.state_dict())
    state["mask_token"] = torch.zeros(1, 384)
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    torch.save(state, tmp_path / "meta518.pth")
    t518 = FrozenTeacher(TeacherConfig(weights=str(tmp_path / "meta518.pth"), image_size=SIZE))
    assert t518.model.pos_embed.shape == (1, 1 + (SIZE[0] // 14) * (SIZE[1] // 14), 384)
    assert torch.isfinite(t518.forward(x)).all()


def test_sample_features_equals_upsampled_map_and_grid_sample():
    torch.manual_seed(0)
    fmaps = torch.randn(3, 8, 4, 8) * 10  # [C, D, h, w]
    hws = np.array([[90, 160], [45, 80], [90, 160]])
    rng = np.random.default_rng(0)
    n = 1200
    camera = rng.integers(-1, 3, n).astype(np.int8)
    cam = np.maximum(camera, 0)
    # pixel centres, plus the image edges (beyond the outer patch centres: border values)
    ij = np.c_[rng.integers(0, hws[cam, 1]), rng.integers(0, hws[cam, 0])]
    uv = ij + 0.5
    uv[:50] = np.c_[np.zeros(50), hws[cam[:50], 0] - 1e-6]
    got = sample_features(fmaps, camera, uv, hws)
    assert got.dtype == np.float16 and got.shape == (n, 8)
    assert not got[camera < 0].any() and not np.signbit(got[camera < 0]).any()  # exact +0
    for c in range(3):
        sel = np.nonzero(camera == c)[0]
        h0, w0 = hws[c]
        up = torch.nn.functional.interpolate(fmaps[c][None], size=(h0, w0), mode="bilinear", align_corners=False)[0]
        pix = sel[sel >= 50]  # whole pixel centres: the upsampled image holds exactly these values
        ref_up = up[:, ij[pix, 1], ij[pix, 0]].T.half().float()
        torch.testing.assert_close(torch.from_numpy(got[pix]).float(), ref_up, atol=1e-2, rtol=1e-3)
        grid = torch.tensor(np.c_[2 * uv[sel, 0] / w0 - 1, 2 * uv[sel, 1] / h0 - 1], dtype=torch.float32)
        ref = torch.nn.functional.grid_sample(fmaps[c][None], grid[None, None], mode="bilinear",
                                              padding_mode="border", align_corners=False)[0, :, 0].T
        # float16 storage: at most one rounding step apart (summation order differs from grid_sample)
        np.testing.assert_allclose(got[sel].astype(np.float32), ref.numpy(), rtol=2 ** -10, atol=1e-6)
    # the block size only changes how the work is cut, not the result; without torch (a plain reader of
    # a patch-layout store) numpy computes the same sum, to float16 rounding
    idx, wts = bilinear_cells(camera, uv, hws, 4, 8)
    cells = fmaps.permute(0, 2, 3, 1).reshape(-1, 8).numpy()
    np.testing.assert_array_equal(sample_cells(cells, idx, wts, block=7), got)
    with mock.patch.dict(sys.modules, {"torch": None}):  # import torch raises ImportError
        no_torch = sample_cells(cells, idx, wts, block=7)
    np.testing.assert_allclose(no_torch.astype(np.float32), got.astype(np.float32), rtol=2 ** -10, atol=1e-6)


@pytest.mark.parametrize("size", [(140, 448), (224, 224), (112, 224)])
def test_stand_in_teacher_at_other_sizes_than_its_training_size(size):
    """A stand-in teacher's 16 x 32 position grid is not square, which timm's loader cannot resample: it is
    created at its training size (224 x 448) and moved to the asked size; the patch map has that size's grid,
    the record says how, and at the training size nothing moves."""
    weights = os.path.join(os.path.dirname(__file__), "..", "tools", "teachers", "semantic.safetensors")
    teacher = FrozenTeacher(TeacherConfig(weights=weights, image_size=size))
    images = [np.random.default_rng(0).integers(0, 255, (90, 160, 3), dtype=np.uint8)]
    with torch.inference_mode():
        f = teacher.features(images)
    assert tuple(f.shape) == (1, 192, size[0] // 14, size[1] // 14) and torch.isfinite(f).all()
    made = teacher.describe()["create_model"]
    assert made["kwargs"]["img_size"] == [224, 448] and made["set_input_size"] == list(size)
    same = FrozenTeacher(TeacherConfig(weights=weights, image_size=(224, 448))).describe()["create_model"]
    assert same["kwargs"]["img_size"] == [224, 448] and same["set_input_size"] is None
