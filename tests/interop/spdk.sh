#!/usr/bin/env bash
# Interop with SPDK v25.09 both ways, on loopback, with SPDK's own programs:
#
#   1. spdk_nvme_perf with SPDK's defaults (it sends an empty HOSTNQN) against
#      `lull target` in every reactor mode (poll, interrupt, hybrid, adaptive);
#   2. bdevperf -w verify (SPDK's bdev_nvme initiator) against `lull target` in
#      every reactor mode, with nvme_ioq_poll_period_us 0, 100 and 1000, with
#      and without header and data digests;
#   3. lull's initiator (`lull perf --verify`) against SPDK's nvmf_tgt: polling
#      with a malloc bdev and in interrupt mode with an aio bdev (a tmpfs file,
#      the bdev SPDK can sleep with), with and without digests;
#   4. SPDK's rpc.py (of v25.09) builds a subsystem on an empty `lull target`,
#      spdk_nvme_perf uses it, and rpc.py tears it down again;
#   5. tests/interop/spdk-config.sh, when present: save_config from lull loaded
#      by spdk_tgt, and the other way round.
#
# The SPDK build comes from the peer script (cached under /var/cache/spdk-peer,
# built on first use, about 4 minutes on 2 cores). Ports LULL_PORT..+3 (4460)
# and SPDK_PORT (4560) on 127.0.0.1, private RPC sockets, everything stopped on exit.
#
# Usage: tests/interop/spdk.sh [spdk-peer path]     (after cargo build --release)
# Environment: LULL (default target/release/lull), SPDK_PEER (default
# ../shared/spdk-peer/spdk-peer), QUICK=1 (fewer modes and periods), KEEP=1 (keep the logs).
# Prints one PASS/FAIL line per check and a closing 'N passed, N failed' line;
# exits non-zero when any check failed. Without the peer it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

PEER=${1:-${SPDK_PEER:-../shared/spdk-peer/spdk-peer}}
LULL=${LULL:-target/release/lull}
LULL_NQN=nqn.2024-01.io.lull:spdk-interop
SPDK_NQN=nqn.2016-06.io.spdk:cnode1
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:0f7b3a52-6c1e-4b2d-9a8f-3e5d7c9b1a20
LULL_PORT=${LULL_PORT:-4460}
SPDK_PORT=${SPDK_PORT:-4560}

if [ ! -x "$PEER" ]; then
    echo "spdk-peer not found at $PEER: SPDK interop not run" >&2
    exit 0
fi
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-spdk-interop.XXXXXX")
LULL_SOCK=$WORK/lull.sock
SPDK_SOCK=$WORK/spdk.sock
LULL_PID=
SPDK_PID=

stop_lull() {
    if [ -n "$LULL_PID" ] && kill -0 "$LULL_PID" 2>/dev/null; then
        kill -TERM "$LULL_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do kill -0 "$LULL_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$LULL_PID" 2>/dev/null || true
        wait "$LULL_PID" 2>/dev/null || true
    fi
    LULL_PID=
}
stop_spdk() {
    if [ -n "$SPDK_PID" ] && kill -0 "$SPDK_PID" 2>/dev/null; then
        kill -INT "$SPDK_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do kill -0 "$SPDK_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SPDK_PID" 2>/dev/null || true
    fi
    SPDK_PID=
    rm -f "$SPDK_SOCK.pid"
}
cleanup() {
    local rc=$?
    stop_lull
    stop_spdk
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        for f in "$WORK"/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 15 "$f"
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the SPDK build -----------------------------------------------------------

echo "=== SPDK peer build (cached)"
"$PEER" build
eval "$("$PEER" env)"
# SPDK's programs need hugepages; `spdk-peer exec` (used to run spdk_nvme_perf with
# exactly SPDK's defaults) does not reserve them, `spdk-peer target` does.
if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 512 ]; then
    echo 1024 >/proc/sys/vm/nr_hugepages 2>/dev/null || true
fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages 2>/dev/null || true
RPC_PY=(python3 "$SPDK/scripts/rpc.py")

# `lull target` on core 0 with a RAM namespace, in mode $1. Waits for its RPC socket.
start_lull() {
    local mode=$1
    shift
    rm -f "$LULL_SOCK"
    "$LULL" target -r "$LULL_SOCK" --cores 0 --mode-policy "$mode" "$@" >"$WORK/lull-$mode.log" 2>&1 </dev/null &
    LULL_PID=$!
    local i
    for i in $(seq 1 100); do
        [ -S "$LULL_SOCK" ] && return 0
        kill -0 "$LULL_PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "lull target ($mode) did not start"
    tail -n 20 "$WORK/lull-$mode.log"
    return 1
}
start_lull_ram() {
    start_lull "$1" --listen "127.0.0.1:$LULL_PORT" --ram-bdev Ram0:128MiB --subnqn "$LULL_NQN" --allow-any-host
}

# Runs a command with a time limit; output to $WORK/$1.log. Returns its status.
run_logged() {
    local name=$1 limit=$2
    shift 2
    local rc=0
    timeout --kill-after=5 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    # SPDK's programs redraw progress lines with carriage returns.
    sed -i 's/\r/\n/g' "$WORK/$name.log"
    return "$rc"
}

# The IOPS of spdk_nvme_perf's "Total" line in $1 (empty when absent).
perf_total_iops() { awk '/^Total/ {print $(NF-4); exit}' "$1"; }

# ---- 1 + 2: SPDK's initiators against lull's target ----------------------------

MODES="poll interrupt hybrid adaptive"
PERIODS="0 100 1000"
[ "${QUICK:-0}" = 1 ] && { MODES="poll interrupt"; PERIODS="0 1000"; }

bdevperf_config() {
    local period=$1 digest=$2
    cat <<EOF
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_set_options", "params": {"nvme_ioq_poll_period_us": $period}},
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Lull0", "trtype": "tcp", "adrfam": "ipv4",
    "traddr": "127.0.0.1", "trsvcid": "$LULL_PORT", "subnqn": "$LULL_NQN", "hostnqn": "$HOSTNQN",
    "hdgst": $digest, "ddgst": $digest}}
]}]}
EOF
}

for mode in $MODES; do
    echo "=== SPDK initiators against lull target, mode $mode"
    start_lull_ram "$mode" || continue
    trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$LULL_PORT subnqn:$LULL_NQN"
    name=nvme-perf-$mode
    if run_logged "$name" 60 "$PEER" exec spdk_nvme_perf -c 0x2 -q 32 -o 4096 -w randread -t 2 -r "$trid"; then
        iops=$(perf_total_iops "$WORK/$name.log")
        if [ -n "$iops" ] && awk -v x="$iops" 'BEGIN {exit !(x > 0)}'; then
            pass "spdk_nvme_perf (default options, empty HOSTNQN) randread QD 32 against lull ($mode): $iops IOPS"
        else
            fail "spdk_nvme_perf against lull ($mode): no Total line"
        fi
    else
        fail "spdk_nvme_perf against lull ($mode): exit status $?"
        tail -n 5 "$WORK/$name.log"
    fi
    for period in $PERIODS; do
        for digest in false true; do
            name=bdevperf-$mode-$period-$digest
            bdevperf_config "$period" "$digest" >"$WORK/$name.json"
            if run_logged "$name" 60 "$PEER" bdevperf -m 0x2 --json "$WORK/$name.json" -q 16 -o 4096 -w verify -t 2; then
                # bdevperf prints a Total line and exits 0 only when no I/O failed or miscompared.
                # Any *ERROR* line (a refused command, a failed shutdown) is a failure too.
                if grep -q '^ *Total' "$WORK/$name.log" && ! grep -qiE 'miscompare|I/O error|io failed|\*ERROR\*' "$WORK/$name.log"; then
                    pass "bdevperf -w verify against lull ($mode, nvme_ioq_poll_period_us $period, digests $digest): $(awk '/^ *Total/ {print $3; exit}' "$WORK/$name.log") IOPS"
                else
                    fail "bdevperf -w verify against lull ($mode, period $period, digests $digest): errors in its output"
                    grep -iE 'miscompare|error' "$WORK/$name.log" | head -n 5 || true
                fi
            else
                fail "bdevperf -w verify against lull ($mode, period $period, digests $digest): exit status $?"
                tail -n 8 "$WORK/$name.log"
            fi
        done
    done
    stop_lull
done

# ---- 3: lull's initiator against SPDK's nvmf_tgt ---------------------------------

for spdk_mode in poll interrupt; do
    echo "=== lull perf --verify against nvmf_tgt ($spdk_mode)"
    if [ "$spdk_mode" = poll ]; then
        targs=(--bdev malloc)
    else
        targs=(--interrupt --bdev aio)
    fi
    if ! SPDK_PID=$("$PEER" target --port "$SPDK_PORT" --core 0 --nqn "$SPDK_NQN" --size 128 \
        --rpc-socket "$SPDK_SOCK" --log "$WORK/nvmf_tgt-$spdk_mode.log" "${targs[@]}"); then
        fail "nvmf_tgt ($spdk_mode) did not start"
        continue
    fi
    for dg in "" "--hdgst --ddgst"; do
        name=lull-perf-$spdk_mode${dg:+-digests}
        # shellcheck disable=SC2086
        if run_logged "$name" 90 "$LULL" perf --target "127.0.0.1:$SPDK_PORT" --subnqn "$SPDK_NQN" --hostnqn "$HOSTNQN" \
            --cores 1 --rw randrw --bs 4k --qd 16 --time 3 --ramp 0 --verify --json $dg; then
            verdict=$(python3 - "$WORK/$name.log" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith(("[", "{"))), len(lines))
try:
    r = json.loads("\n".join(lines[start:]))
except ValueError:
    print("no JSON result"); sys.exit()
if isinstance(r, list):
    r = r[0]
if r["errors"] or r["verify_failures"]:
    print(f'{r["errors"]} errors, {r["verify_failures"]} mismatches: {r.get("first_error")}')
elif r["verified_reads"] == 0 or r["iops"] <= 0:
    print("nothing verified")
else:
    print("ok")
EOF
)
            if [ "$verdict" = ok ]; then
                pass "lull perf --verify randrw against nvmf_tgt ($spdk_mode${dg:+, digests}): 0 errors, 0 mismatches"
            else
                fail "lull perf --verify against nvmf_tgt ($spdk_mode${dg:+, digests}): $verdict"
            fi
        else
            fail "lull perf --verify against nvmf_tgt ($spdk_mode${dg:+, digests}): exit status $?"
            tail -n 8 "$WORK/$name.log"
        fi
    done
    stop_spdk
done

# ---- 4: SPDK's rpc.py builds and tears down a subsystem on lull -------------------

echo "=== SPDK's rpc.py (v25.09) against an empty lull target"
R=("${RPC_PY[@]}" -s "$LULL_SOCK")
if start_lull interrupt; then
    NQN2=nqn.2016-06.io.spdk:cnode7
    if "${R[@]}" bdev_malloc_create -b Malloc7 64 512 >"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_create_transport -t TCP >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_create_subsystem "$NQN2" -a -s SPDK00000000000007 -m 8 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_ns "$NQN2" Malloc7 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_listener "$NQN2" -t tcp -a 127.0.0.1 -s $((LULL_PORT + 3)) >>"$WORK/rpc.log" 2>&1; then
        pass "rpc.py: bdev_malloc_create, nvmf_create_transport, nvmf_create_subsystem, nvmf_subsystem_add_ns, nvmf_subsystem_add_listener"
    else
        fail "rpc.py could not build the subsystem"
        tail -n 5 "$WORK/rpc.log"
    fi
    if "${R[@]}" nvmf_get_subsystems >"$WORK/subsystems.json" 2>>"$WORK/rpc.log" &&
        python3 - "$WORK/subsystems.json" "$NQN2" <<'EOF'
import json, sys
subs = {s["nqn"]: s for s in json.load(open(sys.argv[1]))}
s = subs[sys.argv[2]]
assert s["serial_number"] == "SPDK00000000000007", s
assert [n["bdev_name"] for n in s["namespaces"]] == ["Malloc7"], s
assert any(l["trsvcid"] == "4463" for l in s["listen_addresses"]), s
EOF
    then
        pass "rpc.py nvmf_get_subsystems shows the subsystem, its namespace and its listener"
    else
        fail "rpc.py nvmf_get_subsystems does not show what was built"
    fi
    trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$((LULL_PORT + 3)) subnqn:$NQN2"
    if run_logged nvme-perf-rpc 60 "$PEER" exec spdk_nvme_perf -c 0x2 -q 8 -o 512 -w randrw -M 50 -t 1 -r "$trid" &&
        [ -n "$(perf_total_iops "$WORK/nvme-perf-rpc.log")" ]; then
        pass "spdk_nvme_perf randrw 512 B against the subsystem rpc.py built"
    else
        fail "spdk_nvme_perf against the subsystem rpc.py built"
        tail -n 5 "$WORK/nvme-perf-rpc.log"
    fi
    if "${R[@]}" nvmf_subsystem_remove_listener "$NQN2" -t tcp -a 127.0.0.1 -s $((LULL_PORT + 3)) >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_remove_ns "$NQN2" 1 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_delete_subsystem "$NQN2" >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" bdev_malloc_delete Malloc7 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_get_subsystems >"$WORK/subsystems2.json" 2>>"$WORK/rpc.log" &&
        ! grep -q "$NQN2" "$WORK/subsystems2.json" &&
        "${R[@]}" bdev_get_bdevs >"$WORK/bdevs2.json" 2>>"$WORK/rpc.log" &&
        ! grep -q Malloc7 "$WORK/bdevs2.json"; then
        pass "rpc.py: remove_listener, remove_ns, nvmf_delete_subsystem, bdev_malloc_delete leave nothing behind"
    else
        fail "rpc.py could not tear the subsystem down"
        tail -n 5 "$WORK/rpc.log"
    fi
    stop_lull
fi

# ---- 5: configurations both ways ------------------------------------------------

if [ ! -f tests/interop/spdk-config.sh ]; then
    fail "tests/interop/spdk-config.sh is missing"
else
    echo "=== save_config / load_config between lull and spdk_tgt (tests/interop/spdk-config.sh)"
    if SPDK_PEER=$PEER LULL=$LULL bash tests/interop/spdk-config.sh >"$WORK/spdk-config.log" 2>&1; then
        pass "tests/interop/spdk-config.sh: $(tail -n 1 "$WORK/spdk-config.log")"
    else
        fail "tests/interop/spdk-config.sh"
        tail -n 20 "$WORK/spdk-config.log"
    fi
fi

echo "spdk-interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
