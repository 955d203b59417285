"""Class taxonomies. nuScenes: the 32 lidarseg fine classes, the 16 evaluation classes and the 10 detection
classes, and the colour every picture paints each in. SemanticKITTI: its raw classes, its learning map to the
19 evaluation classes and their colours. ``LabelClasses``: a store's class set (attribute ``classes``), which
the trainer takes its classes from.

The fine indices are the ones nuScenes-lidarseg stores, one uint8 per point, in ``category.json``
(``index`` field). The mapping to the 16 evaluation classes (0 = ignore) is the devkit's
``LidarsegClassMapper``; ``tests/test_classes.py`` checks both against the installed devkit (and
``tests/test_plots.py`` the colours against its colormap).
Light module: the trainer imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

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

#: RGB (0-255) of each fine class, in ``FINE_CLASSES`` order: the nuScenes devkit's colormap, which its
#: own pictures (``map_pointcloud_to_image``) paint with, so that ours and the devkit's agree.
FINE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # noise
    (70, 130, 180),  # animal
    (0, 0, 230),  # human.pedestrian.adult
    (135, 206, 235),  # human.pedestrian.child
    (100, 149, 237),  # human.pedestrian.construction_worker
    (219, 112, 147),  # human.pedestrian.personal_mobility
    (0, 0, 128),  # human.pedestrian.police_officer
    (240, 128, 128),  # human.pedestrian.stroller
    (138, 43, 226),  # human.pedestrian.wheelchair
    (112, 128, 144),  # movable_object.barrier
    (210, 105, 30),  # movable_object.debris
    (105, 105, 105),  # movable_object.pushable_pullable
    (47, 79, 79),  # movable_object.trafficcone
    (188, 143, 143),  # static_object.bicycle_rack
    (220, 20, 60),  # vehicle.bicycle
    (255, 127, 80),  # vehicle.bus.bendy
    (255, 69, 0),  # vehicle.bus.rigid
    (255, 158, 0),  # vehicle.car
    (233, 150, 70),  # vehicle.construction
    (255, 83, 0),  # vehicle.emergency.ambulance
    (255, 215, 0),  # vehicle.emergency.police
    (255, 61, 99),  # vehicle.motorcycle
    (255, 140, 0),  # vehicle.trailer
    (255, 99, 71),  # vehicle.truck
    (0, 207, 191),  # flat.driveable_surface
    (175, 0, 75),  # flat.other
    (75, 0, 75),  # flat.sidewalk
    (112, 180, 60),  # flat.terrain
    (222, 184, 135),  # static.manmade
    (255, 228, 196),  # static.other
    (0, 175, 0),  # static.vegetation
    (255, 240, 245),  # vehicle.ego
)

# the fine class whose colour an evaluation class is drawn in (ignore: noise's black)
_EVAL_COLOUR_OF: dict[str, str] = {
    "ignore": "noise",
    "barrier": "movable_object.barrier",
    "bicycle": "vehicle.bicycle",
    "bus": "vehicle.bus.rigid",
    "car": "vehicle.car",
    "construction_vehicle": "vehicle.construction",
    "motorcycle": "vehicle.motorcycle",
    "pedestrian": "human.pedestrian.adult",
    "traffic_cone": "movable_object.trafficcone",
    "trailer": "vehicle.trailer",
    "truck": "vehicle.truck",
    "driveable_surface": "flat.driveable_surface",
    "other_flat": "flat.other",
    "sidewalk": "flat.sidewalk",
    "terrain": "flat.terrain",
    "manmade": "static.manmade",
    "vegetation": "static.vegetation",
}

#: RGB (0-255) of each evaluation class, in ``EVAL_CLASSES`` order: the colour of its main fine class.
EVAL_COLOURS: tuple[tuple[int, int, int], ...] = tuple(FINE_COLOURS[FINE_INDEX[_EVAL_COLOUR_OF[name]]]
                                                       for name in EVAL_CLASSES)

#: The nuScenes detection benchmark's 10 classes, in the devkit's order (``DETECTION_NAMES`` of
#: ``nuscenes.eval.detection.constants``). A store's ``box_class`` indexes them (its attribute
#: ``detection_classes`` holds the same list); the devkit's ``category_to_detection_name`` maps the general
#: categories onto them, and boxes of a category it maps to none are not stored. ``tests/test_classes.py``
#: checks both against the installed devkit.
DETECTION_CLASSES: tuple[str, ...] = ("car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                                      "motorcycle", "bicycle", "traffic_cone", "barrier")

#: RGB (0-255) of each detection class, in ``DETECTION_CLASSES`` order: its evaluation class's colour, so
#: that a box is drawn in the colour of the points labelled with its class.
DETECTION_COLOURS: tuple[tuple[int, int, int], ...] = tuple(EVAL_COLOURS[EVAL_CLASSES.index(name)]
                                                            for name in DETECTION_CLASSES)


# ---------------------------------------------------------------------------------------------------
# SemanticKITTI

#: SemanticKITTI's raw classes: (id in the ``.label`` files' lower 16 bits, name), in id order, as the
#: dataset publishes them (semantic-kitti-api, ``config/semantic-kitti.yaml``, ``labels``).
SEMANTICKITTI_RAW: tuple[tuple[int, str], ...] = (
    (0, "unlabeled"), (1, "outlier"), (10, "car"), (11, "bicycle"), (13, "bus"), (15, "motorcycle"),
    (16, "on-rails"), (18, "truck"), (20, "other-vehicle"), (30, "person"), (31, "bicyclist"),
    (32, "motorcyclist"), (40, "road"), (44, "parking"), (48, "sidewalk"), (49, "other-ground"),
    (50, "building"), (51, "fence"), (52, "other-structure"), (60, "lane-marking"), (70, "vegetation"),
    (71, "trunk"), (72, "terrain"), (80, "pole"), (81, "traffic-sign"), (99, "other-object"),
    (252, "moving-car"), (253, "moving-bicyclist"), (254, "moving-person"), (255, "moving-motorcyclist"),
    (256, "moving-on-rails"), (257, "moving-bus"), (258, "moving-truck"), (259, "moving-other-vehicle"),
)

#: The 19 classes SemanticKITTI's benchmark scores, numbered 1..19 by its learning map (0 = ignore).
SEMANTICKITTI_EVAL: tuple[str, ...] = (
    "ignore", "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist",
    "road", "parking", "sidewalk", "other-ground", "building", "fence", "vegetation", "trunk", "terrain", "pole",
    "traffic-sign",
)

# the dataset's learning map, raw id -> evaluation class (0 = ignore): raw classes that are a moving
# version, a sub-kind or a marking of a scored class take that class; the rest (outlier, other-structure,
# other-object) are ignored
_SEMANTICKITTI_LEARNING: dict[int, str] = {
    0: "ignore", 1: "ignore", 10: "car", 11: "bicycle", 13: "other-vehicle", 15: "motorcycle",
    16: "other-vehicle", 18: "truck", 20: "other-vehicle", 30: "person", 31: "bicyclist", 32: "motorcyclist",
    40: "road", 44: "parking", 48: "sidewalk", 49: "other-ground", 50: "building", 51: "fence",
    52: "ignore", 60: "road", 70: "vegetation", 71: "trunk", 72: "terrain", 80: "pole", 81: "traffic-sign",
    99: "ignore", 252: "car", 253: "bicyclist", 254: "person", 255: "motorcyclist", 256: "other-vehicle",
    257: "other-vehicle", 258: "truck", 259: "other-vehicle",
}

#: ``SEMANTICKITTI_LEARNING_MAP[raw_id]`` is the evaluation class (0 = ignore) of every raw id 0..259; an
#: id the dataset does not define maps to 0 (a reader refuses such labels before mapping).
SEMANTICKITTI_LEARNING_MAP: np.ndarray = np.zeros(260, dtype=np.uint8)
for _raw, _name in _SEMANTICKITTI_LEARNING.items():
    SEMANTICKITTI_LEARNING_MAP[_raw] = SEMANTICKITTI_EVAL.index(_name)

#: RGB (0-255) of each SemanticKITTI evaluation class (ignore: black), the dataset's own colours.
SEMANTICKITTI_EVAL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0), (100, 150, 245), (100, 230, 245), (30, 60, 150), (80, 30, 180), (0, 0, 255), (255, 30, 30),
    (255, 40, 200), (150, 30, 90), (255, 0, 255), (255, 150, 255), (75, 0, 75), (175, 0, 75), (255, 200, 0),
    (255, 120, 50), (0, 175, 0), (135, 60, 0), (150, 240, 80), (255, 240, 150), (255, 0, 0),
)


# ---------------------------------------------------------------------------------------------------
# a store's class set


DATASETS = ("nuscenes", "semantickitti")


@dataclass(frozen=True)
class LabelClasses:
    """What a store's ``labels`` mean and how they are scored: ``labels`` index ``fine`` (the dataset's own
    classes; ``fine_ids`` is each one's id in the dataset's label files), ``fine_to_eval`` maps them to
    the evaluation classes 1..K named ``eval`` (``eval[c - 1]`` is class c) and to ``ignore_index`` (0,
    never a target nor scored). The store's attribute ``classes`` holds it (``to_dict``)."""

    dataset: str
    fine: tuple[str, ...]
    fine_ids: tuple[int, ...]
    eval: tuple[str, ...]
    fine_to_eval: tuple[int, ...]
    ignore_index: int = 0

    def __post_init__(self):
        if self.ignore_index != 0:
            raise ValueError(f"classes: ignore_index {self.ignore_index}; this code scores classes 1..K and "
                             f"ignores 0")
        if len(self.fine_ids) != len(self.fine) or len(self.fine_to_eval) != len(self.fine):
            raise ValueError(f"classes: {len(self.fine)} fine classes but {len(self.fine_ids)} ids and "
                             f"{len(self.fine_to_eval)} evaluation classes for them")
        if any(not 0 <= c <= len(self.eval) for c in self.fine_to_eval):
            raise ValueError(f"classes: fine_to_eval holds a class outside 0-{len(self.eval)}")

    @property
    def num_classes(self) -> int:
        """K, the classes a segmenter predicts (1..K; 0 is ignored)."""
        return len(self.eval)

    @property
    def lookup(self) -> np.ndarray:
        """``lookup[fine_label]`` is the evaluation class (0 = ignore), a uint8 table."""
        return np.asarray(self.fine_to_eval, dtype=np.uint8)

    @property
    def colours(self) -> tuple[tuple[int, int, int], ...]:
        """RGB (0-255) of the ignore class and each evaluation class, for pictures."""
        known = {"nuscenes": EVAL_COLOURS, "semantickitti": SEMANTICKITTI_EVAL_COLOURS}.get(self.dataset)
        if known is not None and len(known) == self.num_classes + 1:
            return known
        rng = np.random.default_rng(0)  # a store of another dataset: fixed, distinct-enough colours
        return ((0, 0, 0), *(tuple(int(v) for v in rng.integers(40, 256, 3)) for _ in self.eval))

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "fine": list(self.fine), "fine_ids": list(self.fine_ids),
                "eval": list(self.eval), "fine_to_eval": list(self.fine_to_eval), "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, d: dict) -> LabelClasses:
        return cls(dataset=d["dataset"], fine=tuple(d["fine"]), fine_ids=tuple(int(i) for i in d["fine_ids"]),
                   eval=tuple(d["eval"]), fine_to_eval=tuple(int(c) for c in d["fine_to_eval"]),
                   ignore_index=int(d["ignore_index"]))

    @classmethod
    def of(cls, dataset: str) -> LabelClasses:
        """The class set of a dataset format this code reads (one of ``DATASETS``)."""
        if dataset == "nuscenes":
            return cls("nuscenes", FINE_CLASSES, tuple(range(NUM_FINE_CLASSES)), EVAL_CLASSES[1:],
                       tuple(int(c) for c in FINE_TO_EVAL))
        if dataset == "semantickitti":
            return cls("semantickitti", tuple(name for _, name in SEMANTICKITTI_RAW),
                       tuple(raw for raw, _ in SEMANTICKITTI_RAW), SEMANTICKITTI_EVAL[1:],
                       tuple(int(SEMANTICKITTI_LEARNING_MAP[raw]) for raw, _ in SEMANTICKITTI_RAW))
        raise ValueError(f"dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
