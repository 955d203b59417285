"""The synthetic world's LiDAR and cameras agree: labelled points land on pixels of their own class.

Points are projected with the devkit's own transform chain (pyquaternion + calibrated_sensor +
ego_pose records, as in ``NuScenesExplorer.map_pointcloud_to_image``) and compared with the class map
that the renderer draws for the same camera. Points the camera cannot see (hidden behind something
from the camera's viewpoint, decided by casting a ray in the world) and points within 2 pixels of a
class boundary are left out, as neither says anything about the geometry.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from nuscenes.utils.data_classes import LidarPointCloud
from pyquaternion import Quaternion

from pipeline.frames import load_nuscenes
from pipeline.synth import raycast, sensors
from pipeline.synth.write import _world

BORDER = 2


def _transform(record) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = Quaternion(record["rotation"]).rotation_matrix
    t[:3, 3] = record["translation"]
    return t


def _uniform_window(label_map: np.ndarray, r: int) -> np.ndarray:
    """True where the (2r+1)^2 window around a pixel holds one class only."""
    h, w = label_map.shape
    padded = np.pad(label_map, r, mode="edge")
    same = np.ones((h, w), dtype=bool)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            same &= padded[dy:dy + h, dx:dx + w] == label_map
    return same


def agreement_scores(cfg, nusc):
    """Per camera image: (fraction agreeing with ego-motion compensation, fraction without it)."""
    scores = []
    for scene in nusc.scene:
        scene_index = int(nusc.get("log", scene["log_token"])["logfile"].rsplit("-", 1)[1])
        world = _world(cfg.seed, scene_index, cfg.duration_s, cfg.world_version)
        first = nusc.get("sample", scene["first_sample_token"])["timestamp"]
        sample_tok = scene["first_sample_token"]
        while sample_tok:
            sample = nusc.get("sample", sample_tok)
            lidar_sd = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
            pc = LidarPointCloud.from_file(os.path.join(nusc.dataroot, lidar_sd["filename"]))
            labels = np.fromfile(os.path.join(nusc.dataroot, nusc.get("lidarseg", lidar_sd["token"])["filename"]),
                                 np.uint8)
            ego_from_lidar = _transform(nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"]))
            global_from_ego_l = _transform(nusc.get("ego_pose", lidar_sd["ego_pose_token"]))
            pts = np.vstack([pc.points[:3], np.ones(pc.nbr_points())])
            pts_global = (global_from_ego_l @ ego_from_lidar @ pts)[:3].T
            for cam in sensors.CAMERAS:
                cam_sd = nusc.get("sample_data", sample["data"][cam.channel])
                cs = nusc.get("calibrated_sensor", cam_sd["calibrated_sensor_token"])
                ego_from_cam = _transform(cs)
                global_from_ego_c = _transform(nusc.get("ego_pose", cam_sd["ego_pose_token"]))
                k = np.array(cs["camera_intrinsic"])
                view = sensors.render_camera(world, cam, (cam_sd["timestamp"] - first) / 1e6, cam_sd["width"],
                                             cam_sd["height"], np.random.default_rng(0))
                uniform = _uniform_window(view.label, BORDER)
                # visibility from the camera centre, decided in the world, independent of the projection
                centre = (global_from_ego_c @ ego_from_cam)[:3, 3]
                to_pt = pts_global - centre
                dist = np.linalg.norm(to_pt, axis=1)
                t_hit, _ = raycast.cast(world.prims, world.ground, centre, to_pt / dist[:, None])
                visible = t_hit >= dist - 0.05 * np.maximum(1.0, dist / 10)
                # where the renderer's own camera (pose from the world, not the tables) sees each point
                true_p = (np.linalg.inv(view.world_from_cam) @ np.c_[pts_global, np.ones(len(pts_global))].T)[:3]
                true_uv = (k @ true_p)[:2] / np.where(true_p[2] > 0, true_p[2], 1.0)
                result = []
                for global_from_ego_used in (global_from_ego_c, global_from_ego_l):
                    cam_from_lidar = (np.linalg.inv(global_from_ego_used @ ego_from_cam) @ global_from_ego_l
                                      @ ego_from_lidar)
                    p = (cam_from_lidar @ pts)[:3]
                    depth = p[2]
                    uv = (k @ p)[:2] / np.where(depth > 0, depth, 1.0)
                    u, v = np.floor(uv).astype(int)
                    ok = (depth > 1.0) & (u >= 0) & (u < cam_sd["width"]) & (v >= 0) & (v < cam_sd["height"])
                    ok[ok] &= uniform[v[ok], u[ok]]
                    ok &= visible
                    hits = view.label[v[ok], u[ok]] == labels[ok]
                    pixel_error = np.abs(uv[:, ok] - true_uv[:, ok]).max(axis=0)
                    result.append((hits.sum(), ok.sum(), pixel_error.sum(), pixel_error.max(initial=0)))
                scores.append(result)
            sample_tok = sample["next"]
    # [images, 2 (with, without), 4 (agreeing, counted, summed pixel error, max pixel error)]
    return np.array(scores, dtype=np.float64)


@pytest.mark.slow
def test_points_land_on_pixels_of_their_class(small_dataroot):
    cfg, _ = small_dataroot
    nusc = load_nuscenes(cfg.out, cfg.version)
    s = agreement_scores(cfg, nusc)
    with_comp = s[:, 0, 0].sum() / s[:, 0, 1].sum()
    without = s[:, 1, 0].sum() / s[:, 1, 1].sum()
    err_with = s[:, 0, 2].sum() / s[:, 0, 1].sum()
    err_without = s[:, 1, 2].sum() / s[:, 1, 1].sum()
    print(f"agreement with ego-motion compensation {with_comp:.4f} (mean pixel error {err_with:.2e}), "
          f"without {without:.4f} (mean pixel error {err_without:.2f}), points counted {int(s[:, 0, 1].sum())}")
    assert s[:, 0, 1].sum() > 10_000  # the check sees many points
    assert with_comp >= 0.97
    # skipping the ego-pose change between LiDAR and camera instants is measurably worse
    assert without < with_comp - 0.01
    # and the compensated chain reproduces the renderer's own camera to floating-point precision
    assert s[:, 0, 3].max() < 1e-3
    assert err_without > 1.0
