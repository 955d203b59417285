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
