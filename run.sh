#!/usr/bin/env bash
# The project's entry points for a fresh machine (see README.md):
#   ./run.sh demo   synthetic nuScenes-format world -> teacher-feature store (semantic stand-in teacher) -> short
#                   pretraining -> linear-probe mIoU of the distilled student and of a random-init one
#   ./run.sh test   the test suite (extra arguments go to pytest, e.g. ./run.sh test -m "not slow")
#   ./run.sh lint   ruff check . (rules in pyproject.toml; extra arguments go to ruff, e.g. --statistics)
# Each creates the virtual environment .venv on first use, in one pip command.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${CD_VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
# torch and torchvision are pinned here, in the same pip command as everything else, so that nothing
# pulls a second multi-GB torch; nuscenes-devkit 1.2.0 pins numpy<2, which keeps zarr at 3.1.x.
PINS=(torch==2.14.1 torchvision==0.29.1 nuscenes-devkit==1.2.0)

ensure_venv() {
    local stamp="$VENV/.installed"
    local want
    want="$(cat pyproject.toml run.sh | sha256sum | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    if ! command -v "$PYTHON" >/dev/null; then
        echo "error: $PYTHON not found; torch==2.14.1 needs Python 3.11 here (set PYTHON=/path/to/python3.11)" >&2
        exit 1
    fi
    [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
    echo ">> installing into $VENV (first run: a few minutes)" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        "${PINS[@]}" -e ".[pipeline,train,dev]"
    echo "$want" >"$stamp"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    demo)
        ensure_venv
        out="${DEMO_DIR:-demo}"
        "$VENV/bin/cdpipe" synth --out "$out/nuscenes" "$@"
        # no DINOv2 weights can be downloaded here: the demo's teacher is the semantic stand-in of
        # tools/teachers/ (a small ViT trained with class labels on another synthetic world), named as such
        # in the store and its summary; `cdpipe extract --random-teacher` runs a random ViT instead
        "$VENV/bin/cdpipe" extract --dataroot "$out/nuscenes" --out "$out/store.zarr" --overwrite \
            --teacher vit_small_patch14_dinov2 --teacher-weights tools/teachers/semantic.safetensors
        # what the store holds for one val sweep: cameras and points coloured by the teacher's features
        "$VENV/bin/cdpipe" preview --store "$out/store.zarr" --split val --sweep 0 --out "$out/preview_val.png"
        # a short CPU pretraining of a small student: the distillation loss should fall
        rm -rf "$out/run" "$out/probe" "$out/probe_random"
        "$VENV/bin/cdtrain" pretrain --store "$out/store.zarr" --out "$out/run" --model minkunet-tiny \
            --head-hidden 256 --steps "${DEMO_STEPS:-60}" --warmup 6 --max-points 20000
        # how much of the classes can a linear probe read from its frozen features, against the same
        # student at random initialisation? Same labelled points (the train scene), mIoU on the val scene
        "$VENV/bin/cdtrain" finetune --store "$out/store.zarr" --pretrained "$out/run/checkpoint.pt" \
            --linear-probe --out "$out/probe"
        "$VENV/bin/cdtrain" finetune --store "$out/store.zarr" --model minkunet-tiny --linear-probe \
            --out "$out/probe_random"
        "$VENV/bin/python" - "$out" <<'PY'
import json, sys
out = sys.argv[1]
for name, run in (("distilled student", "probe"), ("random-init student", "probe_random")):
    r = json.load(open(f"{out}/{run}/result.json"))
    print(f"linear probe, {name:<19}: val mIoU {100 * r['miou']:5.1f} ({r['fit_points']} labelled points, "
          f"{r['sweeps']} val sweeps)")
PY
        ;;
    test)
        ensure_venv
        # one test process per core (pytest-xdist); `./run.sh test -n 0` runs them in this process
        "$VENV/bin/python" -m pytest -n auto "$@"
        ;;
    lint)
        ensure_venv
        "$VENV/bin/ruff" check . "$@"
        ;;
    setup)
        ensure_venv
        ;;
    *)
        echo "usage: ./run.sh demo|test|lint|setup [args]" >&2
        exit 2
        ;;
esac
