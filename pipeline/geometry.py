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


def yaw_of(rotation: np.ndarray) -> float:
    """Heading of a rotation [3,3]: the angle of its x axis, projected on the x-y plane, from x towards y
    (radians in (-pi, pi]; the devkit's ``quaternion_yaw``)."""
    return float(np.arctan2(rotation[1, 0], rotation[0, 0]))


def boxes_to_frame(a_from_b: np.ndarray, centre: np.ndarray, yaw: np.ndarray,
                   velocity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes given in frame b (``centre`` [n,3], ``yaw`` [n], ``velocity`` [n,2]) in frame a, by the transform
    ``a_from_b`` [4,4]: centres transformed, each heading (a unit vector in b's x-y plane) rotated and taken
    as the yaw of its projection on a's x-y plane, velocities (vx, vy, 0) rotated and projected likewise.
    Returns (centre [n,3], yaw [n], velocity [n,2]) in float64. Between a LiDAR frame and the global frame
    (``global_from_lidar`` of a store) the headings stay exact to the square of the sensor's tilt."""
    t = np.asarray(a_from_b, np.float64)
    centre = np.asarray(centre, np.float64).reshape(-1, 3)
    yaw = np.asarray(yaw, np.float64).reshape(-1)
    heading = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], axis=1) @ t[:3, :3].T
    v = np.asarray(velocity, np.float64).reshape(-1, 2)
    v = np.column_stack([v, np.zeros(len(v))]) @ t[:3, :3].T
    return centre @ t[:3, :3].T + t[:3, 3], np.arctan2(heading[:, 1], heading[:, 0]), v[:, :2]


def yaw_quaternion(yaw: np.ndarray) -> np.ndarray:
    """Rotations by ``yaw`` [n] radians about +z as unit quaternions (w, x, y, z) [n,4]."""
    yaw = np.asarray(yaw, np.float64).reshape(-1)
    zeros = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), zeros, zeros, np.sin(yaw / 2)], axis=1)


def box_corners_xy(centre: np.ndarray, size: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """The four corners [n,4,2] of boxes seen from above: ``centre`` [n,>=2], ``size`` [n,>=2] as nuScenes'
    (width, length, ...), the length along the heading ``yaw`` [n]; front-left, front-right, back-right,
    back-left."""
    centre, size = np.asarray(centre, np.float64), np.asarray(size, np.float64)
    yaw = np.asarray(yaw, np.float64).reshape(-1)
    half_l, half_w = size[:, 1:2] / 2, size[:, 0:1] / 2
    along = np.stack([np.cos(yaw), np.sin(yaw)], axis=1)
    across = np.stack([-np.sin(yaw), np.cos(yaw)], axis=1)
    signs = np.array([(1, 1), (1, -1), (-1, -1), (-1, 1)], np.float64)  # (along, across) per corner
    return (centre[:, None, :2] + signs[None, :, :1] * (half_l * along)[:, None]
            + signs[None, :, 1:] * (half_w * across)[:, None])
