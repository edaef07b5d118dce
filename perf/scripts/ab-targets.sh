#!/usr/bin/env bash
# A/B of two lull binaries as poll-mode NVMe/TCP targets, measured by SPDK's
# spdk_nvme_perf: each round starts binary A's target on CPU 0 (a 256 MiB RAM
# namespace), runs every load from CPU 1, stops it, then the same for B; the
# last lines give each binary's IOPS per load, one value per round, and the
# target's CPU microseconds per I/O (its threads' run time from
# /proc/PID/task/*/schedstat over the load: meaningful in interrupt mode,
# where the target sleeps when it has nothing to do), to take medians of.
# Used for before/after figures in docs/performance.md.
#
# usage: perf/scripts/ab-targets.sh ROUNDS SECS "RW:BS:QD ..." BIN_A BIN_B
#   e.g. perf/scripts/ab-targets.sh 3 4 "randread:4096:32 read:131072:16" old/lull target/release/lull
# Environment: SPDK_PEER (default ../shared/spdk-peer/spdk-peer), MODE (the
# targets' --mode-policy, default poll), PORT (default 4495).
set -euo pipefail
if [ $# -ne 5 ]; then
    sed -n '2,13p' "$0" >&2
    exit 2
fi
rounds=$1 secs=$2 loads=$3 a=$4 b=$5
peer=${SPDK_PEER:-$(dirname "$0")/../../../shared/spdk-peer/spdk-peer}
port=${PORT:-4495}
sock=$(mktemp -u /tmp/lull-ab.XXXXXX.sock)
nqn=nqn.2024-01.io.lull:ab
for r in $(seq "$rounds"); do
    for which in A B; do
        bin=$a
        [ "$which" = B ] && bin=$b
        "$bin" target -r "$sock" --cores 0 --mode-policy "${MODE:-poll}" --listen "127.0.0.1:$port" \
            --ram-bdev Ram0:256MiB --subnqn "$nqn" --allow-any-host >/dev/null 2>&1 &
        tp=$!
        for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.2; done
        sleep 0.3
        for l in $loads; do
            IFS=: read -r rw bs qd <<<"$l"
            ns0=$(cat /proc/"$tp"/task/*/schedstat | awk '{s += $1} END {print s}')
            iops=$("$peer" perf -c 0x2 -q "$qd" -o "$bs" -w "$rw" -t "$secs" \
                -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$port subnqn:$nqn" 2>/dev/null |
                tr '\r' '\n' | awk '/^Total/ {print $3}')
            ns1=$(cat /proc/"$tp"/task/*/schedstat | awk '{s += $1} END {print s}')
            cpu=$(awk -v a="$ns0" -v b="$ns1" -v i="${iops:-0}" -v t="$secs" \
                'BEGIN {if (i > 0) printf "%.3f", (b - a) / 1000 / (i * t); else print "-"}')
            echo "$r $which $l ${iops:-failed} $cpu"
        done
        kill "$tp"
        wait "$tp" 2>/dev/null || true
        rm -f "$sock"
    done
done | tee /dev/stderr |
    awk '{v[$2" "$3]=v[$2" "$3]" "$4; c[$2" "$3]=c[$2" "$3]" "$5}
        END {for (k in v) {print "ALL", k, v[k]; print "CPU-us/IO", k, c[k]}}' | sort
