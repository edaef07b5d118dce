#!/usr/bin/env bash
# The proposal's comparison on the object it was measured on: a replicated
# volume (raid1 over one local and two remote replicas, as a Longhorn V2
# engine serves it), beside a plain RAM namespace of the same daemon, with the
# CPU of every process. A wrapper of `lull bench volume` (see its --help),
# kept for its environment variables; the command does the work: it starts
# the replica daemons R1, R2 and the engine daemon E as its children, builds
# the volume over JSON-RPC, runs the host's load in-process, reads each
# process's CPU from /proc/PID/task/*/schedstat, prints the table (config,
# load, ns, iops, mean_us, p99_us, E%, R1%, R2%, all%, cpu_us/io, host%,
# +host_us/io), the volume/plain ratios and an idle row per configuration,
# and stops its daemons on exit, error or Ctrl-C.
#
# usage: perf/scripts/volume-bench.sh [SECS]        (default 5 s per load)
# Environment: LULL (default target/release/lull), CONFIGS (default
# "poll interrupt:1000 interrupt:100 interrupt:0 hybrid"), LOADS (default
# "randread:4k:32 randwrite:4k:32 read:128k:16 randread:4k:1"), IDLE_SECS
# (default 20), E_CORE / R_CORE / HOST_CORE (default 0 / 1 / 1), PORT_BASE
# (default 4650), OUT (a directory for the rows as JSON, volume.json; none by
# default).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=${1:-5}
LULL=${LULL:-$PWD/target/release/lull}
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }
args=(bench volume --time "$SECS"
    --configs "${CONFIGS:-poll interrupt:1000 interrupt:100 interrupt:0 hybrid}"
    --loads "${LOADS:-randread:4k:32 randwrite:4k:32 read:128k:16 randread:4k:1}"
    --idle-secs "${IDLE_SECS:-20}" --port-base "${PORT_BASE:-4650}")
# The command's own defaults (0 / 1 / 1, or the first usable CPU) unless given.
[ -n "${E_CORE:-}" ] && args+=(--engine-core "$E_CORE")
[ -n "${R_CORE:-}" ] && args+=(--replica-core "$R_CORE")
[ -n "${HOST_CORE:-}" ] && args+=(--host-core "$HOST_CORE")
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
exec "$LULL" "${args[@]}"
