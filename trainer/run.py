"""A run folder: where ``cdtrain pretrain`` and ``cdtrain finetune`` write, one object for both.

The folder is created before any other work. It owns the run's files: the per-step log (``metrics.jsonl``
for pretraining, ``curve.jsonl`` for fine-tuning; one JSON object per line, NaN and inf written as
null), TensorBoard scalars in ``tb/`` when tensorboard is installed, and the path of
``skipped_sweeps.jsonl`` (written by the dataset when damaged sweeps are skipped). A run that starts at
step s (a resume from a checkpoint of step s; 0 for a fresh run) keeps exactly the log rows of steps
1..s, which drops the rows a crash left after its checkpoint; the run then writes them again. Used as a
context manager, every file is closed however the run ends.
"""

from __future__ import annotations

import json
import math
import os

SKIPPED_SWEEPS = "skipped_sweeps.jsonl"


class RunFolder:
    """``RunFolder(path)`` creates the folder ``path``; ``start(log, step)`` opens its log file ``log``
    holding the rows of steps 1..``step``, to append, and TensorBoard when installed."""

    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.log_path: str | None = None
        self._log = None
        self._tb = None

    def start(self, log: str, step: int = 0, tensorboard: bool = True) -> RunFolder:
        self.log_path = os.path.join(self.path, log)
        self._log = open_log(self.log_path, step)
        self._tb = tensorboard_writer(self.path) if tensorboard else None
        return self

    @property
    def skipped_sweeps(self) -> str:
        return os.path.join(self.path, SKIPPED_SWEEPS)

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def log(self, row: dict) -> None:
        """Append ``row`` (with its ``step``) to the log, flushed at once so a crash loses nothing written."""
        self._log.write(json_line(row))
        self._log.flush()

    def scalars(self, row: dict, step: int) -> None:
        """The finite numbers of ``row`` as TensorBoard scalars at ``step`` (nothing without tensorboard)."""
        if self._tb is None:
            return
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                    and key != "step":
                self._tb.add_scalar(key, value, step)

    def last_logged_step(self) -> int:
        """The step of the log's last row (0 when it has none)."""
        self._log.flush()
        with open(self.log_path) as f:
            steps = [s for s in map(step_of, f) if s is not None]
        return steps[-1] if steps else 0

    def close(self) -> None:
        if self._log is not None and not self._log.closed:
            self._log.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_log(path: str, step: int):
    """``path`` opened to append, holding exactly the rows of steps 1..``step`` (a fresh run, step 0, starts
    it empty)."""
    rows = []
    if step and os.path.exists(path):
        with open(path) as f:
            rows = [line for line in f if step_of(line) is not None and step_of(line) <= step]
    with open(path + ".tmp", "w") as f:
        f.writelines(rows)
    os.replace(path + ".tmp", path)
    return open(path, "a")


def step_of(line: str) -> int | None:
    """The step of a log line; None for a line cut short by a crash (or a full disk)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def finite(value):
    """``value`` (numbers, lists, dicts) with every NaN and inf float as None, so that it is JSON: bare NaN
    is not, and most readers refuse it."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_line(record: dict) -> str:
    """One JSON line of ``record``, NaN and inf written as null."""
    return json.dumps(finite(record), allow_nan=False) + "\n"


def tensorboard_writer(out: str):
    """A SummaryWriter in OUT/tb when tensorboard is installed (the ``tensorboard`` extra), else None: the
    JSONL files beside it are always written and hold everything."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(os.path.join(out, "tb"))
