#!/usr/bin/env bash
# The main job: prepare a ComfyUI with this pack and start it on http://127.0.0.1:${PORT:-8188}.
#  - COMFYUI_DIR=/path/to/ComfyUI: your ComfyUI. The pack is linked into its custom_nodes/ and it runs
#    with its own models/; nothing else in its tree is changed. Python: VENV=/path/to/its/venv, or an
#    environment prepared for it under .host/user/venv. INFU_BASE_DIR=/some/folder keeps even
#    custom_nodes/, models/ and outputs out of your tree (ComfyUI's --base-directory).
#  - Otherwise a bundled test host: ComfyUI 0.30.0 where ../shared/hosts/ has it, else ComfyUI 0.3.75
#    from the package index (INFU_HOST=0.3.75|0.30.0 to choose), with its base folder .host/base/
#    (INFU_BASE_DIR to put it elsewhere).
#  - The shipped workflows appear in ComfyUI's template browser under this pack's name.
#  - Without real InfiniteYou weights, small self-test models are generated so that the
#    "00 Self-test" workflow runs end to end on a CPU in seconds. Its output is noise: untrained weights.
#    They go to a folder of their own, .host/selftest/ (INFU_SELFTEST_DIR to put it elsewhere), never into
#    ComfyUI's models/; ComfyUI reads them through --extra-model-paths-config.
#  - On a machine without a GPU, ComfyUI is started with --cpu.
#  - INFU_DRY_RUN=1: everything above, then print the ComfyUI command line instead of starting it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED_HOSTS=${INFU_SHARED_HOSTS:-$ROOT/../shared/hosts}
if [[ -n "${COMFYUI_DIR:-}" ]]; then
  line=$(bash scripts/setup.sh | tail -n 1)
else
  host=${INFU_HOST:-}
  if [[ -z "$host" ]]; then
    host=0.3.75
    [[ -f "$SHARED_HOSTS/comfyui-0.30.0.tar.gz" ]] && host=0.30.0
  fi
  line=$(bash scripts/setup.sh "$host" | tail -n 1)
fi
COMFY=$(sed -E 's/.* comfyui=([^ ]+) .*/\1/' <<<"$line")
PYBIN=$(sed -E 's/.* python=([^ ]+)$/\1/' <<<"$line")
PORT=${PORT:-8188}

SELFTEST_DIR=${INFU_SELFTEST_DIR:-$ROOT/.host/selftest}

ARGS=()
if [[ -n "${COMFYUI_DIR:-}" && -z "${INFU_BASE_DIR:-}" ]]; then
  BASE="$COMFY"  # your ComfyUI: the pack link is the one thing added to it
else
  BASE="${INFU_BASE_DIR:-$ROOT/.host/base}"
  ARGS+=(--base-directory "$BASE")
  mkdir -p "$BASE/models" "$BASE/input"
fi
if ! "$PYBIN" -c 'import sys, torch; mps = getattr(torch.backends, "mps", None); sys.exit(0 if torch.cuda.is_available() or (mps is not None and mps.is_available()) else 1)'; then
  ARGS+=(--cpu)
fi
mkdir -p "$BASE/custom_nodes"
ln -sfn "$ROOT" "$BASE/custom_nodes/infiniteyou-studio"
COMFYUI_DIR="$COMFY" "$PYBIN" scripts/selftest.py --models "$BASE/models" --selftest-dir "$SELFTEST_DIR"
if [[ -f "$SELFTEST_DIR/extra_model_paths.yaml" ]]; then
  ARGS+=(--extra-model-paths-config "$SELFTEST_DIR/extra_model_paths.yaml")
fi
cd "$COMFY"
COMMAND=("$PYBIN" main.py --listen 127.0.0.1 --port "$PORT" --disable-api-nodes "${ARGS[@]}" "$@")
if [[ -n "${INFU_DRY_RUN:-}" ]]; then
  printf 'InfiniteYou: would start in %s:' "$COMFY"; printf ' %q' "${COMMAND[@]}"; printf '\n'
  exit 0
fi
echo "Starting ComfyUI ($COMFY) on http://127.0.0.1:$PORT with ${ARGS[*]:-no extra arguments} (Ctrl-C stops it)"
exec "${COMMAND[@]}"
