"""The procedural street: a ground (``ground.py``) and analytic solids on it, per seed and scene.

World frame = nuScenes' global frame: x east, y north, z up, metres. Everything above the ground is one of
three solids, each with a class, an instance id, a colour and a LiDAR reflectivity:

- box: centre c, half extents h (along its own x, y, z), rotated by ``yaw`` about z;
- cylinder: vertical axis through c, radius r = h[0], from c.z - h[2] to c.z + h[2];
- ellipsoid: centre c, radii h, rotated by ``yaw`` about z.

Two world versions (``build_world(..., version)``), both kept so that every world ever written can be
made again byte for byte:

- version 1: one road along +x on the flat plane z = 0, buildings, lots and parks in strips beside it,
  every object of a class with the class's reflectivity; the ego keeps to the right-hand lane.
- version 3: where a point is says little about what it is. Hills (a smooth height field with a few metres
  of relief within the LiDAR's reach) under a main street that bends and climbs, with 1-3 lanes each way,
  perhaps a central island, parking lanes and sidewalks of varied widths, and 0-2 crossing streets (crossroads
  and T-junctions) at any angle. Beside every street lie buildings, houses with driveways, parking lots,
  plazas and parks at varied setbacks. Cars park along both kerbs, in driveways and lots, and stand in the
  lanes; trees, bushes, hedges, walls, poles, bollards and people stand on sidewalks, lots, plazas and grass,
  at varied heights. Every object and ground patch draws its reflectivity from ranges that overlap between
  classes (lane paint is bright). The ego drives a random lane, off its centre, sometimes changing lanes; it
  follows the ground: its height is the ground's and its pose tilts with the slope.

Objects are static for the whole scene; the ego's pose at any instant is smooth in time, so sensors
triggered at different instants see the world from slightly different poses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.classes import FINE_INDEX
from pipeline.geometry import yaw_matrix
from pipeline.synth.ground import (
    CLASS_REFLECTIVITY,
    DRIVEABLE,
    OTHER_FLAT,
    SIDEWALK,
    TERRAIN,
    FlatStreet,
    HillyStreets,
    Street,
    Terrain,
)

BOX, CYLINDER, ELLIPSOID = 0, 1, 2
WORLD_VERSIONS = (1, 3)

# Base colours (RGB, 0..1) per fine class; each object jitters its own.
BASE_COLOUR: dict[str, tuple[float, float, float]] = {
    "flat.driveable_surface": (0.33, 0.33, 0.35),
    "flat.sidewalk": (0.62, 0.60, 0.56),
    "flat.terrain": (0.36, 0.50, 0.22),
    "flat.other": (0.55, 0.45, 0.38),
    "static.manmade": (0.70, 0.62, 0.52),
    "static.vegetation": (0.18, 0.42, 0.14),
    "vehicle.car": (0.55, 0.10, 0.10),
    "vehicle.truck": (0.80, 0.80, 0.78),
    "vehicle.bus.rigid": (0.85, 0.65, 0.10),
    "vehicle.trailer": (0.60, 0.62, 0.66),
    "vehicle.construction": (0.95, 0.70, 0.05),
    "vehicle.motorcycle": (0.15, 0.15, 0.20),
    "vehicle.bicycle": (0.20, 0.35, 0.70),
    "human.pedestrian.adult": (0.25, 0.25, 0.45),
    "human.pedestrian.child": (0.70, 0.25, 0.30),
    "movable_object.barrier": (0.85, 0.85, 0.82),
    "movable_object.trafficcone": (1.00, 0.42, 0.05),
}

# How much each object's colour varies around its class colour (cars come in every colour).
COLOUR_JITTER: dict[str, float] = {"vehicle.car": 0.45, "human.pedestrian.adult": 0.35, "human.pedestrian.child": 0.35}

# Annotation categories and attributes written to sample_annotation for each kind of object (a thing may
# name its own attribute instead).
THING_ATTRIBUTE: dict[str, str] = {
    "vehicle.car": "vehicle.parked",
    "vehicle.truck": "vehicle.parked",
    "vehicle.bus.rigid": "vehicle.stopped",
    "vehicle.trailer": "vehicle.parked",
    "vehicle.construction": "vehicle.parked",
    "vehicle.motorcycle": "cycle.without_rider",
    "vehicle.bicycle": "cycle.without_rider",
    "human.pedestrian.adult": "pedestrian.standing",
    "human.pedestrian.child": "pedestrian.standing",
}


@dataclass
class Primitives:
    """Struct of arrays, one row per solid (see the module docstring for the meaning of each field)."""

    kind: list[int] = field(default_factory=list)
    centre: list[tuple[float, float, float]] = field(default_factory=list)
    half: list[tuple[float, float, float]] = field(default_factory=list)
    yaw: list[float] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    instance: list[int] = field(default_factory=list)
    colour: list[tuple[float, float, float]] = field(default_factory=list)
    reflectivity: list[float] = field(default_factory=list)

    def add(self, kind, centre, half, yaw, label, instance, colour, reflectivity: float | None = None) -> None:
        """Append a solid; its reflectivity defaults to its class's (world version 1)."""
        self.kind.append(kind)
        self.centre.append(tuple(float(v) for v in centre))
        self.half.append(tuple(float(v) for v in half))
        self.yaw.append(float(yaw))
        self.label.append(int(label))
        self.instance.append(int(instance))
        self.colour.append(tuple(float(v) for v in colour))
        self.reflectivity.append(float(CLASS_REFLECTIVITY[int(label)] if reflectivity is None else reflectivity))

    def arrays(self) -> "PrimitiveArrays":
        return PrimitiveArrays(
            kind=np.array(self.kind, dtype=np.int8),
            centre=np.array(self.centre, dtype=np.float64).reshape(-1, 3),
            half=np.array(self.half, dtype=np.float64).reshape(-1, 3),
            yaw=np.array(self.yaw, dtype=np.float64),
            label=np.array(self.label, dtype=np.uint8),
            instance=np.array(self.instance, dtype=np.int32),
            colour=np.array(self.colour, dtype=np.float64).reshape(-1, 3),
            reflectivity=np.array(self.reflectivity, dtype=np.float64),
        )


@dataclass(frozen=True)
class PrimitiveArrays:
    kind: np.ndarray  # [P] int8
    centre: np.ndarray  # [P,3]
    half: np.ndarray  # [P,3]
    yaw: np.ndarray  # [P]
    label: np.ndarray  # [P] uint8 fine class
    instance: np.ndarray  # [P] int32
    colour: np.ndarray  # [P,3] RGB 0..1
    reflectivity: np.ndarray  # [P] LiDAR return strength at normal incidence (0..255 scale)

    def __len__(self) -> int:
        return len(self.kind)

    def bounding_corners(self) -> np.ndarray:
        """Corners [P,8,3] of each solid's oriented bounding box (exact for boxes, enclosing otherwise)."""
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        local = signs[None] * self.half[:, None, :]
        c, s = np.cos(self.yaw)[:, None], np.sin(self.yaw)[:, None]
        x = c * local[..., 0] - s * local[..., 1]
        y = s * local[..., 0] + c * local[..., 1]
        return np.stack([x, y, local[..., 2]], axis=-1) + self.centre[:, None, :]


@dataclass(frozen=True)
class Thing:
    """An annotated object: a nuScenes instance with one 3D box (static for the whole scene)."""

    instance: int
    category: str
    centre: tuple[float, float, float]
    size_wlh: tuple[float, float, float]
    yaw: float
    attribute: str | None = None  # None: the category's (THING_ATTRIBUTE)


@dataclass(frozen=True)
class RoadPath:
    """The ego's path in world version 1: constant speed along x at lateral offset ``lane_s`` of the road,
    on the plane z = 0, level."""

    road: FlatStreet
    start_x: float
    speed: float
    lane_s: float

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        x = self.start_x + self.speed * t
        xy = self.road.to_world(x, self.lane_s)
        return np.array([xy[0], xy[1], 0.0]), yaw_matrix(float(self.road.heading(np.array(x))))


@dataclass(frozen=True)
class StreetPath:
    """The ego's path in world version 3: constant speed along the arc length of ``street``'s centreline
    (tabulated: ``arc`` metres at street coordinate ``u``), at lateral offset s(t) that moves from
    ``lane[0]`` to ``lane[1]`` between ``change[0]`` and ``change[0] + change[1]`` seconds (smoothstep);
    standing on the terrain, its z axis along the ground's normal and its x axis along its heading."""

    street: Street
    terrain: Terrain
    arc: np.ndarray
    u: np.ndarray
    speed: float
    lane: tuple[float, float]
    change: tuple[float, float]

    def lateral(self, t: float) -> tuple[float, float]:
        """Lateral offset s (m) and its rate ds/dt (m/s) at ``t``."""
        start, duration = self.change
        w = 0.0 if duration <= 0 else min(max((t - start) / duration, 0.0), 1.0)
        rate = 0.0 if duration <= 0 else 6 * w * (1 - w) / duration
        span = self.lane[1] - self.lane[0]
        return self.lane[0] + span * w * w * (3 - 2 * w), span * rate

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        u = float(np.interp(self.speed * t, self.arc, self.u))
        s, rate = self.lateral(t)
        xy = self.street.to_world(u, s)
        yaw = float(self.street.heading(u)) + float(np.arctan2(rate, self.speed))
        return np.array([xy[0], xy[1], float(self.terrain.height(xy[0], xy[1]))]), tilted_frame(
            yaw, self.terrain.normal(np.array([xy[0]]), np.array([xy[1]]))[0])


def object_colour(rng: np.random.Generator, category: str) -> np.ndarray:
    """One object's RGB in [0, 1]: its class colour jittered by the class's ``COLOUR_JITTER`` (a jitter
    above 0.3 means free colour: a random hue mixed with the class colour). Both world versions draw it
    the same way, so version-1 worlds stay byte for byte as they were."""
    base = np.array(BASE_COLOUR[category])
    jitter = COLOUR_JITTER.get(category, 0.08)
    if jitter > 0.3:
        return np.clip(0.35 * base + 0.65 * rng.uniform(0.05, 0.95, 3), 0, 1)
    return np.clip(base * rng.uniform(1 - jitter, 1 + jitter) + rng.normal(0, jitter / 3, 3), 0, 1)


def tilted_frame(yaw: float, normal: np.ndarray) -> np.ndarray:
    """Rotation [3,3] whose z axis is ``normal`` and whose x axis points along ``yaw`` (seen from above)."""
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    x = forward - (forward @ normal) * normal
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(normal, x), normal], axis=1)


@dataclass(frozen=True)
class World:
    seed: int
    scene_index: int
    version: int
    ground: FlatStreet | HillyStreets
    prims: PrimitiveArrays
    things: tuple[Thing, ...]
    path: RoadPath | StreetPath
    speed: float  # m/s of the ego
    sun: np.ndarray  # unit vector towards the sun
    map_size: tuple[float, float]  # metres east and north of the origin that the map image covers
    intensity_sigma: float  # per-return spread of LiDAR intensity (sigma of a log-normal factor)

    def ego_pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Ego position [3] (world, on the ground) and rotation [3,3] at ``t`` seconds after the scene start."""
        return self.path.pose(t)


def build_world(seed: int, scene_index: int, duration_s: float, version: int = 3) -> World:
    """Generate the street of scene ``scene_index`` of the world ``seed``, long enough for ``duration_s``.

    Deterministic: the same arguments give the same world.
    """
    if version == 1:
        return _build_v1(seed, scene_index, duration_s)
    if version == 3:
        return _build_v3(seed, scene_index, duration_s)
    raise ValueError(f"world version {version}: this generator makes versions {' and '.join(map(str, WORLD_VERSIONS))}")


# --- world version 1 (kept as it was: its worlds stay byte-identical) ---------------------------------------


class _Builder:
    def __init__(self, rng: np.random.Generator, road: FlatStreet):
        self.rng = rng
        self.road = road
        self.prims = Primitives()
        self.things: list[Thing] = []
        self.next_instance = 1
        self.footprints: list[tuple[float, float, float, float]] = []  # (x0, x1, s0, s1) taken

    def colour(self, category: str) -> np.ndarray:
        return object_colour(self.rng, category)

    def free(self, x0: float, x1: float, s0: float, s1: float) -> bool:
        for a0, a1, b0, b1 in self.footprints:
            if x0 < a1 and a0 < x1 and s0 < b1 and b0 < s1:
                return False
        return True

    def claim(self, x0: float, x1: float, s0: float, s1: float) -> None:
        self.footprints.append((x0, x1, s0, s1))

    def place(self, x: float, s: float) -> tuple[np.ndarray, float]:
        xy = self.road.to_world(x, s)
        return np.array([xy[0], xy[1]]), float(self.road.heading(np.array(x)))

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def box(self, xy, z0, z1, length, width, yaw, category, inst, colour) -> None:
        self.prims.add(BOX, (xy[0], xy[1], (z0 + z1) / 2), (length / 2, width / 2, (z1 - z0) / 2), yaw,
                       FINE_INDEX[category], inst, colour)

    def offset(self, xy, yaw, along: float, across: float = 0.0) -> np.ndarray:
        return xy + along * np.array([np.cos(yaw), np.sin(yaw)]) + across * np.array([-np.sin(yaw), np.cos(yaw)])

    def thing(self, inst, category, xy, z0, z1, length, width, yaw) -> None:
        self.things.append(Thing(inst, category, (float(xy[0]), float(xy[1]), (z0 + z1) / 2),
                                 (float(width), float(length), float(z1 - z0)), float(yaw)))

    # --- objects -------------------------------------------------------------------------------------
    def vehicle(self, category: str, x: float, s: float, flip: bool) -> None:
        rng = self.rng
        xy, yaw = self.place(x, s)
        yaw = yaw + (np.pi if flip else 0.0) + rng.normal(0, 0.03)
        inst = self.new_instance()
        col = self.colour(category)
        if category == "vehicle.car":
            length, width = rng.uniform(4.0, 4.9), rng.uniform(1.75, 1.95)
            self.box(xy, 0.25, 1.0, length, width, yaw, category, inst, col)
            cabin = self.offset(xy, yaw, -0.08 * length)
            self.box(cabin, 1.0, rng.uniform(1.4, 1.6), 0.55 * length, 0.9 * width, yaw, category, inst, col * 0.6)
            self.thing(inst, category, xy, 0.0, 1.5, length, width, yaw)
        elif category == "vehicle.bus.rigid":
            length, width, height = rng.uniform(10.5, 12.5), 2.5, rng.uniform(3.0, 3.4)
            self.box(xy, 0.3, height, length, width, yaw, category, inst, col)
            self.thing(inst, category, xy, 0.0, height, length, width, yaw)
        elif category in ("vehicle.truck", "vehicle.construction"):
            length, width, height = rng.uniform(6.0, 8.0), 2.4, rng.uniform(2.8, 3.6)
            cab_len = 2.0
            cab = self.offset(xy, yaw, (length - cab_len) / 2)
            self.box(cab, 0.4, height * 0.8, cab_len, width, yaw, category, inst, col * 0.85)
            body = self.offset(xy, yaw, -cab_len / 2)
            self.box(body, 0.5, height, length - cab_len - 0.2, width, yaw, category, inst, col)
            self.thing(inst, category, xy, 0.0, height, length, width, yaw)
            if category == "vehicle.truck" and rng.random() < 0.6:  # a trailer hitched behind
                t_len = rng.uniform(6.0, 9.0)
                t_xy = self.offset(xy, yaw, -(length / 2 + 0.6 + t_len / 2))
                t_inst = self.new_instance()
                self.box(t_xy, 0.6, height, t_len, width, yaw, "vehicle.trailer", t_inst,
                         self.colour("vehicle.trailer"))
                self.thing(t_inst, "vehicle.trailer", t_xy, 0.0, height, t_len, width, yaw)
        elif category in ("vehicle.motorcycle", "vehicle.bicycle"):
            length = rng.uniform(1.9, 2.2) if category == "vehicle.motorcycle" else rng.uniform(1.6, 1.8)
            width = 0.8 if category == "vehicle.motorcycle" else 0.35
            height = 1.2 if category == "vehicle.motorcycle" else 1.05
            self.box(xy, 0.05, height, length, width, yaw, category, inst, col)
            self.thing(inst, category, xy, 0.0, height, length, width, yaw)
        else:
            raise ValueError(category)

    def pedestrian(self, x: float, s: float) -> None:
        rng = self.rng
        category = "human.pedestrian.child" if rng.random() < 0.15 else "human.pedestrian.adult"
        height = rng.uniform(1.0, 1.3) if category.endswith("child") else rng.uniform(1.6, 1.9)
        xy, yaw = self.place(x, s)
        inst = self.new_instance()
        r = rng.uniform(0.18, 0.24) * height / 1.75
        head = 0.12 * height / 1.75
        body_top = height - 2 * head
        self.prims.add(CYLINDER, (xy[0], xy[1], body_top / 2), (r, r, body_top / 2), 0.0,
                       FINE_INDEX[category], inst, self.colour(category))
        self.prims.add(ELLIPSOID, (xy[0], xy[1], height - head), (head, head, head), 0.0,
                       FINE_INDEX[category], inst, np.array([0.80, 0.62, 0.50]) * rng.uniform(0.6, 1.1))
        self.thing(inst, category, xy, 0.0, height, 2 * r, 2 * r, yaw + rng.uniform(-np.pi, np.pi))

    def tree(self, x: float, s: float) -> None:
        rng = self.rng
        xy, _ = self.place(x, s)
        inst = self.new_instance()
        trunk_h, r = rng.uniform(1.8, 3.2), rng.uniform(0.15, 0.3)
        veg = FINE_INDEX["static.vegetation"]
        self.prims.add(CYLINDER, (xy[0], xy[1], trunk_h / 2 + 0.3), (r, r, trunk_h / 2 + 0.3), 0.0, veg, inst,
                       np.array([0.30, 0.22, 0.14]) * rng.uniform(0.8, 1.2))
        rx, rz = rng.uniform(1.4, 3.0), rng.uniform(1.4, 2.6)
        self.prims.add(ELLIPSOID, (xy[0], xy[1], trunk_h + 0.8 * rz), (rx, rx * rng.uniform(0.8, 1.0), rz),
                       rng.uniform(0, np.pi), veg, inst, self.colour("static.vegetation"))

    def bush(self, x: float, s: float) -> None:
        rng = self.rng
        xy, yaw = self.place(x, s)
        r = rng.uniform(0.5, 1.2)
        self.prims.add(ELLIPSOID, (xy[0], xy[1], 0.5 * r), (r * rng.uniform(1.0, 2.0), r, r), yaw,
                       FINE_INDEX["static.vegetation"], self.new_instance(), self.colour("static.vegetation"))

    def pole(self, x: float, s: float) -> None:
        xy, _ = self.place(x, s)
        h = self.rng.uniform(5.5, 8.5)
        self.prims.add(CYLINDER, (xy[0], xy[1], h / 2), (0.11, 0.11, h / 2), 0.0, FINE_INDEX["static.manmade"],
                       self.new_instance(), np.array([0.45, 0.46, 0.48]) * self.rng.uniform(0.8, 1.2))

    def building(self, x0: float, x1: float, s_near: float, depth: float, side: int) -> None:
        rng = self.rng
        xc = (x0 + x1) / 2
        s_c = side * (s_near + depth / 2)
        xy, yaw = self.place(xc, s_c)
        height = rng.uniform(5.0, 24.0)
        self.box(xy, 0.0, height, x1 - x0, depth, yaw, "static.manmade", self.new_instance(),
                 self.colour("static.manmade"))

    def barrier(self, x: float, s: float) -> None:
        xy, yaw = self.place(x, s)
        inst = self.new_instance()
        self.box(xy, 0.0, 1.0, 2.0, 0.5, yaw, "movable_object.barrier", inst, self.colour("movable_object.barrier"))
        self.thing(inst, "movable_object.barrier", xy, 0.0, 1.0, 2.0, 0.5, yaw)

    def cone(self, x: float, s: float) -> None:
        xy, yaw = self.place(x, s)
        inst = self.new_instance()
        self.prims.add(CYLINDER, (xy[0], xy[1], 0.36), (0.16, 0.16, 0.36), 0.0,
                       FINE_INDEX["movable_object.trafficcone"], inst, self.colour("movable_object.trafficcone"))
        self.thing(inst, "movable_object.trafficcone", xy, 0.0, 0.72, 0.32, 0.32, yaw)


def _build_v1(seed: int, scene_index: int, duration_s: float) -> World:
    rng = np.random.default_rng([seed, scene_index, 0x5EED])
    speed = rng.uniform(7.0, 12.0)
    start_x = 120.0
    margin = 90.0
    x_lo, x_hi = start_x - margin, start_x + speed * duration_s + margin
    half_width = rng.uniform(5.5, 6.5)
    sidewalk = rng.uniform(2.0, 3.5)
    kerb = half_width + sidewalk

    patches = []
    road_kwargs = dict(y0=110.0, amplitude=rng.uniform(0.0, 4.0), wavelength=rng.uniform(160.0, 320.0),
                       phase=rng.uniform(0, 2 * np.pi), half_width=half_width, sidewalk_width=sidewalk)

    # Lay out each side of the road in strips along x: buildings, open lots (flat.other) or parks.
    plans: list[tuple[str, float, float, float, float, int]] = []
    for side in (-1, 1):
        x = x_lo + rng.uniform(0, 10)
        while x < x_hi:
            kind = rng.choice(["building", "lot", "park"], p=[0.7, 0.12, 0.18])
            length = rng.uniform(12.0, 35.0)
            setback = rng.uniform(0.5, 7.0)
            depth = rng.uniform(8.0, 18.0)
            plans.append((str(kind), x, min(x + length, x_hi), setback, depth, side))
            if kind == "lot":
                s0, s1 = kerb + setback, kerb + setback + depth
                patches.append((x, min(x + length, x_hi), *((s0, s1) if side > 0 else (-s1, -s0))))
            x += length + rng.uniform(0.0, 10.0)
    road = FlatStreet(flat_patches=np.array(patches, dtype=np.float64).reshape(-1, 4), **road_kwargs)
    b = _Builder(rng, road)
    lane_s = -half_width / 2 + 0.5
    ego_x0, ego_x1 = start_x - 15.0, start_x + speed * duration_s + 15.0
    b.claim(ego_x0, ego_x1, lane_s - 1.0, lane_s + 1.0)  # keep the ego's lane clear along its path

    # A construction zone: cones and barriers in a parking lane, a construction vehicle beyond them.
    # Placed ahead of the ego where the lane is free, so the demo's short drive passes it.
    for _ in range(20):
        zx = rng.uniform(start_x + 10, min(x_hi - 15, start_x + 60))
        zside = 1 if rng.random() < 0.5 else -1
        zs = zside * (half_width - 1.2)
        if b.free(zx - 11, zx + 21, zs - 1.1, zs + 1.1):
            for x in np.arange(zx - 10, zx + 10, 2.5):
                b.cone(x, zs - zside * 0.9)
            for x in np.arange(zx - 6, zx + 6, 2.2):
                b.barrier(x, zs + zside * 0.3)
            b.vehicle("vehicle.construction", zx + 15.0, zs, flip=zside > 0)
            b.claim(zx - 11, zx + 21, zs - 1.1, zs + 1.1)
            break

    for kind, x0, x1, setback, depth, side in plans:
        s_near = kerb + setback
        if kind == "building":
            b.building(x0, x1, s_near, depth, side)
        if kind in ("park", "building") and setback > 3.0:  # a row of trees between kerb and facade
            for x in np.arange(x0 + rng.uniform(1, 6), x1, rng.uniform(7.0, 12.0)):
                b.tree(x, side * (kerb + rng.uniform(1.5, setback - 1.0)))
        if kind == "park":
            for _ in range(rng.integers(2, 7)):
                x, s = rng.uniform(x0, x1), side * (kerb + rng.uniform(1.0, 12.0))
                (b.tree if rng.random() < 0.5 else b.bush)(x, s)
        if kind == "lot":  # a few cars parked on the lot
            for x in np.arange(x0 + 3.0, x1 - 3.0, rng.uniform(3.5, 8.0)):
                if rng.random() < 0.5:
                    b.vehicle("vehicle.car", x, side * (s_near + rng.uniform(2.0, depth - 2.0)), rng.random() < 0.5)

    # Street furniture and people along each side.
    for side in (-1, 1):
        for x in np.arange(x_lo + rng.uniform(0, 10), x_hi, rng.uniform(18.0, 32.0)):
            b.pole(x, side * (half_width + 0.5))
        for x in np.arange(x_lo + rng.uniform(0, 6), x_hi, rng.uniform(6.0, 14.0)):
            if rng.random() < 0.55:
                b.pedestrian(x + rng.uniform(-2, 2), side * (half_width + rng.uniform(0.8, sidewalk - 0.3)))
        for x in np.arange(x_lo + rng.uniform(0, 20), x_hi, rng.uniform(20.0, 40.0)):
            if rng.random() < 0.6:  # two-wheelers parked at the kerb
                category = "vehicle.motorcycle" if rng.random() < 0.4 else "vehicle.bicycle"
                b.vehicle(category, x, side * (half_width + 0.9), False)

    # Parked vehicles along both kerbs, traffic in the oncoming lane.
    for side in (-1, 1):
        x = x_lo + rng.uniform(0, 8)
        while x < x_hi:
            category = rng.choice(["vehicle.car", "vehicle.truck", "vehicle.motorcycle", "vehicle.bus.rigid"],
                                  p=[0.75, 0.1, 0.08, 0.07])
            s = side * (half_width - 1.15)
            length = {"vehicle.car": 5.0, "vehicle.truck": 16.0, "vehicle.motorcycle": 2.3,
                      "vehicle.bus.rigid": 12.5}[str(category)]
            if rng.random() < 0.6 and b.free(x - length / 2, x + length / 2, s - 0.9, s + 0.9):
                b.vehicle(str(category), x, s, flip=side > 0)
                b.claim(x - length / 2, x + length / 2, s - 0.9, s + 0.9)
            x += length + rng.uniform(0.5, 8.0)
    x = x_lo + rng.uniform(0, 20)
    while x < x_hi:
        category = str(rng.choice(["vehicle.car", "vehicle.truck", "vehicle.bus.rigid"], p=[0.6, 0.28, 0.12]))
        s = half_width / 2 - 0.3
        if b.free(x - 8, x + 8, s - 1.3, s + 1.3):
            b.vehicle(category, x, s, flip=True)
            b.claim(x - 8, x + 8, s - 1.3, s + 1.3)
        x += rng.uniform(15.0, 45.0)

    sun_az, sun_el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(25), np.radians(60))
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    return World(seed=seed, scene_index=scene_index, version=1, ground=road, prims=b.prims.arrays(),
                 things=tuple(b.things), path=RoadPath(road, start_x, float(speed), float(lane_s)), speed=float(speed),
                 sun=sun, map_size=(x_hi + 10.0, road.y0 + 110.0), intensity_sigma=0.15)


# --- world version 3 -------------------------------------------------------------------------------------

REACH = 100.0  # metres of world built around the ego's path (the LiDAR reaches 70 m)

# LiDAR reflectivity (0..255 scale at normal incidence): each object and ground zone draws its own from
# ranges that overlap between classes, as paint, metal, glass, concrete, asphalt and foliage do.
REFLECTIVITY_RANGE: dict[str, tuple[float, float]] = {
    "vehicle.car": (3.0, 45.0), "vehicle.truck": (5.0, 60.0), "vehicle.bus.rigid": (5.0, 60.0),
    "vehicle.trailer": (5.0, 60.0), "vehicle.construction": (8.0, 70.0), "vehicle.motorcycle": (4.0, 40.0),
    "vehicle.bicycle": (4.0, 40.0), "human.pedestrian.adult": (4.0, 32.0), "human.pedestrian.child": (4.0, 32.0),
    "movable_object.barrier": (8.0, 60.0), "movable_object.trafficcone": (12.0, 80.0),
    "static.manmade": (5.0, 60.0), "static.vegetation": (6.0, 42.0),
    "asphalt": (5.0, 24.0), "sidewalk": (8.0, 30.0), "terrain": (8.0, 40.0), "island": (6.0, 34.0),
    "lot": (5.0, 28.0), "plaza": (5.0, 35.0), "paint": (40.0, 110.0),
}

# What stands beside a street, in strips along it, and how often.
STRIP_KINDS = ("building", "house", "parking", "plaza", "park", "open")
STRIP_ODDS = (0.36, 0.18, 0.14, 0.10, 0.16, 0.06)


class _Claims:
    """Which 0.5 m cells of the world's rectangle are taken: layout bookkeeping, so that nothing is placed
    in anything else."""

    cell = 0.5

    def __init__(self, lo: np.ndarray, hi: np.ndarray):
        self.lo = np.asarray(lo, dtype=np.float64)
        cols, rows = (int(v) for v in np.ceil((np.asarray(hi) - self.lo) / self.cell))
        self.taken = np.zeros((rows, cols), dtype=bool)

    def grid(self, box_lo, box_hi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices and centres (x, y) of the cells whose centres lie in the box."""
        rows, cols = self.taken.shape
        c0 = np.maximum(np.floor((np.asarray(box_lo) - self.lo) / self.cell).astype(int), 0)
        c1 = np.minimum(np.ceil((np.asarray(box_hi) - self.lo) / self.cell).astype(int), (cols, rows))
        ix, iy = np.meshgrid(np.arange(c0[0], c1[0]), np.arange(c0[1], c1[1]))
        ix, iy = ix.ravel(), iy.ravel()
        return iy * cols + ix, self.lo[0] + (ix + 0.5) * self.cell, self.lo[1] + (iy + 0.5) * self.cell

    def rect(self, xy, yaw: float, length: float, width: float) -> np.ndarray:
        """Cells of an oriented rectangle centred at ``xy``."""
        r = 0.5 * np.hypot(length, width) + self.cell
        idx, cx, cy = self.grid(np.asarray(xy) - r, np.asarray(xy) + r)
        dx, dy = cx - xy[0], cy - xy[1]
        c, s = np.cos(yaw), np.sin(yaw)
        return idx[(np.abs(c * dx + s * dy) <= length / 2) & (np.abs(c * dy - s * dx) <= width / 2)]

    def band(self, street: Street, u0: float, u1: float, s0: float, s1: float) -> np.ndarray:
        """Cells whose street coordinates lie in u0..u1, s0..s1."""
        us = np.linspace(u0, u1, 8)
        edge = street.to_world(np.r_[us, us], np.r_[np.full(8, s0), np.full(8, s1)])
        idx, cx, cy = self.grid(edge.min(0) - 2.0, edge.max(0) + 2.0)
        u, s = street.local(cx, cy)
        return idx[(u >= u0) & (u <= u1) & (s >= s0) & (s <= s1)]

    def free(self, idx: np.ndarray) -> bool:
        return not self.taken.flat[idx].any()

    def claim(self, idx: np.ndarray) -> None:
        self.taken.flat[idx] = True


class _StreetBuilder:
    """Places the objects of a version-3 world: each stands on the ground under its centre, with its own colour
    and reflectivity, on a footprint nothing else has taken and, where asked, on ground of the given classes.
    Every method returns whether the object was placed."""

    def __init__(self, rng: np.random.Generator, ground: HillyStreets, claims: _Claims):
        self.rng, self.ground, self.claims = rng, ground, claims
        self.prims = Primitives()
        self.things: list[Thing] = []
        self.next_instance = 1

    def z(self, xy) -> float:
        return float(self.ground.height(xy[0], xy[1]))

    def colour(self, category: str) -> np.ndarray:
        return object_colour(self.rng, category)

    def reflect(self, kind: str) -> float:
        return float(self.rng.uniform(*REFLECTIVITY_RANGE[kind]))

    def new_instance(self) -> int:
        self.next_instance += 1
        return self.next_instance - 1

    def take(self, xy, yaw: float, length: float, width: float, on: tuple[int, ...] | None = None) -> bool:
        """Claim the footprint if it is free (and its centre and corners lie on ground classes ``on``)."""
        idx = self.claims.rect(xy, yaw, length, width)
        if not self.claims.free(idx):
            return False
        if on is not None:
            a, b = np.array([0, 1, 1, -1, -1]) * length / 2, np.array([0, 1, -1, 1, -1]) * width / 2
            c, s = np.cos(yaw), np.sin(yaw)
            label = self.ground.label(xy[0] + a * c - b * s, xy[1] + a * s + b * c)
            if not np.isin(label, on).all():
                return False
        self.claims.claim(idx)
        return True

    def solid(self, kind: int, xy, z0: float, z1: float, half_x: float, half_y: float, yaw: float, category: str,
              inst: int, colour, reflect: float) -> None:
        self.prims.add(kind, (xy[0], xy[1], (z0 + z1) / 2), (half_x, half_y, (z1 - z0) / 2), yaw, FINE_INDEX[category],
                       inst, colour, reflect)

    def thing(self, inst: int, category: str, xy, z0: float, z1: float, length: float, width: float, yaw: float,
              attribute: str | None = None) -> None:
        self.things.append(Thing(inst, category, (float(xy[0]), float(xy[1]), (z0 + z1) / 2),
                                 (float(width), float(length), float(z1 - z0)), float(yaw), attribute))

    # --- objects ---------------------------------------------------------------------------------------
    def vehicle(self, category: str, xy, yaw: float, attribute: str | None = None, on=None,
                trailer: bool | None = None) -> bool:
        """A vehicle centred at ``xy`` facing ``yaw`` (a truck's trailer hitched behind it, inside the footprint)."""
        rng = self.rng
        yaw = yaw + rng.normal(0, 0.03)
        if category == "vehicle.car":
            length, width, height = rng.uniform(3.7, 5.1), rng.uniform(1.65, 2.0), rng.uniform(1.35, 1.9)
        elif category == "vehicle.bus.rigid":
            length, width, height = rng.uniform(10.0, 13.0), 2.5, rng.uniform(2.9, 3.4)
        elif category in ("vehicle.truck", "vehicle.construction"):
            length, width, height = rng.uniform(5.5, 8.5), rng.uniform(2.2, 2.5), rng.uniform(2.4, 3.6)
        elif category == "vehicle.motorcycle":
            length, width, height = rng.uniform(1.9, 2.3), 0.8, rng.uniform(1.1, 1.3)
        elif category == "vehicle.bicycle":
            length, width, height = rng.uniform(1.6, 1.8), 0.4, rng.uniform(1.0, 1.1)
        else:
            raise ValueError(category)
        if trailer is None:
            trailer = category == "vehicle.truck" and rng.random() < 0.5
        t_len = rng.uniform(6.0, 10.0) if trailer else 0.0
        total = length + (0.6 + t_len if trailer else 0.0)
        if not self.take(xy, yaw, total + 0.6, width + 0.6, on):
            return False
        fwd = np.array([np.cos(yaw), np.sin(yaw)])
        centre = np.asarray(xy) + fwd * (total - length) / 2
        inst, col, refl = self.new_instance(), self.colour(category), self.reflect(category)
        z = self.z(centre)
        if category == "vehicle.car":
            self.solid(BOX, centre, z + 0.22, z + 0.58 * height, length / 2, width / 2, yaw, category, inst, col, refl)
            self.solid(BOX, centre - 0.08 * length * fwd, z + 0.58 * height, z + height, 0.28 * length, 0.45 * width,
                       yaw, category, inst, col * 0.6, refl * rng.uniform(0.3, 1.0))
        elif category in ("vehicle.truck", "vehicle.construction"):
            cab = centre + fwd * (length - 2.0) / 2
            self.solid(BOX, cab, z + 0.4, z + 0.8 * height, 1.0, width / 2, yaw, category, inst, col * 0.85, refl)
            self.solid(BOX, centre - fwd * 1.0, z + 0.5, z + height, (length - 2.2) / 2, width / 2, yaw, category,
                       inst, col, refl * rng.uniform(0.6, 1.4))
        else:
            bottom = 0.3 if category == "vehicle.bus.rigid" else 0.05
            self.solid(BOX, centre, z + bottom, z + height, length / 2, width / 2, yaw, category, inst, col, refl)
        self.thing(inst, category, centre, z, z + height, length, width, yaw, attribute)
        if trailer:
            t_xy = np.asarray(xy) - fwd * (total - t_len) / 2
            t_inst, zt = self.new_instance(), self.z(t_xy)
            self.solid(BOX, t_xy, zt + 0.6, zt + height, t_len / 2, width / 2, yaw, "vehicle.trailer", t_inst,
                       self.colour("vehicle.trailer"), self.reflect("vehicle.trailer"))
            self.thing(t_inst, "vehicle.trailer", t_xy, zt, zt + height, t_len, width, yaw, attribute)
        return True

    def person(self, xy, on=None) -> bool:
        rng = self.rng
        if not self.take(xy, 0.0, 0.8, 0.8, on):
            return False
        category = "human.pedestrian.child" if rng.random() < 0.2 else "human.pedestrian.adult"
        height = rng.uniform(1.0, 1.35) if category.endswith("child") else rng.uniform(1.5, 1.95)
        inst, z = self.new_instance(), self.z(xy)
        r = rng.uniform(0.17, 0.25) * height / 1.75
        head = 0.12 * height / 1.75
        refl = self.reflect(category)
        self.solid(CYLINDER, xy, z, z + height - 2 * head, r, r, 0.0, category, inst, self.colour(category), refl)
        self.prims.add(ELLIPSOID, (xy[0], xy[1], z + height - head), (head, head, head), 0.0, FINE_INDEX[category],
                       inst, np.array([0.80, 0.62, 0.50]) * rng.uniform(0.6, 1.1), refl * rng.uniform(0.6, 1.4))
        attribute = "pedestrian.moving" if rng.random() < 0.5 else "pedestrian.standing"
        self.thing(inst, category, xy, z, z + height, 2 * r, 2 * r, rng.uniform(-np.pi, np.pi), attribute)
        return True

    def tree(self, xy, size: float = 1.0, on=None) -> bool:
        rng = self.rng
        if not self.take(xy, 0.0, 1.0, 1.0, on):
            return False
        inst, z, veg = self.new_instance(), self.z(xy), "static.vegetation"
        trunk_h, r = rng.uniform(0.6, 4.5) * size, rng.uniform(0.1, 0.35)
        rx, rz = rng.uniform(0.8, 3.8) * size, rng.uniform(0.8, 3.2) * size
        refl = self.reflect(veg)
        self.solid(CYLINDER, xy, z - 0.5, z + trunk_h + 0.5 * rz, r, r, 0.0, veg, inst,
                   np.array([0.30, 0.22, 0.14]) * rng.uniform(0.8, 1.2), refl * rng.uniform(0.4, 1.0))
        self.prims.add(ELLIPSOID, (xy[0], xy[1], z + trunk_h + 0.8 * rz), (rx, rx * rng.uniform(0.75, 1.0), rz),
                       rng.uniform(0, np.pi), FINE_INDEX[veg], inst, self.colour(veg), refl)
        return True

    def bush(self, xy, on=None) -> bool:
        rng = self.rng
        r = rng.uniform(0.3, 1.4)
        if not self.take(xy, 0.0, 2 * r, 2 * r, on):
            return False
        rz = r * rng.uniform(0.6, 1.1)
        self.prims.add(ELLIPSOID, (xy[0], xy[1], self.z(xy) + 0.4 * rz), (r * rng.uniform(1.0, 1.6), r, rz),
                       rng.uniform(0, np.pi), FINE_INDEX["static.vegetation"], self.new_instance(),
                       self.colour("static.vegetation"), self.reflect("static.vegetation"))
        return True

    def row(self, kind: str, a, b, on=None) -> None:
        """A hedge (``kind`` vegetation) or wall/fence (manmade) from xy ``a`` to ``b``, in segments of at most
        6 m that each stand on the ground under them."""
        rng = self.rng
        category = "static.vegetation" if kind == "hedge" else "static.manmade"
        height = rng.uniform(0.6, 2.2) if kind == "hedge" else rng.uniform(0.4, 2.4)
        thick = rng.uniform(0.5, 1.2) if kind == "hedge" else rng.uniform(0.15, 0.45)
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / 6.0)))
        yaw = float(np.arctan2(b[1] - a[1], b[0] - a[0]))
        seg = np.linalg.norm(b - a) / n
        inst, col, refl = self.new_instance(), self.colour(category), self.reflect(category)
        for i in range(n):
            xy = a + (b - a) * (i + 0.5) / n
            if self.take(xy, yaw, seg, thick, on):
                z = self.z(xy)
                self.solid(BOX, xy, z - 0.3, z + height, seg / 2, thick / 2, yaw, category, inst, col, refl)

    def pole(self, xy, on=None) -> bool:
        rng = self.rng
        if not self.take(xy, 0.0, 0.6, 0.6, on):
            return False
        inst, z, r = self.new_instance(), self.z(xy), rng.uniform(0.06, 0.2)
        h = rng.uniform(2.5, 11.0)
        col = np.array([0.45, 0.46, 0.48]) * rng.uniform(0.8, 1.2)
        refl = self.reflect("static.manmade")
        self.solid(CYLINDER, xy, z - 0.3, z + h, r, r, 0.0, "static.manmade", inst, col, refl)
        if rng.random() < 0.35:  # a sign
            size = rng.uniform(0.4, 0.9)
            z0 = z + rng.uniform(1.8, min(3.2, h - 0.2))
            self.solid(BOX, np.asarray(xy) + r + 0.05, z0, z0 + size, 0.04, size / 2, rng.uniform(0, np.pi),
                       "static.manmade", inst, self.colour("static.manmade"), rng.uniform(40.0, 150.0))
        return True

    def furniture(self, xy, yaw: float, on=None) -> bool:
        """A bollard, bin, bench, kiosk or bus shelter: man-made, low or middling."""
        rng = self.rng
        kind = rng.choice(["bollard", "bin", "bench", "kiosk", "shelter"], p=[0.35, 0.25, 0.2, 0.1, 0.1])
        if kind == "bollard":
            length = width = 2 * rng.uniform(0.07, 0.15)
            height = rng.uniform(0.5, 1.1)
        else:
            length, width, height = {"bin": (0.6, 0.6, rng.uniform(0.8, 1.2)), "bench": (1.8, 0.6, 0.5),
                                     "kiosk": (rng.uniform(1.5, 3.0), rng.uniform(1.2, 2.0), rng.uniform(2.2, 2.8)),
                                     "shelter": (3.5, 1.5, 2.5)}[str(kind)]
        if not self.take(xy, yaw, length + 0.3, width + 0.3, on):
            return False
        z, inst = self.z(xy), self.new_instance()
        col, refl = self.colour("static.manmade"), self.reflect("static.manmade")
        if kind == "bollard":
            self.solid(CYLINDER, xy, z - 0.2, z + height, width / 2, width / 2, 0.0, "static.manmade", inst, col, refl)
        else:
            self.solid(BOX, xy, z - 0.2, z + height, length / 2, width / 2, yaw, "static.manmade", inst, col, refl)
        return True

    def building(self, xy, yaw: float, length: float, depth: float, height: float) -> bool:
        if not self.take(xy, yaw, length, depth):
            return False
        c, s = np.cos(yaw), np.sin(yaw)
        a, b = np.array([1, 1, -1, -1]) * length / 2, np.array([1, -1, 1, -1]) * depth / 2
        floor = float(self.ground.height(xy[0] + a * c - b * s, xy[1] + a * s + b * c).min()) - 1.0
        self.solid(BOX, xy, floor, self.z(xy) + height, length / 2, depth / 2, yaw, "static.manmade",
                   self.new_instance(), self.colour("static.manmade"), self.reflect("static.manmade"))
        return True

    def cone(self, xy, on=None) -> bool:
        rng = self.rng
        if not self.take(xy, 0.0, 0.5, 0.5, on):
            return False
        inst, z = self.new_instance(), self.z(xy)
        h, r = rng.uniform(0.45, 1.0), rng.uniform(0.13, 0.2)
        self.solid(CYLINDER, xy, z, z + h, r, r, 0.0, "movable_object.trafficcone", inst,
                   self.colour("movable_object.trafficcone"), self.reflect("movable_object.trafficcone"))
        self.thing(inst, "movable_object.trafficcone", xy, z, z + h, 2 * r, 2 * r, rng.uniform(-np.pi, np.pi))
        return True

    def barrier(self, xy, yaw: float, on=None) -> bool:
        rng = self.rng
        length, height = rng.uniform(1.2, 2.5), rng.uniform(0.8, 1.2)
        if not self.take(xy, yaw, length, 0.5, on):
            return False
        inst, z = self.new_instance(), self.z(xy)
        self.solid(BOX, xy, z, z + height, length / 2, 0.25, yaw, "movable_object.barrier", inst,
                   self.colour("movable_object.barrier"), self.reflect("movable_object.barrier"))
        self.thing(inst, "movable_object.barrier", xy, z, z + height, length, 0.5, yaw)
        return True


def _terrain(rng: np.random.Generator) -> Terrain:
    """A steady grade of up to 6% plus three hills of 60-400 m wavelength, each sloping at most 4.5%."""
    grade, towards = rng.uniform(0.0, 0.06), rng.uniform(0, 2 * np.pi)
    k = 2 * np.pi / np.array([rng.uniform(60, 110), rng.uniform(110, 200), rng.uniform(200, 400)])
    direction = rng.uniform(0, 2 * np.pi, 3)
    return Terrain(base=0.0, gx=grade * np.cos(towards), gy=grade * np.sin(towards),
                   amp=rng.uniform(0.35, 1.0, 3) * 0.045 / k, kx=k * np.cos(direction), ky=k * np.sin(direction),
                   phase=rng.uniform(0, 2 * np.pi, 3))


def _street(rng: np.random.Generator, lanes: int, angle: float, bend: float, median: bool,
            u_range=(-np.inf, np.inf)) -> Street:
    """A street through the origin of its frame with random widths and reflectivities; ``bend``: the largest
    sideways swing of its centreline (m), its curvature kept under 1/45 m."""
    lane_width = rng.uniform(2.8, 3.7)
    island = rng.uniform(0.6, 2.5) if median else 0.0
    parking = tuple(float(rng.uniform(2.1, 2.6)) if rng.random() < 0.55 else 0.0 for _ in range(2))
    walk = tuple(float(rng.uniform(1.5, 4.5)) if rng.random() < 0.85 else 0.0 for _ in range(2))
    if bend > 0:
        k = 2 * np.pi / np.array([rng.uniform(180, 450), rng.uniform(70, 160)])
        amp = np.array([rng.uniform(0.1, 1.0) * bend, rng.uniform(0.0, 0.17) * bend])
        amp *= min(1.0, (1 / 45) / float((amp * k * k).sum()))
        phase = rng.uniform(0, 2 * np.pi, 2)
    else:
        k = amp = phase = np.zeros(0)
    r = REFLECTIVITY_RANGE
    return Street(origin=(0.0, 0.0), angle=float(angle), bend_amp=amp, bend_k=k, bend_phase=phase, u_range=u_range,
                  lanes=lanes, lane_width=float(lane_width), median=float(island), gaps=np.zeros((0, 2)),
                  parking=parking, walk=walk, crossings=np.zeros(0), asphalt=float(rng.uniform(*r["asphalt"])),
                  walk_reflectivity=(float(rng.uniform(*r["sidewalk"])), float(rng.uniform(*r["sidewalk"]))),
                  island_reflectivity=float(rng.uniform(*r["island"])),
                  paint_reflectivity=float(rng.uniform(*r["paint"])),
                  patches=(np.zeros((0, 6)), np.zeros((0, 6))))


def _arc_table(street: Street, u0: float, u1: float) -> tuple[np.ndarray, np.ndarray]:
    """Arc length along the centreline (0 at u = 0) and u, every 0.25 m of u."""
    u = np.arange(u0, u1 + 0.25, 0.25)
    speed = np.sqrt(1 + street._bend(u)[1] ** 2)
    arc = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * 0.25)])
    return arc - np.interp(0.0, u, arc), u


def _build_v3(seed: int, scene_index: int, duration_s: float) -> World:
    """World version 3 (module docstring): terrain, the main street and the ego's path along it, crossing
    streets, strips beside every street, then the objects; the world is the rectangle REACH metres around
    the path, shifted so that its south-west corner is at (10, 10)."""
    rng = np.random.default_rng([seed, scene_index, 0x5EED, 3])
    speed = float(rng.uniform(5.0, 13.0))
    drive = speed * duration_s
    terrain = _terrain(rng)
    lanes = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    main = _street(rng, lanes, rng.uniform(0, 2 * np.pi), bend=30.0 if rng.random() < 0.75 else 0.0,
                   median=lanes >= 2 and rng.random() < 0.3)
    arc, us = _arc_table(main, -REACH - 120.0, drive + REACH + 120.0)

    # the ego: a random lane of its side, off its centre, perhaps changing to the next lane
    lane = int(rng.integers(lanes))
    wobble = 0.8 * max(0.0, (main.lane_width - 2.0) / 2)
    s0 = -(main.median + (lane + 0.5) * main.lane_width) + rng.uniform(-wobble, wobble)
    s1, change = s0, (0.0, 0.0)
    if lanes >= 2 and rng.random() < 0.35:
        to = lane + 1 if lane == 0 or (lane + 1 < lanes and rng.random() < 0.5) else lane - 1
        s1 = -(main.median + (to + 0.5) * main.lane_width) + rng.uniform(-0.3, 0.3)
        change = (float(rng.uniform(-1.0, duration_s)), float(rng.uniform(2.5, 4.5)))
    path = StreetPath(main, terrain, arc, us, speed, (float(s0), float(s1)), change)
    ts = np.arange(-1.5, duration_s + 15.0 / speed, 0.25)
    xy = np.array([main.to_world(np.interp(speed * t, arc, us), path.lateral(t)[0]) for t in ts])
    shift = 10.0 + REACH - xy.min(0)  # the world's south-west corner at (10, 10): the map starts at 0
    main = replace(main, origin=(float(shift[0]), float(shift[1])))
    lo, hi = xy.min(0) + shift - REACH, xy.max(0) + shift + REACH

    # crossing streets: crossroads or T-junctions within sight of the drive, at any angle
    streets, main_gaps, main_zebras = [], [], []
    junctions: list[float] = []
    for _ in range(int(rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25]))):
        at = float(rng.uniform(-50.0, drive + 60.0))
        if any(abs(at - other) < 45.0 for other in junctions):
            continue
        junctions.append(at)
        uj = float(np.interp(at, arc, us))
        centre, psi = main.to_world(uj, 0.0), float(main.heading(uj))
        rel = rng.uniform(np.radians(55), np.radians(125))
        side = int(rng.choice([-1, 0, 1], p=[0.2, 0.6, 0.2]))  # T-junction to the right / crossroads / left
        extent = (-np.inf if side <= 0 else 0.0, np.inf if side >= 0 else 0.0)
        cross = _street(rng, int(rng.choice([1, 2], p=[0.6, 0.4])), psi + rel,
                        bend=8.0 if rng.random() < 0.5 else 0.0, median=False, u_range=extent)
        f0 = float(cross._bend(np.array(0.0))[0])
        origin = centre - f0 * np.array([-np.sin(psi + rel), np.cos(psi + rel)])
        sin_rel = np.sin(rel)
        ends = ((-(main.kerb(0) / sin_rel + 2.2), side <= 0), (main.kerb(1) / sin_rel + 2.2, side >= 0))
        zebras = [u for u, keep in ends if keep and rng.random() < 0.8]
        streets.append(replace(cross, origin=(float(origin[0]), float(origin[1])), crossings=np.array(zebras)))
        half = max(cross.kerb(0), cross.kerb(1)) / sin_rel
        main_gaps.append((np.interp(at - half - max(cross.walk) - 3.0, arc, us),
                          np.interp(at + half + max(cross.walk) + 3.0, arc, us)))
        main_zebras += [float(np.interp(at + sign * (half + 2.2), arc, us)) for sign in (-1, 1) if rng.random() < 0.7]
    main = replace(main, gaps=np.array(main_gaps, dtype=np.float64).reshape(-1, 2), crossings=np.array(main_zebras))
    streets.insert(0, main)

    # strips beside every street: buildings, houses with driveways, lots, plazas, parks, open ground
    zones = _Claims(lo, hi)
    idx, cx, cy = zones.grid(lo, hi)
    zones.taken.flat[idx[HillyStreets(terrain, tuple(streets), 0.0).map_mask(cx, cy)]] = True
    plans, rows = [], {(i, side): [] for i in range(len(streets)) for side in (0, 1)}
    u_main = (np.interp(-REACH - 40.0, arc, us), np.interp(drive + REACH + 40.0, arc, us))
    for i, st in enumerate(streets):
        u_lo, u_hi = u_main if i == 0 else (max(st.u_range[0], -1.6 * REACH), min(st.u_range[1], 1.6 * REACH))
        for side in (0, 1):
            sign, d0 = 2 * side - 1, st.kerb(side) + st.walk[side]
            u = u_lo + rng.uniform(0, 8)
            while u < u_hi:
                kind = str(rng.choice(STRIP_KINDS, p=STRIP_ODDS))
                u1 = min(u + rng.uniform(10.0, 38.0), u_hi)
                setback, depth = rng.uniform(0.0, 8.0), rng.uniform(8.0, 24.0)
                mid = st.to_world((u + u1) / 2, sign * (d0 + (setback + depth) / 2))
                cells = zones.band(st, u, u1, *sorted((sign * (d0 + 0.6), sign * (d0 + setback + depth))))
                if u1 - u > 6 and np.all(mid > lo) and np.all(mid < hi) and zones.free(cells):
                    zones.claim(cells)
                    plans.append((i, side, kind, u, u1, d0, setback, depth))
                    row = _strip_patch(rng, kind, u, u1, d0, setback, depth)
                    if row is not None:
                        rows[i, side].append(row)
                u = u1 + rng.uniform(0.0, 8.0)
    streets = [replace(st, patches=tuple(np.array(rows[i, side], dtype=np.float64).reshape(-1, 6) for side in (0, 1)))
               for i, st in enumerate(streets)]
    ground = HillyStreets(terrain, tuple(streets), float(rng.uniform(*REFLECTIVITY_RANGE["terrain"])))
    path = replace(path, street=streets[0])

    b = _StreetBuilder(rng, ground, _Claims(lo, hi))
    for t in ts:  # the ego's way stays clear
        position, rotation = path.pose(float(t))
        yaw = float(np.arctan2(rotation[1, 0], rotation[0, 0]))
        b.claims.claim(b.claims.rect(position[:2] + 1.2 * rotation[:2, 0], yaw, 5.5 + 0.25 * speed, 2.8))
    near = [(0, float(np.interp(-25.0, arc, us)), float(np.interp(drive + 35.0, arc, us)))]
    near += [(i, -35.0, 35.0) for i in range(1, len(streets))]
    _must_haves(b, streets, near)
    for plan in plans:
        _fill_strip(b, streets[plan[0]], *plan[1:])
    for i, st in enumerate(streets):
        u_lo, u_hi = u_main if i == 0 else (max(st.u_range[0], -1.6 * REACH), min(st.u_range[1], 1.6 * REACH))
        _fill_street(b, st, u_lo, u_hi, lo, hi)

    sun_az, sun_el = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(25), np.radians(60))
    sun = np.array([np.cos(sun_el) * np.cos(sun_az), np.cos(sun_el) * np.sin(sun_az), np.sin(sun_el)])
    return World(seed=seed, scene_index=scene_index, version=3, ground=ground, prims=b.prims.arrays(),
                 things=tuple(b.things), path=path, speed=speed, sun=sun,
                 map_size=(float(hi[0]) + 10.0, float(hi[1]) + 10.0), intensity_sigma=0.3)


def _strip_patch(rng, kind: str, u0: float, u1: float, d0: float, setback: float, depth: float):
    """The ground patch of a strip, if any: (u0, u1, d0, d1, class, reflectivity)."""
    r = REFLECTIVITY_RANGE
    if kind == "parking":
        return (u0, u1, d0, d0 + setback + depth, DRIVEABLE, rng.uniform(*r["lot"]))
    if kind == "plaza":
        return (u0, u1, d0, d0 + setback + depth, OTHER_FLAT, rng.uniform(*r["plaza"]))
    if kind == "house":  # a driveway at one end of the strip
        width = rng.uniform(3.0, 5.5)
        a = u0 + 0.5 if rng.random() < 0.5 else u1 - 0.5 - width
        return (a, a + width, d0, d0 + setback + rng.uniform(4.0, 0.8 * depth), DRIVEABLE, rng.uniform(*r["lot"]))
    if kind == "building" and setback > 3.0 and rng.random() < 0.45:  # a forecourt
        return (u0, u1, d0, d0 + setback, *((OTHER_FLAT, rng.uniform(*r["plaza"])) if rng.random() < 0.55
                                             else (DRIVEABLE, rng.uniform(*r["lot"]))))
    if kind == "open" and rng.random() < 0.4:  # gravel
        return (u0, u1, d0 + setback, d0 + setback + depth * rng.uniform(0.3, 1.0), OTHER_FLAT,
                rng.uniform(*r["plaza"]))
    return None


def _fill_strip(b: _StreetBuilder, st: Street, side: int, kind: str, u0: float, u1: float, d0: float,
                setback: float, depth: float) -> None:
    """Objects of one strip beside street ``st`` (see ``_build_v3``)."""
    rng = b.rng
    sign = 2 * side - 1

    def at(u, d):
        return st.to_world(u, sign * d)

    def along(u):
        return float(st.heading(u))

    def scatter(n, place, d_a, d_b):
        for _ in range(n):
            place(at(rng.uniform(u0, u1), rng.uniform(d_a, d_b)))

    face, back = d0 + setback, d0 + setback + depth
    patch = next((p for p in st.patches[side] if p[0] >= u0 - 1e-9 and p[1] <= u1 + 1e-9), None)
    if kind in ("building", "house"):
        uc, span = (u0 + u1) / 2, u1 - u0
        if kind == "house" and patch is not None:  # the house beside its driveway
            uc, span = ((patch[1] + u1) / 2, u1 - patch[1]) if patch[0] - u0 < u1 - patch[1] else ((u0 + patch[0]) / 2,
                                                                                                    patch[0] - u0)
        d_house = min(depth, rng.uniform(7.0, 12.0)) if kind == "house" else depth
        height = rng.uniform(3.0, 9.0) if kind == "house" else rng.uniform(3.5, 26.0)
        if span > 4.0:
            b.building(at(uc, face + d_house / 2), along(uc), 0.9 * span, d_house, height)
        if patch is not None and kind == "house":
            ud = (patch[0] + patch[1]) / 2
            for k in range(int(rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25]))):
                b.vehicle("vehicle.car", at(ud, d0 + 3.0 + 5.5 * k), along(ud) + sign * np.pi / 2, on=(DRIVEABLE,))
            if rng.random() < 0.2:
                b.vehicle(str(rng.choice(["vehicle.bicycle", "vehicle.motorcycle"])), at(ud, patch[3] - 1.0),
                          along(ud) + sign * np.pi / 2, on=(DRIVEABLE,))
        elif patch is not None:  # a forecourt: parked cars or people
            if patch[4] == DRIVEABLE:
                for u in np.arange(u0 + 1.5, u1 - 1.5, rng.uniform(2.6, 3.4)):
                    if rng.random() < 0.6:
                        b.vehicle("vehicle.car", at(u, d0 + setback / 2), along(u) + sign * np.pi / 2, on=(DRIVEABLE,))
            else:
                scatter(int(rng.integers(0, 4)), lambda xy: b.person(xy, on=(OTHER_FLAT,)), d0, face)
                scatter(int(rng.integers(0, 4)), lambda xy: b.furniture(xy, rng.uniform(0, np.pi), on=(OTHER_FLAT,)),
                        d0, face)
        if setback > 2.0 and patch is None:
            scatter(int(rng.integers(0, 4)), lambda xy: b.tree(xy, rng.uniform(0.5, 1.1), on=(TERRAIN,)),
                    d0 + 1.0, face - 1.0)
            scatter(int(rng.integers(0, 4)), lambda xy: b.bush(xy, on=(TERRAIN,)), d0 + 0.5, face)
            scatter(int(rng.integers(0, 2)), lambda xy: b.person(xy, on=(TERRAIN,)), d0 + 0.5, face)
        if rng.random() < 0.35 and setback > 1.0:  # a wall, fence or hedge along the front
            kind_row = "hedge" if rng.random() < 0.5 else "wall"
            b.row(kind_row, at(u0 + 0.5, d0 + 0.5), at(u1 - 0.5, d0 + 0.5), on=(TERRAIN, OTHER_FLAT))
    elif kind == "parking":
        d = d0 + 3.0
        while d < back - 2.5:
            for u in np.arange(u0 + 1.6, u1 - 1.6, rng.uniform(2.6, 3.2)):
                if rng.random() < 0.6:
                    category = str(rng.choice(["vehicle.car", "vehicle.truck", "vehicle.bus.rigid",
                                               "vehicle.motorcycle"], p=[0.86, 0.06, 0.03, 0.05]))
                    yaw = along(u) + (sign * np.pi / 2 if category in ("vehicle.car", "vehicle.motorcycle") else 0.0)
                    b.vehicle(category, at(u, d), yaw + (np.pi if rng.random() < 0.5 else 0.0), on=(DRIVEABLE,))
            d += rng.uniform(5.5, 12.0)
        scatter(int(rng.integers(0, 3)), lambda xy: b.pole(xy, on=(DRIVEABLE,)), d0 + 1.0, back - 1.0)
        scatter(int(rng.integers(0, 4)), lambda xy: b.person(xy, on=(DRIVEABLE,)), d0 + 1.0, back - 1.0)
        if rng.random() < 0.2:
            scatter(int(rng.integers(2, 6)), lambda xy: b.cone(xy, on=(DRIVEABLE,)), d0 + 1.0, back - 1.0)
    elif kind == "plaza":
        on = (OTHER_FLAT,)
        scatter(int(rng.integers(1, 7)), lambda xy: b.person(xy, on=on), d0 + 0.5, back - 0.5)
        scatter(int(rng.integers(0, 6)), lambda xy: b.furniture(xy, along(u0) + rng.uniform(0, np.pi), on=on),
                d0 + 0.5, back - 0.5)
        scatter(int(rng.integers(0, 4)), lambda xy: b.tree(xy, rng.uniform(0.5, 1.0), on=on), d0 + 1.0, back - 1.0)
        scatter(int(rng.integers(0, 3)), lambda xy: b.vehicle("vehicle.bicycle", xy, rng.uniform(0, 2 * np.pi), on=on),
                d0 + 0.5, back - 0.5)
        scatter(int(rng.integers(0, 2)), lambda xy: b.pole(xy, on=on), d0 + 0.5, back - 0.5)
        if rng.random() < 0.3:
            scatter(int(rng.integers(2, 6)), lambda xy: b.cone(xy, on=on), d0 + 0.5, back - 0.5)
            scatter(int(rng.integers(1, 4)), lambda xy: b.barrier(xy, along(u0) + rng.uniform(0, np.pi), on=on),
                    d0 + 0.5, back - 0.5)
    elif kind == "park":
        on = (TERRAIN,)
        scatter(int(rng.integers(2, 9)), lambda xy: b.tree(xy, rng.uniform(0.6, 1.3), on=on), d0 + 1.0, back)
        scatter(int(rng.integers(1, 7)), lambda xy: b.bush(xy, on=on), d0 + 0.5, back)
        scatter(int(rng.integers(0, 5)), lambda xy: b.person(xy, on=on), d0 + 0.5, back)
        scatter(int(rng.integers(0, 2)), lambda xy: b.pole(xy, on=on), d0 + 0.5, back)
        scatter(int(rng.integers(0, 2)), lambda xy: b.furniture(xy, rng.uniform(0, np.pi), on=on), d0 + 0.5, back)
        if rng.random() < 0.3:
            b.row(str(rng.choice(["hedge", "wall"])), at(u0 + 0.5, back), at(u1 - 0.5, back), on=on)
    else:  # open ground
        scatter(int(rng.integers(0, 4)), lambda xy: b.bush(xy, on=(TERRAIN, OTHER_FLAT)), d0 + 0.5, back)
        scatter(int(rng.integers(0, 2)), lambda xy: b.person(xy, on=(TERRAIN, OTHER_FLAT)), d0 + 0.5, back)
        if rng.random() < 0.25:
            b.vehicle("vehicle.car", at((u0 + u1) / 2, face + 3.0), rng.uniform(0, 2 * np.pi), on=(TERRAIN, OTHER_FLAT))


def _fill_street(b: _StreetBuilder, st: Street, u_lo: float, u_hi: float, lo, hi) -> None:
    """Objects on street ``st`` between u_lo and u_hi (inside the world's rectangle lo..hi): parked and
    standing vehicles, street furniture, trees and people on the sidewalks and verges, people on crossings."""
    rng = b.rng

    def inside(xy):
        return bool(np.all(xy > lo) and np.all(xy < hi))

    for side in (0, 1):
        sign, kerb, walk = 2 * side - 1, st.kerb(side), st.walk[side]
        facing = 0.0 if side == 0 else np.pi  # traffic keeps to the right

        def spots(step_lo, step_hi):
            u = u_lo + rng.uniform(0, step_hi)
            while u < u_hi:
                yield u
                u += rng.uniform(step_lo, step_hi)

        for u in spots(18.0, 40.0):  # poles at the kerb, at the back of the sidewalk or on the verge
            d = kerb + (rng.uniform(0.3, 0.6) if walk > 0 else rng.uniform(0.5, 3.0)) if rng.random() < 0.7 \
                else kerb + walk + rng.uniform(-0.4, 2.0)
            xy = st.to_world(u, sign * d)
            if inside(xy):
                b.pole(xy, on=(SIDEWALK, TERRAIN, OTHER_FLAT, DRIVEABLE))
        if rng.random() < 0.45:  # street trees
            for u in spots(7.0, 15.0):
                xy = st.to_world(u, sign * (kerb + rng.uniform(0.6, max(0.8, walk - 0.4))))
                if inside(xy):
                    b.tree(xy, rng.uniform(0.5, 1.0), on=(SIDEWALK, TERRAIN))
        for u in spots(3.0, 14.0):  # people on the sidewalk and just beyond it
            xy = st.to_world(u, sign * (kerb + rng.uniform(0.3, walk + 1.5)))
            if inside(xy) and rng.random() < 0.6:
                b.person(xy, on=(SIDEWALK, TERRAIN, OTHER_FLAT, DRIVEABLE))
        for u in spots(8.0, 30.0):  # bins, bollards, benches, shelters; bicycles and motorcycles at the kerb
            xy = st.to_world(u, sign * (kerb + rng.uniform(0.4, max(0.5, walk - 0.4))))
            if not inside(xy) or rng.random() < 0.4:
                continue
            if rng.random() < 0.5:
                b.furniture(xy, float(st.heading(u)), on=(SIDEWALK, TERRAIN))
            else:
                category = "vehicle.motorcycle" if rng.random() < 0.35 else "vehicle.bicycle"
                b.vehicle(category, st.to_world(u, sign * (kerb + 0.6)), float(st.heading(u)) + facing,
                          on=(SIDEWALK, TERRAIN, DRIVEABLE))
        if st.parking[side] > 0:  # parked along the kerb
            d = st.traffic_edge + st.parking[side] / 2
            u = u_lo + rng.uniform(0, 8)
            while u < u_hi:
                category = str(rng.choice(["vehicle.car", "vehicle.truck", "vehicle.motorcycle", "vehicle.bus.rigid",
                                           "vehicle.construction"], p=[0.8, 0.07, 0.07, 0.03, 0.03]))
                length = {"vehicle.car": 5.0, "vehicle.truck": 17.0, "vehicle.motorcycle": 2.3,
                          "vehicle.bus.rigid": 13.0, "vehicle.construction": 9.0}[category]
                xy = st.to_world(u + length / 2, sign * d)
                if inside(xy) and rng.random() < 0.65:
                    b.vehicle(category, xy, float(st.heading(u)) + facing, on=(DRIVEABLE,))
                u += length + rng.uniform(0.5, 6.0)
        for lane in range(st.lanes):  # standing in the lanes
            for u in spots(10.0, 50.0):
                xy = st.to_world(u, sign * (st.median + (lane + 0.5) * st.lane_width + rng.uniform(-0.4, 0.4)))
                if inside(xy) and rng.random() < 0.5:
                    category = str(rng.choice(["vehicle.car", "vehicle.truck", "vehicle.bus.rigid",
                                               "vehicle.motorcycle"], p=[0.72, 0.12, 0.1, 0.06]))
                    b.vehicle(category, xy, float(st.heading(u)) + facing, attribute="vehicle.stopped", on=(DRIVEABLE,))
    for uc in st.crossings:  # people on the zebra crossings
        for _ in range(int(rng.integers(0, 3))):
            s = rng.uniform(-st.kerb(0), st.kerb(1))
            xy = st.to_world(uc + rng.uniform(-1.0, 1.0), s)
            if inside(xy):
                b.person(xy)


def _must_haves(b: _StreetBuilder, streets: list[Street], near: list[tuple[int, float, float]]) -> None:
    """Near the ego's drive: a construction zone (cones, barriers and a construction vehicle) in a lane, a
    parking lane or on the verge, a bus, a truck with a trailer, a motorcycle and a bicycle, each at a random
    free spot of a random street, so that every class is seen in most scenes."""
    rng = b.rng

    def spot():
        i, u0, u1 = near[int(rng.integers(len(near)))]
        st = streets[i]
        side = int(rng.integers(2))
        where = rng.choice(["lane", "parking", "verge"], p=[0.45, 0.3, 0.25])
        if where == "lane":
            d = st.median + (int(rng.integers(st.lanes)) + 0.5) * st.lane_width
        elif where == "parking" and st.parking[side] > 0:
            d = st.traffic_edge + st.parking[side] / 2
        else:
            d = st.kerb(side) + st.walk[side] + rng.uniform(1.5, 6.0)
        u = rng.uniform(max(u0, st.u_range[0]), min(u1, st.u_range[1]))
        return st, side, u, d

    for _ in range(30):
        st, side, u, d = spot()
        sign = 2 * side - 1
        yaw = float(st.heading(u)) + (0.0 if side == 0 else np.pi)
        if not b.vehicle("vehicle.construction", st.to_world(u, sign * d), yaw):
            continue
        run = rng.uniform(8.0, 20.0)
        for du in np.arange(4.5, 4.5 + run, rng.uniform(1.8, 3.0)):
            b.cone(st.to_world(u - du * np.cos(yaw - st.heading(u)), sign * (d - 0.9)))
        for du in np.arange(5.0, 5.0 + 0.6 * run, 2.2):
            b.barrier(st.to_world(u - du * np.cos(yaw - st.heading(u)), sign * (d + 0.3)), float(st.heading(u)))
        break
    for category, trailer in (("vehicle.bus.rigid", False), ("vehicle.truck", True), ("vehicle.motorcycle", False),
                              ("vehicle.bicycle", False)):
        for _ in range(30):
            st, side, u, d = spot()
            if b.vehicle(category, st.to_world(u, (2 * side - 1) * d),
                         float(st.heading(u)) + (0.0 if side == 0 else np.pi), trailer=trailer):
                break
