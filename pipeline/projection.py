"""LiDAR points -> camera pixels -> teacher features. The projection is numpy, all cameras of a sweep in
one matrix product; a point's feature is sampled from its camera's patch map (a torch tensor, as the
teacher gives it) by the store's rule (``sample_features``, through ``bilinear_cells`` and
``sample_cells``, which ``store.read_sweep`` also applies to a patch-layout store's maps).

For nuScenes the chain is lidar -> ego (at LiDAR time) -> global -> ego (at the camera's time) ->
camera, i.e. ``cam_from_lidar = inv(global_from_ego_cam @ ego_from_cam) @ global_from_ego_lidar @
ego_from_lidar`` (``frames.py`` builds it from the tables). Each camera's chain and intrinsics are
folded into one 4x4 matrix whose rows give (u w, v w, w, depth) from homogeneous LiDAR points, so a
sweep's points meet all cameras in one product instead of two per camera.

Light module (numpy; torch only where ``sample_cells`` finds it installed): the trainer reaches it
through ``store.py``.
"""

from __future__ import annotations

import numpy as np


def project_all(points: np.ndarray, cam_from_lidar: np.ndarray, ks: np.ndarray, hws: np.ndarray,
                min_depth: float = 1.0):
    """Project ``points`` [N,3+] (LiDAR frame) into ``C`` cameras at once.

    Args: ``cam_from_lidar`` [C,4,4], ``ks`` [C,3,3] intrinsics, ``hws`` [C,2] (height, width) of the images.
    Returns ``u``, ``v`` [C,N] float64 continuous pixel coordinates (u right, v down; pixel (i, j) spans
    [i, i+1) x [j, j+1); meaningless where not seen), ``seen`` [C,N] bool and ``depth`` [C,N] camera z (m).
    A camera sees a point when depth > ``min_depth`` and 0 <= u < W, 0 <= v < H.
    """
    n, c_ = len(points), len(ks)
    rows = np.empty((c_, 4, 4))
    t = np.asarray(cam_from_lidar, dtype=np.float64)[:, :3]
    rows[:, :3] = np.asarray(ks, dtype=np.float64) @ t  # (u w, v w, w) = K [R | t] p
    rows[:, 3] = t[:, 2]  # depth: camera z
    ph = np.empty((4, n))
    ph[:3] = points[:, :3].T
    ph[3] = 1.0
    q = (rows.reshape(4 * c_, 4) @ ph).reshape(c_, 4, n)
    depth = q[:, 3]
    with np.errstate(divide="ignore", invalid="ignore"):  # points on a camera's plane: never seen
        u = q[:, 0] / q[:, 2]
        v = q[:, 1] / q[:, 2]
    hw = np.asarray(hws, dtype=np.float64)
    seen = (depth > min_depth) & (u >= 0) & (u < hw[:, 1:]) & (v >= 0) & (v < hw[:, :1])
    return u, v, seen, depth


def project(points: np.ndarray, cam_from_lidar: np.ndarray, k: np.ndarray, hw: tuple[int, int],
            min_depth: float = 1.0):
    """Project ``points`` [N,3+] (LiDAR frame) into one camera (``project_all`` with C = 1).

    Args: ``cam_from_lidar`` [4,4], ``k`` [3,3] intrinsics, ``hw`` = (height, width) of the image.
    Returns ``uv`` [M,2] float64 continuous pixel coordinates, ``index`` [M] int64 rows of ``points``
    kept and ``depth`` [M] camera z (m), for the points the camera sees.
    """
    u, v, seen, depth = project_all(points, np.asarray(cam_from_lidar)[None], np.asarray(k)[None],
                                    np.asarray(hw)[None], min_depth)
    index = np.nonzero(seen[0])[0]
    return np.stack([u[0, index], v[0, index]], 1), index, depth[0, index]


def assign_views(points: np.ndarray, cam_from_lidar: np.ndarray, ks: np.ndarray, hws: np.ndarray,
                 min_depth: float = 1.0):
    """Choose one camera view per point among ``C`` cameras.

    Args: ``points`` [N,3+], ``cam_from_lidar`` [C,4,4], ``ks`` [C,3,3], ``hws`` [C,2] (height, width).
    Returns ``camera`` [N] int8 (-1: seen by none) and ``uv`` [N,2] float64 (-1 where unseen).
    Rule: among the cameras that see a point, take the one where its pixel lies farthest from the image
    border (min(u, W - u, v, H - v)); ties go to the lower camera index.
    """
    if len(ks) == 0:
        return np.full(len(points), -1, np.int8), np.full((len(points), 2), -1.0)
    u, v, seen, _ = project_all(points, cam_from_lidar, ks, hws, min_depth)
    hw = np.asarray(hws, dtype=np.float64)
    margin = np.minimum(np.minimum(u, hw[:, 1:] - u), np.minimum(v, hw[:, :1] - v))
    margin[~seen] = -np.inf
    camera = np.where(seen[0], 0, -1).astype(np.int8)
    best = margin[0].copy()
    for c in range(1, len(margin)):  # strictly larger: ties keep the lower index
        better = margin[c] > best
        camera[better] = c
        np.maximum(best, margin[c], out=best)
    hit = np.nonzero(camera >= 0)[0]
    uv = np.full((len(camera), 2), -1.0)
    uv[hit, 0] = u[camera[hit], hit]
    uv[hit, 1] = v[camera[hit], hit]
    return camera, uv


def sample_features(fmaps, camera: np.ndarray, uv: np.ndarray, image_hw: np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear sample of the patch maps ``fmaps`` [C,D,h,w] (one per camera) at each point's pixel, by the
    store's rule (``bilinear_cells``, which states it): ``camera`` [N] is the camera that
    sees each point (-1: none), ``uv`` [N,2] its continuous pixel in that camera's original image,
    ``image_hw`` [C,2] the original (H0, W0) of each camera. Computed in float32 and written into ``out``
    (float16 [N,D] allocated when None; its dtype otherwise) once; points no camera sees get zeros."""
    c_, d, h, w = fmaps.shape
    idx, wts = bilinear_cells(camera, uv, image_hw, h, w)
    cells = fmaps.detach().float().cpu().permute(0, 2, 3, 1).reshape(c_ * h * w, d).numpy()
    return sample_cells(cells, idx, wts, out)


def bilinear_cells(camera: np.ndarray, uv: np.ndarray, image_hw: np.ndarray, h: int, w: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The four patch cells and bilinear weights of each point's feature: ``idx`` [N,4] int64 into the
    cameras' maps stacked as [C h w] cells (cell (c, i, j) is row (c h + i) w + j), ``wts`` [N,4] float32.

    ``camera`` [N] is the camera that sees each point (-1: none), ``uv`` [N,2] its continuous pixel in
    that camera's original image, ``image_hw`` [C,2] the original (H0, W0) of each camera, (h, w) the
    patch grid. Cell (i, j) is centred at image pixel ((j + 0.5) W0 / w, (i + 0.5) H0 / h): this is
    ``grid_sample`` with ``align_corners=False`` and ``padding_mode="border"``, equal to upsampling the
    map to the image with ``interpolate(bilinear, align_corners=False)`` and reading it at (u, v). Points
    beyond the outer cell centres take the border value. A point no camera sees reads row C h w (one
    past the cells: a zero row that ``sample_cells`` appends) with weight 0.
    """
    n_cells = len(image_hw) * h * w
    seen = camera >= 0
    cam = np.where(seen, camera, 0).astype(np.int64)
    hw0 = np.asarray(image_hw, dtype=np.float64)[cam].reshape(-1, 2)
    # continuous map coordinates (cell centres at integers), clamped to the outer centres (border)
    x = np.clip(uv[:, 0] * (w / np.maximum(hw0[:, 1], 1)) - 0.5, 0, w - 1)
    y = np.clip(uv[:, 1] * (h / np.maximum(hw0[:, 0], 1)) - 0.5, 0, h - 1)
    x0 = np.minimum(np.floor(x), max(w - 2, 0))
    y0 = np.minimum(np.floor(y), max(h - 2, 0))
    fx, fy = x - x0, y - y0
    dx, dy = int(w > 1), w * int(h > 1)  # a one-cell-wide map has no right / lower neighbour
    base = cam * (h * w) + y0.astype(np.int64) * w + x0.astype(np.int64)
    idx = np.stack([base, base + dx, base + dy, base + dx + dy], 1)
    idx[~seen] = n_cells
    wts = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1).astype(np.float32)
    wts[~seen] = 0
    return idx, wts


def sample_cells(cells: np.ndarray, idx: np.ndarray, wts: np.ndarray, out: np.ndarray | None = None,
                 block: int = 512) -> np.ndarray:
    """``out[n] = sum_k wts[n, k] cells[idx[n, k]]`` [N, D], computed in float32 and rounded once to
    ``out``'s dtype (float16 when allocated here); ``cells`` [M, D] any float dtype, ``idx`` may name row M
    (a zero row). With torch installed: one ``embedding_bag`` per ``block`` points (its float32
    intermediate stays in cache; 4-5x numpy's speed); without it, the same sum in numpy."""
    d = cells.shape[1]
    if out is None:
        out = np.empty((len(idx), d), np.float16)
    seen = idx[:, 0] < len(cells)  # points no camera sees (a quarter, typically) get their zero directly
    if not seen.all():
        out[~seen] = 0
        if seen.any():
            out[seen] = sample_cells(cells, idx[seen], wts[seen], np.empty((int(seen.sum()), d), out.dtype), block)
        return out
    table = np.empty((len(cells) + 1, d), np.float32)
    table[:-1], table[-1] = cells, 0
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None:
        for s in range(0, len(idx), block):
            e = min(s + block, len(idx))
            acc = table[idx[s:e, 0]] * wts[s:e, :1]
            for k in range(1, 4):
                acc += table[idx[s:e, k]] * wts[s:e, k:k + 1]
            out[s:e] = acc
        return out
    table_t, idx_t, wts_t, dst = (torch.from_numpy(table), torch.from_numpy(idx), torch.from_numpy(wts),
                                  torch.from_numpy(out))
    for s in range(0, len(idx), block):
        e = min(s + block, len(idx))
        dst[s:e].copy_(torch.nn.functional.embedding_bag(idx_t[s:e], table_t, per_sample_weights=wts_t[s:e],
                                                         mode="sum"))
    return out

