"""A picture of one sweep of a store: what the teacher's features look like on the cameras and from above,
the lidarseg labels, the annotated boxes, and the occupancy targets. ``cdpipe preview`` writes it.

The features are read through ``pipeline.store.read_sweep`` (any layout, any encoding, path or URL) and
shown as colours: the projection of each point's feature on the first three principal components of the
sweep's features (``PcaColours``, fitted once on every point of the sweep that has one, so that a colour
means the same in every camera and in the bird's-eye view). The camera images come from the dataroot the
store records (``dataset.dataroot``), or another one given; without it the camera panels show the
projected points alone.

The sweep's annotated boxes (``pipeline.store.read_boxes``) are drawn from above on both bird's-eye panels,
as rotated rectangles in their detection class's colour with a tick from the centre to the front.

Every panel of labels, boxes or targets carries a legend of the colours it uses, naming only what it shows.
The class colours are ``pipeline.classes``' (the devkit's); ``legend_strip`` draws the same kind of legend
for the dataroot's preview (``pipeline.dataroot.write_preview``), which is a Pillow picture.

Light module (numpy, zarr through ``pipeline.store``, Pillow, matplotlib; no devkit, Dask or timm).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.classes import DETECTION_COLOURS, EVAL_CLASSES, EVAL_COLOURS
from pipeline.frames import CAMERA_GRID
from pipeline.frames import LIDAR_AXES as NUSCENES_LIDAR_AXES
from pipeline.geometry import box_corners_xy
from pipeline.semantickitti import LIDAR_AXES as SEMANTICKITTI_LIDAR_AXES

# the panel grid of the cameras, as they sit on the car (front row, then back row seen from behind)
NO_FEATURE = (0.55, 0.55, 0.55)  # grey: a point no camera sees
OCC_COLOURS = {"unknown": (0.13, 0.13, 0.15), "free": (0.30, 0.62, 1.0), "occupied": (1.0, 0.55, 0.0)}
BEV_HALF_M = 50.0  # the bird's-eye panels show this many metres either side of the sensor


@dataclass(frozen=True)
class PcaColours:
    """Features -> RGB: ``rgb = clip((f - mean) @ components.T - lo) / (hi - lo), 0, 1)``.

    ``components`` [3, D] are the unit eigenvectors of the features' covariance with the largest
    eigenvalues, each signed so that its largest-magnitude entry is positive (PCA's sign is arbitrary;
    this fixes it); ``lo``, ``hi`` [3] are the 1st and 99th percentiles of each projection over the
    features it was fitted on, so that a few outliers do not wash the colours out."""

    mean: np.ndarray  # [D] float64
    components: np.ndarray  # [3, D] float64
    lo: np.ndarray  # [3]
    hi: np.ndarray  # [3]

    @classmethod
    def fit(cls, features: np.ndarray) -> "PcaColours":
        """Fit on ``features`` [N, D] (N >= 1)."""
        f = np.asarray(features, np.float64)
        mean = f.mean(0)
        centred = f - mean
        _, vectors = np.linalg.eigh(centred.T @ centred / max(len(f) - 1, 1))
        k = min(3, f.shape[1])
        components = vectors[:, ::-1][:, :k].T.copy()  # eigh sorts ascending
        big = np.abs(components).argmax(1)
        components *= np.sign(components[np.arange(k), big])[:, None]
        if k < 3:  # fewer than three dimensions: the missing channels stay at 0
            components = np.vstack([components, np.zeros((3 - k, f.shape[1]))])
        proj = centred @ components.T
        lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
        return cls(mean=mean, components=components, lo=lo, hi=hi)

    def colour(self, features: np.ndarray) -> np.ndarray:
        """RGB in [0, 1], [N, 3] float64, of ``features`` [N, D]."""
        proj = (np.asarray(features, np.float64) - self.mean) @ self.components.T
        return np.clip((proj - self.lo) / np.maximum(self.hi - self.lo, 1e-12), 0.0, 1.0)


@dataclass(frozen=True)
class SweepPreview:
    """Everything the picture shows of sweep ``sweep`` (n points, q occupancy queries, C cameras)."""

    sweep: int
    caption: str
    cameras: tuple[str, ...]
    camera_hw: np.ndarray  # [C, 2] (height, width) of each camera's original image
    xyz: np.ndarray  # [n, 3] LiDAR frame, m
    valid: np.ndarray  # [n] the point has a teacher feature
    camera: np.ndarray  # [n] camera index, -1 none
    pixel: np.ndarray  # [n, 2] (u, v) in that camera's original image
    colours: np.ndarray  # [n, 3] PCA colour of the point's feature (``NO_FEATURE`` without one)
    pca: PcaColours
    eval_labels: np.ndarray | None  # [n] evaluation class index (0 ignore), None without labels
    occ_voxels: np.ndarray  # [q, 3] (i, j, k) on the occupancy grid
    occ_labels: np.ndarray  # [q] 1 occupied, 0 free
    occupancy: dict  # the store's occupancy attribute (lower, voxel_size_m, shape)
    images: tuple  # [C] each camera's image as uint8 [H', W', 3], or None
    image_note: str  # why the images are not shown, "" when they are
    boxes: dict | None = None  # the sweep's annotated boxes (``store.read_boxes``), None in a store without boxes
    detection_classes: tuple[str, ...] = ()  # the names ``boxes["box_class"]`` indexes
    eval_names: tuple[str, ...] = EVAL_CLASSES  # the store's evaluation classes, "ignore" first (``eval_labels``)
    eval_colours: tuple[tuple[int, int, int], ...] = EVAL_COLOURS  # RGB of each
    dataset: str = "nuscenes"  # the store's dataset: which way its LiDAR's axes point

    @property
    def camera_grid(self) -> tuple[tuple[str, ...], ...]:
        """The camera panels in rows: nuScenes' six as they sit on the car, any other rig in one row."""
        return CAMERA_GRID if sorted(self.cameras) == sorted(c for row in CAMERA_GRID for c in row) else (self.cameras,)


def sweep_preview(store: str, s: int, dataroot: str | None = None) -> SweepPreview:
    """Read sweep ``s`` of ``store`` (a path or URL) and compute what ``draw_preview`` shows. The images
    come from ``dataroot`` (default: the one the store records) when it holds the sweep's camera frames."""
    from pipeline.store import StoreError, open_store, read_boxes, read_rows, read_sweep, store_classes

    group = open_store(os.fspath(store))
    attrs = dict(group.attrs)
    total = int(group["done"].shape[0])
    if not 0 <= s < total:
        raise StoreError(f"{store}: no sweep {s}; the store has sweeps 0-{total - 1}")
    sweep = read_sweep(group, s)
    valid = sweep["valid"].astype(bool)
    features = sweep["features"]
    if not valid.any():
        raise StoreError(f"{store}: sweep {s} has no point with a teacher feature to colour")
    pca = PcaColours.fit(features[valid])
    colours = np.tile(np.asarray(NO_FEATURE), (len(valid), 1))
    colours[valid] = pca.colour(features[valid])
    classes = store_classes(attrs)
    labels = classes.lookup[sweep["labels"]] if "labels" in sweep else None
    boxes = read_boxes(group, s) if attrs.get("has_boxes") else None
    cameras = tuple(attrs["cameras"])
    camera_hw = np.asarray(read_rows(group, "camera_hw", s))
    sample_token = str(read_rows(group, "sample_token", s))
    dataset = attrs["dataset"]
    images, note = camera_images(dataroot or dataset["dataroot"], dataset["version"], sample_token, cameras,
                                 dataset["name"],
                                 np.asarray(read_rows(group, "camera_timestamp", s)), camera_hw)
    scene = attrs["scenes"][int(read_rows(group, "scene_index", s))]
    teacher = attrs["teacher"]
    h, w = attrs["patch_grid"]
    layout = attrs["layout"] + (f" ({h}x{w} patch map per camera)" if attrs["layout"] == "patches" else
                                " (a feature per point)")
    caption = (f"sweep {s} of {total}: sample {sample_token}, scene {scene['name']} ({scene['split']})\n"
               f"teacher {teacher_words(teacher)}, input {teacher['image_size'][1]}x{teacher['image_size'][0]} (WxH), "
               f"D = {attrs['feature_dim']}; layout {layout}, {attrs['feature_encoding']}\n"
               f"{len(valid)} points, {valid.mean():.0%} with a teacher feature; colour = PCA of the sweep's "
               f"features (3 components){'; ' + note if note else ''}")
    return SweepPreview(
        sweep=s, caption=caption, cameras=cameras, camera_hw=camera_hw, xyz=sweep["points"][:, :3],
        valid=valid, camera=sweep["camera"].astype(np.int64), pixel=sweep["pixel"], colours=colours, pca=pca,
        eval_labels=labels, occ_voxels=sweep["occ_voxels"].astype(np.int64),
        occ_labels=sweep["occ_labels"], occupancy=attrs["occupancy"], images=tuple(images), image_note=note,
        boxes=boxes, detection_classes=tuple(attrs.get("detection_classes", ())),
        eval_names=("ignore", *classes.eval), eval_colours=classes.colours, dataset=dataset["name"])


def bev_axis_labels(dataset: str) -> tuple[str, str]:
    """The x and y labels of a bird's-eye panel of a store of ``dataset``: the LiDAR frame's axes and where
    they point on the car (nuScenes' LIDAR_TOP: x right, y forward; SemanticKITTI's velodyne: x forward,
    y left); a dataset this code does not know gets the bare axes."""
    axes = {"nuscenes": NUSCENES_LIDAR_AXES, "semantickitti": SEMANTICKITTI_LIDAR_AXES}.get(dataset)
    if axes is None:
        return "LiDAR x (m)", "LiDAR y (m)"
    return f"LiDAR x (m; {axes[0]})", f"LiDAR y (m; {axes[1]})"


def teacher_words(teacher: dict) -> str:
    """The teacher in a few words: its name and where its weights came from."""
    if teacher.get("weights") == "random":
        return f"{teacher['name']} (random init, seed {teacher.get('random_init_seed')})"
    stand_in = teacher.get("stand_in")
    if stand_in:
        return f"{teacher['name']} (stand-in, recipe {stand_in.get('recipe')})"
    return f"{teacher['name']} (weights sha256 {str(teacher.get('weights'))[:12]})"


def camera_images(dataroot: str, version: str, sample_token: str, cameras: tuple[str, ...], dataset: str,
                  timestamps: np.ndarray, camera_hw: np.ndarray, max_width: int = 800) -> tuple[list, str]:
    """Each camera's key-frame image of ``sample_token`` as uint8 [H', W', 3] (shrunk to at most
    ``max_width`` wide), found through the dataroot's tables (SemanticKITTI: by the token, ``NN/NNNNNN``);
    None for a camera whose image is not there, and a note saying why when any is missing. An image counts
    only when its timestamp (nuScenes) and size are those the store recorded, so a dataroot that is not the
    one the store was made from shows no images."""
    if dataset == "semantickitti":
        sequence, _, scan = sample_token.partition("/")
        records = {name: {"filename": os.path.join("sequences", sequence, name, f"{scan}.png"),
                          "timestamp": int(timestamps[c])} for c, name in enumerate(cameras)}
        if not (Path(dataroot) / "sequences").is_dir():
            return [None] * len(cameras), f"no camera images: dataroot {dataroot} is not reachable here"
        return _load_images(dataroot, records, sample_token, cameras, timestamps, camera_hw, max_width)
    tables = Path(dataroot) / version
    if not (tables / "sample_data.json").is_file():
        return [None] * len(cameras), f"no camera images: dataroot {dataroot} ({version}) is not reachable here"
    try:
        sample_data = json.loads((tables / "sample_data.json").read_text())
        calibrated = {r["token"]: r["sensor_token"]
                      for r in json.loads((tables / "calibrated_sensor.json").read_text())}
        channel = {r["token"]: r["channel"] for r in json.loads((tables / "sensor.json").read_text())}
    except (OSError, ValueError, KeyError) as e:
        return [None] * len(cameras), f"no camera images: the tables in {tables} cannot be read ({e})"
    records = {}
    for r in sample_data:
        if r.get("sample_token") == sample_token and r.get("is_key_frame"):
            records[channel.get(calibrated.get(r.get("calibrated_sensor_token")))] = r
    return _load_images(dataroot, records, sample_token, cameras, timestamps, camera_hw, max_width)


def _load_images(dataroot, records: dict, sample_token: str, cameras, timestamps, camera_hw, max_width: int):
    """``camera_images`` once each camera's record ({filename, timestamp}) is known."""
    from PIL import Image

    from pipeline.errors import ExtractError
    from pipeline.frames import inside_dataroot

    root = os.path.realpath(dataroot)
    images, missing = [], []
    for c, name in enumerate(cameras):
        r = records.get(name)
        if r is None or int(r["timestamp"]) != int(timestamps[c]):
            images.append(None)
            missing.append(name)
            continue
        try:
            with Image.open(inside_dataroot(root, r["filename"], f"{name} of sample {sample_token}")) as im:
                if (im.height, im.width) != tuple(int(v) for v in camera_hw[c]):
                    raise ValueError(f"size {im.width}x{im.height}")
                scale = min(1.0, max_width / im.width)
                im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)))
                images.append(np.asarray(im))
        except (OSError, ValueError, ExtractError):
            images.append(None)
            missing.append(name)
    if missing:
        return images, (f"no image for {', '.join(missing)} in {dataroot}" if len(missing) < len(cameras) else
                        f"no camera images: {dataroot} does not hold this sweep's frames")
    return images, ""


def occupancy_slabs(p: SweepPreview) -> list[tuple[str, np.ndarray]]:
    """Bird's-eye slices of the occupancy targets: three horizontal slabs of the grid, with g the ground
    (the z layer holding most occupied voxels): up to 1 m above g, 1-3 m above g (cars, people), and
    higher. Each is (title, state [nx, ny] uint8), a column's state being 2 when a voxel of the slab is
    occupied, else 1 when one is free, else 0 (unknown: no target there)."""
    nx, ny, nz = (int(v) for v in p.occupancy["shape"])
    lower, size = float(p.occupancy["lower"][2]), float(p.occupancy["voxel_size_m"])
    occupied = p.occ_labels == 1
    k = p.occ_voxels[:, 2]
    ground = int(np.bincount(k[occupied], minlength=nz).argmax()) if occupied.any() else 0
    metre = max(1, int(round(1.0 / size)))
    edges = [0, min(nz, ground + metre), min(nz, ground + 3 * metre), nz]
    out = []
    for k0, k1 in zip(edges[:-1], edges[1:]):
        state = np.zeros((nx, ny), np.uint8)
        inside = (k >= k0) & (k < k1)
        np.maximum.at(state, (p.occ_voxels[inside, 0], p.occ_voxels[inside, 1]),
                      np.where(occupied[inside], 2, 1).astype(np.uint8))
        out.append((f"occupancy, z {lower + k0 * size:+.1f} to {lower + k1 * size:+.1f} m", state))
    return out


def draw_preview(p: SweepPreview, out: str | os.PathLike, dpi: int = 100) -> Path:
    """Write the picture of ``p`` to ``out`` (PNG): ``preview_figure``."""
    return save_png(preview_figure(p, dpi), out, dpi)


def preview_figure(p: SweepPreview, dpi: int = 100):
    """The picture of ``p`` (a matplotlib ``Figure``): the six cameras with their points in PCA colours, the
    sweep from above in the same colours, its labels from above with a legend of the classes in view,
    and slices of its occupancy targets with a legend of their three states."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    grid = p.camera_grid
    rows, cols = len(grid), max(len(row) for row in grid)
    cam_w = 3 * 4.6 / cols  # the cameras span the width of three nuScenes panels
    cam_h = cam_w * float(np.median(p.camera_hw[:, 0] / np.maximum(p.camera_hw[:, 1], 1)))
    bev = 4.6  # the big bird's-eye panels are as wide as a nuScenes camera panel
    caption_h = 0.75
    fig = Figure(figsize=(3 * 4.6, rows * cam_h + bev + caption_h + 0.6), dpi=dpi, facecolor="white")
    outer = fig.add_gridspec(2, 1, height_ratios=[rows * cam_h, bev], hspace=0.08, left=0.025, right=0.99,
                             top=1 - caption_h / fig.get_figheight(), bottom=0.02)
    cams = outer[0].subgridspec(rows, cols, wspace=0.02, hspace=0.12)
    for r, row in enumerate(grid):
        for c, name in enumerate(row):
            _camera_panel(fig.add_subplot(cams[r, c]), p, name)
    below = outer[1].subgridspec(2, 4, width_ratios=[2, 2, 1, 1], wspace=0.12, hspace=0.22)
    xlabel, ylabel = bev_axis_labels(p.dataset)
    ax = fig.add_subplot(below[:, 0])
    _bev_points(ax, p.xyz, p.colours, order=p.valid, xlabel=xlabel, ylabel=ylabel)
    _bev_boxes(ax, p, legend=True)
    ax.set_title("teacher features from above (grey: no camera sees the point)", fontsize=8, pad=3)
    ax = fig.add_subplot(below[:, 1])
    kind = "lidarseg labels" if p.eval_names == EVAL_CLASSES else "labels"
    if p.eval_labels is not None:
        lut = np.asarray(p.eval_colours, np.float64) / 255
        _bev_points(ax, p.xyz, lut[p.eval_labels], xlabel=xlabel)
        _bev_boxes(ax, p)
        in_view = (np.abs(p.xyz[:, :2]) <= BEV_HALF_M).all(1)
        present = np.unique(p.eval_labels[in_view])
        present = [*present[present != 0], *present[present == 0]]  # ignore (black) last
        ax.legend(handles=[Patch(facecolor=lut[c], edgecolor="0.5", linewidth=0.4,
                                 label="ignore (not scored)" if c == 0 else p.eval_names[c]) for c in present],
                  loc="lower left", fontsize=5.5, ncol=2, framealpha=0.85, handlelength=0.8, columnspacing=0.6,
                  borderaxespad=0.2, labelspacing=0.25)
        ax.set_title(f"{kind} from above (evaluation classes)", fontsize=8, pad=3)
    else:
        _bev_axes(ax)
        ax.text(0.5, 0.5, f"the store has no {kind}", transform=ax.transAxes, ha="center", color="w")
        ax.set_title(kind, fontsize=8, pad=3)
    lut = np.asarray([OCC_COLOURS["unknown"], OCC_COLOURS["free"], OCC_COLOURS["occupied"]])
    lower, size = np.asarray(p.occupancy["lower"], float), float(p.occupancy["voxel_size_m"])
    nx, ny = (int(v) for v in p.occupancy["shape"][:2])
    cells = [below[0, 2], below[0, 3], below[1, 2]]
    for cell, (title, state) in zip(cells, occupancy_slabs(p)):
        ax = fig.add_subplot(cell)
        # state is [i, j] along (x, y): the picture's rows run along y (upwards), its columns along x
        ax.imshow(lut[state.T], origin="lower", interpolation="nearest",
                  extent=(lower[0], lower[0] + nx * size, lower[1], lower[1] + ny * size))
        _bev_axes(ax)
        ax.set_title(title, fontsize=7, pad=2)
    ax = fig.add_subplot(below[1, 3])
    ax.axis("off")
    ax.legend(handles=[Patch(facecolor=v, edgecolor="0.5", linewidth=0.4, label=k) for k, v in OCC_COLOURS.items()],
              loc="center", title="occupancy targets", title_fontsize=7, fontsize=7, frameon=False)
    fig.text(0.01, 0.995, p.caption, ha="left", va="top", fontsize=9, linespacing=1.4)
    return fig


def legend_strip(entries: list[tuple[str, tuple[int, int, int]]], width: int, title: str,
                 background: tuple[int, int, int] = (20, 20, 24)):
    """A Pillow image ``width`` pixels wide: ``title``, then a swatch (14 x 14 pixels of exactly the colour,
    framed in grey) and the name of each ``(name, rgb)`` of ``entries``, in as many columns as fit; to paste under a
    picture painted in those colours."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    column = 14 + 6 + max([int(font.getlength(name)) for name, _ in entries] or [0]) + 18
    columns = max(1, min(len(entries), (width - 12) // column))
    rows = -(-len(entries) // columns)
    line, top = 20, 26
    im = Image.new("RGB", (width, top + rows * line + 8), background)
    draw = ImageDraw.Draw(im)
    draw.text((6, 5), title, fill=(255, 255, 255), font=font)
    for i, (name, rgb) in enumerate(entries):
        x, y = 6 + (i // rows) * column, top + (i % rows) * line
        draw.rectangle([x - 1, y - 1, x + 14, y + 14], fill=(110, 110, 110))  # a frame, for black on dark
        draw.rectangle([x, y, x + 13, y + 13], fill=tuple(int(v) for v in rgb))
        draw.text((x + 20, y), name, fill=(235, 235, 235), font=font)
    return im


def save_png(fig, out: str | os.PathLike, dpi: int) -> Path:
    """Save ``fig`` as a PNG with a 256-colour palette (no dithering): about a fifth of the bytes of full
    colour, for camera images and tens of thousands of coloured points."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    buffer.seek(0)
    with Image.open(buffer) as im:
        im.convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            out, format="png", optimize=True)
    return Path(out)


def _camera_panel(ax, p: SweepPreview, name: str) -> None:
    """One camera: its image (if any) with the points it sees, at their stored pixels, in PCA colours."""
    ax.set_facecolor("#202024")
    ax.set_xticks([])
    ax.set_yticks([])
    if name not in p.cameras:
        ax.set_title(f"{name}: not in the store", fontsize=8)
        return
    c = p.cameras.index(name)
    height, width = (int(v) for v in p.camera_hw[c])
    image = p.images[c] if p.images else None
    if image is not None:
        # grey and dimmed, so that the coloured points stand out (and the file stays small)
        grey = image.astype(np.float32) @ np.float32([0.299, 0.587, 0.114])
        ax.imshow(40 + 0.55 * grey, cmap="gray", vmin=0, vmax=255, extent=(0, width, height, 0),
                  interpolation="bilinear")
    seen = (p.camera == c) & p.valid
    u, v = p.pixel[seen, 0], p.pixel[seen, 1]
    ax.scatter(u, v, c=p.colours[seen], s=1.0, linewidths=0, antialiased=False)
    ax.set_xlim(0, max(width, 1))
    ax.set_ylim(max(height, 1), 0)
    ax.set_aspect("equal")
    ax.set_title(f"{name}: {seen.sum()} points" + ("" if image is not None else " (no image)"), fontsize=8, pad=2)


def _bev_axes(ax, xlabel: str = "", ylabel: str = "") -> None:
    """A bird's-eye panel in the LiDAR frame: x to the right, y up, labelled ``xlabel`` and ``ylabel`` when
    given (``bev_axis_labels``)."""
    ax.set_facecolor("#202024")
    ax.set_xlim(-BEV_HALF_M, BEV_HALF_M)
    ax.set_ylim(-BEV_HALF_M, BEV_HALF_M)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=6, length=2, pad=1)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=7, labelpad=1)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=7, labelpad=1)
    ax.plot([0], [0], marker="o", color="white", markersize=3)  # the sensor


def _bev_boxes(ax, p: SweepPreview, legend: bool = False) -> None:
    """The sweep's annotated boxes from above on a bird's-eye panel: each a rotated rectangle in its class's
    colour, with a tick from its centre to its front; with ``legend``, a legend of the classes of the boxes
    in view (none without boxes)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Polygon

    if not p.boxes or not len(p.boxes["box_class"]):
        return
    lut = np.asarray(DETECTION_COLOURS, np.float64) / 255
    corners = box_corners_xy(p.boxes["box_centre"], p.boxes["box_size"], p.boxes["box_yaw"])
    cls = p.boxes["box_class"].astype(np.int64)
    for quad, c in zip(corners, cls):
        ax.add_patch(Polygon(quad, closed=True, fill=False, edgecolor=lut[c], linewidth=0.7))
        centre, front = quad.mean(0), quad[:2].mean(0)
        ax.plot([centre[0], front[0]], [centre[1], front[1]], color=lut[c], linewidth=0.7)
    in_view = (np.abs(corners) <= BEV_HALF_M).all(-1).any(-1)
    if legend and in_view.any():
        names = p.detection_classes
        ax.legend(handles=[Line2D([], [], color=lut[c], linewidth=1.5, label=names[c] if c < len(names) else str(c))
                           for c in np.unique(cls[in_view])],
                  title="annotated boxes", title_fontsize=6, loc="lower left", fontsize=5.5, ncol=2, framealpha=0.85,
                  handlelength=1.0, columnspacing=0.6, borderaxespad=0.2, labelspacing=0.25)


def _bev_points(ax, xyz: np.ndarray, colours: np.ndarray, order: np.ndarray | None = None, xlabel: str = "",
                ylabel: str = "") -> None:
    """Points from above (``_bev_axes``), drawn in increasing ``order`` (default: height)."""
    idx = np.argsort(order if order is not None else xyz[:, 2], kind="stable")
    ax.scatter(xyz[idx, 0], xyz[idx, 1], c=colours[idx], s=0.6, linewidths=0, antialiased=False)
    _bev_axes(ax, xlabel=xlabel, ylabel=ylabel)
