"""Sparse 3D convolution in plain PyTorch: the one module that owns the sparse backend.

A ``SparseTensor`` holds features ``F`` [N,C] at integer coordinates ``coords`` [N,4] = (batch, x, y,
z) on a grid whose cell is ``stride`` input voxels. A convolution with kernel size k, stride s and
weights W [k^3, C_in, C_out] computes, over the kernel offsets d (each axis in ``offsets(k)``),

    submanifold (s = 1):  out[c] = sum_d W_d F[c + d]                 at the input's own sites
    strided (s > 1):      out[o] = sum_d W_d F[s o + d]               at sites o = floor(c / s)
    transposed (s > 1):   out[c] = sum_{o, d: s o + d = c} W_d F[o]   at given finer sites c

which is ``conv3d(padding=p)`` / ``conv_transpose3d(padding=p)`` of the dense grid read at those sites,
with p = (k - 1) // 2 for odd k and 0 for even k (``tests/test_sparse.py`` checks forward and
gradients). Neighbour maps are built by sorting packed coordinate keys and ``searchsorted`` (no Python
loop over points); the convolution is gather -> matmul -> ``index_add_`` per kernel offset, so autograd
gives the backward pass. Maps are cached on the tensor and reused by every layer at the same level.

torchsparse, when importable, runs the submanifold convolutions (the bulk of a MinkUNet's work) in its
kernels; strided and transposed ones stay here, so the coarse sites and their maps keep one definition.
Its coordinate layout and kernel-offset order differ across releases, so before first use on a device
the adapter calibrates: it runs both backends on a random sparse tensor, tries each layout (batch column
first or last) and offset order (z or x fastest), and keeps the one that reproduces this module (within 1e-4
in float32); if none does, or torchsparse raises, it warns once and stays with this module. Environment
variable ``CD_SPARSE_BACKEND``: ``auto`` (default), ``builtin`` (never touch torchsparse) or
``torchsparse`` (fail loudly instead of falling back).
"""

from __future__ import annotations

import itertools
import os
import warnings
from dataclasses import dataclass, field

import torch

_BITS = 17  # bits per spatial axis in a packed key: coordinates within [-65536, 65536)
_OFFSET = 1 << (_BITS - 1)


def pack(coords: torch.Tensor) -> torch.Tensor:
    """(batch, x, y, z) int [N,4] -> int64 keys [N], ordered by batch, then x, y, z.

    Coordinates must lie in [-2^16, 2^16 - 8): the margin lets ``offset_key`` shift keys by small
    offsets without carrying into the next field.
    """
    c = coords.long()
    xyz = c[:, 1:] + _OFFSET
    if (xyz < 8).any() or (xyz >= (1 << _BITS) - 8).any():
        raise ValueError(f"voxel coordinates outside [-{_OFFSET - 8}, {_OFFSET - 8}): crop the cloud or use "
                         f"larger voxels")
    return (((c[:, 0] << _BITS | xyz[:, 0]) << _BITS | xyz[:, 1]) << _BITS) | xyz[:, 2]


def offset_key(d: torch.Tensor) -> int:
    """Key difference of a shift by d = (dx, dy, dz): key(c + d) = key(c) + offset_key(d) for |d| < 8."""
    dx, dy, dz = (int(v) for v in d)
    return (dx << (2 * _BITS)) + (dy << _BITS) + dz


def offsets(kernel: int) -> list[int]:
    """Offsets along one axis: centred for odd kernels (3 -> -1, 0, 1), from 0 for even ones (2 -> 0, 1)."""
    pad = (kernel - 1) // 2 if kernel % 2 else 0
    return [i - pad for i in range(kernel)]


def kernel_offsets(kernel: int) -> torch.Tensor:
    """All 3D offsets [k^3, 3], x slowest and z fastest (the order of a dense weight's (kD, kH, kW))."""
    return torch.tensor(list(itertools.product(offsets(kernel), repeat=3)), dtype=torch.long)


def _lookup(sorted_keys: torch.Tensor, order: torch.Tensor, query: torch.Tensor):
    """Rows of the table (as ``order`` maps sorted positions to rows) holding ``query`` keys; -1 if absent."""
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=len(sorted_keys) - 1)
    found = sorted_keys[pos] == query
    return torch.where(found, order[pos], torch.full_like(pos, -1))


@dataclass
class KernelMap:
    """For each kernel offset i: input rows ``inp[i]`` contribute to output rows ``out[i]``."""

    inp: list[torch.Tensor]
    out: list[torch.Tensor]


@dataclass
class SparseTensor:
    feats: torch.Tensor  # [N, C]
    coords: torch.Tensor  # [N, 4] int64 (batch, x, y, z) in units of `stride` input voxels
    stride: int = 1
    cache: dict = field(default_factory=dict, repr=False)  # shared across levels of one forward pass

    def replace(self, feats: torch.Tensor) -> "SparseTensor":
        """Same sites and caches, new features."""
        return SparseTensor(feats, self.coords, self.stride, self.cache)

    def keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Sorted packed keys of the sites and the row of each (cached)."""
        tag = ("keys", self.stride)
        if tag not in self.cache:
            k = pack(self.coords)
            sorted_keys, order = torch.sort(k)
            self.cache[tag] = (sorted_keys, order)
        return self.cache[tag]


def _shifted_lookups(table: SparseTensor, base_keys: torch.Tensor, kernel: int):
    """For each kernel offset d: the rows of ``table`` at the sites ``base + d`` (-1 where absent)."""
    sorted_keys, order = table.keys()
    return [_lookup(sorted_keys, order, base_keys + offset_key(d)) for d in kernel_offsets(kernel)]


def _scaled_keys(coords: torch.Tensor, stride: int) -> torch.Tensor:
    base = coords.clone()
    base[:, 1:] *= stride
    return pack(base)


def submanifold_map(x: SparseTensor, kernel: int) -> KernelMap:
    """Pairs for out[c] += W_d F[c + d] on the sites of ``x``."""
    tag = ("sub", x.stride, kernel)
    if tag not in x.cache:
        sorted_keys, order = x.keys()  # query in sorted order: the output row of query j is order[j]
        found = _shifted_lookups(x, sorted_keys, kernel)
        x.cache[tag] = KernelMap([f[f >= 0] for f in found], [order[f >= 0] for f in found])
    return x.cache[tag]


def downsample_sites(x: SparseTensor, stride: int) -> torch.Tensor:
    """Coarse sites [M,4]: the distinct floor(c / stride), sorted by packed key (cached)."""
    tag = ("down", x.stride, stride)
    if tag not in x.cache:
        coarse = x.coords.clone()
        coarse[:, 1:] = torch.div(coarse[:, 1:], stride, rounding_mode="floor")
        keys = torch.unique(pack(coarse))
        x.cache[tag] = coarse[_lookup(*torch.sort(pack(coarse)), keys)]
    return x.cache[tag]


def strided_map(x: SparseTensor, out_coords: torch.Tensor, kernel: int, stride: int) -> KernelMap:
    """Pairs for out[o] += W_d F[s o + d]: input sites found at s o + d for each coarse site o."""
    tag = ("strided", x.stride, kernel, stride)
    if tag not in x.cache:
        rows = torch.arange(len(out_coords), device=out_coords.device)
        found = _shifted_lookups(x, _scaled_keys(out_coords, stride), kernel)
        x.cache[tag] = KernelMap([f[f >= 0] for f in found], [rows[f >= 0] for f in found])
    return x.cache[tag]


def transposed_map(x: SparseTensor, out: SparseTensor, kernel: int, stride: int) -> KernelMap:
    """Pairs for out[s o + d] += W_d F[o]: the fine sites of ``out`` that each coarse site reaches."""
    tag = ("transposed", out.stride, x.stride, kernel, stride)
    if tag not in out.cache:
        rows = torch.arange(len(x.coords), device=x.coords.device)
        found = _shifted_lookups(out, _scaled_keys(x.coords, stride), kernel)
        out.cache[tag] = KernelMap([rows[f >= 0] for f in found], [f[f >= 0] for f in found])
    return out.cache[tag]


def apply_map(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap, n_out: int) -> torch.Tensor:
    """out[kmap.out[i]] += feats[kmap.inp[i]] @ weight[i], for every kernel offset i."""
    out = feats.new_zeros((n_out, weight.shape[2]))
    for w, src, dst in zip(weight, kmap.inp, kmap.out):
        if len(src):
            out.index_add_(0, dst, (feats[src] @ w).to(out.dtype))  # matmul may run in fp16 under autocast
    return out


class SparseConv3d(torch.nn.Module):
    """Sparse 3D convolution: submanifold when stride == 1, strided when stride > 1, transposed with
    ``transposed=True`` (then ``forward(x, like)`` writes onto the sites of ``like``)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, transposed: bool = False,
                 bias: bool = False):
        super().__init__()
        if transposed and stride == 1:
            raise ValueError("a transposed convolution needs stride > 1")
        self.c_in, self.c_out, self.kernel, self.stride, self.transposed = c_in, c_out, kernel, stride, transposed
        self.weight = torch.nn.Parameter(torch.empty(kernel ** 3, c_in, c_out))
        self.bias = torch.nn.Parameter(torch.zeros(c_out)) if bias else None
        bound = 1.0 / (c_in * kernel ** 3) ** 0.5
        torch.nn.init.uniform_(self.weight, -bound, bound)

    def extra_repr(self) -> str:
        kind = "transposed" if self.transposed else ("submanifold" if self.stride == 1 else "strided")
        return f"{self.c_in}, {self.c_out}, kernel={self.kernel}, stride={self.stride}, {kind}"

    def forward(self, x: SparseTensor, like: SparseTensor | None = None) -> SparseTensor:
        if self.transposed:
            if like is None:
                raise ValueError("a transposed convolution needs the finer tensor whose sites it fills")
            kmap = transposed_map(x, like, self.kernel, self.stride)
            out = SparseTensor(apply_map(x.feats, self.weight, kmap, len(like.coords)), like.coords, like.stride,
                               like.cache)
        elif self.stride == 1:
            ts = _torchsparse_for(x.feats, self.kernel)
            if ts is not None:
                out = x.replace(ts.submanifold(x.feats, x.coords, self.weight, self.kernel))
            else:
                out = x.replace(apply_map(x.feats, self.weight, submanifold_map(x, self.kernel), len(x.coords)))
        else:
            sites = downsample_sites(x, self.stride)
            kmap = strided_map(x, sites, self.kernel, self.stride)
            out = SparseTensor(apply_map(x.feats, self.weight, kmap, len(sites)), sites, x.stride * self.stride,
                               x.cache)
        if self.bias is not None:
            out.feats = out.feats + self.bias
        return out


# ---------------------------------------------------------------------------------------------------
# torchsparse, when importable: submanifold convolutions only, after calibration against this module


class TorchsparseSubmanifold:
    """Runs ``out[c] = sum_d W_d F[c + d]`` through ``torchsparse.nn.functional.conv3d`` (stride 1).

    ``batch_first``: torchsparse's coordinate rows are (batch, x, y, z) (2.1) rather than (x, y, z,
    batch) (<= 2.0). ``perm``: our kernel-offset row of each of its rows (its weight = ours[perm])."""

    def __init__(self, module, batch_first: bool, perm: torch.Tensor):
        self.ts, self.batch_first, self.perm = module, batch_first, perm

    def submanifold(self, feats: torch.Tensor, coords: torch.Tensor, weight: torch.Tensor, kernel: int):
        c = coords.int()
        c = c if self.batch_first else torch.cat([c[:, 1:], c[:, :1]], 1)
        x = self.ts.SparseTensor(feats, c.contiguous(), 1)
        w = weight[self.perm.to(weight.device)]
        out = self.ts.nn.functional.conv3d(x, w, kernel, stride=1)
        return out.feats if hasattr(out, "feats") else out.F


def _offset_orders(kernel: int) -> dict[str, torch.Tensor]:
    """Candidate kernel-offset orders, as the row of ``kernel_offsets`` each position takes."""
    ours = kernel_offsets(kernel)  # x slowest, z fastest
    x_fastest = ours[:, [2, 1, 0]]  # enumerate (z, y, x) with x fastest
    index = {tuple(d.tolist()): i for i, d in enumerate(ours)}
    return {"z fastest": torch.arange(len(ours)),
            "x fastest": torch.tensor([index[tuple(d)] for d in x_fastest.tolist()])}


def _calibrate(module, device: torch.device, dtype: torch.dtype, kernel: int) -> TorchsparseSubmanifold | None:
    """The adapter layout that reproduces ``apply_map`` on a random tensor, or None."""
    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.cat([torch.randint(0, 2, (600, 1), generator=g),
                                     torch.randint(-6, 6, (600, 3), generator=g)], 1), dim=0).to(device)
    feats = torch.randn(len(coords), 5, generator=g).to(device, dtype)
    weight = torch.randn(kernel ** 3, 5, 7, generator=g).to(device, dtype)
    x = SparseTensor(feats, coords)
    want = apply_map(feats, weight, submanifold_map(x, kernel), len(coords))
    tol = 1e-4 if dtype in (torch.float32, torch.float64) else 2e-2
    for batch_first in (True, False):
        for perm in _offset_orders(kernel).values():
            adapter = TorchsparseSubmanifold(module, batch_first, perm)
            got = adapter.submanifold(feats, coords, weight, kernel).to(want.dtype)
            if got.shape == want.shape and torch.allclose(got, want, rtol=tol, atol=tol * want.abs().max().item()):
                return adapter
    return None


_ADAPTERS: dict = {}  # (device, dtype, kernel) -> TorchsparseSubmanifold | None


def _torchsparse_for(feats: torch.Tensor, kernel: int) -> TorchsparseSubmanifold | None:
    """The calibrated torchsparse adapter for this device, dtype and kernel size; None: use this module."""
    choice = os.environ.get("CD_SPARSE_BACKEND", "auto")
    if choice not in ("auto", "builtin", "torchsparse"):
        raise ValueError(f"CD_SPARSE_BACKEND={choice!r}: choose auto, builtin or torchsparse")
    if choice == "builtin":
        return None
    tag = (str(feats.device), feats.dtype, kernel)
    if tag not in _ADAPTERS:
        import importlib
        import importlib.util

        adapter, why = None, "it is not installed"
        if importlib.util.find_spec("torchsparse") is not None:
            try:
                # compare exact arithmetic: under the training step's fp16 autocast both would round
                with torch.autocast(feats.device.type, enabled=False), torch.no_grad():
                    adapter = _calibrate(importlib.import_module("torchsparse"), feats.device, feats.dtype, kernel)
                why = "no coordinate layout or kernel order of it reproduces the built-in convolution"
            except Exception as e:  # an API this adapter does not know, or no kernel for this device
                why = f"it failed: {type(e).__name__}: {e}"
        if adapter is None and choice == "torchsparse":
            raise RuntimeError(f"CD_SPARSE_BACKEND=torchsparse, but torchsparse cannot be used on {feats.device} "
                               f"({feats.dtype}, kernel {kernel}): {why}")
        if adapter is None and why != "it is not installed":
            warnings.warn(f"torchsparse is installed but not used on {feats.device} ({feats.dtype}, kernel "
                          f"{kernel}): {why}; using the built-in sparse convolution", stacklevel=3)
        _ADAPTERS[tag] = adapter
    return _ADAPTERS[tag]


def backend_name() -> str:
    """What runs the submanifold convolutions so far in this process: 'builtin', or 'torchsparse' for
    the (device, dtype, kernel) combinations where it calibrated."""
    used = sorted(f"{d} {str(t).replace('torch.', '')} k{k}" for (d, t, k), a in _ADAPTERS.items() if a is not None)
    return "torchsparse (" + ", ".join(used) + "), otherwise builtin" if used else "builtin"
