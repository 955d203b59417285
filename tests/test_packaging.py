"""A trainer-only install (``pip install ".[train]"``) has no devkit, Dask, timm, torchvision or safetensors:
``trainer/`` must never import them, however indirectly (through ``pipeline.*``)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from pathlib import Path

import pytest

from pipeline.errors import EXTRA_OF_MODULE

ROOT = Path(__file__).resolve().parent.parent
# what only the "pipeline" extra installs (pyproject.toml); top-level module names, written here rather than
# taken from the code under test (EXTRA_OF_MODULE, which must agree: test_the_extras_name_their_modules)
HEAVY = ("dask", "distributed", "nuscenes", "pyquaternion", "safetensors", "timm", "torchvision")
PROJECT = ("pipeline", "trainer")
IMPORT_FUNCTIONS = ("import_module", "__import__")  # importlib.import_module("x"), __import__("x")
#: pipeline modules that a trainer command imports inside the command, on purpose, because the command needs
#: the pipeline extra; a trainer-only install gets the one-line "needs the pipeline extra" error there
#: (test_evaluate_detection_bad_input_is_one_line). The walk does not follow them.
NEEDS_PIPELINE_EXTRA = {"pipeline.detection_eval": "cdtrain evaluate --task detection scores with the devkit"}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_file(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imports_of(root: Path, path: Path) -> list[tuple[int, str]]:
    """Every module that ``path`` may import, as (line, absolute dotted name): top-level imports and those
    inside functions, relative ones resolved, ``from P import M`` also as ``P.M`` (M may be a submodule),
    and ``importlib.import_module("literal")``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if called in IMPORT_FUNCTIONS:
                found.append((node.lineno, node.args[0].value))
    return found


def heavy_imports(root: Path, start: tuple[str, ...] = ("trainer",), heavy=HEAVY, project=PROJECT):
    """Walk every module of the packages (or single modules) ``start`` under ``root`` and, transitively,
    every project module they import (with its parent packages' ``__init__``). Returns (problems, reached):
    one message per import of a ``heavy`` top-level module, naming its file and line and the chain of imports
    that reaches it; and the relative paths of the modules walked."""
    chains: dict[Path, list[str]] = {}
    queue: deque[Path] = deque()
    for name in start:
        top = root / name
        for path in [top] if top.is_file() else sorted(top.rglob("*.py")):
            chains[path] = []
            queue.append(path)
    problems = []
    while queue:
        path = queue.popleft()
        rel = path.relative_to(root).as_posix()
        for line, name in imports_of(root, path):
            top = name.split(".")[0]
            if top in heavy:
                chain = " -> ".join([*chains[path], rel]) if chains[path] else f"{rel} (a start)"
                problems.append(f"{rel}:{line}: imports {name} (heavy: {top}); reached by {chain}")
            elif top in project and not any(name == m or name.startswith(m + ".") for m in NEEDS_PIPELINE_EXTRA):
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    target = module_file(root, ".".join(parts[:i]))
                    if target is not None and target not in chains:
                        chains[target] = [*chains[path], f"{rel}:{line} ({'.'.join(parts[:i])})"]
                        queue.append(target)
    problems = sorted(set(problems))
    return problems, sorted(p.relative_to(root).as_posix() for p in chains)


def test_trainer_reaches_no_heavy_module():
    problems, reached = heavy_imports(ROOT)
    assert not problems, "trainer/ reaches modules that only the pipeline extra installs:\n" + "\n".join(problems)
    # the walk did follow the trainer into the shared part of pipeline/
    assert {"trainer/cli.py", "pipeline/__init__.py", "pipeline/store.py", "pipeline/classes.py"} <= set(reached)
    assert "pipeline/extract.py" not in reached


def test_store_commands_reach_no_heavy_module():
    """``cdpipe info`` and ``verify`` work from a trainer-only install too (``preview`` and ``migrate`` read
    the dataroot's tables through pipeline/frames.py, which needs the devkit's split lists)."""
    problems, reached = heavy_imports(ROOT, ("pipeline/verify.py",))
    assert not problems, "verify reaches modules that only the pipeline extra installs:\n" + "\n".join(problems)
    assert "pipeline/store.py" in reached


def test_heavy_import_checker_names_file_line_and_chain(tmp_path):
    files = {
        "trainer/__init__.py": "",
        "trainer/cli.py": "import os\n\n\ndef main():\n    from trainer.data import load\n    return load()\n",
        "trainer/data.py": "from pipeline.store import open_store\n",
        "pipeline/__init__.py": "",
        "pipeline/store.py": "import os\n\n\ndef open_store():\n    from .helpers import frames\n",
        "pipeline/helpers/__init__.py": "",
        "pipeline/helpers/frames.py": "import numpy\n\n\ndef read():\n    import dask.distributed\n",
        "pipeline/teacher.py": "import timm\n",  # never reached from trainer/: not reported
        "pipeline/lazy.py": "import importlib\nm = importlib.import_module('torchvision.ops')\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    problems, reached = heavy_imports(tmp_path)
    assert len(problems) == 1, problems
    message = problems[0]
    assert message.startswith("pipeline/helpers/frames.py:5: imports dask.distributed"), message
    assert message.endswith("reached by trainer/data.py:1 (pipeline.store) -> pipeline/store.py:5 "
                            "(pipeline.helpers.frames) -> pipeline/helpers/frames.py"), message
    assert "pipeline/teacher.py" not in reached

    # a dynamic import by literal name counts too, and a module reached only through a package import
    (tmp_path / "trainer/data.py").write_text("from pipeline.store import open_store\nimport pipeline.lazy\n")
    problems, _ = heavy_imports(tmp_path)
    assert any(p.startswith("pipeline/lazy.py:2: imports torchvision.ops") for p in problems), problems


BLOCKER = """
import sys

HEAVY = {heavy!r}
attempts = []


class BlockHeavy:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in HEAVY:
            attempts.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, BlockHeavy())
import {cli} as cli

sys.argv = ["{script}", *{argv!r}]
try:
    cli.console_script()
except SystemExit as e:
    code = e.code
else:
    code = 0
print("BLOCKED", sorted(set(attempts)), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.slow
def test_pretrain_runs_with_heavy_modules_missing(small_store, tmp_path):
    out = tmp_path / "run"
    argv = ["pretrain", "--store", small_store[0].out, "--out", str(out), "--model", "minkunet-tiny",
            "--head-hidden", "32", "--steps", "2", "--warmup", "1", "--voxel-size", "0.4", "--batch-size", "1"]
    script = BLOCKER.format(heavy=HEAVY, argv=argv, cli="trainer.cli", script="cdtrain")
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (out / "checkpoint.pt").is_file()
    assert "pretrained minkunet-tiny for 2 steps" in res.stdout
    assert "BLOCKED []" in res.stderr  # nothing even tried to import them


def test_extract_without_the_pipeline_extra_says_so_in_one_line(small_dataroot, tmp_path):
    argv = ["extract", "--dataroot", small_dataroot[0].out, "--out", str(tmp_path / "s.zarr"), "--random-teacher"]
    script = BLOCKER.format(heavy=HEAVY, argv=argv, cli="pipeline.cli", script="cdpipe")
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-3000:]
    error = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "needs the 'pipeline' extra" in error[0] and ".[pipeline]" in error[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "s.zarr").exists()


UNDECLARED = ("torchsparse",)  # imported when importable (trainer/sparse.py); not on PyPI for every torch


def _declared() -> dict[str, set[str]]:
    """pyproject.toml's distributions by where they are declared: "base" and each extra."""
    import re

    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(requirements):
        out = set()
        for r in requirements:
            name, _, rest = re.split(r"([<>=!~; ]|$)", r, maxsplit=1)[0].partition("[")
            out.add(name.lower().replace("_", "-"))
            out |= {extra.strip() for extra in rest.rstrip("]").split(",") if extra}  # dask[distributed]
        return out

    return {"base": names(project["dependencies"]),
            **{extra: names(reqs) for extra, reqs in project["optional-dependencies"].items()}}


def test_every_imported_distribution_is_declared_where_its_half_gets_it():
    """Each third-party module that pipeline/ or trainer/ imports comes from a distribution that pyproject
    declares: trainer/'s in the base or the train extra, the rest in the base or the pipeline extra."""
    from importlib.metadata import packages_distributions

    declared = _declared()
    by_module = packages_distributions()
    missing = []
    for half, extra in (("trainer", "train"), ("pipeline", "pipeline")):
        for path in sorted((ROOT / half).rglob("*.py")):
            for line, name in imports_of(ROOT, path):
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in PROJECT or top in ("__future__", *UNDECLARED):
                    continue
                dists = {d.lower().replace("_", "-") for d in by_module.get(top, [])}
                if not dists & (declared["base"] | declared[extra]):
                    missing.append(f"{path.relative_to(ROOT)}:{line}: {name} (from {sorted(dists) or '?'}) is in "
                                   f"neither the base dependencies nor the {extra!r} extra")
    assert not missing, "\n".join(missing)
    # the two halves' extras hold what their names promise
    assert {"nuscenes-devkit", "dask", "timm"} <= declared["pipeline"] and not {"nuscenes-devkit", "dask", "timm",
                                                                                   "scipy"} & declared["base"]


def test_the_extras_name_their_modules():
    """The one-line "needs the pipeline extra" message knows every module that only that extra installs."""
    assert sorted(m for m, extra in EXTRA_OF_MODULE.items() if extra == "pipeline") == list(HEAVY)
    assert EXTRA_OF_MODULE["scipy"] == "train" and "scipy" in _declared()["train"]
