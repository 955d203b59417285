"""The procedural street: a ground with road, sidewalks, terrain and flat patches, plus analytic solids.

World frame = nuScenes' global frame: x east, y north, z up, metres, ground at z = 0. The road runs
along +x with a gently curving centreline ``y = y0 + A sin(2 pi x / wavelength + phase)``; the lateral
coordinate of a ground point is ``s = y - centreline(x)`` (s > 0 left of the direction of travel).
Everything above the ground is one of three solids, each with a class, an instance id and a colour:

- box: centre c, half extents h (along its own x, y, z), rotated by ``yaw`` about z;
- cylinder: vertical axis through c, radius r = h[0], from c.z - h[2] to c.z + h[2];
- ellipsoid: centre c, radii h, rotated by ``yaw`` about z.

The ego vehicle drives in the right-hand lane at constant speed; its pose at any instant is smooth in
time, so sensors triggered at different instants see the world from slightly different poses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.classes import FINE_INDEX

BOX, CYLINDER, ELLIPSOID = 0, 1, 2

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

# Annotation categories and attributes written to sample_annotation for each kind of object.
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


@dataclass(frozen=True)
class Road:
    """Centreline and lateral zones of the road (metres)."""

    y0: float
    amplitude: float
    wavelength: float
    phase: float
    half_width: float  # kerb at |s| = half_width
    sidewalk_width: float
    flat_patches: np.ndarray  # [K, 4] (x_min, x_max, s_min, s_max) of flat.other areas

    def centre_y(self, x: np.ndarray) -> np.ndarray:
        return self.y0 + self.amplitude * np.sin(2 * np.pi * x / self.wavelength + self.phase)

    def heading(self, x: np.ndarray) -> np.ndarray:
        """Yaw of the direction of travel (+x along the road) at ``x``, radians."""
        slope = self.amplitude * 2 * np.pi / self.wavelength * np.cos(2 * np.pi * x / self.wavelength + self.phase)
        return np.arctan(slope)

    def to_world(self, x: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Road coordinates (x, lateral s) -> world xy [..., 2]."""
        x = np.asarray(x, dtype=np.float64)
        return np.stack([x, self.centre_y(x) + s], axis=-1)

    def ground_label(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fine class of the ground at world (x, y): road, sidewalk, flat patch or terrain (uint8)."""
        s = y - self.centre_y(x)
        a = np.abs(s)
        label = np.full(np.shape(x), FINE_INDEX["flat.terrain"], dtype=np.uint8)
        for x0, x1, s0, s1 in self.flat_patches:
            label[(x >= x0) & (x <= x1) & (s >= s0) & (s <= s1)] = FINE_INDEX["flat.other"]
        label[a <= self.half_width + self.sidewalk_width] = FINE_INDEX["flat.sidewalk"]
        label[a <= self.half_width] = FINE_INDEX["flat.driveable_surface"]
        return label


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

    def add(self, kind, centre, half, yaw, label, instance, colour) -> None:
        self.kind.append(kind)
        self.centre.append(tuple(float(v) for v in centre))
        self.half.append(tuple(float(v) for v in half))
        self.yaw.append(float(yaw))
        self.label.append(int(label))
        self.instance.append(int(instance))
        self.colour.append(tuple(float(v) for v in colour))

    def arrays(self) -> "PrimitiveArrays":
        return PrimitiveArrays(
            kind=np.array(self.kind, dtype=np.int8),
            centre=np.array(self.centre, dtype=np.float64).reshape(-1, 3),
            half=np.array(self.half, dtype=np.float64).reshape(-1, 3),
            yaw=np.array(self.yaw, dtype=np.float64),
            label=np.array(self.label, dtype=np.uint8),
            instance=np.array(self.instance, dtype=np.int32),
            colour=np.array(self.colour, dtype=np.float64).reshape(-1, 3),
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


@dataclass(frozen=True)
class World:
    seed: int
    scene_index: int
    road: Road
    prims: PrimitiveArrays
    things: tuple[Thing, ...]
    start_x: float
    speed: float  # m/s along x
    lane_s: float  # lateral offset of the ego path
    sun: np.ndarray  # unit vector towards the sun
    x_range: tuple[float, float]

    def ego_pose(self, t: float) -> tuple[np.ndarray, float]:
        """Ego position [3] (world, ground level) and yaw at ``t`` seconds after the scene start."""
        x = self.start_x + self.speed * t
        xy = self.road.to_world(x, self.lane_s)
        return np.array([xy[0], xy[1], 0.0]), float(self.road.heading(np.array(x)))


class _Builder:
    def __init__(self, rng: np.random.Generator, road: Road):
        self.rng = rng
        self.road = road
        self.prims = Primitives()
        self.things: list[Thing] = []
        self.next_instance = 1
        self.footprints: list[tuple[float, float, float, float]] = []  # (x0, x1, s0, s1) taken

    def colour(self, category: str) -> np.ndarray:
        base = np.array(BASE_COLOUR[category])
        jitter = COLOUR_JITTER.get(category, 0.08)
        if jitter > 0.3:  # free colour: a random hue mixed with the class colour
            return np.clip(0.35 * base + 0.65 * self.rng.uniform(0.05, 0.95, 3), 0, 1)
        return np.clip(base * self.rng.uniform(1 - jitter, 1 + jitter) + self.rng.normal(0, jitter / 3, 3), 0, 1)

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


def build_world(seed: int, scene_index: int, duration_s: float) -> World:
    """Generate the street of scene ``scene_index`` of the world ``seed``, long enough for ``duration_s``.

    Deterministic: the same arguments give the same world.
    """
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
    road = Road(flat_patches=np.array(patches, dtype=np.float64).reshape(-1, 4), **road_kwargs)
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
    return World(seed=seed, scene_index=scene_index, road=road, prims=b.prims.arrays(), things=tuple(b.things),
                 start_x=start_x, speed=float(speed), lane_s=float(lane_s), sun=sun, x_range=(x_lo, x_hi))
