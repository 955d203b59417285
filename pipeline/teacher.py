"""The frozen 2D teacher: a timm ViT that turns camera images into a patch-feature map.

``features(images) -> [B, D, H/p, W/p]``: the tokens of the last block **before** the final LayerNorm
by default (``layer="last_prenorm"``; ``"last_norm"`` applies it), prefix (CLS / register) tokens
dropped, reshaped to the patch grid. Input: uint8 RGB images resized to the teacher's ``image_size``
(bicubic) and normalised with the mean and std of the model's own pretrained config.

Frozen by construction: parameters never require grad, the module stays in eval mode (``train(True)``
raises), and the forward runs under ``torch.inference_mode``.

A ``.safetensors`` weights file may describe itself in one metadata entry, ``META_KEY``, a JSON object
(the stand-in teachers of ``tools/stand_in_teacher.py`` write it): ``timm_name`` the timm model it was
made for, ``timm_kwargs`` architecture arguments for ``timm.create_model`` beyond the name (a narrower
or shallower ViT), ``stand_in`` how a stand-in teacher was made. One entry, because safetensors writes
several in no fixed order, and the file's bytes (its sha256) must not depend on that. A DINOv2 file from
Meta or timm has none and loads as before.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.errors import first_line

LAYERS = ("last_prenorm", "last_norm")
META_KEY = "cleverdistiller_teacher"


@dataclass(frozen=True)
class TeacherConfig:
    name: str = "vit_small_patch14_dinov2"
    weights: str | None = None  # local file (.safetensors, .pth, .bin); None only with random=True
    random: bool = False
    seed: int = 0  # initialisation seed of a random teacher
    image_size: tuple[int, int] = (224, 448)  # (H, W) fed to the ViT
    layer: str = "last_prenorm"

    def __post_init__(self):
        if self.layer not in LAYERS:
            raise ValueError(f"teacher layer {self.layer!r}: choose one of {LAYERS}")
        if self.weights is None and not self.random:
            raise ValueError("no teacher weights: pass --teacher-weights FILE (e.g. a DINOv2 checkpoint), or "
                             "--random-teacher to run a randomly initialised teacher on purpose")
        if self.weights is not None and self.random:
            raise ValueError("--teacher-weights and --random-teacher exclude each other")
        if self.weights is not None and not os.path.isfile(self.weights):
            raise ValueError(f"teacher weights file not found: {self.weights}")
        h, w = self.image_size
        if h < 14 or w < 14:
            raise ValueError(f"teacher image size {h}x{w} is too small")


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_description(path: str) -> dict:
    """The ``META_KEY`` record of a ``.safetensors`` weights file ({} for other formats or none)."""
    if not path.endswith(".safetensors"):
        return {}
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        text = (f.metadata() or {}).get(META_KEY)
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        raise ValueError(f"teacher weights {path}: its {META_KEY} metadata is not valid JSON") from None


def architecture(cfg: TeacherConfig) -> tuple[dict, dict | None]:
    """The arguments given to ``timm.create_model`` beyond the name and img_size, and the stand-in record
    of the weights file (None for real weights or a random teacher)."""
    if cfg.random:
        # timm's DINOv2 LayerScale starts at 1e-5, which makes a random model's blocks do nothing (it is in
        # effect LayerNorm of the patch and position embeddings); init_values=1.0 makes every block count
        return {"init_values": 1.0}, None
    meta = weights_description(cfg.weights)
    made_for = meta.get("timm_name")
    if made_for and made_for != cfg.name:
        raise ValueError(f"teacher weights {cfg.weights} were made for the timm model {made_for!r}, "
                         f"not {cfg.name!r}: pass --teacher {made_for}")
    return dict(meta.get("timm_kwargs") or {}), meta.get("stand_in")


def trained_size(stand_in: dict | None) -> tuple[int, int] | None:
    """The input size (H, W) a stand-in teacher was trained at, from its weights file's record (None for
    real weights, a random teacher or a record without it)."""
    size = ((stand_in or {}).get("settings") or {}).get("image_size")
    return (int(size[0]), int(size[1])) if size else None


def load_size(image_size, stand_in: dict | None) -> tuple[int, int]:
    """The img_size to create the model at: a stand-in teacher's training size when it differs from
    ``image_size`` (its position grid, 16 x 32 patches, is not square, and timm's loader resamples only
    square grids: the model is then created at its own size and moved to ``image_size`` by
    ``set_input_size``), else ``image_size``."""
    return trained_size(stand_in) or (int(image_size[0]), int(image_size[1]))


def how_built(name: str, arch: dict, image_size, weights: str | None, pil_version: str | None = "current",
              device: str | None = None, stand_in: dict | None = None) -> dict:
    """What a reader needs, beyond name, weights, mean, std and layer, to rebuild the teacher and its input
    from a store alone (the store's teacher attribute holds it; storage_schema.md). ``weights``: the
    weights file (None: a random teacher); ``device``: where the features were computed (cpu: float32;
    cuda: under fp16 autocast); ``stand_in``: the weights file's stand-in record (``load_size``)."""
    import PIL

    h, w = image_size
    made_at = load_size((h, w), stand_in if weights else None)
    overlay = {"file": os.path.abspath(weights)} if weights else None
    return {
        "create_model": {"model_name": name, "pretrained": weights is not None, "pretrained_cfg_overlay": overlay,
                         "kwargs": {"img_size": list(made_at), **arch},
                         "set_input_size": None if made_at == (h, w) else [h, w],
                         "seeding": None if weights else "torch.manual_seed(random_init_seed) right before "
                                                         "create_model"},
        "resize": {"library": "PIL", "version": PIL.__version__ if pil_version == "current" else pil_version,
                   "call": f"Image.resize(({w}, {h}), Image.BICUBIC)", "filter": "bicubic", "antialias": True,
                   "input": "the camera image decoded to 8-bit RGB; skipped when it already has the size"},
        "normalise": "x = (rgb / 255 - mean) / std per channel, float32, channels first",
        "forward": ("model.forward_intermediates(x, indices=1, norm=(layer == 'last_norm'), output_fmt='NCHW', "
                    "intermediates_only=True)[-1] in float32 on the CPU, under fp16 autocast on CUDA"),
        "device": device,
    }


def resize_for_teacher(image, size: tuple[int, int]):
    """A camera image (a PIL image) as the teacher is fed it: 8-bit RGB at ``size`` = (H, W), resized with
    PIL's bicubic filter (which antialiases when it shrinks), or as it is when it already has that size.
    The one resize rule of the teacher's input, which the store records (``how_built``: resize): the
    extract (``frames.read_image``), ``FrozenTeacher.preprocess`` and the stand-in teachers' training
    frames (``tools/camera_frames.py``) all resize through it."""
    from PIL import Image

    image = image if image.mode == "RGB" else image.convert("RGB")
    h, w = size
    return image if image.size == (w, h) else image.resize((w, h), Image.BICUBIC)


def check_teacher(cfg: TeacherConfig) -> None:
    """Refuse, before any work starts, a teacher name timm does not know (naming the closest ones), a
    model that is not a ViT with patch tokens or whose patch size does not divide the input size, and a
    weights file that cannot be read (a ValueError naming the file or option). The model is built on
    the meta device: no memory, no weights."""
    import difflib

    import timm

    if not timm.is_model(cfg.name):
        close = difflib.get_close_matches(cfg.name, timm.list_models(), n=4, cutoff=0.6)
        raise ValueError(f"--teacher {cfg.name!r} is not a timm model" +
                         (f"; closest: {', '.join(close)}" if close else "; see timm.list_models('*dinov2*')"))
    if cfg.weights is not None:
        _check_weights_file(cfg.weights)
    h, w = cfg.image_size
    try:
        with torch.device("meta"):
            model = timm.create_model(cfg.name, pretrained=False, img_size=(h, w), **architecture(cfg)[0])
    except Exception as e:
        raise ValueError(f"--teacher {cfg.name} cannot be built as a ViT with input {h}x{w} "
                         f"({type(e).__name__}: {first_line(e)})") from None
    if not hasattr(model, "forward_intermediates") or not getattr(model, "patch_embed", None):
        raise ValueError(f"--teacher {cfg.name} is not a ViT with patch tokens")
    ph, pw = model.patch_embed.patch_size
    if h % ph or w % pw:
        raise ValueError(f"--teacher-size {w}x{h} (WIDTHxHEIGHT): both must be multiples of the teacher's patch "
                         f"size {pw}x{ph}, e.g. {max(1, round(w / pw)) * pw}x{max(1, round(h / ph)) * ph}")


def _check_weights_file(path: str) -> None:
    """A ValueError naming ``path`` unless it reads as plain tensors (safetensors, or a torch zip/legacy file)."""
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, "pt") as f:
                f.keys()
            weights_description(path)
        else:  # the tensors are mapped, not read; a pickle that is not plain tensors is refused here
            try:
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as e:
                if "mmap" not in str(e):  # the legacy (non-zip) format cannot be mapped: read it
                    raise
                torch.load(path, map_location="cpu", weights_only=True)
    except ValueError as e:
        if path in str(e):
            raise
        raise ValueError(f"teacher weights {path} cannot be read ({type(e).__name__}: {first_line(e)})") from None
    except Exception as e:
        raise ValueError(f"teacher weights {path} cannot be read ({type(e).__name__}: {first_line(e)})") from None


class FrozenTeacher(torch.nn.Module):
    def __init__(self, cfg: TeacherConfig):
        super().__init__()
        import timm

        self.cfg = cfg
        self.arch, self.stand_in = architecture(cfg)
        kwargs = {"img_size": tuple(cfg.image_size), **self.arch}
        if cfg.random:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(cfg.seed)
                model = timm.create_model(cfg.name, pretrained=False, **kwargs)
            self.weights_id = "random"
        else:
            # timm's own loading path: its checkpoint filter maps Meta's original DINOv2 key names and
            # resamples (square) position grids to img_size; a stand-in's 16 x 32 grid is loaded at its own
            # size and resampled by set_input_size (load_size)
            made_at = load_size(cfg.image_size, self.stand_in)
            model = timm.create_model(cfg.name, pretrained=True, pretrained_cfg_overlay={"file": cfg.weights},
                                      **{**kwargs, "img_size": made_at})
            if made_at != tuple(cfg.image_size):
                model.set_input_size(img_size=tuple(cfg.image_size))
            self.weights_id = file_sha256(cfg.weights)
        if not hasattr(model, "forward_intermediates") or not getattr(model, "patch_embed", None):
            raise ValueError(f"teacher {cfg.name!r} is not a ViT with patch tokens")
        data_cfg = timm.data.resolve_model_data_config(model)
        self.model = model
        self.patch_size = int(model.patch_embed.patch_size[0])
        self.feature_dim = int(model.embed_dim)
        self.data_mean, self.data_std = list(data_cfg["mean"]), list(data_cfg["std"])
        self.register_buffer("mean", torch.tensor(self.data_mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.data_std).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True):
        if mode:
            raise RuntimeError("the teacher is frozen: it cannot be put in training mode")
        return super().train(False)

    def describe(self) -> dict:
        import timm

        h, w = self.cfg.image_size
        return {"name": self.cfg.name, "weights": self.weights_id, "architecture": self.arch,
                "stand_in": self.stand_in,
                "random_init_seed": self.cfg.seed if self.cfg.random else None, "layer": self.cfg.layer,
                "image_size": [h, w], "patch_size": self.patch_size,
                "mean": self.data_mean, "std": self.data_std,
                "timm_version": timm.__version__,
                **how_built(self.cfg.name, self.arch, (h, w), None if self.cfg.random else self.cfg.weights,
                            device=self.mean.device.type, stand_in=self.stand_in)}

    def preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 RGB images [H0,W0,3] (any sizes) -> normalised batch [B,3,H,W] at the teacher's size."""
        from PIL import Image

        h, w = self.cfg.image_size
        arr = np.stack([im if im.shape[:2] == (h, w) else np.asarray(resize_for_teacher(Image.fromarray(im), (h, w)))
                        for im in images])
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean) / self.std

    #: images per forward call on the CPU; larger batches are ~5-10% slower per image there (cache)
    CPU_BATCH = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised batch [B,3,H,W] -> patch-feature map [B,D,H/p,W/p] (float32).

        On a GPU the whole batch runs at once under fp16 autocast; on the CPU in slices of CPU_BATCH."""
        step = len(x) if x.is_cuda else self.CPU_BATCH
        with torch.inference_mode():
            out = []
            for i in range(0, len(x), step):
                with torch.autocast("cuda", dtype=torch.float16, enabled=x.is_cuda):
                    maps = self.model.forward_intermediates(x[i:i + step], indices=1,
                                                            norm=self.cfg.layer == "last_norm",
                                                            output_fmt="NCHW", intermediates_only=True)
                out.append(maps[-1].float())
            return torch.cat(out)

    def features(self, images: list[np.ndarray]) -> torch.Tensor:
        x = self.preprocess(images).to(self.mean.device)
        return self.forward(x)
