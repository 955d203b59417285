"""A detector's boxes scored by the nuScenes devkit's detection evaluation.

Predictions come per sweep in its LiDAR frame (what ``trainer.detection.decode`` gives, with class names);
``detection_submission`` takes them to the global frame with the store's ``global_from_lidar`` and writes
the devkit's submission; ``devkit_scores`` runs ``DetectionEval`` (config ``detection_cvpr_2019``) on the
store's dataroot and val split. Imports the devkit: needs the pipeline extra (``cdtrain evaluate --task
detection`` loads this module by name, so that trainer/ reaches no devkit import).
"""

from __future__ import annotations

import json
import os

import numpy as np
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.constants import TP_METRICS
from nuscenes.eval.detection.evaluate import DetectionEval

from pipeline.classes import DETECTION_CLASSES
from pipeline.frames import load_nuscenes
from pipeline.geometry import boxes_to_frame, yaw_quaternion
from pipeline.store import open_store, read_boxes

META = {"use_camera": False, "use_lidar": True, "use_radar": False, "use_map": False, "use_external": False}
EVAL_CONFIG = "detection_cvpr_2019"
MOVING_M_S = 0.2  # a box faster than this gets the class's moving attribute
#: The attribute of a predicted box of each class, (at rest, moving); barriers and cones have none.
DEFAULT_ATTRIBUTES = {
    **dict.fromkeys(("car", "truck", "bus", "trailer", "construction_vehicle"), ("vehicle.parked", "vehicle.moving")),
    "pedestrian": ("pedestrian.standing", "pedestrian.moving"),
    **dict.fromkeys(("motorcycle", "bicycle"), ("cycle.without_rider", "cycle.with_rider")),
    **dict.fromkeys(("barrier", "traffic_cone"), ("", "")),
}


def default_attribute(name: str, velocity) -> str:
    """The attribute given to a predicted box of class ``name`` moving at ``velocity`` (vx, vy; m/s, NaN
    when unknown: at rest)."""
    if name not in DEFAULT_ATTRIBUTES:
        raise ValueError(f"detection class {name!r} is not one of the devkit's {list(DEFAULT_ATTRIBUTES)}")
    speed = float(np.hypot(*np.asarray(velocity, np.float64)[:2]))
    return DEFAULT_ATTRIBUTES[name][int(np.isfinite(speed) and speed > MOVING_M_S)]


def split_samples(group, split: str = "val") -> list[tuple[int, str]]:
    """(sweep row, sample token) of every sweep of the store's scenes of ``split``."""
    tokens = group["sample_token"]
    return [(s, str(tokens[s])) for scene in group.attrs["scenes"] if scene["split"] == split
            for s in range(scene["first_sweep"], scene["first_sweep"] + scene["num_sweeps"])]


def sweep_results(sample: str, global_from_lidar: np.ndarray, boxes: dict) -> list[dict]:
    """One sweep's boxes in its LiDAR frame (``centre`` [n,3], ``size`` [n,3] as (w, l, h), ``yaw`` [n],
    ``velocity`` [n,2], ``name`` [n] class names, ``score`` [n], optional ``attribute`` [n]) -> the devkit's
    result records of sample ``sample``, in the global frame."""
    centre, yaw, velocity = boxes_to_frame(global_from_lidar, np.asarray(boxes["centre"], np.float64).reshape(-1, 3),
                                           np.asarray(boxes["yaw"], np.float64).reshape(-1),
                                           np.asarray(boxes["velocity"], np.float64).reshape(-1, 2))
    names = [str(n) for n in boxes["name"]]
    attributes = boxes.get("attribute")
    if attributes is None:
        attributes = [default_attribute(n, v) for n, v in zip(names, velocity)]
    return [{"sample_token": sample, "translation": c.tolist(), "size": np.asarray(size, np.float64).tolist(),
             "rotation": q.tolist(), "velocity": v.tolist(), "detection_name": name,
             "detection_score": float(score), "attribute_name": str(attribute)}
            for c, size, q, v, name, score, attribute in zip(centre, boxes["size"], yaw_quaternion(yaw), velocity,
                                                              names, boxes["score"], attributes)]


def detection_submission(store, predictions: list[dict], split: str = "val") -> dict:
    """A nuScenes detection submission of ``predictions`` (one dict per sweep: ``sample_token`` and the
    boxes of ``sweep_results``), each sweep's boxes taken to the global frame by the store's
    ``global_from_lidar``; every sample of the store's ``split`` scenes is listed (with no box where no
    prediction names it). A prediction of a sample outside the split is refused, naming it."""
    group = open_store(store) if isinstance(store, str) else store
    rows = {token: s for s, token in split_samples(group, split)}
    results: dict[str, list[dict]] = {token: [] for token in rows}
    for p in predictions:
        token = str(p["sample_token"])
        if token not in rows:
            raise ValueError(f"prediction of sample {token}: not a sample of the store's {split} scenes")
        results[token] += sweep_results(token, read_boxes(group, rows[token])["global_from_lidar"], p)
    return {"meta": dict(META), "results": results}


def devkit_split(version: str) -> str:
    """The devkit's split name of the val scenes of ``version``."""
    return "mini_val" if "mini" in version else "val"


def devkit_scores(store, submission: dict, out: str) -> dict:
    """``submission`` scored by the devkit's ``DetectionEval`` (``detection_cvpr_2019``) on the store's
    dataroot and val split, its files (submission.json, the devkit's metrics_summary.json) written in ``out``:
    the devkit's mAP, NDS, mean TP errors and per-class AP over all 10 classes (a class absent from the val
    truth scores AP 0), and mAP, NDS and TP errors by the devkit's formulas over the classes present in the
    truth it evaluates (after its own filters)."""
    attrs = (open_store(store) if isinstance(store, str) else store).attrs
    version = attrs["dataset"]["version"]
    nusc = load_nuscenes(attrs["dataset"]["dataroot"], version)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "submission.json")
    with open(path, "w") as f:
        json.dump(submission, f)
    cfg = config_factory(EVAL_CONFIG)
    evaluation = DetectionEval(nusc, cfg, path, devkit_split(version), out, verbose=False)
    metrics = evaluation.evaluate()[0].serialize()
    with open(os.path.join(out, "metrics_summary.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    present = sorted({box.detection_name for box in evaluation.gt_boxes.all}, key=DETECTION_CLASSES.index)
    ap = {name: metrics["mean_dist_aps"][name] for name in present}
    tp = {metric: float(np.nanmean([metrics["label_tp_errors"][name][metric] for name in present]))
          if present else None for metric in TP_METRICS}
    map_present = float(np.mean(list(ap.values()))) if present else None
    nds_present = None if map_present is None else (
        (cfg.mean_ap_weight * map_present + sum(1 - min(1.0, e) for e in tp.values() if np.isfinite(e)))
        / (cfg.mean_ap_weight + len(tp)))
    return {"mAP": metrics["mean_ap"], "NDS": metrics["nd_score"], "tp_errors": metrics["tp_errors"],
            "ap": metrics["mean_dist_aps"], "present": present, "mAP_present": map_present,
            "NDS_present": nds_present, "tp_errors_present": tp, "predicted": len(evaluation.pred_boxes.all),
            "truth": len(evaluation.gt_boxes.all), "eval_config": EVAL_CONFIG, "eval_split": devkit_split(version),
            "metrics": os.path.join(out, "metrics_summary.json")}


def score_predictions(store, predictions: list[dict], out: str) -> dict:
    """``predictions`` (see ``detection_submission``) of the store's val sweeps scored by the devkit
    (``devkit_scores``), the submission and the devkit's metrics written in ``out``."""
    return devkit_scores(store, detection_submission(store, predictions), out)
