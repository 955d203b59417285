"""cdpipe: camera frames + LiDAR -> teacher features, occupancy targets -> Zarr store.

The package imports nothing heavy at import time; the modules that need dask, timm or the nuScenes
devkit import them themselves. ``pipeline.geometry`` and ``pipeline.classes`` are light and shared
with the trainer.
"""

__version__ = "0.1.0"
