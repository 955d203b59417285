"""Labelled subsets for fine-tuning: whole scenes, chosen deterministically by seed.

``label_subset(scenes, percent, seed)``: the store's train scenes in a seeded random order
(``stream_rng(SPLIT_STREAM, seed)`` over the names sorted), taken one by one until their sweeps reach
``percent`` % of all train sweeps (at least one scene). Whole scenes keep neighbouring, near-duplicate
sweeps out of the held-out part; the same store, percent and seed always give the same scenes.
"""

from __future__ import annotations

from trainer.data import SPLIT_STREAM, stream_rng


def label_subset(scenes: list[dict], percent: float, seed: int = 0) -> list[str]:
    if not 0 < percent <= 100:
        raise ValueError(f"--labels-percent {percent}: must be in (0, 100]")
    train = sorted((s for s in scenes if s["split"] == "train"), key=lambda s: s["name"])
    if not train:
        raise ValueError("the store has no train scenes to take labels from")
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
