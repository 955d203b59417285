"""Store layouts and encodings, measured: for each teacher, the same world extracted in every
layout (patches, points) and encoding (float16, int8), and for each store:

- bytes per real point of the arrays that carry the teacher features, and of the whole store, each as a
  fraction of raw float16 per-point features (2 D bytes per real point: what a store of one float16
  vector per point would take uncompressed);
- fidelity: the cosine of each valid point's feature as ``read_sweep`` returns it to the exact feature,
  the bilinear blend of the float32 patch map computed in float32 (the teacher run again here on
  ``--fidelity-sweeps`` sweeps spread over the store), mean and 1st percentile;
- time: the extract's write stage and its whole task time per sweep (the points layout's sampling is in
  the task time), and the median time to read one whole sweep (``read_sweep``, every field) and its
  features alone.

    .venv/bin/python benchmarks/store_layouts.py [--dataroot DIR | --scenes 2 --samples 30]
        [--teachers random,semantic] [--fidelity-sweeps 8] [--json benchmarks/results/store_layouts.json]

Teachers: ``random``, a randomly initialised ViT-S/14 (D = 384), and ``semantic``, the trained stand-in
teacher of ``tools/teachers/semantic.safetensors`` (D = 192), both at 224 x 448. Without --dataroot a
world of --scenes x --samples keyframes (800 x 450 images, seed 0; the stand-in saw seed 10000) is
written first. Extracts run one after another on the default local cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np

COMBOS = (("patches", "float16"), ("patches", "int8"), ("points", "float16"), ("points", "int8"))
TEACHERS = {"random": dict(random=True),
            "semantic": dict(weights=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "teachers",
                                                  "semantic.safetensors"))}


def exact_features(store: str, sweeps: list[int]) -> dict[int, np.ndarray]:
    """The exact float32 feature of every point of ``sweeps`` (0 where no camera sees it): the store's
    teacher run again on the sweeps' images, its float32 maps sampled in float32 at the stored pixels."""
    import torch

    from pipeline.frames import build_nuscenes_index, read_image
    from pipeline.projection import sample_features
    from pipeline.store import open_store, read_sweep
    from pipeline.teacher import FrozenTeacher, TeacherConfig

    g = open_store(store)
    a = g.attrs
    t = a["teacher"]
    cfg = TeacherConfig(name=t["name"], random=t["weights"] == "random", seed=t.get("random_init_seed") or 0,
                        weights=(t["create_model"]["pretrained_cfg_overlay"] or {}).get("file"),
                        image_size=tuple(t["image_size"]), layer=t["layer"])
    teacher = FrozenTeacher(cfg)
    index = build_nuscenes_index(a["dataset"]["dataroot"], a["dataset"]["version"], a["dataset"]["split"])
    out = {}
    for s in sweeps:
        assert index.sample_token[s] == str(g["sample_token"][s])
        row = read_sweep(g, s, ("camera", "pixel"))
        cams = np.nonzero(index.camera_ok[s])[0]  # a camera left out of the sweep keeps a zero map
        images = [read_image(index.image_path[s][c], index.image_hw[s, c], cfg.image_size) for c in cams]
        h, w = a["patch_grid"]
        fmaps = torch.zeros(len(a["cameras"]), a["feature_dim"], h, w)
        with torch.inference_mode():
            fmaps[cams] = teacher.features(images)
        out[s] = sample_features(fmaps, row["camera"], row["pixel"], g["camera_hw"][s],
                                 out=np.empty((len(row["camera"]), a["feature_dim"]), np.float32))
    return out


def cosines(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    return (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))


def read_times(store: str, sweeps: list[int], fields) -> float:
    """Median seconds of ``read_sweep`` over ``sweeps`` (the store opened once; one warm-up read)."""
    from pipeline.store import open_store, read_sweep

    g = open_store(store)
    read_sweep(g, sweeps[0], fields)
    times = []
    for s in sweeps:
        t0 = time.perf_counter()
        read_sweep(g, s, fields)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def measure(dataroot: str, version: str, teacher: str, work: str, n_fidelity: int) -> list[dict]:
    from pipeline.extract import ExtractConfig, run_extract
    from pipeline.store import read_sweep
    from pipeline.teacher import TeacherConfig

    rows, exact = [], None
    for layout, encoding in COMBOS:
        out = os.path.join(work, f"{teacher}-{layout}-{encoding}.zarr")
        cfg = ExtractConfig(dataroot=dataroot, version=version, out=out, layout=layout, feature_encoding=encoding,
                            teacher=TeacherConfig(image_size=(224, 448), **TEACHERS[teacher]))
        summary = run_extract(cfg, progress=False)
        n = summary["sweeps"]
        sweeps = [int(s) for s in np.linspace(0, n - 1, min(n_fidelity, n)).round()]
        if exact is None:
            exact = exact_features(out, sweeps)
        cos = []
        for s in sweeps:
            sweep = read_sweep(out, s, ("features", "valid"))
            valid = sweep["valid"]
            assert not sweep["features"][~valid].any()
            cos.append(cosines(sweep["features"][valid], exact[s][valid]))
        cos = np.concatenate(cos)
        stages = summary["stage_seconds"]
        rows.append({
            "teacher": teacher, "layout": layout, "encoding": encoding, "feature_dim": summary["feature_dim"],
            "sweeps": n, "points": summary["points"], "fraction_with_feature": summary["fraction_with_feature"],
            "feature_arrays": summary["feature_arrays"],
            "feature_bytes_per_point": summary["feature_bytes_per_point"],
            "feature_fraction_of_raw": summary["feature_fraction_of_raw"],
            "store_bytes_per_point": summary["bytes_per_point"],
            "store_fraction_of_raw": summary["store_fraction_of_raw"],
            "cosine_mean": float(cos.mean()), "cosine_p1": float(np.percentile(cos, 1)), "cosine_min": float(cos.min()),
            "points_compared": int(len(cos)),
            "write_s_per_sweep": stages.get("write", 0.0) / n,
            "task_s_per_sweep": sum(stages.values()) / n,
            "read_sweep_s": read_times(out, sweeps, None),
            "read_features_s": read_times(out, sweeps, ("features",)),
        })
        r = rows[-1]
        print(f"  {teacher:<8} {layout:<7} {encoding:<7} features {r['feature_fraction_of_raw']:.3f} of raw, store "
              f"{r['store_fraction_of_raw']:.3f}; 1 - cosine mean {1 - r['cosine_mean']:.1e} "
              f"p1 {1 - r['cosine_p1']:.1e}; "
              f"write {1000 * r['write_s_per_sweep']:.0f} ms/sweep, read {1000 * r['read_sweep_s']:.0f} ms/sweep",
              flush=True)
        shutil.rmtree(out)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataroot")
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--scenes", type=int, default=2)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--teachers", default="random,semantic")
    ap.add_argument("--fidelity-sweeps", type=int, default=8)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    try:
        dataroot = args.dataroot
        if dataroot is None:
            from pipeline.synth.write import SynthConfig, write_dataroot

            dataroot = os.path.join(tmp, "nuscenes")
            write_dataroot(SynthConfig(out=dataroot, scenes=args.scenes, samples_per_scene=args.samples),
                           progress=False)
        rows = []
        for teacher in args.teachers.split(","):
            rows += measure(dataroot, args.version, teacher, tmp, args.fidelity_sweeps)
    finally:
        shutil.rmtree(tmp)
    print(f"\n{rows[0]['sweeps']} sweeps, {rows[0]['points']} points "
          f"({100 * rows[0]['fraction_with_feature']:.1f}% seen by a camera); fractions of raw float16 per-point "
          f"features (2 D bytes per real point); cosine to the exact float32 feature (1 - cos; p1: the 1st "
          f"percentile of the cosine) over "
          f"{rows[0]['points_compared']} points of {args.fidelity_sweeps} sweeps")
    print(f"{'teacher':<9}{'D':>4} {'layout':<8}{'encoding':<9}{'features':>9}{'store':>7}{'B/point':>8}"
          f"{'1-cos mean':>11}{'1-cos p1':>10}{'write ms':>9}{'task ms':>8}{'read ms':>8}{'feat ms':>8}")
    for r in rows:
        print(f"{r['teacher']:<9}{r['feature_dim']:>4} {r['layout']:<8}{r['encoding']:<9}"
              f"{r['feature_fraction_of_raw']:>9.3f}{r['store_fraction_of_raw']:>7.3f}{r['store_bytes_per_point']:>8.1f}"
              f"{1 - r['cosine_mean']:>11.1e}{1 - r['cosine_p1']:>10.1e}{1000 * r['write_s_per_sweep']:>9.0f}"
              f"{1000 * r['task_s_per_sweep']:>8.0f}{1000 * r['read_sweep_s']:>8.0f}"
              f"{1000 * r['read_features_s']:>8.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": "benchmarks/store_layouts.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None and k != "json"),
                "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
