"""The ground of the synthetic world: its height, where a ray meets it, and what each point of it is.

One ground per world version, with the same methods (arrays in, arrays out; world frame, metres):

    height(x, y) -> z                  normal(x, y) -> [N,3] unit, pointing up
    hit(origin [3], dirs [N,3], limit) -> t [N]: first meeting at origin + t dirs, inf where none before limit
    surface(x, y) -> Surface           fine class, LiDAR reflectivity and road paint of ground points
    map_mask(x, y) -> bool             road or sidewalk: the map's semantic prior

- ``FlatStreet`` (world version 1): the plane z = 0 and one road along +x whose centreline is
  ``y = y0 + A sin(2 pi x / wavelength + phase)``; the lateral coordinate of a point is s = y - centreline(x).
- ``HillyStreets`` (world version 3): the smooth height field of a ``Terrain``, with ``Street``s painted on
  it (carriageway, lanes, central island, sidewalks, zebra crossings) and patches beside each street (parking
  lots and driveways, plazas, gravel); everything else is terrain. Each street and patch has its own LiDAR
  reflectivity, drawn from ranges that overlap between classes, and the ground's reflectivity varies from
  one 2 m cell to the next, so that a return's strength alone does not tell road from sidewalk or grass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.classes import FINE_INDEX

DRIVEABLE, SIDEWALK = FINE_INDEX["flat.driveable_surface"], FINE_INDEX["flat.sidewalk"]
TERRAIN, OTHER_FLAT = FINE_INDEX["flat.terrain"], FINE_INDEX["flat.other"]

# LiDAR return strength (0..255 scale) by fine class at normal incidence, before range fall-off: world
# version 1 gives every point of a class this strength.
CLASS_REFLECTIVITY = np.full(256, 15.0)
for _name, _value in {
    "flat.driveable_surface": 8.0, "flat.sidewalk": 22.0, "flat.terrain": 12.0, "flat.other": 16.0,
    "static.manmade": 28.0, "static.vegetation": 9.0, "vehicle.car": 18.0, "vehicle.truck": 24.0,
    "vehicle.bus.rigid": 26.0, "vehicle.trailer": 24.0, "vehicle.construction": 30.0, "vehicle.motorcycle": 16.0,
    "vehicle.bicycle": 20.0, "human.pedestrian.adult": 7.0, "human.pedestrian.child": 7.0,
    "movable_object.barrier": 45.0, "movable_object.trafficcone": 90.0,
}.items():
    CLASS_REFLECTIVITY[FINE_INDEX[_name]] = _value


def hash_noise(cells: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic value in [0, 1) per integer cell [..., k]."""
    h = np.full(cells.shape[:-1], salt * 2654435761 & 0xFFFFFFFF, dtype=np.uint64)
    for i in range(cells.shape[-1]):
        h = (h ^ (cells[..., i].astype(np.int64).astype(np.uint64) * np.uint64(0x9E3779B1 + 7919 * i)))
        h = (h * np.uint64(0x85EBCA6B)) & np.uint64(0xFFFFFFFF)
        h ^= h >> np.uint64(13)
    return (h & np.uint64(0xFFFF)).astype(np.float64) / 65536.0


@dataclass(frozen=True)
class Surface:
    """What ground points are: fine class [N] uint8, reflectivity [N] (0..255 scale at normal incidence)
    and whether they are painted [N] bool (lane lines, zebra crossings)."""

    label: np.ndarray
    reflectivity: np.ndarray
    paint: np.ndarray


def _up(n: int) -> np.ndarray:
    normal = np.zeros((n, 3))
    normal[:, 2] = 1.0
    return normal


@dataclass(frozen=True)
class FlatStreet:
    """World version 1: the plane z = 0 with one road; lateral zones in metres of s."""

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
        label = np.full(np.shape(x), TERRAIN, dtype=np.uint8)
        for x0, x1, s0, s1 in self.flat_patches:
            label[(x >= x0) & (x <= x1) & (s >= s0) & (s <= s1)] = OTHER_FLAT
        label[a <= self.half_width + self.sidewalk_width] = SIDEWALK
        label[a <= self.half_width] = DRIVEABLE
        return label

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.zeros(np.shape(x))

    def normal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return _up(len(x))

    def hit(self, origin: np.ndarray, dirs: np.ndarray, limit=np.inf) -> np.ndarray:
        """Distance to the plane z = 0 along each ray; inf for rays that do not go down."""
        dz = dirs[..., 2]
        with np.errstate(divide="ignore"):
            t = -origin[2] / dz
        return np.where((dz < -1e-9) & (t > 0), t, np.inf)

    def surface(self, x: np.ndarray, y: np.ndarray) -> Surface:
        """Class strengths; paint: a dashed centre line and solid edge lines."""
        label = self.ground_label(x, y)
        s = y - self.centre_y(x)
        centre = (np.abs(s) < 0.08) & ((x % 9.0) < 4.5)
        edge = np.abs(np.abs(s) - (self.half_width - 0.25)) < 0.08
        return Surface(label, CLASS_REFLECTIVITY[label], centre | edge)

    def map_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.abs(y - self.centre_y(x)) <= self.half_width + self.sidewalk_width


def _safe_step(f, fp, kappa):
    """Root s > 0 of f + fp s - kappa s^2 / 2: how far a gap f (> 0) with slope fp surely stays open when its
    second derivative is at least -kappa."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * f / (np.sqrt(fp * fp + 2 * kappa * f) - fp)


@dataclass(frozen=True)
class Terrain:
    """Smooth hills: ``z = base + gx x + gy y + sum_k amp_k cos(kx_k x + ky_k y + phase_k)``.

    ``slope_bound`` = |(gx, gy)| + sum_k amp_k |(kx_k, ky_k)| bounds the gradient's length everywhere.
    """

    base: float
    gx: float
    gy: float
    amp: np.ndarray  # [K]
    kx: np.ndarray  # [K] rad/m
    ky: np.ndarray
    phase: np.ndarray

    @property
    def slope_bound(self) -> float:
        return float(np.hypot(self.gx, self.gy) + np.sum(self.amp * np.hypot(self.kx, self.ky)))

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        z = self.base + self.gx * x + self.gy * y
        for a, kx, ky, p in zip(self.amp, self.kx, self.ky, self.phase):
            z = z + a * np.cos(kx * x + ky * y + p)
        return z

    def gradient(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        hx, hy = np.full(np.shape(x), self.gx), np.full(np.shape(x), self.gy)
        for a, kx, ky, p in zip(self.amp, self.kx, self.ky, self.phase):
            w = a * np.sin(kx * x + ky * y + p)
            hx, hy = hx - kx * w, hy - ky * w
        return hx, hy

    def normal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        hx, hy = self.gradient(x, y)
        n = np.stack([-hx, -hy, np.ones(np.shape(hx))], axis=-1)
        return n / np.linalg.norm(n, axis=-1, keepdims=True)

    def hit(self, origin: np.ndarray, dirs: np.ndarray, limit=np.inf, tol: float = 1e-4,
            max_iter: int = 100) -> np.ndarray:
        """First root t > 0 of f(t) = o_z + t d_z - H(o_xy + t d_xy) per unit ray ``dirs`` [N,3]; inf where
        there is none before ``limit`` (scalar or [N]).

        Along a ray the terrain is ``H(t) = b + t g.d + sum_k amp_k cos(alpha_k + t beta_k)``: the gap f closes
        at most at ``g.d + sum_k amp_k |beta_k| - d_z`` per metre (rays where that is <= 0 never meet the
        ground, nor do rays that climb above the highest the hills can be) and f'' >= -kappa = -sum_k amp_k
        beta_k^2. Each ray keeps a safe point t_a, with f > 0 on
        [0, t_a]. From it, f(t_a + s) >= f_a + f'_a s - kappa s^2 / 2, so the step s_a to that parabola's
        root cannot pass the first root; likewise backwards from any point x above the ground (step s_x).
        Candidates: first the nearest root of f's own second-order expansion at 0, then Newton steps from the
        last candidate x (kept inside the bracket [t_a, t_b] once a candidate fell below the ground, else regula
        falsi), the safe step s_a after a candidate that could not be accepted. A candidate above the ground
        becomes the safe point when s_a + s_x >= x - t_a (no root can hide between). Done when Newton's own
        estimate of the error left after its step is under ``tol`` metres and its root is provably the first
        (stepping from the safe point, or from below with the same covering test a millimetre before the
        root), or when the bracket is narrower than ``tol``.
        """
        dirs = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
        n = len(dirs)
        t_out = np.full(n, np.inf)
        limit = np.broadcast_to(np.asarray(limit, dtype=np.float64), (n,))
        ox, oy, oz = (float(v) for v in origin)
        gap0 = oz - float(self.height(ox, oy))
        if gap0 <= 0:
            raise ValueError(f"ray origin {origin} is not above the ground (height {oz - gap0:.3f} m)")
        dx, dy, dz = np.ascontiguousarray(dirs.T)  # contiguous rows: strided columns are slow to broadcast
        gd = self.gx * dx + self.gy * dy
        beta = self.kx[:, None] * dx + self.ky[:, None] * dy  # [K, N]
        rate = gd + self.amp @ np.abs(beta) - dz
        # H <= b + t g.d + sum_k amp_k along the ray, so f >= rise0 + rise t as well as f >= gap0 - rate t:
        # where the two lower bounds cross above zero, the ray passes over every hill
        rise0, rise = oz - (self.base + self.gx * ox + self.gy * oy + self.amp.sum()), dz - gd
        with np.errstate(divide="ignore", invalid="ignore"):
            clear = (rise > 0) & (gap0 - rate * (gap0 - rise0) / (rate + rise) > 0)
        act = np.nonzero((rate > 0) & (gap0 < rate * limit) & ~clear)[0]
        dz, lim, gd, beta, rise = dz[act], limit[act], gd[act], beta[:, act], rise[act]
        alpha = np.mod(self.kx * ox + self.ky * oy + self.phase, 2 * np.pi)[:, None]
        kappa = self.amp @ (beta * beta)
        hx0, hy0 = self.gradient(ox, oy)
        fp0 = dz - float(hx0) * dx[act] - float(hy0) * dy[act]
        fpp0 = (self.amp * np.cos(alpha[:, 0])) @ (beta * beta)
        # per-ray state, one row each, compacted together as rays finish; the trigonometric terms are taken
        # in float32 (ten times faster here): phases stay within a few radians of 0 and each term slopes at
        # most amp_k |k_k|, so f is good to ~2e-6 m
        X, TA, FA, FPA, SA, TB, FB, SLOPE, KAPPA, STOP = range(10)
        state = np.empty((STOP + 1, len(act)))
        state[SLOPE], state[KAPPA] = dz - gd, kappa
        with np.errstate(divide="ignore", invalid="ignore"):  # past STOP: beyond the limit, or over the hills
            state[STOP] = np.minimum(lim, np.where(rise > 0, -rise0 / rise, np.inf))
        state[TA], state[FA], state[FPA], state[SA] = 0.0, gap0, fp0, _safe_step(gap0, fp0, kappa)
        state[TB], state[FB] = np.inf, 0.0
        beta32 = beta.astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            disc = fp0 * fp0 - 2 * fpp0 * gap0
            quad = (-fp0 - np.sqrt(disc)) / fpp0
            first = np.where(fp0 < 0, gap0 / -fp0, state[SA])
            state[X] = np.where((disc >= 0) & (quad > 0) & np.isfinite(quad), quad, first)
        amp32, alpha32 = self.amp.astype(np.float32), alpha.astype(np.float32)
        over_plane = oz - (self.base + self.gx * ox + self.gy * oy)
        for _ in range(max_iter):
            if state.shape[1] == 0:
                break
            x, ta, fa, fpa, sa, tb, fb, slope, kappa, stop = state
            ph = alpha32 + x.astype(np.float32) * beta32
            f = over_plane + x * slope - amp32 @ np.cos(ph)
            fp = slope + (amp32[:, None] * beta32 * np.sin(ph)).sum(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                s_x = 2 * f / (np.sqrt(fp * fp + 2 * kappa * f) + fp)
                newton = x - f / fp
                # Newton's error after its step is about |f''| / (2 |f'|) step^2 <= kappa / (2 |f'|) step^2
                settled = 0.5 * kappa * (newton - x) ** 2 < tol * np.abs(fp)
                # a millimetre before Newton's root from below: bounds on f and f' there (|f''| <= kappa) and
                # the backward safe step they allow
                d = newton - x - 1e-3
                f_low = f + fp * d - 0.5 * kappa * d * d
                fp_high = fp + kappa * np.abs(d)
                s_b = 2 * f_low / (np.sqrt(fp_high * fp_high + 2 * kappa * f_low) + fp_high)
            above = f > 0
            accept = above & (sa + s_x >= x - ta)
            rejected = above & ~accept
            # on or below the ground: Newton's root is the first when nothing can hide before it
            first = (f <= 2e-6) & settled & (newton > ta) & (f_low > 0) & (sa + s_b >= x + d - ta)
            below = ~above & ~first
            for row, value in ((TA, x), (FA, f), (FPA, fp)):
                np.copyto(state[row], value, where=accept)
            np.copyto(sa, _safe_step(fa, fpa, kappa), where=accept)
            np.copyto(tb, x, where=below)
            np.copyto(fb, f, where=below)
            bracketed = tb < np.inf
            ok = np.where(bracketed, (newton > ta) & (newton < tb), accept & (fp < 0)) & ~rejected
            nxt = np.where(ok, newton, ta + sa)
            i = np.nonzero(bracketed & ~ok & ~rejected)[0]  # regula falsi, never short of the safe step
            nxt[i] = np.maximum(ta[i] + (tb[i] - ta[i]) * fa[i] / (fa[i] - fb[i]), ta[i] + sa[i])
            small = (ok & settled & accept) | first
            done = small | (bracketed & (tb - ta < tol))
            t_out[act[done]] = np.where(small, newton, ta)[done]
            keep = ~done & (ta < stop) & np.isfinite(nxt)
            state[X] = nxt
            if not keep.all():
                state, beta32, act = state[:, keep], beta32[:, keep], act[keep]
        leftover = state[TB] < np.inf
        t_out[act[leftover]] = state[TA, leftover]  # out of iterations: the last safe point
        t_out[t_out > limit] = np.inf
        return t_out


@dataclass(frozen=True)
class Street:
    """One street in its own frame: u along it, v across. Its centreline is ``v = f(u) = sum_j bend_amp_j
    sin(bend_k_j u + bend_phase_j)``; the lateral coordinate of a point is ``s = (v - f(u)) / sqrt(1 + f'(u)^2)``
    (s > 0 on the left of +u; the perpendicular distance where the street is straight), and
    ``to_world(u, s)`` is its exact inverse. The street exists for u in ``u_range``.

    Across it, from the centreline out on each side: a central island of half-width ``median`` (open in
    ``gaps``, the junctions), ``lanes`` lanes of ``lane_width``, a parking lane (``parking``), the kerb, a
    sidewalk (``walk``, 0: none) and then the patches of that side: rows (u0, u1, d0, d1, class,
    reflectivity) at distances d0..d1 from the centreline, sorted by u0 and not overlapping in u.
    Tuples of two are (right, left).
    """

    origin: tuple[float, float]
    angle: float
    bend_amp: np.ndarray
    bend_k: np.ndarray
    bend_phase: np.ndarray
    u_range: tuple[float, float]
    lanes: int
    lane_width: float
    median: float
    gaps: np.ndarray  # [G, 2] u ranges where the island is open
    parking: tuple[float, float]
    walk: tuple[float, float]
    crossings: np.ndarray  # [C] u of zebra crossings
    asphalt: float  # reflectivity of the carriageway
    walk_reflectivity: tuple[float, float]
    island_reflectivity: float
    paint_reflectivity: float
    patches: tuple[np.ndarray, np.ndarray]  # [P, 6] per side

    @property
    def traffic_edge(self) -> float:
        """Distance from the centreline to the outer edge of the outer lane."""
        return self.median + self.lanes * self.lane_width

    def kerb(self, side: int) -> float:
        """Distance from the centreline to the kerb on ``side`` (0: right, 1: left)."""
        return self.traffic_edge + self.parking[side]

    def _bend(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, fp = np.zeros(np.shape(u)), np.zeros(np.shape(u))
        for a, k, p in zip(self.bend_amp, self.bend_k, self.bend_phase):
            ph = k * u + p
            f, fp = f + a * np.sin(ph), fp + a * k * np.cos(ph)
        return f, fp

    def local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World (x, y) -> street coordinates (u, s)."""
        c, sn = np.cos(self.angle), np.sin(self.angle)
        px, py = np.asarray(x) - self.origin[0], np.asarray(y) - self.origin[1]
        u = c * px + sn * py
        v = -sn * px + c * py
        if len(self.bend_amp) == 0:
            return u, v
        f, fp = self._bend(u)
        return u, (v - f) / np.sqrt(1 + fp * fp)

    def to_world(self, u, s) -> np.ndarray:
        """Street coordinates (u, s) -> world xy [..., 2]."""
        u, s = np.asarray(u, dtype=np.float64), np.asarray(s, dtype=np.float64)
        f, fp = self._bend(u)
        v = f + s * np.sqrt(1 + fp * fp)
        c, sn = np.cos(self.angle), np.sin(self.angle)
        return np.stack([self.origin[0] + c * u - sn * v, self.origin[1] + sn * u + c * v], axis=-1)

    def heading(self, u) -> np.ndarray:
        """Yaw of +u at ``u`` (along the centreline), radians."""
        return self.angle + np.arctan(self._bend(np.asarray(u, dtype=np.float64))[1])

    def island(self, u: np.ndarray, s: np.ndarray) -> np.ndarray:
        isle = np.abs(s) < self.median
        for g0, g1 in self.gaps:
            isle &= (u < g0) | (u > g1)
        return isle

    def zones(self, u: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks (carriageway, island, sidewalk) of points in street coordinates."""
        on = (u >= self.u_range[0]) & (u <= self.u_range[1])
        carriage = on & (s >= -self.kerb(0)) & (s <= self.kerb(1))
        island = carriage & self.island(u, s) if self.median > 0 else np.zeros(np.shape(u), dtype=bool)
        walk = on & ~carriage & (s >= -self.kerb(0) - self.walk[0]) & (s <= self.kerb(1) + self.walk[1])
        return carriage, island, walk

    def patch(self, u: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inside, class, reflectivity) of the patch each point lies on, if any."""
        inside, label, refl = np.zeros(np.shape(u), dtype=bool), np.zeros(np.shape(u)), np.zeros(np.shape(u))
        for side, rows in enumerate(self.patches):
            if len(rows) == 0:
                continue
            d = s if side else -s
            i = np.searchsorted(rows[:, 0], u, side="right") - 1
            row = rows[np.maximum(i, 0)]
            hit = (i >= 0) & (u <= row[:, 1]) & (d >= row[:, 2]) & (d <= row[:, 3])
            inside |= hit
            label = np.where(hit, row[:, 4], label)
            refl = np.where(hit, row[:, 5], refl)
        return inside, label, refl

    def paint(self, u: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Lane lines and zebra crossings, as masks over points of this carriageway (street coordinates)."""
        d = np.abs(s)
        if self.median > 0:
            centre = np.zeros(np.shape(u), dtype=bool)
        elif self.lanes == 1:
            centre = (d < 0.08) & ((u % 9.0) < 4.5)
        else:
            centre = np.abs(d - 0.15) < 0.06
        lines = centre
        for k in range(1, self.lanes):
            lines = lines | ((np.abs(d - self.median - k * self.lane_width) < 0.07) & ((u % 9.0) < 3.0))
        for side in (0, 1):
            edge = self.traffic_edge - (0.25 if self.parking[side] == 0 else 0.0)
            lines = lines | (((s > 0) == bool(side)) & (np.abs(d - edge) < 0.08))
        for uc in self.crossings:
            lines = lines | ((np.abs(u - uc) < 1.6) & ((s % 1.1) < 0.55))
        return lines


@dataclass(frozen=True)
class HillyStreets:
    """World version 3: terrain heights with streets and patches on them (see the module docstring).

    Where zones meet, a carriageway wins over a central island, an island over a sidewalk, a sidewalk over
    a patch and a patch over terrain; lane lines are not painted inside another street's carriageway.
    """

    terrain: Terrain
    streets: tuple[Street, ...]
    terrain_reflectivity: float

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.terrain.height(x, y)

    def normal(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.terrain.normal(x, y)

    def hit(self, origin: np.ndarray, dirs: np.ndarray, limit=np.inf) -> np.ndarray:
        return self.terrain.hit(origin, dirs, limit)

    def label(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fine class of the ground at world (x, y) (uint8): ``surface``'s without its paint and strengths."""
        return self._classify(x, y)[0]

    def surface(self, x: np.ndarray, y: np.ndarray) -> Surface:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        label, refl, coords, roads = self._classify(x, y)
        paint = np.zeros(np.shape(x), dtype=bool)
        for i, st in enumerate(self.streets):
            mine = roads[i]
            for j, road in enumerate(roads):
                if j != i:
                    mine = mine & ~road
            lines = np.zeros(np.shape(x), dtype=bool)
            lines[mine] = st.paint(coords[i][0][mine], coords[i][1][mine])
            paint |= lines
            refl = np.where(lines, st.paint_reflectivity, refl)
        # worn patches, repairs, wet and dry soil: the strength varies from one 2 m cell to the next
        cells = np.floor(np.stack([x, y], axis=-1) / 2.0)
        refl = refl * (0.55 + 0.9 * hash_noise(cells, 11))
        return Surface(label, refl, paint)

    def _classify(self, x: np.ndarray, y: np.ndarray):
        """Class [N] and base reflectivity [N] of ground points, with each street's (u, s) and carriageway mask."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        label = np.full(np.shape(x), TERRAIN, dtype=np.uint8)
        refl = np.full(np.shape(x), self.terrain_reflectivity)
        rank = np.zeros(np.shape(x), dtype=np.int8)  # 0 terrain, 1 patch, 2 sidewalk, 3 island, 4 carriageway
        coords, roads = [], []

        def put(mask, r, cls, value):
            nonlocal label, refl, rank
            take = mask & (rank < r)
            label = np.where(take, cls, label).astype(np.uint8)
            refl = np.where(take, value, refl)
            rank = np.where(take, r, rank)

        for st in self.streets:
            u, s = st.local(x, y)
            carriage, island, walk = st.zones(u, s)
            road = carriage & ~island
            put(road, 4, DRIVEABLE, st.asphalt)
            put(island, 3, OTHER_FLAT, st.island_reflectivity)
            put(walk, 2, SIDEWALK, np.where(s > 0, st.walk_reflectivity[1], st.walk_reflectivity[0]))
            coords.append((u, s))
            roads.append(road)
        rest = np.nonzero(rank < 2)[0]  # patches lie beyond the sidewalks
        for st, (u, s) in zip(self.streets, coords):
            inside, p_label, p_refl = st.patch(u[rest], s[rest])
            new = inside & (rank[rest] < 1)
            label[rest[new]], refl[rest[new]], rank[rest[new]] = p_label[new], p_refl[new], 1
        return label, refl, coords, roads

    def map_mask(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Road or sidewalk. Only points within a street's reach (its frame's v within the centreline's swing
        plus the widest side) are looked at closely."""
        shape = np.shape(x)
        x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
        mask = np.zeros(x.shape, dtype=bool)
        for st in self.streets:
            reach = np.abs(st.bend_amp).sum() + max(st.kerb(0) + st.walk[0], st.kerb(1) + st.walk[1]) + 1.0
            v = -np.sin(st.angle) * (x - st.origin[0]) + np.cos(st.angle) * (y - st.origin[1])
            near = np.nonzero(np.abs(v) <= reach)[0]
            carriage, _, walk = st.zones(*st.local(x[near], y[near]))
            mask[near] |= carriage | walk
        return mask.reshape(shape)
