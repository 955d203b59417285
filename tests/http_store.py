"""A read-only HTTP server on 127.0.0.1 for tests that read stores by URL.

Python's ``http.server`` ignores ``Range`` headers and answers every request with the whole file;
zarr reads a shard's index and chunks by byte range, so through it a sharded array would decode the
wrong bytes (the crc32c checksums catch exactly that). Every real server (nginx, S3, GCS) honours
ranges; this one does too: ``bytes=a-b``, ``bytes=a-`` and ``bytes=-n``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class RangeHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_PUT(self):  # read-only
        self.send_error(405)

    do_POST = do_DELETE = do_PUT

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        a, b = match.groups()
        start, end = (size - int(b), size - 1) if not a else (int(a), int(b) if b else size - 1)
        start, end = max(start, 0), min(end, size - 1)
        if start > end:
            self.send_error(416)
            return None
        f = open(path, "rb")
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._remaining = end - start + 1
        return f

    def copyfile(self, source, outputfile):
        remaining = getattr(self, "_remaining", None)
        if remaining is None:
            return super().copyfile(source, outputfile)
        outputfile.write(source.read(remaining))
        self._remaining = None


@contextlib.contextmanager
def serve(directory: str, port: int = 0):
    """Serve ``directory`` read-only at http://127.0.0.1:PORT (a free port by default); yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(RangeHandler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
