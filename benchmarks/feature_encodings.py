"""Lossy encodings of per-point teacher features, measured: bytes per real point and fidelity for each
encoding, on stores of different teachers.

For each store, the valid per-point features of ``--sweeps`` complete sweeps (spread over the store) are
the reference: the stored float16 values, whose own rounding from the exact float32 feature costs a
cosine of about 1 - 1e-6. Each encoding is applied sweep by sweep, compressed as the store would
(Blosc lz4 + bitshuffle, one chunk per sweep), decoded, and compared with the reference:

- ``float16``: what the store holds today (lossless here; the baseline);
- ``int8/vector``: each feature vector scaled by its own max |x| / 127 into int8, the scale kept as
  float16 (D + 2 bytes per point before compression);
- ``pca-K float16``: a K-dimensional PCA basis (fitted on the first half of the chosen sweeps,
  stored once per store: K x D float16 plus the mean) and per-point float16 coefficients;
- ``pca-K int8``: the same coefficients as int8 with a per-vector scale.

Prints, per store and encoding: bytes per point (compressed, the basis included, spread over the points
measured), that as a fraction of raw float16 (2 D bytes), and the cosine to the reference (mean and 1st
percentile) on the second half of the sweeps (held out from the PCA fit). Writes the table as JSON
with ``--json``.

    .venv/bin/python benchmarks/feature_encodings.py --store A.zarr --store B.zarr [--sweeps 8]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from numcodecs import Blosc

BLOSC = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE)


def sweep_features(store: str, n_sweeps: int) -> tuple[list[np.ndarray], dict]:
    """The valid per-point features of ``n_sweeps`` complete sweeps spread over the store (any layout)."""
    from pipeline.store import open_store, read_sweep

    g = open_store(store)
    done = np.nonzero(g["done"][:] == 1)[0]
    pick = done[np.linspace(0, len(done) - 1, min(n_sweeps, len(done))).round().astype(int)]
    out = []
    for s in pick:
        sweep = read_sweep(g, int(s), ("features", "valid"))
        out.append(sweep["features"][sweep["valid"]])
    return out, dict(g.attrs)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def int8_per_vector(x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    scale = np.maximum(np.abs(x).max(1, keepdims=True), 1e-8) / 127.0
    q = np.clip(np.round(x / scale), -127, 127).astype(np.int8)
    scale16 = scale.astype(np.float16)
    return [q, scale16], q.astype(np.float32) * scale16.astype(np.float32)


def measure(features: list[np.ndarray], ks: tuple[int, ...]) -> dict:
    fit, held = features[: len(features) // 2], features[len(features) // 2:]
    ref = [f.astype(np.float32) for f in held]
    n_points = sum(len(f) for f in held)
    d = held[0].shape[1]
    rows = {}

    def record(name: str, payloads: list[list[np.ndarray]], decoded: list[np.ndarray], extra_bytes: int = 0):
        # arrays, not bytes: Blosc shuffles by the array's item size, as zarr's codec does
        size = sum(len(BLOSC.encode(np.ascontiguousarray(p))) for sweep in payloads for p in sweep) + extra_bytes
        cos = np.concatenate([cosine(r, x) for r, x in zip(ref, decoded)])
        rows[name] = {"bytes_per_point": size / n_points, "fraction_of_raw_float16": size / n_points / (2 * d),
                      "cos_mean": float(cos.mean()), "cos_p01": float(np.percentile(cos, 1))}

    record("float16", [[f] for f in held], [f.astype(np.float32) for f in held])
    enc = [int8_per_vector(f.astype(np.float32)) for f in held]
    record("int8/vector", [e[0] for e in enc], [e[1] for e in enc])
    x = np.concatenate([f.astype(np.float32) for f in fit])
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    for k in ks:
        basis = vt[:k].astype(np.float16)
        extra = (basis.nbytes + mean.astype(np.float16).nbytes)
        b32 = basis.astype(np.float32)
        coef = [((f.astype(np.float32) - mean) @ b32.T) for f in held]
        c16 = [c.astype(np.float16) for c in coef]
        record(f"pca-{k} float16", [[c] for c in c16],
               [c.astype(np.float32) @ b32 + mean for c in c16], extra)
        enc = [int8_per_vector(c) for c in coef]
        record(f"pca-{k} int8", [e[0] for e in enc], [e[1] @ b32 + mean for e in enc], extra)
    return {"points_measured": n_points, "feature_dim": d, "encodings": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", action="append", required=True, help="store to measure (repeatable)")
    ap.add_argument("--sweeps", type=int, default=8, help="sweeps per store (half fit the PCA, half are scored)")
    ap.add_argument("--pca", type=int, nargs="+", default=[32, 64, 128], help="PCA sizes K")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    results = {}
    for store in args.store:
        feats, attrs = sweep_features(store, args.sweeps)
        t = attrs["teacher"]
        kind = "random" if t["weights"] == "random" else ((t.get("stand_in") or {}).get("recipe") or "pretrained")
        r = measure(feats, tuple(args.pca))
        r["teacher"] = f"{t['name']} ({kind}, input {t['image_size'][0]}x{t['image_size'][1]})"
        results[store] = r
        print(f"\n{store}: teacher {r['teacher']}, D = {r['feature_dim']}, {r['points_measured']} held-out points")
        print(f"  {'encoding':<16} {'bytes/point':>11} {'of raw f16':>10} {'cos mean':>9} {'cos p1':>9}")
        for name, e in r["encodings"].items():
            print(f"  {name:<16} {e['bytes_per_point']:>11.1f} {e['fraction_of_raw_float16']:>10.3f} "
                  f"{e['cos_mean']:>9.5f} {e['cos_p01']:>9.5f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
