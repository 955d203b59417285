"""The SemanticKITTI layout: its reader (the frame index the extract runs on) and, beside it, the writer of
each file (which ``cdpipe synth --dataset semantickitti`` writes through).

Layout (one folder per sequence, as the dataset ships it)::

    DATAROOT/sequences/NN/velodyne/NNNNNN.bin    float32 [N,4]: x, y, z (m, LiDAR frame), reflectance 0..1
    DATAROOT/sequences/NN/labels/NNNNNN.label    uint32 [N]: lower 16 bits the raw semantic id, upper 16 the
                                                 instance id (absent for test sequences)
    DATAROOT/sequences/NN/image_2/NNNNNN.png     left colour camera
    DATAROOT/sequences/NN/image_3/NNNNNN.png     right colour camera
    DATAROOT/sequences/NN/calib.txt              ``P0:`` .. ``P3:`` (3x4 projection matrices of the
                                                 rectified cameras) and ``Tr:`` (3x4, LiDAR -> camera 0)
    DATAROOT/sequences/NN/poses.txt              camera-0 pose of each scan in the first scan's camera-0
                                                 frame, 3x4 row-major, one line per scan
    DATAROOT/sequences/NN/times.txt              seconds since the sequence start, one line per scan

Projection into camera i (2 or 3): ``uv ~ P_i Tr x``, where ``P_i = K_i [I | t_i]`` in the rectified
camera-0 frame (KITTI odometry's calibration has no separate rectifying rotation): the index keeps it as
``K_i`` and the 4x4 ``[I | t_i] Tr``, the same product, so the extract projects KITTI and nuScenes points
by one function. Splits are the dataset's: train 00-07, 09, 10; val 08; test 11-21.
"""

from __future__ import annotations

import os

import numpy as np

from pipeline.classes import SEMANTICKITTI_RAW
from pipeline.errors import ExtractError

CAMERAS = ("image_2", "image_3")
LIDAR = "velodyne"
POINT_FIELDS = 4  # x, y, z, reflectance, each a float32
POINT_BYTES = 4 * POINT_FIELDS
SPLITS = {"train": ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10"), "val": ("08",),
          "test": tuple(f"{i:02d}" for i in range(11, 22))}
SCAN_PERIOD_US = 100_000  # the HDL-64E spins at 10 Hz
#: The LiDAR a store of this dataset describes (attribute ``sensors``): KITTI's HDL-64E; its files keep no
#: ring, so the store's ring column is -1
SENSORS = {"lidar": LIDAR, "beams": 64, "intensity_max": 1.0, "has_ring": False}
LIDAR_AXES = ("forward", "left", "up")  # where the velodyne's x, y, z point on the car

_RAW_INDEX = np.full(1 << 16, -1, dtype=np.int16)  # raw semantic id -> index into the raw class list
for _i, (_raw, _) in enumerate(SEMANTICKITTI_RAW):
    _RAW_INDEX[_raw] = _i


def split_of(sequence: str) -> str:
    """``train``, ``val``, ``test`` or ``unknown``: the dataset's split of sequence ``NN``."""
    return next((s for s, names in SPLITS.items() if sequence in names), "unknown")


# ---------------------------------------------------------------------------------------------------
# one file each: read and write


def read_calib(path: str) -> dict[str, np.ndarray]:
    """``calib.txt`` -> {P0..P3: [3,4], Tr: [4,4]} (float64). Lines are ``KEY: 12 numbers``."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        raise ExtractError(f"calibration missing: {path} (each sequence needs its calib.txt)") from None
    except OSError as e:
        raise ExtractError(f"cannot read calibration {path}: {e}") from None
    out = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, _, values = line.partition(":")
        try:
            numbers = np.array(values.split(), dtype=np.float64)
        except ValueError:
            raise ExtractError(f"calibration {path}, line {n} ({key.strip()}): not numbers") from None
        if numbers.size != 12 or not np.isfinite(numbers).all():
            raise ExtractError(f"calibration {path}, line {n} ({key.strip()}): {numbers.size} values, expected 12 "
                               f"finite numbers (a 3x4 matrix, row-major)")
        out[key.strip()] = numbers.reshape(3, 4)
    missing = [k for k in ("P0", "P1", "P2", "P3", "Tr") if k not in out]
    if missing:
        raise ExtractError(f"calibration {path} lacks {', '.join(missing)} (KITTI odometry format: P0: .. P3:, Tr:)")
    out["Tr"] = np.vstack([out["Tr"], [0.0, 0.0, 0.0, 1.0]])
    return out


def write_calib(path: str, projections: list[np.ndarray], cam0_from_lidar: np.ndarray) -> None:
    """``calib.txt`` of ``projections`` (P0..P3, each [3,4]) and ``cam0_from_lidar`` ([4,4] or [3,4], Tr)."""
    rows = [(f"P{i}", p) for i, p in enumerate(projections)] + [("Tr", np.asarray(cam0_from_lidar)[:3])]
    with open(path, "w") as f:
        for key, m in rows:
            f.write(f"{key}: " + " ".join(f"{v:.12e}" for v in np.asarray(m, np.float64).reshape(-1)) + "\n")


def _numbers(path: str, what: str, ndmin: int, expected: str) -> np.ndarray:
    """The numbers of ``what``.txt at ``path`` (float64, at least ``ndmin`` dimensions); a missing or
    unreadable file is one ``ExtractError`` naming it."""
    try:
        return np.loadtxt(path, dtype=np.float64, ndmin=ndmin)
    except FileNotFoundError:
        raise ExtractError(f"{what} missing: {path} (each sequence needs its {what}.txt)") from None
    except ValueError as e:
        raise ExtractError(f"{what} {path}: not {expected} ({e})") from None


def read_poses(path: str) -> np.ndarray:
    """``poses.txt`` -> [N,4,4] float64 (each line a 3x4 matrix, row-major)."""
    raw = _numbers(path, "poses", 2, "rows of numbers")
    if raw.shape[1] != 12 or not np.isfinite(raw).all():
        raise ExtractError(f"poses {path}: rows of {raw.shape[1]} values, expected 12 finite numbers (3x4, row-major)")
    bottom = np.broadcast_to([0.0, 0.0, 0.0, 1.0], (len(raw), 1, 4))
    return np.concatenate([raw.reshape(-1, 3, 4), bottom], axis=1)


def write_poses(path: str, poses: np.ndarray) -> None:
    np.savetxt(path, np.asarray(poses)[:, :3].reshape(len(poses), 12), fmt="%.12e")


def read_times(path: str) -> np.ndarray:
    """``times.txt`` -> [N] seconds (float64)."""
    t = _numbers(path, "times", 1, "one number per line")
    if t.ndim != 1 or not np.isfinite(t).all():
        raise ExtractError(f"times {path}: expected one finite number per line")
    return t


def write_times(path: str, seconds: np.ndarray) -> None:
    np.savetxt(path, np.asarray(seconds, np.float64), fmt="%.6e")


def read_scan(path: str) -> np.ndarray:
    """A ``velodyne/NNNNNN.bin`` -> [N,4] float32 (x, y, z, reflectance)."""
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except FileNotFoundError:
        raise ExtractError(f"LiDAR file missing: {path}") from None
    except OSError as e:
        raise ExtractError(f"cannot read LiDAR file {path}: {e}") from None
    if raw.size % POINT_FIELDS:
        raise ExtractError(f"LiDAR file {path} holds {raw.size} floats, not a whole number of points ({POINT_FIELDS} "
                           f"float32 each: x, y, z, reflectance): truncated, or not a KITTI .bin")
    return raw.reshape(-1, POINT_FIELDS)


def write_scan(path: str, points: np.ndarray) -> None:
    np.ascontiguousarray(points, dtype=np.float32).tofile(path)


def read_labels(path: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A ``labels/NNNNNN.label`` of a scan of ``n`` points -> (raw semantic id [n] uint16, instance id [n]
    uint16)."""
    try:
        raw = np.fromfile(path, dtype=np.uint32)
    except FileNotFoundError:
        raise ExtractError(f"label file missing: {path}") from None
    except OSError as e:
        raise ExtractError(f"cannot read label file {path}: {e}") from None
    if os.path.getsize(path) % 4 or len(raw) != n:
        raise ExtractError(f"label file {path} holds {os.path.getsize(path)} bytes, expected {n} labels (one uint32 "
                           f"per point of its scan)")
    return (raw & 0xFFFF).astype(np.uint16), (raw >> 16).astype(np.uint16)


def write_labels(path: str, semantic: np.ndarray, instance: np.ndarray) -> None:
    packed = (np.asarray(instance, np.uint32) << 16) | np.asarray(semantic, np.uint32)
    packed.astype(np.uint32).tofile(path)


def raw_to_fine(semantic: np.ndarray, path: str = "") -> np.ndarray:
    """Raw semantic ids [N] -> indices [N] uint8 into ``classes.SEMANTICKITTI_RAW`` (the store's fine
    classes); an id the dataset does not define is an ``ExtractError`` naming ``path``."""
    fine = _RAW_INDEX[np.asarray(semantic, np.int64)]
    if (fine < 0).any():
        bad = np.unique(np.asarray(semantic)[fine < 0])
        raise ExtractError(f"label file {path} holds semantic ids {', '.join(map(str, bad[:8].tolist()))} that "
                           f"SemanticKITTI does not define")
    return fine.astype(np.uint8)


def split_projection(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P`` [3,4] = K [I | t] -> (K [3,3], the 4x4 ``[I | t]``: rectified camera 0 -> this camera)."""
    p = np.asarray(p, np.float64)
    k = p[:, :3].copy()
    out = np.eye(4)
    out[:3, 3] = np.linalg.solve(k, p[:, 3])
    return k, out


def projection_of(k: np.ndarray, cam_from_cam0: np.ndarray) -> np.ndarray:
    """The 3x4 ``P = K [R | t]`` of a camera with intrinsics ``k`` and pose ``cam_from_cam0`` [4,4]."""
    return np.asarray(k, np.float64) @ np.asarray(cam_from_cam0, np.float64)[:3]


# ---------------------------------------------------------------------------------------------------
# the frame index


def split_sequences(dataroot: str, split: str = "all") -> list[str]:
    """The sequences ``NN`` under ``DATAROOT/sequences/`` in ``split`` (``all``: every one), sorted. A dataroot
    without ``sequences/`` (``FileNotFoundError``) or without a sequence of the split (``ExtractError``,
    naming the split's sequences and those the dataroot holds) is refused in one line."""
    if split not in ("all", "train", "val", "test"):
        raise ValueError(f"--split {split!r}: a SemanticKITTI dataroot has the splits all, train, val and test")
    top = os.path.join(os.path.realpath(dataroot), "sequences")
    if not os.path.isdir(top):
        raise FileNotFoundError(f"--dataroot {dataroot}: no sequences/ folder (SemanticKITTI layout: "
                                f"sequences/NN/velodyne/NNNNNN.bin, labels/, image_2/, image_3/, calib.txt, "
                                f"poses.txt, times.txt)")
    held = sorted(d for d in os.listdir(top) if d.isdigit() and os.path.isdir(os.path.join(top, d)))
    names = [d for d in held if split == "all" or split_of(d) == split]
    if not held:
        raise ExtractError(f"--dataroot {dataroot} --split {split}: no sequence folder NN in {top}")
    if not names:
        raise ExtractError(f"--dataroot {dataroot} --split {split}: no sequence of split {split} "
                           f"({_runs(SPLITS[split])}) in {top}; it holds "
                           + ", ".join(f"{d} ({split_of(d)})" for d in held))
    return names


def _runs(names: tuple[str, ...]) -> str:
    """Sequence names as runs of consecutive numbers: ``("00", "01", "02", "09")`` -> ``00-02, 09``."""
    runs: list[list[str]] = []
    for name in names:
        if runs and int(name) == int(runs[-1][-1]) + 1:
            runs[-1].append(name)
        else:
            runs.append([name])
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def build_semantickitti_index(dataroot: str, split: str = "all"):
    """Index every scan of the sequences in ``split`` (``all``: every sequence under ``sequences/``). A scan
    that cannot be extracted (its sequence's calibration, poses or times unreadable, its file missing, an
    image missing) is kept with its ``failure``; the job records it and goes on."""
    from pipeline.frames import FrameIndex

    names = split_sequences(dataroot, split)
    top = os.path.join(os.path.realpath(dataroot), "sequences")
    labelled = [d for d in names if os.path.isdir(os.path.join(top, d, "labels"))]
    if labelled and len(labelled) < len(names):  # a store holds labels for every scan or for none
        raise ExtractError(f"--dataroot {dataroot} --split {split}: sequences {_runs(tuple(labelled))} have labels/ "
                           f"but {_runs(tuple(d for d in names if d not in labelled))} have none (SemanticKITTI's "
                           f"test sequences): extract --split train, val or test, so that no labels are dropped")
    has_labels = bool(labelled)
    rows, scenes = [], []
    for seq in names:
        folder = os.path.join(top, seq)
        scans = sorted(f[:-4] for f in os.listdir(os.path.join(folder, LIDAR)) if f.endswith(".bin")) \
            if os.path.isdir(os.path.join(folder, LIDAR)) else []
        problem, cfl, ks, poses, times = "", None, None, None, None
        try:
            calib = read_calib(os.path.join(folder, "calib.txt"))
            poses = read_poses(os.path.join(folder, "poses.txt"))
            times = read_times(os.path.join(folder, "times.txt"))
            for what, values in (("poses.txt", poses), ("times.txt", times)):
                if len(values) != len(scans):
                    raise ExtractError(f"{os.path.join(folder, what)} has {len(values)} lines for {len(scans)} "
                                       f"scans in {os.path.join(folder, LIDAR)}")
            parts = [split_projection(calib[f"P{c[-1]}"]) for c in CAMERAS]
            ks = np.stack([k for k, _ in parts])
            cfl = np.stack([c @ calib["Tr"] for _, c in parts])
        except ExtractError as e:
            problem = str(e)
        first = len(rows)
        for j, scan in enumerate(scans):
            token = f"{seq}/{scan}"
            row = {"sample": token, "scene": len(scenes), "warn": []}
            try:
                if problem:
                    raise ExtractError(problem)
                row.update(_scan_row(folder, scan, has_labels, cfl, ks))
                row["ts"] = int(round(times[j] * 1e6))
                row["gfl"] = poses[j] @ calib["Tr"]
                row["failure"] = ""
            except ExtractError as e:
                c = len(CAMERAS)
                row.update(lidar="", label="" if has_labels else None, n=0, img=[""] * c,
                           cfl=np.full((c, 4, 4), np.nan), k=np.full((c, 3, 3), np.nan), hw=[(0, 0)] * c,
                           ok=[False] * c, gfl=np.full((4, 4), np.nan), failure=f"{e} (scan {token})",
                           ts=int(round(times[j] * 1e6)) if times is not None and j < len(times) else 0)
            rows.append(row)
        scenes.append({"name": seq, "token": f"semantickitti/{seq}", "split": split_of(seq), "first_sweep": first,
                       "num_sweeps": len(rows) - first})
    if not rows:
        raise ExtractError(f"--dataroot {dataroot} --split {split}: no scans in the sequences {', '.join(names)} "
                           f"of {top} (each sequence keeps them in velodyne/NNNNNN.bin)")

    return FrameIndex.from_rows(dataroot, rows, scenes, has_labels, cameras=CAMERAS, dataset="semantickitti")


def _scan_row(folder: str, scan: str, has_labels: bool, cfl: np.ndarray, ks: np.ndarray) -> dict:
    """One scan's row of the index: its files checked to exist and its images' sizes read."""
    from PIL import Image, UnidentifiedImageError

    lidar = os.path.join(folder, LIDAR, f"{scan}.bin")
    size = os.path.getsize(lidar)
    if size == 0 or size % POINT_BYTES:
        raise ExtractError(f"LiDAR file {lidar} is {size} bytes, not a whole number of points ({POINT_FIELDS} float32 "
                           f"each): truncated, or not a KITTI .bin")
    label = os.path.join(folder, "labels", f"{scan}.label") if has_labels else None
    if label is not None and not os.path.isfile(label):
        raise ExtractError(f"label file missing: {label}")
    images, hw = [], []
    for cam in CAMERAS:
        path = os.path.join(folder, cam, f"{scan}.png")
        try:
            with Image.open(path) as im:
                hw.append((im.height, im.width))
        except FileNotFoundError:
            raise ExtractError(f"camera image missing: {path}") from None
        except (OSError, UnidentifiedImageError) as e:
            raise ExtractError(f"camera image unreadable (corrupt or truncated): {path}: {e}") from None
        images.append(path)
    return {"lidar": lidar, "label": label, "n": size // POINT_BYTES, "img": images, "cfl": cfl, "k": ks, "hw": hw,
            "ok": [True] * len(CAMERAS)}


def read_points(lidar_path: str, label_path: str | None, num_points: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A scan as the store holds it: points [N,5] float32 (x, y, z, reflectance, ring = -1: the files keep
    no ring) and labels [N] uint8 (indices into ``classes.SEMANTICKITTI_RAW``; None without labels)."""
    scan = read_scan(lidar_path)
    if len(scan) != num_points:
        raise ExtractError(f"LiDAR file {lidar_path} holds {len(scan)} points, expected {num_points}")
    points = np.concatenate([scan, np.full((len(scan), 1), -1.0, np.float32)], axis=1)
    labels = None
    if label_path is not None:
        semantic, _ = read_labels(label_path, len(scan))
        labels = raw_to_fine(semantic, label_path)
    return points, labels


def write_preview(dataroot: str | os.PathLike, sequence: str | None = None, scan: int = 0,
                  tile_width: int = 640) -> str:
    """``DATAROOT/preview.png``: image_2 and image_3 of one scan (the first sequence's first by default)
    with its LiDAR points painted by evaluation class (projected through calib.txt), over a bird's-eye view
    of the scan and a legend of the classes painted."""
    from PIL import Image, ImageDraw

    from pipeline.classes import LabelClasses
    from pipeline.preview import legend_strip
    from pipeline.projection import project

    index = build_semantickitti_index(str(dataroot))
    s = next(i for i, t in enumerate(index.sample_token)
             if t == f"{sequence or index.scenes[0]['name']}/{scan:06d}")
    if index.failure[s]:
        raise ExtractError(index.failure[s])
    classes = LabelClasses.of("semantickitti")
    points, fine = read_points(index.lidar_path[s], index.label_path[s] if index.label_path else None,
                               index.num_points[s])
    cls = classes.lookup[fine] if fine is not None else np.zeros(len(points), np.uint8)
    colours = np.asarray(classes.colours, np.uint8)
    tiles = []
    for c, name in enumerate(CAMERAS):
        with Image.open(index.image_path[s][c]) as im:
            im = im.convert("RGB")
        uv, kept, _ = project(points, index.cam_from_lidar[s, c], index.intrinsics[s, c], index.image_hw[s, c])
        scale = tile_width / im.width
        im = im.resize((tile_width, max(1, int(round(im.height * scale)))))
        draw = ImageDraw.Draw(im)
        for (u, v), k in zip(uv * scale, cls[kept]):
            draw.rectangle([u - 0.5, v - 0.5, u + 0.5, v + 0.5], fill=tuple(int(x) for x in colours[k]))
        draw.text((6, 4), f"{name} {index.sample_token[s]}", fill=(255, 255, 255))
        tiles.append(im)
    half, size = 50.0, tile_width  # metres either side of the LiDAR
    bev = np.full((size, size, 3), 20, np.uint8)
    col = ((-points[:, 1] + half) / (2 * half) * size).astype(int)  # x up, y left
    row = ((-points[:, 0] + half) / (2 * half) * size).astype(int)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    order = np.argsort(points[inside, 2])  # higher points drawn last
    bev[row[inside][order], col[inside][order]] = colours[cls[inside][order]]
    shown = sorted(set(np.unique(cls).tolist()))
    legend = legend_strip([(("ignore" if k == 0 else classes.eval[k - 1]), classes.colours[k]) for k in shown],
                          2 * tile_width, "SemanticKITTI evaluation classes painted (learning map)")
    height = tiles[0].height + size + legend.height
    canvas = Image.new("RGB", (2 * tile_width, height), (20, 20, 24))
    for c, im in enumerate(tiles):
        canvas.paste(im, (c * tile_width, 0))
    canvas.paste(Image.fromarray(bev), (tile_width // 2, tiles[0].height))
    canvas.paste(legend, (0, tiles[0].height + size))
    out = os.path.join(dataroot, "preview.png")
    canvas.save(out)
    return out
