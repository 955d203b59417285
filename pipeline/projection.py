"""LiDAR points -> camera pixels. Pure numpy; the transforms are composed once per sweep and camera.

For nuScenes the chain is lidar -> ego (at LiDAR time) -> global -> ego (at the camera's time) ->
camera, i.e. ``cam_from_lidar = inv(global_from_ego_cam @ ego_from_cam) @ global_from_ego_lidar @
ego_from_lidar`` (``frames.py`` builds it from the tables).
"""

from __future__ import annotations

import numpy as np


def project(points: np.ndarray, cam_from_lidar: np.ndarray, k: np.ndarray, hw: tuple[int, int],
            min_depth: float = 1.0):
    """Project ``points`` [N,3] (LiDAR frame) into one camera.

    Args: ``cam_from_lidar`` [4,4], ``k`` [3,3] intrinsics, ``hw`` = (height, width) of the image.
    Returns ``uv`` [M,2] float64 continuous pixel coordinates (u right, v down; pixel (i, j) spans
    [i, i+1) x [j, j+1)), ``index`` [M] int64 rows of ``points`` kept, ``depth`` [M] camera z (m).
    A point is kept when depth > ``min_depth`` and 0 <= u < W, 0 <= v < H.
    """
    p = np.asarray(points[:, :3], dtype=np.float64) @ cam_from_lidar[:3, :3].T + cam_from_lidar[:3, 3]
    depth = p[:, 2]
    front = np.nonzero(depth > min_depth)[0]
    q = p[front] @ np.asarray(k, dtype=np.float64).T
    uv = q[:, :2] / q[:, 2:3]
    h, w = hw
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return uv[inside], front[inside], depth[front[inside]]


def assign_views(points: np.ndarray, cam_from_lidar: np.ndarray, ks: np.ndarray, hws: np.ndarray,
                 min_depth: float = 1.0):
    """Choose one camera view per point among ``C`` cameras.

    Args: ``points`` [N,3+], ``cam_from_lidar`` [C,4,4], ``ks`` [C,3,3], ``hws`` [C,2] (height, width).
    Returns ``camera`` [N] int8 (-1: seen by none) and ``uv`` [N,2] float64 (-1 where unseen).
    Rule: among the cameras that see a point, take the one where its pixel lies farthest from the image
    border (min(u, W - u, v, H - v)); ties go to the lower camera index.
    """
    n = len(points)
    points = np.asarray(points[:, :3], dtype=np.float64)  # once, not per camera
    camera = np.full(n, -1, dtype=np.int8)
    uv_out = np.full((n, 2), -1.0)
    best_margin = np.full(n, -np.inf)
    for c in range(len(ks)):
        uv, idx, _ = project(points, cam_from_lidar[c], ks[c], tuple(hws[c]), min_depth)
        h, w = hws[c]
        margin = np.minimum.reduce([uv[:, 0], w - uv[:, 0], uv[:, 1], h - uv[:, 1]])
        better = margin > best_margin[idx]
        sel = idx[better]
        camera[sel] = c
        uv_out[sel] = uv[better]
        best_margin[sel] = margin[better]
    return camera, uv_out
