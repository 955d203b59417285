"""Rigid transforms and pinhole cameras, pure numpy.

Conventions (nuScenes'): quaternions are (w, x, y, z); a transform named ``a_from_b`` is a 4x4 matrix
that maps homogeneous points in frame b to frame a (``p_a = a_from_b @ p_b``); camera frames are
x right, y down, z forward; pixel (u, v) = (column, row) with the centre of pixel (i, j) at
(i + 0.5, j + 0.5), so pixel index = floor(u), floor(v).
Light module: the trainer imports it.
"""

from __future__ import annotations

import numpy as np


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> rotation matrix [3,3] (float64)."""
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix [3,3] -> unit quaternion (w, x, y, z) with w >= 0."""
    r = np.asarray(r, dtype=np.float64)
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q = q / np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation by ``yaw`` radians about +z, [3,3]."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def make_transform(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Rotation (quaternion w,x,y,z or matrix [3,3]) and translation [3] -> transform [4,4]."""
    rotation = np.asarray(rotation, dtype=np.float64)
    t = np.eye(4)
    t[:3, :3] = quat_to_matrix(rotation) if rotation.shape == (4,) else rotation
    t[:3, 3] = translation
    return t


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform [4,4]."""
    inv = np.eye(4)
    inv[:3, :3] = t[:3, :3].T
    inv[:3, 3] = -t[:3, :3].T @ t[:3, 3]
    return inv


def intrinsic_matrix(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K [3,3] for an image ``width`` x ``height`` with horizontal field ``hfov_deg``.

    Square pixels, principal point at the image centre (W/2, H/2).
    """
    f = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
