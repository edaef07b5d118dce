#!/usr/bin/env bash
# How long a replica takes to rebuild, and what the volume's users see
# meanwhile: a raid1 over a local file replica and two remote ones (three
# lull daemons on loopback, file bdevs on io_uring), one remote replica
# removed and added back (bdev_raid_add_base_bdev: a full copy onto it),
# without a rate limit and with one (bdev_raid_set_options
# process_max_bandwidth_mb_sec). A steady foreground load (`lull perf`, 4 KiB
# random read/write at a fixed rate) runs in 2-second pieces throughout (the
# last piece may end up to 2 s after the rebuild); the
# script prints the rebuild's time and rate and the foreground p99 before and
# during each rebuild, beside a local copy of the same size (dd, O_DIRECT).
#
# usage: perf/scripts/rebuild-bench.sh [SIZE_MIB] [LIMIT_MB_S]   (default 1024, 100)
# Environment: LULL (default target/release/lull), WINDOWS (process_window_size_kb
# values to rebuild with, unlimited, in turn; default 1024, SPDK's), DIR (where the replica
# files go; default a temporary directory under /var/tmp), RATE (foreground
# I/Os per second, default 2000), PORT_BASE (default 4670).
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZE_MIB=${1:-1024}
LIMIT=${2:-100}
LULL=${LULL:-$PWD/target/release/lull}
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }
RATE=${RATE:-2000}
PORT_BASE=${PORT_BASE:-4670}
NQN=nqn.2024-01.io.lull
DIR=${DIR:-$(mktemp -d /var/tmp/lull-rebuild.XXXXXX)}
declare -A PID=()

start() { # name core port [flags...]
    local name=$1 core=$2 port=$3 i
    shift 3
    rm -f "$DIR/$name.sock"
    "$LULL" target -r "$DIR/$name.sock" --cores "$core" --mode-policy "${MODE:-interrupt}" \
        --listen "127.0.0.1:$port" "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
    PID[$name]=$!
    for i in $(seq 1 100); do
        [ -S "$DIR/$name.sock" ] && return 0
        sleep 0.1
    done
    echo "daemon $name did not start" >&2
    exit 1
}
cleanup() {
    local rc=$? name
    for name in "${!PID[@]}"; do
        kill -TERM "${PID[$name]}" 2>/dev/null || true
        wait "${PID[$name]}" 2>/dev/null || true
    done
    [ "$rc" -eq 0 ] || tail -n 20 "$DIR"/*.log 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rpc() { local name=$1; shift; "$LULL" rpc -r "$DIR/$name.sock" "$@"; }
# One 2 s piece of foreground load; prints its p99 (us).
piece() {
    "$LULL" perf --target "127.0.0.1:$PORT_BASE" --subnqn "$NQN:vol0" --rw randrw --bs 4k --qd 4 \
        --rate-iops "$RATE" --time 2 --size 256MiB --json --no-progress 2>/dev/null |
        python3 -c 'import json, sys; d = json.load(sys.stdin); d = d[0] if isinstance(d, list) else d; print(round(d["lat_p99_us"], 1))'
}
stats() { # label p99s...
    local label=$1
    shift
    python3 -c 'import statistics, sys; v = list(map(float, sys.argv[2:]))
print("%-34s pieces %3d  p99 median %8.1f us  max %8.1f us" % (sys.argv[1], len(v), statistics.median(v), max(v)))' "$label" "$@"
}
# Removes R2n1 and adds it back; foreground pieces run meanwhile (in the
# background) while the rebuild is polled every 200 ms for its end.
rebuild() { # label
    local label=$1 t0 t1 fg p99s
    rpc E bdev_raid_remove_base_bdev '{"name":"R2n1"}' >/dev/null
    rm -f "$DIR/stop" "$DIR/p99s"
    (while [ ! -e "$DIR/stop" ]; do piece >>"$DIR/p99s"; done) &
    fg=$!
    t0=$(date +%s.%N)
    rpc E bdev_raid_add_base_bdev '{"raid_bdev":"Vol0","base_bdev":"R2n1"}' >/dev/null
    # Cheap polling (no Python per poll: the machine has two cores).
    while [ "$(rpc E bdev_raid_get_bdevs '{"category":"all"}' | grep -c '"process"')" != 0 ]; do sleep 0.2; done
    t1=$(date +%s.%N)
    touch "$DIR/stop"
    wait "$fg"
    python3 -c "s = $t1 - $t0; print('%-34s %.1f s for %d MiB: %.0f MiB/s' % ('rebuild, $label', s, $SIZE_MIB, $SIZE_MIB / s))"
    mapfile -t p99s <"$DIR/p99s"
    [ ${#p99s[@]} -gt 0 ] && stats "foreground during it, $label" "${p99s[@]}"
}

# Real data on every replica (an fallocated file reads back zeroes without
# touching the disk, which would flatter both the copy and the rebuild).
dd if=/dev/urandom of="$DIR/r1.img" bs=1M count="$SIZE_MIB" status=none
cp "$DIR/r1.img" "$DIR/local.img"
cp "$DIR/r1.img" "$DIR/r2.img"
# A local copy of the same size, the yardstick.
sync
t0=$(date +%s.%N)
dd if="$DIR/r1.img" of="$DIR/copy.img" bs=1M count="$SIZE_MIB" iflag=direct oflag=direct 2>/dev/null
t1=$(date +%s.%N)
rm -f "$DIR/copy.img"
python3 -c "s = $t1 - $t0; print('%-34s %.1f s for %d MiB: %.0f MiB/s' % ('local copy (dd, O_DIRECT, 1 MiB)', s, $SIZE_MIB, $SIZE_MIB / s))"

start R1 1 $((PORT_BASE + 1)) --file-bdev "Rep1:$DIR/r1.img" --subnqn "$NQN:r1" --allow-any-host
start R2 1 $((PORT_BASE + 2)) --file-bdev "Rep2:$DIR/r2.img" --subnqn "$NQN:r2" --allow-any-host
start E 0 "$PORT_BASE"
rpc E bdev_uring_create "{\"name\":\"Local\",\"filename\":\"$DIR/local.img\",\"block_size\":512}" >/dev/null
for r in 1 2; do
    rpc E bdev_nvme_attach_controller "{\"name\":\"R$r\",\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"$((PORT_BASE + r))\",\"subnqn\":\"$NQN:r$r\"}" >/dev/null
done
rpc E bdev_raid_create '{"name":"Vol0","raid_level":"raid1","base_bdevs":["Local","R1n1","R2n1"]}' >/dev/null
rpc E nvmf_create_subsystem "{\"nqn\":\"$NQN:vol0\",\"allow_any_host\":true}" >/dev/null
rpc E nvmf_subsystem_add_ns "{\"nqn\":\"$NQN:vol0\",\"namespace\":{\"bdev_name\":\"Vol0\"}}" >/dev/null

quiet=()
for _ in 1 2 3 4 5; do quiet+=("$(piece)"); done
stats "foreground, no rebuild" "${quiet[@]}"
for w in ${WINDOWS:-1024}; do
    rpc E bdev_raid_set_options "{\"process_max_bandwidth_mb_sec\":0,\"process_window_size_kb\":$w}" >/dev/null
    rebuild "no rate limit, window $w KiB"
done
rpc E bdev_raid_set_options "{\"process_max_bandwidth_mb_sec\":$LIMIT,\"process_window_size_kb\":1024}" >/dev/null
rebuild "limit $LIMIT MB/s, window 1024 KiB"
