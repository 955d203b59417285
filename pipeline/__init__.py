"""cdpipe: camera frames + LiDAR -> teacher features, occupancy targets -> Zarr store.

The modules, in the order of the data path:
    frames.py      the frame index from the nuScenes tables; reading LiDAR files and camera images
    semantickitti.py  the SemanticKITTI layout: its files' reader and writer, the frame index of its sequences
    boxes.py       each sweep's annotated 3D boxes in its LiDAR frame, from the tables (the devkit's classes)
    teacher.py     the frozen 2D teacher: images -> patch maps
    projection.py  points -> pixels -> each point's feature from its camera's patch map
    occupancy.py   self-supervised occupancy targets from the LiDAR alone
    store.py       the store's schema and reading it (storage_schema.md describes it)
    store_writer.py  StoreWriter: creating or resuming a store, writing sweeps and failures
    extract.py     the Dask job that runs the stages above and hands shards to the writer (lock.py: one job)
    verify.py, migrate.py, preview.py   checking, upgrading and looking at a store
    synth/, dataroot.py   the synthetic world (nuScenes format; synth/kitti.py: SemanticKITTI's); a dataroot
                   through the devkit
The package imports nothing heavy at import time; the modules that need dask, timm or the nuScenes
devkit import them themselves. ``classes``, ``errors``, ``geometry``, ``store`` and ``dialect`` (the
options and errors both command-line tools share) are light and shared with the trainer.
"""

__version__ = "0.1.0"
