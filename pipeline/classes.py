"""nuScenes class taxonomy: the 32 lidarseg fine classes, the 16 evaluation classes and the 10 detection
classes, and the colour every picture paints each in.

The fine indices are the ones nuScenes-lidarseg stores, one uint8 per point, in ``category.json``
(``index`` field). The mapping to the 16 evaluation classes (0 = ignore) is the devkit's
``LidarsegClassMapper``; ``tests/test_classes.py`` checks both against the installed devkit (and
``tests/test_plots.py`` the colours against its colormap).
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
