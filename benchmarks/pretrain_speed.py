"""Pretraining speed on this machine: loader against step, sparse against dense convolution, and an
epoch from the store against the same epoch with the teacher run live.

    .venv/bin/python benchmarks/pretrain_speed.py --dataroot DIR --store STORE [--model minkunet-tiny]
                                                  [--batches 6] [--workers 2]

1. loader: sweeps/s of the DataLoader alone (spawned workers) and of the training step alone on
   batches already in memory; then a real run's stall = time waiting for data / total time.
2. sparse convolution (ours) against dense ``conv3d`` on a 25.6 x 25.6 x 6.4 m crop of a sweep at 0.1 m
   (forward, 16 -> 16 channels, kernel 3): both times and the ratio.
3. one pass over the store's sweeps: training steps fed from the store, against the same steps fed by
   running the teacher live on the six images of each sweep, projecting and sampling (what extract
   does per sweep); the ratio is what the offline store saves.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataroot", required=True)
    ap.add_argument("--version", default="v1.0-mini")
    ap.add_argument("--store", required=True)
    ap.add_argument("--model", default="minkunet-tiny")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from trainer.batch import Collate, collate
    from trainer.config import DataConfig, ModelConfig, TrainConfig
    from trainer.data import StoreDataset
    from trainer.model import Student
    from trainer.sparse import SparseConv3d, SparseTensor
    from trainer.train import EpochBatches, _EpochDataset, loss_step

    torch.manual_seed(0)
    dcfg = DataConfig(store=args.store, split="all")
    ds = StoreDataset(dcfg)
    d = ds.attrs["feature_dim"]
    mcfg = ModelConfig(arch=args.model, feature_dim=d)
    tcfg = TrainConfig(out="/tmp/unused")
    model = Student(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    nb, bs = args.batches, args.batch_size
    print(f"store {args.store}: {len(ds)} sweeps, model {args.model}, batch {bs}, {os.cpu_count()} cores")

    # 1. loader alone, step alone, and the stall of a real loop
    loader = torch.utils.data.DataLoader(_EpochDataset(ds), batch_sampler=EpochBatches(len(ds), bs, 0, 0, nb),
                                         collate_fn=Collate(dcfg.voxel_size), num_workers=args.workers,
                                         multiprocessing_context="spawn" if args.workers else None)
    it = iter(loader)
    first = next(it)  # workers started
    t0 = time.perf_counter()
    batches = [first] + [b for b in it]
    t_load = time.perf_counter() - t0
    load_rate = (len(batches) - 1) * bs / t_load

    def step(batch):
        loss, _ = loss_step(model, batch, tcfg)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    t_steps = time.perf_counter() - t0
    step_rate = len(batches) * bs / t_steps
    wait = work = start = 0.0
    t_mark = time.perf_counter()
    for n_b, b in enumerate(torch.utils.data.DataLoader(_EpochDataset(ds),
                                         batch_sampler=EpochBatches(len(ds), bs, 1, 0, nb),
                                         collate_fn=Collate(dcfg.voxel_size), num_workers=args.workers,
                                         multiprocessing_context="spawn" if args.workers else None)):
        t_got = time.perf_counter()
        if n_b == 0:
            start = t_got - t_mark  # spawning the loader workers
        else:
            wait += t_got - t_mark
        step(b)
        t_mark = time.perf_counter()
        work += t_mark - t_got
    print(f"1. loader alone {load_rate:.2f} sweeps/s ({args.workers} workers), training step alone "
          f"{step_rate:.2f} sweeps/s (loader/step {load_rate / step_rate:.1f}x); real loop: stalled on data "
          f"{100 * wait / (wait + work):.1f}% of the time after the first batch ({start:.1f} s to start the "
          f"loader workers)")

    # 2. sparse vs dense convolution on a crop of a sweep
    smp = ds[0]
    crop = np.all(np.abs(smp.xyz[:, :2]) < 12.8, axis=1) & (np.abs(smp.xyz[:, 2] + 1.0) < 3.2)
    vox = np.unique(np.floor(smp.xyz[crop] / 0.1).astype(np.int64), axis=0)
    coords = torch.from_numpy(np.c_[np.zeros(len(vox), np.int64), vox])
    feats = torch.randn(len(vox), 16)
    conv = SparseConv3d(16, 16, 3)
    x = SparseTensor(feats, coords)
    with torch.no_grad():
        conv(x)  # builds the neighbour map once, as a network's first layer at a level does
        t0 = time.perf_counter()
        for _ in range(3):
            conv(SparseTensor(feats, coords))
        t_sparse = (time.perf_counter() - t0) / 3
        lo = vox.min(0)
        size = vox.max(0) - lo + 1
        dense = torch.zeros(1, 16, *size.tolist())
        dense[0, :, vox[:, 0] - lo[0], vox[:, 1] - lo[1], vox[:, 2] - lo[2]] = feats.T
        w = conv.weight.reshape(3, 3, 3, 16, 16).permute(4, 3, 0, 1, 2).contiguous()
        torch.nn.functional.conv3d(dense, w, padding=1)
        t0 = time.perf_counter()
        torch.nn.functional.conv3d(dense, w, padding=1)
        t_dense = time.perf_counter() - t0
    print(f"2. {len(vox)} active voxels in a {size[0]}x{size[1]}x{size[2]} grid ({100 * len(vox) / size.prod():.2f}% "
          f"occupied): sparse conv {1000 * t_sparse:.0f} ms (map included), dense conv3d {1000 * t_dense:.0f} ms, "
          f"dense/sparse {t_dense / t_sparse:.1f}x")

    # 3. store-fed pass against teacher-live pass over the same sweeps
    from PIL import Image

    from pipeline.frames import build_nuscenes_index, read_lidar
    from pipeline.projection import assign_views, sample_features
    from pipeline.teacher import FrozenTeacher, TeacherConfig

    t = ds.attrs["teacher"]
    teacher = FrozenTeacher(TeacherConfig(name=t["name"], random=True, seed=t["random_init_seed"] or 0,
                                          image_size=tuple(t["image_size"]), layer=t["layer"]))
    index = build_nuscenes_index(args.dataroot, args.version)
    row_of = {tok: i for i, tok in enumerate(index.lidar_token)}
    n_sweeps = nb * bs
    sweeps = ds.sweeps[:n_sweeps]
    group = ds.group
    t0 = time.perf_counter()
    for j in range(0, n_sweeps, bs):
        step(collate([ds[k] for k in range(j, j + bs)], dcfg.voxel_size))
    t_store = time.perf_counter() - t0
    t0 = time.perf_counter()
    for j in range(0, n_sweeps, bs):
        samples = []
        for k in range(j, j + bs):
            smp = ds[k]
            i = row_of[str(group["lidar_token"][int(sweeps[k])])]
            images = [np.asarray(Image.open(p).convert("RGB")) for p in index.image_path[i]]
            fmaps = teacher.features(images)
            pts, _ = read_lidar(index, i)
            cam, uv = assign_views(pts, index.cam_from_lidar[i], index.intrinsics[i], index.image_hw[i])
            smp.teacher, smp.valid = sample_features(fmaps, cam, uv, index.image_hw[i]), cam >= 0
            samples.append(smp)
        step(collate(samples, dcfg.voxel_size))
    t_live = time.perf_counter() - t0
    print(f"3. {n_sweeps} sweeps: from the store {t_store:.1f} s, with the teacher live {t_live:.1f} s: "
          f"the store makes pretraining {t_live / t_store:.1f}x faster ({args.model}, teacher {t['name']} "
          f"at {t['image_size'][0]}x{t['image_size'][1]})")


if __name__ == "__main__":
    main()
