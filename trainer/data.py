"""Store -> samples: a random-access dataset over a teacher-feature store, and 3D augmentation (the
batch it feeds is ``trainer/batch.py``).

Per sweep the dataset returns a ``Sample``: its points (intensity scaled to 0..255 by the store's
``sensors.intensity_max``; labels, when the store has them, mapped to its evaluation classes 1..K by its
``classes``, 0 = ignore) and the
targets it was asked for: ``teacher`` (each point's teacher feature and valid flag) and ``occupancy``
(the occupancy queries, voxel centres, with labels and the index of each query's nearest point) and
``boxes`` (the sweep's annotated 3D boxes, ``pipeline.store.read_boxes``, augmented with the points).
Fine-tuning and evaluation ask for none of them (``SEGMENTATION``), which skips reading the features and
the nearest-point search; the detection head asks for ``boxes`` only (``DETECTION``).
With ``max_points`` set, a random subset of that many points is kept first (drawn from
``stream_rng(CAP_STREAM, seed, epoch, sweep)``; evaluation keeps every point). With masking on
(``mask_ratio``, pretraining), the points of randomly hidden cubes are dropped before
anything else and only the queries in hidden cubes are kept, balanced by their offset to the nearest
visible point (``trainer/occupancy.py``); the mask is drawn from
``stream_rng(MASK_STREAM, seed, epoch, sweep)``.
Augmentation is one similarity transform per sweep applied to points and queries alike:
``x <- s R_z(theta) F x`` with F a random flip of x and/or y, theta uniform in [0, 2 pi), s uniform in
[1 - scale, 1 + scale]; it is drawn from ``stream_rng(AUGMENT_STREAM, seed, epoch, sweep)``, so it does not depend
on the number of loader workers. Nearest points are found before augmentation (a similarity keeps them).
"""

from __future__ import annotations

import os

import numpy as np
import torch

from pipeline.store import (
    BadSweep,
    BadValues,
    chunk_key,
    feature_arrays,
    open_store,
    points_problem,
    read_boxes,
    read_column,
    store_classes,
    store_url,
    sweep_rows,
)
from trainer.batch import Sample
from trainer.config import DataConfig
from trainer.occupancy import balance_by_offset, hide

# Random streams: every random draw of the trainer comes from ``stream_rng(STREAM, seed, *key)``, with a
# stream of its own and a key of fixed length, so that adding or changing one kind of draw never shifts
# another. The stream goes first because numpy pads a short key with zeros ([a, b] and [a, b, 0] draw the
# same numbers). Changing a value changes every result drawn with it.
AUGMENT_STREAM = 1  # (epoch, sweep): the augmentation of a sweep
MASK_STREAM = 2  # (epoch, sweep): the occupancy mask
CAP_STREAM = 3  # (epoch, sweep): the point cap
QUERY_STREAM = 4  # (epoch, sweep): the occupancy queries kept
EPOCH_ORDER_STREAM = 5  # (epoch,): the order of the sweeps in a pretraining epoch
PROBE_POINTS_STREAM = 6  # (sweep,): the labelled points a linear probe fits on
FINETUNE_BATCH_STREAM = 7  # (step,): the sweeps of a fine-tuning step
CORRUPTION_STREAM = 8  # (sweep,): a corruption's random draws
SPLIT_STREAM = 9  # (): the order in which label subsets take the train scenes
SWEEP_SPLIT_STREAM = 10  # (): the order in which label subsets by sweep take the train sweeps
STREAMS = (AUGMENT_STREAM, MASK_STREAM, CAP_STREAM, QUERY_STREAM, EPOCH_ORDER_STREAM, PROBE_POINTS_STREAM,
           FINETUNE_BATCH_STREAM, CORRUPTION_STREAM, SPLIT_STREAM, SWEEP_SPLIT_STREAM)


def stream_rng(stream: int, seed: int, *key: int) -> np.random.Generator:
    """The generator of one random draw: ``default_rng([stream, seed, *key])``."""
    return np.random.default_rng([stream, seed, *key])


RING_CORRUPTIONS = ("beams_missing", "sparser_sensor")  # corruptions that read each point's ring
TARGETS = ("teacher", "occupancy", "boxes")  # what a dataset can add to points and labels
PRETRAINING = ("teacher", "occupancy")
DETECTION = ("boxes",)  # the detection head: points and the sweep's annotated boxes
SEGMENTATION: tuple[str, ...] = ()  # fine-tuning and scoring: points and labels only


def check_corruption(corruption, attrs: dict, store: str) -> None:
    """Refuse (``ValueError``, one line) a corruption the store's LiDAR record rules out: one that drops whole
    rings (``RING_CORRUPTIONS``) on a store whose points keep no ring (attribute ``sensors.has_ring``).
    ``corruption`` is a ``trainer.corruptions.Corruption``; ``attrs`` the store's attributes."""
    if corruption.kind in RING_CORRUPTIONS and not attrs["sensors"]["has_ring"]:
        raise ValueError(f"corruption {corruption.name}: it drops whole rings, and store {store} keeps no ring per "
                         f"point ({attrs['dataset']['name']}'s files have none); use jitter or fog")




def store_sweeps(group, split: str, names: tuple[str, ...] | None = None, on_damage=None,
                 rows: tuple[int, ...] | None = None) -> np.ndarray:
    """Indices of the complete sweeps of the scenes in ``split`` (and in ``names``, and among the store rows
    ``rows``, when given). A damaged chunk of ``done`` or ``scene_index`` raises, or with
    ``on_damage(first_sweep, error)`` leaves its sweeps out."""
    n, step = group["done"].shape[0], group["done"].chunks[0]
    unreadable = np.zeros(n, bool)

    def mark(s0: int, error) -> None:
        unreadable[s0:s0 + step] = True
        for s in range(s0, min(s0 + step, n)):  # every sweep of the chunk is lost, and recorded
            on_damage(s, error)

    done = read_column(group, "done", on_damage=mark if on_damage else None).astype(bool)
    scene_of = read_column(group, "scene_index", on_damage=mark if on_damage else None)
    done &= ~unreadable
    scene_of = np.where(unreadable, 0, scene_of)
    scenes = group.attrs["scenes"]
    keep = np.array([(split == "all" or sc["split"] == split) and (names is None or sc["name"] in names)
                     for sc in scenes])
    chosen = np.nonzero(done & keep[scene_of])[0]
    return chosen if rows is None else np.intersect1d(chosen, np.asarray(rows, dtype=np.int64))


def incomplete_sweeps(group, split: str, names: tuple[str, ...] | None, complete: np.ndarray,
                      rows: tuple[int, ...] | None = None) -> dict[str, int]:
    """How many sweeps of the scenes in ``split`` (and ``names``, and among the store rows ``rows``), by the
    store's scene table, are not among ``complete``: ``failed`` (the extract recorded why) and
    ``not_written`` (an extract still running, or interrupted; also a sweep whose record cannot be read).
    Reads only the ``failure`` chunks that hold such sweeps: nothing more for a complete store."""
    wanted = [np.arange(sc["first_sweep"], sc["first_sweep"] + sc["num_sweeps"]) for sc in group.attrs["scenes"]
              if (split == "all" or sc["split"] == split) and (names is None or sc["name"] in names)]
    wanted = np.concatenate(wanted) if wanted else np.zeros(0, np.int64)
    if rows is not None:
        wanted = np.intersect1d(wanted, np.asarray(rows, dtype=np.int64))
    missing = np.setdiff1d(wanted, complete)
    array = group["failure"]
    step = array.chunks[0]
    failed = 0
    for s0 in np.unique(missing // step) * step:
        try:
            why = array[s0:s0 + step]
        except Exception:  # a damaged chunk: its sweeps count as not written
            continue
        failed += sum(1 for s in missing[(missing >= s0) & (missing < s0 + step)] if why[s - s0])
    return {"failed": failed, "not_written": len(missing) - failed}


class StoreDataset(torch.utils.data.Dataset):
    """Sweep i of the chosen scenes, read and prepared as a ``Sample`` with ``targets`` (some of
    ``TARGETS``; see the module docstring).

    A sweep whose chunks do not decode, or hold values no extract writes (non-finite points or features,
    a point beyond ``MAX_RANGE_M``, a label outside the classes), raises a ``BadSweep`` (one line naming
    array, sweep and chunk), unless ``skip_log`` is given: then it is recorded there (one JSON line per
    damaged sweep, appended) and the next sweep in order is returned in its place, so training batches
    stay full and deterministic.
    """

    def __init__(self, cfg: DataConfig, skip_log: str | None = None, targets: tuple[str, ...] = PRETRAINING):
        unknown = set(targets) - set(TARGETS)
        if unknown:
            raise ValueError(f"StoreDataset targets {sorted(unknown)}: choose among {TARGETS}")
        self.cfg = cfg
        self.targets = tuple(targets)
        self.skip_log = skip_log
        self.skipped: set[int] = set()  # damaged sweeps met by this process
        group = open_store(cfg.store)
        self.attrs = dict(group.attrs)
        self.classes = store_classes(self.attrs)  # labels -> evaluation classes 1..K, 0 = ignore
        self._lookup = self.classes.lookup
        # the student reads intensity on nuScenes' 0..255 scale (``batch.INPUT_SCALE``), whatever the LiDAR's
        self._intensity_to_255 = np.float32(255.0 / float(self.attrs["sensors"]["intensity_max"]))
        self.sweeps = store_sweeps(group, cfg.split, cfg.scenes, on_damage=self._skip if skip_log else None,
                                   rows=cfg.sweeps)
        # damaged sweeps are reported as skipped, not as unwritten
        self.incomplete = incomplete_sweeps(group, cfg.split, cfg.scenes, np.union1d(self.sweeps, sorted(self.skipped)),
                                            rows=cfg.sweeps)
        if len(self.sweeps) == 0:
            raise ValueError(f"store {cfg.store} has no complete sweeps in split {cfg.split!r}")
        occ = self.attrs["occupancy"]
        self.occ_lower = np.asarray(occ["lower"], dtype=np.float32)
        self.occ_voxel = float(occ["voxel_size_m"])
        self.epoch = 0
        self._group = None  # opened lazily in each loader worker
        self.corruption = None
        if cfg.corruption:
            from trainer.corruptions import parse

            self.corruption = parse(cfg.corruption)
            check_corruption(self.corruption, self.attrs, cfg.store)

    def __len__(self) -> int:
        return len(self.sweeps)

    @property
    def group(self):
        if self._group is None:
            self._group = open_store(self.cfg.store)
        return self._group

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_group"] = None
        return state

    def __getitem__(self, i: int) -> Sample:
        if self.skip_log is None:
            return self._item(int(self.sweeps[i]))
        for j in range(len(self.sweeps)):
            s = int(self.sweeps[(i + j) % len(self.sweeps)])
            if s in self.skipped:
                continue
            try:
                return self._item(s)
            except BadSweep as e:
                self._skip(s, e)
        raise BadSweep(f"every sweep of {self.cfg.store} in split {self.cfg.split!r} is damaged; see "
                       f"{self.skip_log}")

    def _skip(self, s: int, error: BadSweep) -> None:
        import json
        import sys

        self.skipped.add(s)
        print(f"warning: skipping sweep {s}: {error}", file=sys.stderr)
        os.makedirs(os.path.dirname(os.path.abspath(self.skip_log)), exist_ok=True)  # the run may not have made OUT yet
        with open(self.skip_log, "a") as f:  # one short line per write: appends from loader workers stay whole
            f.write(json.dumps({"sweep": s, "error": str(error)}) + "\n")

    def _item(self, s: int) -> Sample:
        cfg = self.cfg
        teacher = "teacher" in self.targets
        occupancy = "occupancy" in self.targets
        masked = cfg.mask.active  # hiding cubes needs the query voxels even when no queries are returned
        has_labels = self.attrs["has_labels"]
        fields = (("points",) + (("features", "valid") if teacher else ())
                  + (("occ_centres", "occ_labels") if occupancy or masked else ())
                  + (("labels",) if has_labels else ()))
        sweep = sweep_rows(self.group, s, fields)
        check_values(self.group, s, sweep)
        # every per-point array rides along with the points through each subset below
        per_point = {"points": sweep["points"], "labels": self._lookup[sweep["labels"]] if has_labels else None,
                     "teacher": sweep.get("features"), "valid": sweep.get("valid")}
        queries, occ = sweep.get("occ_centres"), sweep.get("occ_labels")

        def keep_points(keep) -> None:
            for key, value in per_point.items():
                if value is not None:
                    per_point[key] = value[keep]

        if self.corruption is not None:
            rng = stream_rng(CORRUPTION_STREAM, cfg.seed, s)
            keep, corrupted = self.corruption(per_point["points"], rng)
            keep_points(keep)
            per_point["points"] = corrupted
        if 0 < cfg.max_points < len(per_point["points"]):
            keep_points(np.sort(stream_rng(CAP_STREAM, cfg.seed, self.epoch, s)
                                .choice(len(per_point["points"]), cfg.max_points, replace=False)))
        hidden = None
        if masked:
            hidden, asked = hide(per_point["points"][:, :3], queries, self.occ_lower, self.occ_voxel, cfg.mask,
                                 stream_rng(MASK_STREAM, cfg.seed, self.epoch, s))
            keep_points(~hidden)
            queries, occ = queries[asked], occ[asked]
        points = per_point["points"]
        xyz = points[:, :3].astype(np.float32)
        nearest = None
        if occupancy:
            pick_rng = stream_rng(QUERY_STREAM, cfg.seed, self.epoch, s)
            if masked:  # nearest visible points, then queries balanced by offset
                nearest = _nearest(xyz, queries)
                pick = balance_by_offset(queries - xyz[nearest], occ, cfg.mask.bin_m, cfg.max_queries, pick_rng)
                nearest = nearest[pick]
            else:
                pick = np.arange(len(occ))
                if len(occ) > cfg.max_queries:  # keep the occupied/free balance
                    pick = np.concatenate([pick_rng.permutation(np.nonzero(occ == v)[0])[: cfg.max_queries // 2]
                                           for v in (1, 0)])
                nearest = _nearest(xyz, queries[pick])
            queries, occ = queries[pick].astype(np.float32), occ[pick].astype(np.float32)
        else:
            queries = occ = None
        boxes = read_boxes(self.group, s) if "boxes" in self.targets else None
        if cfg.augment:  # nearest points were found before: a similarity keeps them
            m = augmentation_matrix(stream_rng(AUGMENT_STREAM, cfg.seed, self.epoch, s), cfg.scale)
            xyz = xyz @ m.T
            if queries is not None:
                queries = queries @ m.T
            if boxes is not None:
                boxes = transform_boxes(boxes, m)
        return Sample(sweep=s, xyz=xyz, intensity=points[:, 3].astype(np.float32) * self._intensity_to_255,
                      labels=per_point["labels"],
                      teacher=per_point["teacher"], valid=per_point["valid"], queries=queries, occ=occ,
                      nearest=nearest, hidden=hidden, boxes=boxes)


def check_values(group, s: int, sweep: dict[str, np.ndarray]) -> None:
    """Raise ``BadValues`` naming the store, array and sweep when sweep ``s``'s rows hold what no extract
    writes: non-finite points or features, a point beyond ``MAX_RANGE_M``, a label outside the store's
    classes (a store from an older or foreign writer, or edited since; ``cdpipe verify`` lists them all)."""
    problems = []
    bad_points = points_problem(sweep["points"])
    if bad_points:
        problems.append(("points", bad_points))
    features = sweep.get("features")
    if features is not None and not _all_finite(features):
        problems.append(("features", f"{int((~np.isfinite(features)).any(axis=1).sum())} features hold NaN or inf"))
    labels = sweep.get("labels")
    classes = group.attrs["classes"]
    n_fine = len(classes["fine"])
    if labels is not None and len(labels) and int(labels.max()) >= n_fine:
        kind = "lidarseg" if classes["dataset"] == "nuscenes" else classes["dataset"]
        problems.append(("labels", f"labels up to {int(labels.max())}, outside the {n_fine} {kind} classes"))
    if problems:
        name, what = problems[0]
        name = name if name in group else feature_arrays(dict(group.attrs))[0]  # features from patch maps
        raise BadValues(f"{store_url(group)}: array {name}, sweep {s}, chunk {chunk_key(group[name], s)}: {what} "
                        f"(`cdpipe verify` lists every such sweep)")


def _all_finite(x: np.ndarray) -> bool:
    """``np.isfinite(x).all()``; for float16 by the exponent bits (all ones: inf or NaN), 3-4x faster on the
    features of every item (19 ms for 30,000 x 1024)."""
    if x.dtype == np.float16:
        return not ((x.view(np.uint16) & np.uint16(0x7C00)) == 0x7C00).any()
    return bool(np.isfinite(x).all())


def _nearest(points: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index [Q] int64 of the point of ``points`` [N,3] nearest each of ``queries`` [Q,3]."""
    from scipy.spatial import cKDTree

    return cKDTree(points).query(queries, k=1)[1].astype(np.int64)


def augmentation_matrix(rng: np.random.Generator, scale: float) -> np.ndarray:
    """s R_z(theta) F as a 3x3 float32 matrix (see the module docstring)."""
    flip = np.diag([-1.0 if rng.random() < 0.5 else 1.0, -1.0 if rng.random() < 0.5 else 1.0, 1.0])
    theta = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return (rng.uniform(1 - scale, 1 + scale) * rot @ flip).astype(np.float32)


def transform_boxes(boxes: dict[str, np.ndarray], m: np.ndarray) -> dict[str, np.ndarray]:
    """Boxes moved by the similarity ``m`` [3, 3] that augmented their sweep's points (``x <- m x``:
    a scale s, a rotation about z and flips of x or y; ``augmentation_matrix``): centres and velocities
    transformed, sizes scaled by s, the yaw that of the transformed heading. ``global_from_lidar`` is left
    as it is: it maps the sweep's frame before augmentation."""
    m = np.asarray(m, np.float64)
    s = abs(np.linalg.det(m)) ** (1 / 3)
    yaw = np.asarray(boxes["box_yaw"], np.float64)
    heading = np.stack([np.cos(yaw), np.sin(yaw)], axis=1) @ m[:2, :2].T
    out = dict(boxes)
    out["box_centre"] = (np.asarray(boxes["box_centre"], np.float64) @ m.T).astype(np.float32)
    out["box_size"] = (np.asarray(boxes["box_size"], np.float64) * s).astype(np.float32)
    out["box_yaw"] = np.arctan2(heading[:, 1], heading[:, 0]).astype(np.float32)
    out["box_velocity"] = (np.asarray(boxes["box_velocity"], np.float64) @ m[:2, :2].T).astype(np.float32)
    return out
