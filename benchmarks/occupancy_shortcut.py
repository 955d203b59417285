"""Does the occupancy task have a shortcut? What the head sees besides the backbone features, alone.

    .venv/bin/python benchmarks/occupancy_shortcut.py --store STORE --checkpoint RUN/checkpoint.pt \
        [--out benchmarks/results/occupancy_shortcut.json]

The occupancy head sees, for a query voxel centre q, the backbone feature at its nearest visible point
p and the offset q - p (trainer/occupancy.py). If the offset alone tells occupied from free, the task
teaches the backbone nothing. On the store's queries, exactly as pretraining draws them and the head
sees them (the checkpoint's data config: hidden cubes, mask ratio, offset balance, augmentation; masks
and augmentations drawn here from --seed), this fits classifiers that see only the offset
((dx, dy, dz, |d|), after augmentation): a logistic regression and a small decision tree
(depth 6, at least 50 queries a leaf), trained on the train-split sweeps, scored on the val-split sweeps
by balanced accuracy. Beside them, the trained student's own occupancy balanced accuracy on the same
val queries (logit > 0). For reference, the same classifiers on the targets as schema version 1 drew
them (free voxels anywhere along the rays, nothing hidden, nearest point among all points).

Beside them, a floor the student should beat once it has learnt the scene's geometry: gradient-boosted
trees on hand-made geometry of each query (``geometry_features``: neighbour counts, height above the
local ground, free-space evidence along the LiDAR rays to the visible points).

Writes {"offset_only_balanced_acc": best classifier, "geometry_floor_balanced_acc": ...,
"student_balanced_acc": ..., ...details}.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch


def offsets_of(ds) -> tuple[np.ndarray, np.ndarray, list]:
    """Offset features [Q,4] and labels [Q] of every sweep of ``ds`` (and the items)."""
    feats, labels, items = [], [], []
    for i in range(len(ds)):
        item = ds[i]
        d = item.queries - item.xyz[item.nearest]
        feats.append(np.c_[d, np.linalg.norm(d, axis=1)])
        labels.append(item.occ)
        items.append(item)
    return np.concatenate(feats), np.concatenate(labels).astype(int), items


GEOMETRY_RADII_M = (0.5, 1.0, 2.0)  # neighbour counts around the query
GROUND_RADIUS_M = 3.0  # the local ground: lowest visible point within this horizontal distance
RAY_WIDTH_M = 0.25  # a LiDAR ray passes "through" a query when it comes this close (at the query's range)
RAY_MARGIN_M = 0.2  # ... and ends this far beyond it (free evidence) or before it (occluded)


def geometry_features(item) -> np.ndarray:
    """Hand-made geometry of every occupancy query of ``item`` [Q, 14], from what the head may see (the
    visible points, the sensor at the origin): the offset to the nearest visible point (dx, dy, dz, |d|);
    visible points within 0.5, 1 and 2 m; height above the local ground (lowest visible point within 3 m
    horizontally) and above the median height there; the query's range and height; and free-space
    evidence along the rays: visible points whose ray passes within 0.25 m of the query and ends beyond it
    (the query is seen through: free), ends before it (the query is occluded), or ends at it."""
    from scipy.spatial import cKDTree

    xyz = item.xyz.astype(np.float64)
    q = item.queries.astype(np.float64)
    d = q - xyz[item.nearest]
    tree = cKDTree(xyz)
    counts = [np.array([len(n) for n in tree.query_ball_point(q, r)], dtype=np.float64) for r in GEOMETRY_RADII_M]
    flat = cKDTree(xyz[:, :2])
    ground, median = np.empty(len(q)), np.empty(len(q))
    for i, near in enumerate(flat.query_ball_point(q[:, :2], GROUND_RADIUS_M)):
        z = xyz[near, 2] if near else xyz[item.nearest[i], 2:3]
        ground[i], median[i] = q[i, 2] - z.min(), q[i, 2] - np.median(z)
    rng_p = np.linalg.norm(xyz, axis=1)
    rng_q = np.linalg.norm(q, axis=1)
    unit = cKDTree(xyz / np.maximum(rng_p, 1e-6)[:, None])
    through, occluded, at = (np.zeros(len(q)) for _ in range(3))
    for i, near in enumerate(unit.query_ball_point(q / np.maximum(rng_q, 1e-6)[:, None],
                                                   RAY_WIDTH_M / np.maximum(rng_q, 1.0))):
        if near:
            r = rng_p[near]
            through[i] = np.sum(r > rng_q[i] + RAY_MARGIN_M)
            occluded[i] = np.sum(r < rng_q[i] - RAY_MARGIN_M)
            at[i] = len(near) - through[i] - occluded[i]
    return np.column_stack([d, np.linalg.norm(d, axis=1), *counts, ground, median, rng_q, q[:, 2], through, occluded,
                            at])


def geometry_floor(train_items, val_items, seed: int = 0) -> dict:
    """Gradient-boosted trees on ``geometry_features``, fitted on the train queries, scored by balanced
    accuracy on the val queries: how far hand-made geometry goes on the occupancy task without any
    learnt feature."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import balanced_accuracy_score

    x_tr = np.concatenate([geometry_features(it) for it in train_items])
    y_tr = np.concatenate([it.occ for it in train_items]).astype(int)
    x_te = np.concatenate([geometry_features(it) for it in val_items])
    y_te = np.concatenate([it.occ for it in val_items]).astype(int)
    model = HistGradientBoostingClassifier(max_iter=500, early_stopping=True, validation_fraction=0.1,
                                           n_iter_no_change=20, class_weight="balanced", random_state=seed)
    model.fit(x_tr, y_tr)
    return {"balanced_acc": round(float(balanced_accuracy_score(y_te, model.predict(x_te))), 4),
            "rounds": int(model.n_iter_), "queries": {"train": int(len(y_tr)), "val": int(len(y_te))}}


def legacy_offsets(ds) -> tuple[np.ndarray, np.ndarray]:
    """Schema-1 targets rebuilt from the points: all occupied + as many free voxels drawn uniformly
    among all free voxels; nearest point among all points (nothing hidden)."""
    from scipy.spatial import cKDTree

    from pipeline.occupancy import OccupancyGrid, occupied_and_free

    a = ds.attrs["occupancy"]
    grid = OccupancyGrid(voxel_size=a["voxel_size_m"], lower=tuple(a["lower"]), shape=tuple(a["shape"]))
    feats, labels = [], []
    g = ds.group
    for s in ds.sweeps:
        n = int(g["num_points"][s])
        xyz = g["points"][s, :n, :3].astype(np.float64)
        occupied, free, _ = occupied_and_free(xyz, grid)
        occ_lin, free_lin = np.nonzero(occupied)[0], np.nonzero(free)[0]
        rng = np.random.default_rng([0, int(s)])
        free_pick = rng.choice(free_lin, size=min(len(free_lin), len(occ_lin)), replace=False)
        lin = np.concatenate([occ_lin, free_pick])
        q = grid.centres(grid.unlinear(lin))
        d = q - xyz[cKDTree(xyz).query(q)[1]]
        feats.append(np.c_[d, np.linalg.norm(d, axis=1)])
        labels.append(np.r_[np.ones(len(occ_lin)), np.zeros(len(free_pick))])
    return np.concatenate(feats), np.concatenate(labels).astype(int)


def classifiers(x_tr, y_tr, x_te, y_te) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    scaler = StandardScaler().fit(x_tr)
    logreg = LogisticRegression(max_iter=2000, class_weight="balanced").fit(scaler.transform(x_tr), y_tr)
    tree = DecisionTreeClassifier(max_depth=6, min_samples_leaf=50, class_weight="balanced",
                                  random_state=0).fit(x_tr, y_tr)
    return {"logistic_regression": round(float(balanced_accuracy_score(y_te, logreg.predict(scaler.transform(x_te)))),
                                         4),
            "decision_tree": round(float(balanced_accuracy_score(y_te, tree.predict(x_te))), 4)}


def main() -> None:
    from trainer.checkpoint import read_checkpoint
    from trainer.evaluate import OCCUPANCY_SEED, occupancy_accuracy, occupancy_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--checkpoint", required=True, help="a pretraining checkpoint (cdtrain pretrain)")
    ap.add_argument("--out", default="benchmarks/results/occupancy_shortcut.json")
    ap.add_argument("--seed", type=int, default=OCCUPANCY_SEED,
                    help="seed of the masks drawn here (not the training seed)")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    ck = read_checkpoint(args.checkpoint)
    trained = ck["data_config"]
    # the queries the student is scored on (trainer/evaluate.py), for the train split as well
    train_ds = occupancy_dataset(args.store, ck, "train", args.seed)
    val_ds = occupancy_dataset(args.store, ck, "val", args.seed)
    x_tr, y_tr, _ = offsets_of(train_ds)
    x_te, y_te, val_items = offsets_of(val_ds)
    offset_only = classifiers(x_tr, y_tr, x_te, y_te)
    geometry = geometry_floor([train_ds[i] for i in range(len(train_ds))], val_items)
    student = round(occupancy_accuracy(ck, val_items), 4)
    lx_tr, ly_tr = legacy_offsets(train_ds)
    lx_te, ly_te = legacy_offsets(val_ds)
    legacy = classifiers(lx_tr, ly_tr, lx_te, ly_te)
    result = {
        "offset_only_balanced_acc": max(offset_only.values()),
        "student_balanced_acc": student,
        "geometry_floor_balanced_acc": geometry["balanced_acc"],
        "offset_only_by_classifier": offset_only,
        "geometry_floor": geometry,
        "schema1_targets_offset_only_by_classifier": legacy,
        "queries": {"train": int(len(y_tr)), "val": int(len(y_te)),
                    "val_occupied_fraction": round(float(y_te.mean()), 4)},
        "median_offset_m": {"occupied": round(float(np.median(x_te[y_te == 1, 3])), 3),
                            "free": round(float(np.median(x_te[y_te == 0, 3])), 3)},
        "settings": {"store": args.store, "checkpoint": args.checkpoint, "mask_ratio": list(val_ds.cfg.mask_ratio),
                     "mask_cell_m": trained["mask_cell"],
                     "near_surface_m": train_ds.attrs["occupancy"].get("near_surface_m"),
                     "train_sweeps": int(len(train_ds)), "val_sweeps": int(len(val_ds)),
                     "pretrain_steps": int(ck["step"])},
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
