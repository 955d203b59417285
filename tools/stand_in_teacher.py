"""Stand-in foundation teachers, trained here on camera frames of synthetic worlds that no evaluation uses.

Scaffolding for the experiments, not the product: real users pass real DINOv2 weights to
``cdpipe extract``. No DINOv2 weights can be had on our machines, and a randomly initialised ViT knows
little beyond colour (a linear probe of its patches: mIoU 0.44 against 0.29 from each patch's mean colour,
averaged over three worlds, ``benchmarks/results/teacher_gate.json``), so we make two small teachers that
know more:

    python -m tools.stand_in_teacher ssl      --dataroot WORLD --out teachers/ssl.safetensors
    python -m tools.stand_in_teacher semantic --dataroot WORLD --out teachers/semantic.safetensors

- ``ssl``: **label-free** self-distillation, DINO/iBOT family. A student ViT and its EMA teacher see two
  crops of each frame (random boxes of the 224x448 frame, flips, colour jitter, grey, blur). With
  P_t = softmax((g_t(.) - centre) / T_t) the teacher's prototype distribution (centred, sharpened) and
  log P_s = log_softmax(g_s(.) / T_s) the student's, the loss is
      L = 0.5 L_cls + L_mim + L_dense,   each term a cross-entropy  -sum_k P_t log P_s  averaged over
  L_cls: CLS token of crop a vs the teacher's CLS of crop b (a != b) (DINO);
  L_mim: the student's masked patches vs the teacher's unmasked patch at the same place of the same crop
         (iBOT; 10-50% of the patches masked per crop);
  L_dense: every student patch of crop a whose centre lies in crop b vs the teacher's distribution
         bilinearly sampled at that image point in crop b (the cross-view patch loss).
  The recipe only ever opens camera JPEGs (``camera_frames.load_frames(labels=False)``).
- ``semantic``: the same ViT trained on per-pixel classes (``cdpipe synth --camera-labels``): a linear
  head on the normed patch tokens, logits upsampled bilinearly to the crop, cross-entropy over the 16
  evaluation classes and sky (ignore = 0). It stands in for what a foundation model's features are
  like on driving scenes, **not** for how one is trained; its weights file says so.

Both are timm ``vit_small_patch14_dinov2`` with a smaller width and depth (``ARCH``), trained at crops of
the extraction input (224x448) at about the scale extraction shows. The output is an ordinary
safetensors file of the ViT; its metadata names the timm model, the architecture arguments and how it
was made, and ``pipeline.teacher.FrozenTeacher`` builds the model from them. Deterministic for a seed
(per-step randomness comes from (seed, step)) and resumable: a checkpoint ``OUT.ckpt.pt`` every
``--checkpoint-every`` steps; rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.teacher import META_KEY
from tools.camera_frames import PIXEL_CLASSES, camera_images, load_frames

TIMM_NAME = "vit_small_patch14_dinov2"
RECIPES = ("ssl", "semantic")
CENTRINGS = ("centre", "sinkhorn")
SINKHORN_ITERATIONS = 3
CLS_WEIGHT = 0.5  # L_cls counts half: in a trial of this recipe it added almost nothing to patch features
MASK_RATIO = (0.1, 0.5)  # iBOT: fraction of a crop's patches hidden from the student, uniform per crop
HEAD_HIDDEN, HEAD_BOTTLENECK = 512, 128


@dataclass(frozen=True)
class RecipeConfig:
    recipe: str
    dataroot: str
    out: str
    steps: int = 1000
    batch_size: int = 16  # frames per step (ssl: two crops each)
    lr: float = 5e-4
    weight_decay: float = 0.04
    warmup: int = 50
    seed: int = 0
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    image_size: tuple[int, int] = (224, 448)  # (H, W) of the frames, as extraction feeds the teacher
    crop_size: tuple[int, int] = (140, 280)  # (H, W) of each crop fed to the ViT
    crop_scale: tuple[float, float] = (0.25, 0.7)  # crop area / frame area: objects at 0.75-1.25x extraction scale
    prototypes: int = 2048  # ssl: K
    momentum: float = 0.994  # ssl: EMA momentum at step 0, cosine to 1
    teacher_temp: tuple[float, float] = (0.04, 0.07)  # ssl: linear warm-up over the first 30% of steps
    student_temp: float = 0.1
    centre_momentum: float = 0.9
    centring: str = "centre"  # ssl: "centre" (DINO's running mean of teacher logits) or "sinkhorn" (Sinkhorn-Knopp)
    checkpoint_every: int = 100
    threads: int = 0  # torch threads (0: every core)

    def __post_init__(self):
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe {self.recipe!r}: choose one of {RECIPES}")
        if self.centring not in CENTRINGS:
            raise ValueError(f"--centring {self.centring!r}: choose one of {CENTRINGS}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("--steps and --batch-size must be at least 1")
        for name in ("image_size", "crop_size"):
            h, w = getattr(self, name)
            if h % 14 or w % 14:
                raise ValueError(f"{name} {h}x{w}: both sides must be multiples of the patch size 14")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def arch(self) -> dict:
        return {"embed_dim": self.embed_dim, "depth": self.depth, "num_heads": self.num_heads}

    def recipe_args(self) -> dict:
        """What determines the weights (not where files live)."""
        return {k: v for k, v in asdict(self).items() if k not in ("dataroot", "out", "checkpoint_every", "threads")}


def build_vit(cfg: RecipeConfig) -> torch.nn.Module:
    import timm

    # init_values 0.1: timm's DINOv2 default (1e-5) makes the blocks no-ops for the first thousands of steps
    return timm.create_model(TIMM_NAME, pretrained=False, img_size=cfg.image_size, dynamic_img_size=True,
                             num_classes=0, init_values=0.1, **cfg.arch)


def vit_tokens(vit, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [B,3,H,W] -> normed patch tokens [B,h,w,D] and CLS token [B,D]; ``mask`` [B,h,w] replaces
    those patch embeddings by ``mask_token`` [D] before the position embedding (iBOT)."""
    t = vit.patch_embed(x)  # [B,h,w,D] (dynamic_img_size)
    b, h, w, d = t.shape
    if mask is not None:
        t = torch.where(mask[..., None], mask_token.to(t.dtype), t)
    t = vit.norm(vit.blocks(vit.norm_pre(vit._pos_embed(t))))
    return t[:, vit.num_prefix_tokens:].reshape(b, h, w, d), t[:, 0]


class ProtoHead(torch.nn.Module):
    """DINO head: MLP D -> 512 -> 512 -> 128, L2-normalised, weight-normed linear to K prototype logits.

    Measured (docs/stand_in_teachers.md): with this head the teacher's patch targets drift towards
    uniform (entropy 6.8 -> 7.4 of ln 2048 = 7.6 over 900 steps); fixing the prototypes' norm at 1
    (DINO's norm_last_layer) did not stop the drift (7.2 by step 200) and was not kept."""

    def __init__(self, dim: int, k: int):
        super().__init__()
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, HEAD_HIDDEN), torch.nn.GELU(),
                                       torch.nn.Linear(HEAD_HIDDEN, HEAD_HIDDEN), torch.nn.GELU(),
                                       torch.nn.Linear(HEAD_HIDDEN, HEAD_BOTTLENECK))
        self.last = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(HEAD_BOTTLENECK, k, bias=False))

    def forward(self, x):
        return self.last(F.normalize(self.mlp(x), dim=-1))


# ---- crops: one sampled box per frame, applied with grid_sample so patch correspondences are exact ----

def sample_boxes(rng: np.random.Generator, n: int, scale: tuple[float, float]) -> np.ndarray:
    """[n,5] crop boxes (x0, y0, x1, y1 in [0,1] frame coordinates, flip 0/1): area fraction uniform in
    ``scale``, aspect within 3/4..4/3 of the frame's, uniform position, horizontal flip with p = 0.5."""
    area = rng.uniform(*scale, n)
    ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), n))
    bw, bh = np.minimum(np.sqrt(area * ratio), 1.0), np.minimum(np.sqrt(area / ratio), 1.0)
    x0, y0 = rng.uniform(0, 1 - bw), rng.uniform(0, 1 - bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh, rng.random(n) < 0.5], 1)


def crop_to_frame(boxes: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop coordinates (a, b) in [0,1] (x right, y down, per box [n,...]) -> frame coordinates (x, y)."""
    x0, y0, x1, y1, flip = (boxes[:, i].view(-1, *([1] * (a.dim() - 1))) for i in range(5))
    a = torch.where(flip > 0.5, 1 - a, a)
    return x0 + a * (x1 - x0), y0 + b * (y1 - y0)


def frame_to_crop(boxes: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x0, y0, x1, y1, flip = (boxes[:, i].view(-1, *([1] * (x.dim() - 1))) for i in range(5))
    a, b = (x - x0) / (x1 - x0), (y - y0) / (y1 - y0)
    return torch.where(flip > 0.5, 1 - a, a), b


def _centres(h: int, w: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    b, a = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    return a.expand(n, h, w), b.expand(n, h, w)


def crop(frames: torch.Tensor, boxes: torch.Tensor, hw: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """frames [n,C,H,W] -> crops [n,C,h,w]: output pixel centres mapped through the box (and flip)."""
    a, b = _centres(*hw, len(frames))
    x, y = crop_to_frame(boxes, a, b)
    grid = torch.stack([2 * x - 1, 2 * y - 1], -1).to(frames.dtype)
    return F.grid_sample(frames, grid, mode=mode, padding_mode="border", align_corners=False)


def colour_augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Per image in [0,1]: brightness, contrast, saturation x U(0.6, 1.4); grey with p 0.2; 3x3 blur p 0.3."""
    n = len(x)
    f = lambda: torch.from_numpy(rng.uniform(0.6, 1.4, n)).float().view(n, 1, 1, 1)  # noqa: E731
    x = x * f()
    x = (x - x.mean((1, 2, 3), keepdim=True)) * f() + x.mean((1, 2, 3), keepdim=True)
    grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    x = (x - grey) * f() + grey
    to_grey = torch.from_numpy(rng.random(n) < 0.2).view(n, 1, 1, 1)
    x = torch.where(to_grey, grey.expand_as(x), x)
    blur = torch.from_numpy(rng.random(n) < 0.3).view(n, 1, 1, 1)
    x = torch.where(blur, F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x)
    return x.clamp(0, 1)


# ---- the two recipes ----

class Recipe(torch.nn.Module):
    """Everything that trains, in one module (so one state_dict checkpoints it)."""

    def __init__(self, cfg: RecipeConfig):
        super().__init__()
        self.cfg = cfg
        self.student = build_vit(cfg)
        d = cfg.embed_dim
        if cfg.recipe == "ssl":
            self.student_head = ProtoHead(d, cfg.prototypes)
            self.teacher = build_vit(cfg)
            self.teacher_head = ProtoHead(d, cfg.prototypes)
            self.teacher.load_state_dict(self.student.state_dict())
            self.teacher_head.load_state_dict(self.student_head.state_dict())
            for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
                p.requires_grad_(False)
            self.mask_token = torch.nn.Parameter(torch.zeros(d))
            self.register_buffer("centre_cls", torch.zeros(cfg.prototypes))
            self.register_buffer("centre_patch", torch.zeros(cfg.prototypes))
        else:
            self.seg_head = torch.nn.Linear(d, len(PIXEL_CLASSES))
        import timm

        data_cfg = timm.data.resolve_model_data_config(self.student)
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1))

    def trained_vit(self):
        """The ViT the weights file holds: the EMA teacher for ssl (as DINO), the network itself for semantic."""
        return self.teacher if self.cfg.recipe == "ssl" else self.student

    def loss(self, frames: torch.Tensor, classes: torch.Tensor | None, step: int,
             rng: np.random.Generator) -> tuple[torch.Tensor, dict]:
        if self.cfg.recipe == "ssl":
            return self._ssl_loss(frames, step, rng)
        return self._semantic_loss(frames, classes, rng)

    def _semantic_loss(self, frames, classes, rng):
        cfg = self.cfg
        boxes = torch.from_numpy(sample_boxes(rng, len(frames), cfg.crop_scale)).float()
        x = colour_augment(crop(frames, boxes, cfg.crop_size), rng)
        y = crop(classes[:, None].float(), boxes, cfg.crop_size, mode="nearest")[:, 0].long()
        patches, _ = vit_tokens(self.student, (x - self.mean) / self.std)
        logits = self.seg_head(patches).permute(0, 3, 1, 2)
        logits = F.interpolate(logits, size=cfg.crop_size, mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=0)
        return loss, {"loss": float(loss.detach())}

    def _ssl_loss(self, frames, step, rng):
        cfg = self.cfg
        n = len(frames)
        boxes = torch.from_numpy(np.concatenate([sample_boxes(rng, n, cfg.crop_scale),
                                                 sample_boxes(rng, n, cfg.crop_scale)])).float()
        views = colour_augment(crop(torch.cat([frames, frames]), boxes, cfg.crop_size), rng)
        views = (views - self.mean) / self.std  # [2n,3,h,w]: crop a of frame i at i, crop b at n + i
        gh, gw = cfg.crop_size[0] // 14, cfg.crop_size[1] // 14
        ratio = rng.uniform(*MASK_RATIO, (2 * n, 1, 1))
        mask = torch.from_numpy(rng.random((2 * n, gh, gw)) < ratio)
        t_temp = cfg.teacher_temp[0] + (cfg.teacher_temp[1] - cfg.teacher_temp[0]) * min(1.0, step / (0.3 * cfg.steps))

        with torch.no_grad():
            t_patch, t_cls = vit_tokens(self.teacher, views)
            t_patch, t_cls = self.teacher_head(t_patch), self.teacher_head(t_cls)  # logits [2n,h,w,K], [2n,K]
            if cfg.centring == "sinkhorn":
                p_patch = sinkhorn(t_patch.reshape(-1, t_patch.shape[-1]) / t_temp).view_as(t_patch)
                p_cls = sinkhorn(t_cls / t_temp)
            else:
                p_patch = F.softmax((t_patch - self.centre_patch) / t_temp, -1)
                p_cls = F.softmax((t_cls - self.centre_cls) / t_temp, -1)
        s_patch, s_cls = vit_tokens(self.student, views, mask, self.mask_token)
        logp_patch = F.log_softmax(self.student_head(s_patch) / cfg.student_temp, -1)
        logp_cls = F.log_softmax(self.student_head(s_cls) / cfg.student_temp, -1)

        swap = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # the other crop of the same frame
        l_cls = -(p_cls[swap] * logp_cls).sum(-1).mean()
        l_mim = -(p_patch * logp_patch).sum(-1)[mask].mean()
        # dense: where does each student patch centre of crop a lie in crop b?
        a, b = _centres(gh, gw, 2 * n)
        x, y = crop_to_frame(boxes, a, b)
        a2, b2 = frame_to_crop(boxes[swap], x, y)
        inside = (a2 > 0) & (a2 < 1) & (b2 > 0) & (b2 < 1)
        grid = torch.stack([2 * a2 - 1, 2 * b2 - 1], -1)
        target = F.grid_sample(p_patch[swap].permute(0, 3, 1, 2), grid, mode="bilinear", padding_mode="border",
                               align_corners=False).permute(0, 2, 3, 1)
        l_dense = -(target * logp_patch).sum(-1)[inside].mean() if inside.any() else logp_patch.sum() * 0
        loss = CLS_WEIGHT * l_cls + l_mim + l_dense

        with torch.no_grad():
            m = cfg.centre_momentum
            self.centre_cls.mul_(m).add_(t_cls.mean(0), alpha=1 - m)
            self.centre_patch.mul_(m).add_(t_patch.reshape(-1, t_patch.shape[-1]).mean(0), alpha=1 - m)
        return loss, {"loss": float(loss.detach()), "cls": float(l_cls.detach()), "mim": float(l_mim.detach()),
                      "dense": float(l_dense.detach()),
                      "overlap": float(inside.float().mean()),
                      "teacher_entropy": float(-(p_patch * torch.log(p_patch + 1e-12)).sum(-1).mean())}

    @torch.no_grad()
    def update_teacher(self, step: int) -> None:
        if self.cfg.recipe != "ssl":
            return
        m = 1 - (1 - self.cfg.momentum) * (math.cos(math.pi * step / self.cfg.steps) + 1) / 2
        for s, t in ((self.student, self.teacher), (self.student_head, self.teacher_head)):
            for ps, pt in zip(s.parameters(), t.parameters()):
                pt.mul_(m).add_(ps.detach(), alpha=1 - m)


def sinkhorn(logits: torch.Tensor, iterations: int = SINKHORN_ITERATIONS) -> torch.Tensor:
    """Teacher targets [M, K] from logits [M, K] by Sinkhorn-Knopp: rows are distributions, and every
    prototype receives about the same share of the batch, so the targets cannot collapse onto a few
    prototypes nor drift to uniform (DINOv2's alternative to a running centre). Alternately normalises
    the prototypes' totals to M / K and each row's total to 1."""
    q = torch.exp(logits.double() - logits.max())
    m, k = q.shape
    for _ in range(iterations):
        q = q / q.sum(0, keepdim=True) * (m / k)
        q = q / q.sum(1, keepdim=True)
    return q.float()


def lr_at(cfg: RecipeConfig, step: int) -> float:
    """Linear warm-up, then cosine to 0. The same schedule as ``trainer.train.lr_at``, kept as written
    here because the committed weights were made with this exact float arithmetic (bit-for-bit reruns)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return 0.5 * cfg.lr * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)))


def checkpoint_path(cfg: RecipeConfig) -> str:
    return cfg.out + ".ckpt.pt"


def train(cfg: RecipeConfig, progress: bool = True, until: int | None = None) -> dict:
    """Run (or resume) a recipe; write the weights file; return a summary with the loss curve.

    ``until``: stop after that many steps in all (a checkpoint is written there), to spread a long run
    over sittings; the weights file is written only when all ``cfg.steps`` are done."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    paths = camera_images(cfg.dataroot)
    images, classes = load_frames(cfg.dataroot, paths, cfg.image_size, labels=cfg.recipe == "semantic",
                                  progress=progress)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = Recipe(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    start, curve = 0, []
    ckpt = checkpoint_path(cfg)
    Path(ckpt).parent.mkdir(parents=True, exist_ok=True)
    if os.path.exists(ckpt):
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        saved, now = json.loads(state["config"]), json.loads(json.dumps(cfg.recipe_args()))  # tuples as lists
        if saved != now:
            diff = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
            raise ValueError(f"{ckpt} was written with other settings ({', '.join(diff)}): rerun with those, "
                             "or delete the checkpoint to start again")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start, curve = int(state["step"]), list(json.loads(state["curve"]))
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.steps, initial=start, desc=f"{cfg.recipe} teacher", unit="step", disable=not progress)
    stop = cfg.steps if until is None else min(until, cfg.steps)
    for step in range(start, stop):
        rng = np.random.default_rng([cfg.seed, step])
        idx = np.sort(rng.choice(len(images), min(cfg.batch_size, len(images)), replace=False))
        frames = torch.from_numpy(images[idx]).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.from_numpy(classes[idx]) if classes is not None else None
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        loss, logs = model.loss(frames, labels, step, rng)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{cfg.recipe} teacher: loss is {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        model.update_teacher(step)
        curve.append({"step": step, **{k: round(v, 5) for k, v in logs.items()}})
        bar.set_postfix(loss=f"{logs['loss']:.3f}")
        bar.update()
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 in (cfg.steps, stop):
            tmp = ckpt + ".tmp"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                        "config": json.dumps(cfg.recipe_args()), "curve": json.dumps(curve)}, tmp)
            os.replace(tmp, ckpt)
    bar.close()
    done = stop == cfg.steps
    sha = write_weights(model, cfg, len(paths)) if done else None
    return {"weights": cfg.out if done else None, "sha256": sha, "steps": stop, "images": len(paths),
            "seconds_this_run": round(time.perf_counter() - t0, 1), "curve": curve}


def write_weights(model: Recipe, cfg: RecipeConfig, n_images: int) -> str:
    """The trained ViT as safetensors with self-describing metadata; returns the file's sha256."""
    from safetensors.torch import save_file

    from pipeline.teacher import file_sha256

    world = Path(cfg.dataroot) / "synth.json"
    stand_in = {
        "recipe": cfg.recipe,
        "labels_used": cfg.recipe == "semantic",
        "what": ("self-supervised (DINO/iBOT-style, no labels) on synthetic camera frames"
                 if cfg.recipe == "ssl" else
                 "SEMANTIC STAND-IN: trained WITH per-pixel class labels of synthetic camera frames; stands in "
                 "for a foundation model's features, not for how one is trained"),
        "frames": n_images,
        "world": json.loads(world.read_text()) if world.is_file() else None,
        "settings": cfg.recipe_args(),
        "made_by": "python -m tools.stand_in_teacher",
    }
    state = {k: v.detach().float().contiguous() for k, v in model.trained_vit().state_dict().items()}
    meta = {"timm_name": TIMM_NAME, "timm_kwargs": cfg.arch, "stand_in": stand_in}
    save_file(state, cfg.out, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    return file_sha256(cfg.out)


def _cli():
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tools.stand_in_teacher", description=__doc__.split("\n\n")[0])
    ap.add_argument("recipe", choices=RECIPES)
    ap.add_argument("--dataroot", required=True, help="dataroot whose samples/CAM_* frames it trains on")
    ap.add_argument("--out", required=True, help="weights file to write (.safetensors)")
    defaults = RecipeConfig(recipe="ssl", dataroot="", out="")
    for f in fields(RecipeConfig):
        if f.name in ("recipe", "dataroot", "out"):
            continue
        value = getattr(defaults, f.name)
        if isinstance(value, tuple):
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(value[0]), nargs=2, default=value)
        else:
            ap.add_argument("--" + f.name.replace("_", "-"), type=type(value), default=value)
    ap.add_argument("--curve", help="also write the loss curve (JSON lines) here")
    ap.add_argument("--until", type=int, help="stop after this many steps in all (resume later by rerunning)")
    args = vars(ap.parse_args())
    curve_file, until = args.pop("curve"), args.pop("until")
    try:
        cfg = RecipeConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
        summary = train(cfg, until=until)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    if curve_file:
        with open(curve_file, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in summary["curve"])
    last = summary["curve"][-20:]
    if summary["weights"] is None:
        print(f"{cfg.recipe} teacher: stopped at step {summary['steps']} of {cfg.steps}; rerun without --until "
              f"to continue from {checkpoint_path(cfg)}")
        return
    print(f"{cfg.recipe} teacher: {summary['weights']}  sha256 {summary['sha256']}")
    print(f"  {summary['images']} frames, {summary['steps']} steps, this run {summary['seconds_this_run']} s; "
          f"mean loss of the last {len(last)} steps {np.mean([r['loss'] for r in last]):.4f}")


if __name__ == "__main__":
    _cli()
