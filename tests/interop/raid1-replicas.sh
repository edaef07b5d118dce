#!/usr/bin/env bash
# A replicated volume through a replica's death, on this machine: three lull
# daemons on loopback, the engine in each reactor mode. Two CPUs: the engine
# alone on CPU 1 (a polling engine has it to itself), the replicas (sleeping
# when idle, as other nodes would be to it) and the host on CPU 0.
#
#   replica daemons R1, R2: each exports one file bdev over NVMe/TCP;
#   engine daemon E: a local file bdev, both replicas attached through its
#   initiator (bdev_nvme_attach_controller), a raid1 over the three with a
#   superblock (bdev_raid_create -s), exported as a namespace.
#
# `lull perf --verify` writes and reads the volume the whole time while R2 is
# `kill -9`ed; the raid drops it (degraded) once its I/O fails
# (fast_io_fail_timeout_sec), R2 is restarted on the same file (within
# ctrlr_loss_timeout_sec, so its controller reconnects, or after it, so the
# controller is deleted and attached again), added back
# (bdev_raid_add_base_bdev) and rebuilt. Passes when: perf reports
# no error and no verify mismatch, the raid ends online with three
# operational bases and no process, a second verify pass over everything the
# first wrote finds every block, and the three files' data regions are
# byte-identical once every daemon has stopped. Then the engine restarts
# from its saved config with R2's node down (--json-ignore-init-errors): the
# volume comes up degraded, every block reads back, R2 is rebuilt into it.
#
# usage: tests/interop/raid1-replicas.sh [MODE...]   (default: poll interrupt hybrid)
# Environment: LULL (default target/release/lull), KEEP=1 keeps the logs,
# PORT_BASE (default 4630).
set -euo pipefail
cd "$(dirname "$0")/../.."

LULL=${LULL:-$PWD/target/release/lull}
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }
MODES=("$@")
[ ${#MODES[@]} -gt 0 ] || MODES=(poll interrupt hybrid)
PORT_BASE=${PORT_BASE:-4630}
NQN=nqn.2024-01.io.lull
SIZE_MB=64
# What SPDK reserves in front of each base for the superblock (1 MiB).
DATA_OFFSET=$((1024 * 1024))

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-raid1.XXXXXX")
declare -A PID=()

start() { # name core mode port [target flags...]
    local name=$1 core=$2 mode=$3 port=$4 i
    shift 4
    rm -f "$WORK/$name.sock"
    "$LULL" target -r "$WORK/$name.sock" --cores "$core" --mode-policy "$mode" \
        --listen "127.0.0.1:$port" "$@" >>"$WORK/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    for i in $(seq 1 100); do
        [ -S "$WORK/$name.sock" ] && return 0
        kill -0 "${PID[$name]}" 2>/dev/null || break
        sleep 0.1
    done
    fail "$MODE: daemon $name did not start"
    return 1
}
stop() { # name [signal]
    local name=$1 sig=${2:-TERM} p=${PID[$1]:-} i
    [ -n "$p" ] || return 0
    if kill -0 "$p" 2>/dev/null; then
        kill "-$sig" "$p" 2>/dev/null || true
        for i in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
    PID[$name]=
}
rpc() { # name method [json]
    local name=$1
    shift
    "$LULL" rpc -r "$WORK/$name.sock" "$@"
}
cleanup() {
    local rc=$? name
    for name in "${!PID[@]}"; do stop "$name" KILL; done
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        for f in "$WORK"/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 20 "$f"
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The raid's view of itself: "state operational process" (process: none or
# rebuild:PERCENT).
raid_state() {
    rpc E bdev_raid_get_bdevs '{"category":"all"}' | python3 -c '
import json, sys
r = [b for b in json.load(sys.stdin) if b["name"] == "Vol0"]
if not r:
    print("missing 0 none"); sys.exit()
b = r[0]
p = b.get("process")
proc = "none" if not p else "%s:%s" % (p.get("type"), p.get("progress", {}).get("percent"))
print(b["state"], b["num_base_bdevs_operational"], proc)'
}
wait_for() { # seconds description command...
    local secs=$1 what=$2 i
    shift 2
    for i in $(seq 1 $((secs * 5))); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    fail "$MODE: $what within ${secs} s (raid: $(raid_state 2>&1 || true))"
    return 1
}
# R2's controller is connected again ("enabled"): it reconnected, or it was
# given up and deleted and is attached again here.
replica_back() {
    local state
    state=$(rpc E bdev_nvme_get_controllers '{"name":"R2"}' 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["ctrlrs"][0]["state"])' 2>/dev/null) ||
        { attach R2 "$1" 2>/dev/null || true; return 1; }
    [ "$state" = enabled ]
}
operational_is() { [ "$(raid_state | awk '{print $2}')" = "$1" ]; }
rebuilt() { [ "$(raid_state)" = "online 3 none" ]; }

attach() { # replica-name port
    rpc E bdev_nvme_attach_controller "{\"name\":\"$1\",\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",
        \"traddr\":\"127.0.0.1\",\"trsvcid\":\"$2\",\"subnqn\":\"$NQN:$1\",
        \"ctrlr_loss_timeout_sec\":2,\"reconnect_delay_sec\":1,\"fast_io_fail_timeout_sec\":1}" >/dev/null
}

one_mode() {
    local pe=$((PORT_BASE)) p1=$((PORT_BASE + 1)) p2=$((PORT_BASE + 2)) f
    for f in local r1 r2; do
        rm -f "$WORK/$f.img"
        truncate -s "${SIZE_MB}M" "$WORK/$f.img"
    done
    start R1 0 interrupt "$p1" --file-bdev "Rep1:$WORK/r1.img" --subnqn "$NQN:R1" --allow-any-host || return 1
    start R2 0 interrupt "$p2" --file-bdev "Rep2:$WORK/r2.img" --subnqn "$NQN:R2" --allow-any-host || return 1
    # E's --listen is target-wide: the volume's subsystem is reachable on it.
    start E 1 "$MODE" "$pe" || return 1
    rpc E bdev_uring_create "{\"name\":\"Local\",\"filename\":\"$WORK/local.img\",\"block_size\":512}" >/dev/null
    attach R1 "$p1" && attach R2 "$p2" || { fail "$MODE: attach the replicas"; return 1; }
    rpc E bdev_raid_create '{"name":"Vol0","raid_level":"raid1","base_bdevs":["Local","R1n1","R2n1"],"superblock":true}' \
        >/dev/null || { fail "$MODE: bdev_raid_create"; return 1; }
    rpc E nvmf_create_subsystem "{\"nqn\":\"$NQN:vol0\",\"allow_any_host\":true}" >/dev/null
    rpc E nvmf_subsystem_add_ns "{\"nqn\":\"$NQN:vol0\",\"namespace\":{\"bdev_name\":\"Vol0\"}}" >/dev/null
    [ "$(raid_state)" = "online 3 none" ] && pass "$MODE: a raid1 over a local and two remote replicas is online" ||
        fail "$MODE: raid after create: $(raid_state)"

    # Verified load on core 1 beside the engine, through the whole story.
    "$LULL" perf --target "127.0.0.1:$pe" --subnqn "$NQN:vol0" --rw randrw --bs 4k --qd 16 --time 30 --cores 0 \
        --verify --verify-state "$WORK/verify.state" >"$WORK/perf-$MODE.log" 2>&1 &
    local perf=$!
    sleep 4
    stop R2 KILL
    wait_for 20 "the raid drops the killed replica" operational_is 2 && pass "$MODE: replica killed, volume degraded to 2 bases"
    # Down for a moment (the controller reconnects and its namespace comes
    # back as it was) or for longer than ctrlr_loss_timeout_sec (the
    # controller is given up and deleted, so it is attached again).
    sleep "$DOWN"
    start R2 0 interrupt "$p2" --file-bdev "Rep2:$WORK/r2.img" --subnqn "$NQN:R2" --allow-any-host
    wait_for 20 "the restarted replica's namespace is back" replica_back "$p2" ||
        fail "$MODE: the restarted replica's namespace is not back"
    rpc E bdev_raid_add_base_bdev '{"raid_bdev":"Vol0","base_bdev":"R2n1"}' >/dev/null ||
        fail "$MODE: bdev_raid_add_base_bdev"
    wait_for 60 "the rebuild ends with three operational bases" rebuilt && pass "$MODE: restarted replica rebuilt under load"
    if wait "$perf"; then
        pass "$MODE: lull perf --verify through kill, restart and rebuild: no error"
    else
        fail "$MODE: lull perf --verify failed: $(tail -n 3 "$WORK/perf-$MODE.log")"
    fi
    # Read back everything the first pass wrote, now served by any replica.
    if "$LULL" perf --target "127.0.0.1:$pe" --subnqn "$NQN:vol0" --rw randread --bs 4k --qd 16 --time 5 --cores 0 \
        --verify-state "$WORK/verify.state" >"$WORK/perf-$MODE-read.log" 2>&1; then
        pass "$MODE: every block written reads back after the rebuild"
    else
        fail "$MODE: read-back verify: $(tail -n 3 "$WORK/perf-$MODE-read.log")"
    fi
    rpc E save_config >"$WORK/e.json" || fail "$MODE: save_config"
    stop E
    stop R1
    stop R2
    identical "the three replicas' data are byte-identical"

    # The engine restarts from its saved config while R2's node is down:
    # with --json-ignore-init-errors the failed attach is passed over and
    # the volume is assembled degraded from the superblocks on Local and R1;
    # everything written reads back; R2 goes back in by a rebuild.
    start R1 0 interrupt "$p1" --file-bdev "Rep1:$WORK/r1.img" --subnqn "$NQN:R1" --allow-any-host || return 1
    start E 1 "$MODE" "$pe" --json-config "$WORK/e.json" --json-ignore-init-errors || return 1
    if [ "$(raid_state)" = "online 2 none" ] && grep -q "bdev_nvme_attach_controller.*passed over" "$WORK/E.log"; then
        pass "$MODE: engine restarted with a replica down: the volume is online, degraded"
    else
        fail "$MODE: engine restart with R2 down: raid $(raid_state)"
    fi
    if "$LULL" perf --target "127.0.0.1:$pe" --subnqn "$NQN:vol0" --rw randread --bs 4k --qd 16 --time 3 --cores 0 \
        --verify-state "$WORK/verify.state" >"$WORK/perf-$MODE-restart.log" 2>&1; then
        pass "$MODE: after the restart every block written reads back"
    else
        fail "$MODE: read-back after the restart: $(tail -n 3 "$WORK/perf-$MODE-restart.log")"
    fi
    start R2 0 interrupt "$p2" --file-bdev "Rep2:$WORK/r2.img" --subnqn "$NQN:R2" --allow-any-host
    attach R2 "$p2" && rpc E bdev_raid_add_base_bdev '{"raid_bdev":"Vol0","base_bdev":"R2n1"}' >/dev/null ||
        fail "$MODE: attach and add R2 after the restart"
    wait_for 60 "R2 rebuilt after the engine's restart" rebuilt && pass "$MODE: R2 rebuilt after the engine's restart"
    stop E
    stop R1
    stop R2
    identical "after the restart and rebuild the replicas' data are byte-identical"
    rm -f "$WORK/verify.state"
}

identical() { # what
    if cmp -s -i "$DATA_OFFSET" "$WORK/local.img" "$WORK/r1.img" && cmp -s -i "$DATA_OFFSET" "$WORK/local.img" "$WORK/r2.img"; then
        pass "$MODE: $1"
    else
        fail "$MODE: replicas differ: $(cmp -i "$DATA_OFFSET" "$WORK/local.img" "$WORK/r2.img" 2>&1 | head -1)"
    fi
}

round=0
for MODE in "${MODES[@]}"; do
    # Alternate: a replica back within ctrlr_loss_timeout_sec (2 s), then one back after it.
    DOWN=$(((round % 2) * 4))
    round=$((round + 1))
    echo "=== raid1 over three daemons, mode $MODE, replica down ${DOWN} s before its restart"
    one_mode || true
    for name in "${!PID[@]}"; do stop "$name" KILL; done
done
echo "raid1 replicas: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
