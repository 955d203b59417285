"""Labelled subsets for fine-tuning, chosen deterministically by seed: whole scenes, or single sweeps.

``label_subset(scenes, percent, seed)``: the store's train scenes in a seeded random order
(``stream_rng(SPLIT_STREAM, seed)`` over the names sorted), taken one by one until their sweeps reach
``percent`` % of all train sweeps (at least one scene). Whole scenes keep neighbouring, near-duplicate
sweeps out of the held-out part; the same store, percent and seed always give the same scenes.

``label_sweeps(scenes, percent, seed)``: ``max(1, round(percent / 100 x N))`` of the store's N train sweeps
(the rows of its train scenes, by the scene table), the first of a seeded permutation of them
(``stream_rng(SWEEP_SPLIT_STREAM, seed)``): the field's protocol of 1% and 10% of the train scans, which
whole scenes cannot give when there are few of them. The same store, percent and seed always give the same
sweeps.
"""

from __future__ import annotations

import numpy as np

from trainer.data import SPLIT_STREAM, SWEEP_SPLIT_STREAM, stream_rng


def label_subset(scenes: list[dict], percent: float, seed: int = 0) -> list[str]:
    train = _train_scenes(scenes, percent)
    total = sum(s["num_sweeps"] for s in train)
    target = percent / 100.0 * total
    order = stream_rng(SPLIT_STREAM, seed).permutation(len(train))
    chosen, count = [], 0
    for i in order:
        if chosen and count >= target:
            break
        # stop before a scene that would overshoot more than stopping short undershoots
        if chosen and abs(count + train[i]["num_sweeps"] - target) > abs(count - target):
            break
        chosen.append(train[i]["name"])
        count += train[i]["num_sweeps"]
    return sorted(chosen)


def label_sweeps(scenes: list[dict], percent: float, seed: int = 0, complete=None) -> list[int]:
    """The labelled store rows, ascending (see the module docstring); with ``complete`` (the store's complete
    sweeps), drawn among those only, so that a failed or unwritten sweep is never drawn and counted."""
    train = _train_scenes(scenes, percent)
    rows = np.concatenate([np.arange(s["first_sweep"], s["first_sweep"] + s["num_sweeps"]) for s in train])
    if complete is not None:
        rows = np.intersect1d(rows, np.asarray(complete, np.int64))
    if not len(rows):
        raise ValueError("the store's train scenes hold no sweeps to take labels from")
    rows.sort()
    count = max(1, round(percent / 100.0 * len(rows)))
    picked = rows[stream_rng(SWEEP_SPLIT_STREAM, seed).permutation(len(rows))[:count]]
    return sorted(int(r) for r in picked)


def scenes_of(scenes: list[dict], rows: list[int]) -> list[str]:
    """The names of the scenes that hold the store rows ``rows``, sorted."""
    return sorted(s["name"] for s in scenes
                  if any(s["first_sweep"] <= r < s["first_sweep"] + s["num_sweeps"] for r in rows))


def _train_scenes(scenes: list[dict], percent: float) -> list[dict]:
    if not 0 < percent <= 100:
        raise ValueError(f"--labels-percent {percent}: must be in (0, 100]")
    train = sorted((s for s in scenes if s["split"] == "train"), key=lambda s: s["name"])
    if not train:
        raise ValueError("the store has no train scenes to take labels from")
    return train
