"""One writer per store: a lock file beside the store, ``STORE.lock``.

The lock is a small JSON record {job, host, pid, started_utc, heartbeat_utc}, created with O_EXCL (so
of two jobs starting together one wins) and rewritten by the holder every ``HEARTBEAT_S`` seconds. It
lies beside the store, not in it: ``--overwrite`` deletes the store's folder. A lock is **stale** when
its process is gone (same host, no such pid) or its heartbeat is older than ``STALE_AFTER_S`` (a job on
another host, or a machine that died); a stale lock is broken only when asked (``--break-lock``), and a
live one never. Before marking sweeps done, every task checks that the lock still names its job
(``check_holder``): workers left over from a killed client, after another job took the store over,
write nothing that counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import uuid

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 20 missed heartbeats


class LockError(RuntimeError):
    """The store is held by another job (or its lock cannot be read); the message names the holder."""


def lock_path(store: str) -> str:
    return store.rstrip("/") + ".lock"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def read_lock(store: str) -> dict | None:
    """The lock record of ``store``, or None when it is not locked."""
    try:
        with open(lock_path(store)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise LockError(f"cannot read the lock {lock_path(store)} ({e}); if no job is writing the store, "
                        f"delete that file") from None


def stale_reason(record: dict) -> str | None:
    """Why the lock's holder is gone (its process does not exist, or its heartbeat stopped), or None."""
    if record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return f"process {record['pid']} no longer exists"
        except PermissionError:
            pass  # exists, owned by someone else
    beat = _dt.datetime.fromisoformat(record["heartbeat_utc"])
    age = (_now() - beat).total_seconds()
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s (more than {STALE_AFTER_S:.0f} s)"
    return None


def describe(record: dict) -> str:
    return (f"job {record.get('job')} on host {record.get('host')}, pid {record.get('pid')}, started "
            f"{record.get('started_utc')}, last heartbeat {record.get('heartbeat_utc')}")


class StoreLock:
    """Hold ``STORE.lock`` while writing ``store`` (a context manager); refreshes its heartbeat in a thread."""

    def __init__(self, store: str, break_stale: bool = False):
        self.store, self.path, self.break_stale = store, lock_path(store), break_stale
        self.job = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.broken: dict | None = None  # the stale record broken on acquiring, if any

    def _record(self, started: str) -> dict:
        return {"job": self.job, "host": socket.gethostname(), "pid": os.getpid(), "started_utc": started,
                "heartbeat_utc": _now().isoformat(timespec="seconds")}

    def acquire(self) -> "StoreLock":
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self.started = _now().isoformat(timespec="seconds")
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = read_lock(self.store)
                if held is None:
                    continue  # released meanwhile
                why = stale_reason(held)
                if why is None:
                    raise LockError(f"{self.store} is being written by another job ({describe(held)}); wait for "
                                    f"it to finish, or write to another --out") from None
                if not self.break_stale:
                    raise LockError(f"{self.store} has a stale lock {self.path} ({describe(held)}; {why}). If no "
                                    f"job is writing the store, rerun with --break-lock") from None
                os.remove(self.path)
                self.broken = held
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self._record(self.started), f)
            self._thread = threading.Thread(target=self._beat, name="cdpipe-lock", daemon=True)
            self._thread.start()
            return self
        raise LockError(f"could not take the lock {self.path}: another job keeps taking it")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            tmp = f"{self.path}.{self.job}.tmp"
            try:
                if (read_lock(self.store) or {}).get("job") != self.job:
                    return  # broken by someone else: do not take it back
                with open(tmp, "w") as f:
                    json.dump(self._record(self.started), f)
                os.replace(tmp, self.path)
            except (OSError, LockError):
                pass  # the next beat tries again; a long failure makes the lock stale, as it should

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if (read_lock(self.store) or {}).get("job") == self.job:
                os.remove(self.path)
        except (OSError, LockError):
            pass

    def __enter__(self) -> "StoreLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_holder(store: str, job: str) -> None:
    """Raise unless ``store``'s lock names ``job`` (called by a task before it marks sweeps done)."""
    from pipeline.frames import ExtractError

    held = read_lock(store)
    if (held or {}).get("job") != job:
        raise ExtractError(f"{store}: this job ({job}) no longer holds the store's lock "
                           f"({'now ' + describe(held) if held else 'no lock'}); its sweeps are not marked done")
