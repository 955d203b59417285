"""World version 3: where a point is says little about what it is, and every sensor agrees on the ground.

The tests build small worlds (``build_world``, LiDAR sweeps only; four tests share the ten streets of
``streets``) except the byte-identity check of version 1, which writes a tiny dataroot.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.classes import EVAL_CLASSES, FINE_INDEX, FINE_TO_EVAL
from pipeline.synth import sensors
from pipeline.synth.ground import FlatStreet, Terrain
from pipeline.synth.world import build_world
from pipeline.synth.write import SynthConfig, write_dataroot

DURATION = 1.1  # two keyframes
ROAD, WALK = FINE_INDEX["flat.driveable_surface"], FINE_INDEX["flat.sidewalk"]
TERRAIN, VEGETATION = FINE_INDEX["flat.terrain"], FINE_INDEX["static.vegetation"]

# sha256 over (path, sha256 of bytes) of every file but synth.json of the dataroot written below by the
# version-1 generator as it was before version 3 existed
V1_DIGEST = "581e93491e518d29c504e304fef7af6f0f74dbf533bca2c802db70090641c4f7"


def _sweep_in_world(world, t: float, seed: int = 0):
    """A sweep at ``t`` and its points in the world frame [N,3]."""
    sweep = sensors.cast_sweep(world, t, np.random.default_rng(seed))
    world_from_lidar = sensors.world_from_ego(world, t) @ sensors.ego_from_lidar()
    return sweep, sweep.points[:, :3].astype(np.float64) @ world_from_lidar[:3, :3].T + world_from_lidar[:3, 3]


def test_version_1_writes_the_same_bytes_as_before_version_3(tmp_path):
    cfg = SynthConfig(out=str(tmp_path / "v1"), scenes=1, samples_per_scene=2, seed=3, width=160, height=90,
                      workers=0, world_version=1)
    write_dataroot(cfg, progress=False)
    root = Path(cfg.out)
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "synth.json":
            digest.update(str(p.relative_to(root)).encode())
            digest.update(hashlib.sha256(p.read_bytes()).digest())
    assert digest.hexdigest() == V1_DIGEST
    assert "world_version" not in (root / "synth.json").read_text()  # as its synth.json always read


def test_world_version_is_checked():
    with pytest.raises(ValueError, match="world-version 2"):
        SynthConfig(out="x", world_version=2)
    with pytest.raises(ValueError, match="world version 2"):
        build_world(0, 0, DURATION, version=2)


def test_terrain_hit_is_the_first_crossing():
    """Equivalence with a 2 cm march along each ray, rays going up into hills included."""
    terrain = build_world(5, 0, DURATION).ground.terrain
    rng = np.random.default_rng(0)
    origin = np.array([150.0, 140.0, 0.0])
    origin[2] = terrain.height(origin[0], origin[1]) + 1.6
    az, el = rng.uniform(0, 2 * np.pi, 300), np.radians(rng.uniform(-30, 6, 300))
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1)
    t = terrain.hit(origin, dirs, 120.0)
    steps = np.arange(0.0, 120.0, 0.02)
    for d, found in zip(dirs, t):
        p = origin + steps[:, None] * d
        under = np.nonzero(p[:, 2] <= terrain.height(p[:, 0], p[:, 1]))[0]
        if len(under) == 0:
            assert not found <= 119.9
        else:
            assert abs(found - steps[under[0]]) < 0.03
            assert abs(origin[2] + found * d[2] - terrain.height(*(origin[:2] + found * d[:2]))) < 1e-4
    plane = FlatStreet(110.0, 0.0, 200.0, 0.0, 6.0, 2.0, np.zeros((0, 4)))
    assert plane.hit(np.array([0.0, 0.0, 2.0]), np.array([[0.6, 0.0, -0.8]]))[0] == pytest.approx(2.5)


def test_terrain_hit_respects_the_limit():
    terrain = Terrain(0.0, 0.0, 0.0, np.array([1.0]), np.array([0.05]), np.array([0.0]), np.array([0.0]))
    down = np.array([[np.cos(0.2), 0.0, -np.sin(0.2)]])
    origin = np.array([0.0, 0.0, 2.5])
    t = terrain.hit(origin, down)[0]
    assert np.isfinite(t) and np.isinf(terrain.hit(origin, down, limit=t - 0.5)[0])


@pytest.fixture(scope="module")
def streets():
    """Ten scenes of world seed 11, each with its sweep at t = 0 and the sweep's points in the world frame."""
    worlds = [build_world(11, scene, DURATION) for scene in range(10)]
    return [(world, *_sweep_in_world(world, 0.0)) for world in worlds]


def test_ground_height_varies_by_metres_and_the_ego_stands_on_it(streets):
    spans = []
    for world, sweep, pts in streets[:6]:
        position, rotation = world.ego_pose(0.3)
        assert position[2] == pytest.approx(float(world.ground.height(position[0], position[1])), abs=1e-9)
        normal = world.ground.normal(position[:1], position[1:2])[0]
        assert np.allclose(rotation[:, 2], normal) and np.allclose(rotation.T @ rotation, np.eye(3))
        ground = np.isin(sweep.label, [ROAD, WALK, TERRAIN, FINE_INDEX["flat.other"]])
        spans.append(np.ptp(pts[ground, 2]))
        lidar_z = sweep.points[ground, 2]  # in the sensor frame, tilted with the ego
        assert np.ptp(lidar_z) > 0.5
    assert min(spans) > 1.5 and max(spans) > 4.0


def test_road_is_not_a_band_at_one_place_in_the_ego_frame(streets):
    """Across scenes, the road's edges sit at different lateral offsets from the ego; in some the road bends
    away or another street crosses, so road points lie far to the side ahead."""
    right_edges, far_side = [], []
    for _, sweep, _ in streets:
        x, y = sweep.points[:, 1], -sweep.points[:, 0]  # ego axes: LiDAR y is forward, x to the right
        road = sweep.label == ROAD
        near = road & (np.abs(x) < 4.0)
        right_edges.append(np.percentile(y[near], 2))
        far_side.append(np.mean(np.abs(y[road & (x > 15)]) > 12.0) if (road & (x > 15)).any() else 0.0)
    assert np.ptp(right_edges) > 3.0
    assert max(far_side) > 0.1


def test_ego_drives_different_lanes_off_their_centres(streets):
    offsets, lanes = [], set()
    for world, _, _ in streets:
        street = world.path.street
        s = world.path.lateral(0.0)[0]
        lane = int((-s - street.median) // street.lane_width)
        lanes.add(lane)
        offsets.append(-s - street.median - (lane + 0.5) * street.lane_width)
    assert len(lanes) >= 2 and np.std(offsets) > 0.15


def test_intensity_of_ground_and_vegetation_overlaps(streets):
    """The interquartile ranges of road, sidewalk, terrain and vegetation intensities overlap pairwise, and
    lane paint is brighter than the asphalt around it."""
    values = {c: [] for c in (ROAD, WALK, TERRAIN, VEGETATION)}
    paint, asphalt = [], []
    for world, sweep, pts in streets[:6]:
        for c in values:
            values[c].append(sweep.points[sweep.label == c, 3])
        road = sweep.label == ROAD
        painted = world.ground.surface(pts[road, 0], pts[road, 1]).paint
        paint.append(sweep.points[road, 3][painted])
        asphalt.append(sweep.points[road, 3][~painted])
    quartiles = {c: np.percentile(np.concatenate(v), [25, 75]) for c, v in values.items()}
    for a in quartiles:
        for b in quartiles:
            assert quartiles[a][0] <= quartiles[b][1], (a, b, quartiles)
    assert np.median(np.concatenate(paint)) > np.percentile(np.concatenate(asphalt), 75)


def test_boxes_enclose_their_points_and_stand_on_the_ground():
    for scene in range(3):
        world = build_world(15, scene, DURATION)
        sweep, pts = _sweep_in_world(world, 0.5)
        for thing in world.things:
            width, length, height = thing.size_wlh
            bottom = thing.centre[2] - height / 2
            if thing.category != "vehicle.trailer":  # a trailer is placed with its truck
                assert bottom == pytest.approx(float(world.ground.height(*thing.centre[:2])), abs=1e-6)
            own = sweep.instance == thing.instance
            if not own.any():
                continue
            p = pts[own] - np.array(thing.centre)
            c, s = np.cos(thing.yaw), np.sin(thing.yaw)
            assert np.all(np.abs(c * p[:, 0] + s * p[:, 1]) <= length / 2 + 0.05), thing
            assert np.all(np.abs(c * p[:, 1] - s * p[:, 0]) <= width / 2 + 0.05), thing
            assert np.all(np.abs(p[:, 2]) <= height / 2 + 0.05), thing


def test_default_world_shows_every_evaluation_class():
    """The two scenes of ``cdpipe synth``'s defaults (seed 0, ten keyframes each), LiDAR only."""
    cfg = SynthConfig(out="unused")
    seen = np.zeros(len(EVAL_CLASSES), dtype=bool)
    for scene in range(cfg.scenes):
        world = build_world(cfg.seed, scene, cfg.duration_s, cfg.world_version)
        for k in range(cfg.samples_per_scene):
            sweep = sensors.cast_sweep(world, 0.5 * k, np.random.default_rng(k))
            seen[FINE_TO_EVAL[sweep.label]] = True
            if seen[1:].all():  # the rest of the keyframes cannot take a class away
                return
    assert seen[1:].all(), [name for name, s in zip(EVAL_CLASSES, seen) if not s]
