#!/usr/bin/env bash
# The whole test suite, from a fresh clone, on every ComfyUI host it can get:
#   ComfyUI 0.3.75 (from the package index) and ComfyUI 0.30.0 (from ../shared/hosts/, which exists on
#   the project's machines and in CI only). Each host is set up (scripts/setup.sh, idempotent) and the
#   whole suite runs against it in that host's own Python environment. The summary at the end gives
#   per-host counts, every skipped test with its reason, and each host that could not be tested.
# COMFYUI_DIR=/path/to/ComfyUI runs the suite against your ComfyUI only.
# INFU_HOSTS="0.30.0" runs only the hosts named. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
REPORTS="$ROOT/.host/reports"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
SHARED_HOSTS=${INFU_SHARED_HOSTS:-$ROOT/../shared/hosts}

if [[ -n "${COMFYUI_DIR:-}" ]]; then
  hosts=(user)
else
  hosts=(${INFU_HOSTS:-0.3.75 0.30.0})
fi
started=$(date +%s)
summary_python=
for name in "${hosts[@]}"; do
  if [[ "$name" == 0.30.0 && ! -f "$SHARED_HOSTS/comfyui-0.30.0.tar.gz" ]]; then
    echo "ComfyUI 0.30.0 not tested: $SHARED_HOSTS/comfyui-0.30.0.tar.gz not found (it exists on the project's machines and in CI only)." > "$REPORTS/$name.unavailable"
    continue
  fi
  echo "=== host $name: setting up"
  if ! line=$(bash scripts/setup.sh "$name" | tee /dev/stderr | tail -n 1); then
    echo "ComfyUI $name not tested: scripts/setup.sh failed (see the log above)." > "$REPORTS/$name.unavailable"
    echo 1 > "$REPORTS/$name.rc"
    continue
  fi
  comfy=$(sed -E 's/.* comfyui=([^ ]+) .*/\1/' <<<"$line")
  python=$(sed -E 's/.* python=([^ ]+)$/\1/' <<<"$line")
  echo "=== host $name: pytest against $comfy"
  host_started=$(date +%s)
summary_python=
  summary_python=$python
  COMFYUI_DIR="$comfy" INFU_HOST_NAME="$name" INFU_REPORTS="$REPORTS" "$python" -m pytest tests -q -ra --durations=10 \
    --junitxml="$REPORTS/$name.xml" -o junit_family=xunit1 "$@"
  echo $? > "$REPORTS/$name.rc"
  echo $(( $(date +%s) - host_started )) > "$REPORTS/$name.seconds"
done
echo $(( $(date +%s) - started )) > "$REPORTS/total.seconds"
exec "${summary_python:-python3}" scripts/test_summary.py "$REPORTS"
