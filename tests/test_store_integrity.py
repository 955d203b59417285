"""Stores a team can trust: checksums every reader checks, `cdpipe verify` and `info`, bad inputs that
fail only their sweep, one writer at a time, reading by URL, and input checked before any work."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from pipeline.cli import app as cdpipe
from pipeline.extract import run_extract
from pipeline.frames import build_nuscenes_index
from pipeline.lock import LockError, StoreLock, check_holder, lock_path, read_lock
from pipeline.store import ARRAYS, BadValues, DamagedChunk, StoreError, chunk_key, open_store, read_boxes, read_rows
from pipeline.verify import store_info, verify_store
from tests.conftest import edit_table, store_config
from tests.http_store import serve
from trainer.cli import app as cdtrain

runner = CliRunner()


def flip_byte(path: str, at: float = 0.5) -> None:
    data = bytearray(open(path, "rb").read())
    data[int(len(data) * at)] ^= 0xFF
    open(path, "wb").write(data)


@pytest.fixture()
def store_copy(small_store, tmp_path):
    cfg, _ = small_store
    copy = tmp_path / "store.zarr"
    shutil.copytree(cfg.out, copy)
    return str(copy)


def test_verify_names_every_damaged_and_missing_chunk(store_copy, small_store):
    """One byte flipped in a chunk of each kind of array (unsharded patch maps, a shard of points, a chunk of
    per-sweep numbers, a chunk of strings) and one chunk deleted: verify names each with its array,
    sweep, sample token (where readable) and chunk key, and exits 1; a plain zarr reader raises on the
    flipped chunk instead of returning wrong numbers; the untouched store verifies clean."""
    g = zarr.open_group(store_copy, mode="r")
    tokens = g["sample_token"][:]
    flip_byte(os.path.join(store_copy, chunk_key(g["patches"], 1)))  # patches/c/1/0/0/0/0
    flip_byte(os.path.join(store_copy, chunk_key(g["points"], 2)), 0.3)  # shard of sweeps 2-3
    flip_byte(os.path.join(store_copy, chunk_key(g["num_queries"], 2)))  # sweeps 2-3
    flip_byte(os.path.join(store_copy, chunk_key(g["lidar_token"], 0)))  # sweeps 0-1
    os.remove(os.path.join(store_copy, chunk_key(g["occ_labels"], 0)))  # shard of sweeps 0-1, gone
    with pytest.raises(ValueError, match="checksum"):
        zarr.open_group(store_copy, mode="r")["patches"][1]

    report = verify_store(store_copy, progress=False)
    found = {(p["kind"], p["array"], p["sweep"]): p for p in report["problems"]}
    (points_sweep,) = [s for kind, name, s in found if name == "points"]  # the inner chunk the flip hit
    assert points_sweep in (2, 3)  # named although the sweep's num_queries chunk is damaged too
    assert set(found) == {("damaged", "patches", 1), ("damaged", "points", points_sweep),
                          ("damaged", "num_queries", 2), ("damaged", "lidar_token", 0), ("missing", "occ_labels", 0)}
    assert found["damaged", "patches", 1]["chunk"] == "patches/c/1/0/0/0/0"
    assert found["damaged", "patches", 1]["sample_token"] == tokens[1]
    assert found["damaged", "points", points_sweep]["sample_token"] == tokens[points_sweep]
    assert found["damaged", "points", points_sweep]["chunk"] == "points/c/1/0/0"
    assert found["missing", "occ_labels", 0]["chunk"] == "occ_labels/c/0/0"

    res = runner.invoke(cdpipe, ["verify", store_copy, "--no-progress"])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.startswith(("damaged", "missing"))]
    assert len(lines) == 5 and any("array patches, sweep 1, sample " + tokens[1] + ", chunk patches/c/1/0/0/0/0" in line
                                   for line in lines)
    res = runner.invoke(cdpipe, ["verify", store_copy, "--json", "--no-progress"])
    assert res.exit_code == 1 and len(json.loads(res.output)["problems"]) == 5

    clean = runner.invoke(cdpipe, ["verify", small_store[0].out, "--no-progress"])
    assert clean.exit_code == 0 and ": OK" in clean.output and "6 of 6 sweeps complete" in clean.output

    root_meta = os.path.join(store_copy, "zarr.json")
    open(root_meta, "w").write(open(root_meta).read()[:100])
    for command in ("info", "verify"):
        res = runner.invoke(cdpipe, [command, store_copy])
        assert res.exit_code in (1, 2) and "metadata that cannot be read" in res.output, res.output
        assert "Traceback" not in res.output


def test_verify_reports_non_finite_features_and_schema_problems(store_copy):
    """Values written wrong but with valid checksums (NaN in a patch map, a voxel off the grid), a shape
    that disagrees with the attributes, and an older schema: each is named."""
    g = zarr.open_group(store_copy, mode="r+")
    maps = g["patches"][2]
    maps[1, 2, 3, 7] = np.nan
    g["patches"][2] = maps
    vox = g["occ_voxels"][3]
    vox[0] = (999, 0, 0)
    g["occ_voxels"][3] = vox
    hw = g["camera_hw"][:]
    hw[4] = 0  # the frame of sweep 4's pixels (and of its features) lost
    g["camera_hw"][:] = hw
    kinds = {(p["kind"], p["array"], p["sweep"]) for p in verify_store(store_copy, progress=False)["problems"]}
    assert kinds == {("values", "patches", 2), ("values", "occ_voxels", 3), ("values", "camera_hw", 4)}
    for key, value, says in (("layout", "cubes", "layout 'cubes'"), ("patch_grid", [8, 8], "patch_grid [8, 8]")):
        old = g.attrs[key]
        g.attrs[key] = value
        (problem,) = verify_store(store_copy, progress=False)["problems"]
        assert problem["kind"] == "attributes" and says in problem["message"]
        g.attrs[key] = old
    g.attrs["max_points"] = g.attrs["max_points"] + 1
    assert any(p["kind"] == "shape" and p["array"] == "points"
               for p in verify_store(store_copy, progress=False)["problems"])
    g.attrs["schema_version"] = 2
    (problem,) = verify_store(store_copy, progress=False)["problems"]
    assert "schema_version 2" in problem["message"]


def test_verify_and_read_boxes_report_bad_boxes_naming_the_sweep(store_copy):
    """Boxes written wrong but with valid checksums (a size of 0, a class outside the 10, a NaN centre, more
    boxes than max_boxes, a transform that is not rigid): verify names each with its array, sweep, sample
    token and chunk, and read_boxes refuses the sweep in one line naming them; a velocity that cannot be
    computed (NaN) is no problem."""
    g = zarr.open_group(store_copy, mode="r+")
    tokens = g["sample_token"][:]

    def edit(name: str, s: int, where, value) -> None:
        row = g[name][s]
        row[where] = value
        g[name][s] = row

    edit("box_size", 1, (0, 1), 0.0)
    edit("box_class", 2, 3, 12)
    edit("box_centre", 3, (1, 0), np.nan)
    edit("box_velocity", 0, 0, np.nan)
    for name, where, value in (("num_boxes", 4, g.attrs["max_boxes"] + 1), ("global_from_lidar", (5, 0, 0), 2.0)):
        column = g[name][:]
        column[where] = value
        g[name][:] = column
    report = verify_store(store_copy, progress=False)
    found = {(p["kind"], p["array"], p["sweep"]): p for p in report["problems"]}
    assert set(found) == {("values", "box_size", 1), ("values", "box_class", 2), ("values", "box_centre", 3),
                          ("values", "num_boxes", 4), ("values", "global_from_lidar", 5)}
    assert found["values", "box_class", 2]["sample_token"] == tokens[2]
    assert "12" in found["values", "box_class", 2]["message"]
    assert found["values", "box_size", 1]["chunk"] == chunk_key(g["box_size"], 1)
    res = runner.invoke(cdpipe, ["verify", "--store", store_copy, "--no-progress"])
    assert res.exit_code == 1
    assert (f"values: array box_size, sweep 1, sample {tokens[1]}, chunk {chunk_key(g['box_size'], 1)}: 1 boxes have "
            f"a size that is not positive") in res.output
    for s, name in ((1, "box_size"), (2, "box_class"), (3, "box_centre"), (4, "num_boxes"), (5, "global_from_lidar")):
        with pytest.raises(BadValues, match=f"array {name}, sweep {s} \\(sample {tokens[s]}"):
            read_boxes(store_copy, s)
    assert np.isnan(read_boxes(store_copy, 0)["box_velocity"][0]).all()
    assert store_info(store_copy)["boxes_per_class"]["car"] > 0  # info still counts the classes it can name


@pytest.mark.slow
def test_damaged_chunk_stops_pretraining_in_one_line_or_is_skipped(store_copy, tmp_path):
    """The same flip stops `cdtrain pretrain` (loader in a worker process) with one line naming array,
    sweep, token and chunk; with --skip-bad-sweeps it trains on and records the sweep."""
    g = zarr.open_group(store_copy, mode="r")
    flip_byte(os.path.join(store_copy, chunk_key(g["patches"], 1)))
    args = ["pretrain", "--store", store_copy, "--model", "minkunet-tiny", "--head-hidden", "32", "--steps", "3",
            "--workers", "1", "--max-points", "3000"]
    res = runner.invoke(cdtrain, [*args, "--out", str(tmp_path / "stop")])
    assert res.exit_code == 2
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert f"array patches, sweep 1 (sample {g['sample_token'][1]}), chunk patches/c/1/0/0/0/0" in line
    assert "crc32c checksum mismatch" in line and "Traceback" not in res.output
    res = runner.invoke(cdtrain, [*args, "--out", str(tmp_path / "skip"), "--skip-bad-sweeps"])
    assert res.exit_code == 0, res.output
    skipped = [json.loads(x) for x in open(tmp_path / "skip" / "skipped_sweeps.jsonl")]
    assert {r["sweep"] for r in skipped} == {1} and "patches/c/1/0/0/0/0" in skipped[0]["error"]


def test_damaged_chunk_error_survives_a_loader_worker():
    """PyTorch re-raises a worker's exception as type(e)(its traceback text): the message stays our line."""
    text = ("Caught DamagedChunk in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\npipeline.store.DamagedChunk: s.zarr: array features, sweep 1 (sample t)\n')
    assert str(DamagedChunk(text)) == "s.zarr: array features, sweep 1 (sample t)"


@pytest.mark.slow
def test_bad_inputs_fail_only_their_sweep_and_nothing_outside_the_dataroot_is_read(small_dataroot, tmp_path):
    """A world without lidarseg (so no label count guards the points) and six faults, extracted through
    the CLI: a LiDAR filename with ../ and one absolute, both naming a file outside the dataroot; a LiDAR
    file truncated mid-point; a non-finite LiDAR ego pose; a camera image missing; NaN in one camera's
    calibration. The five sweeps fail with their token and reason, no byte of the outside file reaches
    the store, the camera is left out with a warning, the last sweep is complete, and the job exits 1
    saying so."""
    synth_cfg, _ = small_dataroot
    root = tmp_path / "data" / "nuscenes"
    shutil.copytree(synth_cfg.out, root)
    os.remove(root / synth_cfg.version / "lidarseg.json")
    index = build_nuscenes_index(str(root), synth_cfg.version)
    assert index.label_path is None
    secret = tmp_path / "secret.bin"
    np.full(5 * 1000, 12345.0, np.float32).tofile(secret)  # a valid-looking point cloud
    lidar_sd = {index.lidar_token[s]: s for s in range(6)}

    def lidar_names(records):
        for r in records:
            if lidar_sd.get(r["token"]) == 0:
                r["filename"] = "../../secret.bin"
            elif lidar_sd.get(r["token"]) == 1:
                r["filename"] = str(secret)

    edit_table(root, synth_cfg.version, "sample_data", lidar_names)
    raw = open(index.lidar_path[2], "rb").read()
    open(index.lidar_path[2], "wb").write(raw[:-8])  # not a whole 20-byte point
    sd = {r["token"]: r for r in json.load(open(root / synth_cfg.version / "sample_data.json"))}
    pose_of_3 = sd[index.lidar_token[3]]["ego_pose_token"]
    edit_table(root, synth_cfg.version, "ego_pose",
                lambda recs: [r.update(translation=[math.nan, 0.0, 0.0]) for r in recs if r["token"] == pose_of_3])
    nusc_sample = {r["token"]: r for r in json.load(open(root / synth_cfg.version / "sample.json"))}
    cam_back_sd = [r for r in sd.values() if r["sample_token"] == index.sample_token[5]
                   and "CAM_BACK/" in r["filename"]][0]
    cs_token = cam_back_sd["calibrated_sensor_token"]
    edit_table(root, synth_cfg.version, "calibrated_sensor",
                lambda recs: [r.update(rotation=[math.nan, 0.0, 0.0, 1.0]) for r in recs if r["token"] == cs_token])
    assert nusc_sample  # the tables still load
    missing_image = index.image_path[4][1]
    os.remove(missing_image)

    out = str(tmp_path / "store.zarr")
    res = runner.invoke(cdpipe, ["extract", "--dataroot", str(root), "--out", out, "--random-teacher",
                                 "--teacher-size", "224x112", "--workers", "0", "--tasks-per-worker", "1",
                                 "--torch-threads", "1"])
    assert res.exit_code == 1, res.output
    assert "5 of 6 sweeps failed" in res.output and "Traceback" not in res.output
    info = store_info(out)
    failures = {f["sweep"]: f for f in info["failures"]}
    assert set(failures) == {0, 1, 2, 3, 4}
    assert "'../../secret.bin' lies outside the dataroot" in failures[0]["reason"]
    assert f"{str(secret)!r} lies outside the dataroot" in failures[1]["reason"]
    assert "not a whole number of points" in failures[2]["reason"]
    assert "non-finite" in failures[3]["reason"] and pose_of_3 in failures[3]["reason"]
    assert "camera image missing: " + missing_image in failures[4]["reason"]
    for s in range(5):
        assert failures[s]["sample_token"] == index.sample_token[s]
        assert index.sample_token[s] in failures[s]["reason"]
    g = zarr.open_group(out, mode="r")
    np.testing.assert_array_equal(g["done"][:], [0, 0, 0, 0, 0, 1])
    assert not (g["points"][:] == 12345.0).any()
    cam_back = g.attrs["cameras"].index("CAM_BACK")
    warned = {w["sweep"]: w["warning"] for w in info["warnings"]}
    assert 5 in warned and warned[5].startswith("CAM_BACK left out: calibrated_sensor " + cs_token)
    n5 = int(g["num_points"][5])
    camera5 = g["camera"][5, :n5]
    assert not (camera5 == cam_back).any() and (camera5 >= 0).mean() > 0.3
    kinds = {(p["kind"], p["sweep"]) for p in verify_store(out, progress=False)["problems"]}
    assert kinds == {("failed", s) for s in range(5)}

    res = runner.invoke(cdpipe, ["extract", "--dataroot", str(root), "--out", str(tmp_path / "strict.zarr"),
                                 "--random-teacher", "--teacher-size", "224x112", "--workers", "0", "--strict"])
    assert res.exit_code == 2 and "--strict" in res.output and "outside the dataroot" in res.output

    # fix two inputs and rerun: the store is resumed (its padded sizes kept), and those sweeps complete
    # unless one has more points than the store has rows, which then says how to make room
    open(index.lidar_path[2], "wb").write(raw)
    shutil.copy(os.path.join(synth_cfg.out, os.path.relpath(missing_image, root)), missing_image)
    res = runner.invoke(cdpipe, ["extract", "--dataroot", str(root), "--out", out, "--random-teacher",
                                 "--teacher-size", "224x112", "--workers", "0", "--tasks-per-worker", "1",
                                 "--torch-threads", "1"])
    assert res.exit_code == 1 and "other settings" not in res.output, res.output
    g = zarr.open_group(out, mode="r")
    assert g["done"][4] == 1 and (g["done"][2] == 1 or "--overwrite" in str(g["failure"][2]))
    assert {f["sweep"] for f in store_info(out)["failures"]} >= {0, 1, 3}


def test_malformed_table_records_fail_their_sweep_or_camera(small_dataroot, tmp_path):
    """Records the tables point to that are absent or malformed, and an empty LiDAR file, are named per
    sweep (or per camera) when the index is built, instead of stopping the whole job."""
    synth_cfg, _ = small_dataroot
    root = tmp_path / "nuscenes"
    shutil.copytree(synth_cfg.out, root)
    index = build_nuscenes_index(str(root), synth_cfg.version)
    sd = json.load(open(root / synth_cfg.version / "sample_data.json"))
    front_of_1 = [r for r in sd if r["sample_token"] == index.sample_token[1] and "/CAM_FRONT/" in r["filename"]][0]
    lidar_of_2 = [r for r in sd if r["token"] == index.lidar_token[2]][0]

    def dangle(records):
        for r in records:
            if r["token"] == lidar_of_2["token"]:
                r["ego_pose_token"] = "nope"

    edit_table(root, synth_cfg.version, "sample_data", dangle)
    ragged = front_of_1["calibrated_sensor_token"]
    edit_table(root, synth_cfg.version, "calibrated_sensor",
                lambda recs: [r.update(camera_intrinsic=[[1, 0], [0, 1, 0], [0, 0, 1]]) for r in recs
                              if r["token"] == ragged])
    open(index.lidar_path[5], "wb").close()  # empty
    got = build_nuscenes_index(str(root), synth_cfg.version)
    assert "missing or malformed" in got.failure[2] and "nope" in got.failure[2]
    assert "is empty" in got.failure[5]
    scene_0 = range(0, 3)  # the ragged intrinsics belong to scene 0's CAM_FRONT sensor
    for s in scene_0:
        if not got.failure[s]:
            assert not got.camera_ok[s, 0] and "CAM_FRONT left out: camera_intrinsic" in got.warnings[s][0]
    assert not got.failure[0] and not got.failure[4]


@pytest.mark.slow
def test_rerun_repairs_a_damaged_done_chunk(store_copy, small_store):
    """A damaged chunk of `done` makes its sweeps count as not done: the rerun extracts them again, which
    rewrites the chunk, and the store verifies clean."""
    g = zarr.open_group(store_copy, mode="r")
    flip_byte(os.path.join(store_copy, chunk_key(g["done"], 2)))
    assert [p["kind"] for p in verify_store(store_copy, progress=False)["problems"]] == ["damaged"]
    summary = run_extract(dataclasses.replace(small_store[0], out=store_copy), progress=False)
    assert summary["resumed_from"] == 4 and not summary["job"]["failures"]
    assert verify_store(store_copy, progress=False)["problems"] == []


def test_lock_refuses_a_second_writer_and_breaks_only_a_stale_lock(small_dataroot, tmp_path):
    store = str(tmp_path / "store.zarr")
    first = StoreLock(store).acquire()
    try:
        with pytest.raises(LockError, match=f"another job.*{socket.gethostname()}.*pid {os.getpid()}"):
            StoreLock(store, break_stale=True).acquire()  # a live holder is never broken
        cfg = store_config(small_dataroot[0], store)
        with pytest.raises(LockError, match="being written by another job"):
            run_extract(cfg, progress=False)
        assert not os.path.exists(store)  # refused before anything was written
        check_holder(store, first.job)
        with pytest.raises(Exception, match="no longer holds the store's lock"):
            check_holder(store, "another-job")
    finally:
        first.release()
    assert not os.path.exists(lock_path(store))

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {"job": "crashed", "host": socket.gethostname(), "pid": gone.pid,
              "started_utc": "2026-01-01T00:00:00+00:00", "heartbeat_utc": "2026-01-01T00:00:00+00:00"}
    with open(lock_path(store), "w") as f:
        json.dump(record, f)
    with open(lock_path(store), "w") as f:
        f.write('{"job": "half-writ')  # a lock file that does not parse is stale, broken only when asked
    with pytest.raises(LockError, match="stale lock.*cannot be read.*--break-lock"):
        StoreLock(store).acquire()
    other_host = {**record, "host": "elsewhere", "pid": 1}  # alive there, perhaps, but silent for a year
    with open(lock_path(store), "w") as f:
        json.dump(other_host, f)
    with pytest.raises(LockError, match="no heartbeat for"):
        StoreLock(store).acquire()
    lock = StoreLock(store, break_stale=True).acquire()
    assert lock.broken["host"] == "elsewhere"
    lock.release()


def test_a_plain_rerun_breaks_the_lock_of_a_client_killed_on_this_host(tmp_path):
    """A client killed with SIGKILL leaves its lock behind; its process is gone from this host, so the
    same command run again takes the store over (and says so) without --break-lock."""
    store = str(tmp_path / "store.zarr")
    code = ("import os, signal, sys; from pipeline.lock import StoreLock; lock = StoreLock(sys.argv[1]).acquire(); "
            "print(lock.job, flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert killed.returncode == -9
    job = killed.stdout.strip()
    assert read_lock(store)["job"] == job  # the lock outlived its client
    lock = StoreLock(store).acquire()
    try:
        assert lock.broken["job"] == job and read_lock(store)["job"] == lock.job
    finally:
        lock.release()
    # the same host name, but another pid namespace (a container): its pids are not ours to judge, and a
    # fresh heartbeat says the job lives
    elsewhere = {**read_lock_after(store, code, store), "process_space": "another-boot/4026531836"}
    with open(lock_path(store), "w") as f:
        json.dump(elsewhere, f)
    with pytest.raises(LockError, match="being written by another job"):
        StoreLock(store).acquire()


def read_lock_after(store: str, code: str, *args: str) -> dict:
    """The lock record a client leaves when killed right after taking it."""
    subprocess.run([sys.executable, "-c", code, *args], capture_output=True, cwd=os.path.dirname(os.path.dirname(
        __file__)))
    return read_lock(store)


def test_lock_races_have_one_winner_and_the_loser_names_it(tmp_path):
    """Eight threads take one lock at once, twenty times; then eight break one stale lock at once. Each
    time exactly one wins, and every other is refused naming the winner (never an unreadable lock)."""
    import threading

    store = str(tmp_path / "store.zarr")

    def race(break_stale: bool) -> tuple[list, list]:
        won, refused, start = [], [], threading.Barrier(8)

        def take():
            lock = StoreLock(store, break_stale=break_stale)
            start.wait()
            try:
                won.append(lock.acquire())
            except LockError as e:
                refused.append(str(e))

        threads = [threading.Thread(target=take) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return won, refused

    for _ in range(20):
        won, refused = race(False)
        assert len(won) == 1 and len(refused) == 7
        assert all(f"job {won[0].job}" in r and "being written by another job" in r for r in refused)
        won[0].release()
    for _ in range(10):
        with open(lock_path(store), "w") as f:
            json.dump({"job": "dead", "host": "elsewhere", "pid": 1, "started_utc": "2026-01-01T00:00:00+00:00",
                       "heartbeat_utc": "2026-01-01T00:00:00+00:00"}, f)
        won, refused = race(True)
        assert len(won) == 1 and read_lock(store)["job"] == won[0].job
        assert all(f"job {won[0].job}" in r for r in refused)
        won[0].release()
    with open(lock_path(store), "w") as f:
        f.write("")  # a lock that was never completed
    with pytest.raises(LockError, match="stale lock.*cannot be read.*--break-lock"):
        StoreLock(store).acquire()
    StoreLock(store, break_stale=True).acquire().release()


def test_a_task_of_a_job_that_lost_the_lock_writes_nothing(store_copy, small_store):
    """Workers left from a killed client: another job holds the store now, so their task neither
    rewrites nor marks done any sweep, even one whose input has since gone bad."""
    from pipeline.extract import extract_group

    cfg = dataclasses.replace(small_store[0], out=store_copy)
    index = build_nuscenes_index(cfg.dataroot, cfg.version).select(range(0, 2))
    g = zarr.open_group(store_copy, mode="r")
    before = {name: g[name][:2] for name in ("done", "num_points", "patches")}
    holder = StoreLock(store_copy).acquire()
    try:
        with pytest.raises(Exception, match="no longer holds the store's lock"):
            extract_group(cfg, index, 0, job="killed-client-job")
    finally:
        holder.release()
    for name, value in before.items():
        np.testing.assert_array_equal(g[name][:2], value, err_msg=name)


@pytest.mark.slow
def test_store_read_by_http_url(small_store, tmp_path):
    """A store served read-only over HTTP on 127.0.0.1: info and verify read it, a short pretraining
    streams it; writing to a URL and a scheme without its extra are refused in one line."""
    cfg, _ = small_store
    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(cfg.out, served / "store.zarr")
    with serve(str(served)) as base:
        url = f"{base}/store.zarr"
        res = runner.invoke(cdpipe, ["info", url, "--json"])
        assert res.exit_code == 0, res.output
        info = json.loads(res.output)
        assert info["sweeps"] == 6 and info["store"] == url and info["points"] == store_info(cfg.out)["points"]
        res = runner.invoke(cdpipe, ["verify", url, "--no-progress"])
        assert res.exit_code == 0 and ": OK" in res.output, res.output
        res = runner.invoke(cdtrain, ["pretrain", "--store", url, "--out", str(tmp_path / "run"), "--model",
                                      "minkunet-tiny", "--head-hidden", "32", "--steps", "2", "--max-points", "3000"])
        assert res.exit_code == 0, res.output
        with pytest.raises(StoreError, match="read-only"):
            open_store(url, mode="r+")
        g = open_store(url)
    with pytest.raises(StoreError, match="array patches, sweep 0 .*could not be read") as error:
        read_rows(g, "patches", 0)  # the server is gone: not a damaged chunk, and not skipped as one
    assert not isinstance(error.value, DamagedChunk)
    with pytest.raises(StoreError, match="could not be reached"):
        open_store(url)
    with pytest.raises(StoreError, match=r"pip install 'cleverdistiller-pipe\[s3\]'"):
        open_store("s3://bucket/store.zarr")


def test_a_server_that_ignores_byte_ranges_is_named_as_such(small_store, tmp_path):
    """Python's plain http.server answers a range request with the whole file: zarr would decode a
    shard's wrong bytes (which the checksums would catch, blaming the data). Opening the store asks for
    one byte first and says in one line that the server ignores byte ranges; `cdpipe info` and `verify`
    print that line, never a 'damaged' chunk."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(small_store[0].out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(StoreError, match="the server ignores HTTP byte ranges") as caught:
            store_info(url)
        assert not isinstance(caught.value, DamagedChunk) and "\n" not in str(caught.value)
        res = runner.invoke(cdpipe, ["info", url])
        assert res.exit_code == 2 and res.output.count("\n") == 1 and "byte ranges" in res.output, res.output
        res = runner.invoke(cdpipe, ["verify", url])
        assert res.exit_code == 1 and "byte ranges" in res.output and "damaged:" not in res.output, res.output
    finally:
        server.shutdown()
        server.server_close()


def test_extract_input_is_checked_before_any_work(small_dataroot, tmp_path):
    """Each of these exits 2 with one line, before a cluster starts (no store, no lock is left)."""
    cfg, _ = small_dataroot
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep")
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "x.txt").write_text("keep")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    base = ["extract", "--dataroot", cfg.out, "--teacher-size", "224x112"]
    cases = [
        ([*base, "--out", str(a_file), "--random-teacher"], "is a file"),
        ([*base, "--out", str(folder), "--random-teacher"], "not a Zarr store"),
        ([*base, "--out", str(tmp_path / "s.zarr"), "--random-teacher", "--teacher", "vit_smal_patch14_dinov2"],
         "closest: vit_small_patch14_dinov2"),
        ([*base, "--out", str(tmp_path / "s.zarr"), "--teacher-weights", str(junk)], "junk.pth cannot be read"),
        ([*base, "--out", "http://127.0.0.1:9/s.zarr", "--random-teacher"], "local paths only"),
        ([*base[:-2], "--out", str(tmp_path / "s.zarr"), "--random-teacher", "--teacher-size", "448by224"],
         "WIDTHxHEIGHT"),
        ([*base, "--out", str(tmp_path / "s.zarr"), "--random-teacher", "--teacher", "resnet18"],
         "cannot be built as a ViT"),
        ([*base[:-2], "--out", str(tmp_path / "s.zarr"), "--random-teacher", "--teacher-size", "200x112"],
         "multiples of the teacher's patch size 14x14, e.g. 196x112"),
        ([*base, "--out", str(a_file / "s.zarr"), "--random-teacher"], "is a file, not a folder"),
        ([*base, "--out", str(tmp_path / "s.zarr")], "--random-teacher"),
    ]
    for args, expected in cases:
        res = runner.invoke(cdpipe, args)
        assert res.exit_code == 2 and expected in res.output and "Traceback" not in res.output, (args, res.output)
        assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output
    assert a_file.read_text() == "keep" and (folder / "x.txt").read_text() == "keep"
    assert not (tmp_path / "s.zarr").exists() and not os.path.exists(lock_path(str(tmp_path / "s.zarr")))
    res = runner.invoke(cdpipe, ["synth", "--out", str(tmp_path / "w"), "--image-size", "450x800x1"])
    assert res.exit_code == 2 and "WIDTHxHEIGHT" in res.output


@pytest.mark.slow
def test_teacher_input_size_reaches_the_teacher_as_height_by_width(small_dataroot, tmp_path):
    """`--teacher-size 112x56` is WIDTHxHEIGHT: the store records [56, 112] (H, W) and its features equal a
    reference ViT run on images resized to 112 wide and 56 high (and not the transposed size). Written
    through a file:// URL."""
    from tests.test_extract import reference_features

    synth_cfg, _ = small_dataroot
    out = str(tmp_path / "s.zarr")
    res = runner.invoke(cdpipe, ["extract", "--dataroot", synth_cfg.out, "--out", "file://" + out, "--random-teacher",
                                 "--teacher-size", "112x56", "--split", "val", "--workers", "0",
                                 "--tasks-per-worker", "1", "--torch-threads", "1"])
    assert res.exit_code == 0, res.output
    g = open_store(out)
    assert g.attrs["teacher"]["image_size"] == [56, 112]
    stored, ref = reference_features(out, 0, (56, 112))
    np.testing.assert_allclose(stored, ref, rtol=2e-3, atol=2e-3)
    _, transposed = reference_features(out, 0, (112, 56))
    assert np.abs(stored - transposed).mean() > 10 * np.abs(stored - ref).mean()


class NotATensor:  # a pickled object of this class needs our code to unpickle: weights_only refuses it
    pass


def test_resume_from_a_pickled_checkpoint_is_refused_in_one_line(small_store, tmp_path):
    import torch

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"step": 1, "extra": NotATensor()}, out / "checkpoint.pt")
    res = runner.invoke(cdtrain, ["pretrain", "--store", small_store[0].out, "--out", str(out), "--model",
                                  "minkunet-tiny", "--steps", "2", "--resume", str(out / "checkpoint.pt")])
    assert res.exit_code == 2 and "checkpoint.pt cannot be read" in res.output and "Traceback" not in res.output


BOX_ARRAYS = tuple(spec.name for spec in ARRAYS if "boxes" in spec.when)


def same_arrays(ref_path: str, path: str) -> tuple[dict, dict]:
    """Assert two stores hold the same arrays with equal values; return their attributes."""
    ref, got = zarr.open_group(ref_path, mode="r"), zarr.open_group(path, mode="r")
    assert sorted(ref.array_keys()) == sorted(got.array_keys())
    for name in ref.array_keys():
        np.testing.assert_array_equal(ref[name][:], got[name][:], err_msg=name)
    return dict(ref.attrs), dict(got.attrs)


def _downgrade(src: str, dst: str, version: int) -> None:
    """Write ``src`` (current schema; before 4, the points layout in float16) as the schema ``version``
    store it stands for: without the attributes classes and sensors; before 5, also without the boxes, their
    arrays and attributes; before 4, also without the layout
    attributes; before 3, no checksums, no failure/warnings/camera_hw arrays, none of the attributes added
    in 3; schema 1 also shards features and loses its occupancy targets (replaced by junk, as its rule
    differed)."""
    from zarr.codecs import BloscCodec

    g = zarr.open_group(src, mode="r")
    dropped = ("classes", "sensors")
    dropped += ("max_boxes", "has_boxes", "detection_classes") if version < 5 else ()
    dropped += ("layout", "feature_encoding", "patch_grid") if version < 4 else ()
    attrs = {k: v for k, v in g.attrs.items() if k not in dropped}
    attrs["schema_version"] = version
    if version >= 3:  # the arrays as they are, but for the boxes
        shutil.copytree(src, dst)
        for name in BOX_ARRAYS if version < 5 else ():
            shutil.rmtree(os.path.join(dst, name))
        out = zarr.open_group(dst, mode="r+")
        out.attrs.clear()
        out.attrs.update(attrs)
        zarr.consolidate_metadata(dst)
        return
    attrs["teacher"] = {k: v for k, v in attrs["teacher"].items()
                        if k not in ("create_model", "resize", "normalise", "forward")}
    attrs["occupancy"] = {k: v for k, v in attrs["occupancy"].items()
                          if k != "free_draw" and (version > 1 or k != "near_surface_m")}
    out = zarr.open_group(dst, mode="w")
    out.attrs.update(attrs)
    for name in g.array_keys():
        if name in ("failure", "warnings", "camera_hw", *BOX_ARRAYS):
            continue
        a = g[name]
        shards = (attrs["sweeps_per_shard"], *a.shape[1:]) if version == 1 and name == "features" else a.shards
        old = out.create_array(name, shape=a.shape, chunks=a.chunks, shards=shards,
                               dtype=str if a.dtype.kind in "OUT" else a.dtype,
                               fill_value=a.fill_value,
                               compressors="auto" if a.dtype.kind in "OUT" else
                               BloscCodec(cname="zstd", clevel=1, shuffle="shuffle", typesize=a.dtype.itemsize))
        data = a[:]
        if version == 1 and name in ("occ_voxels", "occ_labels"):
            data = np.zeros_like(data)
        old[:] = data
    zarr.consolidate_metadata(dst)


# the newest and the oldest schema in the fast tier; the three between (about 5 s each) are marked slow
@pytest.mark.parametrize("version", [5, *(pytest.param(v, marks=pytest.mark.slow) for v in (4, 3, 2)), 1])
def test_older_stores_are_refused_naming_migrate_which_upgrades_them(small_points_store, tmp_path, version):
    """A schema-1 to -5 store is refused in one line that names `cdpipe migrate`; migrate writes a store that
    verifies clean and equals the one extract writes today in the points layout, array by array (schema 5:
    copied, its nuScenes classes and LiDAR recorded; before, the boxes and transforms read from the dataset's
    tables; schema 1: occupancy targets recomputed from the points),
    and attribute by attribute (but for the PIL version and device, which the jobs before schema 3 did not
    record, and the provenance)."""
    cfg, _ = small_points_store
    old, new = str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")
    _downgrade(cfg.out, old, version)
    with pytest.raises(StoreError, match=f"schema_version {version}.*cdpipe migrate"):
        open_store(old)
    res = runner.invoke(cdtrain, ["pretrain", "--store", old, "--out", str(tmp_path / "run")])
    assert res.exit_code == 2 and "cdpipe migrate" in res.output and "Traceback" not in res.output
    res = runner.invoke(cdpipe, ["migrate", old, "--out", new])
    assert res.exit_code == 0, res.output
    assert verify_store(new, progress=False)["problems"] == []
    a, b = same_arrays(cfg.out, new)
    if version < 3:
        assert b["teacher"]["resize"]["version"] is None and b["teacher"]["device"] is None  # not recorded then
        b["teacher"]["resize"]["version"] = a["teacher"]["resize"]["version"]
        b["teacher"]["device"] = a["teacher"]["device"]
    assert b["provenance"]["migrated"]["from_schema_version"] == version
    assert {k: v for k, v in a.items() if k != "provenance"} == {k: v for k, v in b.items() if k != "provenance"}
    res = runner.invoke(cdpipe, ["migrate", new, "--out", str(tmp_path / "again.zarr")])
    assert res.exit_code == 2 and "nothing to migrate" in res.output
    assert not os.path.exists(tmp_path / "again.zarr")


def test_a_schema_4_store_keeps_its_layout_and_gains_its_boxes_from_the_tables(small_store, tmp_path):
    """A schema-4 store (patch maps) whose dataset is not where it says: migrate refuses in one line asking
    for --dataroot (or --no-boxes) and writes nothing; with --no-boxes it writes a store without boxes that
    verifies clean and whose readers say so; with --dataroot it writes the store extract writes today,
    array by array and attribute by attribute (but for the provenance, which records the move)."""
    cfg, _ = small_store
    old, new = str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")
    _downgrade(cfg.out, old, 4)
    g = zarr.open_group(old, mode="r+")
    g.attrs.update(dataset={**g.attrs["dataset"], "dataroot": "/nonexistent/nuscenes"})
    zarr.consolidate_metadata(old)
    with pytest.raises(StoreError, match="schema_version 4.*cdpipe migrate"):
        open_store(old)
    res = runner.invoke(cdpipe, ["migrate", "--store", old, "--out", new])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "not at /nonexistent/nuscenes" in res.output and "pass --dataroot, or --no-boxes" in res.output
    assert not os.path.exists(new) and not os.path.exists(new + ".migrating")

    bare = str(tmp_path / "bare.zarr")
    res = runner.invoke(cdpipe, ["migrate", "--store", old, "--out", bare, "--no-boxes"])
    assert res.exit_code == 0 and "without boxes (has_boxes false)" in res.output, res.output
    assert verify_store(bare, progress=False)["problems"] == []
    got = zarr.open_group(bare, mode="r")
    assert (got.attrs["has_boxes"], got.attrs["max_boxes"], got.attrs["layout"]) == (False, 0, "patches")
    assert not set(got.array_keys()) & set(BOX_ARRAYS)
    with pytest.raises(StoreError, match="holds no boxes"):
        read_boxes(bare, 0)
    res = runner.invoke(cdpipe, ["info", "--store", bare])
    assert res.exit_code == 0 and "boxes      none (has_boxes false" in res.output

    res = runner.invoke(cdpipe, ["migrate", "--store", old, "--out", new, "--dataroot", cfg.dataroot])
    assert res.exit_code == 0, res.output
    assert verify_store(new, progress=False)["problems"] == []
    a, b = same_arrays(cfg.out, new)
    assert {k: v for k, v in a.items() if k != "provenance"} == {k: v for k, v in b.items() if k != "provenance"}
    assert b["provenance"]["migrated"]["from_schema_version"] == 4
    assert b["provenance"]["migrated"]["old_dataroot"] == "/nonexistent/nuscenes"


def test_an_early_schema_3_store_migrated_twice_keeps_its_history(small_points_store, tmp_path):
    """The first schema-3 stores lacked the teacher's device and weights-file record: migrate writes them
    (unknown: null) rather than copy an incomplete record, and keeps the record of an earlier migration
    under provenance.migrated.previous."""
    cfg, _ = small_points_store
    old, new = str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")
    _downgrade(cfg.out, old, 3)
    g = zarr.open_group(old, mode="r+")
    attrs = dict(g.attrs)
    teacher = {k: v for k, v in attrs["teacher"].items() if k != "device"}
    teacher["create_model"] = {k: v for k, v in teacher["create_model"].items() if k != "pretrained_cfg_overlay"}
    earlier = {"from_schema_version": 1, "utc": "2026-11-30T00:00:00+00:00", "command": "cdpipe migrate a --out b"}
    g.attrs.update(teacher=teacher, provenance={**attrs["provenance"], "migrated": earlier})
    zarr.consolidate_metadata(old)
    res = runner.invoke(cdpipe, ["migrate", old, "--out", new])
    assert res.exit_code == 0, res.output
    got = open_store(new).attrs
    assert got["teacher"]["device"] is None and got["teacher"]["create_model"]["pretrained_cfg_overlay"] is None
    assert got["teacher"]["resize"] == attrs["teacher"]["resize"]  # the PIL version it did record is kept
    assert got["provenance"]["migrated"]["from_schema_version"] == 3
    assert got["provenance"]["migrated"]["previous"] == earlier
    assert (got["layout"], got["feature_encoding"]) == ("points", "float16")
    assert verify_store(new, progress=False)["problems"] == []


@pytest.mark.slow
def test_migrated_store_of_the_earliest_kind_rebuilds_and_resumes(small_points_store, small_dataroot, tmp_path):
    """A schema-1 store from before the teacher recorded its architecture (a random teacher built with
    init_values 1), with two sweeps never written and its dataset moved: migrate (given the new dataroot)
    records init_values, so the teacher rebuilds from the store; and extract resumes the migrated store
    and completes it."""
    from tests.test_extract import reference_features

    cfg, _ = small_points_store
    old, new = str(tmp_path / "old.zarr"), str(tmp_path / "new.zarr")
    _downgrade(cfg.out, old, 1)
    g = zarr.open_group(old, mode="r+")
    attrs = dict(g.attrs)
    teacher = {k: v for k, v in attrs["teacher"].items() if k not in ("architecture", "stand_in")}
    moved = tmp_path / "moved" / "nuscenes"
    shutil.copytree(small_dataroot[0].out, moved)
    g.attrs.update(teacher=teacher, dataset={**attrs["dataset"], "dataroot": "/nonexistent/nuscenes"})
    for name in ("done",):
        done = g[name][:]
        done[[1, 4]] = 0
        g[name][:] = done
    res = runner.invoke(cdpipe, ["migrate", old, "--out", new, "--dataroot", str(moved)])
    assert res.exit_code == 0, res.output
    got = open_store(new).attrs
    assert got["teacher"]["create_model"]["kwargs"]["init_values"] == 1.0
    assert got["dataset"]["dataroot"] == str(moved)
    assert got["provenance"]["migrated"]["old_dataroot"] == "/nonexistent/nuscenes"
    stored, ref = reference_features(new, 3)
    assert np.abs(stored - ref).max() < 2e-2
    resumed = run_extract(dataclasses.replace(cfg, out=new, dataroot=str(moved)), progress=False)
    assert resumed["sweeps"] == 6 and resumed["resumed_from"] == 2  # the tasks of sweeps 0-1 and 4-5 ran
    assert verify_store(new, progress=False)["problems"] == []
