#!/usr/bin/env bash
# The test command: set up (or reuse) .venv, then lint (ruff), type-check (mypy, beside the
# tests) and run the whole suite. GPU/TensorRT tests are marked and skip cleanly on machines
# without them. Two pytest-xdist workers, each test module whole on one of them (its module
# fixtures built once); SAN_TEST_WORKERS=0 runs the suite in this process.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
types="$(mktemp)"
mypy > "$types" 2>&1 &
checking=$!
status=0
python -m pytest -n "${SAN_TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
if ! wait "$checking"; then
    cat "$types"
    status=1
fi
rm -f "$types"
exit "$status"
