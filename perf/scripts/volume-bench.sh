#!/usr/bin/env bash
# The proposal's comparison on the object it was measured on: a replicated
# volume (raid1 over one local and two remote replicas, as a Longhorn V2
# engine serves it), beside a plain RAM namespace of the same daemon, with the
# CPU of every process.
#
#   replica daemons R1, R2 (interrupt mode): each exports a RAM bdev;
#   engine daemon E (the configuration under test): a local RAM replica, the
#   two remote ones through its initiator, a raid1 over the three exported as
#   nqn...:vol0, and a plain RAM bdev exported as nqn...:plain;
#   the host: `lull perf` (interrupt mode).
#
# For each configuration of E (poll; interrupt with nvme_ioq_poll_period_us
# 1000 and 100, the proposal's; interrupt with 0, lull's event-driven
# default; hybrid), each load runs against the volume and then the plain
# namespace, and the script prints IOPS, mean and p99 latency, and each
# process's CPU (% of one core, from /proc/PID/task/*/schedstat) during it,
# the daemons' CPU per I/O (us), and that of every process, the host's
# (`lull perf`'s own CPU, from its report) included.
# Then an idle window: the host connected at 1 I/O per second, the three
# daemons' CPU together.
#
# usage: perf/scripts/volume-bench.sh [SECS]        (default 5 s per load)
# Environment: LULL (default target/release/lull), CONFIGS (default
# "poll interrupt:1000 interrupt:100 interrupt:0 hybrid"), LOADS (default
# "randread:4k:32 randwrite:4k:32 read:128k:16 randread:4k:1"), IDLE_SECS
# (default 20), E_CORE / R_CORE / HOST_CORE (default 0 / 1 / 1), PORT_BASE
# (default 4650), OUT (a directory for the JSON rows; default a temporary one).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=${1:-5}
LULL=${LULL:-$PWD/target/release/lull}
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }
read -r -a CONFIGS <<<"${CONFIGS:-poll interrupt:1000 interrupt:100 interrupt:0 hybrid}"
read -r -a LOADS <<<"${LOADS:-randread:4k:32 randwrite:4k:32 read:128k:16 randread:4k:1}"
IDLE_SECS=${IDLE_SECS:-20}
E_CORE=${E_CORE:-0} R_CORE=${R_CORE:-1} HOST_CORE=${HOST_CORE:-1}
PORT_BASE=${PORT_BASE:-4650}
NQN=nqn.2024-01.io.lull
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-volbench.XXXXXX")
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
declare -A PID=()

start() { # name core mode port [flags...]
    local name=$1 core=$2 mode=$3 port=$4 i
    shift 4
    rm -f "$WORK/$name.sock"
    "$LULL" target -r "$WORK/$name.sock" --cores "$core" --mode-policy "$mode" \
        --listen "127.0.0.1:$port" "$@" >>"$WORK/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    for i in $(seq 1 100); do
        [ -S "$WORK/$name.sock" ] && return 0
        sleep 0.1
    done
    echo "daemon $name did not start: $(tail -n 3 "$WORK/$name.log")" >&2
    exit 1
}
stop_all() {
    local n
    for n in "${!PID[@]}"; do
        [ -n "${PID[$n]}" ] || continue
        kill -TERM "${PID[$n]}" 2>/dev/null || true
        wait "${PID[$n]}" 2>/dev/null || true
        PID[$n]=
    done
}
cleanup() {
    local rc=$?
    stop_all
    [ "$rc" -eq 0 ] || tail -n 20 "$WORK"/*.log 2>/dev/null || true
    [ "$OUT" = "$WORK" ] && [ "${KEEP:-0}" != 1 ] && rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rpc() { local name=$1; shift; "$LULL" rpc -r "$WORK/$name.sock" "$@" >/dev/null; }

# CPU ns used so far by every thread of a process.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $1} END {printf "%.0f", s}'; }
snapshot() { local n; for n in E R1 R2; do printf '%s ' "$(cpu_ns "${PID[$n]}")"; done; }
# % of one core per process between two snapshots over SECONDS.
cpu_pct() { # "before" "after" seconds
    python3 -c 'import sys; a=list(map(float,sys.argv[1].split())); b=list(map(float,sys.argv[2].split())); s=float(sys.argv[3])
print(" ".join("%.2f" % ((y - x) / s / 1e7) for x, y in zip(a, b)))' "$1" "$2" "$3"
}

printf '%-14s %-16s %-6s %9s %8s %8s %7s %7s %7s %7s %9s %7s %9s\n' config load ns iops mean_us p99_us E% R1% R2% all% cpu_us/io host% +host_us/io
for cfg in "${CONFIGS[@]}"; do
    mode=${cfg%%:*}
    period=0
    [ "$cfg" != "$mode" ] && period=${cfg#*:}
    start R1 "$R_CORE" interrupt $((PORT_BASE + 1)) --ram-bdev Rep1:256MiB --subnqn "$NQN:r1" --allow-any-host
    start R2 "$R_CORE" interrupt $((PORT_BASE + 2)) --ram-bdev Rep2:256MiB --subnqn "$NQN:r2" --allow-any-host
    # E's --listen is target-wide: every subsystem made below is reachable on it.
    start E "$E_CORE" "$mode" "$PORT_BASE" --nvme-ioq-poll-period-us "$period"
    for b in Local Plain; do
        rpc E bdev_malloc_create "{\"name\":\"$b\",\"num_blocks\":524288,\"block_size\":512}"
    done
    rpc E nvmf_create_subsystem "{\"nqn\":\"$NQN:plain\",\"allow_any_host\":true}"
    rpc E nvmf_subsystem_add_ns "{\"nqn\":\"$NQN:plain\",\"namespace\":{\"bdev_name\":\"Plain\"}}"
    for r in 1 2; do
        rpc E bdev_nvme_attach_controller "{\"name\":\"R$r\",\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"$((PORT_BASE + r))\",\"subnqn\":\"$NQN:r$r\"}"
    done
    rpc E bdev_raid_create '{"name":"Vol0","raid_level":"raid1","base_bdevs":["Local","R1n1","R2n1"]}'
    rpc E nvmf_create_subsystem "{\"nqn\":\"$NQN:vol0\",\"allow_any_host\":true}"
    rpc E nvmf_subsystem_add_ns "{\"nqn\":\"$NQN:vol0\",\"namespace\":{\"bdev_name\":\"Vol0\"}}"
    for load in "${LOADS[@]}"; do
        IFS=: read -r rw bs qd <<<"$load"
        for ns in vol0 plain; do
            before=$(snapshot)
            t0=$(date +%s.%N)
            "$LULL" perf --target "127.0.0.1:$PORT_BASE" --subnqn "$NQN:$ns" --rw "$rw" --bs "$bs" --qd "$qd" \
                --time "$SECS" --ramp 1 --cores "$HOST_CORE" --json --no-progress >"$OUT/$cfg-$load-$ns.json" 2>>"$WORK/perf.log"
            t1=$(date +%s.%N)
            after=$(snapshot)
            secs=$(python3 -c "print($t1 - $t0)")
            read -r e r1 r2 <<<"$(cpu_pct "$before" "$after" "$secs")"
            python3 - "$OUT/$cfg-$load-$ns.json" "$cfg" "$load" "$ns" "$e" "$r1" "$r2" <<'PY'
import json, sys
f, cfg, load, ns, e, r1, r2 = sys.argv[1:]
d = json.load(open(f))
d = d[0] if isinstance(d, list) else d
g = lambda *ks: next((d[k] for k in ks if d.get(k) is not None), float("nan"))
iops, mean, p99 = g("iops"), g("lat_mean_us", "mean_us"), g("lat_p99_us", "p99_us")
total = float(e) + float(r1) + float(r2)
host = g("initiator_cpu_pct")
per_io = total * 1e4 / iops if iops > 0 else float("nan")
all_io = (total + host) * 1e4 / iops if iops > 0 else float("nan")
print("%-14s %-16s %-6s %9.0f %8.1f %8.1f %7s %7s %7s %7.2f %9.2f %7.1f %9.2f" % (cfg, load, ns, iops, mean, p99, e, r1, r2, total, per_io, host, all_io))
PY
        done
    done
    # Idle: the host connected at 1 I/O per second; the daemons' CPU together.
    "$LULL" perf --target "127.0.0.1:$PORT_BASE" --subnqn "$NQN:vol0" --rw randread --bs 4k --qd 1 --rate-iops 1 \
        --time "$((IDLE_SECS + 4))" --cores "$HOST_CORE" --no-progress >/dev/null 2>>"$WORK/perf.log" &
    host=$!
    sleep 3
    before=$(snapshot)
    sleep "$IDLE_SECS"
    after=$(snapshot)
    read -r e r1 r2 <<<"$(cpu_pct "$before" "$after" "$IDLE_SECS")"
    wait "$host" || true
    printf '%-14s %-16s %-6s %9s %8s %8s %7s %7s %7s %7.2f\n' "$cfg" "idle(1 IOPS)" vol0 - - - "$e" "$r1" "$r2" \
        "$(python3 -c "print($e + $r1 + $r2)")"
    stop_all
done
