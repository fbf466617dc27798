#!/usr/bin/env bash
# Runs a command beside a CPU and memory hog, as on a shared machine: INFU_LOAD_CPUS busy processes (default 2)
# and INFU_LOAD_GB gigabytes held and touched (default 8). The hogs stop when the command ends, whatever its exit.
#   bash scripts/under_load.sh bash scripts/test.sh
set -uo pipefail
cpus=${INFU_LOAD_CPUS:-2}
gb=${INFU_LOAD_GB:-8}
hogs=()
for _ in $(seq "$cpus"); do
  python3 -c "while True: pass" &
  hogs+=($!)
done
python3 - "$gb" <<'PY' &
import sys, time
held = [bytearray(1 << 30) for _ in range(int(sys.argv[1]))]
for block in held:  # touch every page so the memory is really taken
    block[::4096] = b"\x01" * (len(block) // 4096)
while True:
    time.sleep(60)
PY
hogs+=($!)
trap 'kill "${hogs[@]}" 2>/dev/null' EXIT
sleep 5
echo "under load: $cpus busy processes, ${gb} GB held ($(free -g | awk '/Mem:/ {print $3}') GB in use)"
"$@"
