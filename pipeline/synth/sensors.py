"""The sensor rig of the synthetic world: a 32-beam spinning LiDAR and six cameras, as on nuScenes' car.

Timing: each keyframe's LiDAR sweep is instantaneous at the keyframe timestamp (as if motion-compensated
to it) and cast from the ego pose at that instant. The beam starts the sweep pointing at yaw
``SWEEP_START_YAW_DEG`` (ego frame) and turns clockwise once per 50 ms; each camera is triggered when
the beam crosses its optical axis, so camera c is exposed ``trigger_offset_s(c)`` (4 to 44 ms) after
the LiDAR and rendered from the ego pose at that later instant. A projection that ignores ego motion
therefore misplaces points by up to ~0.5 m at the demo's speeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.classes import FINE_INDEX
from pipeline.frames import CAMERAS as CAMERA_CHANNELS
from pipeline.geometry import intrinsic_matrix, make_transform, yaw_matrix
from pipeline.synth import raycast
from pipeline.synth.ground import hash_noise
from pipeline.synth.world import BOX, World

LIDAR_TRANSLATION = (0.943713, 0.0, 1.84023)
LIDAR_YAW_DEG = -90.0  # like nuScenes' LIDAR_TOP: sensor y forward, x to the right
N_BEAMS = 32
N_AZIMUTH = 1085
ELEVATION_DEG = np.linspace(10.67, -30.67, N_BEAMS)  # ring 0 is the top beam
MIN_RANGE, MAX_RANGE = 1.0, 70.0
RANGE_NOISE_M = 0.01
DROPOUT = 0.01
SWEEP_PERIOD_S = 0.05
SWEEP_START_YAW_DEG = 207.5
SKY_LABEL = 255  # class-map value of pixels that hit nothing


@dataclass(frozen=True)
class Camera:
    channel: str
    yaw_deg: float  # optical axis direction in the ego frame
    translation: tuple[float, float, float]
    hfov_deg: float


_RIG = {  # channel: (yaw_deg, translation, hfov_deg), nuScenes-like
    "CAM_FRONT": (0.0, (1.70, 0.02, 1.51), 70.0),
    "CAM_FRONT_RIGHT": (-55.0, (1.55, -0.49, 1.50), 70.0),
    "CAM_BACK_RIGHT": (-110.0, (1.03, -0.48, 1.56), 70.0),
    "CAM_BACK": (180.0, (0.03, 0.00, 1.57), 110.0),
    "CAM_BACK_LEFT": (110.0, (1.03, 0.48, 1.56), 70.0),
    "CAM_FRONT_LEFT": (55.0, (1.52, 0.49, 1.51), 70.0),
}
CAMERAS: tuple[Camera, ...] = tuple(Camera(ch, *_RIG[ch]) for ch in CAMERA_CHANNELS)  # the reader's order

def ego_from_camera(cam: Camera) -> np.ndarray:
    """Camera -> ego transform [4,4]: camera z along the optical axis, x to its right, y down."""
    yaw = np.radians(cam.yaw_deg)
    forward = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    return make_transform(np.stack([right, down, forward], axis=1), cam.translation)


def ego_from_lidar() -> np.ndarray:
    return make_transform(yaw_matrix(np.radians(LIDAR_YAW_DEG)), LIDAR_TRANSLATION)


def camera_intrinsic(cam: Camera, width: int, height: int) -> np.ndarray:
    return intrinsic_matrix(width, height, cam.hfov_deg)


def trigger_offset_s(cam: Camera) -> float:
    """Seconds between the LiDAR keyframe timestamp and this camera's exposure."""
    return ((SWEEP_START_YAW_DEG - cam.yaw_deg) % 360.0) / 360.0 * SWEEP_PERIOD_S


def world_from_ego(world: World, t: float) -> np.ndarray:
    position, rotation = world.ego_pose(t)
    return make_transform(rotation, position)


@dataclass(frozen=True)
class Sweep:
    points: np.ndarray  # [N,5] float32 x, y, z (LiDAR frame), intensity, ring
    label: np.ndarray  # [N] uint8 fine class
    instance: np.ndarray  # [N] int32 (0 for the ground)


def lidar_directions() -> tuple[np.ndarray, np.ndarray]:
    """Unit beam directions [32*1085, 3] in the LiDAR frame and the ring of each."""
    el = np.radians(ELEVATION_DEG)[:, None]
    az = 2 * np.pi * np.arange(N_AZIMUTH)[None, :] / N_AZIMUTH
    dirs = np.stack([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el) * np.ones_like(az)], -1)
    ring = np.broadcast_to(np.arange(N_BEAMS)[:, None], (N_BEAMS, N_AZIMUTH))
    return dirs.reshape(-1, 3), ring.reshape(-1)


def cast_sweep(world: World, t: float, rng: np.random.Generator) -> Sweep:
    """One LiDAR sweep at scene time ``t``: returns within 1..70 m, with range noise and dropout.

    Intensity = reflectivity of what was hit x (0.3 + 0.7 cos incidence) x exp(-range / 120 m) x a log-normal
    factor per return (sigma: the world's ``intensity_sigma``); world version 1 gives paint 80 cos + 20.
    """
    origin, dirs_w = lidar_rays(world, t)
    dirs_l, ring = lidar_directions()
    dist, hit = raycast.cast(world.prims, world.ground, origin, dirs_w, max_t=MAX_RANGE)
    keep = np.isfinite(dist) & (dist >= MIN_RANGE) & (rng.random(len(dist)) >= DROPOUT)
    dist, hit, dirs_l, dirs_w, ring = dist[keep], hit[keep], dirs_l[keep], dirs_w[keep], ring[keep]
    world_pts = origin + dist[:, None] * dirs_w
    label, reflectivity, paint = _surface(world, hit, world_pts)
    normal = raycast.normals(world.prims, world.ground, hit, world_pts)
    cos_inc = np.abs((normal * dirs_w).sum(1))
    intensity = reflectivity * (0.3 + 0.7 * cos_inc) * np.exp(-dist / 120.0) * rng.lognormal(
        0, world.intensity_sigma, len(dist))
    if world.version == 1:
        intensity = np.where(paint, 80.0 * cos_inc + 20.0, intensity)
    noisy = dist + rng.normal(0, RANGE_NOISE_M, len(dist))
    xyz = dirs_l * noisy[:, None]
    points = np.concatenate([xyz, np.round(np.clip(intensity, 0, 255))[:, None], ring[:, None]], 1)
    instance = np.where(hit >= 0, world.prims.instance[np.maximum(hit, 0)], 0).astype(np.int32)
    return Sweep(points.astype(np.float32), label, instance)


def _surface(world: World, hit: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fine class [N] (``SKY_LABEL`` for the sky), reflectivity [N] and paint [N] of what each ray hit."""
    label = np.full(hit.shape, SKY_LABEL, dtype=np.uint8)
    reflectivity = np.zeros(hit.shape)
    paint = np.zeros(hit.shape, dtype=bool)
    ground = hit == raycast.GROUND
    surface = world.ground.surface(points[ground, 0], points[ground, 1])
    label[ground], reflectivity[ground], paint[ground] = surface.label, surface.reflectivity, surface.paint
    solid = hit >= 0
    label[solid] = world.prims.label[hit[solid]]
    reflectivity[solid] = world.prims.reflectivity[hit[solid]]
    return label, reflectivity, paint


@dataclass(frozen=True)
class CameraView:
    rgb: np.ndarray  # [H,W,3] uint8
    label: np.ndarray  # [H,W] uint8 fine class, SKY_LABEL where nothing is hit
    depth: np.ndarray  # [H,W] float32 camera-frame z, inf for sky
    world_from_cam: np.ndarray  # [4,4] at the camera's own instant


def render_camera(world: World, cam: Camera, t_cam: float, width: int, height: int,
                  rng: np.random.Generator) -> CameraView:
    """Render camera ``cam`` at scene time ``t_cam`` (its own exposure instant)."""
    world_from_cam = world_from_ego(world, t_cam) @ ego_from_camera(cam)
    k = camera_intrinsic(cam, width, height)
    dist, hit, dirs = raycast.cast_image(world.prims, world.ground, world_from_cam, k, width, height)
    origin = world_from_cam[:3, 3]
    flat_hit = hit.reshape(-1)
    flat_dist = dist.reshape(-1)
    flat_dirs = dirs.reshape(-1, 3)
    seen = np.nonzero(flat_hit != raycast.SKY)[0]
    pts = origin + flat_dist[seen, None] * flat_dirs[seen]
    h = flat_hit[seen]
    label = np.full(flat_hit.shape, SKY_LABEL, dtype=np.uint8)
    label[seen], _, paint = _surface(world, h, pts)

    rgb = np.empty((len(flat_hit), 3))
    up = np.clip(flat_dirs[:, 2], 0, 1)[:, None] ** 0.5
    horizon, zenith = np.array([0.80, 0.86, 0.92]), np.array([0.32, 0.52, 0.85])
    rgb[:] = horizon * (1 - up) + zenith * up
    rgb[seen] = _shade(world, h, pts, label[seen], paint, flat_dirs[seen], flat_dist[seen], horizon)
    rgb = rgb.reshape(height, width, 3) + rng.normal(0, 0.008, (height, width, 3))
    cam_dirs_z = (dirs @ world_from_cam[:3, :3])[..., 2]
    depth = np.where(np.isfinite(dist), dist * cam_dirs_z, np.inf).astype(np.float32)
    return CameraView(
        rgb=np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8),
        label=label.reshape(height, width),
        depth=depth,
        world_from_cam=world_from_cam,
    )


def _shade(world: World, hit, pts, label, paint, dirs, dist, horizon) -> np.ndarray:
    """Colour of surface points: class colour with per-object jitter, procedural texture, Lambert light, haze."""
    prims = world.prims
    solid = hit >= 0
    base = np.empty((len(hit), 3))
    base[solid] = prims.colour[hit[solid]]
    ground_colour = {
        "flat.driveable_surface": (0.33, 0.33, 0.35), "flat.sidewalk": (0.62, 0.60, 0.56),
        "flat.terrain": (0.36, 0.50, 0.22), "flat.other": (0.55, 0.45, 0.38),
    }
    for name, colour in ground_colour.items():
        base[~solid & (label == FINE_INDEX[name])] = colour
    local = raycast.local_coords(prims, hit, pts)
    tex = np.ones(len(hit))

    def is_(name):
        return label == FINE_INDEX[name]

    g = ~solid
    road = g & is_("flat.driveable_surface")
    tex[road] = 0.9 + 0.2 * hash_noise(np.floor(pts[road, :2] * 5), 1)
    walk = g & is_("flat.sidewalk")
    grid = (np.minimum(pts[walk, 0] % 0.8, pts[walk, 1] % 0.8) < 0.05)
    tex[walk] = np.where(grid, 0.7, 0.95 + 0.1 * hash_noise(np.floor(pts[walk, :2] / 0.8), 2))
    terrain = g & is_("flat.terrain")
    tp = pts[terrain]
    tex[terrain] = 0.8 + 0.12 * np.sin(0.7 * tp[:, 0]) * np.sin(0.9 * tp[:, 1]) + 0.25 * hash_noise(
        np.floor(tp[:, :2] * 4), 3)
    other = g & is_("flat.other")
    tex[other] = 0.8 + 0.35 * hash_noise(np.floor(pts[other, :2] * np.array([2.0, 4.0])), 4)
    veg = is_("static.vegetation")
    tex[veg] = 0.6 + 0.8 * hash_noise(np.floor(pts[veg] * 7), 5)
    building = solid & is_("static.manmade") & (prims.kind[np.maximum(hit, 0)] == BOX)
    lb = local[building]
    along = np.where(np.abs(lb[:, 0]) < prims.half[hit[building], 0] - 1e-3, lb[:, 0], lb[:, 1])
    z_abs = pts[building, 2]
    window = ((along % 3.0) > 0.9) & ((along % 3.0) < 2.2) & ((z_abs % 3.2) > 1.0) & ((z_abs % 3.2) < 2.4)
    tex[building] = np.where(window, 0.45, 0.92 + 0.12 * hash_noise(np.floor(np.c_[along, z_abs] * 4), 6))
    cone = is_("movable_object.trafficcone")
    stripe = np.abs(local[cone, 2] - 0.08) < 0.07
    base[cone] = np.where(stripe[:, None], 0.95, base[cone])
    barrier = is_("movable_object.barrier")
    base[barrier] = np.where(((local[barrier, 0] % 0.5) < 0.25)[:, None], (0.85, 0.12, 0.10), base[barrier])
    person = np.isin(label, [FINE_INDEX["human.pedestrian.adult"], FINE_INDEX["human.pedestrian.child"]])
    tex[person & (local[:, 2] < 0)] *= 0.55  # trousers darker than the shirt

    colour = base * tex[:, None]
    colour = np.where(paint[:, None], 0.92, colour)
    normal = raycast.normals(prims, world.ground, hit, pts)
    light = 0.45 + 0.65 * np.clip(normal @ world.sun, 0, 1)
    colour = colour * light[:, None]
    haze = 1 - np.exp(-dist / 350.0)
    return colour * (1 - haze[:, None]) + horizon * haze[:, None]


def lidar_rays(world: World, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Origin [3] and unit beam directions [32*1085, 3] of the sweep at scene time ``t``, world frame."""
    world_from_lidar = world_from_ego(world, t) @ ego_from_lidar()
    dirs_l, _ = lidar_directions()
    return world_from_lidar[:3, 3], dirs_l @ world_from_lidar[:3, :3].T


def lidar_visible_fraction(world: World, rays, sweep_instances: np.ndarray, instance: int) -> float:
    """Fraction of the beams ``rays`` (from ``lidar_rays``) aimed at ``instance`` that reach it first."""
    origin, dirs_w = rays
    rows = np.nonzero(world.prims.instance == instance)[0]
    reach = np.zeros(len(dirs_w), dtype=bool)
    for j in rows:
        reach |= np.isfinite(raycast.intersect(world.prims, j, origin, dirs_w))
    n_aimed = int(reach.sum() * (1 - DROPOUT))
    return 0.0 if n_aimed == 0 else min(1.0, float((sweep_instances == instance).sum()) / n_aimed)
