"""Shared fixtures: small synthetic dataroots, written once per test session."""

from __future__ import annotations

import pytest

from pipeline.synth.write import SynthConfig, write_dataroot


@pytest.fixture(scope="session")
def small_dataroot(tmp_path_factory):
    """Two scenes x 3 keyframes at 480x270: one train scene, one val scene, every camera."""
    cfg = SynthConfig(out=str(tmp_path_factory.mktemp("synth") / "nuscenes"), scenes=2, samples_per_scene=3,
                      seed=7, width=480, height=270)
    summary = write_dataroot(cfg, progress=False)
    return cfg, summary


@pytest.fixture(scope="session")
def small_store(small_dataroot, tmp_path_factory):
    """The small dataroot extracted with a small random ViT-S/14 input (112x224), in this process (one task
    at a time, one torch thread), in the default layout (patch maps, float16)."""
    from pipeline.extract import run_extract

    synth_cfg, _ = small_dataroot
    cfg = store_config(synth_cfg, str(tmp_path_factory.mktemp("store") / "store.zarr"))
    summary = run_extract(cfg, progress=False)
    return cfg, summary


@pytest.fixture(scope="session")
def small_points_store(small_dataroot, tmp_path_factory):
    """The same store in the points layout (a float16 feature per point), the layout of every store
    before schema 4."""
    from pipeline.extract import run_extract

    synth_cfg, _ = small_dataroot
    cfg = store_config(synth_cfg, str(tmp_path_factory.mktemp("store") / "points.zarr"), layout="points")
    summary = run_extract(cfg, progress=False)
    return cfg, summary


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
