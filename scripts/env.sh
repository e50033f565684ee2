#!/usr/bin/env bash
# Create or reuse the project's virtual environment (.venv) and install what it needs.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (a stamp skips reinstalls).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SAN_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[env] creating virtual environment in $VENV"
    "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.san-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/env.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[env] installing torch, torchvision and the toolkit (first run takes a few minutes)"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # Pinned pair: installs from local disk on the project's CI machines; a torch without
    # its matching torchvision fails at import.
    "$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[cpu,train,triton,search,cluster,openvino,dev]"
    # BoxMOT gets an environment of its own: its ONNX ReID backend installs onnxruntime==1.24.3
    # whenever another version is present, and the toolkit needs a newer one. It sees this
    # environment's packages (torch, the toolkit) after its own, and holds BoxMOT and its pin.
    BOXMOT_VENV="$VENV-boxmot"
    rm -rf "$BOXMOT_VENV" && "$PY" -m venv "$BOXMOT_VENV"
    SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    BOXMOT_SITE="$("$BOXMOT_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    echo "import site; site.addsitedir('$SITE')" > "$BOXMOT_SITE/san-toolkit.pth"
    "$BOXMOT_VENV/bin/python" -m pip install -q -e "$ROOT[boxmot]"
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
