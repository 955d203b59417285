"""cdtrain: Zarr store -> batches -> sparse student + heads -> checkpoints, metrics.

The modules, in the order of the data path:
    config.py      every setting (frozen dataclasses, checked on construction; no torch)
    data.py        store -> samples (StoreDataset: read, subset, mask, augment)
    batch.py       samples -> Batch (the student's input, voxels, offsets)
    sparse.py      the sparse-convolution backend (the only module that may import torchsparse)
    model.py       MinkUNet, projection head, occupancy head (occupancy.py: the task), segmenter
    losses.py      distillation, occupancy and segmentation losses
    train.py       the pretraining loop (run.py: the run folder and its files)
    checkpoint.py  what is saved, read back and checked on resume
    finetune.py, probe.py, splits.py   segmentation on labels: fine-tuning, the linear probe, label subsets
    detection.py   3D boxes: the BEV detection head on the backbone, box targets, loss and decoding
    evaluate.py, metrics.py, corruptions.py, plots.py   scores, corrupted inputs, pictures
Never imports the heavy half of ``pipeline`` (dask, timm, the nuScenes devkit).
"""
