#!/usr/bin/env bash
# Interop: a replicated volume served to the Linux kernel host (nvme-tcp,
# nvme-cli, fio) through a replica's death. Runs inside the kernel-peer VM
# (see tests/interop/run.sh), from the repository root, with the release
# binary built.
#
# Three lull daemons on the guest's loopback, laid out as docs/deploy.md's
# "Three nodes" (the guest has no network device, so the "nodes" are ports):
#   replicas R1, R2: `lull target --file-bdev` export one file each;
#   engine E: a local file bdev (`lull bdev uring`), then `lull volume create`
#   (R1 and R2 attached through its initiator, a raid1 with a superblock
#   over the three, exported as the only namespace of its own subsystem).
#
# For each round (ROUNDS, "MODE:DOWN:LOSS ...": the daemons' reactor mode
# policy, how long R2 stays dead, and the engine's ctrlr_loss_timeout_sec):
#   1. the kernel host connects to the volume (nvme connect);
#   2. fio writes the whole volume with verification, pass after pass, each
#      with a new random seed (4k-64k random writes, crc32c, verify_backlog:
#      what was written is read back and checked while writing) while R2 is
#      kill -9ed: the raid drops it once its I/O fails
#      (fast_io_fail_timeout_sec, 1 s) and answers from the other two; R2 is
#      restarted on the same file DOWN seconds after the raid dropped it
#      (within LOSS, its controller reconnects; after it, the controller was
#      deleted with its bdev and is attached again), added back
#      (`lull raid add-base`) and rebuilt while fio writes;
#   3. once the rebuild is over, fio ends its pass and a verify-only pass
#      reads back every block the last pass wrote;
#   4. nvme disconnect, every daemon stopped.
# Passes when: every fio pass exits 0 with no error, the raid degraded to 2
# bases and ended online with 3 operational and no process, the verify-only
# pass finds every block, the kernel log has no nvme or block I/O error and
# no reset, E exits 0 on SIGTERM, no daemon logged an error (but the loss of
# R2's controller after ctrlr_loss_timeout_sec) or panicked, and the three
# files' data regions (past the 1 MiB superblock area) are byte-identical.
#
# Environment: LULL (default ./target/release/lull), OUT (logs), SIZE_MB
# (each replica file, default 193: a 192 MiB volume), ROUNDS (default
# "interrupt:0:10 adaptive:4:2": a reconnect, then a controller deleted and
# attached again), PORT_BASE (default 4640).
set -uo pipefail
export LC_ALL=C

LULL=${LULL:-./target/release/lull}
OUT=${OUT:-/tmp/lull-interop}
LOGS=$OUT/kernel-raid1
# Bulk data stays in guest RAM: the share is 9p, slow for bulk I/O.
DATA=/tmp/lull-kernel-raid1
SIZE_MB=${SIZE_MB:-193}
ROUNDS=${ROUNDS:-interrupt:0:10 adaptive:4:2}
PORT_BASE=${PORT_BASE:-4640}
ADDR=127.0.0.1
NQN=nqn.2024-01.io.lull:kraid
VOL=Vol0
# What the raid reserves in front of each base for its superblock (1 MiB).
DATA_OFFSET=$((1024 * 1024))
# How the engine's initiator treats a lost replica (bdev_nvme's words;
# ctrlr_loss_timeout_sec is the round's LOSS).
RECONNECT=1
FAST_FAIL=1
# The kernel host's side: E itself never goes away, so the host should never
# have to reconnect (a reset is in the kernel log and fails the round). The
# limit keeps a hang bounded; under it, I/O waits through a reconnect instead
# of failing, as a host of a real volume would want.
HOST_LOSS_TMO=30
mkdir -p "$LOGS" "$DATA"
rm -f "$LOGS"/*

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
step() { printf '\n--- %s (%s)\n' "$*" "$(date +%T)"; }

# Kernel log lines that mean the host (or the kernel) disliked something.
KERR='nvme.*(error|timeout|timed out|mismatch|fail|reset|abort|invalid|unexpected|digest|could not|reconnect)|blk_update_request|I/O error|critical medium|Buffer I/O|BUG|Oops|WARNING:|Call Trace|general protection'

t_script=$SECONDS
declare -A PID=()
connected=
fio_loop_pid=

start() { # name core port [target flags...]
    local name=$1 core=$2 port=$3 i
    shift 3
    rm -f "$DATA/$name.sock"
    "$LULL" target -r "$DATA/$name.sock" --cores "$core" --mode-policy "$MODE" \
        --listen "$ADDR:$port" "$@" >>"$LOGS/$name-$tag.log" 2>&1 </dev/null &
    PID[$name]=$!
    for i in $(seq 1 300); do
        [ -S "$DATA/$name.sock" ] && return 0
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    fail "$tag: daemon $name did not start: $(tail -3 "$LOGS/$name-$tag.log")"
    return 1
}
stop() { # name [signal]: the daemon's exit status
    local name=$1 sig=${2:-TERM} p=${PID[$1]:-} i rc=0
    [ -n "$p" ] || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill "-$sig" "$p" 2>/dev/null
        for i in $(seq 1 200); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null || rc=$?
    PID[$name]=
    return $rc
}
ctl() { # name lull-arguments...
    local name=$1
    shift
    "$LULL" -r "$DATA/$name.sock" "$@"
}
cleanup() {
    local name
    [ -n "$fio_loop_pid" ] && { touch "$DATA/stop"; kill "$fio_loop_pid" 2>/dev/null; wait "$fio_loop_pid" 2>/dev/null; }
    [ -n "$connected" ] && nvme disconnect -n "$connected" >/dev/null 2>&1
    for name in "${!PID[@]}"; do stop "$name" KILL; done
    rm -rf "$DATA"
}
trap cleanup EXIT

# The volume as `lull raid list` prints it: "STATE OPERATIONAL PROCESS"
# (PROCESS: none, or the rebuild's percentage), without a Python start (seconds
# under emulation).
raid_state() {
    ctl E raid list 2>/dev/null | awk -v v="$VOL" '$1 == v {
        split($3, o, "/"); p = "none"
        if (match($0, /rebuild of [^:]*: [0-9]+ blocks, [0-9]+%/)) { s = substr($0, RSTART, RLENGTH); sub(/.* /, "", s); p = "rebuild:" s }
        print $2, o[1], p; found = 1 }
        END { if (!found) print "missing 0 none" }'
}
wait_for() { # seconds description command...
    local secs=$1 what=$2 i
    shift 2
    for i in $(seq 1 $((secs * 2))); do
        "$@" && return 0
        sleep 0.5
    done
    fail "$tag: $what within $secs s (raid: $(raid_state))"
    return 1
}
operational_is() { [ "$(raid_state | awk '{print $2}')" = "$1" ]; }
rebuilt() { [ "$(raid_state)" = "online 3 none" ]; }
attach() { # controller port subnqn
    ctl E rpc bdev_nvme_attach_controller "{\"name\":\"$1\",\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",
        \"traddr\":\"$ADDR\",\"trsvcid\":\"$2\",\"subnqn\":\"$3\",
        \"ctrlr_loss_timeout_sec\":$LOSS_TMO,\"reconnect_delay_sec\":$RECONNECT,
        \"fast_io_fail_timeout_sec\":$FAST_FAIL}" >/dev/null
}
# R2's controller (the volume's second replica, Vol0r1) is connected again:
# it reconnected, or it was given up and deleted and is attached again here.
replica_back() { # port
    local out
    if ! out=$(ctl E rpc bdev_nvme_get_controllers "{\"name\":\"${VOL}r1\"}" 2>/dev/null); then
        if attach "${VOL}r1" "$1" "$NQN:r2" 2>>"$LOGS/attach-$tag.txt"; then
            REATTACHED=1
        fi
        return 1
    fi
    grep -q '"state": *"enabled"' <<<"$out"
}

# One fio job over the whole volume: random writes of 4k to 64k, every block
# once per pass (fio's random map), crc32c in each block; verify_backlog has
# fio read back and check what it wrote while it writes. The same options
# with --verify_only and the same seed read back a finished pass.
fio_job() { # seed out [extra fio options...]
    local seed=$1 out=$2
    shift 2
    fio --name=vol --filename="$dev" --size="$vol_bytes" --rw=randwrite --bsrange=4k-64k \
        --iodepth=16 --ioengine=libaio --direct=1 --randseed="$seed" \
        --verify=crc32c --verify_fatal=1 --do_verify=1 "$@" >"$out" 2>&1 &&
        grep -q 'err= 0' "$out" && ! grep -qi 'verify.*\(bad\|fail\|mismatch\)' "$out"
}
# Passes until $DATA/stop exists; the last good seed in $DATA/last-seed.
fio_loop() {
    local seed=0
    while :; do
        seed=$((seed + 1))
        if ! fio_job "$seed" "$LOGS/fio-$tag-$seed.txt" --verify_backlog=512; then
            echo "$seed" >"$DATA/failed-seed"
            return 1
        fi
        echo "$seed" >"$DATA/last-seed"
        [ -e "$DATA/stop" ] && return 0
    done
}
fio_summary() { # file: bandwidth and IOPS of the write side
    grep -m1 -o 'write: IOPS=[^,]*, BW=[^ ]*' "$1"
}

one_round() {
    local pe=$PORT_BASE p1=$((PORT_BASE + 1)) p2=$((PORT_BASE + 2)) f rc
    REATTACHED=
    rm -f "$DATA/stop" "$DATA/last-seed" "$DATA/failed-seed"
    for f in local r1 r2; do
        rm -f "$DATA/$f.img"
        truncate -s "${SIZE_MB}M" "$DATA/$f.img"
    done
    start R1 0 "$p1" --file-bdev "Rep:$DATA/r1.img" --subnqn "$NQN:r1" --allow-any-host || return
    start R2 0 "$p2" --file-bdev "Rep:$DATA/r2.img" --subnqn "$NQN:r2" --allow-any-host || return
    # E's --listen is target-wide: the volume's subsystem is reachable on it.
    start E 1 "$pe" || return
    if ! ctl E bdev uring Local "$DATA/local.img" >"$LOGS/volume-$tag.txt" 2>&1 ||
        ! ctl E volume create "$VOL" --local Local --replica "$ADDR:$p1/$NQN:r1" --replica "$ADDR:$p2/$NQN:r2" \
            --export "$NQN:vol0" --ctrlr-loss-timeout-sec $LOSS_TMO --reconnect-delay-sec $RECONNECT \
            --fast-io-fail-timeout-sec $FAST_FAIL >>"$LOGS/volume-$tag.txt" 2>&1; then
        fail "$tag: lull volume create: $(tail -3 "$LOGS/volume-$tag.txt")"
        return
    fi
    if rebuilt; then
        pass "$tag: lull volume create: a raid1 over a local and two remote replicas, online, exported as $NQN:vol0"
    else
        fail "$tag: volume after create: $(raid_state)"
        return
    fi

    if ! nvme connect -t tcp -a $ADDR -s "$pe" -n "$NQN:vol0" --ctrl-loss-tmo=$HOST_LOSS_TMO \
        --reconnect-delay=2 >"$LOGS/connect-$tag.txt" 2>&1; then
        fail "$tag: nvme connect: $(cat "$LOGS/connect-$tag.txt")"
        return
    fi
    connected=$NQN:vol0
    if ! dev=$(kernel-peer nvme-wait "$NQN:vol0" 30); then
        fail "$tag: nvme connect: no block device"
        return
    fi
    vol_bytes=$(blockdev --getsize64 "$dev")
    pass "$tag: the kernel host connected to the volume: $dev, $((vol_bytes >> 20)) MiB"

    fio_loop &
    fio_loop_pid=$!
    local t0=$SECONDS
    sleep 3
    stop R2 KILL
    if wait_for 30 "the raid drops the killed replica" operational_is 2; then
        pass "$tag: R2 kill -9ed under fio: the volume degraded to 2 bases in $((SECONDS - t0 - 3)) s"
    fi
    local t2=$SECONDS
    sleep "$DOWN"
    start R2 0 "$p2" --file-bdev "Rep:$DATA/r2.img" --subnqn "$NQN:r2" --allow-any-host
    if wait_for 30 "the restarted replica's namespace is back" replica_back "$p2"; then
        if [ -n "$REATTACHED" ]; then
            pass "$tag: R2 restarted $DOWN s after the raid dropped it; its controller was deleted (ctrlr_loss_timeout_sec $LOSS_TMO) and is attached again ($((SECONDS - t2)) s after the drop)"
        else
            pass "$tag: R2 restarted $DOWN s after the raid dropped it; its controller reconnected ($((SECONDS - t2)) s after the drop, within ctrlr_loss_timeout_sec $LOSS_TMO)"
        fi
    fi
    local t1=$SECONDS
    if ctl E raid add-base "$VOL" "${VOL}r1n1" >"$LOGS/add-base-$tag.txt" 2>&1; then
        pass "$tag: lull raid add-base $VOL ${VOL}r1n1: $(cat "$LOGS/add-base-$tag.txt")"
    else
        fail "$tag: lull raid add-base: $(cat "$LOGS/add-base-$tag.txt")"
    fi
    if wait_for 180 "the rebuild ends with three operational bases" rebuilt; then
        pass "$tag: R2 rebuilt under fio in $((SECONDS - t1)) s: $(ctl E raid list | grep "^$VOL ")"
    fi
    touch "$DATA/stop"
    rc=0
    wait "$fio_loop_pid" || rc=$?
    fio_loop_pid=
    local last
    last=$(cat "$DATA/last-seed" 2>/dev/null || echo 0)
    if [ $rc -eq 0 ] && [ "$last" -ge 1 ]; then
        pass "$tag: $last fio pass(es) over the whole volume with crc32c verification through kill, restart and rebuild ($((SECONDS - t0)) s), no error: $(fio_summary "$LOGS/fio-$tag-$last.txt")"
    else
        local bad
        bad=$(cat "$DATA/failed-seed" 2>/dev/null || echo "?")
        fail "$tag: fio pass $bad failed: $(grep -Ei 'err=|error|verify|bad' "$LOGS/fio-$tag-$bad.txt" 2>/dev/null | head -5)"
    fi
    if [ "$last" -ge 1 ]; then
        if fio_job "$last" "$LOGS/fio-$tag-verify.txt" --verify_only; then
            pass "$tag: fio --verify_only: every block of pass $last reads back: $(grep -m1 -o 'read: IOPS=[^,]*, BW=[^ ]*' "$LOGS/fio-$tag-verify.txt")"
        else
            fail "$tag: fio --verify_only: $(grep -Ei 'err=|error|verify|bad' "$LOGS/fio-$tag-verify.txt" | head -5)"
        fi
    fi
    if nvme disconnect -n "$NQN:vol0" >"$LOGS/disconnect-$tag.txt" 2>&1 && grep -q 'disconnected 1' "$LOGS/disconnect-$tag.txt"; then
        pass "$tag: nvme disconnect"
    else
        fail "$tag: nvme disconnect: $(cat "$LOGS/disconnect-$tag.txt")"
    fi
    connected=
    rc=0
    stop E || rc=$?
    [ $rc -eq 0 ] && pass "$tag: E exited 0 on SIGTERM" || fail "$tag: E exit status $rc on SIGTERM"
    stop R1
    stop R2
    # E's only expected error: R2's controller given up after ctrlr_loss_timeout_sec.
    local errs
    errs=$(grep -hE 'ERROR|panicked' "$LOGS"/*-"$tag".log | grep -v "NVMe controller lost name=${VOL}r1 ")
    if [ -n "$errs" ]; then
        fail "$tag: a daemon logged an error or panicked: $(head -3 <<<"$errs")"
    else
        pass "$tag: no daemon logged an error (but R2's controller loss) or panicked"
    fi
    if cmp -s -i "$DATA_OFFSET" "$DATA/local.img" "$DATA/r1.img" && cmp -s -i "$DATA_OFFSET" "$DATA/local.img" "$DATA/r2.img"; then
        pass "$tag: the three replicas' data regions are byte-identical"
    else
        fail "$tag: replicas differ: local/r1: $(cmp -i "$DATA_OFFSET" "$DATA/local.img" "$DATA/r1.img" 2>&1 | head -1); local/r2: $(cmp -i "$DATA_OFFSET" "$DATA/local.img" "$DATA/r2.img" 2>&1 | head -1)"
    fi
}

[ -x "$LULL" ] || { fail "no lull binary at $LULL"; exit 1; }
dmesg_start=$(dmesg | wc -l)
for round in $ROUNDS; do
    IFS=: read -r MODE DOWN LOSS_TMO <<<"$round"
    tag="$MODE-down${DOWN}s"
    step "raid1 volume over three daemons, mode $MODE, R2 down $DOWN s, ctrlr_loss_timeout_sec $LOSS_TMO, kernel host with fio"
    one_round
    [ -n "$fio_loop_pid" ] && { touch "$DATA/stop"; wait "$fio_loop_pid" 2>/dev/null; fio_loop_pid=; }
    [ -n "$connected" ] && { nvme disconnect -n "$connected" >/dev/null 2>&1; connected=; }
    for name in "${!PID[@]}"; do stop "$name" KILL; done
done

step "kernel log"
dmesg | tail -n +$((dmesg_start + 1)) >"$LOGS/dmesg.txt"
if grep -Eiq "$KERR" "$LOGS/dmesg.txt"; then
    fail "kernel log: $(grep -Ei "$KERR" "$LOGS/dmesg.txt" | head -5)"
else
    pass "kernel log: no nvme or I/O error, no reset ($(grep -ci 'new ctrl' "$LOGS/dmesg.txt") controller(s) created, $(grep -ci 'Removing ctrl' "$LOGS/dmesg.txt") removed)"
fi
grep -i nvme "$LOGS/dmesg.txt"

step "summary"
if [ $failures -eq 0 ]; then
    echo "kernel-raid1 interop: all checks passed ($((SECONDS - t_script)) s)"
else
    echo "kernel-raid1 interop: $failures check(s) failed ($((SECONDS - t_script)) s)"
    for f in "$LOGS"/E-*.log; do
        [ -s "$f" ] && { echo "--- last lines of $(basename "$f")"; tail -n 20 "$f"; }
    done
fi
exit $((failures > 0))
