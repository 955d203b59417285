"""Camera frames of a dataroot for training and gating stand-in teachers (scaffolding, not the product).

A frame is a camera image ``samples/CAM_*/*.jpg`` of a nuScenes-format dataroot (a synthetic world of
``cdpipe synth``, or real nuScenes). Images are resized by the rule the extraction feeds the teacher with
(``pipeline.teacher.resize_for_teacher``: PIL bicubic to the teacher's HxW), so a teacher trains on
exactly what extraction will show it.

Per-pixel classes exist only for synthetic worlds written with ``cdpipe synth --camera-labels``
(``camseg/CAM_*/*.png``, fine class per pixel, 255 = sky); ``load_frames(..., labels=True)`` maps them
to ``PIXEL_CLASSES``: nuScenes' 16 evaluation classes (0 = ignore) plus sky. The self-supervised recipe
calls ``load_frames(..., labels=False)``, which never opens a label file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.classes import EVAL_CLASSES, FINE_TO_EVAL

#: classes of a camera pixel: the 16 evaluation classes (index 0 = ignore) and sky
PIXEL_CLASSES: tuple[str, ...] = (*EVAL_CLASSES, "sky")
SKY_CLASS = len(EVAL_CLASSES)
_SKY_FINE = 255  # the value synth writes for pixels that hit nothing
_FINE_TO_PIXEL = np.zeros(256, np.uint8)
_FINE_TO_PIXEL[:len(FINE_TO_EVAL)] = FINE_TO_EVAL
_FINE_TO_PIXEL[_SKY_FINE] = SKY_CLASS


def camera_images(dataroot: str) -> list[str]:
    """Dataroot-relative paths of every camera image, sorted (scene, then time, then camera name)."""
    root = Path(dataroot)
    paths = [str(p.relative_to(root)) for p in root.glob("samples/CAM_*/*.jpg")]
    if not paths:
        raise FileNotFoundError(f"no camera images under {root}/samples/CAM_*/ : is this a nuScenes-format dataroot?")
    return sorted(paths, key=lambda p: (scene_of(p), Path(p).name.split("__")[-1], p))


def scene_of(path: str) -> str:
    """The log/scene part of a nuScenes camera file name (``<log>__<CHANNEL>__<timestamp>.jpg``)."""
    return Path(path).name.split("__")[0]


def load_frames(dataroot: str, paths: list[str], size: tuple[int, int], labels: bool = False,
                progress: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Images [N,H,W,3] uint8 at ``size`` = (H, W) (bicubic, as the teacher sees them) and, with
    ``labels``, pixel classes [N,H,W] uint8 (nearest) from ``camseg/``; else None for the classes."""
    from PIL import Image
    from tqdm import tqdm

    from pipeline.synth.write import camera_label_path
    from pipeline.teacher import resize_for_teacher

    h, w = size
    root = Path(dataroot)
    images = np.empty((len(paths), h, w, 3), np.uint8)
    classes = np.empty((len(paths), h, w), np.uint8) if labels else None
    for i, rel in enumerate(tqdm(paths, desc="load frames", unit="image", disable=not progress)):
        with Image.open(root / rel) as im:
            images[i] = np.asarray(resize_for_teacher(im, size))
        if labels:
            label_file = root / camera_label_path(rel)
            if not label_file.is_file():
                raise FileNotFoundError(f"no per-pixel labels for {rel}: expected {label_file} "
                                        "(write the world with cdpipe synth --camera-labels)")
            with Image.open(label_file) as im:
                classes[i] = _FINE_TO_PIXEL[np.asarray(im.resize((w, h), Image.NEAREST))]
    return images, classes


def patch_classes(classes: np.ndarray, patch: int) -> np.ndarray:
    """Pixel classes [N,H,W] -> the majority class of each patch [N,H/p,W/p] among its labelled pixels
    (0 = ignore only where every pixel of the patch is ignore)."""
    n, h, w = classes.shape
    gh, gw = h // patch, w // patch
    blocks = classes[:, :gh * patch, :gw * patch].reshape(n, gh, patch, gw, patch).transpose(0, 1, 3, 2, 4)
    blocks = blocks.reshape(n, gh, gw, patch * patch).astype(np.int64)
    counts = np.stack([(blocks == k).sum(-1) for k in range(len(PIXEL_CLASSES))], -1)
    counts[..., 0] = 0  # ignore never wins against a labelled pixel
    out = counts.argmax(-1).astype(np.uint8)
    out[counts.sum(-1) == 0] = 0
    return out
