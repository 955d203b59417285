"""Setup of the Dask workers of ``cdpipe extract``'s own local cluster (never of a cluster given with
``--scheduler``); the measurements behind it are in ``pipeline/extract.py`` above ``_LOCAL_WORKER_CONFIG``."""

from __future__ import annotations

import os

from distributed import WorkerPlugin


def keep_freed_memory() -> bool:
    """In a worker of our local cluster: glibc serves buffers up to 32 MiB from the heap and keeps freed
    heap memory. False where the C library is not glibc."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


class LocalWorkerSetup(WorkerPlugin):
    """Dask worker plugin for the workers of our local cluster, also those the nanny restarts:
    - ``setup``: glibc's malloc thresholds (``keep_freed_memory``);
    - exit: once the worker has closed cleanly (``teardown``: every task has returned, so everything it
      wrote is in the store), the process ends as soon as it starts to exit, with logging and the
      standard streams flushed, skipping the interpreter's teardown of torch and timm: ~1.1 s for which
      the client waited in ``cluster.close()``, 0.1 s now. A worker that dies any other way exits as
      usual, with its own status."""

    name = "cdpipe-local-worker"
    idempotent = True

    def setup(self, worker=None) -> None:
        import atexit

        self.closed = False
        keep_freed_memory()
        atexit.register(self._exit_now)  # exit handlers run last-registered first: later ones still run,
        # earlier ones (such as logging's, which _exit_now does itself) are skipped

    def teardown(self, worker=None) -> None:
        self.closed = True

    def _exit_now(self) -> None:
        import logging
        import sys

        if not self.closed:
            return
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(0)
