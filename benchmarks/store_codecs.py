"""Measure compression and chunking choices for the store on real extract output.

    .venv/bin/python benchmarks/store_codecs.py STORE [--sweeps 8] [--sweeps-per-task 2] [--codecs lz4] [--rounds 1]

Copies the first sweeps of STORE's per-point features (as ``read_sweep`` gives them, from any layout: the
bulk of a points-layout store) and ``points`` into scratch
arrays with each candidate codec and layout, and prints bytes per point, write and whole-sweep read
throughput. The figures chosen from are recorded in storage_schema.md. Writes go as ``cdpipe extract``
sends them: ``--sweeps-per-task`` sweeps per assignment (whole shards), with zarr's all-fill chunk
check off and the extract workers' malloc settings; "write MB/s" counts raw float16 bytes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import zarr


def directory_bytes(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)


def _measure(feats, codec, chunks, shards, k):
    """Write ``feats`` k sweeps at a time into a fresh array; returns (bytes, write s, read-all s,
    read-one-sweep s)."""
    n = len(feats)
    tmp = tempfile.mkdtemp()
    try:
        g = zarr.open_group(tmp, mode="w")
        a = g.create_array("f", shape=feats.shape, dtype="float16", chunks=chunks, shards=shards, fill_value=0,
                           compressors=codec)
        t0 = time.perf_counter()
        for s in range(0, n, k):
            a[s:s + k] = feats[s:s + k]
        t_w = time.perf_counter() - t0
        t0 = time.perf_counter()
        _ = a[:]
        t_r = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(n):
            _ = a[s]
        t_one = (time.perf_counter() - t0) / n
        return directory_bytes(tmp), t_w, t_r, t_one
    finally:
        shutil.rmtree(tmp)


def main() -> None:
    zarr.config.set({"array.write_empty_chunks": True})
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--sweeps", type=int, default=8)
    ap.add_argument("--sweeps-per-task", type=int, default=2)
    ap.add_argument("--codecs", default="", help="only the feature codecs whose name contains this")
    ap.add_argument("--rounds", type=int, default=1, help="measure every case this many times (medians)")
    args = ap.parse_args()
    from pipeline.worker_setup import keep_freed_memory

    keep_freed_memory()  # as in an extract worker: large buffers from the heap up to 32 MiB
    from pipeline.store import open_store, read_sweep

    src = open_store(args.store)
    n = min(args.sweeps, src["points"].shape[0])
    # per-point float16 features padded to P as the points layout stores them, from any layout
    feats = np.zeros((n, src.attrs["max_points"], src.attrs["feature_dim"]), np.float16)
    for s in range(n):
        f = read_sweep(src, s, ("features",))["features"]
        feats[s, :len(f)] = f
    points = src["points"][:n]
    n_points = int(src["num_points"][:n].sum())
    p, d = feats.shape[1], feats.shape[2]
    print(f"{n} sweeps, {n_points} real points (padded to {p} per sweep), D={d}; teacher {src.attrs['teacher']['name']}"
          f" weights={src.attrs['teacher']['weights'][:12]}")
    blosc = zarr.codecs.BloscCodec
    candidates = {
        "none": None,
        "blosc-lz4 shuffle": blosc(cname="lz4", clevel=5, shuffle="shuffle", typesize=2),
        "blosc-lz4 bitshuffle": blosc(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=2),
        "blosc-lz4hc bitshuffle": blosc(cname="lz4hc", clevel=1, shuffle="bitshuffle", typesize=2),
        "blosc-zstd1 shuffle": blosc(cname="zstd", clevel=1, shuffle="shuffle", typesize=2),
        "blosc-zstd1 bitshuffle": blosc(cname="zstd", clevel=1, shuffle="bitshuffle", typesize=2),
        "blosc-zstd3 bitshuffle": blosc(cname="zstd", clevel=3, shuffle="bitshuffle", typesize=2),
        "zstd3 (no shuffle)": zarr.codecs.ZstdCodec(level=3),
    }
    k = args.sweeps_per_task
    quarter = -(-p // 4)
    layouts = {"chunk 1 sweep, no shard": ((1, p, d), None), f"chunk 1 sweep, shard {k}": ((1, p, d), (k, p, d)),
               f"chunk 1/4 sweep, shard {k}": ((1, quarter, d), (k, 4 * quarter, d))}
    raw_mb = feats.nbytes / 2**20
    cases = [(c, lay) for lay in layouts for c in candidates if args.codecs in c]
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {case: [] for case in cases}
    for r in range(args.rounds):  # rounds alternate the order: this machine's speed drifts within a run
        for cname, lname in (cases if r % 2 == 0 else cases[::-1]):
            results[cname, lname].append(_measure(feats, candidates[cname], *layouts[lname], k))
    print(f"{'features codec':<26}{'layout':<28}{'B/point':>9}{'write MB/s':>12}{'read MB/s':>11}{'1 sweep ms':>12}"
          + ("  (medians of %d rounds)" % args.rounds if args.rounds > 1 else ""))
    for (cname, lname), runs in results.items():
        size, t_w, t_r, t_one = (float(np.median(col)) for col in zip(*runs))
        print(f"{cname:<26}{lname:<28}{size / n_points:>9.0f}{raw_mb / t_w:>12.0f}{raw_mb / t_r:>11.0f}"
              f"{1000 * t_one:>12.1f}")
    tmp = tempfile.mkdtemp()
    try:
        for cname in ("none", "blosc-zstd1 shuffle"):
            g = zarr.open_group(tmp, mode="w")
            codec = blosc(cname="zstd", clevel=1, shuffle="shuffle", typesize=4) if cname != "none" else None
            a = g.create_array("p", shape=points.shape, dtype="float32", chunks=(1, p, 5), shards=(4, p, 5),
                               fill_value=0, compressors=codec)
            a[:] = points
            print(f"points {cname:<20} {directory_bytes(tmp) / n_points:.1f} B/point (raw 20)")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
