"""nuScenes-lidarseg class taxonomy: the 32 fine classes and the 16 evaluation classes.

The fine indices are the ones nuScenes-lidarseg stores, one uint8 per point, in ``category.json``
(``index`` field). The mapping to the 16 evaluation classes (0 = ignore) is the devkit's
``LidarsegClassMapper``; ``tests/test_classes.py`` checks both against the installed devkit.
Light module: the trainer imports it.
"""

from __future__ import annotations

import numpy as np

FINE_CLASSES: tuple[str, ...] = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)
FINE_INDEX: dict[str, int] = {name: i for i, name in enumerate(FINE_CLASSES)}
NUM_FINE_CLASSES = len(FINE_CLASSES)  # lidarseg labels are 0 .. NUM_FINE_CLASSES - 1

EVAL_CLASSES: tuple[str, ...] = (
    "ignore",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
)

_FINE_TO_EVAL_NAME: dict[str, str] = {
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "vehicle.car": "car",
    "vehicle.motorcycle": "motorcycle",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.truck": "truck",
    "vehicle.construction": "construction_vehicle",
    "vehicle.trailer": "trailer",
    "movable_object.barrier": "barrier",
    "movable_object.trafficcone": "traffic_cone",
    "flat.driveable_surface": "driveable_surface",
    "flat.sidewalk": "sidewalk",
    "flat.terrain": "terrain",
    "flat.other": "other_flat",
    "static.manmade": "manmade",
    "static.vegetation": "vegetation",
}

#: Classes a segmenter predicts: evaluation classes 1..16 (0, ignore, is never a target).
NUM_EVAL_CLASSES = len(EVAL_CLASSES) - 1

#: ``FINE_TO_EVAL[fine_label]`` is the evaluation class index (0 = ignore), a uint8 lookup table.
FINE_TO_EVAL: np.ndarray = np.array(
    [EVAL_CLASSES.index(_FINE_TO_EVAL_NAME.get(name, "ignore")) for name in FINE_CLASSES], dtype=np.uint8
)
