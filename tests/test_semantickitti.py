"""The SemanticKITTI format: its published learning map, the layout's reader and writer, the synthetic KITTI
world's geometry (its points project to their rendered pixels through calib.txt), and clear errors on bad
input."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from pipeline.classes import SEMANTICKITTI_EVAL, SEMANTICKITTI_LEARNING_MAP, SEMANTICKITTI_RAW, LabelClasses
from pipeline.errors import ExtractError
from pipeline.projection import project
from pipeline.semantickitti import (
    build_semantickitti_index,
    read_calib,
    read_labels,
    read_points,
    read_poses,
    read_scan,
    read_times,
    split_projection,
    write_calib,
    write_labels,
    write_poses,
    write_scan,
    write_times,
)

# semantic-kitti-api, config/semantic-kitti.yaml: learning_map (raw id -> 0..19) and the names of 1..19
PUBLISHED_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8, 40: 9, 44: 10, 48: 11,
    49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17, 80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6,
    255: 8, 256: 5, 257: 5, 258: 4, 259: 5,
}
PUBLISHED_CLASSES = ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
                     "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk",
                     "terrain", "pole", "traffic-sign")


def test_learning_map_of_every_raw_id_is_the_published_one():
    assert [raw for raw, _ in SEMANTICKITTI_RAW] == sorted(PUBLISHED_LEARNING_MAP)
    for raw, cls in PUBLISHED_LEARNING_MAP.items():
        assert SEMANTICKITTI_LEARNING_MAP[raw] == cls, raw
    assert SEMANTICKITTI_EVAL[1:] == PUBLISHED_CLASSES
    classes = LabelClasses.of("semantickitti")
    assert classes.eval == PUBLISHED_CLASSES and classes.ignore_index == 0 and classes.num_classes == 19
    # the store's labels index the raw classes; its lookup gives the published class of each
    assert classes.lookup.tolist() == [PUBLISHED_LEARNING_MAP[raw] for raw in classes.fine_ids]


def test_layout_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    p = [rng.normal(size=(3, 4)) for _ in range(4)]
    tr = np.eye(4)
    tr[:3] = rng.normal(size=(3, 4))
    write_calib(tmp_path / "calib.txt", p, tr)
    calib = read_calib(tmp_path / "calib.txt")
    for i in range(4):
        np.testing.assert_allclose(calib[f"P{i}"], p[i], rtol=1e-11)
    np.testing.assert_allclose(calib["Tr"], tr, rtol=1e-11, atol=1e-12)
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3] = rng.normal(size=(3, 3, 4))
    write_poses(tmp_path / "poses.txt", poses)
    np.testing.assert_allclose(read_poses(tmp_path / "poses.txt"), poses, rtol=1e-11, atol=1e-12)
    write_times(tmp_path / "times.txt", np.arange(3) * 0.1)
    np.testing.assert_allclose(read_times(tmp_path / "times.txt"), [0.0, 0.1, 0.2])
    points = rng.normal(size=(7, 4)).astype(np.float32)
    write_scan(tmp_path / "a.bin", points)
    assert np.array_equal(read_scan(tmp_path / "a.bin"), points)
    semantic, instance = np.array([0, 10, 40, 252, 81, 99, 71], np.uint16), np.arange(7, dtype=np.uint16) * 1000
    write_labels(tmp_path / "a.label", semantic, instance)
    assert np.fromfile(tmp_path / "a.label", np.uint32)[3] == (3000 << 16) | 252  # the dataset's packing
    got_s, got_i = read_labels(tmp_path / "a.label", 7)
    assert np.array_equal(got_s, semantic) and np.array_equal(got_i, instance)
    xyzr, fine = read_points(str(tmp_path / "a.bin"), str(tmp_path / "a.label"), 7)
    assert xyzr.shape == (7, 5) and (xyzr[:, 4] == -1).all() and np.array_equal(xyzr[:, :4], points)
    classes = LabelClasses.of("semantickitti")
    assert [classes.fine_ids[i] for i in fine] == semantic.tolist()


def test_projection_matrix_splits_into_intrinsics_and_offset():
    k = np.array([[718.856, 0, 607.19], [0, 718.856, 185.22], [0, 0, 1]])
    p = k @ np.hstack([np.eye(3), [[0.06], [0.001], [-0.002]]])
    k2, t = split_projection(p)
    np.testing.assert_allclose(k2, k)
    np.testing.assert_allclose(t[:3, 3], [0.06, 0.001, -0.002], atol=1e-12)


@pytest.fixture(scope="module")
def kitti_world(small_kitti_dataroot):
    return small_kitti_dataroot


def test_synthetic_points_project_to_their_rendered_pixels(kitti_world):
    """Pixels of image_2 and image_3 ray cast in the world, taken into the LiDAR frame of their scan, come
    back to the pixel centres through calib.txt's P2/P3 and Tr (as the index holds them)."""
    from pipeline.synth import raycast, sensors
    from pipeline.synth.kitti import _world, camera, duration_s, ego_from_lidar

    cfg = kitti_world[0]
    index = build_semantickitti_index(cfg.out)
    world = _world(cfg.seed, 1, duration_s(cfg.samples_per_scene), cfg.world_version)
    s = next(i for i, t in enumerate(index.sample_token) if t == "08/000001")
    t = 0.1
    lidar_from_world = np.linalg.inv(sensors.world_from_ego(world, t) @ ego_from_lidar())
    for c, name in enumerate(("image_2", "image_3")):
        world_from_cam = sensors.world_from_ego(world, t) @ sensors.ego_from_camera(camera(name))
        k = index.intrinsics[s, c]
        h, w = index.image_hw[s, c]
        dist, hit, dirs = raycast.cast_image(world.prims, world.ground, world_from_cam, k, w, h)
        rows, cols = np.nonzero(np.isfinite(dist))
        assert len(rows) > 0.5 * h * w
        pts = world_from_cam[:3, 3] + dist[rows, cols, None] * dirs[rows, cols]
        lidar = pts @ lidar_from_world[:3, :3].T + lidar_from_world[:3, 3]
        uv, kept, _ = project(lidar, index.cam_from_lidar[s, c], k, (h, w), min_depth=0.1)
        expect = np.stack([cols + 0.5, rows + 0.5], 1)[kept]
        assert len(kept) > 0.99 * len(rows)
        assert np.abs(uv - expect).max() < 0.01


def test_index_reads_the_written_layout(kitti_world):
    cfg = kitti_world[0]
    index = build_semantickitti_index(cfg.out)
    assert [sc["name"] for sc in index.scenes] == ["00", "08"]
    assert [sc["split"] for sc in index.scenes] == ["train", "val"]
    assert len(index) == 2 * cfg.samples_per_scene and not any(index.failure)
    assert index.cameras == ("image_2", "image_3") and (index.image_hw == (cfg.height, cfg.width)).all()
    assert index.timestamp[1] - index.timestamp[0] == 100_000
    points, labels = read_points(index.lidar_path[0], index.label_path[0], index.num_points[0])
    classes = LabelClasses.of("semantickitti")
    present = {classes.eval[c - 1] for c in np.unique(classes.lookup[labels]) if c}
    assert {"car", "road", "sidewalk", "building", "vegetation", "terrain"} <= present
    # the shape rules give the classes nuScenes has no name for: trunks, poles, signs, fences, lane markings
    per_class = kitti_world[1]["points_per_eval_class"]
    assert all(per_class[name] > 0 for name in ("trunk", "pole", "traffic-sign", "fence", "parking", "person"))
    semantic, instance = read_labels(index.label_path[0], index.num_points[0])
    assert (semantic == 60).any() and (instance[semantic == 10] > 0).all() and (instance[semantic == 40] == 0).all()
    val = build_semantickitti_index(cfg.out, "val")
    assert [sc["name"] for sc in val.scenes] == ["08"]


def _copy(kitti_world, tmp_path):
    root = tmp_path / "kitti"
    shutil.copytree(kitti_world[0].out, root)
    return root


def test_bad_input_fails_its_scans_with_one_clear_line(kitti_world, tmp_path):
    root = _copy(kitti_world, tmp_path)
    seq = root / "sequences" / "08"
    os.remove(seq / "calib.txt")
    (root / "sequences" / "00" / "image_3" / "000001.png").unlink()
    index = build_semantickitti_index(str(root))
    by_token = dict(zip(index.sample_token, index.failure))
    assert by_token["08/000000"].startswith(f"calibration missing: {seq / 'calib.txt'}")
    assert "camera image missing" in by_token["00/000001"] and "image_3/000001.png" in by_token["00/000001"]
    assert by_token["00/000000"] == ""
    label = root / "sequences" / "00" / "labels" / "000000.label"
    label.write_bytes(label.read_bytes()[:-4])
    with pytest.raises(ExtractError, match=f"label file {label} holds .* bytes, expected"):
        read_points(index.lidar_path[0], str(label), index.num_points[0])
    with pytest.raises(ExtractError, match="lacks P3, Tr"):
        (tmp_path / "c.txt").write_text("P0: " + " ".join(["1"] * 12) + "\nP1: " + " ".join(["1"] * 12)
                                        + "\nP2: " + " ".join(["1"] * 12) + "\n")
        read_calib(tmp_path / "c.txt")
    write_labels(tmp_path / "x.label", np.array([10, 12], np.uint16), np.zeros(2, np.uint16))
    write_scan(tmp_path / "x.bin", np.zeros((2, 4), np.float32))
    with pytest.raises(ExtractError, match="semantic ids 12 that SemanticKITTI does not define"):
        read_points(str(tmp_path / "x.bin"), str(tmp_path / "x.label"), 2)
    with pytest.raises(FileNotFoundError, match="no sequences/ folder"):
        build_semantickitti_index(str(tmp_path))


# ---------------------------------------------------------------------------------------------------
# end to end: the commands a user runs


def _cli(app, args):
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.slow
def test_synth_extract_pretrain_finetune_on_semantickitti(small_store, tmp_path):
    """`cdpipe synth --dataset semantickitti` -> `cdpipe extract --dataset semantickitti` -> `cdtrain pretrain`
    -> `cdtrain finetune`, each a few steps: the segmenter predicts the 19 SemanticKITTI classes; and a
    backbone pretrained on a nuScenes-format store fine-tunes on the SemanticKITTI store."""
    import json

    from pipeline.cli import app as cdpipe
    from trainer.cli import app as cdtrain

    world, store = tmp_path / "kitti", tmp_path / "kitti.zarr"
    _cli(cdpipe, ["synth", "--dataset", "semantickitti", "--out", world, "--scenes", 2, "--samples-per-scene", 2,
                  "--seed", 11, "--camera-size", "224x64", "--workers", 0, "--no-preview"])
    assert sorted(os.listdir(world / "sequences")) == ["00", "08"]
    _cli(cdpipe, ["extract", "--dataset", "semantickitti", "--dataroot", world, "--out", store, "--random-teacher",
                  "--teacher-size", "112x56", "--workers", 0, "--tasks-per-worker", 1, "--torch-threads", 1])
    info = json.loads(_cli(cdpipe, ["info", "--store", store, "--json"]).output)
    assert info["sweeps"] == 4 and info["dataset"]["name"] == "semantickitti"
    _cli(cdpipe, ["verify", "--store", store])
    _cli(cdpipe, ["preview", "--store", store, "--sweep", 2, "--out", tmp_path / "preview.png"])
    common = ["--model", "minkunet-tiny", "--steps", 2, "--warmup", 1, "--max-points", 4000, "--voxel-size", 0.3,
              "--device", "cpu"]
    _cli(cdtrain, ["pretrain", "--store", store, "--out", tmp_path / "pre", "--head-hidden", 32, *common])
    metrics = [json.loads(line) for line in (tmp_path / "pre" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(np.isfinite(row["distill"]) and np.isfinite(row["occ"]) for row in metrics)
    for name, pretrained in (("kitti", tmp_path / "pre" / "checkpoint.pt"), ("nuscenes", None)):
        if pretrained is None:  # a backbone pretrained on the nuScenes-format store
            _cli(cdtrain, ["pretrain", "--store", small_store[0].out, "--out", tmp_path / "pre_nusc", "--head-hidden",
                           32, *common])
            pretrained = tmp_path / "pre_nusc" / "checkpoint.pt"
        _cli(cdtrain, ["finetune", "--store", store, "--out", tmp_path / f"ft_{name}", "--pretrained", pretrained,
                       "--labels-percent", 100, *common])
        result = json.loads((tmp_path / f"ft_{name}" / "result.json").read_text())
        assert len(result["confusion"]) == 20 and set(result["iou"]) == set(SEMANTICKITTI_EVAL[1:])
        assert result["sweeps"] == 2 and np.isfinite(result["miou"]) and "road" in result["classes"]
        ev = json.loads(_cli(cdtrain, ["evaluate", "--store", store, "--segmenter",
                                       tmp_path / f"ft_{name}" / "segmenter.pt", "--device", "cpu", "--json"]).output)
        assert ev["miou"] == result["miou"]


def test_a_segmenter_of_other_classes_is_refused_in_one_line(small_kitti_store, tmp_path):
    """A segmenter fine-tuned on nuScenes' 16 classes cannot score a SemanticKITTI store: one line says why."""
    import torch
    from typer.testing import CliRunner

    from trainer.checkpoint import new_segmenter, segmenter_record
    from trainer.cli import app as cdtrain

    model, init = new_segmenter("minkunet-tiny", None, 0)
    torch.save(segmenter_record(model, "minkunet-tiny", 0.3, init=init), tmp_path / "segmenter.pt")
    res = CliRunner().invoke(cdtrain, ["evaluate", "--store", small_kitti_store[0].out, "--segmenter",
                                       str(tmp_path / "segmenter.pt"), "--device", "cpu"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "not the 19 semantickitti classes" in res.output and len(res.output.strip().splitlines()) == 1


def test_extract_records_the_scans_bad_input_fails_and_goes_on(small_kitti_dataroot, tmp_path):
    """`cdpipe extract --dataset semantickitti` on a dataroot whose val sequence lost its calib.txt and one of
    whose train labels is cut short: those scans fail, each with one line naming the file, the others are
    extracted, and the job exits 1."""
    from typer.testing import CliRunner

    from pipeline.cli import app as cdpipe
    from pipeline.store import open_store

    root = _copy(small_kitti_dataroot, tmp_path)
    os.remove(root / "sequences" / "08" / "calib.txt")
    label = root / "sequences" / "00" / "labels" / "000001.label"
    label.write_bytes(label.read_bytes()[:-8])
    out = tmp_path / "s.zarr"
    res = CliRunner().invoke(cdpipe, ["extract", "--dataset", "semantickitti", "--dataroot", str(root), "--out",
                                      str(out), "--random-teacher", "--teacher-size", "112x56", "--workers", "0",
                                      "--tasks-per-worker", "1", "--torch-threads", "1", "--json"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    g = open_store(str(out))
    assert g["done"][:].tolist() == [1, 0, 0, 0]
    failure = g["failure"][:]
    assert f"calibration missing: {root / 'sequences' / '08' / 'calib.txt'}" in failure[2]
    assert f"label file {label} holds" in failure[1] and "expected" in failure[1]
    res = CliRunner().invoke(cdpipe, ["extract", "--dataset", "semantickitti", "--dataroot", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "t.zarr"), "--random-teacher"])
    assert res.exit_code == 2 and "no sequences/ folder" in res.output and len(res.output.strip().splitlines()) == 1


def test_the_stand_in_teachers_own_world_is_refused_in_the_kitti_layout(small_kitti_dataroot, tmp_path):
    """A stand-in teacher trained on world seed 7 may not be extracted on the KITTI layout of that world (its
    synth.json names the seed); another seed passes."""
    import json

    import torch
    from safetensors.torch import save_file

    from pipeline.extract import check_teacher_never_saw
    from pipeline.teacher import META_KEY, TeacherConfig

    cfg = small_kitti_dataroot[0]
    weights = str(tmp_path / "teacher.safetensors")
    for seed, refused in ((cfg.seed, True), (cfg.seed + 1, False)):
        meta = {"stand_in": {"recipe": "semantic", "world": {"seed": seed, "scenes": 2}}}
        save_file({"x": torch.zeros(1)}, weights, metadata={META_KEY: json.dumps(meta)})
        if refused:
            with pytest.raises(ExtractError, match=f"synthetic world seed {seed}, and .* is that world"):
                check_teacher_never_saw(TeacherConfig(weights=weights), cfg.out, "", "semantickitti")
        else:
            check_teacher_never_saw(TeacherConfig(weights=weights), cfg.out, "", "semantickitti")


def test_ring_corruptions_are_refused_on_a_store_without_rings(small_kitti_store):
    from trainer.config import DataConfig
    from trainer.data import SEGMENTATION, StoreDataset

    store = small_kitti_store[0].out
    with pytest.raises(ValueError, match="drops whole rings, and store .* keeps no ring per point"):
        StoreDataset(DataConfig(store=store, split="val", corruption="sparser_sensor:2"), targets=SEGMENTATION)
    ds = StoreDataset(DataConfig(store=store, split="val", corruption="fog:0.02", augment=False), targets=SEGMENTATION)
    item = ds[0]
    assert 0 < len(item.xyz) < small_kitti_store[1]["points"] and item.intensity.max() <= 255.0
    assert item.intensity.max() > 1.0  # reflectance 0..1 read on the 0..255 scale of the student's input


def test_info_names_the_lidar_and_the_class_set_of_each_dataset(small_kitti_store, small_store):
    """`cdpipe info` says which LiDAR and which class set a store records (attributes `sensors`, `classes`),
    in words and, as the store holds them, in its JSON."""
    import json

    from typer.testing import CliRunner

    from pipeline.cli import app as cdpipe
    from pipeline.store import open_store

    lines = {"semantickitti": ("lidar      velodyne, 64 beams, intensity 0..1, no ring per point",
                               "classes    semantickitti: 34 raw -> 19 evaluation classes (ignore 0)"),
             "nuscenes": ("lidar      LIDAR_TOP, 32 beams, intensity 0..255, ring per point",
                          "classes    nuscenes: 32 lidarseg -> 16 evaluation classes (ignore 0)")}
    for store in (small_kitti_store[0].out, small_store[0].out):
        attrs = dict(open_store(store).attrs)
        res = CliRunner().invoke(cdpipe, ["info", "--store", store])
        assert res.exit_code == 0, res.output
        for line in lines[attrs["dataset"]["name"]]:
            assert f"\n  {line}\n" in res.output, res.output
        info = json.loads(CliRunner().invoke(cdpipe, ["info", "--store", store, "--json"]).output)
        assert info["sensors"] == attrs["sensors"] and info["classes"] == attrs["classes"]


def test_a_ring_corruption_on_a_store_without_rings_is_refused_before_any_evaluation(small_kitti_store, small_store,
                                                                                      tmp_path, monkeypatch):
    """`cdtrain evaluate --corruption beams_missing:0.25` (or sparser_sensor) on a store whose points keep no
    ring stops in one line, exit 2, before the segmenter is read or any sweep scored; a store with rings
    passes the same check."""
    from typer.testing import CliRunner

    import trainer.checkpoint
    import trainer.evaluate
    from pipeline.store import open_store
    from trainer.cli import app as cdtrain
    from trainer.corruptions import parse
    from trainer.data import check_corruption

    def never(*args, **kwargs):
        raise AssertionError("evaluated or loaded before the corruption was checked")

    monkeypatch.setattr(trainer.evaluate, "evaluate_model", never)
    monkeypatch.setattr(trainer.checkpoint, "load_segmenter", never)
    store = small_kitti_store[0].out
    for corruption in ("beams_missing:0.25", "sparser_sensor:2"):
        res = CliRunner().invoke(cdtrain, ["evaluate", "--store", store, "--segmenter", str(tmp_path / "s.pt"),
                                           "--corruption", "fog:0.02", "--corruption", corruption, "--device", "cpu"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
        assert f"corruption {corruption}: it drops whole rings, and store {store} keeps no ring" in res.output
    check_corruption(parse("beams_missing:0.25"), dict(open_store(small_store[0].out).attrs), small_store[0].out)


def test_the_preview_labels_the_lidar_axes_of_the_stores_dataset(small_kitti_store, small_store):
    """The bird's-eye panels name where the LiDAR's axes point: x forward on a SemanticKITTI store, y forward
    on a nuScenes one."""
    from pipeline.preview import bev_axis_labels, preview_figure, sweep_preview

    assert bev_axis_labels("semantickitti") == ("LiDAR x (m; forward)", "LiDAR y (m; left)")
    assert bev_axis_labels("nuscenes") == ("LiDAR x (m; right)", "LiDAR y (m; forward)")
    assert bev_axis_labels("other") == ("LiDAR x (m)", "LiDAR y (m)")
    for store, name in ((small_kitti_store[0].out, "semantickitti"), (small_store[0].out, "nuscenes")):
        fig = preview_figure(sweep_preview(store, 0))
        xlabel, ylabel = bev_axis_labels(name)
        assert ylabel in [ax.get_ylabel() for ax in fig.axes]
        assert [ax.get_xlabel() for ax in fig.axes].count(xlabel) == 2  # features and labels from above
        assert not any("nuScenes" in ax.get_ylabel() for ax in fig.axes)


def test_a_split_without_sequences_is_one_line_naming_dataroot_and_split(small_kitti_dataroot, tmp_path):
    """`cdpipe extract --dataset semantickitti --split test` on a dataroot without test sequences: one line
    naming the dataroot, the split and the sequences it holds, exit 2, no store written."""
    from typer.testing import CliRunner

    from pipeline.cli import app as cdpipe
    from pipeline.semantickitti import split_sequences

    root = small_kitti_dataroot[0].out
    out = tmp_path / "t.zarr"
    res = CliRunner().invoke(cdpipe, ["extract", "--dataset", "semantickitti", "--dataroot", root, "--split", "test",
                                      "--out", str(out), "--random-teacher", "--workers", "0"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.strip() == (f"error: --dataroot {root} --split test: no sequence of split test (11-21) in "
                                  f"{os.path.realpath(root)}/sequences; it holds 00 (train), 08 (val)")
    assert not out.exists()
    assert split_sequences(root, "val") == ["08"]
    os.makedirs(tmp_path / "empty" / "sequences")
    with pytest.raises(ExtractError, match="--split all: no sequence folder NN in"):
        build_semantickitti_index(str(tmp_path / "empty"))


def test_the_synth_summary_of_a_kitti_world_says_it_has_no_boxes(small_kitti_dataroot, small_dataroot, capsys):
    from pipeline.cli import print_summary

    print_summary(small_kitti_dataroot[1])
    assert "  no boxes (SemanticKITTI has none)\n" in capsys.readouterr().out
    print_summary(small_dataroot[1])
    assert f"  annotations {small_dataroot[1]['annotations']}\n" in capsys.readouterr().out


def test_a_split_mixing_labelled_and_unlabelled_sequences_is_refused(small_kitti_dataroot, tmp_path):
    """A real dataroot's test sequences (11-21) have no labels/: `--split all` would make a store without
    labels and drop those of 00-10 without a word. It is refused in one line naming both groups; each split
    alone extracts."""
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app as cdpipe

    root = tmp_path / "kitti"
    shutil.copytree(small_kitti_dataroot[0].out, root)
    shutil.copytree(root / "sequences" / "00", root / "sequences" / "11")
    shutil.rmtree(root / "sequences" / "11" / "labels")
    with pytest.raises(ExtractError, match=r"sequences 00, 08 have labels/ but 11 have none"):
        build_semantickitti_index(str(root))
    res = CliRunner().invoke(cdpipe, ["extract", "--dataset", "semantickitti", "--dataroot", str(root),
                                      "--out", str(tmp_path / "s.zarr"), "--random-teacher", "--workers", "0"])
    assert res.exit_code != 0 and "Traceback" not in res.output and "--split train, val or test" in res.output
    assert build_semantickitti_index(str(root), "test").label_path is None
    assert build_semantickitti_index(str(root), "train").label_path is not None
