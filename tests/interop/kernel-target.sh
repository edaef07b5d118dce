#!/usr/bin/env bash
# Interop: lull's NVMe/TCP initiator (`lull perf`) against the Linux kernel
# target (nvmet-tcp). Runs inside the kernel-peer VM (see tests/interop/run.sh),
# from the repository root, with the release binary built.
#
# The kernel target exports a 256 MiB brd ramdisk. Then, for every initiator
# mode (poll, interrupt with a 100 us and a 1000 us I/O queue poll period,
# event-driven interrupt, hybrid, adaptive) and once with header+data digests:
#   lull perf --verify randrw 4k qd16 for PERF_SECS (20) s exits 0, its JSON
#   reports no error and no verify mismatch, with reads and writes done; the
#   lull log has no error; all its connections are closed afterwards; the
#   kernel log shows the controller created for our host NQN and no nvmet error.
# Then: 64k I/O with digests (writes over R2T/H2CData, beyond the target's
# 16 KiB in-capsule size); a Connect to a subsystem that does not exist fails
# cleanly; one short session is captured with dumpcap for run.sh to decode.
set -uo pipefail
export LC_ALL=C

LULL=${LULL:-./target/release/lull}
ADDR=127.0.0.1
PORT=4420
NQN=nqn.2024-01.io.lull:kernel-target
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5a1c7e00-0000-4000-8000-0000000c0001
OUT=${OUT:-/tmp/lull-interop}
LOGS=$OUT/kernel-target
PERF_SECS=${PERF_SECS:-20}
# Verify needs blocks written before they are read back: at 1-3k IOPS under
# emulation, 16 MiB (4096 blocks of 4k) is rewritten several times in 20 s.
VERIFY_SIZE=${VERIFY_SIZE:-16M}
# The VM has 2 vCPUs: the initiator's reactor on CPU 0 leaves CPU 1 to the
# kernel target (a polling reactor on every vCPU would starve it).
CORES=${CORES:-0}
mkdir -p "$LOGS"

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
step() { printf '\n--- %s (%s)\n' "$*" "$(date +%T)"; }

# Kernel log lines that mean nvmet (or the kernel) disliked something.
KERR='nvmet.*(fail|error|invalid|unexpected|expired|bad |unhandled|mismatch|digest|abort|could not|unsupported|unknown)|BUG|Oops|WARNING:|Call Trace|general protection'

jfield() { # name, file: the value of "name": in lull perf --json's first row
    sed -n "s/^ *\"$1\": *//p" "$2" | head -1 | sed 's/,$//; s/^"//; s/"$//'
}
int() { # a JSON number rounded, 0 for null or nothing
    local v
    v=$(printf '%.0f' "$1" 2>/dev/null) && printf '%s' "$v" || printf 0
}

established() { # connections on the target port, either end
    ss -Htn state established "( sport = :$PORT or dport = :$PORT )" 2>/dev/null | wc -l
}

t_script=$SECONDS
step "kernel target: nvmet-tcp exporting a brd ramdisk"
# A digest on a connection with no crc32c loaded oopses the 6.1 target.
modprobe crc32c 2>/dev/null
if grep -q '^name *: crc32c$' /proc/crypto; then
    pass "crc32c is available for digests"
else
    fail "crc32c is not available: the digest runs would oops the 6.1 target"
fi
kernel-peer nvmet-reset
modprobe brd rd_size=262144 rd_nr=1
if [ -b /dev/ram0 ] && kernel-peer nvmet-export --nqn "$NQN" --addr $ADDR --port $PORT /dev/ram0 >/dev/null; then
    pass "nvmet exports /dev/ram0 as $NQN on $ADDR:$PORT"
else
    fail "nvmet-export failed: $(dmesg | tail -3)"
    echo "kernel-target interop: cannot export, $failures check(s) failed"
    exit 1
fi
dmesg_start=$(dmesg | wc -l)

# One `lull perf` run and its checks: tag, seconds, lull perf arguments...
perf_run() {
    local tag=$1 secs=$2
    shift 2
    local json=$LOGS/perf-$tag.json log=$LOGS/perf-$tag.log rc=0 mark t0 took
    step "$tag: $*"
    mark=$(dmesg | wc -l)
    t0=$SECONDS
    # A hang is a failure too: the run plus a minute for connect and teardown.
    LULL_LOG=${LULL_LOG:-info} timeout $((secs + 60)) "$LULL" perf --target "$ADDR:$PORT" --subnqn "$NQN" \
        --hostnqn "$HOSTNQN" --time "$secs" --cores "$CORES" --json --no-progress "$@" >"$json" 2>"$log" || rc=$?
    took=$((SECONDS - t0))
    # The report is pretty-printed JSON, one field a line: read it without jq.
    local iops r w p99 cpu wk errs vf first summary='' bad=''
    iops=$(jfield iops "$json") r=$(jfield read_iops "$json") w=$(jfield write_iops "$json")
    p99=$(jfield lat_p99_us "$json") cpu=$(jfield initiator_cpu_pct "$json") wk=$(jfield initiator_wakeups_s "$json")
    errs=$(jfield errors "$json") vf=$(jfield verify_failures "$json") first=$(jfield first_error "$json")
    if [ -n "$iops" ]; then
        summary="$(int "$iops") IOPS (read $(int "$r"), write $(int "$w")), p99 $(int "$p99") us, initiator CPU $(int "$cpu")%, $(int "$wk") wakeups/s"
        if [ "$errs" != 0 ] || [ "$vf" != 0 ] || [ "$(int "$r")" -le 0 ] || [ "$(int "$w")" -le 0 ]; then
            bad="errors $errs, verify mismatches $vf, reads $(int "$r")/s, writes $(int "$w")/s, first error: $first"
        fi
    fi
    if [ $rc -eq 0 ] && [ -n "$summary" ] && [ -z "$bad" ]; then
        pass "$tag: lull perf --verify ${secs}s: $summary (${took}s wall)"
    else
        fail "$tag: lull perf exit $rc after ${took}s; ${bad:-no JSON}; log: $(grep -v '^lull perf:' "$log" | tail -3 | tr '\n' ' ')"
    fi
    if grep -Eq 'ERROR|panicked' "$log"; then
        fail "$tag: lull logged errors: $(grep -E 'ERROR|panicked' "$log" | head -3 | tr '\n' ' ')"
    fi
    # Our sockets close at exit; nvmet tears down its end when it sees that.
    local left
    for _ in $(seq 50); do
        left=$(established)
        [ "$left" -eq 0 ] && break
        sleep 0.1
    done
    [ "$left" -eq 0 ] || fail "$tag: $left connection(s) still established after lull exited"
    local new
    new=$(dmesg | tail -n +$((mark + 1)))
    if grep -Eq "$KERR" <<<"$new"; then
        fail "$tag: kernel log: $(grep -E "$KERR" <<<"$new" | head -3 | tr '\n' ' ')"
    elif grep -q "creating nvm controller [0-9]* for subsystem $NQN for NQN $HOSTNQN" <<<"$new"; then
        pass "$tag: nvmet created our controller and logged no error"
    else
        fail "$tag: no nvmet controller for $HOSTNQN in the kernel log: $(tail -3 <<<"$new" | tr '\n' ' ')"
    fi
}

RW=(--rw randrw --bs 4k --qd 16 --verify --size "$VERIFY_SIZE")
perf_run poll "$PERF_SECS" "${RW[@]}" --mode poll --nvme-ioq-poll-period-us 0 --nvme-adminq-poll-period-us 0
perf_run interrupt-100us "$PERF_SECS" "${RW[@]}" --mode interrupt --nvme-ioq-poll-period-us 100 --nvme-adminq-poll-period-us 10000
perf_run interrupt-1000us "$PERF_SECS" "${RW[@]}" --mode interrupt --nvme-ioq-poll-period-us 1000 --nvme-adminq-poll-period-us 10000
perf_run event "$PERF_SECS" "${RW[@]}" --mode interrupt --nvme-ioq-poll-period-us 0 --nvme-adminq-poll-period-us 0
perf_run hybrid "$PERF_SECS" "${RW[@]}" --mode hybrid --nvme-ioq-poll-period-us 0 --nvme-adminq-poll-period-us 0
perf_run adaptive "$PERF_SECS" "${RW[@]}" --mode adaptive --nvme-ioq-poll-period-us 100 --nvme-adminq-poll-period-us 10000
perf_run event-digests "$PERF_SECS" "${RW[@]}" --mode interrupt --nvme-ioq-poll-period-us 0 --nvme-adminq-poll-period-us 0 \
    --hdgst --ddgst
# 64k: writes beyond the 16 KiB in-capsule size go over R2T/H2CData.
perf_run 64k-digests 10 --rw randrw --bs 64k --qd 8 --verify --size 64M --mode interrupt \
    --nvme-ioq-poll-period-us 100 --nvme-adminq-poll-period-us 10000 --hdgst --ddgst

step "kernel log since the first connection"
sleep 1
if dmesg | tail -n +$((dmesg_start + 1)) | grep -Eq "$KERR"; then
    fail "kernel log: $(dmesg | tail -n +$((dmesg_start + 1)) | grep -E "$KERR" | head -5 | tr '\n' ' ')"
else
    pass "no nvmet error in the kernel log ($(dmesg | tail -n +$((dmesg_start + 1)) | grep -c 'creating nvm controller') controllers created)"
fi

step "a subsystem the target does not have"
rc=0
LULL_LOG=info timeout 60 "$LULL" perf --target "$ADDR:$PORT" --subnqn "$NQN:absent" --hostnqn "$HOSTNQN" \
    --time 1 --cores "$CORES" --json --no-progress >/dev/null 2>"$LOGS/perf-absent.log" || rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q 'Connect' "$LOGS/perf-absent.log"; then
    pass "Connect to an absent subsystem fails (exit $rc): $(tail -1 "$LOGS/perf-absent.log")"
else
    fail "absent subsystem: exit $rc: $(tail -3 "$LOGS/perf-absent.log" | tr '\n' ' ')"
fi

step "capture a session for tshark (decoded on the host by run.sh)"
if command -v dumpcap >/dev/null 2>&1; then
    rm -f "$OUT/initiator.pcap"
    dumpcap -q -i lo -f "tcp port $PORT" -w "$OUT/initiator.pcap" >"$LOGS/dumpcap.txt" 2>&1 &
    cap=$!
    for _ in $(seq 300); do
        [ -s "$OUT/initiator.pcap" ] && break
        sleep 0.1
    done
    sleep 1
    # 32k: in-capsule Connect data, R2T/H2CData writes, C2HData reads, digests on all.
    if LULL_LOG=info timeout 60 "$LULL" perf --target "$ADDR:$PORT" --subnqn "$NQN" --hostnqn "$HOSTNQN" \
        --rw randrw --bs 32k --qd 4 --verify --size 4M --time 1 --ramp 0 --mode interrupt --hdgst --ddgst \
        --cores "$CORES" --json --no-progress >"$LOGS/perf-capture.json" 2>"$LOGS/perf-capture.log"; then
        pass "captured a session with digests"
    else
        fail "capture session: $(tail -3 "$LOGS/perf-capture.log" | tr '\n' ' ')"
    fi
    sleep 1
    kill -INT $cap
    wait $cap
else
    fail "dumpcap is not installed (Debian package tshark)"
fi

kernel-peer nvmet-reset

step "summary"
echo "kernel-target interop: $((SECONDS - t_script)) s"
if [ $failures -eq 0 ]; then
    echo "kernel-target interop: all checks passed"
else
    echo "kernel-target interop: $failures check(s) failed"
fi
exit $((failures > 0))
