"""cdpipe extract: projection equals the devkit's, stored features equal an independent reference,
Dask worker count does not change the store, and bad input is named and loses nothing."""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import pytest
import timm
import torch
import zarr
from nuscenes.nuscenes import NuScenesExplorer
from PIL import Image

from pipeline.extract import run_extract
from pipeline.frames import CAMERAS, build_nuscenes_index, load_nuscenes
from pipeline.projection import assign_views, project
from pipeline.store import StoreError, open_store, read_sweep
from pipeline.verify import store_info, verify_store
from tests.conftest import store_config


def test_projection_equals_devkit(small_dataroot, monkeypatch):
    """Every camera of every sample: our kept points and pixels equal map_pointcloud_to_image's.

    The devkit transforms the float32 points of the file in place, in float32, which alone moves
    pixels by up to ~1.5e-3 px at these global coordinates; we hand it float64 points so that the
    comparison measures the chain, not the devkit's rounding.
    """
    from nuscenes.utils.data_classes import LidarPointCloud

    original = LidarPointCloud.from_file.__func__

    def from_file_float64(cls, file_name):
        pc = original(cls, file_name)
        pc.points = pc.points.astype(np.float64)
        return pc

    monkeypatch.setattr(LidarPointCloud, "from_file", classmethod(from_file_float64))
    cfg, _ = small_dataroot
    nusc = load_nuscenes(cfg.out, cfg.version)
    explorer = NuScenesExplorer(nusc)
    index = build_nuscenes_index(cfg.out, cfg.version)
    token_row = {tok: i for i, tok in enumerate(index.sample_token)}
    compared = 0
    for sample in nusc.sample:
        i = token_row[sample["token"]]
        points = np.fromfile(index.lidar_path[i], dtype=np.float32).reshape(-1, 5)
        for c, ch in enumerate(CAMERAS):
            dk_points, _, im = explorer.map_pointcloud_to_image(sample["data"]["LIDAR_TOP"], sample["data"][ch])
            uv, idx, depth = project(points, index.cam_from_lidar[i, c], index.intrinsics[i, c],
                                     tuple(index.image_hw[i, c]), min_depth=1.0)
            # the devkit's own border rule: 1 < u < W - 1, 1 < v < H - 1
            w, h = im.size
            keep = (uv[:, 0] > 1) & (uv[:, 0] < w - 1) & (uv[:, 1] > 1) & (uv[:, 1] < h - 1)
            assert keep.sum() == dk_points.shape[1], ch
            np.testing.assert_allclose(uv[keep], dk_points[:2].T, rtol=0, atol=1e-3)
            compared += int(keep.sum())
    assert compared > 50_000


def test_view_choice_follows_the_rule_camera_by_camera(small_dataroot):
    """assign_views (all cameras in one product) equals projecting camera by camera with ``project``
    (the function compared with the devkit above) and keeping the farthest-from-border view, ties to
    the lower camera index."""
    cfg, _ = small_dataroot
    index = build_nuscenes_index(cfg.out, cfg.version)
    shared = 0
    for i in range(len(index)):
        points = np.fromfile(index.lidar_path[i], dtype=np.float32).reshape(-1, 5)
        best = np.full(len(points), -np.inf)
        camera, uv = np.full(len(points), -1), np.full((len(points), 2), -1.0)
        n_views = np.zeros(len(points), int)
        for c in range(len(index.cameras)):
            h, w = index.image_hw[i, c]
            pix, idx, _ = project(points, index.cam_from_lidar[i, c], index.intrinsics[i, c], (h, w))
            n_views[idx] += 1
            margin = np.minimum(np.minimum(pix[:, 0], w - pix[:, 0]), np.minimum(pix[:, 1], h - pix[:, 1]))
            better = margin > best[idx]
            camera[idx[better]], uv[idx[better]], best[idx[better]] = c, pix[better], margin[better]
        got_camera, got_uv = assign_views(points, index.cam_from_lidar[i], index.intrinsics[i], index.image_hw[i])
        np.testing.assert_array_equal(got_camera, camera)
        np.testing.assert_array_equal(got_uv, uv)
        shared += int((n_views > 1).sum())
    assert shared > 100  # the rule was exercised on points that two cameras see


def reference_features(store: str, s: int, image_size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sweep ``s``'s stored features of the points a camera sees, and the same recomputed from the store's
    attributes alone (plus the dataset's images, found with the devkit from the sample token): the
    recorded ``timm.create_model`` call and seeding, PIL bicubic resize to ``image_size`` (default: the
    recorded one), the recorded mean/std and layer, and grid_sample at each point's pixel in its camera's
    recorded original size."""
    g = open_store(store)
    t, d = g.attrs["teacher"], g.attrs["dataset"]
    made = t["create_model"]
    h, w = image_size or t["image_size"]
    kwargs = {**made["kwargs"], "img_size": (h, w)} if image_size else made["kwargs"]
    if made["seeding"]:  # the recorded seeding of a random teacher
        assert made["seeding"].startswith("torch.manual_seed(random_init_seed)")
        torch.manual_seed(t["random_init_seed"])
    model = timm.create_model(made["model_name"], pretrained=made["pretrained"],
                              pretrained_cfg_overlay=made["pretrained_cfg_overlay"], **kwargs).eval()
    if made.get("set_input_size") and not image_size:  # created at the weights' own size, then moved
        model.set_input_size(img_size=tuple(made["set_input_size"]))
    mean, std = torch.tensor(t["mean"])[:, None, None], torch.tensor(t["std"])[:, None, None]
    nusc = load_nuscenes(d["dataroot"], d["version"])
    sample = nusc.get("sample", str(g["sample_token"][s]))
    n = int(g["num_points"][s])
    camera, pixel = g["camera"][s, :n], g["pixel"][s, :n]
    feats = read_sweep(g, s, ("features",))["features"].astype(np.float32)
    hw0 = g["camera_hw"][s]
    assert (camera >= 0).mean() > 0.5
    assert not feats[camera < 0].any()  # points no camera sees have no feature
    stored, ref = [], []
    for c, channel in enumerate(g.attrs["cameras"]):
        path = os.path.join(d["dataroot"], nusc.get("sample_data", sample["data"][channel])["filename"])
        im = Image.open(path).convert("RGB")
        assert im.size == (hw0[c, 1], hw0[c, 0])
        x = torch.from_numpy(np.array(im.resize((w, h), Image.BICUBIC))).permute(2, 0, 1).float() / 255
        x = ((x - mean) / std)[None]
        with torch.inference_mode():
            fmap = model.forward_intermediates(x, indices=1, norm=t["layer"] == "last_norm", output_fmt="NCHW",
                                               intermediates_only=True)[-1]
        sel = np.nonzero(camera == c)[0]
        h0, w0 = hw0[c]
        grid = torch.tensor(np.c_[2 * pixel[sel, 0] / w0 - 1, 2 * pixel[sel, 1] / h0 - 1], dtype=torch.float32)
        ref.append(torch.nn.functional.grid_sample(fmap, grid[None, None], align_corners=False,
                                                   padding_mode="border")[0, :, 0].T.numpy())
        stored.append(feats[sel])
    return np.concatenate(stored), np.concatenate(ref)


def _assert_rebuilt(store: str, s: int) -> None:
    stored, ref = reference_features(store, s)
    cos = (stored * ref).sum(1) / (np.linalg.norm(stored, axis=1) * np.linalg.norm(ref, axis=1))
    assert len(cos) > 10_000 and cos.min() >= 0.9999, cos.min()
    np.testing.assert_allclose(stored, ref, rtol=2e-3, atol=2e-3)  # float16 storage


def test_teacher_rebuilt_from_the_store_alone_reproduces_its_features(small_store):
    """The hard way: a reader that knows only the store's attributes (and can open the dataset's images)
    rebuilds the teacher and its input and gets every stored feature back, cosine >= 0.9999."""
    _assert_rebuilt(small_store[0].out, 3)


@pytest.mark.slow
def test_stand_in_teacher_rebuilt_from_the_store_alone(small_dataroot, tmp_path):
    """The same for a teacher loaded from a weights file (the semantic stand-in), at another input size
    than it was trained at (140 x 448 against 224 x 448): the record names the file, timm's loading call
    at the training size and the move to the store's size, not just 'pretrained'."""
    from pipeline.teacher import TeacherConfig

    weights = os.path.join(os.path.dirname(__file__), "..", "tools", "teachers", "semantic.safetensors")
    cfg = store_config(small_dataroot[0], str(tmp_path / "s.zarr"), split="val",
                       teacher=TeacherConfig(weights=weights, image_size=(140, 448)))
    run_extract(cfg, progress=False)
    t = open_store(cfg.out).attrs["teacher"]
    made = t["create_model"]
    assert made["pretrained"] and made["pretrained_cfg_overlay"] == {"file": os.path.abspath(weights)}
    assert made["kwargs"]["img_size"] == [224, 448] and made["set_input_size"] == [140, 448] == t["image_size"]
    _assert_rebuilt(cfg.out, 1)


def test_store_contents(small_store):
    cfg, summary = small_store
    g = open_store(cfg.out)
    a = g.attrs
    assert a["teacher"]["weights"] == "random" and summary["random_teacher"]
    assert g["done"][:].all() and summary["sweeps"] == a["num_sweeps"] == 6
    for s in range(6):
        n = int(g["num_points"][s])
        raw = np.fromfile(build_nuscenes_index(cfg.dataroot, cfg.version).lidar_path[s], np.float32).reshape(-1, 5)
        np.testing.assert_array_equal(g["points"][s, :n], raw)
        valid, camera = g["valid"][s, :n], g["camera"][s, :n]
        np.testing.assert_array_equal(valid, camera >= 0)
        q = int(g["num_queries"][s])
        labels = g["occ_labels"][s, :q]
        assert labels.sum() == (labels == 0).sum() > 1000  # balanced occupied / free
    scenes = a["scenes"]
    assert [sc["split"] for sc in scenes] == ["train", "val"]
    assert sum(sc["num_sweeps"] for sc in scenes) == 6


@pytest.mark.slow
def test_two_dask_workers_equal_one(small_store, small_dataroot, tmp_path):
    """2 worker processes running 2 tasks each in threads that share their teacher (the 3 tasks of the
    small world all at once) write the store that one worker in the test's own process, running 1 task at
    a time, wrote."""
    cfg1, _ = small_store
    assert (cfg1.workers, cfg1.tasks) == (0, 1)
    cfg2 = store_config(small_dataroot[0], str(tmp_path / "two.zarr"), workers=2, tasks_per_worker=2)
    run_extract(cfg2, progress=False)
    g1, g2 = zarr.open_group(cfg1.out, mode="r"), zarr.open_group(cfg2.out, mode="r")
    assert sorted(g1.array_keys()) == sorted(g2.array_keys())
    for name in g1.array_keys():
        np.testing.assert_array_equal(g1[name][:], g2[name][:], err_msg=name)
    skip = {"provenance", "dataset"}
    assert {k: v for k, v in g1.attrs.items() if k not in skip} == {k: v for k, v in g2.attrs.items() if k not in skip}


@pytest.mark.slow
def test_failed_sweep_is_recorded_the_others_complete_and_a_rerun_finishes_it(small_store, small_dataroot, tmp_path):
    """A corrupt image fails only its sweep: the job finishes the other five and reports the failure with
    the file; the store records it (info and verify list it); after the image is fixed, the rerun
    extracts only that sweep's task and the store equals one written in one go."""
    synth_cfg, _ = small_dataroot
    root = tmp_path / "nuscenes"
    shutil.copytree(synth_cfg.out, root)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    bad = index.image_path[4][2]  # sweep 4 is in the last shard group (sweeps 4-5)
    good_bytes = open(bad, "rb").read()
    open(bad, "wb").write(good_bytes[: len(good_bytes) // 3])
    cfg = store_config(synth_cfg, str(tmp_path / "store.zarr"), dataroot=str(root))
    summary = run_extract(cfg, progress=False)
    assert list(summary["job"]["failures"]) == [4] and bad in summary["job"]["failures"][4]
    done = zarr.open_group(cfg.out, mode="r")["done"][:]
    np.testing.assert_array_equal(done, [1, 1, 1, 1, 0, 1])
    info = store_info(cfg.out)
    assert [(f["sweep"], f["sample_token"]) for f in info["failures"]] == [(4, index.sample_token[4])]
    assert [(p["kind"], p["sweep"]) for p in verify_store(cfg.out, progress=False)["problems"]] == [("failed", 4)]
    open(bad, "wb").write(good_bytes)
    summary = run_extract(cfg, progress=False)
    assert summary["resumed_from"] == 4 and summary["sweeps"] == 6 and not summary["job"]["failures"]
    ref = zarr.open_group(small_store[0].out, mode="r")
    got = zarr.open_group(cfg.out, mode="r")
    assert sorted(ref.array_keys()) == sorted(got.array_keys())
    for name in ref.array_keys():
        np.testing.assert_array_equal(ref[name][:], got[name][:], err_msg=name)


def test_store_of_another_schema_version_is_refused(small_store, tmp_path):
    cfg, _ = small_store
    old = tmp_path / "old.zarr"
    shutil.copytree(cfg.out, old)
    g = zarr.open_group(str(old), mode="r+")
    g.attrs["schema_version"] = 0
    with pytest.raises(StoreError, match="schema_version 0"):
        open_store(str(old))
    with pytest.raises(StoreError, match="schema_version 0"):
        store_info(str(old))
    with pytest.raises(StoreError, match="schema_version 0"):  # nor resumed into
        run_extract(type(cfg)(**{**cfg.__dict__, "out": str(old)}), progress=False)


def test_resume_with_other_settings_is_refused(small_store, tmp_path):
    cfg, _ = small_store
    copy = tmp_path / "copy.zarr"
    shutil.copytree(cfg.out, copy)
    other = type(cfg)(**{**cfg.__dict__, "out": str(copy), "min_depth": 2.0})
    with pytest.raises(StoreError, match="projection"):
        run_extract(other, progress=False)
    # another layout: the message says which options resume the store as it is
    other = type(cfg)(**{**cfg.__dict__, "out": str(copy), "layout": "points", "feature_encoding": "int8"})
    with pytest.raises(StoreError, match="rerun with --layout patches --feature-encoding float16 to resume it"):
        run_extract(other, progress=False)


def test_refuses_to_write_over_a_directory_that_is_not_a_store(small_dataroot, tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(StoreError, match="not a Zarr store"):
            run_extract(store_config(small_dataroot[0], str(precious), overwrite=overwrite), progress=False)
    assert (precious / "chapter1.tex").read_text() == "keep me"


def test_extract_config_names_the_option_it_refuses(small_dataroot, tmp_path):
    """--workers 0 (this process) and --device cpu, cuda or cuda:N are accepted; anything else is refused in
    one line that names the option."""
    out = str(tmp_path / "s.zarr")
    for kwargs, flag in (({"workers": -1}, "--workers -1"), ({"sweeps_per_shard": 0}, "--sweeps-per-shard"),
                         ({"device": "gpu"}, "--device 'gpu'"), ({"device": "cuda:one"}, "--device 'cuda:one'")):
        with pytest.raises(ValueError, match=flag):
            store_config(small_dataroot[0], out, **kwargs)
    for device in (None, "cpu", "cuda", "cuda:1"):
        assert store_config(small_dataroot[0], out, workers=0, device=device).device == device


def test_extract_in_this_process_says_what_it_does_and_runs_on_the_device_asked(small_dataroot, tmp_path, capsys):
    """In this process (--workers 0) on --device cpu: one line on stderr per phase before the progress bar
    (workers and teacher, tables, store), the teacher record says cpu; a rerun says what it resumes; a GPU
    that is not there is named."""
    cfg = store_config(small_dataroot[0], str(tmp_path / "s.zarr"), split="val", device="cpu")
    run_extract(cfg, progress=True)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("extract: ")]
    assert [line.split()[1] for line in said] == ["reading", "starting", "tables", "teacher", "created"], said
    assert "a Dask worker in this process" in said[1] and "3 sweeps in 1 scene" in said[2] and "on cpu" in said[3]
    assert open_store(cfg.out).attrs["teacher"]["device"] == "cpu"
    run_extract(cfg, progress=True)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("extract: ")]
    assert said[-1].endswith("3 of 3 sweeps already done"), said
    with pytest.raises(Exception, match="--device cuda:99: this worker sees"):
        run_extract(dataclasses.replace(cfg, out=str(tmp_path / "gpu.zarr"), device="cuda:99"), progress=False)


@pytest.mark.slow
def test_killed_workers_lose_nothing(small_store, small_dataroot, tmp_path):
    """Both Dask workers are killed (SIGKILL) mid-job on a scheduler that allows no retries: the job
    records the sweeps of the killed tasks as failed (the worker deaths counted), finishes the others on
    the restarted workers, the sweeps already written stay, and the rerun finishes a store equal to one
    written in one go."""
    import logging
    import os
    import signal
    import threading
    import time

    import dask
    from dask.distributed import LocalCluster

    synth_cfg, _ = small_dataroot
    cfg = store_config(synth_cfg, str(tmp_path / "store.zarr"), sweeps_per_shard=1)
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                               silence_logs=logging.CRITICAL)
    killed = []

    def kill_after_first_sweep():
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if zarr.open_group(cfg.out, mode="r")["done"][:].any():
                    break
            except Exception:  # the store is not created yet
                pass
            time.sleep(0.02)
        for nanny in list(cluster.workers.values()):
            os.kill(nanny.process.pid, signal.SIGKILL)
            killed.append(nanny.process.pid)

    try:
        killer = threading.Thread(target=kill_after_first_sweep)
        killer.start()
        summary = run_extract(dataclasses.replace(cfg, scheduler=cluster.scheduler_address), progress=False)
        killer.join()
    finally:
        cluster.close()
    assert len(killed) == 2
    job = summary["job"]
    assert job["failures"] and all("died repeatedly" in why for why in job["failures"].values())
    assert job["retries"] >= len(job["failures"])
    done = zarr.open_group(cfg.out, mode="r")["done"][:]
    assert not done[list(job["failures"])].any() and done.sum() == 6 - len(job["failures"])
    summary = run_extract(cfg, progress=False)  # a fresh LocalCluster
    assert summary["resumed_from"] == done.sum() and summary["sweeps"] == 6
    ref = zarr.open_group(small_store[0].out, mode="r")
    got = zarr.open_group(cfg.out, mode="r")
    assert sorted(ref.array_keys()) == sorted(got.array_keys())
    for name in ref.array_keys():
        np.testing.assert_array_equal(ref[name][:], got[name][:], err_msg=name)
