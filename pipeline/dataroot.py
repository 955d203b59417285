"""Look at a nuScenes-format dataroot through the devkit: counts, and a preview picture.

Works on real nuScenes and on ``cdpipe synth`` output alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.classes import EVAL_CLASSES, FINE_CLASSES, FINE_COLOURS, FINE_TO_EVAL
from pipeline.frames import CAMERA_GRID, LIDAR, LIDAR_RECORD_BYTES, load_nuscenes


def inspect_dataroot(dataroot: str | os.PathLike, version: str) -> dict:
    """Scenes, keyframes, points per sweep and per evaluation class, read with the devkit."""
    from nuscenes.utils.splits import create_splits_scenes

    nusc = load_nuscenes(dataroot, version)
    splits = create_splits_scenes()
    split_of = {name: s for s in ("train", "val", "mini_train", "mini_val") for name in splits[s]}
    n_points, fine = [], np.zeros(256, dtype=np.int64)
    for sample in nusc.sample:
        sd = nusc.get("sample_data", sample["data"][LIDAR])
        n = os.path.getsize(os.path.join(nusc.dataroot, sd["filename"])) // LIDAR_RECORD_BYTES
        n_points.append(n)
        if hasattr(nusc, "lidarseg") and nusc.lidarseg:
            labels = np.fromfile(os.path.join(nusc.dataroot, nusc.get("lidarseg", sd["token"])["filename"]), np.uint8)
            fine += np.bincount(labels, minlength=256)
    per_eval = np.bincount(FINE_TO_EVAL, weights=fine[:32], minlength=len(EVAL_CLASSES)).astype(int)
    cams = [sd for sd in nusc.sample_data if sd["sensor_modality"] == "camera" and sd["is_key_frame"]]
    names = [s["name"] for s in nusc.scene]
    splits_of_scenes = [split_of.get(n, "?").replace("mini_", "") for n in names]
    n_points = np.array(n_points or [0])
    return {
        "dataroot": str(dataroot), "version": version, "seed": _synth_seed(dataroot),
        "scenes": names, "splits": {s: splits_of_scenes.count(s) for s in ("train", "val")},
        "keyframes": len(nusc.sample), "images": len(cams),
        "image_size": f"{cams[0]['width']}x{cams[0]['height']}" if cams else "-",
        "points_per_sweep": {"mean": float(n_points.mean()), "min": int(n_points.min()), "max": int(n_points.max())},
        "points_per_eval_class": {EVAL_CLASSES[i]: int(per_eval[i]) for i in range(1, len(EVAL_CLASSES))},
        "eval_classes_present": int((per_eval[1:] > 0).sum()),
        "annotations": len(nusc.sample_annotation),
    }


def _synth_seed(dataroot) -> str:
    import json

    meta = Path(dataroot) / "synth.json"
    return str(json.loads(meta.read_text())["seed"]) if meta.exists() else "n/a (not synthetic)"


def write_preview(dataroot: str | os.PathLike, version: str, sample_index: int = 0, tile_width: int = 400) -> Path:
    """``DATAROOT/preview.png``: the six cameras of one keyframe with its LiDAR points painted by lidarseg
    class (projected by the devkit's ``map_pointcloud_to_image``), and a bird's-eye view of the sweep, over a
    legend of the classes painted (``pipeline.classes.FINE_COLOURS``, the devkit's colours)."""
    from nuscenes.utils.data_classes import LidarPointCloud
    from PIL import Image, ImageDraw

    from pipeline.preview import legend_strip

    nusc = load_nuscenes(dataroot, version)
    from nuscenes.nuscenes import NuScenesExplorer

    explorer = NuScenesExplorer(nusc)
    sample = nusc.sample[sample_index]
    lidar_tok = sample["data"][LIDAR]
    tiles, shown = [], set()
    for row in CAMERA_GRID:
        for ch in row:
            pts, colour, im = explorer.map_pointcloud_to_image(lidar_tok, sample["data"][ch], show_lidarseg=True)
            scale = tile_width / im.width
            im = im.convert("RGB").resize((tile_width, int(round(im.height * scale))))
            draw = ImageDraw.Draw(im)
            rgb = (np.asarray(colour)[:, :3] * 255).astype(int)
            shown.update(FINE_COLOURS.index(tuple(int(v) for v in c)) for c in np.unique(rgb, axis=0))
            for (u, v), c in zip((pts[:2].T * scale), rgb):
                draw.rectangle([u - 0.5, v - 0.5, u + 0.5, v + 0.5], fill=tuple(c))
            draw.text((6, 4), ch, fill=(255, 255, 255))
            tiles.append(im)
    tile_h = tiles[0].height
    bev_size = 2 * tile_h
    canvas = Image.new("RGB", (3 * tile_width + bev_size, bev_size), (20, 20, 24))
    for i, im in enumerate(tiles):
        canvas.paste(im, ((i % 3) * tile_width, (i // 3) * tile_h))

    sd = nusc.get("sample_data", lidar_tok)
    pc = LidarPointCloud.from_file(os.path.join(nusc.dataroot, sd["filename"]))
    labels = np.fromfile(os.path.join(nusc.dataroot, nusc.get("lidarseg", lidar_tok)["filename"]), np.uint8)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    from pyquaternion import Quaternion

    xyz = Quaternion(cs["rotation"]).rotation_matrix @ pc.points[:3] + np.array(cs["translation"])[:, None]
    colours = np.array(FINE_COLOURS, dtype=np.uint8)
    half = 50.0  # metres shown either side of the ego vehicle
    bev = np.full((bev_size, bev_size, 3), 20, dtype=np.uint8)
    col = ((-xyz[1] + half) / (2 * half) * bev_size).astype(int)  # ego x up, y left
    row = ((-xyz[0] + half) / (2 * half) * bev_size).astype(int)
    inside = (col >= 0) & (col < bev_size) & (row >= 0) & (row < bev_size)
    order = np.argsort(xyz[2][inside])  # higher points drawn last
    bev[row[inside][order], col[inside][order]] = colours[labels[inside][order]]
    bev_im = Image.fromarray(bev)
    ImageDraw.Draw(bev_im).text((6, 4), f"{LIDAR}, {2 * half:.0f} m square, ego at centre", fill=(255, 255, 255))
    canvas.paste(bev_im, (3 * tile_width, 0))
    shown.update(np.unique(labels[inside]).tolist())
    legend = legend_strip([(FINE_CLASSES[i], FINE_COLOURS[i]) for i in sorted(shown)], canvas.width,
                          "lidarseg classes painted (fine classes)")
    framed = Image.new("RGB", (canvas.width, canvas.height + legend.height), (20, 20, 24))
    framed.paste(canvas, (0, 0))
    framed.paste(legend, (0, canvas.height))
    canvas = framed
    out = Path(dataroot) / "preview.png"
    canvas.save(out)
    return out
