"""The one writer of a teacher-feature store: ``StoreWriter`` creates a store with every array empty (or
reopens one to resume it), writes groups of sweeps with ``done`` last, and records the sweeps that could
not be extracted. ``cdpipe extract`` (its client and each worker task), ``cdpipe migrate`` and the tests
write through it; nothing else writes a store. What it writes is ``store.py``'s schema.

A write follows "Writing: one job at a time" in storage_schema.md. A writer that belongs to a job (``job``,
the id in the store's lock, ``pipeline/lock.py``) checks that the lock still names that job, sets the
sweeps' ``done`` to 0, writes every other array, checks the lock again and sets ``done`` last: a sweep
being rewritten is never complete meanwhile, and the workers of a killed client write nothing once
another job holds the store. ``sweeps_per_shard`` sweeps from a multiple of it are whole shards (and,
in arrays without shards, whole chunks): writers of different groups never share a file, and nothing
is read back to be merged.

Light module (zarr and numpy; no devkit, Dask, timm or torch).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from pipeline.lock import check_holder
from pipeline.store import (
    ARRAY_SPECS,
    ARRAYS,
    ATTRIBUTES,
    ENCODINGS,
    LAYOUTS,
    SCHEMA_VERSION,
    StoreError,
    StoreWriteError,
    as_attribute,
    check_compatible,
    check_out,
    codecs,
    decode_reason,
    expected_arrays,
    grid,
    local_path,
    open_store,
    read_column,
    store_classes,
    store_dims,
)

#: Attributes that must agree for a rerun to resume into an existing store. The padded sizes P and Q are
#: the store's, and so is B: a rerun keeps them (a sweep fixed since, and now larger than P, fails on its own).
RESUME_KEYS = ("schema_version", "num_sweeps", "feature_dim", "layout", "feature_encoding", "patch_grid",
               "sweeps_per_shard", "cameras", "has_labels", "has_boxes", "detection_classes", "classes", "sensors",
               "dataset", "teacher", "projection", "occupancy")

#: Parts of the teacher attribute that may differ between two runs writing one store: where the weights
#: file lies, the Pillow version and the device. A rerun that differs only in these resumes the store.
RUN_SPECIFIC = (("create_model", "pretrained_cfg_overlay"), ("resize", "version"), ("device",))

#: The extract options that choose the feature arrays, named when a rerun asks for other ones.
_FEATURE_OPTIONS = {"layout": "--layout", "feature_encoding": "--feature-encoding"}

#: Arrays whose values the writer sets itself in ``write_sweep``.
_WRITERS_OWN = ("num_points", "num_queries", "num_boxes", "failure", "done")

#: The array whose rows count each padded dimension's real rows in ``write_sweep``.
_COUNTED_BY = {"P": "points", "Q": "occ_labels", "B": "box_class"}


class StoreWriter:
    """The writer of the store at ``out`` (a local path or a file:// URL).

    ``StoreWriter(out, attrs)`` creates the store with the attributes ``attrs`` (every one of
    ``store.ATTRIBUTES``) and every array of its layout and encoding, empty. Where a store already exists
    it is reopened to resume, when its attributes agree with ``attrs`` on ``RESUME_KEYS``, and refused
    otherwise; ``overwrite`` starts it again (``store.check_out`` says what may be overwritten).
    ``StoreWriter.open(url)`` writes to an existing store as it is. ``job``: the id of the job that
    holds the store's lock, checked before every write (empty: not checked).

    ``attrs`` is the store's own attributes once it is open (a resumed store keeps its P and Q).
    """

    def __init__(self, out: str, attrs: dict, overwrite: bool = False, job: str = ""):
        import zarr

        check_out(out, overwrite)
        _check_attributes(out, attrs)
        self.url, self.job = local_path(out), job
        group = None if overwrite else _existing_group(self.url)
        if group is not None:
            _check_resume(self.url, dict(group.attrs), attrs)
        else:
            group = zarr.open_group(self.url, mode="w")
            group.attrs.update(attrs)
            for spec in expected_arrays(attrs):
                shape, chunks, shards = grid(spec, attrs)
                group.create_array(spec.name, shape=shape, dtype=str if spec.dtype == "str" else spec.dtype,
                                   chunks=chunks, shards=shards, fill_value=spec.fill, **codecs(spec))
            _consolidate(self.url)
        self._open()

    @classmethod
    def open(cls, url: str, job: str = "") -> StoreWriter:
        """A writer of the existing store at ``url``, without the checks of creating or resuming it (each
        extract task opens its own: one read of the root ``zarr.json``)."""
        writer = cls.__new__(cls)
        writer.url, writer.job = local_path(url), job
        writer._open()
        return writer

    def _open(self) -> None:
        self._group, self._arrays = _open_for_writing(self.url)
        self.attrs = dict(self._group.attrs)

    @property
    def num_sweeps(self) -> int:
        return int(self.attrs["num_sweeps"])

    @property
    def dims(self) -> dict[str, int]:
        """The store's sizes P, Q, D, C, h, w (``store.store_dims``)."""
        return store_dims(self.attrs)

    def done(self) -> np.ndarray:
        """``done`` [S] of every sweep (1: complete). A chunk of it that does not decode reads as 0: its
        sweeps are extracted again, which rewrites it."""
        return read_column(self._group, "done", on_damage=lambda s0, e: None)

    def blank(self, n: int) -> dict[str, np.ndarray]:
        """Every array of the store for ``n`` sweeps, as its fill value in its dtype (``str`` arrays as
        objects): the block that ``write_sweeps`` takes, to be filled in."""
        dims = self.dims
        return {spec.name: np.full(spec.shape(n, dims), spec.fill, dtype=object if spec.dtype == "str" else spec.dtype)
                for spec in expected_arrays(self.attrs)}

    def write_sweeps(self, first: int, arrays: dict[str, np.ndarray]) -> None:
        """Write sweeps ``first .. first + n - 1`` of every array from ``arrays`` {name: [n, ...]}, which
        holds every array of the store (``blank(n)``, filled in), ``done`` last: ``done[i]`` 1 marks sweep
        ``first + i`` complete, 0 leaves it absent (with its ``failure``, if it failed). A whole group of
        ``sweeps_per_shard`` sweeps from a multiple of it is the efficient write (whole shards and chunks);
        other rows are merged into their chunks. A failure of the store's own side (a full disk, a folder
        that cannot be written) raises ``StoreWriteError``."""
        names = [spec.name for spec in expected_arrays(self.attrs)]
        missing, unknown = [k for k in names if k not in arrays], sorted(set(arrays) - set(names))
        if missing or unknown:
            raise ValueError(f"write_sweeps takes every array of the store: {', '.join(missing)} missing"
                             if missing else f"write_sweeps: the store has no array {', '.join(unknown)}")
        n = len(arrays["done"])
        if first < 0 or first + n > self.num_sweeps:
            raise ValueError(f"sweeps {first}-{first + n - 1}: the store holds sweeps 0-{self.num_sweeps - 1}")
        rows = slice(first, first + n)
        self._check_job()  # a writer of a job that lost the store's lock writes nothing
        try:
            self._arrays["done"][rows] = np.zeros(n, np.uint8)  # first: a sweep being rewritten is not complete
            for name in names:
                if name != "done":
                    self._arrays[name][rows] = arrays[name]
            self._check_job()  # nor marks anything done
            self._arrays["done"][rows] = arrays["done"]  # last: the sweeps are complete
        except OSError as e:
            raise self._write_error(rows, e) from None

    def write_sweep(self, s: int, rows: dict[str, np.ndarray]) -> None:
        """Write sweep ``s`` whole and mark it complete. ``rows`` holds its real rows of the per-point arrays
        ([n, ...], n = len(points) <= P: ``points`` is required), of the per-query arrays ([q, ...], q =
        len(occ_labels) <= Q), of the per-box arrays ([b, ...], b = len(box_class) <= B) and its value of any
        other array (``patches`` [C, h, w, D], ``camera_hw`` [C, 2], ``timestamp``, ``sample_token``,
        ``global_from_lidar``...); an array it leaves out is written as its fill. ``num_points``,
        ``num_queries``, ``num_boxes``, ``failure`` and ``done`` are the writer's to set. One sweep of a
        sharded array is merged into its shard (read, then written back): ``write_sweeps`` writes whole
        groups."""
        block = self.blank(1)
        unknown = sorted(set(rows) - set(block) | set(rows) & set(_WRITERS_OWN))
        if unknown or "points" not in rows:
            raise ValueError(f"write_sweep: {', '.join(unknown)} cannot be given (the store has no such "
                             f"array, or the writer sets it)" if unknown else "write_sweep needs the sweep's points")
        dims = self.dims
        count = {dim: len(rows.get(name, ())) for dim, name in _COUNTED_BY.items()}
        for name, value in rows.items():
            spec = ARRAY_SPECS[name]
            if spec.dtype == "str" and not spec.trailing:  # one string per sweep
                block[name][0] = str(value)
                continue
            padded = spec.trailing[:1] in (("P",), ("Q",), ("B",))
            value = np.asarray(value, dtype=object if spec.dtype == "str" else None)
            if padded and len(value) != count[spec.trailing[0]]:
                raise ValueError(f"write_sweep: {name} has {len(value)} rows, the sweep "
                                 f"{_COUNTED_BY[spec.trailing[0]]} {count[spec.trailing[0]]}")
            if padded and len(value) > dims[spec.trailing[0]]:
                raise ValueError(f"sweep {s}: {len(value)} rows of {name}, more than the {dims[spec.trailing[0]]} "
                                 f"({spec.trailing[0]}) the store was made with")
            if padded:
                block[name][0, :len(value)] = value
            else:
                block[name][0] = value
        block["num_points"][0], block["num_queries"][0] = count["P"], count["Q"]
        if "num_boxes" in block:
            block["num_boxes"][0] = count["B"]
        block["done"][0] = 1
        self.write_sweeps(s, block)

    def fail_sweeps(self, first: int, why: Sequence[str], sample_token: Sequence[str] | None = None,
                    lidar_token: Sequence[str] | None = None) -> dict[int, str]:
        """Record why sweeps ``first .. first + len(why) - 1`` could not be extracted (``why[i]``; "" where
        sweep ``first + i`` did not fail), with their tokens when given so that the records name them;
        their other arrays are left as they are. A sweep still complete (``done`` 1) keeps its data and
        its record: it did not fail (the task that failed died before touching it). Returns the failures
        recorded, {sweep: why}."""
        n = len(why)
        rows = slice(first, first + n)
        self._check_job()
        try:
            done = self._arrays["done"][rows]
        except Exception:  # a chunk of done that does not decode: its sweeps are not complete
            done = np.zeros(n, np.uint8)
        try:
            old = self._arrays["failure"][rows]
        except Exception:  # the same for the old records, which this write replaces
            old = np.full(n, "", dtype=object)
        failure = np.array([old[i] if done[i] == 1 else why[i] for i in range(n)], dtype=object)
        try:
            for name, tokens in (("sample_token", sample_token), ("lidar_token", lidar_token)):
                if tokens is not None:
                    self._arrays[name][rows] = np.array(tokens, dtype=object)
            self._arrays["failure"][rows] = failure
        except OSError as e:
            raise self._write_error(rows, e) from None
        return {first + i: w for i, w in enumerate(why) if w and done[i] != 1}

    def fail_sweep(self, s: int, why: str, sample_token: str | None = None, lidar_token: str | None = None) -> bool:
        """``fail_sweeps`` for the one sweep ``s``; whether it was recorded (False: the sweep is complete)."""
        return bool(self.fail_sweeps(s, [why], None if sample_token is None else [sample_token],
                                     None if lidar_token is None else [lidar_token]))

    def _check_job(self) -> None:
        if self.job:
            check_holder(self.url, self.job)

    def _write_error(self, rows: slice, error: OSError) -> StoreWriteError:
        return StoreWriteError(f"writing {self.url} failed for sweeps {rows.start}-{rows.stop - 1}: "
                               f"{type(error).__name__}: {decode_reason(error)}")


def _check_attributes(out: str, attrs: dict) -> None:
    """Refuse attributes that a reader of the new store would refuse or trip over."""
    missing = [k for k in ATTRIBUTES if k not in attrs]
    if missing:
        raise StoreError(f"{out}: the store's attributes lack {', '.join(missing)} (storage_schema.md, Attributes)")
    if attrs["schema_version"] != SCHEMA_VERSION:
        raise StoreError(f"{out}: this code writes schema_version {SCHEMA_VERSION}, not {attrs['schema_version']}")
    if attrs["layout"] not in LAYOUTS or attrs["feature_encoding"] not in ENCODINGS:
        raise StoreError(f"{out}: layout {attrs['layout']!r} / feature_encoding {attrs['feature_encoding']!r}: "
                         f"choose one of {', '.join(LAYOUTS)} / {', '.join(ENCODINGS)}")
    try:
        store_classes(attrs)
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(f"{out}: attribute classes is not a class set ({type(e).__name__}: {e})") from None


def _existing_group(url: str):
    """The store at ``url`` opened to resume, or None where there is none."""
    import zarr

    try:
        return zarr.open_group(url, mode="r+")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None


def _check_resume(url: str, old: dict, new: dict) -> None:
    """Refuse to resume a store written with other settings, naming them."""
    check_compatible(old, url)
    diff = [k for k in RESUME_KEYS if _resume_view(k, old.get(k)) != _resume_view(k, new[k])]
    if diff and set(diff) <= set(_FEATURE_OPTIONS):
        hint = " ".join(f"{flag} {old.get(k)}" for k, flag in _FEATURE_OPTIONS.items() if k in diff)
        raise StoreError(f"{url} holds its features as {old.get('layout')} in {old.get('feature_encoding')}, "
                         f"this run asks for {new['layout']} in {new['feature_encoding']}: rerun with {hint} "
                         f"to resume it, or write to a new --out")
    if diff:
        raise StoreError(f"{url} was written with other settings ({', '.join(diff)} differ), so this run "
                         f"cannot resume it. Write to a new --out, or pass --overwrite to start it again.")


def _resume_view(key: str, value):
    """An attribute as a resume compares it: as JSON, the teacher without ``RUN_SPECIFIC``."""
    value = as_attribute(value)
    if key == "teacher" and isinstance(value, dict):
        for path in RUN_SPECIFIC:
            node = value
            for part in path[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(path[-1], None)
    return value


def _consolidate(url: str) -> None:
    """Copy every array's metadata into the root ``zarr.json`` (once, when the store is created): opening
    the store and its arrays is then one read instead of one per array, which each extract task does."""
    import warnings

    import zarr

    with warnings.catch_warnings():  # "not part of the Zarr v3 specification": readers may ignore it
        warnings.simplefilter("ignore", category=UserWarning)
        zarr.consolidate_metadata(url)


_ZARR_CONFIG_LOCK = threading.Lock()


def _open_for_writing(url: str) -> tuple:
    """The store's group and its arrays {name: array}, opened to write whole chunks. Every chunk a writer
    writes holds sweeps, and zarr's check for all-fill chunks (to skip writing them) scans each chunk at
    about the cost of compressing it (float16 compares are slow), so the arrays are opened with the check
    off. zarr reads that setting when an array is opened, from its process-wide config, whose ``set``
    restores the old value on exit without a lock: writers in other threads open theirs one at a time."""
    import zarr

    with _ZARR_CONFIG_LOCK, zarr.config.set({"array.write_empty_chunks": True}):
        group = open_store(url, mode="r+")
        return group, {spec.name: group[spec.name] for spec in ARRAYS if spec.name in group}
