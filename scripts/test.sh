#!/usr/bin/env bash
# The test command: set up (or reuse) .venv, then run the whole suite.
# GPU/TensorRT tests are marked and skip cleanly on machines without them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest "$@"
