"""The compact frame index: everything the extract workers need, read once from the dataset tables.

The client builds it with the nuScenes devkit; workers get slices of it (file paths, 4x4 transforms,
intrinsics, timestamps, tokens) and never load the tables themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline.geometry import invert_transform, make_transform

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
LIDAR = "LIDAR_TOP"
SPLITS = ("all", "train", "val", "test", "mini_train", "mini_val")


class ExtractError(RuntimeError):
    """Bad input met while indexing or extracting; the message names the file or token at fault."""


@dataclass(frozen=True)
class FrameIndex:
    """Per sweep s (LiDAR keyframe) and camera c; S sweeps, C cameras."""

    dataroot: str
    lidar_path: tuple[str, ...]  # [S] absolute paths of .pcd.bin
    label_path: tuple[str, ...] | None  # [S] lidarseg .bin paths, None without labels
    num_points: np.ndarray  # [S] int64, from the file sizes
    image_path: tuple[tuple[str, ...], ...]  # [S][C]
    cam_from_lidar: np.ndarray  # [S,C,4,4] float64, full chain with both ego poses
    intrinsics: np.ndarray  # [S,C,3,3] float64
    image_hw: np.ndarray  # [S,C,2] int64 (height, width)
    timestamp: np.ndarray  # [S] int64 LiDAR timestamps
    camera_timestamp: np.ndarray  # [S,C] int64
    sample_token: tuple[str, ...]
    lidar_token: tuple[str, ...]
    scene_index: np.ndarray  # [S] int32
    scenes: tuple[dict, ...]  # {name, token, split, first_sweep, num_sweeps}
    cameras: tuple[str, ...] = CAMERAS

    def __len__(self) -> int:
        return len(self.lidar_path)

    def select(self, rows: range | np.ndarray) -> "FrameIndex":
        """The index restricted to sweeps ``rows`` (what one task receives)."""
        rows = np.asarray(rows if not isinstance(rows, range) else np.arange(rows.start, rows.stop))

        def pick(seq):
            return tuple(seq[i] for i in rows)

        return FrameIndex(
            dataroot=self.dataroot, lidar_path=pick(self.lidar_path),
            label_path=pick(self.label_path) if self.label_path is not None else None,
            num_points=self.num_points[rows], image_path=pick(self.image_path),
            cam_from_lidar=self.cam_from_lidar[rows], intrinsics=self.intrinsics[rows],
            image_hw=self.image_hw[rows], timestamp=self.timestamp[rows],
            camera_timestamp=self.camera_timestamp[rows], sample_token=pick(self.sample_token),
            lidar_token=pick(self.lidar_token), scene_index=self.scene_index[rows], scenes=self.scenes,
            cameras=self.cameras)


def _scene_splits(version: str) -> dict[str, str]:
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    names = ("mini_train", "mini_val") if "mini" in version else ("train", "val", "test")
    return {scene: s for s in names for scene in splits[s]}


def build_nuscenes_index(dataroot: str, version: str, split: str = "all") -> FrameIndex:
    """Index every LiDAR keyframe of the scenes in ``split`` (``all``: every scene of the version)."""
    from pipeline.dataroot import load_nuscenes

    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: choose one of {SPLITS}")
    nusc = load_nuscenes(dataroot, version)
    split_of = _scene_splits(version)
    has_labels = bool(getattr(nusc, "lidarseg", None))

    def transform(record) -> np.ndarray:
        return make_transform(np.asarray(record["rotation"]), np.asarray(record["translation"]))

    rows: dict[str, list] = {k: [] for k in ("lidar", "label", "n", "img", "cfl", "k", "hw", "ts", "cts", "sample",
                                             "lidar_tok", "scene")}
    scenes = []
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        scene_split = split_of.get(scene["name"], "unknown").replace("mini_", "")
        if split != "all" and scene_split != split.replace("mini_", ""):
            continue
        first = len(rows["lidar"])
        tok = scene["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            lidar = nusc.get("sample_data", sample["data"][LIDAR])
            lidar_path = os.path.join(nusc.dataroot, lidar["filename"])
            if not os.path.isfile(lidar_path):
                raise ExtractError(f"LiDAR file missing: {lidar_path} (sample {sample['token']})")
            size = os.path.getsize(lidar_path)
            if size % 20:
                raise ExtractError(f"LiDAR file {lidar_path} is {size} bytes, not a whole number of points "
                                   f"(5 float32 each): truncated, or not a nuScenes .pcd.bin")
            global_from_lidar = (transform(nusc.get("ego_pose", lidar["ego_pose_token"]))
                                 @ transform(nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])))
            img, cfl, ks, hw, cts = [], [], [], [], []
            for ch in CAMERAS:
                if ch not in sample["data"]:
                    raise ExtractError(f"sample {sample['token']} of scene {scene['name']} has no {ch} image")
                cam = nusc.get("sample_data", sample["data"][ch])
                cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
                global_from_cam = transform(nusc.get("ego_pose", cam["ego_pose_token"])) @ transform(cs)
                cfl.append(invert_transform(global_from_cam) @ global_from_lidar)
                ks.append(np.asarray(cs["camera_intrinsic"], dtype=np.float64))
                hw.append((cam["height"], cam["width"]))
                img.append(os.path.join(nusc.dataroot, cam["filename"]))
                if not os.path.isfile(img[-1]):
                    raise ExtractError(f"camera image missing: {img[-1]} ({ch} of sample {sample['token']})")
                cts.append(cam["timestamp"])
            rows["lidar"].append(lidar_path)
            rows["label"].append(os.path.join(nusc.dataroot, nusc.get("lidarseg", lidar["token"])["filename"])
                                 if has_labels else None)
            rows["n"].append(size // 20)
            rows["img"].append(tuple(img))
            rows["cfl"].append(cfl)
            rows["k"].append(ks)
            rows["hw"].append(hw)
            rows["ts"].append(lidar["timestamp"])
            rows["cts"].append(cts)
            rows["sample"].append(sample["token"])
            rows["lidar_tok"].append(lidar["token"])
            rows["scene"].append(len(scenes))
            tok = sample["next"]
        scenes.append({"name": scene["name"], "token": scene["token"], "split": scene_split,
                       "first_sweep": first, "num_sweeps": len(rows["lidar"]) - first})
    if not rows["lidar"]:
        raise ValueError(f"no keyframes in {dataroot} version {version} split {split}")
    return FrameIndex(
        dataroot=str(dataroot), lidar_path=tuple(rows["lidar"]),
        label_path=tuple(rows["label"]) if has_labels else None, num_points=np.array(rows["n"], dtype=np.int64),
        image_path=tuple(rows["img"]), cam_from_lidar=np.array(rows["cfl"]), intrinsics=np.array(rows["k"]),
        image_hw=np.array(rows["hw"], dtype=np.int64), timestamp=np.array(rows["ts"], dtype=np.int64),
        camera_timestamp=np.array(rows["cts"], dtype=np.int64), sample_token=tuple(rows["sample"]),
        lidar_token=tuple(rows["lidar_tok"]), scene_index=np.array(rows["scene"], dtype=np.int32),
        scenes=tuple(scenes))
