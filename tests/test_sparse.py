"""Each sparse convolution equals the dense one read at the active sites: forward and gradients."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from trainer.sparse import SparseConv3d, SparseTensor, downsample_sites

GRID = 8  # dense grid side (even, so stride-2 levels line up)
LOW = -4  # coordinates span [LOW, LOW + GRID): negative ones exercise floor division


def _random_sites(batch=2, density=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        for x, y, z in itertools.product(range(GRID), repeat=3):
            if torch.rand(1, generator=g).item() < density:
                rows.append((b, x + LOW, y + LOW, z + LOW))
    return torch.tensor(rows, dtype=torch.long)


def _dense(coords, feats, batch=2, size=GRID, low=LOW):
    grid = torch.zeros(batch, feats.shape[1], size, size, size, dtype=feats.dtype)
    c = coords[:, 1:] - low
    grid[coords[:, 0], :, c[:, 0], c[:, 1], c[:, 2]] = feats
    return grid


def _read(grid, coords, low):
    c = coords[:, 1:] - low
    return grid[coords[:, 0], :, c[:, 0], c[:, 1], c[:, 2]]


def _sparse_weight_from_conv(w):  # conv3d weight [C_out, C_in, k, k, k] -> [k^3, C_in, C_out]
    return w.permute(2, 3, 4, 1, 0).reshape(-1, w.shape[1], w.shape[0])


def _sparse_weight_from_transposed(w):  # conv_transpose3d weight [C_in, C_out, k, k, k]
    return w.permute(2, 3, 4, 0, 1).reshape(-1, w.shape[0], w.shape[1])


def _check(out_s, out_d, feats, weight_s, weight_d):
    torch.testing.assert_close(out_s, out_d, atol=1e-4, rtol=1e-4)
    r = torch.randn_like(out_s)
    gs = torch.autograd.grad((out_s * r).sum(), (feats, weight_s), retain_graph=True)
    gd = torch.autograd.grad((out_d * r).sum(), (feats, weight_d))
    torch.testing.assert_close(gs[0], gd[0], atol=1e-4, rtol=1e-4)
    return gs[1], gd[1]


@pytest.mark.parametrize("kernel", [3, 5])
def test_submanifold_equals_dense(kernel):
    coords = _random_sites()
    feats = torch.randn(len(coords), 3, dtype=torch.float64, requires_grad=True)
    conv = SparseConv3d(3, 4, kernel=kernel).double()
    w_d = conv.weight.detach().reshape(kernel, kernel, kernel, 3, 4).permute(4, 3, 0, 1, 2).clone().requires_grad_()
    out_s = conv(SparseTensor(feats, coords)).feats
    out_d = _read(F.conv3d(_dense(coords, feats), w_d, padding=kernel // 2), coords, LOW)
    gw_s, gw_d = _check(out_s, out_d, feats, conv.weight, w_d)
    torch.testing.assert_close(gw_s, _sparse_weight_from_conv(gw_d), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel", [2, 3])
def test_strided_equals_dense(kernel):
    coords = _random_sites(seed=1)
    feats = torch.randn(len(coords), 3, dtype=torch.float64, requires_grad=True)
    conv = SparseConv3d(3, 5, kernel=kernel, stride=2).double()
    w_d = conv.weight.detach().reshape(kernel, kernel, kernel, 3, 5).permute(4, 3, 0, 1, 2).clone().requires_grad_()
    x = SparseTensor(feats, coords)
    out = conv(x)
    assert out.stride == 2 and len(out.coords) == len(torch.unique(torch.div(coords, torch.tensor([1, 2, 2, 2]),
                                                                             rounding_mode="floor"), dim=0))
    dense = F.conv3d(_dense(coords, feats), w_d, stride=2, padding=(kernel - 1) // 2 if kernel % 2 else 0)
    out_d = _read(dense, out.coords, LOW // 2)
    gw_s, gw_d = _check(out.feats, out_d, feats, conv.weight, w_d)
    torch.testing.assert_close(gw_s, _sparse_weight_from_conv(gw_d), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kernel", [2, 3])
def test_transposed_equals_dense(kernel):
    fine_coords = _random_sites(seed=2)
    fine = SparseTensor(torch.zeros(len(fine_coords), 1, dtype=torch.float64), fine_coords)
    coarse_coords = downsample_sites(fine, 2)
    feats = torch.randn(len(coarse_coords), 4, dtype=torch.float64, requires_grad=True)
    conv = SparseConv3d(4, 3, kernel=kernel, stride=2, transposed=True).double()
    # conv_transpose3d weight [C_in, C_out, k, k, k]
    w_d = conv.weight.detach().reshape(kernel, kernel, kernel, 4, 3).permute(3, 4, 0, 1, 2).clone().requires_grad_()
    out = conv(SparseTensor(feats, coarse_coords, stride=2, cache=fine.cache), like=fine)
    assert torch.equal(out.coords, fine_coords) and out.stride == 1
    pad = (kernel - 1) // 2 if kernel % 2 else 0
    dense = F.conv_transpose3d(_dense(coarse_coords, feats, size=GRID // 2, low=LOW // 2), w_d, stride=2,
                               padding=pad, output_padding=1 if kernel % 2 else 0)
    out_d = _read(dense, fine_coords, LOW)
    gw_s, gw_d = _check(out.feats, out_d, feats, conv.weight, w_d)
    torch.testing.assert_close(gw_s, _sparse_weight_from_transposed(gw_d), atol=1e-4, rtol=1e-4)


def test_coordinates_out_of_range_are_refused():
    coords = torch.tensor([[0, 70000, 0, 0]])
    with pytest.raises(ValueError, match="voxel coordinates"):
        SparseConv3d(1, 1)(SparseTensor(torch.ones(1, 1), coords))


# --- torchsparse adapter: exercised with stand-ins, since torchsparse cannot be installed here -----------


def _fake_torchsparse(broken: bool = False):
    """A module with torchsparse's call shape but another convention: coordinate rows (x, y, z, batch)
    and weight rows in x-fastest offset order. Computed with the built-in backend, so a correctly
    calibrated adapter must give exactly the built-in result; ``broken`` returns zeros."""
    import importlib.machinery
    import types

    from trainer.sparse import apply_map, submanifold_map

    def conv3d(x, weight, kernel_size, stride=1):
        assert stride == 1
        r = range(-(kernel_size // 2), kernel_size // 2 + 1)
        ours = {d: i for i, d in enumerate(itertools.product(r, repeat=3))}  # x slowest
        theirs = [(x_, y, z) for z in r for y in r for x_ in r]  # x fastest
        w = torch.stack([weight[theirs.index(d)] for d in ours])
        coords = torch.cat([x.coords[:, 3:], x.coords[:, :3]], 1).long()
        feats = apply_map(x.feats, w, submanifold_map(SparseTensor(x.feats, coords), kernel_size), len(coords))
        return types.SimpleNamespace(feats=torch.zeros_like(feats) if broken else feats)

    module = types.ModuleType("torchsparse")
    module.__spec__ = importlib.machinery.ModuleSpec("torchsparse", None)
    module.SparseTensor = lambda feats, coords, stride=1: types.SimpleNamespace(feats=feats, coords=coords)
    module.nn = types.SimpleNamespace(functional=types.SimpleNamespace(conv3d=conv3d))
    return module


def _sub_conv_case(kernel):
    coords = _random_sites(density=0.4, seed=3)
    feats = torch.randn(len(coords), 4, generator=torch.Generator().manual_seed(1), requires_grad=True)
    conv = SparseConv3d(4, 6, kernel)
    return conv, SparseTensor(feats, coords), feats


@pytest.mark.parametrize("kernel", [3, 5])
def test_torchsparse_adapter_calibrates_to_builtin(monkeypatch, kernel):
    import sys

    import trainer.sparse as sp

    conv, x, feats = _sub_conv_case(kernel)
    monkeypatch.setenv("CD_SPARSE_BACKEND", "builtin")
    want = conv(x).feats
    want_grads = torch.autograd.grad(want.square().sum(), [feats, conv.weight])
    monkeypatch.setattr(sp, "_ADAPTERS", {})
    monkeypatch.setitem(sys.modules, "torchsparse", _fake_torchsparse())
    monkeypatch.setenv("CD_SPARSE_BACKEND", "auto")
    got = conv(SparseTensor(x.feats, x.coords)).feats
    assert sp._ADAPTERS[("cpu", torch.float32, kernel)] is not None  # calibrated: batch last, x fastest
    assert not sp._ADAPTERS[("cpu", torch.float32, kernel)].batch_first
    assert sp.backend_name().startswith("torchsparse")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(torch.autograd.grad(got.square().sum(), [feats, conv.weight]), want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_torchsparse_adapter_falls_back_or_fails_loudly(monkeypatch):
    import sys

    import trainer.sparse as sp

    conv, x, _ = _sub_conv_case(3)
    monkeypatch.setenv("CD_SPARSE_BACKEND", "builtin")
    want = conv(x).feats
    monkeypatch.setitem(sys.modules, "torchsparse", _fake_torchsparse(broken=True))
    monkeypatch.setattr(sp, "_ADAPTERS", {})
    monkeypatch.setenv("CD_SPARSE_BACKEND", "auto")
    with pytest.warns(UserWarning, match="torchsparse is installed but not used"):
        got = conv(SparseTensor(x.feats, x.coords)).feats
    torch.testing.assert_close(got, want)  # the built-in result, not the stand-in's zeros
    assert sp.backend_name() == "builtin"
    monkeypatch.setattr(sp, "_ADAPTERS", {})
    monkeypatch.setenv("CD_SPARSE_BACKEND", "torchsparse")
    with pytest.raises(RuntimeError, match="CD_SPARSE_BACKEND=torchsparse"):
        conv(SparseTensor(x.feats, x.coords))
