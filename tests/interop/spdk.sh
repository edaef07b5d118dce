#!/usr/bin/env bash
# Interop with SPDK v25.09 both ways, on loopback, with SPDK's own programs:
#
#   1. spdk_nvme_perf with SPDK's defaults (it sends an empty HOSTNQN) against
#      `lull target` in every reactor mode (poll, interrupt, hybrid, adaptive);
#   2. bdevperf -w verify (SPDK's bdev_nvme initiator) against `lull target` in
#      every reactor mode, with nvme_ioq_poll_period_us 0, 100 and 1000, with
#      and without header and data digests;
#   3. lull's initiator (`lull perf --verify`) against SPDK's nvmf_tgt: polling
#      with a malloc bdev and in interrupt mode with an aio bdev (a tmpfs file,
#      the bdev SPDK can sleep with), with and without digests;
#   4. SPDK's rpc.py (of v25.09) builds a subsystem on an empty `lull target`,
#      spdk_nvme_perf uses it, and rpc.py tears it down again;
#   5. tests/interop/spdk-config.sh, when present: save_config from lull loaded
#      by spdk_tgt, and the other way round;
#   6. DH-HMAC-CHAP both ways: bdevperf -w verify (keyring_file_add_key in its
#      JSON config, dhchap_key [+ dhchap_ctrlr_key] on the attach) against a
#      `lull target` whose host entry requires the keys, and `lull perf --verify
#      --dhchap-key [--dhchap-ctrlr-key]` against nvmf_tgt configured by rpc.py
#      (keyring_file_add_key, nvmf_subsystem_add_host --dhchap-key
#      [--dhchap-ctrlr-key]); unidirectional and bidirectional, and a wrong host
#      key and a wrong controller key refused. Key files (mode 0600) from
#      `nvme gen-dhchap-key`, or written by Python in the same DHHC-1 form;
#      bdevperf -w verify across a key change (nvmf_subsystem_set_keys on lull,
#      SPDK's bdev_nvme_set_keys on bdevperf's RPC socket);
#      keys changed while connected: nvmf_subsystem_set_keys on nvmf_tgt, then
#      bdev_nvme_set_keys on lull's daemon (every queue re-authenticates, no
#      reset), and old keys refused with -EACCES.
#   7. tests/interop/spdk-tls.sh: NVMe/TCP TLS 1.3 with PSKs both ways (bdevperf
#      with "psk" against `lull target --secure-channel`, `lull perf --psk`
#      against nvmf_tgt --secure-channel), a wrong PSK refused, tshark's view.
#
# The SPDK build comes from the peer script (cached under /var/cache/spdk-peer,
# built on first use, about 4 minutes on 2 cores). Ports LULL_PORT..+3 (4460)
# and SPDK_PORT (4560) on 127.0.0.1, private RPC sockets, everything stopped on exit.
#
# Usage: tests/interop/spdk.sh [spdk-peer path]     (after cargo build --release)
# Environment: LULL (default target/release/lull), SPDK_PEER (default
# ../shared/spdk-peer/spdk-peer), QUICK=1 (fewer modes and periods), KEEP=1 (keep the logs).
# Prints one PASS/FAIL line per check and a closing 'N passed, N failed' line;
# exits non-zero when any check failed. Without the peer it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

PEER=${1:-${SPDK_PEER:-../shared/spdk-peer/spdk-peer}}
LULL=${LULL:-target/release/lull}
LULL_NQN=nqn.2024-01.io.lull:spdk-interop
SPDK_NQN=nqn.2016-06.io.spdk:cnode1
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:0f7b3a52-6c1e-4b2d-9a8f-3e5d7c9b1a20
LULL_PORT=${LULL_PORT:-4460}
SPDK_PORT=${SPDK_PORT:-4560}

if [ ! -x "$PEER" ]; then
    echo "spdk-peer not found at $PEER: SPDK interop not run" >&2
    exit 0
fi
[ -x "$LULL" ] || { echo "$LULL not found (cargo build --release first)" >&2; exit 1; }

passed=0
failed=0
pass() { echo "PASS $*"; passed=$((passed + 1)); }
fail() { echo "FAIL $*"; failed=$((failed + 1)); }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-spdk-interop.XXXXXX")
LULL_SOCK=$WORK/lull.sock
SPDK_SOCK=$WORK/spdk.sock
LULL_PID=
SPDK_PID=

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
cleanup() {
    local rc=$?
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

# ---- the SPDK build -----------------------------------------------------------

echo "=== SPDK peer build (cached)"
"$PEER" build
eval "$("$PEER" env)"
# SPDK's programs need hugepages; `spdk-peer exec` (used to run spdk_nvme_perf with
# exactly SPDK's defaults) does not reserve them, `spdk-peer target` does.
if [ "$(cat /proc/sys/vm/nr_hugepages)" -lt 512 ]; then
    echo 1024 >/proc/sys/vm/nr_hugepages 2>/dev/null || true
fi
mkdir -p /dev/hugepages
mountpoint -q /dev/hugepages || mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages 2>/dev/null || true
RPC_PY=(python3 "$SPDK/scripts/rpc.py")

# `lull target` on core 0 with a RAM namespace, in mode $1. Waits for its RPC socket.
start_lull() {
    local mode=$1
    shift
    rm -f "$LULL_SOCK"
    "$LULL" target -r "$LULL_SOCK" --cores 0 --mode-policy "$mode" "$@" >"$WORK/lull-$mode.log" 2>&1 </dev/null &
    LULL_PID=$!
    local i
    for i in $(seq 1 100); do
        [ -S "$LULL_SOCK" ] && return 0
        kill -0 "$LULL_PID" 2>/dev/null || break
        sleep 0.1
    done
    fail "lull target ($mode) did not start"
    tail -n 20 "$WORK/lull-$mode.log"
    return 1
}
start_lull_ram() {
    start_lull "$1" --listen "127.0.0.1:$LULL_PORT" --ram-bdev Ram0:128MiB --subnqn "$LULL_NQN" --allow-any-host
}

# Runs a command with a time limit; output to $WORK/$1.log. Returns its status.
run_logged() {
    local name=$1 limit=$2
    shift 2
    local rc=0
    timeout --kill-after=5 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    # SPDK's programs redraw progress lines with carriage returns.
    sed -i 's/\r/\n/g' "$WORK/$name.log"
    return "$rc"
}

# The IOPS of spdk_nvme_perf's "Total" line in $1 (empty when absent).
perf_total_iops() { awk '/^Total/ {print $(NF-4); exit}' "$1"; }

# ---- 1 + 2: SPDK's initiators against lull's target ----------------------------

MODES="poll interrupt hybrid adaptive"
PERIODS="0 100 1000"
[ "${QUICK:-0}" = 1 ] && { MODES="poll interrupt"; PERIODS="0 1000"; }

bdevperf_config() {
    local period=$1 digest=$2
    cat <<EOF
{"subsystems": [{"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_set_options", "params": {"nvme_ioq_poll_period_us": $period}},
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Lull0", "trtype": "tcp", "adrfam": "ipv4",
    "traddr": "127.0.0.1", "trsvcid": "$LULL_PORT", "subnqn": "$LULL_NQN", "hostnqn": "$HOSTNQN",
    "hdgst": $digest, "ddgst": $digest}}
]}]}
EOF
}

for mode in $MODES; do
    echo "=== SPDK initiators against lull target, mode $mode"
    start_lull_ram "$mode" || continue
    trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$LULL_PORT subnqn:$LULL_NQN"
    name=nvme-perf-$mode
    if run_logged "$name" 60 "$PEER" exec spdk_nvme_perf -c 0x2 -q 32 -o 4096 -w randread -t 2 -r "$trid"; then
        iops=$(perf_total_iops "$WORK/$name.log")
        if [ -n "$iops" ] && awk -v x="$iops" 'BEGIN {exit !(x > 0)}'; then
            pass "spdk_nvme_perf (default options, empty HOSTNQN) randread QD 32 against lull ($mode): $iops IOPS"
        else
            fail "spdk_nvme_perf against lull ($mode): no Total line"
        fi
    else
        fail "spdk_nvme_perf against lull ($mode): exit status $?"
        tail -n 5 "$WORK/$name.log"
    fi
    for period in $PERIODS; do
        for digest in false true; do
            name=bdevperf-$mode-$period-$digest
            bdevperf_config "$period" "$digest" >"$WORK/$name.json"
            if run_logged "$name" 60 "$PEER" bdevperf -m 0x2 --json "$WORK/$name.json" -q 16 -o 4096 -w verify -t 2; then
                # bdevperf prints a Total line and exits 0 only when no I/O failed or miscompared.
                # Any *ERROR* line (a refused command, a failed shutdown) is a failure too.
                if grep -q '^ *Total' "$WORK/$name.log" && ! grep -qiE 'miscompare|I/O error|io failed|\*ERROR\*' "$WORK/$name.log"; then
                    pass "bdevperf -w verify against lull ($mode, nvme_ioq_poll_period_us $period, digests $digest): $(awk '/^ *Total/ {print $3; exit}' "$WORK/$name.log") IOPS"
                else
                    fail "bdevperf -w verify against lull ($mode, period $period, digests $digest): errors in its output"
                    grep -iE 'miscompare|error' "$WORK/$name.log" | head -n 5 || true
                fi
            else
                fail "bdevperf -w verify against lull ($mode, period $period, digests $digest): exit status $?"
                tail -n 8 "$WORK/$name.log"
            fi
        done
    done
    stop_lull
done

# ---- 3: lull's initiator against SPDK's nvmf_tgt ---------------------------------

for spdk_mode in poll interrupt; do
    echo "=== lull perf --verify against nvmf_tgt ($spdk_mode)"
    if [ "$spdk_mode" = poll ]; then
        targs=(--bdev malloc)
    else
        targs=(--interrupt --bdev aio)
    fi
    if ! SPDK_PID=$("$PEER" target --port "$SPDK_PORT" --core 0 --nqn "$SPDK_NQN" --size 128 \
        --rpc-socket "$SPDK_SOCK" --log "$WORK/nvmf_tgt-$spdk_mode.log" "${targs[@]}"); then
        fail "nvmf_tgt ($spdk_mode) did not start"
        continue
    fi
    for dg in "" "--hdgst --ddgst"; do
        name=lull-perf-$spdk_mode${dg:+-digests}
        # shellcheck disable=SC2086
        if run_logged "$name" 90 "$LULL" perf --target "127.0.0.1:$SPDK_PORT" --subnqn "$SPDK_NQN" --hostnqn "$HOSTNQN" \
            --cores 1 --rw randrw --bs 4k --qd 16 --time 3 --ramp 0 --verify --json $dg; then
            verdict=$(python3 - "$WORK/$name.log" <<'EOF'
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
)
            if [ "$verdict" = ok ]; then
                pass "lull perf --verify randrw against nvmf_tgt ($spdk_mode${dg:+, digests}): 0 errors, 0 mismatches"
            else
                fail "lull perf --verify against nvmf_tgt ($spdk_mode${dg:+, digests}): $verdict"
            fi
        else
            fail "lull perf --verify against nvmf_tgt ($spdk_mode${dg:+, digests}): exit status $?"
            tail -n 8 "$WORK/$name.log"
        fi
    done
    stop_spdk
done

# ---- 4: SPDK's rpc.py builds and tears down a subsystem on lull -------------------

echo "=== SPDK's rpc.py (v25.09) against an empty lull target"
R=("${RPC_PY[@]}" -s "$LULL_SOCK")
if start_lull interrupt; then
    NQN2=nqn.2016-06.io.spdk:cnode7
    if "${R[@]}" bdev_malloc_create -b Malloc7 64 512 >"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_create_transport -t TCP >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_create_subsystem "$NQN2" -a -s SPDK00000000000007 -m 8 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_ns "$NQN2" Malloc7 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_listener "$NQN2" -t tcp -a 127.0.0.1 -s $((LULL_PORT + 3)) >>"$WORK/rpc.log" 2>&1; then
        pass "rpc.py: bdev_malloc_create, nvmf_create_transport, nvmf_create_subsystem, nvmf_subsystem_add_ns, nvmf_subsystem_add_listener"
    else
        fail "rpc.py could not build the subsystem"
        tail -n 5 "$WORK/rpc.log"
    fi
    if "${R[@]}" nvmf_get_subsystems >"$WORK/subsystems.json" 2>>"$WORK/rpc.log" &&
        python3 - "$WORK/subsystems.json" "$NQN2" <<'EOF'
import json, sys
subs = {s["nqn"]: s for s in json.load(open(sys.argv[1]))}
s = subs[sys.argv[2]]
assert s["serial_number"] == "SPDK00000000000007", s
assert [n["bdev_name"] for n in s["namespaces"]] == ["Malloc7"], s
assert any(l["trsvcid"] == "4463" for l in s["listen_addresses"]), s
EOF
    then
        pass "rpc.py nvmf_get_subsystems shows the subsystem, its namespace and its listener"
    else
        fail "rpc.py nvmf_get_subsystems does not show what was built"
    fi
    trid="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$((LULL_PORT + 3)) subnqn:$NQN2"
    if run_logged nvme-perf-rpc 60 "$PEER" exec spdk_nvme_perf -c 0x2 -q 8 -o 512 -w randrw -M 50 -t 1 -r "$trid" &&
        [ -n "$(perf_total_iops "$WORK/nvme-perf-rpc.log")" ]; then
        pass "spdk_nvme_perf randrw 512 B against the subsystem rpc.py built"
    else
        fail "spdk_nvme_perf against the subsystem rpc.py built"
        tail -n 5 "$WORK/nvme-perf-rpc.log"
    fi
    if "${R[@]}" nvmf_subsystem_remove_listener "$NQN2" -t tcp -a 127.0.0.1 -s $((LULL_PORT + 3)) >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_remove_ns "$NQN2" 1 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_delete_subsystem "$NQN2" >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" bdev_malloc_delete Malloc7 >>"$WORK/rpc.log" 2>&1 &&
        "${R[@]}" nvmf_get_subsystems >"$WORK/subsystems2.json" 2>>"$WORK/rpc.log" &&
        ! grep -q "$NQN2" "$WORK/subsystems2.json" &&
        "${R[@]}" bdev_get_bdevs >"$WORK/bdevs2.json" 2>>"$WORK/rpc.log" &&
        ! grep -q Malloc7 "$WORK/bdevs2.json"; then
        pass "rpc.py: remove_listener, remove_ns, nvmf_delete_subsystem, bdev_malloc_delete leave nothing behind"
    else
        fail "rpc.py could not tear the subsystem down"
        tail -n 5 "$WORK/rpc.log"
    fi
    stop_lull
fi

# ---- 5: configurations both ways ------------------------------------------------

if [ ! -f tests/interop/spdk-config.sh ]; then
    fail "tests/interop/spdk-config.sh is missing"
else
    echo "=== save_config / load_config between lull and spdk_tgt (tests/interop/spdk-config.sh)"
    if SPDK_PEER=$PEER LULL=$LULL bash tests/interop/spdk-config.sh >"$WORK/spdk-config.log" 2>&1; then
        pass "tests/interop/spdk-config.sh: $(tail -n 1 "$WORK/spdk-config.log")"
    else
        fail "tests/interop/spdk-config.sh"
        tail -n 20 "$WORK/spdk-config.log"
    fi
fi

# ---- 6: DH-HMAC-CHAP both ways ---------------------------------------------------

# A DH-HMAC-CHAP secret in the interchange form (`DHHC-1:0H:base64(key || CRC-32 LE):`),
# mode 0600, at $1, for NQN $2, hash $3 (0 none, 1 SHA-256, 2 SHA-384, 3 SHA-512).
# nvme-cli writes it when it is installed; otherwise Python writes the same format.
gen_dhchap_key() {
    local file=$1 nqn=$2 hmac=$3
    (
        umask 077
        if command -v nvme >/dev/null 2>&1; then
            nvme gen-dhchap-key -n "$nqn" -m "$hmac" >"$file"
        else
            python3 - "$hmac" >"$file" <<'EOF'
import base64, os, sys, zlib
hmac = int(sys.argv[1])
key = os.urandom({0: 32, 1: 32, 2: 48, 3: 64}[hmac])
crc = zlib.crc32(key).to_bytes(4, "little")
print(f"DHHC-1:{hmac:02d}:{base64.b64encode(key + crc).decode()}:")
EOF
        fi
    )
    chmod 0600 "$file"
}

# "ok" when `lull perf --json` output in $1 shows verified I/O and no error, else why not.
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
AUTH_NQN=nqn.2024-01.io.lull:spdk-auth
gen_dhchap_key "$KEYS/host.key" "$HOSTNQN" 1
gen_dhchap_key "$KEYS/ctrl-lull.key" "$AUTH_NQN" 2
gen_dhchap_key "$KEYS/ctrl-spdk.key" "$SPDK_NQN" 3
gen_dhchap_key "$KEYS/wrong.key" "$HOSTNQN" 1

# bdevperf's JSON config: the keyring names the key files, the attach names the keys.
# $1 host key file, $2 controller key file (empty: unidirectional).
bdevperf_auth_config() {
    local ctrl_key=
    local ctrl_param=
    if [ -n "$2" ]; then
        ctrl_key=", {\"method\": \"keyring_file_add_key\", \"params\": {\"name\": \"ckey0\", \"path\": \"$2\"}}"
        ctrl_param=', "dhchap_ctrlr_key": "ckey0"'
    fi
    cat <<EOF
{"subsystems": [
 {"subsystem": "keyring", "config": [
  {"method": "keyring_file_add_key", "params": {"name": "key0", "path": "$1"}}$ctrl_key
 ]},
 {"subsystem": "bdev", "config": [
  {"method": "bdev_nvme_attach_controller", "params": {"name": "Auth0", "trtype": "tcp", "adrfam": "ipv4",
    "traddr": "127.0.0.1", "trsvcid": "$LULL_PORT", "subnqn": "$AUTH_NQN", "hostnqn": "$HOSTNQN",
    "dhchap_key": "key0"$ctrl_param}}
 ]}
]}
EOF
}

# bdevperf -w verify with the keys $2 [$3]; $1 names the check and its log.
bdevperf_auth() {
    local name=$1
    bdevperf_auth_config "$2" "${3:-}" >"$WORK/$name.json"
    run_logged "$name" 30 "$PEER" bdevperf -m 0x2 --json "$WORK/$name.json" -q 16 -o 4096 -w verify -t 2
}
bdevperf_ok() {
    grep -q '^ *Total' "$WORK/$1.log" && ! grep -qiE 'miscompare|I/O error|io failed|\*ERROR\*' "$WORK/$1.log"
}

echo "=== DH-HMAC-CHAP: bdevperf (keyring, dhchap_key) against lull target"
R=("${RPC_PY[@]}" -s "$LULL_SOCK")
if start_lull interrupt; then
    if "${R[@]}" bdev_malloc_create -b AuthMalloc 64 4096 >"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" nvmf_create_transport -t TCP >>"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" nvmf_create_subsystem "$AUTH_NQN" -s SPDK00000000000014 >>"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_ns "$AUTH_NQN" AuthMalloc >>"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_listener "$AUTH_NQN" -t tcp -a 127.0.0.1 -s "$LULL_PORT" >>"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" keyring_file_add_key key0 "$KEYS/host.key" >>"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" keyring_file_add_key ckey0 "$KEYS/ctrl-lull.key" >>"$WORK/rpc-auth.log" 2>&1 &&
        "${R[@]}" nvmf_subsystem_add_host "$AUTH_NQN" "$HOSTNQN" --dhchap-key key0 >>"$WORK/rpc-auth.log" 2>&1; then
        if bdevperf_auth bdevperf-auth-uni "$KEYS/host.key" && bdevperf_ok bdevperf-auth-uni; then
            pass "bdevperf -w verify against lull, DH-HMAC-CHAP unidirectional (keyring_file_add_key, dhchap_key): $(awk '/^ *Total/ {print $3; exit}' "$WORK/bdevperf-auth-uni.log") IOPS"
        else
            fail "bdevperf against lull, DH-HMAC-CHAP unidirectional"
            tail -n 8 "$WORK/bdevperf-auth-uni.log"
        fi
        if bdevperf_auth bdevperf-auth-wrong "$KEYS/wrong.key"; then
            fail "bdevperf with a wrong DH-HMAC-CHAP key was let in by lull"
        elif grep -q '^ *Total' "$WORK/bdevperf-auth-wrong.log"; then
            fail "bdevperf with a wrong DH-HMAC-CHAP key ran I/O against lull"
        elif ! grep -q 'received AUTH_failure1' "$WORK/bdevperf-auth-wrong.log"; then
            fail "bdevperf with a wrong DH-HMAC-CHAP key failed, but not with lull's AUTH_Failure1"
            tail -n 8 "$WORK/bdevperf-auth-wrong.log"
        else
            pass "bdevperf with a wrong DH-HMAC-CHAP key is refused by lull (attach fails)"
        fi
        if "${R[@]}" nvmf_subsystem_remove_host "$AUTH_NQN" "$HOSTNQN" >>"$WORK/rpc-auth.log" 2>&1 &&
            "${R[@]}" nvmf_subsystem_add_host "$AUTH_NQN" "$HOSTNQN" --dhchap-key key0 --dhchap-ctrlr-key ckey0 >>"$WORK/rpc-auth.log" 2>&1; then
            if bdevperf_auth bdevperf-auth-bi "$KEYS/host.key" "$KEYS/ctrl-lull.key" && bdevperf_ok bdevperf-auth-bi; then
                pass "bdevperf -w verify against lull, DH-HMAC-CHAP bidirectional (dhchap_key, dhchap_ctrlr_key): $(awk '/^ *Total/ {print $3; exit}' "$WORK/bdevperf-auth-bi.log") IOPS"
            else
                fail "bdevperf against lull, DH-HMAC-CHAP bidirectional"
                tail -n 8 "$WORK/bdevperf-auth-bi.log"
            fi
            # Keys changed while bdevperf -w verify runs: nvmf_subsystem_set_keys on lull,
            # then SPDK's bdev_nvme_set_keys re-authenticates every qpair on lull's live queues.
            gen_dhchap_key "$KEYS/host-new.key" "$HOSTNQN" 1
            bdevperf_auth_config "$KEYS/host.key" "$KEYS/ctrl-lull.key" |
                sed "/\"keyring\"/s|\"config\": \[|\"config\": [ {\"method\": \"keyring_file_add_key\", \"params\": {\"name\": \"key1\", \"path\": \"$KEYS/host-new.key\"}},|" \
                    >"$WORK/bdevperf-rekey.json"
            BP_SOCK=$WORK/bdevperf.sock
            run_logged bdevperf-rekey 40 "$PEER" bdevperf -m 0x2 -r "$BP_SOCK" --json "$WORK/bdevperf-rekey.json" \
                -q 16 -o 4096 -w verify -t 6 &
            BP=$!
            for _ in $(seq 1 50); do [ -S "$BP_SOCK" ] && break; sleep 0.1; done
            sleep 2
            rekey=ok
            "${R[@]}" keyring_file_add_key key1 "$KEYS/host-new.key" >>"$WORK/rpc-auth.log" 2>&1 &&
                "${R[@]}" nvmf_subsystem_set_keys "$AUTH_NQN" "$HOSTNQN" --dhchap-key key1 --dhchap-ctrlr-key ckey0 >>"$WORK/rpc-auth.log" 2>&1 &&
                "$PEER" rpc --rpc-socket "$BP_SOCK" bdev_nvme_set_keys Auth0 --dhchap-key key1 --dhchap-ctrlr-key ckey0 \
                    >"$WORK/bdevperf-rekey-rpc.log" 2>&1 || rekey=failed
            wait "$BP" || rekey=failed
            if [ "$rekey" = ok ] && bdevperf_ok bdevperf-rekey; then
                pass "bdevperf -w verify against lull across a key change (nvmf_subsystem_set_keys on lull, bdev_nvme_set_keys on bdevperf): every qpair re-authenticated, no error"
            else
                fail "bdevperf against lull across a key change"
                tail -n 8 "$WORK/bdevperf-rekey-rpc.log" "$WORK/bdevperf-rekey.log" 2>/dev/null || true
            fi
            "${R[@]}" nvmf_subsystem_set_keys "$AUTH_NQN" "$HOSTNQN" --dhchap-key key0 --dhchap-ctrlr-key ckey0 >>"$WORK/rpc-auth.log" 2>&1 || true
            # The host expects another controller key: it must refuse lull's proof.
            if bdevperf_auth bdevperf-auth-wrong-ctrl "$KEYS/host.key" "$KEYS/wrong.key"; then
                fail "bdevperf accepted lull's controller proof for a controller key lull does not hold"
            elif grep -q '^ *Total' "$WORK/bdevperf-auth-wrong-ctrl.log"; then
                fail "bdevperf with a wrong controller key ran I/O against lull"
            elif ! grep -q 'controller challenge mismatch' "$WORK/bdevperf-auth-wrong-ctrl.log"; then
                fail "bdevperf with a wrong controller key failed, but not on lull's controller response"
                tail -n 8 "$WORK/bdevperf-auth-wrong-ctrl.log"
            else
                pass "bdevperf with a wrong dhchap_ctrlr_key refuses lull's controller (attach fails)"
            fi
        else
            fail "rpc.py could not give the host a controller key on lull"
            tail -n 5 "$WORK/rpc-auth.log"
        fi
    else
        fail "rpc.py could not build the authenticated subsystem on lull"
        tail -n 5 "$WORK/rpc-auth.log"
    fi
    stop_lull
fi

echo "=== DH-HMAC-CHAP: lull perf --dhchap-key against nvmf_tgt"
# lull perf --verify with the keys $2 [$3]; $1 names the check and its log.
lull_perf_auth() {
    local name=$1 ctrl=()
    [ -n "${3:-}" ] && ctrl=(--dhchap-ctrlr-key "$3")
    run_logged "$name" 60 "$LULL" perf --target "127.0.0.1:$SPDK_PORT" --subnqn "$SPDK_NQN" --hostnqn "$HOSTNQN" \
        --cores 1 --rw randrw --bs 4k --qd 16 --time 2 --ramp 0 --verify --json --dhchap-key "$2" "${ctrl[@]}"
}
SR=("$PEER" rpc --rpc-socket "$SPDK_SOCK")
if SPDK_PID=$("$PEER" target --port "$SPDK_PORT" --core 0 --nqn "$SPDK_NQN" --size 128 \
    --rpc-socket "$SPDK_SOCK" --log "$WORK/nvmf_tgt-auth.log"); then
    if "${SR[@]}" keyring_file_add_key key0 "$KEYS/host.key" >"$WORK/spdk-rpc-auth.log" 2>&1 &&
        "${SR[@]}" keyring_file_add_key ckey0 "$KEYS/ctrl-spdk.key" >>"$WORK/spdk-rpc-auth.log" 2>&1 &&
        "${SR[@]}" nvmf_subsystem_allow_any_host -d "$SPDK_NQN" >>"$WORK/spdk-rpc-auth.log" 2>&1 &&
        "${SR[@]}" nvmf_subsystem_add_host "$SPDK_NQN" "$HOSTNQN" --dhchap-key key0 >>"$WORK/spdk-rpc-auth.log" 2>&1; then
        if lull_perf_auth lull-perf-auth-uni "$KEYS/host.key" &&
            verdict=$(perf_verdict "$WORK/lull-perf-auth-uni.log") && [ "$verdict" = ok ]; then
            pass "lull perf --verify --dhchap-key against nvmf_tgt, DH-HMAC-CHAP unidirectional: 0 errors, 0 mismatches"
        else
            fail "lull perf --dhchap-key against nvmf_tgt, unidirectional: ${verdict:-exit status $?}"
            tail -n 8 "$WORK/lull-perf-auth-uni.log"
        fi
        verdict=
        if lull_perf_auth lull-perf-auth-wrong "$KEYS/wrong.key"; then
            fail "lull perf with a wrong DH-HMAC-CHAP key was let in by nvmf_tgt"
        elif ! grep -q 'the controller refused authentication' "$WORK/lull-perf-auth-wrong.log"; then
            fail "lull perf with a wrong DH-HMAC-CHAP key failed, but not with nvmf_tgt's AUTH_Failure1"
            tail -n 8 "$WORK/lull-perf-auth-wrong.log"
        else
            pass "lull perf with a wrong DH-HMAC-CHAP key is refused by nvmf_tgt: $(grep -m1 -o 'DH-HMAC-CHAP authentication failed.*' "$WORK/lull-perf-auth-wrong.log")"
        fi
        if "${SR[@]}" nvmf_subsystem_remove_host "$SPDK_NQN" "$HOSTNQN" >>"$WORK/spdk-rpc-auth.log" 2>&1 &&
            "${SR[@]}" nvmf_subsystem_add_host "$SPDK_NQN" "$HOSTNQN" --dhchap-key key0 --dhchap-ctrlr-key ckey0 >>"$WORK/spdk-rpc-auth.log" 2>&1; then
            if lull_perf_auth lull-perf-auth-bi "$KEYS/host.key" "$KEYS/ctrl-spdk.key" &&
                verdict=$(perf_verdict "$WORK/lull-perf-auth-bi.log") && [ "$verdict" = ok ]; then
                pass "lull perf --verify --dhchap-key --dhchap-ctrlr-key against nvmf_tgt, DH-HMAC-CHAP bidirectional: 0 errors, 0 mismatches"
            else
                fail "lull perf --dhchap-key --dhchap-ctrlr-key against nvmf_tgt, bidirectional: ${verdict:-exit status $?}"
                tail -n 8 "$WORK/lull-perf-auth-bi.log"
            fi
            verdict=
            # lull expects another controller key: it must refuse SPDK's proof.
            if lull_perf_auth lull-perf-auth-wrong-ctrl "$KEYS/host.key" "$KEYS/wrong.key"; then
                fail "lull perf accepted nvmf_tgt's controller proof for a controller key nvmf_tgt does not hold"
            elif ! grep -q "the host refused the controller's message" "$WORK/lull-perf-auth-wrong-ctrl.log"; then
                fail "lull perf with a wrong --dhchap-ctrlr-key failed, but not on nvmf_tgt's controller response"
                tail -n 8 "$WORK/lull-perf-auth-wrong-ctrl.log"
            else
                pass "lull perf with a wrong --dhchap-ctrlr-key refuses nvmf_tgt's controller: $(grep -m1 -o 'DH-HMAC-CHAP authentication failed.*' "$WORK/lull-perf-auth-wrong-ctrl.log")"
            fi
            # Keys changed while connected: lull's daemon attached to nvmf_tgt,
            # nvmf_subsystem_set_keys there, then bdev_nvme_set_keys on lull: every queue
            # re-authenticates on its live connection (no reset); a set nvmf_tgt does not
            # hold is refused with -EACCES and that controller resets.
            gen_dhchap_key "$KEYS/host2.key" "$HOSTNQN" 1
            if start_lull interrupt; then
                R=("${RPC_PY[@]}" -s "$LULL_SOCK")
                if "${R[@]}" keyring_file_add_key key0 "$KEYS/host.key" >"$WORK/rpc-rekey.log" 2>&1 &&
                    "${R[@]}" keyring_file_add_key key1 "$KEYS/host2.key" >>"$WORK/rpc-rekey.log" 2>&1 &&
                    "${R[@]}" keyring_file_add_key ckey0 "$KEYS/ctrl-spdk.key" >>"$WORK/rpc-rekey.log" 2>&1 &&
                    "${SR[@]}" keyring_file_add_key key1 "$KEYS/host2.key" >>"$WORK/rpc-rekey.log" 2>&1 &&
                    "${R[@]}" bdev_nvme_attach_controller -b Spdk0 -t tcp -a 127.0.0.1 -s "$SPDK_PORT" -f ipv4 \
                        -n "$SPDK_NQN" -q "$HOSTNQN" --dhchap-key key0 --dhchap-ctrlr-key ckey0 >>"$WORK/rpc-rekey.log" 2>&1 &&
                    "${SR[@]}" nvmf_subsystem_set_keys "$SPDK_NQN" "$HOSTNQN" --dhchap-key key1 --dhchap-ctrlr-key ckey0 >>"$WORK/rpc-rekey.log" 2>&1 &&
                    "${R[@]}" bdev_nvme_set_keys Spdk0 --dhchap-key key1 --dhchap-ctrlr-key ckey0 >>"$WORK/rpc-rekey.log" 2>&1 &&
                    "${R[@]}" bdev_nvme_get_controllers -n Spdk0 >"$WORK/rekey-ctrlrs.json" 2>>"$WORK/rpc-rekey.log" &&
                    grep -q '"state": "enabled"' "$WORK/rekey-ctrlrs.json" && grep -q '"resets": 0' "$WORK/rekey-ctrlrs.json"; then
                    pass "bdev_nvme_set_keys on lull after nvmf_subsystem_set_keys on nvmf_tgt: every queue re-authenticated, no reset"
                else
                    fail "bdev_nvme_set_keys against nvmf_tgt after a key change"
                    tail -n 8 "$WORK/rpc-rekey.log"
                fi
                if "${R[@]}" bdev_nvme_set_keys Spdk0 --dhchap-key key0 --dhchap-ctrlr-key ckey0 >"$WORK/rpc-rekey-wrong.log" 2>&1; then
                    fail "bdev_nvme_set_keys with keys nvmf_tgt no longer holds succeeded"
                elif ! grep -q '"code": -13' "$WORK/rpc-rekey-wrong.log"; then
                    fail "bdev_nvme_set_keys with old keys failed, but not with -EACCES"
                    tail -n 8 "$WORK/rpc-rekey-wrong.log"
                else
                    pass "bdev_nvme_set_keys with keys nvmf_tgt does not hold: -EACCES, the controller resets"
                fi
                stop_lull
            fi
        else
            fail "rpc.py could not give the host a controller key on nvmf_tgt"
            tail -n 5 "$WORK/spdk-rpc-auth.log"
        fi
    else
        fail "rpc.py could not require DH-HMAC-CHAP on nvmf_tgt"
        tail -n 5 "$WORK/spdk-rpc-auth.log"
    fi
    stop_spdk
else
    fail "nvmf_tgt (auth) did not start"
fi

# ---- 7: TLS both ways -------------------------------------------------------------

echo "=== NVMe/TCP TLS 1.3 with PSKs both ways (tests/interop/spdk-tls.sh)"
if SPDK_PEER=$PEER LULL=$LULL bash tests/interop/spdk-tls.sh >"$WORK/spdk-tls.log" 2>&1; then
    pass "tests/interop/spdk-tls.sh: $(tail -n 1 "$WORK/spdk-tls.log")"
else
    fail "tests/interop/spdk-tls.sh"
    grep -E '^(PASS|FAIL)' "$WORK/spdk-tls.log" || tail -n 20 "$WORK/spdk-tls.log"
fi

echo "spdk-interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
