#!/usr/bin/env bash
# NVMe/TCP TLS 1.3 with PSKs between lull and SPDK v25.09, both ways, on loopback:
#
#   1. SPDK's initiator (bdevperf -w verify, keyring_file_add_key and "psk" on
#      bdev_nvme_attach_controller in its JSON config) against `lull target`
#      configured by SPDK's rpc.py (keyring_file_add_key, nvmf_subsystem_add_host
#      --psk, nvmf_subsystem_add_listener --secure-channel), with a 32-byte
#      (TLS_AES_128_GCM_SHA256) and a 48-byte (TLS_AES_256_GCM_SHA384) PSK, and
#      with PSKs of each hash form (00 as is, 01 SHA-256, 02 SHA-384 retained);
#      a wrong PSK refused; tshark (when installed) shows the TLS 1.3 handshake,
#      application-data records, and no NVMe/TCP plaintext (neither the NQN
#      outside the ClientHello's PSK identity nor Identify's serial number);
#   2. lull's initiator (`lull perf --verify --psk`) against nvmf_tgt configured
#      the same way by rpc.py, both PSK lengths; a wrong PSK refused; a plaintext
#      connection to the secure port refused.
#
# PSK files (mode 0600) in the interchange form NVMeTLSkey-1:HH:base64(key ||
# CRC-32 LE): written by Python from the format's definition, with no newline
# after the closing ':' (SPDK's parser wants the text to end there).
#
# Usage: tests/interop/spdk-tls.sh [spdk-peer path]   (after cargo build --release)
# Environment: LULL (default target/release/lull), SPDK_PEER, KEEP=1 (keep the logs),
# LULL_PORT (4470), SPDK_PORT (4570). Prints PASS/FAIL lines and 'N passed, N failed'.
set -euo pipefail
cd "$(dirname "$0")/../.."

PEER=${1:-${SPDK_PEER:-../shared/spdk-peer/spdk-peer}}
LULL=${LULL:-target/release/lull}
NQN=nqn.2024-01.io.lull:spdk-tls
SPDK_NQN=nqn.2016-06.io.spdk:cnode1
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:0f7b3a52-6c1e-4b2d-9a8f-3e5d7c9b1a21
LULL_PORT=${LULL_PORT:-4470}
SPDK_PORT=${SPDK_PORT:-4570}
SPDK_TLS_PORT=$((SPDK_PORT + 1))

if [ ! -x "$PEER" ]; then
    echo "spdk-peer not found at $PEER: SPDK TLS interop not run" >&2
    exit 0
fi
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-spdk-tls.XXXXXX")
LULL_SOCK=$WORK/lull.sock
SPDK_SOCK=$WORK/spdk.sock
LULL_PID=
SPDK_PID=
CAP_PID=

stop_lull() {
    if [ -n "$LULL_PID" ] && kill -0 "$LULL_PID" 2>/dev/null; then
        kill -TERM "$LULL_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 100); do kill -0 "$LULL_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$LULL_PID" 2>/dev/null || true
        wait "$LULL_PID" 2>/dev/null || true
    fi
    LULL_PID=
}
stop_spdk() {
    if [ -n "$SPDK_PID" ] && kill -0 "$SPDK_PID" 2>/dev/null; then
        kill -INT "$SPDK_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do kill -0 "$SPDK_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$SPDK_PID" 2>/dev/null || true
    fi
    SPDK_PID=
    rm -f "$SPDK_SOCK.pid"
}
stop_capture() {
    if [ -n "$CAP_PID" ]; then
        kill -INT "$CAP_PID" 2>/dev/null || true
        wait "$CAP_PID" 2>/dev/null || true
    fi
    CAP_PID=
}
cleanup() {
    local rc=$?
    stop_capture
    stop_lull
    stop_spdk
    if [ "$rc" -ne 0 ] || [ "$failed" -ne 0 ]; then
        for f in "$WORK"/*.log; do
            [ -s "$f" ] || continue
            echo "--- last lines of $(basename "$f")"
            tail -n 15 "$f"
        done
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "logs kept in $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$PEER" build >/dev/null
eval "$("$PEER" env)"
RPC_PY=(python3 "$SPDK/scripts/rpc.py")

run_logged() {
    local name=$1 limit=$2
    shift 2
    local rc=0
    timeout --kill-after=5 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    sed -i 's/\r/\n/g' "$WORK/$name.log"
    return "$rc"
}

# A PSK in the interchange form at $1: hash field $2 (0, 1, 2), key of $3 bytes.
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

perf_verdict() {
    python3 - "$1" <<'EOF'
import json, sys
lines = open(sys.argv[1]).read().splitlines()
start = next((i for i, l in enumerate(lines) if l.startswith(("[", "{"))), len(lines))
try:
    r = json.loads("\n".join(lines[start:]))
except ValueError:
    print("no JSON result"); sys.exit()
if isinstance(r, list):
    r = r[0]
if r["errors"] or r["verify_failures"]:
    print(f'{r["errors"]} errors, {r["verify_failures"]} mismatches: {r.get("first_error")}')
elif r["verified_reads"] == 0 or r["iops"] <= 0:
    print("nothing verified")
else:
    print("ok")
EOF
}

KEYS=$WORK/keys
mkdir -m 0700 "$KEYS"
gen_psk "$KEYS/k00-32.key" 0 32
gen_psk "$KEYS/k01-32.key" 1 32
gen_psk "$KEYS/k02-48.key" 2 48
gen_psk "$KEYS/k00-48.key" 0 48
gen_psk "$KEYS/wrong-32.key" 1 32

# ---- 1: bdevperf against lull target --------------------------------------------

bdevperf_tls_config() {
    cat <<EOF
{"subsystems": [
 {"subsystem": "keyring", "config": [
  {"method": "keyring_file_add_key", "params": {"name": "psk0", "path": "$1"}}
 ]},
 {"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Tls0", "trtype": "tcp", "adrfam": "ipv4",
    "traddr": "127.0.0.1", "trsvcid": "$LULL_PORT", "subnqn": "$NQN", "hostnqn": "$HOSTNQN", "psk": "psk0"}}
 ]}
]}
EOF
}
bdevperf_tls() {
    local name=$1
    bdevperf_tls_config "$2" >"$WORK/$name.json"
    run_logged "$name" 30 "$PEER" bdevperf -m 0x2 --json "$WORK/$name.json" -q 16 -o 4096 -w verify -t 2
}
bdevperf_ok() {
    grep -q '^ *Total' "$WORK/$1.log" && ! grep -qiE 'miscompare|I/O error|io failed|\*ERROR\*' "$WORK/$1.log"
}

# lull target with a secure_channel listener for $HOSTNQN with PSK file $1.
lull_tls_target() {
    rm -f "$LULL_SOCK"
    "$LULL" target -r "$LULL_SOCK" --cores 0 --mode-policy interrupt >"$WORK/lull-target.log" 2>&1 </dev/null &
    LULL_PID=$!
    local i
    for i in $(seq 1 100); do [ -S "$LULL_SOCK" ] && break; sleep 0.1; done
    local R=("${RPC_PY[@]}" -s "$LULL_SOCK")
    "${R[@]}" bdev_malloc_create -b TlsMalloc 64 4096 &&
        "${R[@]}" nvmf_create_transport -t TCP &&
        "${R[@]}" nvmf_create_subsystem "$NQN" -s SPDK00000000000015 &&
        "${R[@]}" nvmf_subsystem_add_ns "$NQN" TlsMalloc &&
        "${R[@]}" keyring_file_add_key psk0 "$1" &&
        "${R[@]}" nvmf_subsystem_add_host "$NQN" "$HOSTNQN" --psk psk0 &&
        "${R[@]}" nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s "$LULL_PORT" --secure-channel
}

echo "=== TLS: bdevperf (keyring, psk) against lull target (--secure-channel)"
for k in k01-32 k02-48 k00-32 k00-48; do
    if lull_tls_target "$KEYS/$k.key" >>"$WORK/rpc-lull.log" 2>&1; then
        cap=
        if [ "$k" = k01-32 ] && command -v tshark >/dev/null 2>&1; then
            cap=$WORK/tls.pcap
            tshark -q -i lo -f "tcp port $LULL_PORT" -w "$cap" >"$WORK/tshark.log" 2>&1 &
            CAP_PID=$!
            sleep 1.5
        fi
        if bdevperf_tls "bdevperf-tls-$k" "$KEYS/$k.key" && bdevperf_ok "bdevperf-tls-$k"; then
            pass "bdevperf -w verify against lull over TLS, PSK $k (hash field, key bytes): $(awk '/^ *Total/ {print $3; exit}' "$WORK/bdevperf-tls-$k.log") IOPS"
        else
            fail "bdevperf against lull over TLS, PSK $k"
            tail -n 8 "$WORK/bdevperf-tls-$k.log"
        fi
        if [ -n "$cap" ]; then
            sleep 0.5
            stop_capture
            T=(tshark -r "$cap" -d "tcp.port==$LULL_PORT,tls")
            hello=$("${T[@]}" -Y 'tls.handshake.type == 1' 2>/dev/null | wc -l)
            # TLS 1.3 hides the content type: every record after the hellos is "application data".
            appdata=$("${T[@]}" -Y 'tls.record.opaque_type == 23' 2>/dev/null | wc -l)
            version=$("${T[@]}" -Y 'tls.handshake.type == 2' -T fields -e tls.handshake.extensions.supported_version 2>/dev/null | sort -u | tr '\n' ' ')
            # NVMe/TCP in the clear would show the Connect's NQNs (the PSK identity in the
            # ClientHello carries them by design, nothing else may) and Identify
            # Controller's serial number.
            nqn_clear=$("${T[@]}" -Y "frame contains \"$NQN\" && !(tls.handshake.type == 1)" 2>/dev/null | wc -l)
            sn_clear=$("${T[@]}" -Y 'frame contains "SPDK00000000000015"' 2>/dev/null | wc -l)
            if [ "$hello" -ge 2 ] && [ "$appdata" -gt 100 ] && [ "$nqn_clear" -eq 0 ] && [ "$sn_clear" -eq 0 ] && [[ "$version" == *0x0304* ]]; then
                pass "tshark: $hello ClientHellos, ServerHello TLS 1.3 ($version), $appdata application-data records; the subsystem NQN outside the ClientHello and the serial number: 0 frames"
            else
                fail "tshark: ClientHellos $hello, application data $appdata, NQN outside ClientHello $nqn_clear, serial $sn_clear, version '$version'"
            fi
        fi
        if [ "$k" = k01-32 ]; then
            if bdevperf_tls bdevperf-tls-wrong "$KEYS/wrong-32.key"; then
                fail "bdevperf with a wrong PSK was let in by lull"
            elif grep -q '^ *Total' "$WORK/bdevperf-tls-wrong.log" && ! grep -q 'Failed\|failed\|error' "$WORK/bdevperf-tls-wrong.log"; then
                fail "bdevperf with a wrong PSK ran I/O against lull"
            else
                pass "bdevperf with a wrong PSK is refused by lull (attach fails)"
            fi
        fi
    else
        fail "rpc.py could not build the TLS subsystem on lull (PSK $k)"
        tail -n 5 "$WORK/rpc-lull.log"
    fi
    stop_lull
done

# ---- 2: lull perf against nvmf_tgt ------------------------------------------------

echo "=== TLS: lull perf --psk against nvmf_tgt (--secure-channel)"
lull_perf_tls() {
    local name=$1
    shift
    run_logged "$name" 60 "$LULL" perf --target "127.0.0.1:$SPDK_TLS_PORT" --subnqn "$SPDK_NQN" --hostnqn "$HOSTNQN" \
        --cores 1 --rw randrw --bs 4k --qd 16 --time 2 --ramp 0 --verify --json "$@"
}
SR=("$PEER" rpc --rpc-socket "$SPDK_SOCK")
for k in k01-32 k02-48; do
    if SPDK_PID=$("$PEER" target --port "$SPDK_PORT" --core 0 --nqn "$SPDK_NQN" --size 128 \
        --rpc-socket "$SPDK_SOCK" --log "$WORK/nvmf_tgt-tls-$k.log"); then
        if "${SR[@]}" keyring_file_add_key psk0 "$KEYS/$k.key" >"$WORK/spdk-rpc-tls.log" 2>&1 &&
            "${SR[@]}" nvmf_subsystem_allow_any_host -d "$SPDK_NQN" >>"$WORK/spdk-rpc-tls.log" 2>&1 &&
            "${SR[@]}" nvmf_subsystem_add_host "$SPDK_NQN" "$HOSTNQN" --psk psk0 >>"$WORK/spdk-rpc-tls.log" 2>&1 &&
            "${SR[@]}" nvmf_subsystem_add_listener "$SPDK_NQN" -t tcp -a 127.0.0.1 -s "$SPDK_TLS_PORT" --secure-channel >>"$WORK/spdk-rpc-tls.log" 2>&1; then
            verdict=
            if lull_perf_tls "lull-perf-tls-$k" --psk "$KEYS/$k.key" &&
                verdict=$(perf_verdict "$WORK/lull-perf-tls-$k.log") && [ "$verdict" = ok ]; then
                pass "lull perf --verify --psk ($k) against nvmf_tgt --secure-channel: 0 errors, 0 mismatches"
            else
                fail "lull perf --psk ($k) against nvmf_tgt: ${verdict:-exit status $?}"
                tail -n 8 "$WORK/lull-perf-tls-$k.log"
            fi
            if [ "$k" = k01-32 ]; then
                if lull_perf_tls lull-perf-tls-wrong --psk "$KEYS/wrong-32.key"; then
                    fail "lull perf with a wrong PSK was let in by nvmf_tgt"
                elif ! grep -q 'refused the TLS handshake' "$WORK/lull-perf-tls-wrong.log"; then
                    fail "lull perf with a wrong PSK failed, but not in the TLS handshake"
                    tail -n 8 "$WORK/lull-perf-tls-wrong.log"
                else
                    pass "lull perf with a wrong PSK is refused by nvmf_tgt in the TLS handshake"
                fi
                if lull_perf_tls lull-perf-tls-plain; then
                    fail "lull perf without TLS was let in on nvmf_tgt's secure port"
                else
                    pass "lull perf without TLS is refused on nvmf_tgt's secure port"
                fi
            fi
        else
            fail "rpc.py could not set up TLS on nvmf_tgt ($k)"
            tail -n 5 "$WORK/spdk-rpc-tls.log"
        fi
        stop_spdk
    else
        fail "nvmf_tgt (TLS, $k) did not start"
    fi
done

echo "spdk-tls: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
