"""The annotated 3D boxes in the store: the frame chain from the dataset's annotations to the store's LiDAR
frame and back to the global frame holds, proved with the nuScenes devkit's own detection evaluation;
the boxes are the devkit's (classes, frame, velocities); and what the tables may lack or get wrong."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline.classes import DETECTION_CLASSES
from pipeline.detection_eval import META, detection_submission, devkit_scores, split_samples
from pipeline.extract import max_boxes_for
from pipeline.frames import build_nuscenes_index, load_nuscenes
from pipeline.geometry import box_corners_xy, boxes_to_frame, invert_transform
from pipeline.store import open_store, read_boxes, read_sweep
from tests.conftest import edit_table


def predictions(store: str, split: str = "val") -> list[dict]:
    """The stored boxes of the store's ``split`` sweeps as predictions in each sweep's LiDAR frame, score 1.
    Boxes without LiDAR points are left out (the devkit leaves them out of its truth); each box's attribute
    is its annotation's, joined by the stored token (the store keeps no attributes)."""
    group = open_store(store)
    attrs = dict(group.attrs)
    nusc = load_nuscenes(attrs["dataset"]["dataroot"], attrs["dataset"]["version"])
    found = []
    for s, sample in split_samples(group, split):
        boxes = read_boxes(group, s)
        keep = boxes["box_num_lidar_pts"] > 0
        found.append({"sample_token": sample, "centre": boxes["box_centre"][keep], "size": boxes["box_size"][keep],
                      "yaw": boxes["box_yaw"][keep], "velocity": boxes["box_velocity"][keep],
                      "name": [attrs["detection_classes"][k] for k in boxes["box_class"][keep]],
                      "score": np.ones(int(keep.sum())),
                      "attribute": [_attribute(nusc, str(t)) for t in boxes["box_token"][keep]]})
    return found


def submission(store: str, shift_m: float = 0.0) -> dict:
    """The stored boxes of the store's val sweeps as a nuScenes detection submission
    (``detection_submission``: each taken to the global frame by the store's own ``global_from_lidar``,
    every sample of the split listed); ``shift_m`` moves every box along global x."""
    result = detection_submission(store, predictions(store))
    for boxes in result["results"].values():
        for box in boxes:
            box["translation"][0] += shift_m
    return result


def _attribute(nusc, annotation: str) -> str:
    tokens = nusc.get("sample_annotation", annotation)["attribute_tokens"]
    return nusc.get("attribute", tokens[0])["name"] if tokens else ""


def test_stored_boxes_score_perfectly_with_the_devkit_and_fall_when_shifted(small_store, tmp_path):
    """The val sweeps' stored boxes, taken to the global frame with the stored transform and submitted,
    score AP 1 on every class of the val truth, mAP and NDS over those classes >= 0.99, with translation and
    size errors at float32 rounding and orientation errors at the square of the sensor's tilt; the devkit's
    own mAP is theirs over 10 classes. Shifted by 1 m, AP, mAP and NDS fall and the translation error is 1 m."""
    store = small_store[0].out
    assert submission(store)["meta"] == META
    exact = devkit_scores(store, submission(store), str(tmp_path / "exact"))
    present = exact["present"]
    assert len(present) >= 4 and exact["truth"] >= 20  # something to score
    assert exact["predicted"] == exact["truth"]  # after the devkit's filters, one prediction per true box
    assert all(exact["ap"][name] >= 0.99 for name in present), exact["ap"]
    assert exact["mAP_present"] >= 0.99 and exact["NDS_present"] >= 0.99, exact
    errors = exact["tp_errors_present"]
    assert errors["trans_err"] < 1e-4 and errors["scale_err"] < 1e-4 and errors["orient_err"] < 2e-3, errors
    assert errors["vel_err"] < 1e-4 and errors["attr_err"] == 0, errors
    assert exact["mAP"] == pytest.approx(sum(exact["ap"][name] for name in present) / len(DETECTION_CLASSES))
    assert all(exact["ap"][name] == 0 for name in DETECTION_CLASSES if name not in present)

    shifted = devkit_scores(store, submission(store, shift_m=1.0), str(tmp_path / "shifted"))
    assert shifted["present"] == present
    assert all(shifted["ap"][name] < exact["ap"][name] - 0.2 for name in present), shifted["ap"]
    assert shifted["mAP_present"] < exact["mAP_present"] - 0.3 and shifted["NDS_present"] < exact["NDS_present"] - 0.2
    assert shifted["mAP"] < exact["mAP"] and shifted["NDS"] < exact["NDS"]
    assert shifted["tp_errors_present"]["trans_err"] == pytest.approx(1.0, abs=1e-3)


def test_stored_boxes_are_the_devkits_in_the_frame_of_the_stored_points(small_store):
    """Every sweep's boxes are the devkit's own boxes of its LiDAR sample_data (``get_sample_data``: the
    sample's annotations brought into the sensor frame with pyquaternion), class by class through
    ``category_to_detection_name``, with its velocities rotated into that frame, and corners as the devkit's
    (those the preview draws); and they hold the stored points the annotation counted."""
    from nuscenes.eval.common.utils import quaternion_yaw
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.data_classes import Box
    from nuscenes.utils.geometry_utils import points_in_box
    from pyquaternion import Quaternion

    store = small_store[0].out
    group = open_store(store)
    attrs = dict(group.attrs)
    nusc = load_nuscenes(attrs["dataset"]["dataroot"], attrs["dataset"]["version"])
    counted = 0
    for s in range(attrs["num_sweeps"]):
        boxes = read_boxes(group, s)
        _, theirs, _ = nusc.get_sample_data(str(group["lidar_token"][s]))
        theirs = [box for box in theirs if category_to_detection_name(box.name)]
        assert [box.token for box in theirs] == list(boxes["box_token"])
        assert [attrs["detection_classes"][k] for k in boxes["box_class"]] == [
            category_to_detection_name(box.name) for box in theirs]
        np.testing.assert_allclose(boxes["box_centre"], [box.center for box in theirs], atol=1e-4)
        np.testing.assert_allclose(boxes["box_size"], [box.wlh for box in theirs], atol=1e-5)
        turn = np.angle(np.exp(1j * (boxes["box_yaw"] - [quaternion_yaw(box.orientation) for box in theirs])))
        assert np.abs(turn).max() < 1e-5
        lidar_from_global = invert_transform(boxes["global_from_lidar"])
        velocity = [(lidar_from_global[:3, :3] @ nusc.box_velocity(box.token))[:2] for box in theirs]
        np.testing.assert_allclose(boxes["box_velocity"], velocity, atol=1e-6)  # NaN where the devkit's is
        points = read_sweep(group, s, ("points",))["points"][:, :3].T
        for centre, size, yaw, n in zip(boxes["box_centre"], boxes["box_size"], boxes["box_yaw"],
                                        boxes["box_num_lidar_pts"]):
            box = Box(centre, size, Quaternion(axis=[0, 0, 1], angle=float(yaw)))
            np.testing.assert_allclose(box_corners_xy(centre[None], size[None], yaw[None])[0],
                                       box.corners()[:2, [0, 1, 5, 4]].T, atol=1e-5)  # what the preview draws
            if n >= 20:  # the annotation's points lie in the box (enlarged a little: it tilts with the ground)
                assert points_in_box(box, points, wlh_factor=1.1).sum() >= 0.9 * n
                counted += 1
    assert counted >= 20


def _copy_world(small_dataroot, tmp_path):
    synth_cfg, _ = small_dataroot
    root = tmp_path / "nuscenes"
    shutil.copytree(synth_cfg.out, root)
    return synth_cfg.version, root


def test_moving_boxes_have_the_devkits_velocity_in_the_lidar_frame(small_dataroot, tmp_path):
    """An instance made to move (its annotations 0.5 s apart, 3 m apart along global y) gets the devkit's
    velocity rotated into each sweep's LiDAR frame, which goes back to (0, 6) m/s in the global frame; a
    lone annotation's velocity is NaN, as the devkit gives it."""
    version, root = _copy_world(small_dataroot, tmp_path)
    records = json.loads((root / version / "sample_annotation.json").read_text())
    by_instance: dict[str, list[dict]] = {}
    for r in records:
        by_instance.setdefault(r["instance_token"], []).append(r)
    chain = next(rs for rs in by_instance.values() if len(rs) == 3)
    lone = next(rs[0] for rs in by_instance.values() if len(rs) == 1)
    moved = {r["token"]: i * 3.0 for i, r in enumerate(sorted(chain, key=lambda r: r["prev"] != ""))}

    def move(recs):
        for r in recs:
            if r["token"] in moved:
                r["translation"][1] += moved[r["token"]]

    edit_table(root, version, "sample_annotation", move)
    index = build_nuscenes_index(str(root), version)
    assert not any(index.failure)
    found = 0
    for s, boxes in enumerate(index.boxes):
        for i, token in enumerate(boxes.token):
            if token in moved:
                _, _, v = boxes_to_frame(index.global_from_lidar[s], boxes.centre[i:i + 1], boxes.yaw[i:i + 1],
                                         boxes.velocity[i:i + 1])
                np.testing.assert_allclose(v[0], [0.0, 6.0], atol=0.05)  # the LiDAR's tilt: vz is not stored
                found += 1
            if token == lone["token"]:
                assert np.isnan(boxes.velocity[i]).all()
                found += 1
    assert found == 4


def test_categories_without_a_detection_class_and_samples_without_annotations(small_dataroot, tmp_path):
    """An annotation whose category maps to no detection class (an animal) is not stored; a dataroot with no
    sample_annotation records gives 0 boxes in every sweep (and one padded row), not a failure."""
    version, root = _copy_world(small_dataroot, tmp_path)
    index = build_nuscenes_index(str(root), version)
    instance = json.loads((root / version / "instance.json").read_text())[0]["token"]
    animal = next(c["token"] for c in json.loads((root / version / "category.json").read_text())
                  if c["name"] == "animal")
    edit_table(root, version, "instance",
               lambda recs: [r.update(category_token=animal) for r in recs if r["token"] == instance])
    animals = build_nuscenes_index(str(root), version)
    gone = {r["token"] for r in json.loads((root / version / "sample_annotation.json").read_text())
            if r["instance_token"] == instance}
    assert gone
    for before, after in zip(index.boxes, animals.boxes):
        assert after.token == tuple(t for t in before.token if t not in gone)

    for table in ("sample_annotation", "instance"):
        edit_table(root, version, table, lambda recs: recs.clear())
    empty = build_nuscenes_index(str(root), version)
    assert not any(empty.failure) and not empty.num_boxes.any() and max_boxes_for(empty) == 1


def test_a_bad_annotation_fails_its_sweep_naming_it(small_dataroot, tmp_path):
    """An annotation with a size of 0 or a NaN in its pose, or a token twice in sample_annotation.json, fails
    the sweeps that hold it, naming the token; every other sweep keeps its boxes."""
    version, root = _copy_world(small_dataroot, tmp_path)
    index = build_nuscenes_index(str(root), version)
    zero, nan, twice = index.boxes[1].token[0], index.boxes[3].token[0], index.boxes[5].token[0]

    def spoil(recs):
        by_token = {r["token"]: r for r in recs}
        by_token[zero]["size"][0] = 0.0
        by_token[nan]["translation"][2] = float("nan")
        recs.append(dict(by_token[twice]))

    edit_table(root, version, "sample_annotation", spoil)
    got = build_nuscenes_index(str(root), version)
    assert f"sample_annotation {zero} of sample {index.sample_token[1]}: size [0.0," in got.failure[1]
    assert f"sample_annotation {nan} of sample {index.sample_token[3]}: non-finite" in got.failure[3]
    assert f"sample_annotation token {twice} appears 2 times" in got.failure[5]
    for s in (0, 2, 4):
        assert not got.failure[s] and got.boxes[s].token == index.boxes[s].token


def test_preview_draws_each_box_from_above_in_its_class_colour(small_store):
    """Both bird's-eye panels of `cdpipe preview` draw every stored box of the sweep as a rectangle at its
    corners, in its class's colour; the features panel names the classes of the boxes in view (a corner
    within the panel)."""
    from matplotlib.patches import Polygon

    from pipeline.classes import DETECTION_COLOURS
    from pipeline.preview import preview_figure, sweep_preview

    view = sweep_preview(small_store[0].out, 3)
    boxes = view.boxes
    assert len(boxes["box_class"]) > 10
    figure = preview_figure(view)
    panels = [ax for ax in figure.axes if ax.get_title().startswith(("teacher features from above", "lidarseg labels"))]
    assert len(panels) == 2
    corners = box_corners_xy(boxes["box_centre"], boxes["box_size"], boxes["box_yaw"])
    for ax in panels:
        drawn = [p for p in ax.patches if isinstance(p, Polygon)]
        assert len(drawn) == len(corners)
        for polygon, quad, c in zip(drawn, corners, boxes["box_class"]):
            np.testing.assert_allclose(polygon.get_xy()[:4], quad, atol=1e-9)
            assert tuple(round(255 * v) for v in polygon.get_edgecolor()[:3]) == DETECTION_COLOURS[c]
    legend = panels[0].get_legend()
    in_view = {DETECTION_CLASSES[c] for quad, c in zip(corners, boxes["box_class"])
               if (np.abs(quad) <= 50).all(axis=1).any()}  # a corner in the 100 m square
    assert legend.get_title().get_text() == "annotated boxes"
    assert {t.get_text() for t in legend.get_texts()} == in_view
