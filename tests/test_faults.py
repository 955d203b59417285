"""Nothing lost, nothing silently wrong: the faults a careless or hostile teammate can feed the tools,
each with the behaviour docs/faults.md promises (refused in one line before any work, failed for its
sweep alone with the reason recorded, or warned about in one line), and the trainer's checks of its own
settings and data."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from pipeline.cli import app as cdpipe
from pipeline.errors import ExtractError
from pipeline.extract import run_extract
from pipeline.frames import build_nuscenes_index, read_lidar
from pipeline.store import StoreError, check_out, chunk_key
from pipeline.teacher import META_KEY, TeacherConfig
from pipeline.verify import store_info, verify_store
from tests.conftest import edit_table, store_config
from trainer.cli import app as cdtrain

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _copy_world(small_dataroot, tmp_path, labels: bool = True):
    synth_cfg, _ = small_dataroot
    root = tmp_path / "nuscenes"
    shutil.copytree(synth_cfg.out, root)
    if not labels:
        os.remove(root / synth_cfg.version / "lidarseg.json")
    return synth_cfg, root


def _store_copy(small_store, tmp_path, name: str = "store.zarr") -> str:
    copy = str(tmp_path / name)
    shutil.copytree(small_store[0].out, copy)
    return copy


# ---------------------------------------------------------------------------------------------------
# data lost or silently wrong


def test_overwrite_deletes_only_a_store_cdpipe_wrote(small_dataroot, small_store, tmp_path):
    """--overwrite on a Zarr group that is not a teacher-feature store, or on a store holding a file that
    cdpipe did not write, is refused in one line before any work, and every byte stays."""
    foreign = tmp_path / "theirs.zarr"
    g = zarr.open_group(str(foreign), mode="w")
    g.create_array("their_array", shape=(3,), dtype="int32", fill_value=0)[:] = [1, 2, 3]
    (foreign / "README.md").write_text("their notes")
    before = sorted(p.relative_to(foreign) for p in foreign.rglob("*"))
    for args in ([], ["--overwrite"]):
        res = runner.invoke(cdpipe, ["extract", "--dataroot", small_dataroot[0].out, "--out", str(foreign),
                                     "--random-teacher", "--teacher-size", "224x112", *args])
        assert res.exit_code == 2 and "not a teacher-feature store" in res.output, res.output
        assert res.output.count("\n") == 1
    assert sorted(p.relative_to(foreign) for p in foreign.rglob("*")) == before
    assert (foreign / "README.md").read_text() == "their notes"

    ours = _store_copy(small_store, tmp_path)
    with open(os.path.join(ours, "NOTES.txt"), "w") as f:
        f.write("kept beside the arrays")
    with pytest.raises(StoreError, match="holds NOTES.txt, which cdpipe did not write; --overwrite would delete it"):
        check_out(ours, overwrite=True)
    os.remove(os.path.join(ours, "NOTES.txt"))
    with open(os.path.join(ours, "points", "c", "notes.txt"), "w") as f:
        f.write("kept among the chunks")
    with pytest.raises(StoreError, match=r"holds points/c/notes.txt, which cdpipe did not write"):
        check_out(ours, overwrite=True)
    os.remove(os.path.join(ours, "points", "c", "notes.txt"))
    check_out(ours, overwrite=True)  # a store of ours alone may be started again


def _write_points(path: str, points: np.ndarray) -> None:
    points.astype(np.float32).tofile(path)


def test_non_finite_or_absurd_lidar_values_fail_their_sweep(small_dataroot, tmp_path):
    """NaN or inf in any field, or a coordinate of 1e30 m, fail the sweep naming the file, the count and the
    first row, before anything reaches the store (or numpy warns about them)."""
    synth_cfg, root = _copy_world(small_dataroot, tmp_path, labels=False)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    edits = {0: (3, math.nan), 1: (0, 1e30), 2: (2, math.inf), 3: (1, math.nan)}  # intensity, x, z, y
    for s, (col, value) in edits.items():
        points = np.fromfile(index.lidar_path[s], np.float32).reshape(-1, 5)
        points[[5, 17], col] = value
        _write_points(index.lidar_path[s], points)
    for s, (col, value) in edits.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no raw RuntimeWarning on the way
            with pytest.raises(ExtractError) as caught:
                read_lidar(index, s)
        text = str(caught.value)
        assert index.lidar_path[s] in text and "2 points" in text and "row 5" in text, text
        assert ("NaN or inf" in text) == (not math.isfinite(value)) and ("1000 m" in text) == math.isfinite(value)
    points, _ = read_lidar(index, 4)
    assert np.isfinite(points).all()


def test_a_duplicated_token_or_a_shared_lidar_file_fails_the_sweeps_involved(small_dataroot, tmp_path):
    """A second sample_data record with sweep 0's LiDAR token but sweep 2's file (the devkit keeps the
    last record, so sweep 0 would silently get sweep 2's cloud), and a record naming another sweep's file:
    each sweep involved fails naming the token or the file; the others are untouched."""
    synth_cfg, root = _copy_world(small_dataroot, tmp_path, labels=False)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    records = json.load(open(root / synth_cfg.version / "sample_data.json"))
    by_token = {r["token"]: r for r in records}
    twin = {**by_token[index.lidar_token[2]], "token": index.lidar_token[0],
            "sample_token": index.sample_token[0]}  # consistent but for the file
    edit_table(root, synth_cfg.version, "sample_data", lambda recs: recs.append(twin))
    got = build_nuscenes_index(str(root), synth_cfg.version)
    assert f"sample_data token {index.lidar_token[0]} appears 2 times" in got.failure[0]
    # sweep 0 no longer reads sweep 2's file; sweep 2 keeps its own
    assert not got.failure[2] and got.lidar_path[2] == index.lidar_path[2]

    synth_cfg, root = _copy_world(small_dataroot, tmp_path / "b", labels=False)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    name_of_4 = by_token[index.lidar_token[4]]["filename"]
    edit_table(root, synth_cfg.version, "sample_data",
                lambda recs: [r.update(filename=name_of_4) for r in recs if r["token"] == index.lidar_token[3]])
    got = build_nuscenes_index(str(root), synth_cfg.version)
    for s in (3, 4):
        assert "is named by the records of 2 sweeps" in got.failure[s] and name_of_4 in got.failure[s]
    assert not any(got.failure[s] for s in (0, 1, 2, 5))


@pytest.mark.parametrize("order", ["rings", "azimuth"])
def test_a_lidar_file_cut_at_a_whole_point_is_flagged(small_dataroot, order):
    """A file cut at a whole number of points (no labels to count against) is found by its ring pattern:
    the sweeps of the synthetic world (listed ring after ring) and the same points listed azimuth after
    azimuth, as nuScenes files are, pass whole and are flagged once cut by 2%, 10% or half."""
    from pipeline.frames import coverage_problem

    synth_cfg, _ = small_dataroot
    index = build_nuscenes_index(synth_cfg.out, synth_cfg.version)
    for s in range(len(index)):
        points, _ = read_lidar(index, s)
        if order == "azimuth":
            azimuth = np.arctan2(points[:, 1], points[:, 0]) % (2 * np.pi)
            points = points[np.lexsort((points[:, 4], np.round(azimuth, 2)))]
        assert coverage_problem(points) is None, s
        for keep in (0.98, 0.9, 0.5):
            problem = coverage_problem(points[:int(len(points) * keep)])
            assert problem and "may be truncated" in problem, (s, keep)


@pytest.mark.slow
def test_one_extract_meets_bad_values_a_cut_file_and_bad_labels(small_dataroot, tmp_path):
    """End to end through the CLI: sweep 1 holds NaN, sweep 2 a point at 1e30 m, sweep 4 labels 40 and
    255, sweep 3's LiDAR file (and its labels) are cut at a whole point. The three bad sweeps fail with their
    reasons, sweep 3 completes with a warning that its file may be truncated, nothing non-finite or absurd
    is stored, verify passes on what was written, and the job exits 1 saying so."""
    synth_cfg, root = _copy_world(small_dataroot, tmp_path)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    for s, (col, value) in {1: (1, math.nan), 2: (0, 1e30)}.items():
        points = np.fromfile(index.lidar_path[s], np.float32).reshape(-1, 5)
        points[7, col] = value
        _write_points(index.lidar_path[s], points)
    labels = np.fromfile(index.label_path[4], np.uint8)
    labels[[3, 9]] = [40, 255]
    labels.tofile(index.label_path[4])
    points = np.fromfile(index.lidar_path[3], np.float32).reshape(-1, 5)
    keep = int(len(points) * 0.9)
    _write_points(index.lidar_path[3], points[:keep])
    np.fromfile(index.label_path[3], np.uint8)[:keep].tofile(index.label_path[3])
    out = str(tmp_path / "store.zarr")
    res = runner.invoke(cdpipe, ["extract", "--dataroot", str(root), "--out", out, "--random-teacher",
                                 "--teacher-size", "224x112", "--workers", "0", "--tasks-per-worker", "1",
                                 "--torch-threads", "1"])
    assert res.exit_code == 1 and "3 of 6 sweeps failed" in res.output, res.output
    assert "Traceback" not in res.output and "RuntimeWarning" not in res.output
    info = store_info(out)
    failures = {f["sweep"]: f["reason"] for f in info["failures"]}
    assert set(failures) == {1, 2, 4}
    assert "NaN or inf" in failures[1] and "more than 1000 m" in failures[2]
    assert "labels 40, 255 outside 0-31" in failures[4]
    warned = {w["sweep"]: w["warning"] for w in info["warnings"]}
    assert set(warned) == {3} and "may be truncated" in warned[3] and index.lidar_path[3] in warned[3]
    g = zarr.open_group(out, mode="r")
    assert np.isfinite(g["points"][:]).all() and np.abs(g["points"][:, :, :3]).max() < 1000
    assert int(g["num_points"][3]) == keep
    kinds = {(p["kind"], p["sweep"]) for p in verify_store(out, progress=False)["problems"]}
    assert kinds == {("failed", 1), ("failed", 2), ("failed", 4)}


# ---------------------------------------------------------------------------------------------------
# crashes and wrong messages


@pytest.mark.slow
def test_every_sweep_failing_lists_the_failures_not_a_traceback(small_dataroot, tmp_path):
    """Every sweep fails in its task (a truncated camera image each): the job prints its summary and every
    failure and exits 1; `cdpipe info` on the store prints it too."""
    synth_cfg, root = _copy_world(small_dataroot, tmp_path)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    for s in range(len(index)):
        path = index.image_path[s][0]
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) // 3])
    out = str(tmp_path / "store.zarr")
    res = runner.invoke(cdpipe, ["extract", "--dataroot", str(root), "--out", out, "--random-teacher",
                                 "--teacher-size", "224x112", "--workers", "0", "--tasks-per-worker", "1",
                                 "--torch-threads", "1"])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "6 of 6 sweeps failed" in res.output and "0 of 6 written (6 failed)" in res.output
    assert res.output.count("camera image unreadable") >= 6
    res = runner.invoke(cdpipe, ["info", out])
    assert res.exit_code == 0 and "no complete sweep yet" in res.output and "failures   6" in res.output, res.output


@pytest.mark.slow
def test_a_full_disk_stops_the_job_and_blames_no_input(small_dataroot, tmp_path, monkeypatch):
    """The store's file system fills up while a task writes (ENOSPC): the job stops in one line that says
    the input is not at fault and to rerun; no sweep is recorded as failed, and the rerun completes."""
    from dask.distributed import LocalCluster

    import pipeline.extract as extract
    import pipeline.store_writer as store_writer

    real = store_writer._open_for_writing

    class Full:
        def __init__(self, array):
            self.array = array

        def __setitem__(self, key, value):
            if isinstance(key, slice) and key.start == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "store.zarr/points/c/1/0/0")
            self.array[key] = value

        def __getitem__(self, key):
            return self.array[key]

    def full_disk(url):
        group, arrays = real(url)
        return group, {name: Full(array) if name == "points" else array for name, array in arrays.items()}

    monkeypatch.setattr(store_writer, "_open_for_writing", full_disk)  # threads of this process run the tasks
    threads = torch.get_num_threads()  # the tasks set torch's (process-wide) thread count: restored below
    monkeypatch.setattr(extract, "extract_group", _keeping_threads(extract.extract_group, threads))
    out = str(tmp_path / "store.zarr")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        cfg = store_config(small_dataroot[0], out, scheduler=cluster.scheduler_address)
        with pytest.raises(StoreError) as caught:  # a StoreWriteError, which the CLI ends with exit 1
            run_extract(cfg, progress=False)
        assert type(caught.value).__name__ == "StoreWriteError"
        text = str(caught.value)
        assert "No space left on device" in text and "sweeps 2-3" in text and "input is not at fault" in text
        assert "fix their input" not in text
        g = zarr.open_group(out, mode="r")
        assert not any(g["failure"][:]) and not g["done"][2:4].any()
        monkeypatch.setattr(store_writer, "_open_for_writing", real)
        summary = run_extract(cfg, progress=False)
    assert summary["sweeps"] == 6 and not summary["job"]["failures"]
    assert verify_store(out, progress=False)["problems"] == []


def _keeping_threads(task, threads: int):
    def run(*args, **kwargs):
        try:
            return task(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return run


def test_a_teacher_input_turned_sideways_is_refused(small_dataroot, tmp_path):
    """--teacher-size is WIDTHxHEIGHT: 224x448 for 16:9 cameras is a portrait teacher input, refused in one
    line that suggests 448x224, before any task; a square input, or one matching the cameras, passes. The old
    spelling, HEIGHTxWIDTH --image-size, is checked the same way."""
    synth_cfg, _ = small_dataroot
    out = tmp_path / "store.zarr"
    res = runner.invoke(cdpipe, ["extract", "--dataroot", synth_cfg.out, "--out", str(out), "--random-teacher",
                                 "--teacher-size", "112x224", "--workers", "0"])
    assert res.exit_code == 2 and "did you mean --teacher-size 224x112" in res.output, res.output
    res = runner.invoke(cdpipe, ["extract", "--dataroot", synth_cfg.out, "--out", str(out), "--random-teacher",
                                 "--image-size", "224x112", "--workers", "0"])
    assert res.exit_code == 2 and "did you mean --teacher-size 224x112" in res.output, res.output
    assert not out.exists()
    from pipeline.extract import check_orientation

    landscape = np.array([[270, 480], [900, 1600]])
    with pytest.raises(ExtractError, match="did you mean --teacher-size 448x224"):
        check_orientation((448, 224), landscape)
    check_orientation((224, 448), landscape)
    check_orientation((224, 224), landscape)
    check_orientation((448, 224), landscape[:, ::-1])  # portrait cameras


def test_an_arrays_own_metadata_damaged_is_reported(small_store, tmp_path):
    """zarr reads the copy of each array's metadata consolidated in the root zarr.json; a reader of one
    array alone reads the array's own zarr.json. One truncated and one whose dtype changed: verify names
    both, and info exits 1 naming them."""
    store = _store_copy(small_store, tmp_path)
    path = os.path.join(store, "points", "zarr.json")
    text = open(path).read()
    open(path, "w").write(text[: len(text) // 2])
    path = os.path.join(store, "labels", "zarr.json")
    meta = json.load(open(path))
    meta["data_type"] = "int8"
    json.dump(meta, open(path, "w"))
    problems = {p["array"]: p["message"] for p in verify_store(store, progress=False)["problems"]}
    assert set(problems) == {"points", "labels"}, problems
    assert "its own zarr.json cannot be read" in problems["points"]
    assert "disagrees with the copy in the root zarr.json" in problems["labels"] and "int8" in problems["labels"]
    res = runner.invoke(cdpipe, ["info", store])
    assert res.exit_code == 1 and "array labels" in res.output and "array points" in res.output, res.output


def test_the_stand_in_teachers_own_world_is_refused_without_its_synth_json(small_dataroot, tmp_path):
    """A stand-in teacher's weights record the world it was trained on; that world is refused for
    extraction even with its synth.json deleted (recognised by its scene tokens), another world passes."""
    from safetensors.torch import save_file

    from pipeline.extract import check_teacher_never_saw

    synth_cfg, root = _copy_world(small_dataroot, tmp_path)
    os.remove(root / "synth.json")
    weights = str(tmp_path / "teacher.safetensors")
    meta = {"stand_in": {"recipe": "semantic", "world": {"seed": synth_cfg.seed, "scenes": synth_cfg.scenes}}}
    save_file({"x": torch.zeros(1)}, weights, metadata={META_KEY: json.dumps(meta)})
    teacher = TeacherConfig(weights=weights)
    with pytest.raises(ExtractError, match=f"synthetic world seed {synth_cfg.seed}, and 2 scenes of"):
        check_teacher_never_saw(teacher, str(root), synth_cfg.version)
    meta["stand_in"]["world"]["seed"] = synth_cfg.seed + 1
    save_file({"x": torch.zeros(1)}, weights, metadata={META_KEY: json.dumps(meta)})
    check_teacher_never_saw(teacher, str(root), synth_cfg.version)


def _set_sweep(store: str, name: str, s: int, edit) -> None:
    """Rewrite sweep ``s`` of array ``name`` with ``edit(row)`` applied (checksums stay valid)."""
    array = zarr.open_group(store, mode="r+")[name]
    row = array[s]
    edit(row)
    array[s] = row


def test_verify_checks_labels_pixels_and_distances(small_store, tmp_path):
    """Values with valid checksums that no extract writes: a label of 40, a seen point's pixel outside
    its image, a point 5 km away. verify names each array and sweep."""
    store = _store_copy(small_store, tmp_path)
    _set_sweep(store, "labels", 0, lambda row: row.__setitem__(3, 40))
    g = zarr.open_group(store, mode="r")
    seen = int(np.nonzero(g["camera"][1][: int(g["num_points"][1])] >= 0)[0][0])
    _set_sweep(store, "pixel", 1, lambda row: row.__setitem__(seen, [5000.0, 10.0]))
    _set_sweep(store, "points", 2, lambda row: row.__setitem__((4, 0), 5000.0))
    found = {(p["array"], p["sweep"]): p["message"] for p in verify_store(store, progress=False)["problems"]}
    assert set(found) == {("labels", 0), ("pixel", 1), ("points", 2)}, found
    assert "labels outside 0-31" in found["labels", 0] and "outside their camera's image" in found["pixel", 1]
    assert "more than 1000 m" in found["points", 2]


# ---------------------------------------------------------------------------------------------------
# the trainer


PRETRAIN = ["pretrain", "--model", "minkunet-tiny", "--head-hidden", "32", "--max-points", "2000",
            "--voxel-size", "0.2", "--warmup", "1"]


def test_bad_values_in_a_store_stop_training_naming_store_array_and_sweep(small_store, tmp_path):
    """NaN written into a sweep's points (checksums valid: an older or foreign writer) stops pretraining
    in one line naming the store, array and sweep; a label of 40 does the same for fine-tuning;
    --skip-bad-sweeps records them and trains on."""
    store = _store_copy(small_store, tmp_path)
    _set_sweep(store, "points", 1, lambda row: row.__setitem__((2, 1), np.nan))
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", store, "--out", str(tmp_path / "a"), "--steps", "2"])
    assert res.exit_code == 2, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert f"{store}: array points, sweep 1, chunk points/c/0/0/0" in line and "NaN or inf" in line
    assert "--skip-bad-sweeps" in line
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", store, "--out", str(tmp_path / "b"), "--steps", "2",
                                  "--skip-bad-sweeps"])
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["sweep"] for x in open(tmp_path / "b" / "skipped_sweeps.jsonl")] == [1]

    _set_sweep(store, "labels", 4, lambda row: row.__setitem__(0, 40))
    from pipeline.store import BadValues

    with pytest.raises(BadValues, match="array labels, sweep 4.*labels up to 40, outside the 32 lidarseg classes"):
        from trainer.evaluate import evaluate_model
        from trainer.model import Segmenter

        evaluate_model(Segmenter("minkunet-tiny"), store, "val", 0.2)


def test_skip_bad_sweeps_into_a_new_folder_records_every_sweep_of_a_damaged_chunk(small_store, tmp_path):
    """A damaged chunk of `done` holds sweeps 0 and 1; --skip-bad-sweeps with an --out that does not exist
    yet creates it, records both sweeps, and trains on sweep 2."""
    store = _store_copy(small_store, tmp_path)
    g = zarr.open_group(store, mode="r")
    path = os.path.join(store, chunk_key(g["done"], 0))
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(data)
    out = tmp_path / "new" / "run"
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", store, "--out", str(out), "--steps", "2", "--batch-size", "1",
                                  "--skip-bad-sweeps"])
    assert res.exit_code == 0, res.output
    skipped = [json.loads(x) for x in open(out / "skipped_sweeps.jsonl")]
    assert sorted(r["sweep"] for r in skipped) == [0, 1]


@pytest.mark.slow
def test_a_resumed_run_keeps_each_step_of_metrics_once(small_store, tmp_path):
    """A run that dies between checkpoints (after step 5, its checkpoint at 4) and is resumed leaves
    metrics.jsonl with steps 1..8, each once, in order."""
    store = small_store[0].out
    out = tmp_path / "run"
    code = ("import sys, trainer.train as t\n"
            "real = t.loss_step\n"
            "def dying(model, batch, cfg, calls=[0]):\n"
            "    calls[0] += 1\n"
            "    if calls[0] == 6: raise SystemExit(9)\n"
            "    return real(model, batch, cfg)\n"
            "t.loss_step = dying\n"
            "from trainer.cli import app\n"
            "app(sys.argv[1:])\n")
    args = [*PRETRAIN, "--store", store, "--out", str(out), "--steps", "8", "--checkpoint-every", "4"]
    died = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True)
    assert died.returncode == 9, died.stderr
    steps = [json.loads(x)["step"] for x in open(out / "metrics.jsonl")]
    assert steps == [1, 2, 3, 4, 5]
    res = runner.invoke(cdtrain, ["pretrain", "--resume", str(out / "checkpoint.pt")])  # nothing else
    assert res.exit_code == 0, res.output
    assert [json.loads(x)["step"] for x in open(out / "metrics.jsonl")] == list(range(1, 9))


def test_pretraining_on_a_store_still_being_written_says_so(small_store, tmp_path):
    """Sweep 1 not written yet (done 0, its per-sweep records at their fill, as before an extract task
    writes them: the extract still running or interrupted) and sweep 2 failed: pretraining says in one line
    that 1 of 3 train sweeps is complete and why, and the checkpoint records how many sweeps it trained on."""
    store = _store_copy(small_store, tmp_path)
    g = zarr.open_group(store, mode="r+")
    done = g["done"][:]
    done[1:3] = 0
    g["done"][:] = done
    scene_index = g["scene_index"][:]
    scene_index[1] = -1  # never written
    g["scene_index"][:] = scene_index
    failure = g["failure"][:]
    failure[2] = "camera image missing: x.jpg"
    g["failure"][:] = failure
    out = tmp_path / "run"
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", store, "--out", str(out), "--steps", "1", "--batch-size", "1"])
    assert res.exit_code == 0, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("warning:")]
    assert "1 of 3 sweeps of split 'train' are complete" in line and "1 not written yet" in line
    assert "1 failed" in line and "training on the 1" in line
    ck = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ck["store_fingerprint"]["complete_sweeps"] == 1


def test_a_batch_larger_than_the_store_is_refused(small_store, tmp_path):
    """3 train sweeps cannot fill a batch of 4: refused in one line (the checkpoint would record 4 while
    the batches held 3)."""
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", small_store[0].out, "--out", str(tmp_path / "r"),
                                  "--steps", "1", "--batch-size", "4"])
    assert res.exit_code == 2 and "--batch-size 4: the store has only 3 complete sweeps" in res.output, res.output
    from trainer.train import EpochBatches

    with pytest.raises(ValueError, match="cannot fill a batch of 4"):
        EpochBatches(3, 4, 0, 0, 10)


def test_occupancy_weight_zero_hides_nothing(small_store, tmp_path):
    """--occ-weight 0 turns the occupancy task off, and with it the masking that only serves the task;
    asking for both is refused in one line."""
    out = tmp_path / "run"
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", small_store[0].out, "--out", str(out), "--steps", "1",
                                  "--occ-weight", "0"])
    assert res.exit_code == 0, res.output
    assert torch.load(out / "checkpoint.pt", weights_only=True)["data_config"]["mask_ratio"] == (0.0, 0.0)
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", small_store[0].out, "--out", str(tmp_path / "r2"),
                                  "--steps", "1", "--occ-weight", "0", "--mask-ratio", "0.3", "0.5"])
    assert res.exit_code == 2 and "--occ-weight 0 turns off" in res.output, res.output


@pytest.mark.parametrize("config, field, value, flag", [
    ("train", "checkpoint_every", 0, "--checkpoint-every 0"), ("train", "warmup", -3, "--warmup -3"),
    ("train", "workers", -1, "--workers -1"), ("train", "lr", math.nan, "--lr nan"),
    ("data", "voxel_size", 0, "--voxel-size 0"), ("data", "max_queries", 0, "--max-queries 0"),
    ("data", "split", "vall", "--split 'vall'"), ("finetune", "labels_percent", 0, "--labels-percent 0"),
    ("finetune", "labels_percent", 150, "--labels-percent 150"), ("finetune", "lr", -1, "--lr -1"),
    ("model", "head_hidden", 0, "--head-hidden 0"),
])
def test_configs_refuse_bad_values_naming_the_flag(config, field, value, flag):
    from trainer.config import DataConfig, FinetuneConfig, ModelConfig, TrainConfig

    make = {"train": lambda **kw: TrainConfig(out="x", **kw), "data": lambda **kw: DataConfig(store="s", **kw),
            "finetune": lambda **kw: FinetuneConfig(out="x", **kw), "model": lambda **kw: ModelConfig(**kw)}[config]
    make()  # the defaults pass
    with pytest.raises(ValueError) as caught:
        make(**{field: value})
    assert str(caught.value).startswith(flag) and "\n" not in str(caught.value)


def test_a_batch_without_teacher_features_or_labels_logs_null_not_nan(small_store):
    """No point of the batch seen by a camera: the distillation term is 0 with a gradient path and its
    metric null; no labelled point: the segmentation loss is 0; a NaN reaching the metrics file is written
    as null, never as bare NaN."""
    from trainer.batch import collate
    from trainer.config import DataConfig, ModelConfig, TrainConfig
    from trainer.data import StoreDataset
    from trainer.losses import seg_loss
    from trainer.model import Student
    from trainer.run import json_line
    from trainer.train import loss_step

    ds = StoreDataset(DataConfig(store=small_store[0].out, voxel_size=0.2, max_queries=256, max_points=2000))
    sample = ds[0]
    sample.valid[:] = False
    batch = collate([sample], 0.2)
    model = Student(ModelConfig(arch="minkunet-tiny", feature_dim=int(ds.attrs["feature_dim"]), head_hidden=32))
    loss, metrics = loss_step(model, batch, TrainConfig(out="x"))
    assert metrics["distill"] is None and math.isfinite(metrics["loss"]) and loss.requires_grad
    loss.backward()
    logits = torch.randn(5, 16, requires_grad=True)
    empty = seg_loss(logits, torch.zeros(5, dtype=torch.long), lovasz=True)
    assert empty.item() == 0.0 and empty.requires_grad
    line = json_line({"step": 1, "distill": float("nan"), "occ": float("inf"), "loss": 0.5})
    assert json.loads(line) == {"step": 1, "distill": None, "occ": None, "loss": 0.5}


def test_ctrl_c_names_the_last_checkpoint(small_store, tmp_path, monkeypatch):
    """Ctrl-C during pretraining ends with one line naming the checkpoint that survives, its step, and how
    to go on (exit 130); before the first checkpoint, it says there is none."""
    import trainer.train as train

    real = train.loss_step
    calls = []

    def interrupted_at_step_4(model, batch, cfg):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(model, batch, cfg)

    monkeypatch.setattr(train, "loss_step", interrupted_at_step_4)
    out = tmp_path / "run"
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", small_store[0].out, "--out", str(out), "--steps", "6",
                                  "--checkpoint-every", "2"])
    assert res.exit_code == 130, res.output
    assert (f"interrupted: the last checkpoint is {out / 'checkpoint.pt'} (step 2); continue with "
            f"`cdtrain pretrain --resume {out / 'checkpoint.pt'}`") in res.output
    calls.clear()
    res = runner.invoke(cdtrain, [*PRETRAIN, "--store", small_store[0].out, "--out", str(tmp_path / "r2"),
                                  "--steps", "6", "--checkpoint-every", "5"])
    assert res.exit_code == 130 and "no checkpoint was written yet" in res.output, res.output
