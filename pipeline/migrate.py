"""``cdpipe migrate OLD --out NEW``: rewrite a store of an older schema (1 to 5) as the current one,
without running the teacher again.

Every store before schema 6 is a nuScenes store: the new one records nuScenes' class set and LiDAR
(attributes ``classes`` and ``sensors``, as ``cdpipe extract --dataset nuscenes`` writes them). A schema 5
store needs nothing else: every array (its boxes included) is copied unchanged, without the tables.

What every older store lacks is each sweep's annotated 3D boxes and LiDAR-to-global transform (version
5): both are read from the dataset's tables (the dataroot the store records, or ``--dataroot``) by each
sweep's sample token, with the rule of ``cdpipe extract`` (``pipeline/boxes.py``); the box arrays are
padded to the most boxes of any sweep the store names. Without the tables, ``--no-boxes`` writes the
store without them (attribute ``has_boxes`` false, no box arrays, no ``global_from_lidar``); otherwise
migrate refuses, asking for ``--dataroot``. A schema 4 store keeps its layout and encoding, and every
array is copied unchanged.

Every store before schema 4 has one feature per point: the new store has the ``points`` layout in
``float16`` (attributes ``layout``, ``feature_encoding`` and ``patch_grid``). A patch-layout store cannot
be made from it without the teacher (the per-point features do not give back the maps): re-extract for
that. What a schema 1 or 2 store also lacks, and how the new one gets it:

- every chunk is written again with the current codecs, so each carries its crc32c checksum;
- ``failure`` and ``warnings`` are empty (the old job recorded neither; its incomplete sweeps stay
  incomplete, ``done`` is copied);
- ``camera_hw``, the original size of each camera's image, is read from the dataset's tables by sample
  token (the dataroot the store records, or ``--dataroot``);
- the teacher attribute gains how the teacher was built and fed (``create_model``, ``resize``...), from
  its recorded name, architecture and input size; the PIL version the old job used was not recorded
  (null);
- schema 1 only: its free occupancy voxels were drawn anywhere along the rays, so the occupancy
  targets are computed again from the stored points, with the recorded grid and seed, as ``extract``
  does today.

Points, labels, features, valid, camera, pixel, tokens and timestamps (a schema 3 or 4 store: every array)
are copied unchanged.
"""

from __future__ import annotations

import datetime as _dt
import os

import numpy as np

from pipeline.classes import DETECTION_CLASSES, LabelClasses
from pipeline.errors import ExtractError
from pipeline.frames import SENSORS as NUSCENES_SENSORS
from pipeline.store import ARRAY_SPECS, SCHEMA_VERSION, StoreError, check_out, expected_arrays, local_path, patch_grid
from pipeline.store_writer import StoreWriter


def migrate(old: str, out: str, dataroot: str | None = None, command: str = "", progress: bool = True,
            boxes: bool = True) -> dict:
    """Write ``out``, the current-schema copy of the store at ``old``; returns {sweeps, from_schema, out,
    has_boxes}. ``boxes`` False writes it without boxes (``has_boxes`` false) instead of reading the tables."""
    import zarr
    from tqdm import tqdm

    from pipeline.occupancy import OccupancyGrid, occupancy_targets

    try:
        src = zarr.open_group(old, mode="r")
        attrs = dict(src.attrs)
    except Exception as e:
        raise StoreError(f"no store at {old}: {type(e).__name__}: {e}") from None
    version = attrs.get("schema_version")
    if version == SCHEMA_VERSION:
        raise StoreError(f"{old} already has schema_version {SCHEMA_VERSION}: nothing to migrate")
    if version not in (1, 2, 3, 4, 5):
        raise StoreError(f"{old} has schema_version {version!r}; cdpipe migrate upgrades versions 1 to 5")
    out = local_path(out)
    partial = out.rstrip("/") + ".migrating"  # renamed to ``out`` once complete: no half-migrated store at --out
    for path in (out, partial):
        if os.path.exists(path):
            raise StoreError(f"{path} exists; migrate writes a new store (the old one is left as it is)"
                             + ("; it is a migration that stopped: delete it and rerun" if path == partial else ""))
    check_out(out, overwrite=False)
    try:
        new = _current_attrs(attrs, version, dataroot, command)
    except (KeyError, TypeError) as e:
        raise StoreError(f"{old}: its attributes lack what schema {version} requires "
                         f"({type(e).__name__}: {e})") from None
    done_all = src["done"][:]
    tables = _Tables(attrs, new["dataset"]["dataroot"])
    camera_hw = src["camera_hw"][:] if version >= 3 else _camera_sizes(src, attrs, tables, done_all)
    if version == 5:  # its boxes, if it has them, are copied as they are
        boxes = bool(attrs.get("has_boxes"))
    elif boxes:
        sweep_boxes, global_from_lidar = _boxes(src, tables, done_all)
        new["max_boxes"] = max(1, max(map(len, sweep_boxes), default=0))
    new["has_boxes"] = boxes
    occ = new["occupancy"]
    writer = StoreWriter(partial, new)
    grid = OccupancyGrid(voxel_size=occ["voxel_size_m"], lower=tuple(occ["lower"]), shape=tuple(occ["shape"]),
                         free_per_occupied=occ["free_per_occupied"], near_surface_m=occ["near_surface_m"])
    n, k, q_max = new["num_sweeps"], new["sweeps_per_shard"], new["max_queries"]
    copied = [spec.name for spec in expected_arrays(new) if spec.name in src and spec.name != "done"]
    for s0 in tqdm(range(0, n, k), desc="migrate sweeps", unit="task", disable=not progress):
        rows = slice(s0, min(s0 + k, n))
        # the arrays the old store lacks (failure and warnings before schema 3) are written as their fill, so
        # that every chunk exists
        block = writer.blank(rows.stop - rows.start)
        block.update({name: src[name][rows] for name in copied})
        block["camera_hw"] = camera_hw[rows]
        block["done"] = done = src["done"][rows]
        if boxes and version < 5:
            for i in np.nonzero(done == 1)[0]:
                for name, values in sweep_boxes[s0 + i].arrays().items():
                    block[name][i, :len(values)] = values
                block["num_boxes"][i] = len(sweep_boxes[s0 + i])
                block["global_from_lidar"][i] = global_from_lidar[s0 + i]
        if version == 1:  # the occupancy targets of today's rule, from the stored points
            for name in ("occ_voxels", "occ_labels", "num_queries"):
                block[name] = np.full(block[name].shape, ARRAY_SPECS[name].fill, block[name].dtype)
            for i in np.nonzero(done == 1)[0]:
                xyz = block["points"][i, :int(block["num_points"][i]), :3]
                voxels, labels = occupancy_targets(xyz, grid, np.random.default_rng([occ["seed"], s0 + int(i)]))
                if len(labels) > q_max:
                    raise StoreError(f"{old}: sweep {s0 + i} gets {len(labels)} occupancy queries, more than "
                                     f"max_queries {q_max}; re-extract it")
                block["occ_voxels"][i, :len(labels)] = voxels
                block["occ_labels"][i, :len(labels)] = labels
                block["num_queries"][i] = len(labels)
        writer.write_sweeps(s0, block)  # done last, as extract writes
    os.rename(partial, out)
    return {"out": out, "sweeps": int(n), "from_schema": version, "has_boxes": boxes}


def _current_attrs(attrs: dict, version: int, dataroot: str | None, command: str) -> dict:
    """The attributes of the migrated store."""
    from pipeline.occupancy import FREE_DRAW, NEAR_SURFACE_M
    from pipeline.teacher import how_built

    new = dict(attrs)
    new["schema_version"] = SCHEMA_VERSION
    t = dict(attrs["teacher"])
    if version < 4:  # every earlier store holds a float16 feature per point
        new.update(layout="points", feature_encoding="float16", patch_grid=patch_grid(t))
    if version < 5:
        new.update(max_boxes=0, has_boxes=False, detection_classes=list(DETECTION_CLASSES))  # boxes: set by migrate
    new.update(classes=LabelClasses.of("nuscenes").to_dict(), sensors=dict(NUSCENES_SENSORS))  # every older store
    new["provenance"] = {**attrs["provenance"], "migrated": _migrated(version, command, attrs["provenance"])}
    complete = "device" in t and "pretrained_cfg_overlay" in (t.get("create_model") or {})
    if version >= 3 and complete:  # the teacher and occupancy records are as today's
        return _moved(new, attrs, dataroot)
    # schema 1 and 2, and the first schema-3 stores (their teacher record lacked the device and the
    # weights file): the record is written again from what the store knows
    random = t["weights"] == "random"
    # the earliest stores had no architecture record; their random teachers were built with init_values 1
    t.setdefault("architecture", {"init_values": 1.0} if random else {})
    t.setdefault("stand_in", None)
    weights = None if random else _weights_path(attrs)
    t.update(how_built(t["name"], t["architecture"], t["image_size"], weights,
                       pil_version=(t.get("resize") or {}).get("version"), stand_in=t["stand_in"]))
    if weights is None and not random:  # the file is unknown: say so rather than guess
        t["create_model"]["pretrained_cfg_overlay"] = {"file": None}
    new["teacher"] = t
    # schema 1 had no near-surface rule: its targets are computed again with today's default
    new["occupancy"] = {"near_surface_m": NEAR_SURFACE_M, **attrs["occupancy"], "free_draw": FREE_DRAW}
    return _moved(new, attrs, dataroot)


def _migrated(version: int, command: str, provenance: dict) -> dict:
    """This migration's record; an earlier one (a store migrated before) is kept under ``previous``."""
    record = {"from_schema_version": version, "command": command,
              "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if provenance.get("migrated"):
        record["previous"] = provenance["migrated"]
    return record


def _moved(new: dict, attrs: dict, dataroot: str | None) -> dict:
    """``new`` with the dataset's dataroot moved to ``dataroot`` when given (the old one kept in provenance)."""
    if dataroot and os.path.abspath(dataroot) != attrs["dataset"]["dataroot"]:
        new["provenance"]["migrated"]["old_dataroot"] = attrs["dataset"]["dataroot"]
        new["dataset"] = {**attrs["dataset"], "dataroot": os.path.abspath(dataroot)}
    return new


def _weights_path(attrs: dict) -> str | None:
    """The teacher weights file named in the extract command that wrote the store, if it is there."""
    words = (attrs.get("provenance") or {}).get("command", "").split()
    if "--teacher-weights" in words[:-1]:
        path = os.path.abspath(words[words.index("--teacher-weights") + 1])
        return path if os.path.isfile(path) else None
    return None


class _Tables:
    """The dataset's tables (the devkit's), loaded on first use from ``dataroot``: a store before schema 3
    needs them for its camera image sizes, any older store for its boxes."""

    def __init__(self, attrs: dict, dataroot: str):
        self.attrs, self.dataroot, self._nusc = attrs, dataroot, None

    def nusc(self, what: str):
        """The tables, or a ``StoreError`` saying that ``what`` comes from them and how to point at them."""
        from pipeline.frames import load_nuscenes

        if self._nusc is None:
            try:
                self._nusc = load_nuscenes(self.dataroot, self.attrs["dataset"]["version"])
            except (FileNotFoundError, OSError) as e:
                raise StoreError(f"{what} come from the dataset's tables, which are not at {self.dataroot} ({e}); "
                                 f"pass --dataroot" + (", or --no-boxes to migrate without boxes"
                                                       if what.startswith("the boxes") else "")) from None
        return self._nusc

    def sample(self, token: str, s: int) -> dict:
        """The sample record of sweep ``s``, or a ``StoreError`` when the tables lack it."""
        try:
            return self._nusc.get("sample", str(token))
        except KeyError:
            raise StoreError(f"sample {token} (sweep {s}) is not in the tables at {self.dataroot}; pass the "
                             f"--dataroot the store was extracted from") from None


def _boxes(src, tables: _Tables, done: np.ndarray) -> tuple[list, np.ndarray]:
    """Each sweep's annotated boxes (``boxes.SweepBoxes``; none for a sweep without a sample token) and
    LiDAR-to-global transform [S, 4, 4] (NaN without a token), from the tables by the sweep's sample token,
    as extract computes them. A complete sweep whose tables cannot give them (a bad annotation, a LiDAR
    record that is not the one the store names) is a ``StoreError``; an incomplete one is left without
    boxes (its rerun extract reads them)."""
    from pipeline.boxes import SweepBoxes, sweep_boxes
    from pipeline.frames import LIDAR, duplicated_tokens, pose_problem
    from pipeline.geometry import make_transform

    nusc = tables.nusc("the boxes and LiDAR poses of schema 5")
    duplicates = duplicated_tokens(nusc)
    tokens, lidar_tokens = src["sample_token"][:], src["lidar_token"][:]
    out, transforms = [], np.full((len(tokens), 4, 4), np.nan)
    for s, token in enumerate(tokens):
        out.append(SweepBoxes.empty())
        if not token:
            continue  # a sweep the old job never reached
        try:
            sample = tables.sample(token, s)
            lidar = nusc.get("sample_data", sample["data"][LIDAR])
            if lidar["token"] != lidar_tokens[s]:
                raise ExtractError(f"its {LIDAR} sample_data is {lidar['token']} in the tables at {tables.dataroot}, "
                                   f"{lidar_tokens[s]} in the store: pass the --dataroot it was extracted from")
            pose, cs = nusc.get("ego_pose", lidar["ego_pose_token"]), nusc.get("calibrated_sensor",
                                                                               lidar["calibrated_sensor_token"])
            problem = pose_problem(pose) or pose_problem(cs)
            if problem:
                raise ExtractError(f"the pose of its {LIDAR}: {problem}")
            twice = [a for a in sample["anns"] if a in duplicates["sample_annotation"]]
            if twice:
                raise ExtractError(f"sample_annotation token {twice[0]} appears more than once in "
                                   f"sample_annotation.json")
            transforms[s] = (make_transform(np.asarray(pose["rotation"]), np.asarray(pose["translation"]))
                             @ make_transform(np.asarray(cs["rotation"]), np.asarray(cs["translation"])))
            out[s] = sweep_boxes(nusc, sample, transforms[s])
        except (ExtractError, KeyError, TypeError, ValueError) as e:  # a record missing or malformed
            if done[s] == 1:
                raise StoreError(f"sweep {s} (sample {token}): {e}; fix the tables, or pass --no-boxes to "
                                 f"migrate without boxes") from None
            out[s] = SweepBoxes.empty()
    return out, transforms


def _camera_sizes(src, attrs: dict, tables: _Tables, done: np.ndarray) -> np.ndarray:
    """[S, C, 2] (height, width) of each complete sweep's camera images, from the dataset's sample_data
    records (0 for a sweep that is not complete, as its other arrays are fill)."""
    nusc = tables.nusc("the camera image sizes")
    tokens = src["sample_token"][:]
    out = np.zeros((len(tokens), len(attrs["cameras"]), 2), np.int32)
    for s, token in enumerate(tokens):
        if not token or done[s] != 1:
            continue  # a sweep the old job never completed
        data = tables.sample(token, s)["data"]
        for c, channel in enumerate(attrs["cameras"]):
            if channel in data:
                record = nusc.get("sample_data", data[channel])
                out[s, c] = record["height"], record["width"]
    return out
