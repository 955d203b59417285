"""The CenterPoint-style detection head (trainer/detection.py): targets and decoding invert each other,
the Gaussian radius and focal loss follow their definitions, and a Detector overfits a store's boxes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from trainer.config import DetectionConfig
from trainer.detection import (
    HEATMAP_PRIOR_BIAS,
    REGRESSION,
    Detector,
    collate_targets,
    decode,
    detection_loss,
    detection_targets,
    gaussian_focal_loss,
    gaussian_radius,
)

CFG = DetectionConfig()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_boxes(rng: np.random.Generator, n: int, cfg: DetectionConfig = CFG, step: int = 12) -> dict:
    """n boxes of random classes, sizes, yaws and velocities (some NaN) whose centres lie in distinct cells
    of a lattice ``step`` cells apart, so that no two Gaussian peaks touch."""
    h, w = cfg.grid_shape
    lattice = [(r, c) for r in range(2, h - 2, step) for c in range(2, w - 2, step)]
    cells = np.asarray(lattice)[rng.choice(len(lattice), n, replace=False)]
    xy = (cells[:, ::-1] + rng.uniform(0, 1, (n, 2))) * cfg.cell_m + [cfg.x_range[0], cfg.y_range[0]]
    velocity = rng.normal(0, 5, (n, 2))
    velocity[rng.random(n) < 0.3] = np.nan
    return {"box_centre": np.concatenate([xy, rng.uniform(-3, 2, (n, 1))], axis=1).astype(np.float32),
            "box_size": rng.uniform(0.3, 12, (n, 3)).astype(np.float32),
            "box_yaw": rng.uniform(-np.pi, np.pi, n).astype(np.float32),
            "box_velocity": velocity.astype(np.float32),
            "box_class": rng.integers(0, cfg.num_classes, n)}


def regression_maps(targets, cfg: DetectionConfig = CFG) -> torch.Tensor:
    """A regression output [10, H, W] that holds each box's target at its cell (zero elsewhere); where
    boxes share a cell, the later box's."""
    h, w = cfg.grid_shape
    maps = torch.zeros(len(REGRESSION), h * w)
    for cell, value in zip(targets.index.tolist(), targets.regression):
        maps[:, cell] = value
    return maps.view(len(REGRESSION), h, w)


def wrapped(angle: torch.Tensor) -> torch.Tensor:
    return torch.atan2(torch.sin(angle), torch.cos(angle))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_targets_then_decode_give_the_boxes_back(seed):
    boxes = random_boxes(np.random.default_rng(seed), 40)
    t = detection_targets(boxes, CFG)
    assert t.heatmap.shape == (10, 128, 128) and len(t.index) == 40
    assert float(t.heatmap.max()) == 1.0 and int((t.heatmap == 1).sum()) == 40
    out = decode(t.heatmap, regression_maps(t), CFG)
    assert len(out["score"]) == 40 and bool((out["score"] == 1).all())
    # match each input box to the decoded box nearest its centre
    centre = torch.from_numpy(boxes["box_centre"])
    order = torch.cdist(centre[:, :2].double(), out["centre"][:, :2].double()).argmin(dim=1)
    assert sorted(order.tolist()) == list(range(40))
    torch.testing.assert_close(out["centre"][order], centre, atol=1e-4, rtol=0)
    torch.testing.assert_close(out["size"][order], torch.from_numpy(boxes["box_size"]), atol=1e-5, rtol=0)
    yaw_error = wrapped(out["yaw"][order].double() - torch.from_numpy(boxes["box_yaw"]).double()).abs()
    assert float(yaw_error.max()) < 1e-5
    assert out["label"][order].tolist() == boxes["box_class"].tolist()
    velocity = torch.from_numpy(boxes["box_velocity"])
    known = velocity.isfinite().all(dim=1)
    torch.testing.assert_close(out["velocity"][order][known], velocity[known], atol=1e-5, rtol=0)
    assert bool((out["velocity"][order][~known] == 0).all())  # unknown: no target, the map's 0


def test_unknown_velocity_is_masked_and_boxes_outside_the_grid_are_dropped():
    boxes = random_boxes(np.random.default_rng(3), 4)
    boxes["box_velocity"][0] = np.nan
    boxes["box_centre"][1, 0] = 60.0  # beyond x_range
    boxes["box_centre"][2, 1] = -51.3  # beyond y_range
    t = detection_targets(boxes, CFG)
    assert len(t.index) == 2 and t.labels.tolist() == boxes["box_class"][[0, 3]].tolist()
    assert t.mask[0, 8:].tolist() == [0, 0] and t.mask[1].tolist() == [1] * 10
    assert bool(t.regression.isfinite().all())
    assert len(decode(t.heatmap, regression_maps(t), CFG)["score"]) == 2
    none = detection_targets({name: value[:0] for name, value in boxes.items()}, CFG)
    assert none.index.shape == (0,) and none.regression.shape == (0, 10) and float(none.heatmap.sum()) == 0
    batch = collate_targets([none, t])
    assert batch.valid.tolist() == [[False, False], [True, True]] and float(batch.mask[0].sum()) == 0


def test_two_boxes_in_one_cell_decode_as_one_per_class():
    """The head's documented limit: one box per cell and class. Two boxes of one class whose centres share
    a cell make one peak, decoded as one box (here the one whose regression the map holds); of two
    classes, two peaks that read the same regression."""
    boxes = random_boxes(np.random.default_rng(4), 2)
    boxes["box_centre"][1] = boxes["box_centre"][0] + np.float32(0.01)  # same cell, 1 cm apart
    for classes, expected in (([5, 5], 1), ([5, 0], 2)):
        boxes["box_class"] = np.asarray(classes)
        t = detection_targets(boxes, CFG)
        assert t.index[0] == t.index[1]
        out = decode(t.heatmap, regression_maps(t), CFG)
        assert len(out["score"]) == expected and bool((out["score"] == 1).all())
        assert sorted(out["label"].tolist()) == sorted(set(classes))
        for centre in out["centre"]:  # every decoded box is the later one (its regression filled the cell)
            torch.testing.assert_close(centre, torch.from_numpy(boxes["box_centre"][1]), atol=1e-4, rtol=0)


def test_decode_thresholds_and_top_k():
    boxes = random_boxes(np.random.default_rng(5), 20)
    t = detection_targets(boxes, CFG)
    scores = torch.linspace(0.05, 0.95, 20)
    heatmap = t.heatmap * 0.049  # every cell below the lowest score; then the peaks, still the maxima
    heatmap[t.labels, t.index // 128, t.index % 128] = scores
    reg = regression_maps(t)
    out = decode(heatmap, reg, DetectionConfig(score_threshold=0.5))
    assert out["score"].tolist() == sorted(scores[scores >= 0.5].tolist(), reverse=True)
    out = decode(heatmap, reg, DetectionConfig(score_threshold=0.0, max_detections=3))
    torch.testing.assert_close(out["score"], scores[-3:].flip(0))


def iou_cases(length: float, width: float, r: float) -> tuple[float, float, float]:
    """IoU of a length x width box with itself translated by (r, r), shrunk by r per side, grown by r per side."""
    inter = (length - r) * (width - r)
    area = length * width
    return (inter / (2 * area - inter), (length - 2 * r) * (width - 2 * r) / area,
            area / ((length + 2 * r) * (width + 2 * r)))


@pytest.mark.parametrize("length, width", [(5.6, 2.4), (15.0, 3.7), (1.0, 1.0), (0.9, 0.6), (40.0, 2.0)])
@pytest.mark.parametrize("overlap", [0.1, 0.5, 0.7])
def test_gaussian_radius_is_the_largest_shift_that_keeps_the_overlap(length, width, overlap):
    r = gaussian_radius(length, width, overlap)
    ious = iou_cases(length, width, r)
    assert r > 0 and min(ious) == pytest.approx(overlap, abs=1e-9)
    assert min(iou_cases(length, width, r * 1.01)) < overlap


def test_gaussian_focal_loss_is_small_for_a_perfect_prediction_and_has_finite_gradients():
    t = detection_targets(random_boxes(np.random.default_rng(6), 10), CFG).heatmap[None]
    peak = t == 1
    perfect = torch.where(peak, 20.0, -20.0)
    assert float(gaussian_focal_loss(perfect, t)) < 1e-6
    as_target = torch.logit(t.clamp(1e-6, 1 - 1e-6))  # the target itself as probabilities: only the skirts cost
    prior = torch.full_like(t, HEATMAP_PRIOR_BIAS)
    wrong = torch.where(peak, -20.0, 20.0)
    losses = [float(gaussian_focal_loss(x, t)) for x in (perfect, as_target, prior, wrong)]
    assert losses == sorted(losses) and losses[2] > 100 * losses[1] and losses[3] > 1e3
    for logits in (perfect, prior, wrong, torch.where(peak, 1e4, -1e4), torch.where(peak, -1e4, 1e4)):
        x = logits.clone().requires_grad_(True)
        loss = gaussian_focal_loss(x, t)
        loss.backward()
        assert bool(torch.isfinite(loss)) and bool(x.grad.isfinite().all())


def test_detection_loss_is_zero_on_the_regression_of_its_targets():
    cfg = CFG
    targets = [detection_targets(random_boxes(np.random.default_rng(s), n), cfg) for s, n in ((7, 5), (8, 2))]
    batch = collate_targets(targets)
    assert batch.index.shape == (2, 5) and batch.valid.sum() == 7 and batch.mask[1, 2:].sum() == 0
    reg = torch.stack([regression_maps(t) for t in targets])
    out = {"heatmap": torch.where(batch.heatmap == 1, 20.0, -20.0), "regression": reg.clone().requires_grad_(True)}
    loss = detection_loss(out, batch, cfg)
    assert float(loss["regression"]) == 0 and loss["total"].item() < 1e-6
    out["regression"] = reg + 1
    assert float(detection_loss(out, batch, cfg)["regression"]) == pytest.approx(
        float(sum(t.mask.sum() - t.mask[:, 8:].sum() * (1 - cfg.velocity_weight) for t in targets)) / 7, rel=1e-6)


def test_transform_boxes_moves_boxes_with_their_points():
    from trainer.data import augmentation_matrix, transform_boxes

    boxes = random_boxes(np.random.default_rng(9), 5)
    rng = np.random.default_rng(10)
    for _ in range(8):
        m = augmentation_matrix(rng, 0.1).astype(np.float64)
        moved = transform_boxes(boxes, m)
        # a point one metre ahead of each centre along its heading stays ahead of the moved centre
        yaw = boxes["box_yaw"].astype(np.float64)
        ahead = boxes["box_centre"] + np.stack([np.cos(yaw), np.sin(yaw), 0 * yaw], axis=1)
        s = abs(np.linalg.det(m)) ** (1 / 3)
        new_yaw = moved["box_yaw"].astype(np.float64)
        expected = moved["box_centre"] + s * np.stack([np.cos(new_yaw), np.sin(new_yaw), 0 * yaw], axis=1)
        np.testing.assert_allclose(ahead @ m.T, expected, atol=1e-4)
        np.testing.assert_allclose(moved["box_size"], boxes["box_size"] * s, rtol=1e-5)


def test_a_dataset_with_boxes_augments_them_with_the_points(small_store):
    """Each box holds the same points with and without augmentation (the points inside a box, in its own
    frame, are those within half its size), and a segmentation dataset reads no boxes."""
    from trainer.config import DataConfig
    from trainer.data import DETECTION, SEGMENTATION, StoreDataset

    def inside(sample) -> np.ndarray:
        b = sample.boxes
        d = sample.xyz[None, :, :2] - b["box_centre"][:, None, :2]
        c, s = np.cos(b["box_yaw"])[:, None], np.sin(b["box_yaw"])[:, None]
        along, across = d[..., 0] * c + d[..., 1] * s, -d[..., 0] * s + d[..., 1] * c
        up = sample.xyz[None, :, 2] - b["box_centre"][:, None, 2]
        size = b["box_size"][:, None, :]
        return (np.abs(across) <= size[..., 0] / 2) & (np.abs(along) <= size[..., 1] / 2) & \
            (np.abs(up) <= size[..., 2] / 2)

    store = small_store[0].out
    plain = StoreDataset(DataConfig(store=store, split="all", augment=False), targets=DETECTION)
    moved = StoreDataset(DataConfig(store=store, split="all", augment=True, scale=0.1), targets=DETECTION)
    assert StoreDataset(DataConfig(store=store, split="all"), targets=SEGMENTATION)[0].boxes is None
    held = 0
    for i in range(2):
        a, b = inside(plain[i]), inside(moved[i])
        near_faces = np.abs(a.astype(int) - b.astype(int)).sum()
        assert near_faces <= 2, near_faces  # a point on a face may fall either way in float32
        held += int(a.sum())
    assert held > 100


def test_detection_config_refuses_bad_values_in_one_line():
    for kwargs, flag in (({"cell_m": 0}, "--cell-m"), ({"cell_m": 0.7}, "--x-range"),
                         ({"x_range": (1.0, -1.0)}, "--x-range"), ({"min_overlap": 1.0}, "--min-overlap"),
                         ({"peak_window": 2}, "--peak-window"), ({"pool": "sum"}, "--pool"),
                         ({"score_threshold": 1.0}, "--score-threshold"), ({"max_detections": 0}, "--max-detections"),
                         ({"classes": ()}, "--classes")):
        with pytest.raises(ValueError) as e:
            DetectionConfig(**kwargs)
        assert str(e.value).startswith(flag) and "\n" not in str(e.value)
    assert DetectionConfig().grid_shape == (128, 128)
    assert DetectionConfig(x_range=(0.0, 70.4), cell_m=0.8).grid_shape == (128, 88)


def test_detector_keeps_the_sweeps_of_a_batch_apart():
    from trainer.batch import Sample, collate

    cfg = DetectionConfig(x_range=(-8.0, 8.0), y_range=(-8.0, 8.0), cell_m=1.0, trunk_channels=8, trunk_layers=1)
    rng = np.random.default_rng(11)
    samples = [Sample(sweep=i, xyz=rng.uniform(-6, 6, (300, 3)).astype(np.float32) + [4 * i, 0, 0],
                      intensity=rng.uniform(0, 255, 300).astype(np.float32)) for i in range(2)]
    torch.manual_seed(0)
    model = Detector("minkunet-tiny", cfg, voxel_size=0.5).eval()
    with torch.no_grad():
        joint = model.bev(collate(samples, 0.5))
        alone = torch.cat([model.bev(collate([s], 0.5)) for s in samples])
        out = model.head(joint)
    assert joint.shape == (2, 16, 16, 16)
    torch.testing.assert_close(joint, alone, atol=1e-5, rtol=1e-5)
    assert out["heatmap"].shape == (2, 10, 16, 16) and out["regression"].shape == (2, 10, 16, 16)
    assert float(joint[0, :, :, 15].abs().sum()) == 0  # no point of sweep 0 beyond x = 6 m


def test_a_detector_takes_its_backbone_from_a_pretraining_checkpoint(tmp_path):
    from trainer.batch import INPUT_SCALE
    from trainer.config import ModelConfig
    from trainer.detection import new_detector
    from trainer.model import Student

    torch.manual_seed(1)
    student = Student(ModelConfig(arch="minkunet-tiny", feature_dim=8, head_hidden=8, occ_hidden=8))
    path = str(tmp_path / "checkpoint.pt")
    torch.save({"model": student.state_dict(), "model_config": student.cfg.to_dict(), "train_config": {},
                "input_scale": list(INPUT_SCALE)}, path)
    random, source = new_detector("minkunet-tiny", CFG, None, seed=0)
    assert source == "random initialisation"
    model, source = new_detector("minkunet-tiny", CFG, path, seed=0)
    assert source == path
    for name, value in student.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[name], value), name
    for name, value in random.head.state_dict().items():  # the head is the seed's, whatever the backbone
        assert torch.equal(model.head.state_dict()[name], value), name
    with pytest.raises(ValueError, match="holds a minkunet-tiny backbone, not minkunet-small"):
        new_detector("minkunet-small", CFG, path, seed=0)


@pytest.mark.parametrize("pool", ["max", "mean"])
def test_bev_scatter_pools_each_cell_over_z(pool):
    from trainer.detection import bev_scatter

    cfg = DetectionConfig(x_range=(-2.0, 2.0), y_range=(-1.0, 3.0), cell_m=1.0, pool=pool)
    rng = np.random.default_rng(12)
    coords = torch.from_numpy(np.concatenate([rng.integers(0, 2, (200, 1)), rng.integers(-25, 35, (200, 3))], axis=1))
    coords = torch.unique(coords, dim=0)
    feats = torch.randn(len(coords), 3)
    bev = bev_scatter(feats, coords, 2, 0.1, cfg)
    expected = torch.zeros(2, 3, 4, 4)
    cells = {}
    for (b, x, y, _), f in zip(coords.tolist(), feats):
        col, row = int(np.floor((x + 0.5) * 0.1 + 2.0)), int(np.floor((y + 0.5) * 0.1 + 1.0))
        if 0 <= col < 4 and 0 <= row < 4:
            cells.setdefault((b, row, col), []).append(f)
    for (b, row, col), fs in cells.items():
        stacked = torch.stack(fs)
        expected[b, :, row, col] = stacked.amax(dim=0) if pool == "max" else stacked.mean(dim=0)
    torch.testing.assert_close(bev, expected)


def test_detector_overfits_the_boxes_of_two_sweeps(small_store):
    """A minkunet-tiny Detector fitted to the boxes of the two sweeps of the small store with the fewest
    boxes (capped clouds, 0.4 m voxels, a 64 x 64 grid, so that a step takes a fraction of a second): the
    loss falls many-fold in 30 steps, its regression part too, and the output decodes."""
    from pipeline.store import open_store
    from trainer.config import DataConfig
    from trainer.data import DETECTION, StoreDataset
    from trainer.detection import DetectionCollate, check_store_classes, decode_batch

    store = small_store[0].out
    data = StoreDataset(DataConfig(store=store, split="all", augment=False, max_points=1500), targets=DETECTION)
    check_store_classes(CFG, data.attrs)
    with pytest.raises(ValueError, match="give --classes in the store's order"):
        check_store_classes(DetectionConfig(classes=("car", "pedestrian")), data.attrs)
    counts = open_store(store)["num_boxes"][:][data.sweeps]
    picks = sorted((i for i in range(len(data)) if counts[i] > 0), key=lambda i: counts[i])[:2]
    cfg = DetectionConfig(cell_m=1.6, trunk_channels=32, trunk_layers=2)
    batch, targets = DetectionCollate(cfg, 0.4)([data[i] for i in picks])
    assert targets.num_boxes >= 2, "the small store should hold boxes within the grid"
    torch.manual_seed(0)
    model = Detector("minkunet-tiny", cfg, voxel_size=0.4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start, losses = time.perf_counter(), []
    for _ in range(30):
        loss = detection_loss(model(batch), targets, cfg)
        opt.zero_grad()
        loss["total"].backward()
        opt.step()
        losses.append((loss["total"].item(), float(loss["heatmap"]), float(loss["regression"])))
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        found = decode_batch(model(batch), cfg)
    (first, first_heat, first_reg), (last, last_heat, last_reg) = losses[0], losses[-1]
    print(f"overfit: {targets.num_boxes} boxes, {len(batch.voxel_coords)} voxels, 30 steps in {seconds:.1f} s: "
          f"loss {first:.3f} -> {last:.3f} (heatmap {first_heat:.3f} -> {last_heat:.3f}, "
          f"regression {first_reg:.3f} -> {last_reg:.3f})")
    assert all(np.isfinite(losses).ravel()) and last < first / 5 and last_reg < first_reg / 1.5
    assert len(found) == 2 and all(len(f["score"]) <= cfg.max_detections for f in found)
