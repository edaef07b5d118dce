#!/usr/bin/env bash
# SPDK's own Python JSON-RPC client (`spdk-rpc`, PyPI package `spdk`) against
# `lull target`: builds a target over JSON-RPC exactly as one builds spdk_tgt,
# then checks it with lull's initiator, lull's CLI and the metrics endpoint.
#
#   1. installs SPDK's client from PyPI into target/spdk-venv (or, where
#      `python3 -m venv` is unavailable, into target/spdk-py with
#      `pip install --target`);
#   2. starts an empty `target/release/lull target` on CPUs 0,1 with metrics;
#   3. spdk-rpc: spdk_get_version, bdev_malloc_create, nvmf_create_transport,
#      nvmf_create_subsystem, nvmf_subsystem_add_ns, nvmf_subsystem_add_listener,
#      nvmf_get_subsystems, bdev_get_bdevs, framework_get_reactors,
#      rpc_get_methods, and an error (-19, ENODEV);
#   4. `lull perf --verify` over NVMe/TCP against it while `lull status`,
#      `lull mode set poll` and `lull set` run, and the metrics are scraped;
#      then a raid1 volume built as on spdk_tgt (bdev_raid_create -r raid1
#      -b "A B", bdev_raid_get_bdevs, bdev_get_bdevs), exported, and
#      `lull perf --verify` on it while a base is removed and another added
#      and rebuilt (bdev_raid_remove_base_bdev, _add_base_bdev,
#      _set_options), SPDK's error codes for a claimed base, the last base
#      and an exported volume, then torn down;
#   5. SIGTERM: exit status 0 and the socket removed.
#
# Usage: tests/rpc/spdk-client.sh          (after cargo build --release)
# Environment:
#   LULL=path            the binary (default target/release/lull)
#   SPDK_RPC="cmd ..."   use this client instead of installing one
#                        (e.g. "python3 /path/to/spdk/scripts/rpc.py")
#   SPDK_PIP_SPEC=spec   what pip installs (default "spdk>=25.5,<27")
#   SPDK_CLIENT=venv|target   force one install method (default: venv, else target)
# Prints one PASS/FAIL line per check; exits non-zero when any check failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

LULL=${LULL:-target/release/lull}
SPDK_PIP_SPEC=${SPDK_PIP_SPEC:-spdk>=25.5,<27}
SPDK_CLIENT=${SPDK_CLIENT:-auto}
NQN=nqn.2016-06.io.spdk:cnode1
SERIAL=SPDK00000000000001

fails=0
pass() { echo "PASS $*"; }
fail() {
    echo "FAIL $*"
    fails=$((fails + 1))
}
die() {
    fail "$*"
    exit 1
}

[ -x "$LULL" ] || die "setup: $LULL not found (run cargo build --release first)"
command -v python3 >/dev/null 2>&1 || die "setup: python3 not found (SPDK's client is Python)"
command -v curl >/dev/null 2>&1 || die "setup: curl not found"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-spdk-rpc.XXXXXX")
SOCK=$WORK/lull.sock
DAEMON_PID=
PERF_PID=

cleanup() {
    local rc=$?
    for p in $PERF_PID $DAEMON_PID; do
        if kill -0 "$p" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    if [ "$rc" -ne 0 ] || [ "$fails" -ne 0 ]; then
        for f in daemon.log perf.log; do
            if [ -s "$WORK/$f" ]; then
                echo "--- last lines of $f"
                tail -n 30 "$WORK/$f"
            fi
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. SPDK's Python client --------------------------------------------------

RPC=()
venv_install() {
    local venv=target/spdk-venv
    if [ -x "$venv/bin/spdk-rpc" ] && "$venv/bin/python" -c 'import spdk.spdk_rpc' 2>/dev/null; then
        RPC=("$ROOT/$venv/bin/spdk-rpc")
        return 0
    fi
    rm -rf "$venv"
    # Debian's python3 lacks ensurepip unless python3-venv is installed: then
    # this fails (or leaves a venv without pip).
    if ! timeout 120 python3 -m venv "$venv" >"$WORK/venv.log" 2>&1 || [ ! -x "$venv/bin/pip" ]; then
        rm -rf "$venv"
        return 1
    fi
    if ! timeout 600 "$venv/bin/pip" install -q "$SPDK_PIP_SPEC" >"$WORK/pip.log" 2>&1; then
        cat "$WORK/pip.log" >&2
        rm -rf "$venv"
        return 1
    fi
    RPC=("$ROOT/$venv/bin/spdk-rpc")
}
target_install() {
    # No venv: pip's --target needs no ensurepip and is allowed on an
    # externally managed (PEP 668) system Python. The package has no
    # run-time dependencies; its entry point is the module spdk.spdk_rpc.
    local dir=target/spdk-py
    # (Installed there already? A copy in the system's site-packages does not count.)
    if ! PYTHONPATH=$ROOT/$dir python3 -c 'import os, sys, spdk.spdk_rpc as m
sys.exit(not os.path.realpath(m.__file__).startswith(os.path.realpath(sys.argv[1]) + "/"))' "$ROOT/$dir" 2>/dev/null; then
        python3 -m pip --version >/dev/null 2>&1 || return 1
        rm -rf "$dir"
        if ! timeout 600 python3 -m pip install -q --disable-pip-version-check --target "$dir" "$SPDK_PIP_SPEC" \
            >"$WORK/pip.log" 2>&1; then
            cat "$WORK/pip.log" >&2
            return 1
        fi
    fi
    RPC=(env "PYTHONPATH=$ROOT/$dir" python3 -m spdk.spdk_rpc)
}
apt_python() {
    # Last resort on a bare Debian/Ubuntu machine run as root.
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || return 1
    echo "installing python3-venv and python3-pip with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q python3-venv python3-pip >/dev/null 2>&1 ||
        { timeout 600 apt-get update -q >/dev/null 2>&1 &&
            timeout 600 apt-get install -y -q python3-venv python3-pip >/dev/null 2>&1; }
}

if [ -n "${SPDK_RPC:-}" ]; then
    read -r -a RPC <<<"$SPDK_RPC"
    how="SPDK_RPC ($SPDK_RPC)"
else
    case $SPDK_CLIENT in
    venv) venv_install && how="venv target/spdk-venv" ;;
    target) target_install && how="pip --target target/spdk-py" ;;
    *)
        if venv_install; then
            how="venv target/spdk-venv"
        elif target_install; then
            how="pip --target target/spdk-py"
        elif apt_python && venv_install; then
            how="venv target/spdk-venv (after apt-get install python3-venv)"
        fi
        ;;
    esac
fi
if [ "${#RPC[@]}" -eq 0 ]; then
    [ -s "$WORK/venv.log" ] && cat "$WORK/venv.log" >&2
    die "setup: cannot install SPDK's Python client ($SPDK_PIP_SPEC) from PyPI: need python3 -m venv (Debian: apt-get install python3-venv) or python3 -m pip, and PyPI reachable; or set SPDK_RPC"
fi
ver=$("${RPC[@]}" --help 2>/dev/null | head -1 || true)
case $ver in
*usage:*) pass "SPDK's Python client ready: $how" ;;
*) die "setup: the SPDK client ($how) does not run: ${RPC[*]} --help" ;;
esac
if [ -z "${SPDK_RPC:-}" ]; then
    pyver=$(
        if [ "${RPC[0]}" = env ]; then
            python3 -c 'import sys, importlib.metadata as m
print(next(m.distributions(name="spdk", path=[sys.argv[1]])).version)' "$ROOT/target/spdk-py" 2>/dev/null
        else
            "$(dirname "${RPC[0]}")/python" -c 'import importlib.metadata as m; print(m.version("spdk"))' 2>/dev/null
        fi || echo "?"
    )
    echo "     spdk $pyver from PyPI, $(python3 --version 2>&1)"
fi

rpc() { timeout 60 "${RPC[@]}" -s "$SOCK" -t 30 "$@"; }

# ---- 2. the daemon, empty ---------------------------------------------------

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
PORT=$(free_port)
MPORT=$(free_port)
while [ "$MPORT" = "$PORT" ]; do MPORT=$(free_port); done

NO_COLOR=1 "$LULL" target --rpc-socket "$SOCK" --cores 0,1 --metrics "127.0.0.1:$MPORT" >"$WORK/daemon.log" 2>&1 &
DAEMON_PID=$!
for _ in $(seq 100); do
    [ -S "$SOCK" ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -S "$SOCK" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
    pass "lull target started empty (pid $DAEMON_PID, socket $SOCK, metrics 127.0.0.1:$MPORT)"
else
    die "lull target did not start (no socket $SOCK after 10 s)"
fi

# ---- 3. SPDK's client builds the target -------------------------------------

# step NAME EXPECT-IN-OUTPUT -- spdk-rpc arguments...: the call must succeed
# and its output contain EXPECT (empty: anything).
step() {
    local name=$1 want=$2
    shift 3
    local out
    if out=$(rpc "$@" 2>&1); then
        if [ -z "$want" ] || grep -qF -- "$want" <<<"$out"; then
            pass "spdk-rpc $name"
            LAST=$out
            return 0
        fi
        fail "spdk-rpc $name: output lacks \`$want\`: $(head -c 400 <<<"$out")"
    else
        fail "spdk-rpc $name: failed: $(tail -c 400 <<<"$out")"
    fi
    LAST=
    return 1
}
LAST=

step spdk_get_version '"version"' -- spdk_get_version || true
step "bdev_malloc_create -b Malloc0 64 512" Malloc0 -- bdev_malloc_create -b Malloc0 64 512 || true
step "nvmf_create_transport -t TCP -c 8192" '' -- nvmf_create_transport -t TCP -c 8192 || true
step "nvmf_create_subsystem $NQN -a -s $SERIAL" '' -- \
    nvmf_create_subsystem "$NQN" -a -s "$SERIAL" -d "lull spdk-client test" || true
step "nvmf_subsystem_add_ns $NQN Malloc0" '' -- nvmf_subsystem_add_ns "$NQN" Malloc0 || true
step "nvmf_subsystem_add_listener $NQN -t tcp -a 127.0.0.1 -s $PORT" '' -- \
    nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s "$PORT" || true

if step nvmf_get_subsystems "$NQN" -- nvmf_get_subsystems; then
    if why=$(python3 -c '
import json, sys
nqn, port, serial = sys.argv[1:4]
subs = json.loads(sys.stdin.read())
s = [x for x in subs if x.get("nqn") == nqn]
assert s, "subsystem %s missing" % nqn
s = s[0]
assert s.get("subtype") == "NVMe", s.get("subtype")
assert s.get("serial_number") == serial, s.get("serial_number")
assert s.get("allow_any_host") is True, "allow_any_host %r" % s.get("allow_any_host")
ns = s.get("namespaces", [])
assert any(n.get("nsid") == 1 and n.get("bdev_name") == "Malloc0" for n in ns), "namespaces %r" % ns
ls = s.get("listen_addresses", [])
assert any(a.get("trtype", "").upper() == "TCP" and a.get("traddr") == "127.0.0.1"
           and str(a.get("trsvcid")) == port for a in ls), "listen_addresses %r" % ls
assert any(x.get("subtype") == "Discovery" for x in subs), "no discovery subsystem"
' "$NQN" "$PORT" "$SERIAL" <<<"$LAST" 2>&1); then
        pass "nvmf_get_subsystems: $NQN has namespace 1 = Malloc0 and listener TCP 127.0.0.1:$PORT"
    else
        fail "nvmf_get_subsystems content: $(tail -n 1 <<<"$why")"
    fi
fi

if step bdev_get_bdevs Malloc0 -- bdev_get_bdevs; then
    if why=$(python3 -c '
import json, sys
b = [x for x in json.loads(sys.stdin.read()) if x.get("name") == "Malloc0"]
assert b, "Malloc0 missing"
b = b[0]
assert b.get("block_size") == 512 and b.get("num_blocks") == 131072, (b.get("block_size"), b.get("num_blocks"))
assert b.get("claimed") is True, "claimed %r" % b.get("claimed")
' <<<"$LAST" 2>&1); then
        pass "bdev_get_bdevs: Malloc0 is 131072 x 512 B (64 MiB), claimed by the subsystem"
    else
        fail "bdev_get_bdevs content: $(tail -n 1 <<<"$why")"
    fi
fi

if step framework_get_reactors '"reactors"' -- framework_get_reactors; then
    if why=$(python3 -c '
import json, sys
r = json.loads(sys.stdin.read())["reactors"]
cores = sorted(x["lcore"] for x in r)
assert cores == [0, 1], cores
' <<<"$LAST" 2>&1); then
        pass "framework_get_reactors: reactors on lcores 0 and 1"
    else
        fail "framework_get_reactors content: $(tail -n 1 <<<"$why")"
    fi
fi

if step rpc_get_methods nvmf_create_subsystem -- rpc_get_methods; then
    missing=
    for m in bdev_malloc_create nvmf_create_transport nvmf_subsystem_add_ns nvmf_subsystem_add_listener \
        nvmf_get_subsystems bdev_get_bdevs framework_get_reactors lull_get_status lull_set_options; do
        grep -qF "\"$m\"" <<<"$LAST" || missing+=" $m"
    done
    if [ -z "$missing" ]; then
        pass "rpc_get_methods lists SPDK's methods used here and lull's own"
    else
        fail "rpc_get_methods lacks:$missing"
    fi
fi

# An error must come back as SPDK's: -ENODEV for a bdev that does not exist.
if out=$(rpc bdev_malloc_delete nope 2>&1); then
    fail "spdk-rpc bdev_malloc_delete nope succeeded; expected error -19"
elif grep -qE '"code": -19\b' <<<"$out"; then
    pass "spdk-rpc bdev_malloc_delete nope: fails with code -19 (No such device)"
else
    fail "spdk-rpc bdev_malloc_delete nope: no code -19 in: $(tail -c 300 <<<"$out")"
fi

# ---- 4. lull's initiator against it, with the CLI at work -------------------

timeout 60 "$LULL" perf --target "127.0.0.1:$PORT" --subnqn "$NQN" --rw randrw --qd 16 --time 3 --verify --no-progress \
    >"$WORK/perf.log" 2>&1 &
PERF_PID=$!
# Wait for the association (lull perf prints its first line once connected),
# then the 1 s ramp, so that the status window sees I/O.
for _ in $(seq 100); do
    grep -q '^lull perf: .* on 127' "$WORK/perf.log" 2>/dev/null && break
    kill -0 "$PERF_PID" 2>/dev/null || break
    sleep 0.1
done
sleep 1

status=$(timeout 20 "$LULL" status -r "$SOCK" 2>&1) || true
# Rows: core mode policy busy% cpu% wakeups/s connections IOPS MiB/s
# Columns by their header names (lull status adds columns as policies grow).
if awk '$1 == "core" { for (i = 1; i <= NF; i++) if ($i == "IOPS") c = i } c && $1 ~ /^[0-9]+$/ && $c + 0 > 0 { found = 1 } END { exit !found }' <<<"$status"; then
    pass "lull status during I/O: $(awk '$1 == "core" { for (i = 1; i <= NF; i++) if ($i == "IOPS") c = i } c && $1 ~ /^[0-9]+$/ && $c + 0 > 0 { printf "core %s %s IOPS ", $1, $c }' <<<"$status")"
else
    fail "lull status during I/O shows no core with IOPS > 0: $status"
fi

if out=$(timeout 20 "$LULL" mode set poll -r "$SOCK" 2>&1) &&
    timeout 20 "$LULL" mode get -r "$SOCK" 2>&1 | grep -q '"mode_policy": "poll"'; then
    pass "lull mode set poll (during I/O): mode_policy is poll"
else
    fail "lull mode set poll: $out"
fi

if out=$(timeout 20 "$LULL" set nvme_ioq_poll_period_us 250 -r "$SOCK" 2>&1) &&
    [ "$(timeout 20 "$LULL" get nvme_ioq_poll_period_us -r "$SOCK" 2>&1)" = 250 ]; then
    pass "lull set nvme_ioq_poll_period_us 250: lull get reads 250"
else
    fail "lull set nvme_ioq_poll_period_us 250: $out"
fi

# The metrics: lull_reactor_mode, and both cores in poll mode by now.
metrics_ok=
for _ in $(seq 30); do
    m=$(curl -fsS --max-time 5 "http://127.0.0.1:$MPORT/metrics" 2>&1 || true)
    if grep -q '^lull_reactor_mode{' <<<"$m" &&
        grep -Eq '^lull_reactor_mode\{core="0",mode="poll"\} 1$' <<<"$m" &&
        grep -Eq '^lull_reactor_mode\{core="1",mode="poll"\} 1$' <<<"$m"; then
        metrics_ok=1
        break
    fi
    sleep 0.1
done
if [ -n "$metrics_ok" ]; then
    pass "metrics: lull_reactor_mode present, cores 0 and 1 in poll mode"
else
    fail "metrics at http://127.0.0.1:$MPORT/metrics: no lull_reactor_mode with both cores in poll: $(grep lull_reactor_mode <<<"$m" | head -8 | tr '\n' ' ')"
fi

perf_rc=0
wait "$PERF_PID" || perf_rc=$?
PERF_PID=
perf_out=$(cat "$WORK/perf.log")
# The table is right-aligned in fixed-width columns (some headings and the
# workload label have spaces): read the row's last word ending where the
# header's "errors" ends.
errors=$(awk '/^workload/ { end = index($0, " errors") + length(" errors") - 1; getline
    n = split(substr($0, 1, end), w, " "); print w[n]; exit }' <<<"$perf_out")
verify_line=$(grep -E '^lull perf: verify: [0-9]+ reads checked block by block, [0-9]+ mismatches' <<<"$perf_out" || true)
checked=$(sed -nE 's/^lull perf: verify: ([0-9]+) reads checked.*/\1/p' <<<"$verify_line")
mismatches=$(sed -nE 's/.* ([0-9]+) mismatches.*/\1/p' <<<"$verify_line")
if [ "$perf_rc" -eq 0 ] && [ "$errors" = 0 ] && [ "$mismatches" = 0 ] && [ "${checked:-0}" -gt 0 ]; then
    pass "lull perf --verify randrw 4k QD 16, 3 s over NVMe/TCP: 0 errors, $checked reads verified, 0 mismatches ($(awk '/^workload/ { getline; print $4 " IOPS"; exit }' <<<"$perf_out"))"
else
    fail "lull perf: exit $perf_rc, errors '${errors:-?}', mismatches '${mismatches:-?}', reads checked '${checked:-?}'"
    echo "$perf_out" | tail -n 8
fi

# ---- 4b. a raid1 volume, built and inspected by SPDK's client, degraded and
# rebuilt under lull perf --verify ----------------------------------------------

RNQN=$NQN-raid
# raid_check CATEGORY PYTHON-ASSERTIONS: bdev_raid_get_bdevs CATEGORY, the
# assertions run with `r` = the volume Raid0 (None when absent) and `v` = all.
raid_check() {
    local what=$1 cat=$2 code=$3 out
    if ! out=$(rpc bdev_raid_get_bdevs "$cat" 2>&1); then
        fail "spdk-rpc bdev_raid_get_bdevs $cat: $(tail -c 300 <<<"$out")"
        return 1
    fi
    if why=$(python3 -c '
import json, sys
v = json.loads(sys.stdin.read())
r = ([x for x in v if x.get("name") == "Raid0"] or [None])[0]
'"$code" <<<"$out" 2>&1); then
        pass "bdev_raid_get_bdevs $cat: $what"
    else
        fail "bdev_raid_get_bdevs $cat: $what: $(tail -n 1 <<<"$why")"
        return 1
    fi
}

for b in Malloc1 Malloc2 Malloc3; do
    step "bdev_malloc_create -b $b 64 512" "$b" -- bdev_malloc_create -b "$b" 64 512 || true
done
step "bdev_raid_set_options -w 512" '' -- bdev_raid_set_options -w 512 || true
step 'bdev_raid_create -n Raid0 -r raid1 -b "Malloc1 Malloc2"' '' -- \
    bdev_raid_create -n Raid0 -r raid1 -b "Malloc1 Malloc2" || true
raid_check "Raid0 online, raid1, both bases configured and operational" all '
assert r, "Raid0 missing"
assert (r["state"], r["raid_level"], r["strip_size_kb"], r["superblock"]) == ("online", "raid1", 0, False), r
assert (r["num_base_bdevs"], r["num_base_bdevs_discovered"], r["num_base_bdevs_operational"]) == (2, 2, 2), r
assert [b["name"] for b in r["base_bdevs_list"]] == ["Malloc1", "Malloc2"], r["base_bdevs_list"]
assert all(b["is_configured"] and b["data_offset"] == 0 and b["data_size"] == 131072 for b in r["base_bdevs_list"]), r
assert "process" not in r, r["process"]
' || true
raid_check "nothing offline" offline 'assert v == [], v' || true
if step "bdev_get_bdevs -b Raid0" Raid0 -- bdev_get_bdevs -b Raid0; then
    if why=$(python3 -c '
import json, sys
b = json.loads(sys.stdin.read())[0]
assert b["product_name"] == "Raid Volume", b["product_name"]
assert (b["block_size"], b["num_blocks"]) == (512, 131072), (b["block_size"], b["num_blocks"])
assert b["driver_specific"]["raid"]["num_base_bdevs_operational"] == 2, b["driver_specific"]
' <<<"$LAST" 2>&1); then
        pass "bdev_get_bdevs: Raid0 is a Raid Volume of 131072 x 512 B with driver_specific.raid"
    else
        fail "bdev_get_bdevs Raid0 content: $(tail -n 1 <<<"$why")"
    fi
fi
if out=$(rpc bdev_raid_create -n Raid1 -r raid1 -b "Malloc1 Malloc3" 2>&1); then
    fail "bdev_raid_create over Malloc1 (Raid0's) succeeded"
elif grep -qE '"code": -1\b' <<<"$out"; then
    pass "bdev_raid_create over a claimed base: fails with code -1 (EPERM), as spdk_tgt"
else
    fail "bdev_raid_create over a claimed base: no code -1 in: $(tail -c 300 <<<"$out")"
fi
step "nvmf_create_subsystem $RNQN -a" '' -- nvmf_create_subsystem "$RNQN" -a -s SPDK00000000000002 || true
step "nvmf_subsystem_add_ns $RNQN Raid0" '' -- nvmf_subsystem_add_ns "$RNQN" Raid0 || true
step "nvmf_subsystem_add_listener $RNQN" '' -- nvmf_subsystem_add_listener "$RNQN" -t tcp -a 127.0.0.1 -s "$PORT" || true

# I/O with verification on the volume while a base goes and another is rebuilt.
timeout 90 "$LULL" perf --target "127.0.0.1:$PORT" --subnqn "$RNQN" --rw randrw --qd 16 --time 6 --verify --no-progress \
    >"$WORK/perf-raid.log" 2>&1 &
PERF_PID=$!
for _ in $(seq 100); do
    grep -q '^lull perf: .* on 127' "$WORK/perf-raid.log" 2>/dev/null && break
    kill -0 "$PERF_PID" 2>/dev/null || break
    sleep 0.1
done
sleep 1
step "bdev_raid_remove_base_bdev Malloc2 (during I/O)" '' -- bdev_raid_remove_base_bdev Malloc2 || true
raid_check "degraded: Malloc2's slot empty, 1 operational" all '
assert r["state"] == "online" and r["num_base_bdevs"] == 2 and r["num_base_bdevs_operational"] == 1, r
assert [b["name"] for b in r["base_bdevs_list"]] == ["Malloc1", None], r["base_bdevs_list"]
' || true
if out=$(rpc bdev_raid_remove_base_bdev Malloc1 2>&1); then
    fail "removing Raid0's last operational base succeeded"
elif grep -qE '"code": -16\b' <<<"$out"; then
    pass "removing the last operational base: fails with code -16 (EBUSY)"
else
    fail "removing the last operational base: no code -16 in: $(tail -c 300 <<<"$out")"
fi
step "bdev_raid_set_options -b 64 (a rebuild limited to 64 MiB/s)" '' -- bdev_raid_set_options -b 64 || true
step "bdev_raid_add_base_bdev Raid0 Malloc3 (during I/O)" '' -- bdev_raid_add_base_bdev Raid0 Malloc3 || true
raid_check "a rebuild of Malloc3 runs, or is done" all '
p = r.get("process")
assert p is None or (p["type"] == "rebuild" and p["target"] == "Malloc3" and 0 <= p["progress"]["percent"] <= 100), p
assert [b["name"] for b in r["base_bdevs_list"]] == ["Malloc1", "Malloc3"], r["base_bdevs_list"]
' || true
status=$(timeout 20 "$LULL" status -r "$SOCK" --interval-ms 200 2>&1) || true
if grep -qE '^raid Raid0: online, [12] of 2 base bdevs operational' <<<"$status"; then
    pass "lull status shows Raid0: $(grep '^raid Raid0' <<<"$status")"
else
    fail "lull status lacks Raid0's line: $status"
fi
step "bdev_raid_set_options -b 0 (unlimited)" '' -- bdev_raid_set_options -b 0 || true
done_rebuild=
for _ in $(seq 300); do
    out=$(rpc bdev_raid_get_bdevs all 2>&1) || break
    if python3 -c '
import json, sys
r = [x for x in json.loads(sys.stdin.read()) if x["name"] == "Raid0"][0]
sys.exit(0 if "process" not in r and r["num_base_bdevs_operational"] == 2 else 1)' <<<"$out"; then
        done_rebuild=1
        break
    fi
    sleep 0.1
done
if [ -n "$done_rebuild" ]; then
    pass "the rebuild of Malloc3 finished: 2 of 2 operational"
else
    fail "the rebuild of Malloc3 did not finish within 30 s: $(tail -c 400 <<<"$out")"
fi
# lull's own words for the same volume.
if out=$(timeout 20 "$LULL" raid list -r "$SOCK" 2>&1) &&
    grep -qE '^Raid0 +online +2/2 operational, 2 discovered \[Malloc1 Malloc3\]$' <<<"$out"; then
    pass "lull raid list: $out"
else
    fail "lull raid list: $out"
fi
if out=$(timeout 20 "$LULL" raid set-options --process-window-size-kb 2048 -r "$SOCK" 2>&1) &&
    [ "$(timeout 20 "$LULL" get process_window_size_kb -r "$SOCK" 2>&1)" = 2048 ]; then
    pass "lull raid set-options --process-window-size-kb 2048: lull get reads 2048"
else
    fail "lull raid set-options: $out"
fi
perf_rc=0
wait "$PERF_PID" || perf_rc=$?
PERF_PID=
perf_out=$(cat "$WORK/perf-raid.log")
errors=$(awk '/^workload/ { end = index($0, " errors") + length(" errors") - 1; getline
    n = split(substr($0, 1, end), w, " "); print w[n]; exit }' <<<"$perf_out")
mismatches=$(sed -nE 's/^lull perf: verify: [0-9]+ reads checked.* ([0-9]+) mismatches.*/\1/p' <<<"$perf_out")
if [ "$perf_rc" -eq 0 ] && [ "$errors" = 0 ] && [ "$mismatches" = 0 ]; then
    pass "lull perf --verify on Raid0 through a base removal and a rebuild: 0 errors, 0 mismatches"
else
    fail "lull perf on Raid0: exit $perf_rc, errors '${errors:-?}', mismatches '${mismatches:-?}'"
    echo "$perf_out" | tail -n 8
fi
if out=$(rpc bdev_raid_delete Raid0 2>&1); then
    fail "bdev_raid_delete of an exported Raid0 succeeded"
elif grep -qE '"code": -16\b' <<<"$out"; then
    pass "bdev_raid_delete of an exported volume: fails with code -16 (EBUSY)"
else
    fail "bdev_raid_delete of an exported volume: no code -16 in: $(tail -c 300 <<<"$out")"
fi
step "nvmf_delete_subsystem $RNQN" '' -- nvmf_delete_subsystem "$RNQN" || true
step "bdev_raid_delete Raid0" '' -- bdev_raid_delete Raid0 || true
raid_check "no volume left" all 'assert v == [], v' || true

# ---- 5. graceful stop ---------------------------------------------------------

kill -TERM "$DAEMON_PID"
stopped=
for _ in $(seq 300); do # the drain waits up to 10 s for running I/O
    if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
        stopped=1
        break
    fi
    sleep 0.1
done
if [ -z "$stopped" ]; then
    fail "lull target still running 30 s after SIGTERM"
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
fi
daemon_rc=0
wait "$DAEMON_PID" || daemon_rc=$?
DAEMON_PID=
if [ -n "$stopped" ] && [ "$daemon_rc" -eq 0 ]; then
    pass "SIGTERM: lull target exited with status 0"
else
    fail "SIGTERM: lull target exit status $daemon_rc"
fi
if [ -e "$SOCK" ]; then
    fail "the JSON-RPC socket $SOCK is still there after the stop"
else
    pass "the JSON-RPC socket was removed"
fi
if grep -q 'lull target: stopped' "$WORK/daemon.log"; then
    pass "the daemon logged its clean stop"
else
    fail "no 'lull target: stopped' in the daemon's log"
fi

if [ "$fails" -eq 0 ]; then
    echo "PASS tests/rpc/spdk-client.sh: all checks passed"
else
    echo "FAIL tests/rpc/spdk-client.sh: $fails check(s) failed"
    exit 1
fi
