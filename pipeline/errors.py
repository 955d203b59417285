"""The errors of the extractor and the one way every error is shortened to a line.

Light module: the trainer imports it. The store's own errors (``StoreError``, ``DamagedChunk``) live with
the schema in ``pipeline/store.py``.
"""

from __future__ import annotations

import sys

#: The modules that only an extra of pyproject.toml installs, and that extra: the base install has neither
#: the extractor's (devkit, Dask, timm) nor the trainer's (scipy).
EXTRA_OF_MODULE = {
    **dict.fromkeys(("nuscenes", "dask", "distributed", "timm", "torchvision", "safetensors", "pyquaternion"),
                    "pipeline"),
    "scipy": "train",
}


class ExtractError(RuntimeError):
    """Bad input met while indexing or extracting; the message names the file or token at fault."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type's name when it has none), at most ``limit``
    characters: what a one-line error quotes of a library's multi-line one."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:limit]


def run_cli(app) -> None:
    """Run a typer ``app`` as a console script. A command that needs a module of an extra that is not
    installed (``cdpipe extract`` in a trainer-only install) ends in one line naming the extra, exit 2."""
    try:
        app()
    except ModuleNotFoundError as e:
        message = missing_extra(e)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """The one line that names the extra installing the module ``error`` misses (None: a module of no
    extra)."""
    extra = EXTRA_OF_MODULE.get((error.name or "").partition(".")[0])
    if extra is None:
        return None
    return (f"{error.name} is not installed; this command needs the {extra!r} extra: "
            f"pip install \"cleverdistiller-pipe[{extra}]\" (from a checkout: pip install -e \".[{extra}]\")")
