#!/usr/bin/env bash
# The whole test suite, from a fresh clone: sets up (idempotent), then runs pytest against a real ComfyUI.
# COMFYUI_DIR=/path/to/ComfyUI runs it against your own ComfyUI instead of the bundled test host.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest tests -q -ra --durations=15 "$@"
