"""Checkpoints: what the trainer writes, reads back, and checks before it resumes.

Two kinds of file, both plain tensors and Python values (read with ``weights_only=True``), both written
atomically (a crash mid-save never leaves a half-written file), both carrying the student's
``input_scale`` (``trainer/batch.py``), which reading checks:
- a pretraining checkpoint (``cdtrain pretrain``: OUT/checkpoint.pt): the Student's weights, its model,
  data and train configs, the store's fingerprint, the optimiser and gradient-scaler state, the step and
  the RNG state;
- a segmenter file (``cdtrain finetune``: OUT/segmenter.pt, ``kind`` = SEGMENTER_KIND): the segmenter's
  weights, architecture, voxel size, the class of each output, how it was made and, while fine-tuning,
  the state to resume;
- a detector file (``cdtrain finetune --task detection``: OUT/detector.pt, ``kind`` = DETECTOR_KIND): the
  detector's weights, architecture, voxel size, detection config (grid, classes, decoding), how it was made
  and, while fine-tuning, the state to resume.
Resuming compares the configurations saved in the file with the new run's (``check_resume``) and refuses
in one line that names every field that differs, unless forced.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import torch

from pipeline.store import as_attribute
from trainer.batch import INPUT_SCALE
from trainer.config import ModelConfig
from trainer.model import Segmenter, Student

SEGMENTER_KIND = "cleverdistiller-segmenter"
SEGMENTER_FORMAT = 1
DETECTOR_KIND = "cleverdistiller-detector"
DETECTOR_FORMAT = 1


def write_atomic(state: dict, path: str) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename."""
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path: str) -> dict:
    """A checkpoint file as plain tensors and values; a missing or unreadable file, or one trained on
    another input scale, is one clear error."""
    from pipeline.errors import first_line

    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated file, or not a torch file at all
        raise ValueError(f"checkpoint {path} cannot be read ({type(e).__name__}: {first_line(e)}); cdtrain reads only "
                         f"the plain-tensor checkpoints it writes") from None
    if not isinstance(ck, dict):
        raise ValueError(f"checkpoint {path} holds a {type(ck).__name__}, not a cdtrain checkpoint")
    scale = tuple(ck.get("input_scale", INPUT_SCALE))  # files written before the field existed used today's
    if scale != INPUT_SCALE:
        raise ValueError(f"checkpoint {path} was trained on point inputs divided by {scale}; this version of "
                         f"cdtrain divides them by {INPUT_SCALE}")
    return ck


def store_fingerprint(attrs: dict, sweeps=None) -> dict:
    """What identifies a store's content for a checkpoint trained on it; with ``sweeps`` (the store rows
    the run reads), also how many of them were complete, so that resuming on a store whose extract has
    written more since is a changed setting, not a silent one."""
    t = attrs["teacher"]
    out = {"num_sweeps": attrs["num_sweeps"], "feature_dim": attrs["feature_dim"], "teacher": t["name"],
           "weights": t["weights"], "created_utc": attrs["provenance"]["created_utc"]}
    if sweeps is not None:
        out["complete_sweeps"] = len(sweeps)
    return out


def config_differences(then: dict, now: dict, ignore: tuple[str, ...] = (),
                       defaults: dict[str, dict] | None = None) -> list[str]:
    """``section.field: old -> new`` for every field of the sections of ``now`` (e.g. ``train_config``)
    whose value differs from ``then``'s. A field missing from ``then`` (added since the file was written)
    is compared with its default in ``defaults[section]``, or counts as equal when it has none. Fields
    named in ``ignore`` (``section.field``) are not compared."""
    out = []
    for section, values in now.items():
        old = then.get(section)
        if not isinstance(values, dict):
            if old != values:
                out.append(f"{section}: {old!r} -> {values!r}")
            continue
        old = {**(defaults or {}).get(section, {}), **(old or {})}
        for key, value in values.items():
            name = f"{section}.{key}"
            if name in ignore or key not in old:
                continue
            if as_attribute(old[key]) != as_attribute(value):
                out.append(f"{name}: {old[key]!r} -> {value!r}")
    return out


def check_resume(path: str, then: dict, now: dict, force: bool, forceable: tuple[str, ...],
                 ignore: tuple[str, ...] = (), defaults: dict[str, dict] | None = None) -> list[str]:
    """Refuse to resume from ``path`` when a configuration differs (``config_differences``), in one line
    naming the fields; with ``force``, the differences in the ``forceable`` sections are allowed, those
    in other sections still refused. Each allowed difference is printed as a warning on stderr as the
    run resumes, and returned (to be recorded)."""
    diffs = config_differences(then, now, ignore, defaults)
    hard = [d for d in diffs if d.split(".")[0].split(":")[0] not in forceable]
    if hard or (diffs and not force):
        shown = hard if force else diffs
        hint = "" if hard else "; pass --force-config to resume with the new settings anyway"
        raise ValueError(f"--resume: {path} was written with other settings: {'; '.join(shown)}{hint}")
    for change in diffs:
        print(f"warning: resumed with a changed setting (--force-config): {change}", file=sys.stderr)
    return diffs


# ---------------------------------------------------------------------------------------------------
# pretraining checkpoints


def save_pretraining(path: str, model: Student, optimizer, scaler, step: int, mcfg, dcfg, tcfg,
                     fingerprint: dict) -> None:
    write_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                  "step": step, "model_config": mcfg.to_dict(), "data_config": dcfg.to_dict(),
                  "train_config": dataclasses.asdict(tcfg), "store_fingerprint": fingerprint,
                  "input_scale": list(INPUT_SCALE), "torch_rng": torch.get_rng_state()}, path)


def load_student(ck: dict) -> Student:
    """The Student of a loaded pretraining checkpoint, in eval mode."""
    model = Student(ModelConfig(**ck["model_config"]))
    model.load_state_dict(ck["model"])
    return model.eval()


def is_pretraining_checkpoint(ck: dict) -> bool:
    return "train_config" in ck and "model_config" in ck and any(k.startswith("head.") for k in ck.get("model", {}))


def pretraining_arch(checkpoint: str) -> str:
    """The backbone architecture of a pretraining checkpoint; anything else is refused in one line."""
    return _pretraining(checkpoint)["model_config"]["arch"]


def _pretraining(checkpoint: str) -> dict:
    ck = read_checkpoint(checkpoint)
    if ck.get("kind") in (SEGMENTER_KIND, DETECTOR_KIND):
        what = "segmenter" if ck["kind"] == SEGMENTER_KIND else "detector"
        raise ValueError(f"{checkpoint} is a {what} (cdtrain finetune), not a pretraining checkpoint; "
                         f"give the pretraining run's checkpoint.pt")
    if "model_config" not in ck or "model" not in ck:
        raise ValueError(f"{checkpoint} is not a pretraining checkpoint written by cdtrain pretrain")
    return ck


# ---------------------------------------------------------------------------------------------------
# segmenters


def load_backbone(model: torch.nn.Module, checkpoint: str, arch: str) -> dict:
    """Copy the backbone of a pretraining checkpoint (``cdtrain pretrain``) into ``model`` (a Segmenter or a
    ``trainer.detection.Detector``: any model whose MinkUNet is ``model.backbone``), built for ``arch``;
    returns the checkpoint's model config."""
    ck = _pretraining(checkpoint)
    if ck["model_config"]["arch"] != arch:
        raise ValueError(f"checkpoint {checkpoint} holds a {ck['model_config']['arch']} backbone, not {arch}: "
                         f"drop --model or give the same one")
    state = {k[len("backbone."):]: v for k, v in ck["model"].items() if k.startswith("backbone.")}
    model.backbone.load_state_dict(state)
    return ck["model_config"]


def new_segmenter(arch: str, checkpoint: str | None, seed: int, num_classes: int | None = None
                  ) -> tuple[Segmenter, str]:
    """A segmenter of ``num_classes`` classes (default: nuScenes' 16; fine-tuning passes its store's) to train
    or probe: its backbone from a pretraining checkpoint, whatever store it was pretrained on, or random
    (initialised after ``torch.manual_seed(seed)``); returns it and where its backbone came from."""
    torch.manual_seed(seed)
    model = Segmenter(arch) if num_classes is None else Segmenter(arch, num_classes)
    if checkpoint is None:
        return model, "random initialisation"
    load_backbone(model, checkpoint, arch)
    return model, checkpoint


def segmenter_record(model: Segmenter, arch: str, voxel_size: float, class_names: tuple[str, ...] | None = None,
                     **about) -> dict:
    """What a segmenter file holds: weights plus everything needed to use them without the run's
    command line (architecture, voxel size, input scale, the evaluation class of each output, head), plus
    ``about`` (how it was made, training state for resuming). ``class_names``: of the outputs, in order (the
    store's evaluation classes; default: nuScenes')."""
    from pipeline.classes import EVAL_CLASSES

    classes = list(class_names or EVAL_CLASSES[1:1 + model.classifier.out_features])
    if len(classes) != model.classifier.out_features:
        raise ValueError(f"segmenter_record: {len(classes)} class names for {model.classifier.out_features} outputs")
    return {"kind": SEGMENTER_KIND, "format": SEGMENTER_FORMAT, "model": model.state_dict(), "arch": arch,
            "voxel_size": voxel_size, "input_scale": list(INPUT_SCALE), "classes": classes,
            "head": f"Linear(BatchNorm1d({model.classifier.in_features}), {model.classifier.out_features})",
            **about}


#: each fine-tuned file: its kind, its format, the task that writes it and the command that makes it
HEAD_FILES = {
    "segmenter": (SEGMENTER_KIND, SEGMENTER_FORMAT, "segmentation",
                  "cdtrain finetune --pretrained {path} (add --linear-probe to keep the backbone frozen)"),
    "detector": (DETECTOR_KIND, DETECTOR_FORMAT, "detection", "cdtrain finetune --task detection --pretrained {path}"),
}


def _read_head_file(path: str, name: str) -> dict:
    """The record of a ``name`` file ("segmenter" or "detector"); the other kind, a pretraining checkpoint,
    an unknown file or another format is refused in one line that says what it is and what to do."""
    kind, fmt, task, make = HEAD_FILES[name]
    ck = read_checkpoint(path)
    for other, (other_kind, _, other_task, _) in HEAD_FILES.items():
        if other != name and ck.get("kind") == other_kind:
            raise ValueError(f"{path} is a {other} (cdtrain finetune --task {other_task}), not a {name}: it has no "
                             f"{task} head")
    if ck.get("kind") != kind:
        if is_pretraining_checkpoint(ck):
            raise ValueError(f"{path} is a pretraining checkpoint (cdtrain pretrain): it has no {task} head; train "
                             f"one first with {make.format(path=path)}")
        raise ValueError(f"{path} is not a {name} file written by cdtrain finetune"
                         + (" --task detection" if name == "detector" else ""))
    if ck.get("format") != fmt:
        raise ValueError(f"{path} is {name} format {ck.get('format')}; this version reads format {fmt}")
    return ck


def load_segmenter(path: str) -> tuple[Segmenter, dict]:
    """A segmenter file (``cdtrain finetune``) -> (model in eval mode, its record without the weights).
    A pretraining checkpoint or an unknown file is refused in one line that says what to do."""
    ck = _read_head_file(path, "segmenter")
    model = Segmenter(ck["arch"], len(ck["classes"]))
    model.load_state_dict(ck["model"])
    model.eval()
    return model, {k: v for k, v in ck.items() if k not in ("model", "optimizer")}


# ---------------------------------------------------------------------------------------------------
# detectors


def detector_record(model, arch: str, voxel_size: float, **about) -> dict:
    """What a detector file holds: weights plus everything needed to use them without the run's command
    line (architecture, voxel size, input scale, the detection config: grid, classes, decoding), plus
    ``about`` (how it was made, training state for resuming)."""
    return {"kind": DETECTOR_KIND, "format": DETECTOR_FORMAT, "model": model.state_dict(), "arch": arch,
            "voxel_size": voxel_size, "input_scale": list(INPUT_SCALE), "detection_config": model.cfg.to_dict(),
            **about}


def load_detector(path: str):
    """A detector file (``cdtrain finetune --task detection``) -> (``trainer.detection.Detector`` in eval
    mode, its record without the weights). A segmenter, a pretraining checkpoint or an unknown file is
    refused in one line."""
    from trainer.config import DetectionConfig
    from trainer.detection import Detector

    ck = _read_head_file(path, "detector")
    cfg = DetectionConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in ck["detection_config"].items()})
    model = Detector(ck["arch"], cfg, ck["voxel_size"])
    model.load_state_dict(ck["model"])
    model.eval()
    return model, {k: v for k, v in ck.items() if k not in ("model", "optimizer")}
