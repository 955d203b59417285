"""The compact frame index: everything the extract workers need, read once from the dataset tables.

The client builds it with the nuScenes devkit (``load_nuscenes``, through which ``dataroot.py`` and
``migrate.py`` open the tables too), or from a SemanticKITTI layout (``semantickitti.py``, the same
``FrameIndex``); workers get slices of it (file paths, 4x4 transforms, intrinsics, timestamps, tokens, the
annotated boxes) and never load the tables themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pipeline.boxes import SweepBoxes, sweep_boxes
from pipeline.classes import NUM_FINE_CLASSES
from pipeline.errors import ExtractError
from pipeline.geometry import invert_transform, make_transform
from pipeline.store import points_problem

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
CAMERA_GRID = (("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"),  # the cameras as a picture shows them
               ("CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT"))
LIDAR = "LIDAR_TOP"
SPLITS = ("all", "train", "val", "test", "mini_train", "mini_val")
LIDAR_FIELDS = 5  # one nuScenes .pcd.bin point: x, y, z, intensity, ring, each a float32
LIDAR_RECORD_BYTES = 4 * LIDAR_FIELDS
#: The LiDAR a nuScenes store describes (attribute ``sensors``): the HDL-32E, intensity 0..255, with rings
SENSORS = {"lidar": LIDAR, "beams": 32, "intensity_max": 255.0, "has_ring": True}
LIDAR_AXES = ("right", "forward", "up")  # where LIDAR_TOP's x, y, z point on the car


@dataclass(frozen=True)
class FrameIndex:
    """Per sweep s (LiDAR keyframe) and camera c; S sweeps, C cameras. A sweep whose ``failure`` is set
    (its tables name a file outside the dataroot, a missing file, a bad LiDAR pose...) keeps only its
    tokens and timestamps; a camera whose ``camera_ok`` is false (bad calibration or pose, no image in
    the sample) is left out of the sweep, and ``warnings`` says why."""

    dataroot: str
    lidar_path: tuple[str, ...]  # [S] absolute paths of .pcd.bin ("" for a failed sweep)
    label_path: tuple[str, ...] | None  # [S] lidarseg .bin paths, None without labels
    num_points: np.ndarray  # [S] int64, from the file sizes (0 for a failed sweep)
    image_path: tuple[tuple[str, ...], ...]  # [S][C] ("" for a camera left out)
    cam_from_lidar: np.ndarray  # [S,C,4,4] float64, full chain with both ego poses
    intrinsics: np.ndarray  # [S,C,3,3] float64
    image_hw: np.ndarray  # [S,C,2] int64 (height, width)
    timestamp: np.ndarray  # [S] int64 LiDAR timestamps
    camera_timestamp: np.ndarray  # [S,C] int64
    sample_token: tuple[str, ...]
    lidar_token: tuple[str, ...]
    scene_index: np.ndarray  # [S] int32
    scenes: tuple[dict, ...]  # {name, token, split, first_sweep, num_sweeps}
    failure: tuple[str, ...] = ()  # [S] why the sweep cannot be extracted; "" when it can
    camera_ok: np.ndarray | None = None  # [S,C] bool
    warnings: tuple[tuple[str, ...], ...] = ()  # [S] what was left out of the sweep, and why
    cameras: tuple[str, ...] = CAMERAS
    global_from_lidar: np.ndarray | None = None  # [S,4,4] float64 (NaN for a failed sweep)
    boxes: tuple[SweepBoxes, ...] = ()  # [S] the sample's annotated boxes, LiDAR frame (none for a failed sweep)
    dataset: str = "nuscenes"  # the layout of the files: nuscenes, or semantickitti (``semantickitti.py``)

    @classmethod
    def from_rows(cls, dataroot: str, rows: list[dict], scenes: list[dict], has_labels: bool,
                  cameras: tuple[str, ...] = CAMERAS, dataset: str = "nuscenes") -> "FrameIndex":
        """The index of a reader's per-sweep rows: ``lidar``, ``label``, ``n`` (points), ``img`` [C],
        ``cfl`` [C,4,4], ``k`` [C,3,3], ``hw`` [C,2], ``ts``, ``sample``, ``scene``, ``failure``, ``ok`` [C],
        ``warn``, ``gfl`` [4,4], and where the layout has them ``cts`` [C] (default: the LiDAR's time for
        every camera), ``lidar_tok`` (default: the sample token) and ``boxes`` (default: none; a failed
        sweep has none)."""
        def col(key, dtype=None):
            return np.array([r[key] for r in rows], dtype=dtype)

        return cls(
            dataroot=str(dataroot), lidar_path=tuple(r["lidar"] for r in rows),
            label_path=tuple(r["label"] for r in rows) if has_labels else None, num_points=col("n", np.int64),
            image_path=tuple(tuple(r["img"]) for r in rows), cam_from_lidar=col("cfl", np.float64),
            intrinsics=col("k", np.float64), image_hw=col("hw", np.int64), timestamp=col("ts", np.int64),
            camera_timestamp=np.array([r.get("cts", [r["ts"]] * len(cameras)) for r in rows], np.int64),
            sample_token=tuple(r["sample"] for r in rows),
            lidar_token=tuple(r.get("lidar_tok", r["sample"]) for r in rows), scene_index=col("scene", np.int32),
            scenes=tuple(scenes), failure=tuple(r["failure"] for r in rows), camera_ok=col("ok", bool),
            warnings=tuple(tuple(r["warn"]) for r in rows), cameras=cameras, global_from_lidar=col("gfl", np.float64),
            boxes=tuple(r.get("boxes") if r.get("boxes") is not None and not r["failure"] else SweepBoxes.empty()
                        for r in rows),
            dataset=dataset)

    @property
    def num_boxes(self) -> np.ndarray:
        """[S] int64, boxes per sweep."""
        return np.array([len(b) for b in self.boxes], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lidar_path)

    def select(self, rows: range | np.ndarray) -> "FrameIndex":
        """The index restricted to sweeps ``rows`` (what one task receives)."""
        rows = np.asarray(rows if not isinstance(rows, range) else np.arange(rows.start, rows.stop))

        def pick(seq):
            return tuple(seq[i] for i in rows)

        return FrameIndex(
            dataroot=self.dataroot, lidar_path=pick(self.lidar_path),
            label_path=pick(self.label_path) if self.label_path is not None else None,
            num_points=self.num_points[rows], image_path=pick(self.image_path),
            cam_from_lidar=self.cam_from_lidar[rows], intrinsics=self.intrinsics[rows],
            image_hw=self.image_hw[rows], timestamp=self.timestamp[rows],
            camera_timestamp=self.camera_timestamp[rows], sample_token=pick(self.sample_token),
            lidar_token=pick(self.lidar_token), scene_index=self.scene_index[rows], scenes=self.scenes,
            failure=pick(self.failure), camera_ok=self.camera_ok[rows], warnings=pick(self.warnings),
            cameras=self.cameras, global_from_lidar=self.global_from_lidar[rows], boxes=pick(self.boxes),
            dataset=self.dataset)


def _scene_splits(version: str) -> dict[str, str]:
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    names = ("mini_train", "mini_val") if "mini" in version else ("train", "val", "test")
    return {scene: s for s in names for scene in splits[s]}


def inside_dataroot(root: str, filename: str, what: str) -> str:
    """The dataset file ``filename`` (as the tables name it, relative to the dataroot ``root``, itself
    resolved), resolved after symlinks; an ``ExtractError`` if it lies outside the dataroot (an absolute
    name, ``..``, or a symlink leading out), so the tables cannot make the job read any other file."""
    path = os.path.realpath(os.path.join(root, filename))
    if os.path.isabs(filename) or os.path.commonpath([root, path]) != root:
        raise ExtractError(f"{what}: filename {filename!r} lies outside the dataroot {root} (resolved: {path}); "
                           f"the tables may only name files inside it (if its folders are symlinks, point "
                           f"--dataroot at the real folder)")
    return path


POSE_TOLERANCE = 1e-3  # |norm(q) - 1| allowed for a rotation quaternion (the tables keep ~1e-6)


def pose_problem(record: dict) -> str | None:
    """Why a calibrated_sensor or ego_pose record cannot be trusted (non-finite numbers, a rotation that
    is not a unit quaternion), or None."""
    try:
        q = np.asarray(record.get("rotation", ()), dtype=np.float64).ravel()
        t = np.asarray(record.get("translation", ()), dtype=np.float64).ravel()
    except (TypeError, ValueError):
        return f"rotation {record.get('rotation')!r} or translation {record.get('translation')!r} is not numbers"
    if q.shape != (4,) or t.shape != (3,):
        return f"rotation/translation of shape {q.shape}/{t.shape}, expected (4,)/(3,)"
    if not (np.isfinite(q).all() and np.isfinite(t).all()):
        return f"non-finite rotation {q.tolist()} or translation {t.tolist()}"
    if abs(np.linalg.norm(q) - 1.0) > POSE_TOLERANCE:
        return f"rotation {q.tolist()} is not a unit quaternion (norm {np.linalg.norm(q):.6g})"
    return None


def intrinsics_problem(k) -> str | None:
    """Why a camera_intrinsic matrix cannot be used (shape, non-finite, focal lengths not positive), or None."""
    try:
        k = np.asarray(k if k is not None else (), dtype=np.float64)
    except (TypeError, ValueError):
        return f"camera_intrinsic {k!r} is not a 3x3 matrix of numbers"
    if k.shape != (3, 3):
        return f"camera_intrinsic of shape {k.shape}, expected (3, 3)"
    if not np.isfinite(k).all():
        return f"non-finite camera_intrinsic {k.tolist()}"
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        return f"camera_intrinsic focal lengths {k[0, 0]}, {k[1, 1]} are not positive"
    return None


def _transform(record) -> np.ndarray:
    return make_transform(np.asarray(record["rotation"], dtype=np.float64),
                          np.asarray(record["translation"], dtype=np.float64))


#: The tables a sweep's records come from; a token that appears twice in one of them is ambiguous
#: (the devkit silently keeps the last record), so a sweep that needs it fails.
TOKEN_TABLES = ("sample", "sample_data", "ego_pose", "calibrated_sensor", "lidarseg", "sample_annotation")


def duplicated_tokens(nusc) -> dict[str, dict[str, int]]:
    """{table: {token: count}} of the tokens that appear more than once in each of ``TOKEN_TABLES``."""
    from collections import Counter

    out = {}
    for table in TOKEN_TABLES:
        counts = Counter(r.get("token") for r in getattr(nusc, table, None) or ())
        out[table] = {tok: n for tok, n in counts.items() if n > 1}
    return out


class _Tables:
    """``nusc.get`` that refuses a token its table holds more than once."""

    def __init__(self, nusc, duplicates: dict[str, dict[str, int]]):
        self.nusc, self.duplicates = nusc, duplicates

    def get(self, table: str, token: str) -> dict:
        n = self.duplicates.get(table, {}).get(token)
        if n:
            raise ExtractError(f"{table} token {token} appears {n} times in {table}.json: the tables are ambiguous "
                               f"(the devkit would silently use the last record); give each record its own token")
        return self.nusc.get(table, token)

    def box_velocity(self, token: str) -> np.ndarray:
        """The devkit's velocity of annotation ``token`` (global frame, m/s; NaN where it has none)."""
        return self.nusc.box_velocity(token)


def _sweep(nusc, root: str, sample: dict, lidar: dict, has_labels: bool) -> dict:
    """One row of the index; raises ExtractError when the sweep cannot be extracted at all. A camera that
    cannot be used is left out (camera_ok false) with a warning naming it and the reason. ``nusc``: the
    tables (a ``_Tables``)."""
    where = f"sample {sample['token']}"
    if lidar.get("sample_token") != sample["token"]:
        raise ExtractError(f"{where} names {LIDAR} sample_data {lidar['token']}, which belongs to sample "
                           f"{lidar.get('sample_token')}: the tables are inconsistent")
    lidar_path = inside_dataroot(root, lidar["filename"], f"{where}, {LIDAR} sample_data {lidar['token']}")
    if not os.path.isfile(lidar_path):
        raise ExtractError(f"LiDAR file missing: {lidar_path} ({where})")
    size = os.path.getsize(lidar_path)
    if size == 0:
        raise ExtractError(f"LiDAR file {lidar_path} is empty ({where})")
    if size % LIDAR_RECORD_BYTES:
        raise ExtractError(f"LiDAR file {lidar_path} is {size} bytes, not a whole number of points "
                           f"({LIDAR_FIELDS} float32 each): truncated, or not a nuScenes .pcd.bin ({where})")
    lidar_cs = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    lidar_pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    for kind, record in (("calibrated_sensor", lidar_cs), ("ego_pose", lidar_pose)):
        problem = pose_problem(record)
        if problem:
            raise ExtractError(f"{LIDAR} {kind} {record['token']} of {where}: {problem}")
    label_path = None
    if has_labels:
        label_path = inside_dataroot(root, nusc.get("lidarseg", lidar["token"])["filename"],
                                     f"{where}, lidarseg of {lidar['token']}")
    global_from_lidar = _transform(lidar_pose) @ _transform(lidar_cs)
    row = {"lidar": lidar_path, "label": label_path, "n": size // LIDAR_RECORD_BYTES, "img": [], "cfl": [], "k": [],
           "hw": [], "cts": [], "ok": [], "warn": [], "gfl": global_from_lidar,
           "boxes": sweep_boxes(nusc, sample, global_from_lidar)}
    for ch in CAMERAS:
        cfl, k, hw, ts, path, problem = np.full((4, 4), np.nan), np.full((3, 3), np.nan), (0, 0), 0, "", None
        if ch not in sample["data"]:
            problem = "the sample has no image of this camera"
        else:
            cam = nusc.get("sample_data", sample["data"][ch])
            if cam.get("sample_token") != sample["token"]:
                raise ExtractError(f"{where} names {ch} sample_data {cam['token']}, which belongs to sample "
                                   f"{cam.get('sample_token')}: the tables are inconsistent")
            cs = nusc.get("calibrated_sensor", cam["calibrated_sensor_token"])
            pose = nusc.get("ego_pose", cam["ego_pose_token"])
            ts, hw = cam["timestamp"], (int(cam["height"]), int(cam["width"]))
            for kind, record in (("calibrated_sensor", cs), ("ego_pose", pose)):
                why = pose_problem(record)
                problem = problem or (why and f"{kind} {record['token']}: {why}")
            problem = (problem or intrinsics_problem(cs.get("camera_intrinsic"))
                       or (None if hw[0] > 0 and hw[1] > 0 else f"image size {hw[1]}x{hw[0]} in its sample_data"))
            if problem is None:
                path = inside_dataroot(root, cam["filename"], f"{where}, {ch} sample_data {cam['token']}")
                if not os.path.isfile(path):
                    raise ExtractError(f"camera image missing: {path} ({ch} of {where})")
                cfl = invert_transform(_transform(pose) @ _transform(cs)) @ global_from_lidar
                k = np.asarray(cs["camera_intrinsic"], dtype=np.float64)
        row["img"].append(path)
        row["cfl"].append(cfl)
        row["k"].append(k)
        row["hw"].append(hw)
        row["cts"].append(ts)
        row["ok"].append(problem is None)
        if problem:
            row["warn"].append(f"{ch} left out: {problem}")
    return row


def load_nuscenes(dataroot: str | os.PathLike, version: str):
    """``NuScenes(version, dataroot)`` (the devkit's tables) with an error that says which folder is missing."""
    from nuscenes.nuscenes import NuScenes

    tables = os.path.join(dataroot, version)
    if not os.path.isdir(tables):
        found = sorted(p for p in os.listdir(dataroot) if p.startswith("v1.0-")) if os.path.isdir(dataroot) else []
        raise FileNotFoundError(f"no table folder {tables} (versions found in {dataroot}: {found or 'none'})")
    return NuScenes(version=version, dataroot=str(dataroot), verbose=False)


def build_nuscenes_index(dataroot: str, version: str, split: str = "all") -> FrameIndex:
    """Index every LiDAR keyframe of the scenes in ``split`` (``all``: every scene of the version). A
    sweep that cannot be extracted is kept with its ``failure``; the job records it and goes on."""
    if split not in SPLITS:
        raise ValueError(f"--split {split!r}: choose one of {SPLITS}")
    nusc = load_nuscenes(dataroot, version)
    root = os.path.realpath(nusc.dataroot)
    split_of = _scene_splits(version)
    has_labels = bool(getattr(nusc, "lidarseg", None))
    duplicates = duplicated_tokens(nusc)
    tables = _Tables(nusc, duplicates)
    rows: list[dict] = []
    scenes = []
    for scene in sorted(nusc.scene, key=lambda s: s["name"]):
        scene_split = split_of.get(scene["name"], "unknown").replace("mini_", "")
        if split != "all" and scene_split != split.replace("mini_", ""):
            continue
        first = len(rows)
        tok = scene["first_sample_token"]
        while tok:
            sample = nusc.get("sample", tok)
            lidar = nusc.get("sample_data", sample["data"][LIDAR])
            try:
                try:
                    for table, token in (("sample", tok), ("sample_data", sample["data"][LIDAR])):
                        tables.get(table, token)
                    row = _sweep(tables, root, sample, lidar, has_labels)
                    row["failure"] = ""
                except (KeyError, TypeError, ValueError) as e:  # a record the tables point to is absent or malformed
                    raise ExtractError(f"sample {sample['token']}: a table record it needs is missing or malformed "
                                       f"({type(e).__name__}: {e})") from None
            except ExtractError as e:
                c = len(CAMERAS)
                row = {"lidar": "", "label": "" if has_labels else None, "n": 0, "img": [""] * c,
                       "cfl": np.full((c, 4, 4), np.nan), "k": np.full((c, 3, 3), np.nan), "hw": [(0, 0)] * c,
                       "cts": [0] * c, "ok": [False] * c, "warn": [], "gfl": np.full((4, 4), np.nan),
                       "boxes": SweepBoxes.empty(), "failure": str(e)}
            row.update(ts=lidar["timestamp"], sample=sample["token"], lidar_tok=lidar["token"], scene=len(scenes))
            rows.append(row)
            tok = sample["next"]
        scenes.append({"name": scene["name"], "token": scene["token"], "split": scene_split,
                       "first_sweep": first, "num_sweeps": len(rows) - first})
    if not rows:
        held: dict[str, int] = {}
        for scene in nusc.scene:
            name = split_of.get(scene["name"], "unknown").replace("mini_", "")
            held[name] = held.get(name, 0) + 1
        which = "any scene" if split == "all" else f"a scene of split {split}"
        raise ExtractError(f"--dataroot {dataroot} --split {split}: version {version} has no keyframe in {which}; its "
                           "scenes by split: " + (", ".join(f"{k} {n}" for k, n in sorted(held.items())) or "none"))
    _fail_shared_files(rows)
    return FrameIndex.from_rows(dataroot, rows, scenes, has_labels)


def _fail_shared_files(rows: list[dict]) -> None:
    """Fail every sweep whose LiDAR file another sweep's record also names: one of them would silently
    hold the other's point cloud with its own poses and images."""
    by_file: dict[str, list[int]] = {}
    for s, row in enumerate(rows):
        if not row["failure"]:
            by_file.setdefault(row["lidar"], []).append(s)
    for path, sweeps in by_file.items():
        if len(sweeps) > 1:
            samples = ", ".join(rows[s]["sample"] for s in sweeps)
            for s in sweeps:
                rows[s]["failure"] = (f"LiDAR file {path} is named by the records of {len(sweeps)} sweeps (samples "
                                      f"{samples}): each sweep needs a file of its own; fix the tables' filenames")


def read_lidar(index: FrameIndex, i: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Sweep ``i``'s points [N, 5] float32 (x, y, z, intensity, ring) and lidarseg labels [N] uint8 (None
    without labels), each file checked against what the tables say. A SemanticKITTI scan: its points with
    ring -1 and its labels as indices into its raw classes (``semantickitti.read_points``)."""
    path = index.lidar_path[i]
    if index.dataset == "semantickitti":
        from pipeline.semantickitti import read_points

        points, labels = read_points(path, index.label_path[i] if index.label_path else None, index.num_points[i])
        problem = points_problem(points)
        if problem:
            raise ExtractError(f"LiDAR file {path}: {problem}: the file is corrupt, or not a KITTI .bin")
        return points, labels
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise ExtractError(f"cannot read LiDAR file {path}: {e}") from None
    if raw.size % LIDAR_FIELDS or raw.size // LIDAR_FIELDS != index.num_points[i]:
        raise ExtractError(f"LiDAR file {path} holds {raw.size} floats, expected {index.num_points[i]} points x "
                           f"{LIDAR_FIELDS} (x, y, z, intensity, ring): the file is truncated or not a nuScenes "
                           ".pcd.bin")
    points = raw.reshape(-1, LIDAR_FIELDS)
    problem = points_problem(points)
    if problem:
        raise ExtractError(f"LiDAR file {path}: {problem}: the file is corrupt, or not a nuScenes .pcd.bin")
    labels = None
    if index.label_path is not None:
        lpath = index.label_path[i]
        try:
            labels = np.fromfile(lpath, dtype=np.uint8)
        except OSError as e:
            raise ExtractError(f"cannot read lidarseg file {lpath}: {e}") from None
        if len(labels) != len(points):
            raise ExtractError(f"lidarseg file {lpath} has {len(labels)} labels for {len(points)} points in {path}")
        bad = np.unique(labels[labels >= NUM_FINE_CLASSES])
        if len(bad):
            raise ExtractError(f"lidarseg file {lpath} holds labels {', '.join(map(str, bad[:8].tolist()))} outside "
                               f"0-{NUM_FINE_CLASSES - 1} (the {NUM_FINE_CLASSES} lidarseg classes)")
    return points, labels


SECTOR_DEG = 2  # the azimuth sectors of the coverage check (a cut of 4 degrees or more empties one)
LIDAR_BEAMS = 32  # nuScenes' HDL-32E: ring indices 0 .. 31


def coverage_problem(points: np.ndarray, beams: int = LIDAR_BEAMS) -> str | None:
    """Whether a sweep looks cut short, as a warning (or None). A file truncated at a whole number of points
    leaves no other trace when there are no labels to count against, but a spinning LiDAR returns points
    all round (obstacles return points; only the sky returns none, to the upper beams), and its file
    lists the returns in firing order, beam after beam or azimuth after azimuth:

    - ring after ring (the ring column never decreases): the last ring must be the last beam
      (``beams`` - 1) and must have points in every ``SECTOR_DEG``-degree sector of azimuth;
    - otherwise (and in a file without rings, ring -1): every sector must hold points of some beam.
    """
    if len(points) == 0:
        return None
    ring = points[:, 4]
    if (ring < 0).all():  # a file without rings (SemanticKITTI): every sector must hold points
        empty, where = _empty_sectors(points), "it"
    elif np.all(np.diff(ring) >= 0):
        last = int(ring[-1])
        if last < beams - 1:
            return (f"its rings stop at {last}, not {beams - 1}, in a file that lists one ring after another: "
                    f"the LiDAR file may be truncated")
        empty = _empty_sectors(points[ring == ring[-1]])
        where = f"its last ring ({last})"
    else:
        empty = _empty_sectors(points)
        where = "it"
    if not len(empty):
        return None
    return (f"{where} has no point in {len(empty) * SECTOR_DEG} of 360 degrees of azimuth (first empty sector "
            f"{int(empty[0]) * SECTOR_DEG}-{int(empty[0]) * SECTOR_DEG + SECTOR_DEG} deg): the LiDAR file may be "
            f"truncated")


def _empty_sectors(points: np.ndarray) -> np.ndarray:
    azimuth = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360.0
    sectors = 360 // SECTOR_DEG
    counts = np.bincount(np.minimum(azimuth // SECTOR_DEG, sectors - 1).astype(np.int64), minlength=sectors)
    return np.nonzero(counts == 0)[0]


def read_image(path: str, hw, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode one camera image, check it has the size its record says (``hw`` = (H, W)), and resize it
    to ``size`` = (h, w) by the teacher's rule (``teacher.resize_for_teacher``) when given, without a
    round trip through numpy. Returns uint8 RGB [H, W, 3]."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.size != (int(hw[1]), int(hw[0])):
                raise ExtractError(f"camera image {path} is {im.size[0]}x{im.size[1]}, but its sample_data record "
                                   f"says {hw[1]}x{hw[0]}")
            if size is not None:
                from pipeline.teacher import resize_for_teacher

                im = resize_for_teacher(im, size)  # decodes, then resizes
            arr = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except FileNotFoundError:
        raise ExtractError(f"camera image missing: {path}") from None
    except (OSError, UnidentifiedImageError) as e:
        raise ExtractError(f"camera image unreadable (corrupt or truncated): {path}: {e}") from None
    return arr
