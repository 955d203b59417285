"""Reading a store for people: ``cdpipe info`` (what is in it) and ``cdpipe verify`` (can it be trusted).

``verify`` decodes every chunk (each carries a crc32c checksum, so a flipped byte fails to decode) and
checks, for every sweep: ``done`` and the failure records; that a complete sweep's chunks all exist (a
missing chunk reads back as fill, which only ``done`` tells apart from data); that its counts fit the
padded sizes; that its features, points, pixels, occupancy and boxes hold finite, in-range values and its
LiDAR-to-global transform is rigid; and, for the whole store, the schema version and every array's shape
and dtype against the attributes. Each problem is one line naming the array, sweep, sample token and
chunk key. Light module (zarr and numpy): it reads stores by URL like the trainer.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.store import (
    ARRAY_SPECS,
    ATTRIBUTES,
    ENCODINGS,
    LAYOUTS,
    StoreError,
    boxes_problems,
    chunk_key,
    decode_reason,
    expected_arrays,
    feature_arrays,
    grid,
    open_store,
    patch_grid,
    points_problem,
    read_column,
    read_rows,
    store_url,
)


@dataclass(frozen=True)
class Problem:
    kind: str  # damaged, missing, failed, incomplete, values, shape, attributes
    message: str
    array: str | None = None
    sweep: int | None = None
    sample_token: str | None = None
    chunk: str | None = None

    def line(self) -> str:
        where = ", ".join(x for x in (f"array {self.array}" if self.array else "",
                                     f"sweep {self.sweep}" if self.sweep is not None else "",
                                     f"sample {self.sample_token}" if self.sample_token else "",
                                     f"chunk {self.chunk}" if self.chunk else "") if x)
        return f"{self.kind}: {where + ': ' if where else ''}{self.message}"


def _object_exists(group, key: str) -> bool:
    """Whether the store object ``key`` (a chunk or shard) exists, without decoding it (through zarr's store,
    whose event loop an fsspec store's file system is bound to)."""
    from zarr.core.sync import sync

    return bool(sync(group.store.exists(key)))


def array_metadata_problems(group) -> list[Problem]:
    """Each array's own ``zarr.json`` against the copy consolidated into the root ``zarr.json``, which zarr
    (and so this code) reads: a reader that opens one array alone reads the array's own file, so the two
    must agree. A file that is missing, does not parse, or differs is a problem naming the array."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.metadata.v3 import ArrayV3Metadata
    from zarr.core.sync import sync

    consolidated = getattr(group.metadata, "consolidated_metadata", None)
    if consolidated is None:
        return []  # nothing to disagree with: zarr read each array's own file
    problems = []
    for name, meta in sorted(consolidated.metadata.items()):
        key = f"{name}/zarr.json"
        try:
            raw = sync(group.store.get(key, prototype=default_buffer_prototype()))
            if raw is None:
                raise FileNotFoundError("missing")
            own = ArrayV3Metadata.from_dict(json.loads(raw.to_bytes())).to_dict()
        except Exception as e:  # missing, truncated, not JSON, not array metadata
            problems.append(Problem("damaged", f"its own zarr.json cannot be read ({type(e).__name__}: "
                                               f"{decode_reason(e)}); the copy in the root zarr.json still "
                                               f"opens it, but a reader of this array alone cannot",
                                    array=name, chunk=key))
            continue
        ours = meta.to_dict()
        differ = sorted(k for k in set(own) | set(ours) if own.get(k) != ours.get(k))
        if differ:
            shown = "; ".join(f"{k}: {own.get(k)!r} here, {ours.get(k)!r} there" for k in differ[:3])
            problems.append(Problem("damaged", f"its own zarr.json disagrees with the copy in the root zarr.json "
                                               f"({shown})", array=name, chunk=key))
    return problems


def check_layout(group) -> list[Problem]:
    """Attributes present, every array of the schema present with the shape and dtype they imply."""
    attrs = dict(group.attrs)
    missing = [k for k in ATTRIBUTES if k not in attrs]
    if missing:
        return [Problem("attributes", f"attributes missing: {', '.join(missing)}")]
    if attrs["layout"] not in LAYOUTS or attrs["feature_encoding"] not in ENCODINGS:
        return [Problem("attributes", f"layout {attrs['layout']!r} / feature_encoding {attrs['feature_encoding']!r}: "
                                      f"expected one of {LAYOUTS} / {ENCODINGS}")]
    t = attrs["teacher"]
    grid_hw = patch_grid(t)
    if list(attrs["patch_grid"]) != grid_hw:
        return [Problem("attributes", f"patch_grid {attrs['patch_grid']} is not the teacher's image_size "
                                      f"{t['image_size']} over its patch_size {t['patch_size']} ({grid_hw})")]
    problems = array_metadata_problems(group)
    foreign = sorted(set(group.array_keys()) - {spec.name for spec in expected_arrays(attrs)})
    if foreign:
        problems.append(Problem("shape", f"arrays that a {attrs['layout']}/{attrs['feature_encoding']} store does not "
                                         f"hold: {', '.join(foreign)}"))
    for spec in expected_arrays(attrs):
        if spec.name not in group:
            problems.append(Problem("shape", "array missing from the store", array=spec.name))
            continue
        arr = group[spec.name]
        shape = grid(spec, attrs)[0]
        if tuple(arr.shape) != shape:
            problems.append(Problem("shape", f"shape {tuple(arr.shape)}, the attributes imply "
                                             f"{shape}", array=spec.name))
        kind = arr.dtype.kind
        if (spec.dtype == "str") != (kind in "OUT") or (spec.dtype != "str" and str(arr.dtype) != spec.dtype):
            problems.append(Problem("shape", f"dtype {arr.dtype}, the schema says {spec.dtype}", array=spec.name))
    return problems


def _value_problems(rows: dict, attrs: dict, camera_hw: np.ndarray,
                    global_from_lidar: np.ndarray | None = None) -> list[tuple[str, str]]:
    """(array, message) for out-of-range values in one complete sweep's rows (and its transform, in a store
    with boxes)."""
    out = []
    if global_from_lidar is not None:  # the boxes' own rules: a velocity may be NaN
        boxes = {name: row for name, row in rows.items() if name.startswith("box_")}
        out += boxes_problems({**boxes, "global_from_lidar": global_from_lidar}, len(attrs["detection_classes"]))
    for name, row in rows.items():
        if name.startswith("box_"):
            continue  # checked above
        if row.dtype.kind == "f":  # a vector: a point's row of points or pixel, a feature, a patch cell
            last = ARRAY_SPECS[name].trailing[-1]
            is_vector = last == "D" or isinstance(last, int)  # a row of D, 2 or 5 values, not a grid of rows
            vectors = row.reshape(-1, row.shape[-1]) if is_vector else row.reshape(-1, 1)
            bad = int((~np.isfinite(vectors.astype(np.float32))).any(axis=-1).sum())
            if bad:
                out.append((name, f"{bad} {'vectors' if vectors.shape[1] > 1 else 'values'} hold NaN or inf"))
    shape = np.asarray(attrs["occupancy"]["shape"])
    vox = rows["occ_voxels"]
    if len(vox) and ((vox < 0) | (vox >= shape)).any():
        out.append(("occ_voxels", f"{int(((vox < 0) | (vox >= shape)).any(axis=1).sum())} query voxels outside the "
                                  f"grid {shape.tolist()}"))
    if not np.isin(rows["occ_labels"], (0, 1)).all():
        out.append(("occ_labels", "labels other than 0 (free) and 1 (occupied)"))
    points = rows["points"]
    finite = np.isfinite(points).all(axis=1, keepdims=True)  # the rows that are not are reported above
    far = points_problem(np.where(finite, points, 0))  # zeroed, so that row numbers stay the store's
    if far:
        out.append(("points", far))
    labels = rows.get("labels")
    n_fine = len(attrs["classes"]["fine"])
    if labels is not None and len(labels) and int(labels.max()) >= n_fine:
        out.append(("labels", f"{int((labels >= n_fine).sum())} labels outside 0-{n_fine - 1} (the store's "
                              f"{n_fine} classes, attribute classes.fine; up to {int(labels.max())})"))
    cam = rows["camera"]
    if ((cam >= len(attrs["cameras"])) | (cam < -1)).any() or not np.array_equal(rows["valid"], cam >= 0):
        out.append(("camera", "camera indices out of range, or valid does not equal camera >= 0"))
    elif len(cam) and (camera_hw[np.unique(cam[cam >= 0])] <= 0).any():  # the frame of pixel, and of the features
        out.append(("camera_hw", "a camera that sees points has no image size"))
    elif len(cam):
        seen = cam >= 0
        uv, hw = rows["pixel"][seen], camera_hw[cam[seen]]
        outside = ~((uv >= 0) & (uv <= hw[:, ::-1])).all(axis=1)  # continuous (u, v) within [0, W] x [0, H]
        if outside.any():
            out.append(("pixel", f"{int(outside.sum())} pixels of seen points lie outside their camera's image"))
    return out


def verify_store(url: str, progress: bool = True) -> dict:
    """Check a whole store; returns {store, sweeps, sweeps_done, chunks_read, problems: [Problem as dict],
    warnings: [{sweep, sample_token, warning}]}."""
    from tqdm import tqdm

    try:
        group = open_store(url)
    except StoreError as e:
        return {"store": url, "sweeps": 0, "sweeps_done": 0, "chunks_read": 0,
                "problems": [asdict(Problem("attributes", str(e)))], "warnings": []}
    attrs = dict(group.attrs)
    problems = check_layout(group)
    if problems:
        return {"store": url, "sweeps": attrs.get("num_sweeps", 0), "sweeps_done": 0, "chunks_read": 0,
                "problems": [asdict(p) for p in problems], "warnings": []}
    n = attrs["num_sweeps"]
    specs = expected_arrays(attrs)
    per_sweep = [s for s in specs if not s.sweep_chunks]
    per_point = [s for s in specs if s.sweep_chunks]  # one chunk per sweep: per-point, per-query, patch maps
    columns, chunks_read = {}, 0
    unknown = np.zeros(n, bool)  # sweeps whose per-sweep values could not be read: not checked further
    for spec in per_sweep:  # chunks of k sweeps: each read alone, so every damaged one is named
        arr = group[spec.name]
        col = np.full(arr.shape, spec.fill, dtype=object if spec.dtype == "str" else spec.dtype)
        for s0 in range(0, n, arr.chunks[0]):
            key, rows = chunk_key(arr, s0), slice(s0, s0 + arr.chunks[0])
            if not _object_exists(group, key):
                continue  # checked against done below
            try:
                col[rows] = arr[rows]
                chunks_read += 1
            except Exception as e:
                problems.append(Problem("damaged", f"does not decode: {decode_reason(e)} (sweeps {s0}-"
                                        f"{min(s0 + arr.chunks[0], n) - 1})", array=spec.name, sweep=s0, chunk=key))
                if spec.name not in ("sample_token", "lidar_token", "warnings", "failure"):
                    unknown[rows] = True
        columns[spec.name] = col
    missing_keys: set[str] = set()  # a shard missing is reported once, not once per sweep in it
    known: dict[str, bool] = {}  # key -> exists: one request per chunk or shard, not one per sweep in it

    def exists(key: str) -> bool:
        if key not in known:
            known[key] = _object_exists(group, key)
        return known[key]

    def missing(name: str, s: int, tok: str | None, key: str) -> None:
        if key not in missing_keys:
            missing_keys.add(key)
            problems.append(Problem("missing", "chunk of a complete sweep is missing (it would read as fill)",
                                    array=name, sweep=s, sample_token=tok, chunk=key))
    done = columns["done"]
    tokens = columns["sample_token"]
    warnings = []
    for s in tqdm(range(n), desc="verify sweeps", unit="sweep", disable=not progress):
        tok = str(tokens[s]) or None
        complete = done[s] == 1 and not unknown[s]  # unknown: its per-sweep chunk is damaged, reported above
        if not unknown[s]:
            if done[s] not in (0, 1):
                problems.append(Problem("values", f"done is {done[s]}, not 0 or 1", array="done", sweep=s,
                                        sample_token=tok))
            if complete and columns["failure"][s]:
                problems.append(Problem("values", f"marked done but also failed: {columns['failure'][s]}",
                                        array="failure", sweep=s, sample_token=tok))
            elif not complete and columns["failure"][s]:
                problems.append(Problem("failed", str(columns["failure"][s]), sweep=s, sample_token=tok))
            elif not complete:
                problems.append(Problem("incomplete", "not written (the job was interrupted, or is still running)",
                                        sweep=s, sample_token=tok))
        if complete:
            for spec in per_sweep:
                key = chunk_key(group[spec.name], s)
                if not exists(key):
                    missing(spec.name, s, tok, key)
            warnings += [{"sweep": s, "sample_token": tok, "warning": w}
                         for w in str(columns["warnings"][s]).splitlines()]
        npts, nq = int(columns["num_points"][s]), int(columns["num_queries"][s])
        nb = int(columns["num_boxes"][s]) if "num_boxes" in columns else 0
        counts_ok = 0 < npts <= attrs["max_points"] and 0 <= nq <= attrs["max_queries"]
        if complete and not counts_ok:
            problems.append(Problem("values", f"num_points {npts} / num_queries {nq} outside (0, "
                                              f"{attrs['max_points']}] "
                                              f"/ [0, {attrs['max_queries']}]", sweep=s, sample_token=tok))
        if complete and not 0 <= nb <= attrs["max_boxes"]:
            problems.append(Problem("values", f"num_boxes {nb} outside [0, {attrs['max_boxes']}] (max_boxes)",
                                    array="num_boxes", sweep=s, sample_token=tok,
                                    chunk=chunk_key(group["num_boxes"], s)))
            counts_ok = False
        rows = {}
        for spec in per_point:  # every chunk that exists is decoded, whatever the sweep's state
            arr = group[spec.name]
            key = chunk_key(arr, s)
            if not exists(key):
                if complete:
                    missing(spec.name, s, tok, key)
                continue
            try:
                row = arr[s]
                chunks_read += 1
            except Exception as e:  # a checksum mismatch is a ValueError, a codec failure anything
                problems.append(Problem("damaged", f"does not decode: {decode_reason(e)}", array=spec.name, sweep=s,
                                        sample_token=tok, chunk=key))
                continue
            rows[spec.name] = {"Q": row[:nq], "P": row[:npts], "B": row[:nb]}.get(spec.trailing[0], row)
        if complete and counts_ok and len(rows) == len(per_point):
            transform = columns["global_from_lidar"][s] if "global_from_lidar" in columns else None
            problems += [Problem("values", msg, array=name, sweep=s, sample_token=tok, chunk=chunk_key(group[name], s))
                         for name, msg in _value_problems(rows, attrs, columns["camera_hw"][s], transform)]
    return {"store": url, "sweeps": n, "sweeps_done": int((done == 1).sum()), "chunks_read": chunks_read,
            "problems": [asdict(p) for p in problems], "warnings": warnings}


def directory_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def array_bytes(group, name: str) -> int | None:
    """Bytes on disk of one array (None where the store cannot be listed, as over HTTP)."""
    from zarr.core.sync import sync

    store = group.store
    if not getattr(store, "fs", None):
        return directory_bytes(os.path.join(str(store.root), name))

    async def total() -> int:
        return sum([await store.getsize(key) async for key in store.list_prefix(f"{name}/")])

    try:
        return int(sync(total()))
    except (NotImplementedError, OSError, ValueError, TypeError):
        return None


def store_info(url: str) -> dict:
    """What is in a store, for people: provenance, its LiDAR (attribute ``sensors``) and class set
    (``classes``), counts, coverage, occupancy, boxes per class, bytes per array and per point, failures and
    warnings."""
    group = open_store(url)
    a = dict(group.attrs)
    done = read_column(group, "done").astype(bool)
    n_points = read_column(group, "num_points")[done]
    n_q = read_column(group, "num_queries")[done]
    sweeps = np.nonzero(done)[0]
    n_valid = sum(int(read_rows(group, "valid", s, n).sum()) for s, n in zip(sweeps, n_points))
    occupied = sum(int(read_rows(group, "occ_labels", s, q).sum()) for s, q in zip(sweeps, n_q))
    boxes = _boxes_per_class(group, a, sweeps) if a.get("has_boxes") else None
    tokens = read_column(group, "sample_token")
    failure, warn = read_column(group, "failure"), read_column(group, "warnings")
    t = a["teacher"]
    per_array = {spec.name: array_bytes(group, spec.name) for spec in expected_arrays(a)}
    size = None if any(v is None for v in per_array.values()) else sum(per_array.values())
    carriers = [per_array[name] for name in feature_arrays(a)]
    feature_size = None if any(v is None for v in carriers) else sum(carriers)
    total_points = int(n_points.sum())
    raw = 2 * a["feature_dim"] * total_points
    return {
        "store": store_url(group) if "://" in url else url, "schema_version": a["schema_version"],
        "metadata_problems": [p.line() for p in array_metadata_problems(group)],
        "sweeps": int(done.sum()), "sweeps_total": a["num_sweeps"],
        "sweeps_failed": int(sum(1 for f in failure if f)),
        "points": total_points, "points_with_feature": n_valid,
        "fraction_with_feature": n_valid / total_points if total_points else 0.0, "feature_dim": a["feature_dim"],
        "occupancy_queries_per_sweep": float(n_q.mean()) if len(n_q) else 0.0,
        "occupancy_queries_min_max": [int(n_q.min()), int(n_q.max())] if len(n_q) else [0, 0],
        "occupancy_occupied_fraction": occupied / int(n_q.sum()) if n_q.sum() else 0.0,
        "has_boxes": bool(a.get("has_boxes")), "boxes": sum(boxes.values()) if boxes else 0,
        "boxes_per_class": boxes,
        "bytes": size, "bytes_per_point": size / total_points if size and total_points else None,
        "bytes_per_array": per_array,
        "bytes_per_point_per_array": {k: (v / total_points if v is not None and total_points else None)
                                      for k, v in per_array.items()},
        "raw_float16_bytes_per_point": 2 * a["feature_dim"],
        "layout": a["layout"], "feature_encoding": a["feature_encoding"], "patch_grid": a["patch_grid"],
        "feature_arrays": feature_arrays(a),
        "feature_bytes_per_point": feature_size / total_points if feature_size and total_points else None,
        # against raw float16 per-point features (2 D bytes per real point)
        "feature_fraction_of_raw": feature_size / raw if feature_size and raw else None,
        "store_fraction_of_raw": size / raw if size and raw else None,
        "teacher": t["name"], "teacher_weights": t["weights"], "random_teacher": t["weights"] == "random",
        "teacher_architecture": t.get("architecture") or {}, "teacher_stand_in": t.get("stand_in"),
        "layer": t["layer"], "image_size": t["image_size"], "cameras": a["cameras"],
        "dataset": a["dataset"], "sensors": a["sensors"], "classes": a["classes"], "scenes": len(a["scenes"]),
        "provenance": a["provenance"],
        "failures": [{"sweep": int(s), "sample_token": str(tokens[s]), "reason": str(failure[s])}
                     for s in range(len(failure)) if failure[s]],
        "warnings": [{"sweep": int(s), "sample_token": str(tokens[s]), "warning": w}
                     for s in range(len(warn)) if warn[s] for w in str(warn[s]).splitlines()],
    }


def _boxes_per_class(group, attrs: dict, sweeps: np.ndarray) -> dict[str, int]:
    """{detection class: boxes of that class in the complete ``sweeps``}, every class named (0 for one the
    store does not hold); a class index outside the list is left out (``verify`` names it)."""
    names = attrs["detection_classes"]
    n_boxes = read_column(group, "num_boxes")
    counts = np.zeros(len(names), np.int64)
    for s in sweeps:
        cls = read_rows(group, "box_class", s, max(0, int(n_boxes[s]))).astype(np.int64)
        counts += np.bincount(cls[(cls >= 0) & (cls < len(names))], minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts)}


def teacher_label(summary: dict) -> str:
    """The teacher in one line: its name, architecture overrides, and what kind of stand-in it is, if any."""
    name = summary["teacher"]
    arch = summary.get("teacher_architecture") or {}
    if arch:
        name += " [" + ", ".join(f"{k}={v}" for k, v in sorted(arch.items())) + "]"
    if summary["random_teacher"]:
        return f"{name} (RANDOM INITIALISATION, not pretrained: a stand-in teacher)"
    stand_in = summary.get("teacher_stand_in")
    if stand_in:
        world = stand_in.get("world") or {}
        made = (f"STAND-IN TEACHER, recipe {stand_in.get('recipe')}, "
                + ("trained WITH per-pixel labels" if stand_in.get("labels_used") else "trained without labels")
                + (f" on synthetic world seed {world['seed']}" if "seed" in world else "") + "; ")
    else:
        made = ""
    return f"{name} ({made}weights sha256 {summary['teacher_weights']})"

