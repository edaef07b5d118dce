#!/usr/bin/env bash
# Interop: lull's NVMe/TCP target against the Linux kernel host (nvme-tcp,
# nvme-cli, fio). Runs inside the kernel-peer VM (see tests/interop/run.sh),
# from the repository root, with the release binary built.
#
# For every reactor mode (poll, interrupt, hybrid, adaptive), without and
# with header+data digests:
#   nvme discover lists our subsystem; nvme connect; nvme list shows our
#   model and serial; 64 MiB written with dd reads back with the same
#   checksum; fio 4k randrw with crc32c verification for 10 s has no error;
#   nvme disconnect is clean; the target logged no error.
# Then: a host that is not on the allow-list is refused, and one session is
# captured with dumpcap for run.sh to decode with tshark.
set -uo pipefail

LULL=${LULL:-./target/release/lull}
ADDR=127.0.0.1
PORT=4420
NQN=nqn.2024-01.io.lull:interop
SERIAL=LULLINTEROP0001
MODEL="lull interop target"
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5a1c7e00-0000-4000-8000-00000000c0de
OTHERNQN=nqn.2014-08.org.nvmexpress:uuid:5a1c7e00-0000-4000-8000-0000000bad00
OUT=${OUT:-/tmp/lull-interop}
# Bulk data stays in guest RAM: the share is 9p, slow for bulk I/O.
DATA=/tmp/lull-interop-data
FIO_SECS=${FIO_SECS:-10}
DD_MIB=${DD_MIB:-64}
mkdir -p "$OUT" "$DATA"
# The VM has 2 vCPUs: one reactor on CPU 0 leaves CPU 1 to the kernel host,
# dd and fio (a polling reactor on every vCPU would starve them).
CORES=${CORES:-0}

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
step() { printf '\n--- %s (%s)\n' "$*" "$(date +%T)"; }

tgt_pid=
start_target() { # mode, log, extra args...
    local mode=$1 log=$2
    shift 2
    LULL_LOG=info "$LULL" target --listen "$ADDR:$PORT" --ram-bdev Ram0:256MiB --subnqn "$NQN" \
        --serial "$SERIAL" --model "$MODEL" --mode "$mode" --cores "$CORES" "$@" >"$log" 2>&1 &
    tgt_pid=$!
    for _ in $(seq 100); do
        grep -q 'connect:' "$log" 2>/dev/null && return 0
        kill -0 "$tgt_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log"
    return 1
}

stop_target() {
    [ -n "$tgt_pid" ] || return 0
    kill -TERM "$tgt_pid" 2>/dev/null
    local rc=0
    wait "$tgt_pid" || rc=$?
    tgt_pid=
    return $rc
}

session() { # mode, digest flags
    local mode=$1 dg=$2 tag log dev
    tag="$mode${dg:+-digests}"
    log="$OUT/target-$tag.log"
    step "$tag"
    if ! start_target "$mode" "$log" --allow-host "$HOSTNQN"; then
        fail "$tag: target did not start"
        return
    fi
    local disc
    disc=$(nvme discover -t tcp -a $ADDR -s $PORT --hostnqn="$HOSTNQN" 2>&1)
    if grep -q "subnqn: *$NQN" <<<"$disc" && grep -q 'nqn.2014-08.org.nvmexpress.discovery' <<<"$disc"; then
        pass "$tag: nvme discover lists $NQN"
    else
        fail "$tag: nvme discover: $disc"
    fi
    # shellcheck disable=SC2086
    if ! nvme connect -t tcp -a $ADDR -s $PORT -n "$NQN" --hostnqn="$HOSTNQN" $dg >"$OUT/connect-$tag.txt" 2>&1; then
        fail "$tag: nvme connect: $(cat "$OUT/connect-$tag.txt")"
        stop_target
        return
    fi
    dev=$(kernel-peer nvme-wait "$NQN" 30) || { fail "$tag: no block device"; stop_target; return; }
    pass "$tag: connected as $dev"
    local list
    list=$(nvme list 2>&1)
    if grep -q "$SERIAL" <<<"$list" && grep -q "$MODEL" <<<"$list"; then
        pass "$tag: nvme list shows model and serial"
    else
        fail "$tag: nvme list: $list"
    fi
    head -c $((DD_MIB << 20)) /dev/urandom >"$DATA/data"
    dd if="$DATA/data" of="$dev" bs=1M oflag=direct status=none
    dd if="$dev" of="$DATA/back" bs=1M count="$DD_MIB" iflag=direct status=none
    if [ "$(md5sum <"$DATA/data")" = "$(md5sum <"$DATA/back")" ]; then
        pass "$tag: $DD_MIB MiB written and read back equal"
    else
        fail "$tag: read-back checksum differs"
    fi
    rm -f "$DATA/data" "$DATA/back"
    if fio --name=verify --filename="$dev" --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 \
        --ioengine=libaio --direct=1 --size=64M --runtime="$FIO_SECS" --time_based \
        --verify=crc32c --verify_backlog=256 --verify_fatal=1 >"$OUT/fio-$tag.txt" 2>&1 &&
        grep -q 'err= 0' "$OUT/fio-$tag.txt"; then
        pass "$tag: fio randrw verify=crc32c ${FIO_SECS}s: $(grep -o 'IOPS=[^,]*' "$OUT/fio-$tag.txt" | tr '\n' ' ')"
    else
        fail "$tag: fio: $(tail -5 "$OUT/fio-$tag.txt")"
    fi
    if nvme disconnect -n "$NQN" >"$OUT/disconnect-$tag.txt" 2>&1 && grep -q 'disconnected 1' "$OUT/disconnect-$tag.txt"; then
        pass "$tag: nvme disconnect"
    else
        fail "$tag: nvme disconnect: $(cat "$OUT/disconnect-$tag.txt")"
    fi
    if stop_target; then pass "$tag: target exited 0 on SIGTERM"; else fail "$tag: target exit status"; fi
    if grep -Eq 'ERROR|panicked' "$log"; then
        fail "$tag: target logged errors: $(grep -E 'ERROR|panicked' "$log" | head -3)"
    else
        pass "$tag: target log has no error"
    fi
}

for mode in poll interrupt hybrid adaptive; do
    session "$mode" ""
    session "$mode" "--hdr-digest --data-digest"
done

step "host not on the allow-list"
if start_target interrupt "$OUT/target-acl.log" --allow-host "$HOSTNQN"; then
    if nvme connect -t tcp -a $ADDR -s $PORT -n "$NQN" --hostnqn="$OTHERNQN" >"$OUT/acl.txt" 2>&1; then
        fail "a host not on the allow-list connected"
        nvme disconnect -n "$NQN" >/dev/null 2>&1
    else
        pass "a host not on the allow-list is refused"
    fi
    grep -q 'is not on the host list' "$OUT/target-acl.log" && pass "the refusal is logged" || fail "the refusal was not logged"
    stop_target
fi

step "capture a session for tshark (decoded on the host by run.sh)"
if command -v dumpcap >/dev/null 2>&1; then
    if start_target interrupt "$OUT/target-cap.log" --allow-host "$HOSTNQN"; then
        rm -f "$OUT/session.pcap"
        dumpcap -q -i lo -f "tcp port $PORT" -w "$OUT/session.pcap" >"$OUT/dumpcap.txt" 2>&1 &
        cap=$!
        for _ in $(seq 300); do
            [ -s "$OUT/session.pcap" ] && break
            sleep 0.1
        done
        sleep 1
        nvme connect -t tcp -a $ADDR -s $PORT -n "$NQN" --hostnqn="$HOSTNQN" --hdr-digest --data-digest >/dev/null 2>&1
        if dev=$(kernel-peer nvme-wait "$NQN" 30); then
            dd if=/dev/urandom of="$dev" bs=128k count=8 oflag=direct status=none
            dd if="$dev" of=/dev/null bs=128k count=8 iflag=direct status=none
            nvme disconnect -n "$NQN" >/dev/null 2>&1
            pass "captured a session with digests"
        else
            fail "capture session did not connect"
        fi
        sleep 1
        kill -INT $cap
        wait $cap
        stop_target
    fi
else
    fail "dumpcap is not installed (Debian package tshark)"
fi

step "summary"
if [ $failures -eq 0 ]; then
    echo "kernel-host interop: all checks passed"
else
    echo "kernel-host interop: $failures check(s) failed"
fi
dmesg | grep -Ei 'nvme.*(error|timeout|mismatch)' | head -10
exit $((failures > 0))
