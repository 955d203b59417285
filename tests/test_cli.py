"""The console scripts: help lists the commands; bad input gets an error that names it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from pipeline.cli import app as cdpipe
from trainer.cli import app as cdtrain

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_commands():
    out = runner.invoke(cdpipe, ["--help"]).output
    assert "synth" in out and "inspect" in out
    assert "env" in runner.invoke(cdtrain, ["--help"]).output


def _dialect_table() -> dict[str, dict[str, str]]:
    """The README's dialect table: {"cdpipe extract": {column: cell}}."""
    lines = (ROOT / "README.md").read_text().split("## One dialect", 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = [line for line in lines[first:] if line.startswith("|") or not line.strip()]
    rows = rows[:rows.index("")] if "" in rows else rows  # the first table only
    head = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0].strip("`")] = dict(zip(head, cells))
    return table


def _help(app, name: str) -> tuple[str, dict]:
    """A command's --help text and its visible options {flag: click parameter}."""
    import typer.main

    command = typer.main.get_command(app).commands[name]
    res = runner.invoke(app, [name, "--help"], terminal_width=200)
    assert res.exit_code == 0, res.output
    options = {opt: p for p in command.params if not getattr(p, "hidden", False) for opt in p.opts}
    return res.output, options


def test_every_command_follows_the_readme_dialect_table():
    """Every visible command is a row of the README's table, and its --help has exactly the conventions the
    row states: how it names the store, what --out writes, the size flag (WIDTHxHEIGHT), --workers (0: this
    process), --device and --json; choices are listed; no `<bool>` on flags, no positional store."""
    import typer.main

    table = _dialect_table()
    seen = set()
    for tool, app in (("cdpipe", cdpipe), ("cdtrain", cdtrain)):
        for name, command in typer.main.get_command(app).commands.items():
            if command.hidden:
                continue
            key = f"{tool} {name}"
            seen.add(key)
            assert key in table, f"{key} is missing from the README's dialect table"
            row = table[key]
            text, options = _help(app, name)
            assert "<bool>" not in text and "{" not in text, f"{key} --help: {text}"
            assert not [p for p in command.params if p.param_type_name == "argument" and not p.hidden
                        and p.name in ("url", "store", "old")], f"{key} takes a store as an argument"
            store = row["store it reads"]
            if store.startswith("`--store"):
                assert "--store STORE" in text, key
            else:
                assert "--store" not in options, key
            assert ("--out" in options) == (row["`--out` writes"] != "-"), key
            size = row["sizes (WIDTHxHEIGHT)"]
            if size != "-":
                assert f"{size.strip('`')} WIDTHxHEIGHT" in text, key
            assert not [o for o, p in options.items() if re.fullmatch(r"[A-Z]+x[A-Z]+", p.metavar or "")
                        and p.metavar != "WIDTHxHEIGHT"], key
            workers = row["`--workers N` (0: this process)"]
            assert ("--workers" in options) == (workers != "-"), key
            if workers != "-":
                assert "0: " in (options["--workers"].help or "") and "this process" in options["--workers"].help, key
            assert ("--device" in options) == (row["`--device`"] == "yes"), key
            assert ("--json" in options) == (row["`--json`"] == "yes"), key
            for flag in ("--model", "--loss", "--split", "--layout", "--feature-encoding", "--dataset"):
                if flag in options:
                    shown = re.search(rf"^\s+{flag} (\S+)", text, re.M).group(1)
                    assert shown.startswith("<") and (shown.count("|") or flag == "--dataset"), (key, flag, shown)
    assert seen == set(table), f"rows of the table with no command: {set(table) - seen}"


def test_usage_errors_are_one_line_exit_2():
    """An unknown option, a value outside the choices and a missing option end in one line naming the flag
    and pointing at --help, exit 2: the same as every other bad input."""
    for app, args, flag in ((cdtrain, ["pretrain", "--model", "resnet"], "--model"),
                            (cdtrain, ["pretrain", "--bogus"], "--bogus"),
                            (cdpipe, ["extract", "--layout", "rows"], "--layout"),
                            (cdpipe, ["verify"], "--store"),
                            (cdtrain, ["evaluate", "--store", "s.zarr"], "--segmenter")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        line = res.output.strip()
        assert line.count("\n") == 0 and line.startswith("error: ") and flag in line, (args, line)


def test_old_spellings_still_work(small_store, tmp_path):
    """The spellings before the dialect (a positional store, `cdtrain info`, extract's HEIGHTxWIDTH
    --image-size) are accepted, hidden from --help; two different stores in one command are refused."""
    store = small_store[0].out
    assert runner.invoke(cdpipe, ["info", store]).exit_code == 0
    assert runner.invoke(cdpipe, ["info", "--store", store]).exit_code == 0
    res = runner.invoke(cdpipe, ["info", "--store", store, str(tmp_path / "other.zarr")])
    assert res.exit_code == 2 and "two stores" in res.output
    assert runner.invoke(cdtrain, ["info"]).exit_code == 0
    assert "--image-size" not in runner.invoke(cdpipe, ["extract", "--help"]).output


def test_bad_image_size_is_named(tmp_path):
    res = runner.invoke(cdpipe, ["synth", "--out", str(tmp_path / "x"), "--camera-size", "800by450"])
    assert res.exit_code == 2 and "--camera-size '800by450' is not WIDTHxHEIGHT" in res.output


def test_too_many_mini_scenes_refused(tmp_path):
    res = runner.invoke(cdpipe, ["synth", "--out", str(tmp_path / "x"), "--scenes", "11"])
    assert res.exit_code != 0 and "v1.0-mini" in res.output


def test_inspect_missing_version_names_folder(tmp_path):
    res = runner.invoke(cdpipe, ["inspect", str(tmp_path), "--version", "v1.0-mini"])
    assert res.exit_code == 2 and "v1.0-mini" in res.output


def test_inspect_reads_synth_dataroot(small_dataroot):
    cfg, summary = small_dataroot
    res = runner.invoke(cdpipe, ["inspect", cfg.out, "--version", cfg.version, "--json"])
    assert res.exit_code == 0, res.output
    import json

    seen = json.loads(res.output)
    for key in ("scenes", "keyframes", "images", "points_per_eval_class", "annotations", "points_per_sweep"):
        assert seen[key] == summary[key], key


def test_console_scripts_installed():
    """The scripts that the install put beside this Python (pyproject's [project.scripts]) run."""
    from pathlib import Path

    for script, command in (("cdpipe", "extract"), ("cdtrain", "pretrain")):
        path = Path(sys.executable).parent / script
        assert path.is_file(), f"{path} not installed: pip install -e '.[pipeline,train,dev]'"
        res = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        assert "Usage" in res.stdout and command in res.stdout, res.stdout


def test_extract_refuses_without_weights(small_dataroot, tmp_path):
    cfg, _ = small_dataroot
    res = runner.invoke(cdpipe, ["extract", "--dataroot", cfg.out, "--out", str(tmp_path / "s.zarr")])
    assert res.exit_code != 0 and "--random-teacher" in res.output
    assert not (tmp_path / "s.zarr").exists()


def test_extract_bad_image_size_is_named(small_dataroot, tmp_path):
    cfg, _ = small_dataroot
    res = runner.invoke(cdpipe, ["extract", "--dataroot", cfg.out, "--out", str(tmp_path / "s.zarr"),
                                 "--random-teacher", "--teacher-size", "224"])
    assert res.exit_code == 2 and "--teacher-size '224'" in res.output


def test_store_summary_names_random_teacher(small_store):
    cfg, _ = small_store
    res = runner.invoke(cdpipe, ["store", cfg.out])
    assert res.exit_code == 0, res.output
    assert "RANDOM INITIALISATION" in res.output and "6 of 6 written" in res.output


def test_store_command_on_missing_store(tmp_path):
    res = runner.invoke(cdpipe, ["store", str(tmp_path / "nothing.zarr")])
    assert res.exit_code == 2 and "nothing.zarr" in res.output


def test_cli_defaults_are_the_configs_defaults():
    """cdtrain reads its defaults from trainer/config.py; cdpipe extract restates its configs' defaults (so
    that --help needs no torch). Each option named like a config field (or mapped to one below) must have
    that field's default."""
    import typer.main

    from pipeline.extract import ExtractConfig
    from pipeline.occupancy import OccupancyGrid
    from pipeline.store import as_attribute
    from pipeline.teacher import TeacherConfig
    from trainer.config import (
        DataConfig,
        DetectionConfig,
        FinetuneConfig,
        ModelConfig,
        ProbeConfig,
        TrainConfig,
        field_defaults,
    )

    def defaults(*classes):
        out = {}
        for cls in classes:
            out.update(field_defaults(cls))
        return out

    grid, teacher = field_defaults(OccupancyGrid), field_defaults(TeacherConfig)
    expected = {
        (cdtrain, "pretrain"): defaults(DataConfig, ModelConfig, TrainConfig) | {"model": ModelConfig.arch},
        (cdtrain, "finetune"): defaults(DataConfig, ProbeConfig, FinetuneConfig, DetectionConfig)
        | {"probe_points": ProbeConfig.points_per_sweep},
        (cdpipe, "extract"): defaults(ExtractConfig) | {
            "teacher": teacher["name"], "teacher_seed": teacher["seed"], "random_teacher": teacher["random"],
            "teacher_size": "x".join(map(str, teacher["image_size"][::-1])), "occ_voxel": grid["voxel_size"],
            "occ_free_ratio": grid["free_per_occupied"], "occ_near": grid["near_surface_m"]},
    }
    checked = 0
    for (app, name), want in expected.items():
        for param in typer.main.get_command(app).commands[name].params:
            if param.name in want:
                value, default = want[param.name], param.default
                assert as_attribute(default) == as_attribute(value), f"{name} --{param.name}: CLI {default!r}, " \
                                                                     f"config {value!r}"
                checked += 1
    assert checked >= 40, checked


def test_extract_of_an_empty_nuscenes_split_is_one_line(small_dataroot, tmp_path):
    """A split the version's tables hold no scene of (`--split test` on a mini world): one line naming the
    dataroot, the split and the scenes there are, exit 2, no store written."""
    cfg, _ = small_dataroot
    out = tmp_path / "s.zarr"
    res = runner.invoke(cdpipe, ["extract", "--dataroot", cfg.out, "--split", "test", "--out", str(out),
                                 "--random-teacher", "--teacher-size", "112x56", "--workers", "0",
                                 "--tasks-per-worker", "1", "--torch-threads", "1", "--json"])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.strip().splitlines()[-1] == (f"error: --dataroot {cfg.out} --split test: version {cfg.version} "
                                                   f"has no keyframe in a scene of split test; its scenes by split: "
                                                   f"train 1, val 1")
    assert not out.exists()


def test_results_count_scenes_sweeps_and_classes_in_the_singular_too(capsys):
    """`cdtrain finetune` and `evaluate` print `1 scene`, `1 sweep`, `1 class`, not `1 scenes`."""
    from pipeline.dialect import plural
    from trainer.cli import print_result

    assert [plural(n, "scene") for n in (0, 1, 2)] == ["0 scenes", "1 scene", "2 scenes"]
    assert plural(1, "class") == "1 class" and plural(3, "class") == "3 classes"
    result = {"init": "random", "labels_percent": 1, "label_scenes": ["scene-0001"], "split": "val", "sweeps": 1,
              "iou": {"car": 0.5}, "miou": 0.5, "classes": ["car"]}
    print_result(result)
    out = capsys.readouterr().out
    assert "1% labels (1 scene); val: 1 sweep\n" in out and "(over the 1 class present in val)" in out
    print_result(result | {"label_scenes": ["a", "b"], "label_sweeps": [4, 9], "sweeps": 3})
    assert "(2 sweeps of 2 scenes); val: 3 sweeps\n" in capsys.readouterr().out
