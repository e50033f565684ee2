#!/usr/bin/env bash
# The main job: set up (or reuse) .venv, then describe the paper's SAN.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
san-info
