#!/usr/bin/env bash
# The main job: prepare a ComfyUI with this pack and start it on http://127.0.0.1:${PORT:-8188}.
#  - COMFYUI_DIR=/path/to/ComfyUI: use your ComfyUI (the pack is linked into its custom_nodes/);
#    otherwise the bundled test host under .host/ is used, with its own base folder .host/base/
#    (INFU_BASE_DIR to put it elsewhere).
#  - The shipped workflows appear in ComfyUI's template browser under this pack's name.
#  - Without real InfiniteYou weights, small self-test models are generated so that the
#    "00 Self-test" workflow runs end to end on a CPU in seconds. Its output is noise: untrained weights.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
bash scripts/setup.sh
COMFY=$(cat .host/comfyui_dir)
PORT=${PORT:-8188}
if [[ -n "${COMFYUI_DIR:-}" ]]; then
  BASE="$COMFY"
  ARGS=()
else
  BASE="${INFU_BASE_DIR:-$ROOT/.host/base}"
  ARGS=(--base-directory "$BASE" --cpu)
fi
mkdir -p "$BASE/custom_nodes" "$BASE/models" "$BASE/input"
ln -sfn "$ROOT" "$BASE/custom_nodes/infiniteyou-studio"
.venv/bin/python scripts/selftest.py --models "$BASE/models" --input "$BASE/input"
cd "$COMFY"
echo "Starting ComfyUI on http://127.0.0.1:$PORT (Ctrl-C stops it)"
exec "$ROOT/.venv/bin/python" main.py --listen 127.0.0.1 --port "$PORT" --disable-api-nodes "${ARGS[@]}" "$@"
