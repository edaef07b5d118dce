#!/usr/bin/env bash
# Idle CPU of a target and an initiator with a remote controller attached:
# one `lull target` serving a RAM namespace, a second `lull target` acting as
# the initiator (bdev_nvme_attach_controller to the first: an admin queue and
# one I/O queue per initiator reactor), nothing else. Both run with default
# settings in interrupt mode (-m picks another mode policy). Reports the run
# time of all threads of each process (/proc/PID/task/*/schedstat) over the
# window, 3 s after the attach, as % of one core per side.
#
# Usage: perf/scripts/daemon-idle-attached.sh [-t TARGET_CORES] [-i INITIATOR_CORES]
#            [-m MODE_POLICY] [-s SECONDS] [-- extra flags for both daemons]
# Example: perf/scripts/daemon-idle-attached.sh -t 0 -i 1
#          perf/scripts/daemon-idle-attached.sh -t 0 -i 1 -- --nvme-adminq-poll-period-us 10000
set -euo pipefail
cd "$(dirname "$0")/../.."
tcores=0
icores=1
secs=30
mode=interrupt
while getopts "t:i:m:s:" o; do
    case $o in
        m) mode=$OPTARG ;;
        t) tcores=$OPTARG ;;
        i) icores=$OPTARG ;;
        s) secs=$OPTARG ;;
        *) sed -n 2,13p "$0" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
B=${LULL:-target/release/lull}
[ -x "$B" ] || cargo build --release -p lull
tsock=$(mktemp -u /tmp/lull-idle-t.XXXXXX.sock)
isock=$(mktemp -u /tmp/lull-idle-i.XXXXXX.sock)
port=$((20000 + RANDOM % 20000))
nqn=nqn.2024-01.io.lull:idle
tpid=
ipid=
trap 'kill -TERM $tpid $ipid 2>/dev/null || true; rm -f "$tsock" "$isock"' EXIT
"$B" target --cores "$tcores" --mode-policy "$mode" --rpc-socket "$tsock" \
    --ram-bdev Malloc0:64MiB --subnqn "$nqn" --allow-any-host --listen "127.0.0.1:$port" \
    --log-level warn "$@" >/tmp/lull-idle-t.log 2>&1 &
tpid=$!
"$B" target --cores "$icores" --mode-policy "$mode" --rpc-socket "$isock" \
    --log-level warn "$@" >/tmp/lull-idle-i.log 2>&1 &
ipid=$!
for _ in $(seq 50); do
    [ -S "$tsock" ] && [ -S "$isock" ] && break
    sleep 0.1
done
"$B" rpc -r "$isock" bdev_nvme_attach_controller \
    "{\"name\":\"Nvme0\",\"trtype\":\"TCP\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"$port\",\"subnqn\":\"$nqn\"}" >/dev/null
queues=$("$B" rpc -r "$isock" bdev_nvme_get_controllers | grep -o '"io_queues": *[0-9]*' | grep -o '[0-9]*$')
adminq=$("$B" rpc -r "$isock" bdev_nvme_get_options | grep -o '"nvme_adminq_poll_period_us": *[0-9]*' | grep -o '[0-9]*$')
sleep 3
ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }
ta=$(ns $tpid); ia=$(ns $ipid); t0=$(date +%s.%N)
sleep "$secs"
tb=$(ns $tpid); ib=$(ns $ipid); t1=$(date +%s.%N)
pct() { echo "($2 - $1) / 10000000 / ($t1 - $t0)" | bc -l | cut -c1-6; }
echo "idle ${secs} s, mode policy $mode, 1 controller attached, $queues I/O queue(s), nvme_adminq_poll_period_us $adminq, extra flags: ${*:-none}"
echo "  target    (cores $tcores): $(pct "$ta" "$tb") % of one core"
echo "  initiator (cores $icores): $(pct "$ia" "$ib") % of one core"
"$B" rpc -r "$isock" bdev_nvme_detach_controller '{"name":"Nvme0"}' >/dev/null || true
kill -TERM $tpid $ipid
wait $tpid $ipid || true
trap - EXIT
