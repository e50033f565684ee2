#!/usr/bin/env bash
# The test command: set up (or reuse) .venv, then run the whole suite.
# GPU/TensorRT tests are marked and skip cleanly on machines without them.
# Two pytest-xdist workers, each test module whole on one of them (its module fixtures built
# once); SAN_TEST_WORKERS=0 runs the suite in this process.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -n "${SAN_TEST_WORKERS:-2}" --dist loadfile "$@"
