#!/usr/bin/env bash
# Idle CPU of the daemon started from deploy/lull.toml, no host connected:
# the run time of all its threads (/proc/PID/task/*/schedstat) over 30 s,
# 3 s after start. Extra arguments go to `lull target` (e.g. --mode-policy poll).
# Usage: perf/scripts/daemon-idle.sh [--mode-policy MODE]
set -euo pipefail
cd "$(dirname "$0")/../.."
B=target/release/lull
[ -x "$B" ] || cargo build --release
sock=$(mktemp -u /tmp/lull-idle.XXXXXX.sock)
"$B" target --config deploy/lull.toml --rpc-socket "$sock" --listen 127.0.0.1:4430 \
    --metrics 127.0.0.1:9477 --log-level warn "$@" >/tmp/lull-idle.log 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true' EXIT
sleep 3
ns() { cat /proc/$pid/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
a=$(ns); t0=$(date +%s.%N)
sleep 30
b=$(ns); t1=$(date +%s.%N)
echo "idle CPU: $(echo "($b - $a) / 10000000 / ($t1 - $t0)" | bc -l | cut -c1-6) % of one core, $(ls /proc/$pid/task | wc -l) threads ($*)"
kill -TERM $pid
wait $pid
trap - EXIT
