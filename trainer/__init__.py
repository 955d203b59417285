"""cdtrain: Zarr store -> batches -> sparse student + heads -> checkpoints, metrics.

Never imports the heavy half of ``pipeline`` (dask, timm, the nuScenes devkit).
"""
