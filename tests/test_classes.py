"""Our class tables equal the devkit's."""

from nuscenes.eval.lidarseg.utils import LidarsegClassMapper
from nuscenes.utils.color_map import get_colormap

from pipeline.classes import EVAL_CLASSES, FINE_CLASSES, FINE_TO_EVAL


class _FakeNusc:
    lidarseg_name2idx_mapping = {name: i for i, name in enumerate(FINE_CLASSES)}
    lidarseg_idx2name_mapping = dict(enumerate(FINE_CLASSES))


def test_fine_classes_in_devkit_order():
    assert tuple(get_colormap()) == FINE_CLASSES


def test_fine_to_eval_matches_devkit_mapper():
    mapper = LidarsegClassMapper(_FakeNusc())
    assert {i: int(FINE_TO_EVAL[i]) for i in range(32)} == mapper.get_fine_idx_2_coarse_idx()
    coarse = mapper.get_coarse2idx()
    assert {name: i for i, name in enumerate(EVAL_CLASSES) if i} == {k: v for k, v in coarse.items() if v}


def test_detection_classes_are_the_devkits():
    """Our light copy of the detection benchmark's 10 classes is the devkit's list, in its order; every
    general category the devkit maps maps into it, and each class has its evaluation class's colour."""
    from nuscenes.eval.detection.constants import DETECTION_NAMES
    from nuscenes.eval.detection.utils import category_to_detection_name

    from pipeline.classes import DETECTION_CLASSES, DETECTION_COLOURS, EVAL_COLOURS

    assert DETECTION_CLASSES == tuple(DETECTION_NAMES)
    mapped = {category_to_detection_name(name) for name in FINE_CLASSES} - {None}
    assert mapped == set(DETECTION_CLASSES)
    assert DETECTION_COLOURS == tuple(EVAL_COLOURS[EVAL_CLASSES.index(name)] for name in DETECTION_CLASSES)
