"""The annotated 3D boxes of a LiDAR keyframe, in the LiDAR frame of its sweep: what ``cdpipe extract``
(through the frame index, ``frames.py``) and ``cdpipe migrate`` store in the box arrays.

Read from the dataset's tables with the nuScenes devkit: a box is a ``sample_annotation`` of the sweep's
sample whose category the devkit's ``category_to_detection_name`` maps to one of the 10 detection classes
(``pipeline.classes.DETECTION_CLASSES``; boxes of other categories are not stored), its velocity the
devkit's ``box_velocity`` (from the neighbouring annotations of its instance; NaN where it cannot be
computed). The global pose of each annotation is brought into the LiDAR frame with the inverse of the
sweep's ``global_from_lidar`` (the ego pose at the LiDAR timestamp times the LiDAR's calibration), the
transform the store keeps beside the boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.classes import DETECTION_CLASSES
from pipeline.errors import ExtractError
from pipeline.geometry import invert_transform, quat_to_matrix, yaw_of


@dataclass(frozen=True)
class SweepBoxes:
    """The b boxes of one sweep, in its LiDAR frame, in the order of the sample's annotations."""

    centre: np.ndarray  # [b,3] float64, m
    size: np.ndarray  # [b,3] float64, width, length, height (m)
    yaw: np.ndarray  # [b] float64, rad (geometry.yaw_of)
    velocity: np.ndarray  # [b,2] float64, m/s; NaN where the devkit cannot compute it
    detection_class: np.ndarray  # [b] int64, index into DETECTION_CLASSES
    num_lidar_pts: np.ndarray  # [b] int64
    token: tuple[str, ...]  # [b] sample_annotation tokens

    def __len__(self) -> int:
        return len(self.token)

    @classmethod
    def empty(cls) -> SweepBoxes:
        """No box (a sample without annotations, or a sweep that failed)."""
        return cls(centre=np.zeros((0, 3)), size=np.zeros((0, 3)), yaw=np.zeros(0), velocity=np.zeros((0, 2)),
                   detection_class=np.zeros(0, np.int64), num_lidar_pts=np.zeros(0, np.int64), token=())

    def arrays(self) -> dict[str, np.ndarray]:
        """The boxes as the store's per-box arrays hold their real rows, by array name."""
        return {"box_centre": self.centre, "box_size": self.size, "box_yaw": self.yaw, "box_velocity": self.velocity,
                "box_class": self.detection_class, "box_num_lidar_pts": self.num_lidar_pts,
                "box_token": np.array(self.token, dtype=object)}


def annotation_problem(record: dict) -> str | None:
    """Why a ``sample_annotation`` record cannot be stored as a box (a non-finite or non-unit pose, a size that
    is not three positive numbers, a point count that is not a whole number from 0), or None."""
    from pipeline.frames import pose_problem

    problem = pose_problem(record)
    if problem:
        return problem
    try:
        size = np.asarray(record.get("size", ()), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return f"size {record.get('size')!r} is not numbers"
    if size.shape != (3,) or not np.isfinite(size).all() or (size <= 0).any():
        return f"size {size.tolist()} is not three positive finite numbers (width, length, height)"
    pts = record.get("num_lidar_pts")
    if not isinstance(pts, int) or isinstance(pts, bool) or pts < 0:
        return f"num_lidar_pts {pts!r} is not a count"
    return None


def sweep_boxes(nusc, sample: dict, global_from_lidar: np.ndarray) -> SweepBoxes:
    """The boxes of ``sample``'s annotations in the LiDAR frame given by ``global_from_lidar`` [4,4]; an
    ``ExtractError`` naming the annotation when one cannot be used. ``nusc``: the devkit's tables (or
    anything with their ``get`` and ``box_velocity``)."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    lidar_from_global = invert_transform(global_from_lidar)
    rotation, shift = lidar_from_global[:3, :3], lidar_from_global[:3, 3]
    rows = []
    for token in sample["anns"]:
        record = nusc.get("sample_annotation", token)
        name = category_to_detection_name(record["category_name"])
        if name is None:
            continue
        problem = annotation_problem(record)
        if problem:
            raise ExtractError(f"sample_annotation {token} of sample {sample['token']}: {problem}")
        centre = rotation @ np.asarray(record["translation"], np.float64) + shift
        yaw = yaw_of(rotation @ quat_to_matrix(np.asarray(record["rotation"], np.float64)))
        velocity = rotation @ np.asarray(nusc.box_velocity(token), np.float64)
        rows.append((centre, record["size"], yaw, velocity[:2], DETECTION_CLASSES.index(name),
                     int(record["num_lidar_pts"]), token))
    if not rows:
        return SweepBoxes.empty()
    centre, size, yaw, velocity, cls, pts, tokens = zip(*rows)
    return SweepBoxes(centre=np.array(centre), size=np.array(size, np.float64), yaw=np.array(yaw),
                      velocity=np.array(velocity), detection_class=np.array(cls, np.int64),
                      num_lidar_pts=np.array(pts, np.int64), token=tuple(tokens))
