"""``cdpipe migrate OLD --out NEW``: rewrite a store of an older schema (1, 2 or 3) as the current one,
without running the teacher again.

Every older store has one feature per point: the new store has the ``points`` layout in ``float16``
(attributes ``layout``, ``feature_encoding`` and ``patch_grid``, version 4). A patch-layout store cannot
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

Points, labels, features, valid, camera, pixel, tokens and timestamps (a schema 3 store: every array) are
copied unchanged.
"""

from __future__ import annotations

import datetime as _dt
import os

import numpy as np

from pipeline.store import ARRAY_SPECS, SCHEMA_VERSION, StoreError, check_out, expected_arrays, local_path, patch_grid
from pipeline.store_writer import StoreWriter


def migrate(old: str, out: str, dataroot: str | None = None, command: str = "", progress: bool = True) -> dict:
    """Write ``out``, the current-schema copy of the store at ``old``; returns {sweeps, from_schema, out}."""
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
    if version not in (1, 2, 3):
        raise StoreError(f"{old} has schema_version {version!r}; cdpipe migrate upgrades versions 1, 2 and 3")
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
    camera_hw = src["camera_hw"][:] if version >= 3 else _camera_sizes(src, attrs, new["dataset"]["dataroot"], done_all)
    occ = new["occupancy"]
    writer = StoreWriter(partial, new)
    grid = OccupancyGrid(voxel_size=occ["voxel_size_m"], lower=tuple(occ["lower"]), shape=tuple(occ["shape"]),
                         free_per_occupied=occ["free_per_occupied"], near_surface_m=occ["near_surface_m"])
    n, k, q_max = new["num_sweeps"], new["sweeps_per_shard"], new["max_queries"]
    copied = [spec.name for spec in expected_arrays(new) if spec.name in src and spec.name != "done"]
    for s0 in tqdm(range(0, n, k), desc="migrate sweeps", unit="task", disable=not progress):
        rows = slice(s0, min(s0 + k, n))
        block = {name: src[name][rows] for name in copied}
        block["camera_hw"] = camera_hw[rows]
        for name in ("failure", "warnings"):  # not recorded before schema 3; written, so every chunk exists
            if name not in block:
                block[name] = np.full(rows.stop - rows.start, "", dtype=object)
        block["done"] = done = src["done"][rows]
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
    return {"out": out, "sweeps": int(n), "from_schema": version}


def _current_attrs(attrs: dict, version: int, dataroot: str | None, command: str) -> dict:
    """The attributes of the migrated store."""
    from pipeline.occupancy import FREE_DRAW, NEAR_SURFACE_M
    from pipeline.teacher import how_built

    new = dict(attrs)
    new["schema_version"] = SCHEMA_VERSION
    t = dict(attrs["teacher"])
    new.update(layout="points", feature_encoding="float16", patch_grid=patch_grid(t))
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
                       pil_version=(t.get("resize") or {}).get("version")))
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


def _camera_sizes(src, attrs: dict, dataroot: str, done: np.ndarray) -> np.ndarray:
    """[S, C, 2] (height, width) of each complete sweep's camera images, from the dataset's sample_data
    records (0 for a sweep that is not complete, as its other arrays are fill)."""
    from pipeline.frames import load_nuscenes

    try:
        nusc = load_nuscenes(dataroot, attrs["dataset"]["version"])
    except (FileNotFoundError, OSError) as e:
        raise StoreError(f"the camera image sizes come from the dataset's tables, which are not at {dataroot} "
                         f"({e}); pass --dataroot") from None
    tokens = src["sample_token"][:]
    out = np.zeros((len(tokens), len(attrs["cameras"]), 2), np.int32)
    for s, token in enumerate(tokens):
        if not token or done[s] != 1:
            continue  # a sweep the old job never completed
        try:
            data = nusc.get("sample", str(token))["data"]
            for c, channel in enumerate(attrs["cameras"]):
                if channel in data:
                    record = nusc.get("sample_data", data[channel])
                    out[s, c] = record["height"], record["width"]
        except KeyError:
            raise StoreError(f"sample {token} (sweep {s}) is not in the tables at {dataroot}; pass the --dataroot "
                             f"the store was extracted from") from None
    return out
