#!/bin/bash
# Interrupt-mode target CPU at fixed rates: lull's target (RAM bdev) against SPDK's
# `nvmf_tgt --interrupt-mode` (aio bdev on tmpfs, the SPDK bdev that can sleep), taking turns
# on the same core, driven by the same initiator (lull perf, event-driven: I/O queue period 0, open loop).
#
# usage: perf/scripts/interrupt-cpu-vs-spdk.sh [-r ROUNDS] [-t SECS] [-l "1000 10000"]
#                                              [-c TARGET_CORE] [-i INITIATOR_CORE] [-b LULL_BINARY]
# Prints one line per run and, at the end, the medians and lull/SPDK ratios of target CPU.
# Target CPU is the sum of the target process's /proc/PID/task/*/schedstat (ns) over the
# measured time (lull perf --target-pid). Needs ../shared/spdk-peer built (or SPDK_PEER).
set -euo pipefail
rounds=3 secs=10 loads="1000 10000" tcore=0 icore=1
here=$(cd "$(dirname "$0")/../.." && pwd)
lull=$here/target/release/lull
peer=${SPDK_PEER:-$here/../shared/spdk-peer/spdk-peer}
while getopts r:t:l:c:i:b: o; do
  case $o in
    r) rounds=$OPTARG ;; t) secs=$OPTARG ;; l) loads=$OPTARG ;;
    c) tcore=$OPTARG ;; i) icore=$OPTARG ;; b) lull=$OPTARG ;;
    *) echo "usage: $0 [-r ROUNDS] [-t SECS] [-l \"RATES\"] [-c CORE] [-i CORE] [-b LULL]" >&2; exit 2 ;;
  esac
done
[ -x "$lull" ] || { echo "$lull: not built (cargo build --release)" >&2; exit 2; }
[ -x "$peer" ] || { echo "$peer: SPDK peer not found (set SPDK_PEER)" >&2; exit 2; }
work=$(mktemp -d); port_l=4497 port_s=4521 nqn_l=nqn.2024-01.io.lull:irq nqn_s=nqn.2016-06.io.spdk:cnode1
tpid=
cleanup() {
  [ -n "$tpid" ] && kill "$tpid" 2>/dev/null || true
  "$peer" stop --rpc-socket "$work/spdk.sock" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start_lull() {
  "$lull" target -r "$work/lull.sock" --cores "$tcore" --mode-policy interrupt \
    --listen 127.0.0.1:$port_l --ram-bdev Ram0:256MiB --subnqn $nqn_l --allow-any-host \
    >"$work/lull-target.log" 2>&1 &
  tpid=$!
  for _ in $(seq 100); do [ -S "$work/lull.sock" ] && return; sleep 0.1; done
  echo "lull target did not start: $(cat "$work/lull-target.log")" >&2; exit 1
}
start_spdk() {
  tpid=$("$peer" target --interrupt --bdev aio --port $port_s --core "$tcore" \
    --rpc-socket "$work/spdk.sock" --log "$work/spdk-target.log")
}
stop_target() {
  if [ "$1" = spdk ]; then "$peer" stop --rpc-socket "$work/spdk.sock" >/dev/null 2>&1 || true
  else kill "$tpid" 2>/dev/null || true; wait "$tpid" 2>/dev/null || true; fi
  tpid=
}
run_one() { # TARGET RATE -> "iops p50 p99 tgt_cpu init_cpu"
  local port=$port_l nqn=$nqn_l
  [ "$1" = spdk ] && port=$port_s nqn=$nqn_s
  "$lull" perf --target 127.0.0.1:$port --subnqn $nqn --rw randread --bs 4k --qd 32 --queues 1 \
    --rate-iops "$2" --time "$secs" --ramp 1 --cores "$icore" --mode interrupt \
    --nvme-ioq-poll-period-us 0 --target-pid "$tpid" --json --no-progress 2>"$work/perf.err" |
    python3 -c 'import json,sys
r=json.load(sys.stdin)[0]
print(*(r[k] for k in ("iops","lat_p50_us","lat_p99_us","target_cpu_pct","initiator_cpu_pct")))'
}

echo "round target rate iops p50_us p99_us target_cpu_pct initiator_cpu_pct"
for r in $(seq "$rounds"); do
  for t in lull spdk; do
    if [ $t = lull ]; then start_lull; else start_spdk; fi
    sleep 1
    for rate in $loads; do echo "$r $t $rate $(run_one $t "$rate")"; done
    stop_target $t
  done
done | tee "$work/runs.txt"
python3 - "$work/runs.txt" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = {}
for r in rows:
    by.setdefault((r[1], r[2]), []).append([float(x) for x in r[3:]])
print("\nmedians: target rate iops p50_us p99_us target_cpu_pct initiator_cpu_pct")
for k in sorted(by, key=lambda k: (int(k[1]), k[0])):
    m = [statistics.median(c) for c in zip(*by[k])]
    print(k[0], k[1], " ".join(f"{x:.2f}" for x in m))
for rate in sorted({k[1] for k in by}, key=int):
    if ("lull", rate) in by and ("spdk", rate) in by:
        ratios = [a[3] / b[3] for a, b in zip(by[("lull", rate)], by[("spdk", rate)]) if b[3] > 0]
        print(f"{rate} IOPS: lull/SPDK target CPU per round {', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}")
PY
