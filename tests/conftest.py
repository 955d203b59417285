"""Shared fixtures: small synthetic dataroots, written once per test session."""

from __future__ import annotations

import os

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n N` runs N test processes on the machine's cores: one BLAS/OpenMP thread each (worker
    # and CLI subprocesses inherit it), or their thread pools fight over the cores and every test slows
    # several-fold
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from pipeline.synth.write import SynthConfig, write_dataroot


def built_once(tmp_path_factory, name: str, build):
    """``build(folder)`` for a session fixture. Under pytest-xdist the workers share it: the first to take
    the lock builds it in the run's common temp folder and the others load what it returned, so each
    small world and store is made once per run, not once per worker."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    import pickle

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / "built_once"
    root.mkdir(exist_ok=True)
    value = root / f"{name}.pickle"
    with FileLock(str(root / f"{name}.lock")):
        if not value.exists():
            (root / name).mkdir(exist_ok=True)  # a worker whose build failed may have left it
            value.write_bytes(pickle.dumps(build(root / name)))
    return pickle.loads(value.read_bytes())


@pytest.fixture(scope="session")
def small_dataroot(tmp_path_factory):
    """Two scenes x 3 keyframes at 480x270: one train scene, one val scene, every camera."""
    def build(folder):
        cfg = SynthConfig(out=str(folder / "nuscenes"), scenes=2, samples_per_scene=3, seed=7, width=480,
                          height=270)
        return cfg, write_dataroot(cfg, progress=False)

    return built_once(tmp_path_factory, "synth", build)


@pytest.fixture(scope="session")
def small_store(small_dataroot, tmp_path_factory):
    """The small dataroot extracted with a small random ViT-S/14 input (112x224), in this process (one task
    at a time, one torch thread), in the default layout (patch maps, float16)."""
    from pipeline.extract import run_extract

    def build(folder):
        cfg = store_config(small_dataroot[0], str(folder / "store.zarr"))
        return cfg, run_extract(cfg, progress=False)

    return built_once(tmp_path_factory, "store", build)


@pytest.fixture(scope="session")
def small_points_store(small_dataroot, tmp_path_factory):
    """The same store in the points layout (a float16 feature per point), the layout of every store
    before schema 4."""
    from pipeline.extract import run_extract

    def build(folder):
        cfg = store_config(small_dataroot[0], str(folder / "points.zarr"), layout="points")
        return cfg, run_extract(cfg, progress=False)

    return built_once(tmp_path_factory, "points_store", build)


@pytest.fixture(scope="session")
def small_kitti_dataroot(tmp_path_factory):
    """The same kind of world in the SemanticKITTI layout: two sequences (00 train, 08 val) x 2 scans, two
    cameras at 320x96 (KITTI's aspect)."""
    def build(folder):
        cfg = SynthConfig(out=str(folder / "semantickitti"), scenes=2, samples_per_scene=2, seed=7, width=320,
                          height=96, dataset="semantickitti", workers=0)
        return cfg, write_dataroot(cfg, progress=False)

    return built_once(tmp_path_factory, "synth_kitti", build)


@pytest.fixture(scope="session")
def small_kitti_store(small_kitti_dataroot, tmp_path_factory):
    """The small SemanticKITTI dataroot extracted as ``small_store`` is (a random ViT-S/14 input of 112x224,
    in this process, patch maps in float16): 4 scans of ~120,000 points."""
    from pipeline.extract import run_extract

    def build(folder):
        cfg = store_config(small_kitti_dataroot[0], str(folder / "kitti.zarr"), dataset="semantickitti",
                           version="")
        return cfg, run_extract(cfg, progress=False)

    return built_once(tmp_path_factory, "store_kitti", build)


@pytest.fixture
def one_torch_thread():
    """The test on one torch thread, restored after: with two on a busy 2-core machine a small forward
    pass took anywhere from 0.1 s to 50 s (the detection tests use it)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def store_config(synth_cfg, out, **overrides):
    from pipeline.extract import ExtractConfig
    from pipeline.teacher import TeacherConfig

    kwargs = dict(dataroot=synth_cfg.out, version=synth_cfg.version, out=out,
                  teacher=TeacherConfig(random=True, image_size=(112, 224)), sweeps_per_shard=2, workers=0,
                  tasks_per_worker=1, torch_threads=1)
    kwargs.update(overrides)
    return ExtractConfig(**kwargs)


def edit_table(root, version: str, table: str, edit) -> None:
    """Apply ``edit(records)`` to a dataroot's table ``VERSION/TABLE.json`` in place."""
    import json
    import os

    path = os.path.join(root, version, f"{table}.json")
    with open(path) as f:
        records = json.load(f)
    edit(records)
    with open(path, "w") as f:
        json.dump(records, f)  # NaN is written as NaN, which the devkit's json.load reads back
