"""The one dialect of ``cdpipe`` and ``cdtrain``: options that mean the same in every command, and one way
every command ends on bad input.

- ``--store STORE`` names the store a command reads (a local path or a file://, http(s)://, s3:// or
  gs:// URL); ``--out`` names what a command writes (a store, a run folder, a PNG, a JSON file).
- Sizes are ``WIDTHxHEIGHT``, as image files state them (``--camera-size 1600x900``,
  ``--teacher-size 448x224``).
- ``--workers N``: N worker processes; 0 does the work in this process.
- ``--device cpu|cuda|cuda:N`` wherever a model runs (default: cuda when there is one).
- ``--json`` wherever a command reports numbers: the same report as one JSON document on stdout.
- Choices are listed in ``--help``; a value outside them is refused.
- Bad input ends in one line on stderr, ``error: ...``, exit status 2 (1: the work ran and part of it
  failed; 130: interrupted).

Light module (typer only): both command-line tools import it before anything heavy.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from typer.core import TyperGroup

# click's usage errors, whichever click typer runs on (its own copy in recent releases, click itself before)
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")

STORE_HELP = "Store: a local path, or a file://, http(s)://, s3:// or gs:// URL."
DEVICE_HELP = "cpu, cuda or cuda:N (default: cuda when there is one)."
JSON_HELP = "Print the report as one JSON document on stdout (messages stay on stderr)."


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line on stderr and exit (2: bad input or a store that cannot be used, found before any
    work; 1: the work ran and some of it failed)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class OneLineErrors(TyperGroup):
    """A command group whose usage errors (unknown option, value outside the choices, missing option) end
    in one line, ``error: ...`` and a pointer to ``--help``, exit 2, like every other bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False,
                              **extra)
        except _USAGE_ERROR as e:
            where = e.ctx.command_path if e.ctx is not None else (prog_name or "")
            message = e.format_message().replace("Value error, ", "")
            typer.echo(f"error: {message} (see `{where} --help`)", err=True)
            if not standalone_mode:
                raise
            sys.exit(2)
        except _CLICK_ERROR as e:
            if not standalone_mode:
                raise
            e.show()
            sys.exit(e.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            typer.echo("\ninterrupted", err=True)
            sys.exit(130)
        if standalone_mode:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


def new_app(help: str) -> typer.Typer:
    """A command-line tool in the dialect: plain man-page help (no boxes, no ``<bool>``), one-line errors."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                       cls=OneLineErrors, pretty_exceptions_enable=False)


def store_from(option: str | None, positional: str | None, command: str) -> str:
    """The store a reading command names: ``--store STORE``, or (the old spelling, kept hidden for one
    release) the store as a positional argument."""
    if option and positional and option != positional:
        fail(f"{command}: two stores given ({positional} and --store {option}); name one, with --store")
    store = option or positional
    if not store:
        fail(f"{command}: name the store with --store STORE (see `{command} --help`)")
    return store


def absolute(store: str | None) -> str | None:
    """A local store path made absolute (URLs as they are), so that a run resumed from another folder
    still finds the store its checkpoint records."""
    if store is None or "://" in store:
        return store
    import os

    return os.path.abspath(store)


def parse_size(flag: str, text: str) -> tuple[int, int]:
    """A size ``WIDTHxHEIGHT`` -> (width, height), refused in one line naming ``flag``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        fail(f"{flag} {text!r} is not WIDTHxHEIGHT, e.g. 800x450")
    if w <= 0 or h <= 0:
        fail(f"{flag} {text!r}: both sizes must be positive (WIDTHxHEIGHT)")
    return w, h


def plural(n: int, word: str) -> str:
    """``n word`` with the word in the plural unless n is 1: ``1 scene``, ``2 scenes``, ``3 processes``."""
    return f"{n} {word}{'' if n == 1 else ('es' if word.endswith('s') else 's')}"


def given(ctx: typer.Context, name: str) -> bool:
    """True when the user gave the option ``name`` (its parameter name) on the command line or in the
    environment, rather than leaving its default."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def check_device(device: str | None) -> str:
    """``device``, or cuda when there is one else cpu; refused in one line when torch cannot use it."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        fail(f"--device {device!r}: not a device; give cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        fail(f"--device {device}: this machine has no CUDA device torch can use; give --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        fail(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices (cuda:0 .. "
             f"cuda:{torch.cuda.device_count() - 1})")
    if dev.type not in ("cpu", "cuda"):
        fail(f"--device {device}: give cpu, cuda or cuda:N")
    return device
