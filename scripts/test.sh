#!/usr/bin/env bash
# The whole test suite, from a fresh clone, on every ComfyUI host it can get:
#   ComfyUI 0.3.75 (from the package index) and ComfyUI 0.30.0 (from ../shared/hosts/, which exists on
#   the project's machines and in CI only). Each host is set up (scripts/setup.sh, idempotent), then the whole
#   suite runs against every host, each in its own Python environment: side by side where the free memory holds
#   them, else one after the other (every host after the first set up while the first one's tests run). Tests that
#   touch no ComfyUI code (tests/host_features.py: newest_host_only) run on the last host only (the newest). The summary at
#   the end gives per-host counts, every skipped test with its reason, what each host left to the newest,
#   each host that could not be tested, and how the hosts' workflow outputs compare.
# COMFYUI_DIR=/path/to/ComfyUI runs the suite against your ComfyUI only.
# INFU_HOSTS="0.30.0" runs only the hosts named; the hosts run side by side where the memory allows
# (INFU_PARALLEL=1 always, INFU_PARALLEL=0 never).
# Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# Python may keep the byte code of what it compiles (the ComfyUI trees, the pack): a machine that sets
# PYTHONDONTWRITEBYTECODE would have every server and test process compile them from source again (about 0.7 s
# of a server's start).
unset PYTHONDONTWRITEBYTECODE
REPORTS="$ROOT/.host/reports"
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
SHARED_HOSTS=${INFU_SHARED_HOSTS:-$ROOT/../shared/hosts}
started=$(date +%s)
echo "disk: $(df -Pm "$ROOT/.host" | awk 'NR==2 {printf "%.1f GB free", $4/1024}') under .host at start (a fresh run needs about 14 GB at its peak)"
quiet_pip() { grep -v "is ignored: it is neither a file nor a directory" || true; }

if [[ -n "${COMFYUI_DIR:-}" ]]; then
  hosts=(user)
else
  hosts=(${INFU_HOSTS:-0.3.75 0.30.0})
fi

# ---- set up the hosts: the first one alone (pip and the disk are the limit), every other one in the
# background while the first one's tests run (its environment, then its tests).
available=()
for name in "${hosts[@]}"; do
  if [[ "$name" == 0.30.0 && ! -f "$SHARED_HOSTS/comfyui-0.30.0.tar.gz" ]]; then
    echo "ComfyUI 0.30.0 not tested: $SHARED_HOSTS/comfyui-0.30.0.tar.gz not found (it exists on the project's machines and in CI only)." > "$REPORTS/$name.unavailable"
    continue
  fi
  available+=("$name")
done
setup_host() {
  local name=$1 t0
  t0=$(date +%s)
  bash scripts/setup.sh "$name" > "$REPORTS/$name.setup.log" 2>&1
  echo $? > "$REPORTS/$name.setup-rc"
  echo $(( $(date +%s) - t0 )) > "$REPORTS/$name.setup-seconds"
}
ready=()
declare -A COMFY PYTHON
finish_setup() {  # the host's set-up result: ready, or not tested with the reason
  local name=$1 rc line
  rc=$(cat "$REPORTS/$name.setup-rc")
  echo "=== host $name: set up in $(cat "$REPORTS/$name.setup-seconds") s"
  quiet_pip < "$REPORTS/$name.setup.log" | tail -n 5
  if [[ $rc -ne 0 ]]; then
    echo "ComfyUI $name not tested: scripts/setup.sh failed (exit $rc; .host/reports/$name.setup.log)." > "$REPORTS/$name.unavailable"
    echo "$rc" > "$REPORTS/$name.rc"
    quiet_pip < "$REPORTS/$name.setup.log" | tail -n 40
    return 1
  fi
  line=$(tail -n 1 "$REPORTS/$name.setup.log")
  COMFY[$name]=$(sed -E 's/.* comfyui=([^ ]+) .*/\1/' <<<"$line")
  PYTHON[$name]=$(sed -E 's/.* python=([^ ]+)$/\1/' <<<"$line")
  ready+=("$name")
}
later_setup=
if (( ${#available[@]} )); then
  setup_host "${available[0]}"
  finish_setup "${available[0]}"
  if (( ${#available[@]} > 1 )); then
    ( for name in "${available[@]:1}"; do setup_host "$name"; done ) &
    later_setup=$!
  fi
fi
echo "set-up of the first host: $(( $(date +%s) - started )) s"

# ---- the small generated models and the other bases' files, once for all hosts (they are host-independent)
if (( ${#ready[@]} )); then
  first=${ready[0]}
  COMFYUI_DIR="${COMFY[$first]}" "${PYTHON[$first]}" -c \
    "import tests.conftest; from tests.fixtures.model_set import model_set; from devtools import bases; m = model_set(); print('fixture models:', m, '| other bases:', bases.bases_dir(m))" \
    || { echo "generating the fixture models failed" > "$REPORTS/fixtures.unavailable"; echo 1 > "$REPORTS/fixtures.rc"; }
fi

# ---- the suite on every host
cores=$(nproc)
# The hosts run side by side when the memory free now holds both (INFU_PARALLEL=1 / 0 decides instead): each host's
# servers then let go of their models between test modules (tests/conftest.py), and two hosts peaked at 20.7 GB of
# memory in use on a 24 GB machine; with less than PARALLEL_MB free (a loaded machine), one runs after the other.
PARALLEL_MB=${INFU_PARALLEL_MB:-22000}
free_mb=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
parallel=1
if (( ${#available[@]} > 1 )); then
  case "${INFU_PARALLEL:-auto}" in
    1) parallel=${#available[@]} ;;
    auto) (( free_mb >= PARALLEL_MB )) && parallel=${#available[@]} ;;
  esac
fi
if (( parallel > 1 )); then
  echo "hosts side by side: ${free_mb} MB of memory free (INFU_PARALLEL=0 runs them one after the other)"
elif (( ${#available[@]} > 1 )); then
  echo "hosts one after the other: ${free_mb} MB of memory free, side by side needs ${PARALLEL_MB} MB"
fi
# Side by side, or with less than PARALLEL_MB free (a loaded machine, whatever the number of hosts), the test servers let
# go of their models between modules. Otherwise they keep their loaded 3072-wide FLUX models while later modules load
# more: with 8 GB held by another process (scripts/under_load.sh), the kernel ran out of memory while a test loaded
# FLUX models in its own process.
(( parallel > 1 || free_mb < PARALLEL_MB )) && export INFU_FREE_MODELS_BETWEEN_MODULES=1
# Side by side, every pytest process (and the servers it starts) computes on one thread: two processes on two
# threads each, or one on two beside one on one, keep more threads than cores and lose time waiting on each other
# (measured: the GGUF parity module on both hosts at once, 60 s with the newest on two threads, 49 s on one; the
# workflow module, 86 s and 70 s). One after the other, a host gets every core.
threads=1
(( parallel > 1 )) || threads=$cores
# Side by side, the browser tests (a browser server, Chromium and a loaded test server at once) must not
# run on both hosts at the same time: the newest host runs them first, as pytest orders them, the others last.
test_order() {
  if (( parallel > 1 )) && [[ "$1" != "$newest" ]]; then
    ls -d tests/*/ tests/test_*.py | grep -v -e '^tests/browser/$' -e __pycache__; echo tests/browser
  else
    echo tests
  fi
}
# The newest host (the last one asked for) runs the host-independent tests and the newest frontend; if its
# set-up fails, the run fails (scripts/test_summary.py).
newest=
(( ${#available[@]} )) && newest=${available[-1]}
# Side by side, the newest host's tests run in two pytest processes (tests/host_features.py, INFU_TEST_PART): the
# first from the start, beside the older host; the second (its own report: <host>.second.*) once the first older
# host is done, so that both cores stay busy until the end.
split_newest=
(( parallel > 1 )) && split_newest=1
run_host() {  # name, part (empty: all of the host's tests; first; second), pytest arguments
  local name=$1 part=$2 host_started report=$1 frontends=host
  [[ "$part" == second ]] && report="$name.$part"
  host_started=$(date +%s)
  # Browser tests: every host's own frontend (classic canvas); the newest frontend package with Nodes 2.0
  # on the newest host, where it is meant to run.
  [[ "$name" == "$newest" ]] && frontends=${INFU_FRONTENDS:-host,1.58.1+vue}
  # inductor's caches are keyed by what they hold and written file by file with atomic renames: the hosts share
  # one, side by side too (the kernels both hosts' compile tests generate alike are built once; measured: the
  # compile test on 0.30.0 after 0.3.75's, 51 s instead of 63 s)
  local inductor="$ROOT/.host/tmp/inductor"
  COMFYUI_DIR="${COMFY[$name]}" INFU_HOST_NAME="$name" INFU_NEWEST_HOST="$newest" INFU_TEST_PART="$part" \
  INFU_REPORTS="$REPORTS" INFU_FRONTENDS="$frontends" \
  INFU_ARTIFACTS="$REPORTS/screenshots/$name" TORCHINDUCTOR_CACHE_DIR="$inductor" INFU_SHARED_FILES="$shared_files" \
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    "${PYTHON[$name]}" -m pytest $(test_order "$name") -q -ra --durations=10 --basetemp="$ROOT/.host/tmp/$report" \
    --junitxml="$REPORTS/$report.xml" -o junit_family=xunit1 "${@:3}"
  echo $? > "$REPORTS/$report.rc"
  echo $(( $(date +%s) - host_started )) > "$REPORTS/$report.seconds"
  # The disk is a limit too: a host's scratch files (models copied for one test, a main-job base) go once
  # it is done, unless INFU_KEEP_TMP=1 (tests that failed keep theirs until then).
  [[ -n "${INFU_KEEP_TMP:-}" ]] || rm -rf "$ROOT/.host/tmp/$report"
}
await_later_setup() {  # the hosts set up in the background join the ready ones
  [[ -n "$later_setup" ]] || return 0
  wait "$later_setup"
  later_setup=
  local name
  for name in "${available[@]:1}"; do finish_setup "$name"; done
}
mkdir -p "$ROOT/.host/tmp"
# Generated files that tests of every process write alike, once for the run (tests/fixtures/shared_files.py); a
# previous run's may come from older generators
shared_files="$ROOT/.host/tmp/shared-files"
rm -rf "$shared_files"
pids=()
started_hosts=0
run_ready_hosts() {  # every ready host not yet run, in order
  local name
  while (( started_hosts < ${#ready[@]} )); do
    name=${ready[$started_hosts]}
    started_hosts=$(( started_hosts + 1 ))
    echo "=== host $name: pytest against ${COMFY[$name]} ($threads CPU thread(s) per process)"
    if [[ -n "$split_newest" && "$name" == "$newest" ]]; then
      run_host "$name" first "$@" > "$REPORTS/$name.log" 2>&1 &
      pids+=($!)
    elif [[ -n "$split_newest" && "$name" == "${ready[0]}" ]]; then
      { run_host "$name" "" "$@" > "$REPORTS/$name.log" 2>&1
        [[ -n "${COMFY[$newest]:-}" ]] && run_host "$newest" second "$@" > "$REPORTS/$newest.second.log" 2>&1
      } &
      pids+=($!)
    elif (( parallel > 1 )); then
      run_host "$name" "" "$@" > "$REPORTS/$name.log" 2>&1 &
      pids+=($!)
    else
      run_host "$name" "" "$@" 2>&1 | tee "$REPORTS/$name.log"
    fi
  done
}
(( parallel > 1 )) && await_later_setup
run_ready_hosts "$@"
await_later_setup
run_ready_hosts "$@"
for pid in "${pids[@]}"; do wait "$pid"; done
if (( parallel > 1 )); then
  for name in "${ready[@]}"; do
    echo "=== host $name: pytest output"
    cat "$REPORTS/$name.log"
    if [[ -f "$REPORTS/$name.second.log" ]]; then
      echo "=== host $name: pytest output of its second process (after ${ready[0]})"
      cat "$REPORTS/$name.second.log"
    fi
  done
fi
[[ -n "${INFU_KEEP_TMP:-}" ]] || rm -rf "$ROOT/.host/tmp/inductor" "$shared_files"
echo $(( $(date +%s) - started )) > "$REPORTS/total.seconds"
summary_python=python3
(( ${#ready[@]} )) && summary_python=${PYTHON[${ready[0]}]}
exec "$summary_python" scripts/test_summary.py "$REPORTS"
