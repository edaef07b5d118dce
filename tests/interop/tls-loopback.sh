#!/usr/bin/env bash
# NVMe/TCP TLS 1.3 between lull's own roles on loopback: `lull target` (from a
# TOML file: a malloc namespace, a plain port and a secure_channel port, the
# host's PSK) and `lull perf --psk --verify`, the target and the initiator in
# each reactor mode (poll, interrupt, hybrid, adaptive); a wrong PSK and a
# plaintext connection to the secure port refused; the plain port taking TLS
# from the host with a PSK (and refusing it in plaintext) and plaintext from a
# host without one.
#
# MEASURE=1: instead, the cost of TLS: 4 KiB random reads at QD 32 (IOPS) and
# QD 1 (mean latency), plaintext and TLS in turn, A B A B, ROUNDS rounds (3),
# target on CPU 0 and initiator on CPU 1, both in MODE (interrupt; poll makes
# both CPUs of a 2-CPU machine spin, and anything else that runs then stalls
# one side for a scheduler tick); prints each run and the medians.
#
# Usage: tests/interop/tls-loopback.sh   (after cargo build --release)
# Environment: LULL (default target/release/lull), PORT (4480; PORT+1 is the
# secure port), KEEP=1, MEASURE=1, ROUNDS, TIME (s per run, 5).
set -euo pipefail
cd "$(dirname "$0")/../.."

LULL=${LULL:-target/release/lull}
PORT=${PORT:-4480}
TLS_PORT=$((PORT + 1))
NQN=nqn.2024-01.io.lull:tls-loop
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:0f7b3a52-6c1e-4b2d-9a8f-3e5d7c9b1a22
# A host allowed without a PSK: plaintext is its way in.
PLAIN_HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:0f7b3a52-6c1e-4b2d-9a8f-3e5d7c9b1a23
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-tls-loop.XXXXXX")
PID=
stop_target() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    PID=
}
cleanup() {
    local rc=$?
    stop_target
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        for f in "$WORK"/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 10 "$f"
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

gen_psk() {
    (
        umask 077
        python3 - "$2" "$3" >"$1" <<'EOF'
import base64, os, sys, zlib
hh, n = int(sys.argv[1]), int(sys.argv[2])
key = os.urandom(n)
crc = zlib.crc32(key).to_bytes(4, "little")
print(f"NVMeTLSkey-1:{hh:02d}:{base64.b64encode(key + crc).decode()}:", end="")
EOF
    )
    chmod 0600 "$1"
}
KEYS=$WORK/keys
mkdir -m 0700 "$KEYS"
gen_psk "$KEYS/host.psk" 1 32
gen_psk "$KEYS/wrong.psk" 1 32

cat >"$WORK/target.toml" <<EOF
cores = "0"
log_level = "warn"
rpc_socket = "$WORK/lull.sock"
[[bdev]]
name = "Malloc0"
type = "malloc"
size = "256MiB"
block_size = 4096
[[subsystem]]
nqn = "$NQN"
hosts = ["$HOSTNQN", "$PLAIN_HOSTNQN"]
listen = ["127.0.0.1:$PORT"]
listen_secure_channel = ["127.0.0.1:$TLS_PORT"]
namespaces = [{ bdev = "Malloc0" }]
[[subsystem.host_psk]]
host = "$HOSTNQN"
psk = "$KEYS/host.psk"
EOF

start_target() {
    rm -f "$WORK/lull.sock"
    "$LULL" target --config "$WORK/target.toml" --mode-policy "$1" >"$WORK/target-$1.log" 2>&1 </dev/null &
    PID=$!
    local i
    for i in $(seq 1 100); do
        [ -S "$WORK/lull.sock" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "lull target ($1) did not start"
    return 1
}

perf() {
    local name=$1
    shift
    local rc=0
    timeout --kill-after=5 120 "$LULL" perf --subnqn "$NQN" --hostnqn "${HOST:-$HOSTNQN}" --cores 1 --json "$@" \
        >"$WORK/$name.log" 2>&1 || rc=$?
    return "$rc"
}

# A field of `lull perf --json`'s result in $1: $2 (iops, mean_us...).
field() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith(("[", "{"))), len(lines))
try:
    r = json.loads("\n".join(lines[start:]))
except ValueError:
    print(""); sys.exit()
if isinstance(r, list):
    r = r[0]
def find(o, k):
    if isinstance(o, dict):
        if k in o:
            return o[k]
        for v in o.values():
            x = find(v, k)
            if x is not None:
                return x
    return None
v = find(r, sys.argv[2])
print("" if v is None else v)
EOF
}

if [ "${MEASURE:-0}" = 1 ]; then
    ROUNDS=${ROUNDS:-3}
    TIME=${TIME:-5}
    MODE=${MODE:-interrupt}
    start_target "$MODE"
    declare -A iops lat p99
    for r in $(seq 1 "$ROUNDS"); do
        for way in plain tls; do
            if [ "$way" = tls ]; then
                args=(--target "127.0.0.1:$TLS_PORT" --psk "$KEYS/host.psk")
            else
                args=(--target "127.0.0.1:$PORT")
            fi
            perf "m-$way-qd32-$r" "${args[@]}" --mode "$MODE" --nvme-ioq-poll-period-us 0 --rw randread --bs 4k --qd 32 --time "$TIME" --ramp 1
            perf "m-$way-qd1-$r" "${args[@]}" --mode "$MODE" --nvme-ioq-poll-period-us 0 --rw randread --bs 4k --qd 1 --time "$TIME" --ramp 1
            i=$(field "$WORK/m-$way-qd32-$r.log" iops)
            l=$(field "$WORK/m-$way-qd1-$r.log" lat_mean_us)
            p=$(field "$WORK/m-$way-qd1-$r.log" lat_p99_us)
            echo "round $r $way: QD32 ${i} IOPS, QD1 mean ${l} us (p99 ${p} us)"
            iops[$way]="${iops[$way]:-} $i"
            lat[$way]="${lat[$way]:-} $l"
            p99[$way]="${p99[$way]:-} $p"
        done
    done
    med() { python3 -c 'import sys, statistics; v=[float(x) for x in sys.argv[1:] if x]; print(round(statistics.median(v), 1) if v else "n/a")' "$@"; }
    for way in plain tls; do
        # shellcheck disable=SC2086
        echo "median $way: QD32 $(med ${iops[$way]}) IOPS, QD1 mean $(med ${lat[$way]}) us, p99 $(med ${p99[$way]}) us"
    done
    stop_target
    exit 0
fi

for mode in poll interrupt hybrid adaptive; do
    start_target "$mode" || continue
    if perf "tls-$mode" --target "127.0.0.1:$TLS_PORT" --psk "$KEYS/host.psk" --mode "$mode" \
        --rw randrw --bs 4k --qd 16 --time 2 --ramp 0 --verify &&
        [ "$(field "$WORK/tls-$mode.log" verify_failures)" = 0 ] && [ "$(field "$WORK/tls-$mode.log" errors)" = 0 ] &&
        [ "$(field "$WORK/tls-$mode.log" verified_reads)" != 0 ]; then
        pass "lull perf --psk --verify against lull target over TLS, both in $mode mode: $(field "$WORK/tls-$mode.log" iops) IOPS, 0 errors, 0 mismatches"
    else
        fail "lull perf --psk --verify over TLS in $mode mode"
    fi
    if [ "$mode" = interrupt ]; then
        if perf tls-128k --target "127.0.0.1:$TLS_PORT" --psk "$KEYS/host.psk" --rw randrw --bs 128k --qd 8 --time 2 --ramp 0 --verify &&
            [ "$(field "$WORK/tls-128k.log" verify_failures)" = 0 ] && [ "$(field "$WORK/tls-128k.log" errors)" = 0 ]; then
            pass "128 KiB transfers (R2T/H2CData across many TLS records) verified"
        else
            fail "128 KiB transfers over TLS"
        fi
        if perf wrong --target "127.0.0.1:$TLS_PORT" --psk "$KEYS/wrong.psk" --time 1 --ramp 0; then
            fail "a wrong PSK was let in"
        elif grep -q 'refused the TLS handshake' "$WORK/wrong.log"; then
            pass "a wrong PSK is refused in the TLS handshake"
        else
            fail "a wrong PSK failed, but not in the TLS handshake"
        fi
        if perf plain-on-tls --target "127.0.0.1:$TLS_PORT" --time 1 --ramp 0; then
            fail "plaintext was let in on the secure port"
        else
            pass "plaintext is refused on the secure port"
        fi
        # The port without secure_channel takes both: TLS from the host with
        # a PSK (and only TLS from it), plaintext from a host without one.
        if perf tls-on-plain --target "127.0.0.1:$PORT" --psk "$KEYS/host.psk" --time 1 --ramp 0; then
            pass "the plain port takes TLS from the host with a PSK"
        else
            fail "the plain port refused TLS: $(tail -n 2 "$WORK/tls-on-plain.log")"
        fi
        if perf psk-host-plain --target "127.0.0.1:$PORT" --time 1 --ramp 0; then
            fail "the host with a PSK was let in in plaintext"
        elif grep -q 'Connect Invalid Host' "$WORK/psk-host-plain.log"; then
            pass "the host with a PSK is refused in plaintext (Connect Invalid Host)"
        else
            fail "the host with a PSK failed in plaintext, but not with Connect Invalid Host: $(tail -n 2 "$WORK/psk-host-plain.log")"
        fi
        if HOST=$PLAIN_HOSTNQN perf plain --target "127.0.0.1:$PORT" --time 1 --ramp 0; then
            pass "the plain port still serves plaintext to a host without a PSK"
        else
            fail "the plain port refused plaintext: $(tail -n 2 "$WORK/plain.log")"
        fi
    fi
    stop_target
done

echo "tls-loopback: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
