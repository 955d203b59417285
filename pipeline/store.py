"""The teacher-feature store: every array, dtype, fill, chunking, codec and attribute, in one place, the
errors a store raises, and the functions that open and read stores. ``storage_schema.md`` describes exactly
this module; ``tests/test_schema_doc.py`` holds the two together. ``info``/``verify`` and the trainer read
through it; its one writer, ``StoreWriter`` (``store_writer.py``), creates stores from it.

A store is one Zarr v3 group. Sweeps (LiDAR keyframes) lie along axis 0 of every array; per-point arrays
are padded to ``P`` (the largest sweep) and per-query arrays to ``Q``, with ``num_points`` and
``num_queries`` saying how many rows of sweep s are real. Along axis 0, chunks hold one sweep, so any
sweep reads without touching the others; shards hold ``sweeps_per_shard`` sweeps, and one extract task
writes one whole shard (or, for unsharded arrays, the whole chunks) of every array: concurrent writers
never share a file. The teacher-feature arrays are not sharded: zarr's sharding codec costs an extra
fill and copy of every chunk it writes. ``done[s]`` is written after everything else of sweep s: a
sweep whose ``done`` is 0 is absent, whatever its other arrays read.

Two layouts carry the teacher features (attribute ``layout``), each in one of two encodings (attribute
``feature_encoding``):

- ``patches``: each camera's patch map [C, h, w, D] per sweep; a point's feature is computed on reading,
  by the bilinear rule of the extract (``projection.bilinear_cells``, ``projection.sample_cells``) at its
  stored camera and pixel. A sweep's maps hold C h w vectors (3,072 at 224x448 with patch 14) against
  ~30,000 points.
- ``points``: the feature of every point [P, D], as the extract computed it.
- ``float16``, or ``int8``: each vector scaled by its own max |x| / 127 (the scale kept as float32).

``read_sweep`` returns the same per-point features for every layout and encoding (to float16 rounding;
int8 to cosine >= 0.9999).

Each sweep also holds the annotated 3D boxes of its sample in its LiDAR frame, padded to ``B`` rows
(``num_boxes`` real), and its LiDAR-to-global transform (``global_from_lidar``), so that a reader turns
boxes into the global frame of a detection submission without the devkit; ``read_boxes`` reads them.

Light module (zarr and numpy; torch only to sample patch maps faster where it is installed; no devkit,
Dask or timm): the trainer imports it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from pipeline.projection import bilinear_cells, sample_cells

# 6: the dataset's class set and LiDAR recorded (attributes classes, sensors), so that a store of another
# dataset (SemanticKITTI) is read by its own classes; labels index classes.fine;
# 5: each sweep's annotated 3D boxes and LiDAR-to-global transform (attributes max_boxes, has_boxes,
# detection_classes); 4: the patch layout and the int8 encoding (attributes layout, feature_encoding,
# patch_grid); 3: a crc32c checksum on every chunk, failure and warnings per sweep, camera image sizes,
# the teacher's construction, resize and forward recorded; 2: free occupancy voxels near the surface;
# 1: free voxels anywhere along the rays
SCHEMA_VERSION = 6
LAYOUTS = ("patches", "points")
ENCODINGS = ("float16", "int8")


@dataclass(frozen=True)
class ArraySpec:
    name: str
    dtype: str
    # symbolic trailing dims after the sweep axis: "P", "Q", "B", "D", "C", "h", "w" or a number
    trailing: tuple[str, ...]
    fill: float | int | str
    description: str
    sweep_chunks: bool = False  # one chunk per sweep (per-point, per-query, per-box and patch arrays)
    sharded: bool = True  # one-sweep chunks: in shards of sweeps_per_shard sweeps; False: no shards
    when: tuple[str, ...] = ()  # present only in stores with this layout, encoding, "labels" or "boxes"

    def shape(self, n_sweeps: int, dims: dict[str, int]) -> tuple[int, ...]:
        return (n_sweeps, *(dims[d] if isinstance(d, str) else d for d in self.trailing))


ARRAYS: tuple[ArraySpec, ...] = (
    # 5 = frames.LIDAR_FIELDS, which this light module cannot import (frames reaches the devkit);
    # tests/test_schema_doc.py ties the two
    ArraySpec("points", "float32", ("P", 5), 0.0,
              "x, y, z (m, LiDAR frame of the sweep), intensity, ring; as in the dataset's files (ring -1 where they "
              "keep none)", True),
    ArraySpec("labels", "uint8", ("P",), 0, "class per point: index into attrs classes.fine (the dataset's own "
              "classes)", True, when=("labels",)),
    ArraySpec("features", "float16", ("P", "D"), 0.0,
              "teacher feature at the point's pixel (bilinear on the patch map); 0 where valid is false", True,
              sharded=False, when=("points", "float16")),
    ArraySpec("features_int8", "int8", ("P", "D"), 0,
              "the same, int8: feature = features_int8 * features_scale", True, sharded=False, when=("points", "int8")),
    ArraySpec("features_scale", "float32", ("P",), 0.0, "per-point scale of features_int8 (its max |x| / 127)", True,
              sharded=False, when=("points", "int8")),
    ArraySpec("patches", "float16", ("C", "h", "w", "D"), 0.0,
              "each camera's teacher patch map; 0 for a camera left out of the sweep", True, sharded=False,
              when=("patches", "float16")),
    ArraySpec("patches_int8", "int8", ("C", "h", "w", "D"), 0,
              "the same, int8: map = patches_int8 * patches_scale", True, sharded=False, when=("patches", "int8")),
    ArraySpec("patches_scale", "float32", ("C", "h", "w"), 0.0, "per-vector scale of patches_int8 (its max |x| / 127)",
              True, sharded=False, when=("patches", "int8")),
    ArraySpec("valid", "bool", ("P",), False, "the point has a teacher feature (seen by a camera)", True),
    ArraySpec("camera", "int8", ("P",), -1, "index into attrs cameras of the view used; -1 if none", True),
    ArraySpec("pixel", "float32", ("P", 2), -1.0,
              "(u, v) in that camera's original image, continuous: pixel (i, j) spans [i, i+1) x [j, j+1)", True),
    ArraySpec("occ_voxels", "int16", ("Q", 3), -1, "occupancy query voxel (i, j, k) on attrs occupancy grid", True),
    ArraySpec("occ_labels", "uint8", ("Q",), 0, "1 occupied, 0 free", True),
    ArraySpec("box_centre", "float32", ("B", 3), 0.0, "centre x, y, z of each annotated box (m, LiDAR frame of the "
              "sweep)", True, when=("boxes",)),
    ArraySpec("box_size", "float32", ("B", 3), 0.0, "width, length, height (m), nuScenes' wlh", True, when=("boxes",)),
    ArraySpec("box_yaw", "float32", ("B",), 0.0, "heading (rad) of the box's length axis in the LiDAR's x-y plane, "
              "from x towards y", True, when=("boxes",)),
    ArraySpec("box_velocity", "float32", ("B", 2), 0.0, "vx, vy (m/s, LiDAR frame) from the neighbouring annotations "
              "(the devkit's box_velocity); NaN where it cannot be computed", True, when=("boxes",)),
    ArraySpec("box_class", "int8", ("B",), -1, "index into attrs detection_classes", True, when=("boxes",)),
    ArraySpec("box_num_lidar_pts", "int32", ("B",), 0, "the annotation's num_lidar_pts", True, when=("boxes",)),
    ArraySpec("box_token", "str", ("B",), "", "the annotation's sample_annotation token", True, when=("boxes",)),
    ArraySpec("num_points", "int32", (), 0, "real rows of the per-point arrays"),
    ArraySpec("num_queries", "int32", (), 0, "real rows of occ_voxels/occ_labels"),
    ArraySpec("num_boxes", "int32", (), 0, "real rows of the box arrays", when=("boxes",)),
    ArraySpec("scene_index", "int32", (), -1, "index into attrs scenes"),
    ArraySpec("timestamp", "int64", (), 0, "LiDAR timestamp (microseconds)"),
    ArraySpec("camera_timestamp", "int64", ("C",), 0, "timestamp of each camera image (microseconds)"),
    ArraySpec("camera_hw", "int32", ("C", 2), 0, "original (height, width) of each camera's image, pixels"),
    ArraySpec("global_from_lidar", "float64", (4, 4), 0.0, "LiDAR frame -> global frame: the ego pose at the LiDAR "
              "timestamp times the LiDAR's calibrated sensor", when=("boxes",)),
    ArraySpec("sample_token", "str", (), "", "dataset sample token"),
    ArraySpec("lidar_token", "str", (), "", "dataset LiDAR sample_data token"),
    ArraySpec("failure", "str", (), "", "why the sweep could not be extracted (its last attempt); empty if it was not"),
    ArraySpec("warnings", "str", (), "", "what made a complete sweep poorer (a camera left out, with the reason), "
                                         "one per line; empty if nothing"),
    ArraySpec("done", "uint8", (), 0, "1 once every array of the sweep is written"),
)
ARRAY_SPECS: dict[str, ArraySpec] = {a.name: a for a in ARRAYS}
FEATURE_ARRAYS = ("features", "features_int8", "features_scale", "patches", "patches_int8", "patches_scale")
#: What ``read_sweep`` returns: the per-point and per-query arrays and the query voxels' centres
FIELDS = ("points", "labels", "features", "valid", "camera", "pixel", "occ_voxels", "occ_labels", "occ_centres")
#: What ``read_boxes`` returns: the real rows of the per-box arrays and the sweep's transform
BOX_FIELDS = ("box_centre", "box_size", "box_yaw", "box_velocity", "box_class", "box_num_lidar_pts", "box_token",
              "global_from_lidar")

#: Group attributes and what each holds.
ATTRIBUTES: dict[str, str] = {
    "schema_version": "int, this document's version",
    "num_sweeps": "int, S",
    "max_points": "int, P",
    "max_queries": "int, Q",
    "max_boxes": "int, B: the most boxes of any sweep (at least 1; 0 when has_boxes is false)",
    "feature_dim": "int, D",
    "layout": "str, patches or points: the arrays that carry the teacher features",
    "feature_encoding": "str, float16 or int8: how those arrays hold them",
    "patch_grid": "[h, w], the teacher's patch map per camera (image_size / patch_size)",
    "sweeps_per_shard": "int, sweeps per shard along axis 0",
    "cameras": "list of camera channel names; the camera array indexes it",
    "scenes": "list of {name, token, split, first_sweep, num_sweeps}",
    "has_labels": "bool, whether labels holds dataset labels",
    "has_boxes": "bool, whether the box arrays and global_from_lidar exist",
    "detection_classes": "list of the detection class names; box_class indexes it",
    "classes": "{dataset, fine, fine_ids, eval, fine_to_eval, ignore_index}: labels index fine (ids in the dataset's "
               "files: fine_ids); fine_to_eval maps them to the evaluation classes 1..K named eval, 0 = ignore_index",
    "sensors": "{lidar, beams, intensity_max, has_ring}: the LiDAR; intensity runs 0..intensity_max",
    "dataset": "{name, version, split, dataroot}",
    "teacher": "{name, weights (sha256 of the file, or 'random'), architecture, stand_in, random_init_seed, layer, "
               "image_size [H, W], patch_size, mean, std, timm_version, create_model, resize, normalise, forward, "
               "device}",
    "projection": "{min_depth_m, multi_view_rule, pixel_convention, sampling}",
    "occupancy": "{voxel_size_m, lower [x, y, z], shape [nx, ny, nz], free_per_occupied, near_surface_m, frame, seed, "
                 "free_draw}",
    "provenance": "{code_version, created_utc, command, torch_version, zarr_version; migrated: {from_schema_version, "
                  "utc, command, old_dataroot, previous} when cdpipe migrate wrote the store}",
}

MULTI_VIEW_RULE = ("a point seen by several cameras takes the view whose pixel lies farthest from that image's "
                   "border (in pixels); ties go to the lower camera index")
PIXEL_CONVENTION = ("continuous (u, v), origin at the top-left corner of pixel (0, 0); centre of pixel (i, j) "
                    "is (i+0.5, j+0.5)")
SAMPLING = ("bilinear on the D x H/p x W/p patch map, patch centres at ((j+0.5) W/w, (i+0.5) H/h) in image pixels "
            "(grid_sample, align_corners=False, border padding)")


class StoreError(RuntimeError):
    """A store that this code cannot read or extend; the message says why and what to do."""


class StoreWriteError(StoreError):
    """Writing the store failed on its own side (a full disk, a read-only folder) while a job ran; the
    input is not at fault and a rerun resumes."""


class BadSweep(StoreError):
    """A sweep whose stored data cannot be used: a chunk that does not decode (``DamagedChunk``) or values
    that no extract writes (``BadValues``); the message names the array, sweep, sample token and chunk.
    ``cdtrain --skip-bad-sweeps`` records such a sweep and goes on.

    PyTorch's DataLoader re-raises an exception from a worker process as ``type(e)(text)``, the text
    being the worker's whole traceback; the last line of that text is our message, which is kept alone,
    so the error stays one line wherever it is raised."""

    def __init__(self, message: str):
        if message.startswith("Caught "):
            message = message.rstrip().splitlines()[-1].split(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


class DamagedChunk(BadSweep):
    """A chunk of a store that does not decode (its checksum fails, or its codec cannot read it)."""


class BadValues(BadSweep):
    """A sweep whose chunks decode but hold values no extract writes (NaN, a point kilometres away, a label
    outside the classes): written by an older or foreign writer, or edited since."""


#: No LiDAR return lies farther than this from its sensor on any axis (nuScenes' HDL-32E reaches ~70 m, the
#: longest automotive sensors a few hundred): the extract fails a sweep holding such a point, and readers
#: refuse one.
MAX_RANGE_M = 1000.0


def points_problem(points: np.ndarray) -> str | None:
    """Why the LiDAR points [N, 5] (x, y, z, intensity, ring) cannot be used, or None: a value that is not
    finite, or a point farther than ``MAX_RANGE_M`` on some axis. The one rule of the extract (which fails
    such a sweep), ``cdpipe verify`` and the trainer (which refuse a stored one)."""
    nonfinite = ~np.isfinite(points).all(axis=1)
    far = np.isfinite(points[:, :3]).all(axis=1) & (np.abs(points[:, :3]) > MAX_RANGE_M).any(axis=1)
    parts = []
    if nonfinite.any():
        parts.append(f"{int(nonfinite.sum())} points hold NaN or inf (first: row {int(np.argmax(nonfinite))})")
    if far.any():
        row = int(np.argmax(far))
        parts.append(f"{int(far.sum())} points lie more than {MAX_RANGE_M:g} m from the sensor (first: row {row}, "
                     f"xyz {points[row, :3].tolist()})")
    return "; ".join(parts) or None


def codecs(spec: ArraySpec) -> dict:
    """Compression per array, chosen by measurement (storage_schema.md, "Chunking and compression"), and
    a crc32c checksum of every encoded chunk: Zarr's own codec, so any Zarr v3 reader detects a damaged
    chunk. Sharded arrays also carry zarr's default crc32c on each shard's index."""
    from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

    if spec.dtype == "str":
        compressor = ZstdCodec(level=0)  # zarr's default for variable-length strings
    elif spec.name in FEATURE_ARRAYS and spec.dtype != "float32":  # nearly zstd's size at 1.5x its write speed
        compressor = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=np.dtype(spec.dtype).itemsize)
    else:
        compressor = BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=np.dtype(spec.dtype).itemsize)
    return {"compressors": (compressor, Crc32cCodec())}


def store_dims(attrs: dict) -> dict[str, int]:
    """The symbolic sizes of the arrays' trailing dimensions, from the store's attributes."""
    h, w = attrs["patch_grid"]
    return {"P": attrs["max_points"], "Q": attrs["max_queries"], "B": attrs["max_boxes"], "D": attrs["feature_dim"],
            "C": len(attrs["cameras"]), "h": h, "w": w}


def store_classes(attrs: dict):
    """The store's class set, a ``classes.LabelClasses`` (attribute ``classes``): what ``labels`` index, the
    evaluation classes 1..K they map to and the ignore index."""
    from pipeline.classes import LabelClasses

    return LabelClasses.from_dict(attrs["classes"])


def expected_arrays(attrs: dict) -> list[ArraySpec]:
    """The arrays a store with these attributes holds: those of its layout and encoding, ``labels`` only
    when it has labels, and the box arrays and ``global_from_lidar`` only when it has boxes."""
    have = {attrs["layout"], attrs["feature_encoding"], *(("labels",) if attrs.get("has_labels") else ()),
            *(("boxes",) if attrs.get("has_boxes") else ())}
    return [spec for spec in ARRAYS if set(spec.when) <= have]


def patch_grid(teacher: dict) -> list[int]:
    """[h, w] of the teacher's patch map per camera, from its record (``image_size`` over ``patch_size``)."""
    h, w = teacher["image_size"]
    return [h // teacher["patch_size"], w // teacher["patch_size"]]


def feature_arrays(attrs: dict) -> list[str]:
    """The arrays of a store that carry the teacher features (its layout's, in its encoding)."""
    return [spec.name for spec in expected_arrays(attrs) if spec.name in FEATURE_ARRAYS]


def grid(spec: ArraySpec, attrs: dict) -> tuple[tuple, tuple, tuple | None]:
    """(shape, chunks, shards) of array ``spec`` in a store with these attributes: per-point, per-query,
    per-box and patch arrays have one sweep per chunk and ``sweeps_per_shard`` per shard (the feature arrays: no
    shards); per-sweep arrays have ``sweeps_per_shard`` sweeps per chunk and no shards."""
    shape = spec.shape(attrs["num_sweeps"], store_dims(attrs))
    k = attrs["sweeps_per_shard"]
    if spec.sweep_chunks:
        return shape, (1, *shape[1:]), ((k, *shape[1:]) if spec.sharded else None)
    return shape, (k, *shape[1:]), None


# ---------------------------------------------------------------------------------------------------
# the int8 encoding, shared by the writer and the readers


def encode_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors ``x`` [..., D] as int8 and a float32 scale [...] each: ``q = round(x / scale)``, ``scale =
    max |x| / 127`` (0 for a zero vector, whose q is 0)."""
    x = np.asarray(x, np.float32)
    scale = np.abs(x).max(-1) / np.float32(127)
    q = np.rint(x / np.where(scale > 0, scale, 1)[..., None])
    return np.clip(q, -127, 127).astype(np.int8), scale.astype(np.float32)


def decode_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``q * scale`` as float32 [..., D]."""
    return q.astype(np.float32) * scale[..., None]


# ---------------------------------------------------------------------------------------------------
# opening and reading stores


def as_attribute(value):
    """``value`` as it reads back from a Zarr attribute (JSON): tuples become lists, keys strings. Comparing
    two settings in this form ignores only how they were held in memory."""
    return json.loads(json.dumps(value))


def check_compatible(attrs: dict, where: str) -> None:
    """Refuse a store written under another schema version."""
    version = attrs.get("schema_version")
    if version is None:
        raise StoreError(f"{where} is not a teacher-feature store (no schema_version attribute)")
    if version == 5:
        raise StoreError(f"{where} has schema_version 5; this code reads version {SCHEMA_VERSION}. Upgrade a copy with "
                         f"`cdpipe migrate {where} --out NEW_STORE` (no teacher or dataset needed: it records the "
                         f"nuScenes class set and LiDAR that every schema 5 store holds).")
    if version == 4:
        raise StoreError(f"{where} has schema_version 4; this code reads version {SCHEMA_VERSION}. Upgrade a copy with "
                         f"`cdpipe migrate {where} --out NEW_STORE` (no teacher needed; it reads the annotated boxes "
                         f"from the dataset's tables).")
    if version in (1, 2, 3):
        raise StoreError(f"{where} has schema_version {version}; this code reads version {SCHEMA_VERSION}. Upgrade a "
                         f"copy with `cdpipe migrate {where} --out NEW_STORE` (no teacher needed; it keeps a feature "
                         f"per point), or re-extract it (patch maps: ~10x smaller).")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{where} has schema_version {version}; this code reads version {SCHEMA_VERSION}. "
                         f"Re-extract the store with this version of cdpipe, or use the cdpipe release that wrote it.")


URL_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # URL scheme -> the extra that reads it


def open_store(url: str, mode: str = "r"):
    """Open a store (a local path, or a URL: file://, http(s)://, s3://, gs://) and check its schema
    version. URLs other than file:// open read-only."""
    import zarr

    scheme = url.split("://", 1)[0].lower() if "://" in url else "file"
    if scheme not in ("file", "http", "https", *URL_EXTRAS):
        raise StoreError(f"{url}: unsupported URL scheme {scheme!r}; use a local path or file://, http(s)://, "
                         f"s3:// or gs://")
    if scheme != "file" and mode != "r":
        raise StoreError(f"{url}: stores are written to local paths (or file:// URLs) only; {scheme}:// is read-only")
    if scheme in ("http", "https"):
        check_byte_ranges(url)
    try:
        group = zarr.open_group(url, mode=mode)
        attrs = dict(group.attrs)
    except ImportError as e:
        extra = URL_EXTRAS.get(scheme)
        hint = (f"pip install 'cleverdistiller-pipe[{extra}]'" if extra else "reinstall cleverdistiller-pipe")
        raise StoreError(f"reading {url} needs packages that are not installed ({e}): {hint}") from None
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as e:
        raise StoreError(f"no store at {url}: {e}") from None
    except Exception as e:  # a server that does not answer, a damaged zarr.json
        what = "could not be reached" if is_io_error(e) else "has metadata that cannot be read (zarr.json)"
        raise StoreError(f"{url} {what}: {type(e).__name__}: {decode_reason(e)}") from None
    check_compatible(attrs, url)
    return group


def check_byte_ranges(url: str) -> None:
    """Refuse an HTTP server that ignores byte ranges (Python's ``http.server`` does): zarr reads each
    chunk of a sharded array as a byte range of its shard, so through such a server every shard would
    read as damaged. One request for the first byte of the root ``zarr.json``; a server that cannot be
    reached is left for the open to report."""
    import urllib.request

    request = urllib.request.Request(url.rstrip("/") + "/zarr.json", headers={"Range": "bytes=0-0"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, head = response.status, response.read(2)
    except Exception:
        return
    if status == 200 and len(head) > 1:
        raise StoreError(f"{url}: the server ignores HTTP byte ranges (asked for the first byte of zarr.json, it sent "
                         f"the whole file); zarr reads sharded arrays by byte range, so their chunks would read as "
                         f"damaged. Serve the store with a server that honours ranges (nginx, S3, GCS, "
                         f"`python -m RangeHTTPServer`...) or copy it locally.")


def store_url(group) -> str:
    """Where an opened store lives, as the user would write it."""
    store = group.store
    fs = getattr(store, "fs", None)
    if fs is not None:  # an fsspec URL
        return fs.unstrip_protocol(store.path)
    return str(getattr(store, "root", store))


def chunk_key(array, s: int) -> str:
    """Key (within the store) of the object holding sweep ``s`` of ``array``: its chunk, or its shard when
    the array is sharded."""
    grid = array.shards or array.chunks
    coords = (s // grid[0],) + (0,) * (array.ndim - 1)
    return f"{array.path}/{array.metadata.chunk_key_encoding.encode_chunk_key(coords)}"


def _sample_token(group, s: int) -> str:
    try:
        return str(group["sample_token"][s]) or "?"
    except Exception:  # the token's own chunk may be the damaged one
        return "?"


def decode_reason(error: BaseException) -> str:
    """Why a chunk did not decode, short: a checksum mismatch, or the first line of the codec's error."""
    from pipeline.errors import first_line

    if "checksum do not match" in str(error):
        return "crc32c checksum mismatch (its bytes changed after they were written)"
    return first_line(error, 160).rstrip(".")


def is_io_error(error: BaseException) -> bool:
    """A failure to reach the bytes (file system, network), as opposed to bytes that do not decode."""
    return isinstance(error, (OSError, TimeoutError)) or type(error).__module__.split(".")[0] == "aiohttp"


def damaged(group, name: str, s: int, error: BaseException) -> StoreError:
    """The one-line error for sweep ``s`` of array ``name`` failing to read with ``error``: a
    ``DamagedChunk`` when its bytes do not decode, a ``StoreError`` when they could not be read at all."""
    where = (f"{store_url(group)}: array {name}, sweep {s} (sample {_sample_token(group, s)}), "
             f"chunk {chunk_key(group[name], s)}")
    if is_io_error(error):
        return StoreError(f"{where} could not be read: {type(error).__name__}: {decode_reason(error)}")
    return DamagedChunk(f"{where} does not decode: {decode_reason(error)} (`cdpipe verify` lists every damaged chunk)")


def read_rows(group, name: str, s: int, n: int | None = None) -> np.ndarray:
    """Sweep ``s`` of array ``name`` (its first ``n`` rows when given), or a one-line error that names it
    (``DamagedChunk`` when the chunk does not decode); every reader of sweeps goes through here."""
    array = group[name]
    try:
        return array[s] if n is None else array[s, :n]
    except Exception as e:  # a checksum mismatch is a ValueError, a codec failure anything
        raise damaged(group, name, s, e) from None


def read_column(group, name: str, on_damage=None) -> np.ndarray:
    """All of a per-sweep array (``done``, ``num_points``...). A chunk that does not decode raises a
    ``DamagedChunk`` naming it, or, with ``on_damage(first_sweep, error)`` given, reads as the fill value
    after that is called. One read of the whole array first (zarr fetches its chunks concurrently: a
    34,000-sweep store has 17,000 chunks per column, which one request each would take minutes to read
    over a URL), and chunk by chunk only when that fails, to name the chunk at fault."""
    array = group[name]
    spec = ARRAY_SPECS[name]
    out = np.full(array.shape, spec.fill, dtype=object if spec.dtype == "str" else spec.dtype)
    try:
        out[:] = array[:]
        return out
    except Exception:  # a damaged or unreadable chunk somewhere: find it
        pass
    step = array.chunks[0]
    for s0 in range(0, array.shape[0], step):
        try:
            out[s0:s0 + step] = array[s0:s0 + step]
        except Exception as e:
            error = damaged(group, name, s0, e)
            if on_damage is None or not isinstance(error, DamagedChunk):
                raise error from None
            on_damage(s0, error)
    return out


def read_sweep(store, s: int, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The real rows of sweep ``s``: ``points`` [n,5], ``features`` [n,D] float16, ``valid`` [n], ``camera``
    [n], ``pixel`` [n,2], ``labels`` [n] (when the store has labels), ``occ_voxels`` [q,3],
    ``occ_labels`` [q] and ``occ_centres`` [q,3] (voxel centres, m, LiDAR frame), or only ``fields`` of
    them, whatever the store's layout and encoding (``features`` is 0 where ``valid`` is false).
    ``store``: a path, a URL or an opened store. A sweep that is not complete raises a StoreError; a
    chunk that does not decode, a ``DamagedChunk``."""
    return sweep_rows(_complete_sweep(store, s), s, fields)


def _complete_sweep(store, s: int):
    """The opened store (``store``: a path, a URL or an opened store) once sweep ``s`` is known to exist and
    be complete; a ``StoreError`` saying why not otherwise."""
    if isinstance(store, (str, os.PathLike)):
        group = open_store(os.fspath(store))
    else:
        group = store
        check_compatible(dict(group.attrs), store_url(group))
    if not 0 <= s < group["done"].shape[0]:
        raise StoreError(f"{store_url(group)}: no sweep {s} (the store has {group['done'].shape[0]})")
    if int(read_rows(group, "done", s)) != 1:
        why = str(read_rows(group, "failure", s))
        raise StoreError(f"{store_url(group)}: sweep {s} is not complete" + (f" (it failed: {why})" if why else ""))
    return group


def sweep_rows(group, s: int, fields: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """``read_sweep`` without its checks, for a reader that has already opened the store and chosen
    complete sweeps (the trainer's dataset, once per item)."""
    attrs = group.attrs
    n, q = int(read_rows(group, "num_points", s)), int(read_rows(group, "num_queries", s))
    fields = fields or tuple(f for f in FIELDS if f != "labels" or "labels" in group)
    unknown = [f for f in fields if f not in FIELDS or (f == "labels" and "labels" not in group)]
    if unknown:
        raise StoreError(f"{store_url(group)}: read_sweep has no field {', '.join(unknown)}; it reads "
                         f"{', '.join(FIELDS)}"
                         + ("" if "labels" in group else " (no labels: the store has none)"))
    out: dict[str, np.ndarray] = {}

    def rows(name: str) -> np.ndarray:
        if name not in out:
            out[name] = read_rows(group, name, s, q if ARRAY_SPECS[name].trailing[0] == "Q" else n)
        return out[name]

    for name in fields:
        if name == "occ_centres":
            occ = attrs["occupancy"]
            out[name] = (np.asarray(occ["lower"], np.float32)
                         + (rows("occ_voxels").astype(np.float32) + 0.5) * np.float32(occ["voxel_size_m"]))
        elif name == "features":
            out[name] = _features(group, s, n, rows)
        else:
            rows(name)
    return {name: out[name] for name in fields}


def _features(group, s: int, n: int, rows) -> np.ndarray:
    """Sweep ``s``'s per-point features [n, D] float16, from whichever arrays carry them."""
    attrs = group.attrs
    layout, encoding = attrs["layout"], attrs["feature_encoding"]
    if layout == "points":
        if encoding == "float16":
            return rows("features")
        return decode_int8(rows("features_int8"), rows("features_scale")).astype(np.float16)
    if encoding == "float16":
        maps = read_rows(group, "patches", s)
    else:
        maps = decode_int8(read_rows(group, "patches_int8", s), read_rows(group, "patches_scale", s))
    c, h, w, d = maps.shape
    idx, wts = bilinear_cells(rows("camera"), rows("pixel"), read_rows(group, "camera_hw", s), h, w)
    return sample_cells(maps.reshape(c * h * w, d), idx, wts)


# ---------------------------------------------------------------------------------------------------
# the annotated boxes


def read_boxes(store, s: int) -> dict[str, np.ndarray]:
    """The annotated boxes of sweep ``s``, its real rows (b = ``num_boxes[s]``) of every per-box array
    (``box_centre`` [b,3], ``box_size`` [b,3], ``box_yaw`` [b], ``box_velocity`` [b,2], ``box_class`` [b],
    ``box_num_lidar_pts`` [b], ``box_token`` [b]; LiDAR frame) and its ``global_from_lidar`` [4,4] float64.
    ``store``: a path, a URL or an opened store. A store without boxes or a sweep that is not complete
    raises a ``StoreError``; values that no extract writes, ``BadValues`` naming the array and sweep."""
    group = _complete_sweep(store, s)
    attrs = group.attrs
    if not attrs.get("has_boxes"):
        raise StoreError(f"{store_url(group)} holds no boxes (has_boxes is false: it was migrated without its "
                         f"dataset's tables); migrate its original again with --dataroot, or re-extract it")
    b = int(read_rows(group, "num_boxes", s))
    if not 0 <= b <= attrs["max_boxes"]:
        raise BadValues(f"{store_url(group)}: array num_boxes, sweep {s} (sample {_sample_token(group, s)}): "
                        f"{b} boxes, outside 0-{attrs['max_boxes']} (max_boxes)")
    out = {name: read_rows(group, name, s, b) for name in BOX_FIELDS if name != "global_from_lidar"}
    out["global_from_lidar"] = read_rows(group, "global_from_lidar", s)
    problems = boxes_problems(out, len(attrs["detection_classes"]))
    if problems:
        name, what = problems[0]
        raise BadValues(f"{store_url(group)}: array {name}, sweep {s} (sample {_sample_token(group, s)}), chunk "
                        f"{chunk_key(group[name], s)}: {what} (`cdpipe verify` lists every problem)")
    return out


def boxes_problems(rows: dict[str, np.ndarray], num_classes: int) -> list[tuple[str, str]]:
    """(array, message) for each rule that one sweep's boxes break (``rows``: the real rows of the per-box
    arrays, and ``global_from_lidar`` when given): centres, sizes and yaws finite, sizes positive,
    velocities finite or NaN (not computable), classes within the ``num_classes`` detection classes,
    point counts not negative, every box with its annotation token, and a rigid transform. The one rule
    of ``cdpipe verify`` and ``read_boxes``."""
    out = []
    for name in ("box_centre", "box_size", "box_yaw"):
        finite = np.isfinite(rows[name])
        bad = int((~(finite.all(axis=1) if finite.ndim > 1 else finite)).sum())
        if bad:
            out.append((name, f"{bad} boxes hold NaN or inf"))
    size = rows["box_size"]
    small = int((np.isfinite(size) & (size <= 0)).any(axis=1).sum())
    if small:
        out.append(("box_size", f"{small} boxes have a size that is not positive"))
    infinite = int(np.isinf(rows["box_velocity"]).any(axis=1).sum())
    if infinite:
        out.append(("box_velocity", f"{infinite} boxes have an infinite velocity (NaN: not computable; inf: never)"))
    cls = rows["box_class"]
    outside = (cls < 0) | (cls >= num_classes)
    if outside.any():
        out.append(("box_class", f"{int(outside.sum())} classes outside 0-{num_classes - 1} (the detection classes; "
                                 f"first: {int(cls[outside][0])})"))
    if (rows["box_num_lidar_pts"] < 0).any():
        out.append(("box_num_lidar_pts", f"{int((rows['box_num_lidar_pts'] < 0).sum())} negative point counts"))
    if any(not str(t) for t in rows["box_token"]):
        out.append(("box_token", f"{sum(1 for t in rows['box_token'] if not str(t))} boxes without an annotation "
                                 f"token"))
    if "global_from_lidar" in rows:
        problem = transform_problem(rows["global_from_lidar"])
        if problem:
            out.append(("global_from_lidar", problem))
    return out


def transform_problem(t: np.ndarray) -> str | None:
    """Why ``t`` [4,4] is not a rigid transform (non-finite, a last row other than 0 0 0 1, a rotation
    that is not orthonormal with determinant 1, to 1e-6), or None."""
    t = np.asarray(t, np.float64)
    if not np.isfinite(t).all():
        return "the transform holds NaN or inf"
    if not np.allclose(t[3], (0, 0, 0, 1), atol=1e-6):
        return f"the transform's last row is {t[3].tolist()}, not [0, 0, 0, 1]"
    r = t[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
        return f"the transform's rotation {r.round(6).tolist()} is not a rotation (orthonormal, determinant 1)"
    return None



# ---------------------------------------------------------------------------------------------------
# where a store may be written, checked before any work (``cdpipe extract --out``, ``cdpipe migrate --out``)


def local_path(url: str) -> str:
    """The local path of a store URL that may be written (a path or a file:// URL)."""
    if url.startswith("file://"):
        return url[len("file://"):]
    if "://" in url:
        raise StoreError(f"--out {url}: stores are written to local paths only (a shared file system, or a "
                         f"file:// URL); read them anywhere by URL")
    return url


def check_out(url: str, overwrite: bool) -> None:
    """Refuse, before any work, an ``--out`` that is a file, a non-empty folder that is not a store, or a
    store of another schema version (unless ``overwrite``)."""
    path = local_path(url)
    if os.path.exists(path) and not os.path.isdir(path):
        raise StoreError(f"--out {url} is a file, not a store; choose another --out")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise StoreError(f"--out {url}: {parent} is a file, not a folder; choose another --out")
    meta = os.path.join(path, "zarr.json")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(meta):
        # opening with mode "w" would delete whatever is there
        raise StoreError(f"--out {url} exists and is not a Zarr store; refusing to write over it. Choose another "
                         "--out.")
    if not os.path.exists(meta):
        return
    try:
        with open(meta) as f:
            root = json.load(f)
        attrs = root.get("attributes", {})
    except (OSError, ValueError, AttributeError) as e:
        root, attrs, unreadable = None, None, e
    if overwrite:
        _check_overwrite(url, path, root)
    elif attrs is None:
        raise StoreError(f"--out {url}: cannot read its zarr.json ({unreadable}); pass --overwrite to start it "
                         "again") from None
    else:
        check_compatible(attrs, url)


def _check_overwrite(url: str, path: str, root: dict | None) -> None:
    """``--overwrite`` deletes the folder: refuse unless it is a teacher-feature store (its zarr.json names a
    schema_version, or cannot be read) holding nothing but its own arrays, so that no foreign Zarr group
    and no file a person put beside the arrays is lost."""
    if root is not None and "schema_version" not in (root.get("attributes") or {}):
        raise StoreError(f"--out {url} is a Zarr group but not a teacher-feature store (no schema_version "
                         f"attribute); --overwrite deletes only stores that cdpipe wrote. Choose another --out.")
    consolidated = ((root or {}).get("consolidated_metadata") or {}).get("metadata") or {}
    arrays = {*ARRAY_SPECS, *(name.split("/")[0] for name in consolidated)}
    foreign = sorted(set(os.listdir(path)) - {"zarr.json", *arrays})
    for name in sorted(arrays & set(os.listdir(path))):  # inside an array: its zarr.json and chunk keys c/i/j/...
        for folder, dirs, files in os.walk(os.path.join(path, name)):
            rel = os.path.relpath(folder, path).split(os.sep)
            chunks = len(rel) > 1 and rel[1] == "c" and all(part.isdigit() for part in rel[2:])
            foreign += [os.path.join(*rel, f) for f in files
                        if not (f == "zarr.json" and len(rel) == 1) and not (chunks and f.isdigit())]
            foreign += [os.path.join(*rel, d) for d in dirs if not ((len(rel) == 1 and d == "c")
                                                                     or (chunks and d.isdigit()))]
            dirs[:] = [d for d in dirs if (len(rel) == 1 and d == "c") or (chunks and d.isdigit())]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise StoreError(f"--out {url} holds {shown}, which cdpipe did not write; --overwrite would delete "
                         f"{'them' if len(foreign) > 1 else 'it'}. Move {'them' if len(foreign) > 1 else 'it'} "
                         f"out of the store, or choose another --out.")

