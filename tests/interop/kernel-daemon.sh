#!/usr/bin/env bash
# Interop: the lull daemon (`lull target --config deploy/lull.toml`) against
# the Linux kernel host (nvme-tcp, nvme-cli, fio), built further at run time
# with SPDK's own JSON-RPC client. Runs inside the kernel-peer VM (see
# tests/interop/run.sh, which installs SPDK's client into target/spdk-venv
# first: the guest cannot reach PyPI), from the repository root.
#
#   1. lull target --config deploy/lull.toml --rpc-socket /tmp/lull.sock
#      --cores 0,1 starts and prints its connect: line;
#   2. nvme discover lists the example's subsystem; nvme connect; fio 4k
#      randrw with crc32c verification (FIO_SECS, 10 s) has no error;
#   3. spdk-rpc (SPDK's client): bdev_malloc_create, nvmf_create_subsystem -a,
#      nvmf_subsystem_add_ns, nvmf_subsystem_add_listener 127.0.0.1:4421;
#      nvme connect to that subsystem, a short fio verify on it; a namespace
#      added to it while the host is connected appears there (Namespace
#      Attribute Changed notice, rescan); lull status shows the connections;
#      lull mode set poll, lull set nvme_ioq_poll_period_us 250 and lull mode
#      set adaptive while fio runs on both subsystems, with no fio error; the
#      example's metrics endpoint answers;
#   4. nvmf_subsystem_remove_ns (each namespace leaves the connected host) and
#      nvme disconnect of both subsystems, nvmf_delete_subsystem,
#      bdev_malloc_delete; SIGTERM: exit status 0, the socket removed, no
#      error in lull's log, no nvme error in the kernel log.
#
# What the example sets that the guest could not use is overridden with flags:
# the RPC socket and cores (the VM has 2 vCPUs). Its listener (0.0.0.0:4420),
# metrics (127.0.0.1:9465) and allow_any_host work here as shipped.
set -uo pipefail
export LC_ALL=C

LULL=${LULL:-./target/release/lull}
CONFIG=${CONFIG:-deploy/lull.toml}
SOCK=${SOCK:-/tmp/lull.sock}
SPDK_RPC=${SPDK_RPC:-$PWD/target/spdk-venv/bin/spdk-rpc}
CORES=${CORES:-0,1}
ADDR=127.0.0.1
PORT=4420
PORT2=4421
NQN2=nqn.2024-01.io.lull:kernel-daemon-rpc
BDEV2=KdMalloc1
SERIAL2=LULLKD00000000000002
OUT=${OUT:-/tmp/lull-interop}
LOGS=$OUT/kernel-daemon
FIO_SECS=${FIO_SECS:-10}
mkdir -p "$LOGS"
rm -f "$LOGS"/*

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
step() { printf '\n--- %s (%s)\n' "$*" "$(date +%T)"; }

# Kernel log lines that mean the host (or the kernel) disliked something.
# The expected lines ("new ctrl", "creating 2 I/O queues", "rescanning namespaces"
# after a Namespace Attribute Changed event, "Removing ctrl") do not match.
KERR='nvme.*(error|timeout|timed out|mismatch|fail|reset|abort|invalid|unexpected|digest|could not)|blk_update_request|I/O error|BUG|Oops|WARNING:|Call Trace|general protection'

t_script=$SECONDS
dmesg_start=$(dmesg | wc -l)
tgt_pid=
RPC_PID=
connected=()

cleanup() {
    local n
    for n in "${connected[@]}"; do nvme disconnect -n "$n" >/dev/null 2>&1; done
    [ -n "${RPC_PID:-}" ] && kill "$RPC_PID" 2>/dev/null
    if [ -n "$tgt_pid" ]; then
        kill -TERM "$tgt_pid" 2>/dev/null
        wait "$tgt_pid" 2>/dev/null
    fi
}
trap cleanup EXIT

finish() {
    step "summary"
    if [ $failures -eq 0 ]; then
        echo "kernel-daemon interop: all checks passed ($((SECONDS - t_script)) s)"
    else
        echo "kernel-daemon interop: $failures check(s) failed ($((SECONDS - t_script)) s)"
        for f in target.log spdk-rpc.err; do
            [ -s "$LOGS/$f" ] && { echo "--- last lines of $f"; tail -n 20 "$LOGS/$f"; }
        done
    fi
    exit $((failures > 0))
}

is_connected() { # nqn: drop it from the list
    local n keep=()
    for n in "${connected[@]}"; do [ "$n" = "$1" ] || keep+=("$n"); done
    connected=("${keep[@]}")
}

fio_verify() { # out, secs, dev...: 4k randrw crc32c verify, one job per device
    local out=$1 secs=$2 d size jobs=()
    shift 2
    for d in "$@"; do
        size=$(blockdev --getsize64 "$d")
        [ "$size" -gt $((64 << 20)) ] && size=$((64 << 20))
        jobs+=(--name="$(basename "$d")" --filename="$d" --size="$size")
    done
    fio --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 --ioengine=libaio --direct=1 \
        --runtime="$secs" --time_based --verify=crc32c --do_verify=1 --verify_backlog=256 \
        --verify_fatal=1 "${jobs[@]}" >"$out" 2>&1 &&
        [ "$(grep -c 'err= 0' "$out")" -eq $# ] && ! grep -qi 'verify.*\(bad\|fail\|mismatch\)' "$out"
}

ns_dev() { # nqn, nsid: the host's /dev/nvmeXnY of that namespace, if it is there
    local b n id
    for b in /sys/block/nvme*; do
        [[ ${b##*/} =~ ^nvme[0-9]+n[0-9]+$ ]] && read -r n 2>/dev/null <"$b/device/subsysnqn" &&
            read -r id 2>/dev/null <"$b/nsid" || continue
        [ "$n" = "$1" ] && [ "$id" = "$2" ] && { echo "/dev/${b##*/}"; return 0; }
    done
    return 1
}
ns_wait() { # gone|there, nqn, nsid, seconds
    local i
    for ((i = 0; i < $4 * 10; i++)); do
        if ns_dev "$2" "$3" >/dev/null; then [ "$1" = there ] && return 0; else [ "$1" = gone ] && return 0; fi
        sleep 0.1
    done
    return 1
}

iops() { grep -o 'IOPS=[^,]*' "$1" | tr '\n' ' '; }

# SPDK's rpc.py in --server mode (as SPDK's own test scripts use it): one
# Python process reads rpc.py command lines on stdin and ends each answer
# with **STATUS=0 or **STATUS=1. Under emulation a Python start costs seconds.
rpc() { # rpc.py arguments; the answer in $RPC_OUT
    local line
    RPC_OUT=
    printf -- '-s %q %s\n' "$SOCK" "$(printf '%q ' "$@")" >&"${RPC[1]}" || return 2
    while IFS= read -r -t 120 line <&"${RPC[0]}"; do
        case $line in
        '**STATUS=0') return 0 ;;
        '**STATUS=1') return 1 ;;
        esac
        RPC_OUT+=$line$'\n'
    done
    RPC_OUT+="(no answer from spdk-rpc --server)"
    return 2
}
rpc_check() { # label, rpc.py arguments
    local label=$1
    shift
    if rpc "$@"; then
        pass "spdk-rpc $label${RPC_OUT:+: $(tr -s '\n ' '  ' <<<"$RPC_OUT" | cut -c1-100)}"
    else
        fail "spdk-rpc $label: $(tr '\n' ' ' <<<"$RPC_OUT" | cut -c1-400)"
        return 1
    fi
}

# ---------------------------------------------------------------------------
step "1. lull target --config $CONFIG"
[ -f "$CONFIG" ] || { fail "no $CONFIG"; finish; }
[ -x "$SPDK_RPC" ] || { fail "no SPDK client at $SPDK_RPC (run.sh installs it)"; finish; }
rm -f "$SOCK"
LOG=$LOGS/target.log
"$LULL" target --config "$CONFIG" --rpc-socket "$SOCK" --cores "$CORES" >"$LOG" 2>&1 &
tgt_pid=$!
for _ in $(seq 300); do
    grep -q 'connect:' "$LOG" 2>/dev/null && break
    kill -0 "$tgt_pid" 2>/dev/null || break
    sleep 0.1
done
if ! grep -q 'connect:' "$LOG"; then
    fail "lull target did not start: $(tail -5 "$LOG")"
    tgt_pid=
    finish
fi
# "    connect: nvme connect -t tcp -a <an address of this node> -s 4420 -n NQN": the example's subsystem.
NQN1=$(sed -n 's/.*connect: nvme connect .* -n \([^ ]*\).*/\1/p' "$LOG" | head -1)
pass "lull target started from $CONFIG: $(grep -m1 'reactors on' "$LOG" | sed 's/^lull target: //'); subsystem $NQN1"
[ -S "$SOCK" ] && pass "JSON-RPC socket $SOCK exists" || fail "no socket at $SOCK"

# ---------------------------------------------------------------------------
step "2. kernel host: discover, connect, fio verify on $NQN1"
disc=$(nvme discover -t tcp -a $ADDR -s $PORT 2>&1)
if grep -q "subnqn: *$NQN1\$" <<<"$disc" && grep -q 'nqn.2014-08.org.nvmexpress.discovery' <<<"$disc"; then
    pass "nvme discover -a $ADDR -s $PORT lists $NQN1"
else
    fail "nvme discover: $disc"
fi
dev1=
if nvme connect -t tcp -a $ADDR -s $PORT -n "$NQN1" >"$LOGS/connect1.txt" 2>&1; then
    connected+=("$NQN1")
    if dev1=$(kernel-peer nvme-wait "$NQN1" 30); then
        pass "nvme connect $NQN1: $dev1 ($(blockdev --getsize64 "$dev1") bytes)"
    else
        fail "nvme connect $NQN1: no block device"
        dev1=
    fi
else
    fail "nvme connect $NQN1: $(cat "$LOGS/connect1.txt")"
fi
if [ -n "$dev1" ]; then
    if fio_verify "$LOGS/fio1.txt" "$FIO_SECS" "$dev1"; then
        pass "fio randrw 4k qd16 verify=crc32c ${FIO_SECS}s on $dev1: $(iops "$LOGS/fio1.txt")"
    else
        fail "fio on $dev1: $(tail -5 "$LOGS/fio1.txt")"
    fi
fi

# ---------------------------------------------------------------------------
step "3. SPDK's client builds a second subsystem; live changes under fio"
coproc RPC { exec "$SPDK_RPC" --server 2>"$LOGS/spdk-rpc.err"; }
# (the coproc's pid variable is RPC_PID)
if ! rpc nvmf_get_transports; then
    fail "spdk-rpc nvmf_get_transports: $RPC_OUT"
elif [ "$(tr -d ' \n' <<<"$RPC_OUT")" = "[]" ]; then
    rpc_check "nvmf_create_transport -t tcp" nvmf_create_transport -t tcp
else
    pass "spdk-rpc nvmf_get_transports: TCP exists ($(grep -o '"max_h2c_data": *[0-9]*' <<<"$RPC_OUT"))"
fi
ok2=1
rpc_check "bdev_malloc_create -b $BDEV2 64 512" bdev_malloc_create -b "$BDEV2" 64 512 || ok2=
rpc_check "nvmf_create_subsystem $NQN2 -a" nvmf_create_subsystem "$NQN2" -a -s "$SERIAL2" -d "lull kernel-daemon rpc" || ok2=
rpc_check "nvmf_subsystem_add_ns $NQN2 $BDEV2" nvmf_subsystem_add_ns "$NQN2" "$BDEV2" || ok2=
rpc_check "nvmf_subsystem_add_listener $NQN2 $ADDR:$PORT2" \
    nvmf_subsystem_add_listener "$NQN2" -t tcp -f ipv4 -a $ADDR -s $PORT2 || ok2=
# Once with the ordinary one-shot command line as well.
subs=$("$SPDK_RPC" -s "$SOCK" nvmf_get_subsystems 2>&1)
if grep -q "\"nqn\": \"$NQN2\"" <<<"$subs" && grep -q "\"trsvcid\": \"$PORT2\"" <<<"$subs" &&
    grep -q "\"bdev_name\": \"$BDEV2\"" <<<"$subs"; then
    pass "spdk-rpc nvmf_get_subsystems (one-shot): $NQN2 with $BDEV2 on port $PORT2"
else
    fail "spdk-rpc nvmf_get_subsystems: $(tr '\n' ' ' <<<"$subs" | cut -c1-400)"
fi
dev2=
if [ -n "$ok2" ]; then
    if nvme connect -t tcp -a $ADDR -s $PORT2 -n "$NQN2" >"$LOGS/connect2.txt" 2>&1; then
        connected+=("$NQN2")
        if dev2=$(kernel-peer nvme-wait "$NQN2" 30); then
            serial=$(tr -d ' ' <"/sys/block/$(basename "$dev2")/device/serial" 2>/dev/null)
            if [ "$serial" = "$SERIAL2" ]; then
                pass "nvme connect $NQN2 on port $PORT2: namespace $dev2, serial $serial"
            else
                fail "nvme connect $NQN2: $dev2 has serial '$serial', not $SERIAL2"
            fi
        else
            fail "nvme connect $NQN2: no block device"
            dev2=
        fi
    else
        fail "nvme connect $NQN2: $(cat "$LOGS/connect2.txt")"
    fi
fi
if [ -n "$dev2" ]; then
    if fio_verify "$LOGS/fio2.txt" 5 "$dev2"; then
        pass "fio randrw 4k verify=crc32c 5s on $dev2 (RPC-made namespace): $(iops "$LOGS/fio2.txt")"
    else
        fail "fio on $dev2: $(tail -5 "$LOGS/fio2.txt")"
    fi
fi

# A namespace added while the host is connected: lull sends a Namespace
# Attribute Changed notice, the host rescans and finds it.
nsids2=()
added2=
[ -n "$dev2" ] && nsids2=(1)
if [ -n "$dev2" ] && rpc_check "bdev_malloc_create -b ${BDEV2}b 16 512" bdev_malloc_create -b "${BDEV2}b" 16 512 &&
    rpc_check "nvmf_subsystem_add_ns $NQN2 ${BDEV2}b -n 2 (host connected)" nvmf_subsystem_add_ns "$NQN2" "${BDEV2}b" -n 2; then
    if ns_wait there "$NQN2" 2 15; then
        pass "the connected host found namespace 2 of $NQN2 (AEN, rescan): $(ns_dev "$NQN2" 2)"
    else
        fail "the connected host did not find namespace 2 of $NQN2 in 15 s"
    fi
    nsids2+=(2)
    added2=1
fi

devs=()
[ -n "$dev1" ] && devs+=("$dev1")
[ -n "$dev2" ] && devs+=("$dev2")
if [ ${#devs[@]} -gt 0 ]; then
    FIO3_SECS=$((FIO_SECS + 10))
    fio_verify "$LOGS/fio3.txt" "$FIO3_SECS" "${devs[@]}" &
    fio_pid=$!
    sleep 3
    # Connections, summed over the cores (7th column of the table).
    if "$LULL" status -r "$SOCK" >"$LOGS/status.txt" 2>&1; then
        conns=$(awk '$1 == "core" { for (i = 1; i <= NF; i++) if ($i == "connections") c = i } c && $1 ~ /^[0-9]+$/ { s += $c } END { print s + 0 }' "$LOGS/status.txt")
        ctrls=$(grep -o '[0-9]* controller(s)' "$LOGS/status.txt" | head -1 | cut -d' ' -f1)
        if [ "$conns" -ge 2 ] && [ "${ctrls:-0}" -ge ${#devs[@]} ]; then
            pass "lull status: $ctrls controller(s), $conns connection(s) on the reactors"
        else
            fail "lull status shows $conns connection(s), ${ctrls:-?} controller(s): $(cat "$LOGS/status.txt")"
        fi
        cat "$LOGS/status.txt"
    else
        fail "lull status: $(cat "$LOGS/status.txt")"
    fi
    live() { # label, expected output part, lull arguments
        local label=$1 want=$2 o
        shift 2
        if o=$("$LULL" "$@" -r "$SOCK" 2>&1) && grep -q -- "$want" <<<"$o"; then
            pass "lull $label under fio: $(tr '\n' ' ' <<<"$o" | cut -c1-100)"
        else
            fail "lull $label: $o"
        fi
    }
    live "mode set poll" "poll" mode set poll
    sleep 2
    live "set nvme_ioq_poll_period_us 250" "250" set nvme_ioq_poll_period_us 250
    o=$("$LULL" get nvme_ioq_poll_period_us -r "$SOCK" 2>&1)
    [ "$(tr -d ' \n' <<<"$o")" = 250 ] && pass "lull get nvme_ioq_poll_period_us: 250" ||
        fail "lull get nvme_ioq_poll_period_us: $o"
    sleep 2
    live "mode set adaptive" "adaptive" mode set adaptive
    o=$("$LULL" mode get -r "$SOCK" 2>&1)
    grep -q '"mode_policy": "adaptive"' <<<"$o" && pass "lull mode get: adaptive" || fail "lull mode get: $o"
    if wait $fio_pid; then
        pass "fio randrw verify=crc32c ${FIO3_SECS}s on ${devs[*]} across the mode changes: $(iops "$LOGS/fio3.txt")"
    else
        fail "fio across the mode changes: $(grep -E 'err=|verify|error' "$LOGS/fio3.txt" | head -5)"
    fi
fi
# The example's metrics endpoint (no curl needed).
if { exec 9<>/dev/tcp/127.0.0.1/9465; } 2>/dev/null; then
    printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&9
    metrics=$(timeout 10 cat <&9)
    exec 9<&-
    if grep -q '^HTTP/1.[01] 200' <<<"$metrics" && grep -q '^lull_' <<<"$metrics"; then
        pass "metrics on 127.0.0.1:9465: $(grep -c '^lull_' <<<"$metrics") lull_ samples"
    else
        fail "metrics on 127.0.0.1:9465: $(head -3 <<<"$metrics")"
    fi
else
    fail "metrics: nothing listens on 127.0.0.1:9465"
fi

# ---------------------------------------------------------------------------
step "4. remove namespaces, disconnect, delete, SIGTERM"
for pair in "$NQN2:${nsids2[*]}" "$NQN1:${dev1:+1}"; do
    n=${pair%:*} ids=${pair##*:}
    [ -n "$ids" ] || continue
    for nsid in $(tr ' ' '\n' <<<"$ids" | sort -rn); do
        d=$(ns_dev "$n" "$nsid")
        if rpc_check "nvmf_subsystem_remove_ns $n $nsid (host connected)" nvmf_subsystem_remove_ns "$n" "$nsid"; then
            # The host is told (Namespace Attribute Changed) and drops the device.
            if ns_wait gone "$n" "$nsid" 15; then
                pass "the connected host dropped namespace $nsid of $n (${d:-?})"
            else
                fail "namespace $nsid of $n ($d) still on the host 15 s after its removal"
            fi
        fi
    done
    if nvme disconnect -n "$n" >"$LOGS/disconnect.txt" 2>&1 && grep -q 'disconnected 1' "$LOGS/disconnect.txt"; then
        pass "nvme disconnect $n"
        is_connected "$n"
    else
        fail "nvme disconnect $n: $(cat "$LOGS/disconnect.txt")"
    fi
done
rpc_check "nvmf_delete_subsystem $NQN2" nvmf_delete_subsystem "$NQN2"
rpc_check "nvmf_delete_subsystem $NQN1 (from the config)" nvmf_delete_subsystem "$NQN1"
rpc_check "bdev_malloc_delete $BDEV2" bdev_malloc_delete "$BDEV2"
[ -n "$added2" ] && rpc_check "bdev_malloc_delete ${BDEV2}b" bdev_malloc_delete "${BDEV2}b"
if rpc nvmf_get_subsystems && ! grep -q "\"nqn\": \"$NQN1\"" <<<"$RPC_OUT" && ! grep -q "\"nqn\": \"$NQN2\"" <<<"$RPC_OUT"; then
    pass "spdk-rpc nvmf_get_subsystems: both gone, $(grep -c '"nqn"' <<<"$RPC_OUT") left (discovery)"
else
    fail "spdk-rpc nvmf_get_subsystems after deletes: $(tr '\n' ' ' <<<"$RPC_OUT" | cut -c1-300)"
fi
# Close the client's stdin: it exits.
exec {RPC[1]}>&-
wait "$RPC_PID" 2>/dev/null
RPC_PID=
sleep 1
if "$LULL" status -r "$SOCK" >"$LOGS/status-end.txt" 2>&1 &&
    [ "$(awk '$1 == "core" { for (i = 1; i <= NF; i++) if ($i == "connections") c = i } c && $1 ~ /^[0-9]+$/ { s += $c } END { print s + 0 }' "$LOGS/status-end.txt")" -eq 0 ]; then
    pass "lull status: no connection left"
else
    fail "lull status after the disconnects: $(cat "$LOGS/status-end.txt")"
fi

kill -TERM "$tgt_pid"
rc=0
wait "$tgt_pid" || rc=$?
tgt_pid=
[ $rc -eq 0 ] && pass "lull target exited 0 on SIGTERM" || fail "lull target exit status $rc on SIGTERM"
grep -q 'lull target: stopped' "$LOG" && pass "lull target logged a clean stop" || fail "no 'stopped' in the log"
[ -e "$SOCK" ] && fail "socket $SOCK left behind" || pass "socket $SOCK removed"
if grep -Eq 'ERROR|WARN|panicked' "$LOG"; then
    fail "lull logged errors or warnings: $(grep -E 'ERROR|WARN|panicked' "$LOG" | head -3)"
else
    pass "lull's log has no error or warning"
fi
dmesg | tail -n +$((dmesg_start + 1)) >"$LOGS/dmesg.txt"
if grep -Eiq "$KERR" "$LOGS/dmesg.txt"; then
    fail "kernel log: $(grep -Ei "$KERR" "$LOGS/dmesg.txt" | head -5)"
else
    pass "kernel log: no nvme error ($(grep -ci 'new ctrl' "$LOGS/dmesg.txt") controllers created, $(grep -ci 'Removing ctrl' "$LOGS/dmesg.txt") removed)"
fi
grep -i nvme "$LOGS/dmesg.txt"
finish
