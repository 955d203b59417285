"""Ray casting against the synthetic world: nearest hit of rays from one origin.

All rays of a call share one origin ``o`` [3] (a camera centre or the LiDAR centre, world frame) and
have unit directions ``d`` [..., 3]; a hit at distance t lies at ``o + t d``. The ground is the world's
(``ground.py``: its ``hit`` finds where a ray meets it); solids are the boxes, cylinders and ellipsoids of
``world.PrimitiveArrays``. A z-buffer keeps, per ray, the nearest distance and what was hit: a solid's row,
``GROUND`` or ``SKY``. Solids are cast first, so that the ground is only searched up to the nearest solid;
where the ground and a solid are at the same distance, the ground wins.

Two ways to choose which rays can hit a solid, both conservative, so that each solid is intersected
with few rays: an image rectangle (the convex hull of a solid's projected bounding corners bounds its
image when all corners are in front of the camera) and a bounding-sphere cone (any ray bundle).
"""

from __future__ import annotations

import numpy as np

from pipeline.synth.world import BOX, CYLINDER, ELLIPSOID, PrimitiveArrays

GROUND = -1
SKY = -2
_EPS = 1e-6


def _to_local(prims: PrimitiveArrays, j: int, origin: np.ndarray, dirs: np.ndarray):
    """Origin (3 floats) and direction components (3 arrays) in solid j's frame (centred, yaw undone)."""
    c, s = np.cos(prims.yaw[j]), np.sin(prims.yaw[j])
    o = origin - prims.centre[j]
    o_l = (c * o[0] + s * o[1], -s * o[0] + c * o[1], o[2])
    dx, dy, dz = dirs[..., 0], dirs[..., 1], dirs[..., 2]
    if s == 0.0:
        return o_l, (dx, dy, dz)
    return o_l, (c * dx + s * dy, -s * dx + c * dy, dz)


def _slab(o: float, d: np.ndarray, h: float):
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (-h - o) * inv
        t2 = (h - o) * inv
    if abs(o) <= h:  # rays parallel to the slab from inside it never leave it
        t1 = np.where(d == 0, -np.inf, t1)
        t2 = np.where(d == 0, np.inf, t2)
    return np.minimum(t1, t2), np.maximum(t1, t2)


def _box_t(o, d, h):
    """Slab test: entry distance of rays o + t d into the box |x_i| <= h_i; inf where missed."""
    n0, f0 = _slab(o[0], d[0], h[0])
    n1, f1 = _slab(o[1], d[1], h[1])
    n2, f2 = _slab(o[2], d[2], h[2])
    t_near = np.maximum(np.maximum(n0, n1), n2)
    t_far = np.minimum(np.minimum(f0, f1), f2)
    return np.where((t_far >= t_near) & (t_near > _EPS), t_near, np.inf)


def _cylinder_t(o, d, r, hh):
    """Vertical cylinder x^2 + y^2 <= r^2, |z| <= hh (local frame): side wall, then caps."""
    dx, dy, dz = d
    a = dx * dx + dy * dy
    b = 2 * (o[0] * dx + o[1] * dy)
    c = o[0] ** 2 + o[1] ** 2 - r * r
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
        z_side = o[2] + t_side * dz
        best = np.where((disc >= 0) & (a > 1e-12) & (t_side > _EPS) & (np.abs(z_side) <= hh), t_side, np.inf)
        for z_cap in (hh, -hh):
            t_cap = (z_cap - o[2]) / dz
            x = o[0] + t_cap * dx
            y = o[1] + t_cap * dy
            ok = (t_cap > _EPS) & (x * x + y * y <= r * r)
            best = np.minimum(best, np.where(ok, t_cap, np.inf))
    return best


def _ellipsoid_t(o, d, radii):
    """Ellipsoid sum (x_i / r_i)^2 <= 1 (local frame): scale to the unit sphere and solve."""
    ox, oy, oz = o[0] / radii[0], o[1] / radii[1], o[2] / radii[2]
    dx, dy, dz = d[0] / radii[0], d[1] / radii[1], d[2] / radii[2]
    a = dx * dx + dy * dy + dz * dz
    b = 2 * (dx * ox + dy * oy + dz * oz)
    c = ox * ox + oy * oy + oz * oz - 1
    disc = b * b - 4 * a * c
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def intersect(prims: PrimitiveArrays, j: int, origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Distance along each unit ray ``dirs`` [..., 3] from ``origin`` to solid j; inf where it misses."""
    o_l, d_l = _to_local(prims, j, origin, dirs)
    kind, h = prims.kind[j], prims.half[j]
    if kind == BOX:
        return _box_t(o_l, d_l, h)
    if kind == CYLINDER:
        return _cylinder_t(o_l, d_l, h[0], h[2])
    if kind == ELLIPSOID:
        return _ellipsoid_t(o_l, d_l, h)
    raise ValueError(f"unknown solid kind {kind}")


def _with_ground(ground, origin: np.ndarray, dirs: np.ndarray, t_best: np.ndarray, hit: np.ndarray,
                 max_t: float) -> None:
    """Put the ground into the z-buffer (t_best [N], hit [N], in place) where it is no farther than what is there."""
    t = ground.hit(origin, dirs, np.minimum(t_best, max_t))
    better = np.isfinite(t) & (t <= t_best)
    t_best[better] = t[better]
    hit[better] = GROUND


def _bounding_spheres(prims: PrimitiveArrays) -> tuple[np.ndarray, np.ndarray]:
    return prims.centre, np.linalg.norm(prims.half, axis=1)


def cast(prims: PrimitiveArrays, ground, origin: np.ndarray, dirs: np.ndarray, max_t: float = np.inf):
    """Nearest hit of each ray ``dirs`` [N,3] (unit) from ``origin``: (t [N], hit [N] int32).

    ``hit`` is the solid's row, ``GROUND`` or ``SKY`` (t = inf). Solids are culled by bounding-sphere
    cones: a ray can only hit a solid whose sphere (centre c, radius R, distance D from the origin) it
    passes within angle asin(R / D) of.
    """
    origin = np.asarray(origin, dtype=np.float64)
    dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
    t_best = np.full(len(dirs), np.inf)
    hit = np.full(len(dirs), SKY, dtype=np.int32)
    centres, radii = _bounding_spheres(prims)
    to_c = centres - origin
    dist = np.linalg.norm(to_c, axis=1)
    near = np.nonzero(dist - radii < max_t)[0]
    for j in near:
        if dist[j] <= radii[j]:
            cand = np.arange(len(dirs))
        else:
            cos_min = np.sqrt(1.0 - (radii[j] / dist[j]) ** 2)
            cand = np.nonzero(dirs @ (to_c[j] / dist[j]) >= cos_min - 1e-9)[0]
        if len(cand) == 0:
            continue
        t = intersect(prims, j, origin, dirs[cand])
        better = t < t_best[cand]
        t_best[cand[better]] = t[better]
        hit[cand[better]] = j
    _with_ground(ground, origin, dirs, t_best, hit, max_t)
    far = t_best > max_t
    t_best[far], hit[far] = np.inf, SKY
    return t_best, hit


_NEAR = 0.05
_BOX_EDGES = [(i, i ^ bit) for bit in (1, 2, 4) for i in range(8) if not i & bit]


def _clip_to_near(corners: np.ndarray) -> np.ndarray:
    """Corners [8,3] (camera frame) of a box, clipped to z >= _NEAR: the kept corners plus the points
    where box edges cross the near plane. Their projections bound the image of the clipped box."""
    z = corners[:, 2]
    pts = [corners[z >= _NEAR]]
    for a, b in _BOX_EDGES:
        if (z[a] - _NEAR) * (z[b] - _NEAR) < 0:
            w = (_NEAR - z[a]) / (z[b] - z[a])
            pts.append((corners[a] + w * (corners[b] - corners[a]))[None])
    return np.concatenate(pts)


def cast_image(prims: PrimitiveArrays, ground, world_from_cam: np.ndarray, k: np.ndarray, width: int, height: int,
               max_t: float = 250.0):
    """Render a pinhole camera by ray casting through pixel centres (i + 0.5, j + 0.5).

    Returns (t [H,W] distance along the unit ray, hit [H,W] int32, dirs [H,W,3] world unit directions).
    Each solid is intersected only with the pixels of its projected bounding rectangle.
    """
    origin = world_from_cam[:3, 3]
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    cam_dirs = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1)
    cam_dirs /= np.linalg.norm(cam_dirs, axis=-1, keepdims=True)
    dirs = cam_dirs @ world_from_cam[:3, :3].T
    t_best = np.full((height, width), np.inf)
    hit = np.full((height, width), SKY, dtype=np.int32)

    corners = prims.bounding_corners()  # [P,8,3] world
    cam_from_world_r = world_from_cam[:3, :3].T
    pc = (corners - origin) @ cam_from_world_r.T  # camera frame
    z = pc[..., 2]
    dist = np.linalg.norm(prims.centre - origin, axis=1) - np.linalg.norm(prims.half, axis=1)
    for j in np.nonzero((z.max(axis=1) > _NEAR) & (dist < max_t))[0]:
        front = _clip_to_near(pc[j])
        uu = k[0, 0] * front[:, 0] / front[:, 2] + k[0, 2]
        vv = k[1, 1] * front[:, 1] / front[:, 2] + k[1, 2]
        u0, u1 = max(int(np.floor(uu.min())) - 1, 0), min(int(np.ceil(uu.max())) + 1, width)
        v0, v1 = max(int(np.floor(vv.min())) - 1, 0), min(int(np.ceil(vv.max())) + 1, height)
        if u0 >= u1 or v0 >= v1:
            continue
        t = intersect(prims, j, origin, dirs[v0:v1, u0:u1])
        sub_t = t_best[v0:v1, u0:u1]
        better = t < sub_t
        sub_t[better] = t[better]
        hit[v0:v1, u0:u1][better] = j
    _with_ground(ground, origin, dirs.reshape(-1, 3), t_best.reshape(-1), hit.reshape(-1), max_t)
    far = t_best > max_t
    t_best[far], hit[far] = np.inf, SKY
    return t_best, hit, dirs


def normals(prims: PrimitiveArrays, ground, hit: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Unit outward surface normals [N,3] at world ``points`` [N,3] lying on what ``hit`` [N] names."""
    n = np.zeros_like(points)
    on_ground = hit == GROUND
    n[on_ground] = ground.normal(points[on_ground, 0], points[on_ground, 1])
    solid = np.nonzero(hit >= 0)[0]
    if len(solid) == 0:
        return n
    j = hit[solid]
    c, s = np.cos(prims.yaw[j]), np.sin(prims.yaw[j])
    p = points[solid] - prims.centre[j]
    pl = np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], -1)
    h = prims.half[j]
    kind = prims.kind[j]
    nl = np.empty_like(pl)
    # box: the face whose slab the point sits on
    box = kind == BOX
    q = pl[box]
    axis = (np.abs(q) / h[box]).argmax(axis=1)
    box_n = np.zeros_like(q)
    box_n[np.arange(len(q)), axis] = np.sign(q[np.arange(len(q)), axis])
    nl[box] = box_n
    # cylinder: a cap or the radial direction
    cyl = kind == CYLINDER
    q = pl[cyl]
    radial = np.concatenate([q[:, :2], np.zeros((len(q), 1))], axis=1)
    on_cap = np.abs(np.abs(q[:, 2]) - h[cyl, 2]) < 1e-4
    nl[cyl] = np.where(on_cap[:, None], np.stack([0 * q[:, 0], 0 * q[:, 0], np.sign(q[:, 2])], -1), radial)
    ell = ~box & ~cyl
    nl[ell] = pl[ell] / (h[ell] * h[ell])
    nl /= np.maximum(np.linalg.norm(nl, axis=1, keepdims=True), 1e-12)
    n[solid] = np.stack([c * nl[:, 0] - s * nl[:, 1], s * nl[:, 0] + c * nl[:, 1], nl[:, 2]], -1)
    return n


def local_coords(prims: PrimitiveArrays, hit: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points [N,3] in the frame of the solid each hit (world coordinates for the ground and sky)."""
    out = points.copy()
    solid = np.nonzero(hit >= 0)[0]
    j = hit[solid]
    c, s = np.cos(prims.yaw[j]), np.sin(prims.yaw[j])
    p = points[solid] - prims.centre[j]
    out[solid] = np.stack([c * p[:, 0] + s * p[:, 1], -s * p[:, 0] + c * p[:, 1], p[:, 2]], -1)
    return out
