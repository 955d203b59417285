"""One writer per store: a lock file beside the store, ``STORE.lock``.

The lock is a small JSON record {job, host, pid, process_space, started_utc, heartbeat_utc}, written whole to a
temporary file and hard-linked into place (``link`` fails when the name exists, so of two jobs starting
together exactly one wins, and the other always reads a complete record), then rewritten by the holder
every ``HEARTBEAT_S`` seconds. It lies beside the store, not in it (``--overwrite`` deletes the store's
folder), under the store's resolved path, so two spellings of one store share one lock. A lock is
**stale** when its process is gone (same host, no such pid), its heartbeat is older than
``STALE_AFTER_S`` (a job on another host, or a machine that died), or it cannot be parsed; a stale lock
is broken only when asked (``--break-lock``), a live one never, except that a lock whose process is
known dead (same host, boot and pid namespace, no such pid: a client killed with SIGKILL) is broken
without asking, so that rerunning the same command resumes. Breaking happens under a second
exclusive file, ``STORE.lock.break``, and removes the lock only if it is still the stale record that
was judged, so two jobs breaking one stale lock cannot both win. Every task checks that the lock still
names its job before it writes and again before it marks sweeps done (``check_holder``): workers left
over from a killed client, after another job took the store over, write nothing that counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import threading
import time
import uuid

HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0  # 20 missed heartbeats


class LockError(RuntimeError):
    """The store is held by another job (or its lock cannot be read); the message names the holder."""


def lock_path(store: str) -> str:
    return os.path.realpath(store).rstrip("/") + ".lock"


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def read_lock(store: str) -> dict | None:
    """The lock record of ``store`` (``{"unreadable": reason}`` for a file that does not parse), or None
    when it is not locked."""
    try:
        with open(lock_path(store)) as f:
            record = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"unreadable": f"{type(e).__name__}: {e}"}
    return record if isinstance(record, dict) else {"unreadable": "not a JSON object"}


def stale_reason(record: dict) -> str | None:
    """Why the lock's holder is gone (its process does not exist, its heartbeat stopped, the lock does not
    parse), or None."""
    if "unreadable" in record or not {"host", "pid", "heartbeat_utc"} <= set(record):
        return f"the lock file cannot be read ({record.get('unreadable', 'fields missing')})"
    if record["host"] == socket.gethostname() and record.get("process_space") in (None, process_space()):
        try:
            os.kill(int(record["pid"]), 0)
        except ProcessLookupError:
            return f"process {record['pid']} no longer exists"
        except PermissionError:
            pass  # exists, owned by someone else
    try:
        age = (_now() - _dt.datetime.fromisoformat(record["heartbeat_utc"])).total_seconds()
    except (TypeError, ValueError):
        return f"its heartbeat {record['heartbeat_utc']!r} is not a time"
    if age > STALE_AFTER_S:
        return f"no heartbeat for {age:.0f} s (more than {STALE_AFTER_S:.0f} s)"
    return None


def process_space() -> str | None:
    """Where this process's pid means something: the boot and the pid namespace (two containers with one
    host name each number their processes from 1); None where the system does not say (not Linux)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


def holder_died_here(record: dict) -> bool:
    """Whether the lock's holder is known dead: it ran in this very process space (same host, boot and pid
    namespace) and its process no longer exists: a client killed with SIGKILL. Its lock is broken without
    being asked. A holder elsewhere (another host, another container sharing this host's name, a lock
    written before the space was recorded) is judged by its heartbeat alone, which only ``--break-lock``
    overrides."""
    space = process_space()
    if record.get("host") != socket.gethostname() or space is None or record.get("process_space") != space:
        return False
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
        return False
    return False


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
        return {"job": self.job, "host": socket.gethostname(), "pid": os.getpid(), "process_space": process_space(),
                "started_utc": started, "heartbeat_utc": _now().isoformat(timespec="seconds")}

    def acquire(self) -> "StoreLock":
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise LockError(f"cannot write {self.store}: {parent} is not a folder") from None
        self.started = _now().isoformat(timespec="seconds")
        for attempt in range(20):
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="cdpipe-lock", daemon=True)
                self._thread.start()
                return self
            held = read_lock(self.store)
            if held is None:
                continue  # released meanwhile
            why = stale_reason(held)
            if why is None:
                raise LockError(f"{self.store} is being written by another job ({describe(held)}); wait for "
                                f"it to finish, or write to another --out")
            if not (self.break_stale or holder_died_here(held)):
                raise LockError(f"{self.store} has a stale lock {self.path} ({describe(held)}; {why}). If no "
                                f"job is writing the store, rerun with --break-lock")
            if self._break(held):
                self.broken = held
            else:
                time.sleep(0.05 * (attempt + 1))  # another job is breaking it: look again
        raise LockError(f"could not take the lock {self.path}: other jobs keep taking it")

    def _create(self) -> bool:
        """Put a complete record in place if there is no lock (atomically: link fails on an existing name)."""
        tmp = f"{self.path}.{self.job}.tmp"
        with open(tmp, "w") as f:
            json.dump(self._record(self.started), f)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            os.remove(tmp)

    def _break(self, judged: dict) -> bool:
        """Remove the lock if it is still the stale record ``judged``, holding ``STORE.lock.break`` meanwhile;
        False when another job holds that (a break file older than a minute is itself stale, and removed)."""
        guard = self.path + ".break"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - os.path.getmtime(guard) > 60:
                    os.remove(guard)
            except FileNotFoundError:
                pass
            return False
        try:
            if read_lock(self.store) == judged:
                os.remove(self.path)
        finally:
            os.close(fd)
            os.remove(guard)
        return True

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
    """Raise unless ``store``'s lock names ``job`` (a task calls it before it writes, and before it marks
    sweeps done)."""
    from pipeline.errors import ExtractError

    held = read_lock(store)
    if (held or {}).get("job") != job:
        raise ExtractError(f"{store}: this job ({job}) no longer holds the store's lock "
                           f"({'now ' + describe(held) if held else 'no lock'}); it writes nothing more")
