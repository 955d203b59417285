"""The synthetic dataroot is real nuScenes format: the devkit loads it and its own tools work on it."""

from __future__ import annotations

import os

import numpy as np
from nuscenes.nuscenes import NuScenes, NuScenesExplorer
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.splits import create_splits_scenes

from pipeline.classes import FINE_CLASSES
from pipeline.synth import sensors


def test_devkit_loads_tables_and_lidarseg(small_dataroot):
    cfg, summary = small_dataroot
    nusc = NuScenes(version=cfg.version, dataroot=cfg.out, verbose=False)
    assert len(nusc.scene) == 2 and len(nusc.sample) == 6
    assert len(nusc.lidarseg) == 6
    assert nusc.lidarseg_idx2name_mapping == dict(enumerate(FINE_CLASSES))
    # scenes carry official mini split names, so the devkit's splits apply
    splits = create_splits_scenes()
    names = [s["name"] for s in nusc.scene]
    assert names[0] in splits["mini_train"] and names[1] in splits["mini_val"]
    for sample in nusc.sample:
        assert set(sample["data"]) == {"LIDAR_TOP", *(c.channel for c in sensors.CAMERAS)}
    assert len(nusc.sample_annotation) > 0
    ann = nusc.sample_annotation[0]
    assert nusc.get("instance", ann["instance_token"])["category_token"]
    # the map mask of each log is readable through the devkit
    mask = nusc.map[0]["mask"].mask()
    assert mask.dtype == np.uint8 and mask.max() == 255


def test_devkit_reads_points_labels_and_images(small_dataroot):
    cfg, _ = small_dataroot
    nusc = NuScenes(version=cfg.version, dataroot=cfg.out, verbose=False)
    sample = nusc.sample[1]
    lidar_tok = sample["data"]["LIDAR_TOP"]
    path, boxes, _ = nusc.get_sample_data(lidar_tok)
    pc = LidarPointCloud.from_file(path)
    assert pc.points.shape[0] == 4 and 20_000 <= pc.nbr_points() <= 35_000
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
    assert set(np.unique(raw[:, 4]).astype(int)) <= set(range(32))  # ring index
    assert 0 <= raw[:, 3].min() and raw[:, 3].max() <= 255  # intensity
    labels = np.fromfile(os.path.join(cfg.out, nusc.get("lidarseg", lidar_tok)["filename"]), dtype=np.uint8)
    assert len(labels) == pc.nbr_points()
    assert len(boxes) > 0  # annotations transformed into the LiDAR frame by the devkit

    cam_path, cam_boxes, k = nusc.get_sample_data(sample["data"]["CAM_FRONT"])
    assert k.shape == (3, 3) and os.path.exists(cam_path)

    explorer = NuScenesExplorer(nusc)
    for cam in sensors.CAMERAS:
        points, colouring, image = explorer.map_pointcloud_to_image(lidar_tok, sample["data"][cam.channel],
                                                                    show_lidarseg=True)
        assert image.size == (cfg.width, cfg.height)
        assert points.shape[1] > 1000, cam.channel  # every camera sees a good part of the sweep
        assert colouring.shape == (points.shape[1], 3)  # RGB of each point's class


def test_camera_timestamps_and_poses_differ_from_lidar(small_dataroot):
    cfg, _ = small_dataroot
    nusc = NuScenes(version=cfg.version, dataroot=cfg.out, verbose=False)
    sample = nusc.sample[0]
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    lidar_pose = np.array(nusc.get("ego_pose", lidar["ego_pose_token"])["translation"])
    for cam in sensors.CAMERAS:
        sd = nusc.get("sample_data", sample["data"][cam.channel])
        dt = sd["timestamp"] - lidar["timestamp"]
        assert 1_000 <= dt <= 50_000, cam.channel  # microseconds, as in nuScenes
        moved = np.linalg.norm(np.array(nusc.get("ego_pose", sd["ego_pose_token"])["translation"]) - lidar_pose)
        assert moved > 0.005, cam.channel
