#!/usr/bin/env bash
# SPDK JSON config interop: a config saved by lull loads into SPDK's spdk_tgt,
# and one saved by spdk_tgt loads into lull, with the same bdevs and subsystems.
#
#   1. an empty `lull target` is built over JSON-RPC (malloc and null bdevs
#      with UUIDs and block sizes, a controller attached to a second lull
#      target on loopback, two subsystems with serial, model,
#      max_namespaces, hosts, NSIDs and a listener, transport options, lull's
#      own settings); `lull config save` writes lull.json; the daemon stops;
#   2. spdk_tgt --json lull.json: SPDK's rpc.py shows the same bdevs and
#      subsystems (lull's own settings, under the root key lull_subsystems,
#      are ignored by SPDK's loader);
#   3. a fresh spdk_tgt and `rpc.py load_config -j lull.json`: the same;
#      `rpc.py save_config` writes spdk.json;
#   4. lull target --json-config spdk.json (SPDK-only entries skipped with a
#      warning each), a fresh lull target with `lull config load spdk.json`,
#      one with SPDK's `rpc.py load_config -j spdk.json`, and `lull target -c
#      spdk.json` (spdk_tgt's -c): the same bdevs and subsystems; lull target
#      --json-config lull.json also brings lull's own settings back.
#
# Checked with SPDK's rpc.py against both: attached controller (name, address,
# subsystem, host NQN); bdev name, size, block size, UUID;
# subsystem NQN, serial, model, allow_any_host, max_namespaces, hosts,
# namespaces (NSID, bdev, UUID, NGUID) and listeners.
#
# Usage: tests/interop/spdk-config.sh
# Environment:
#   LULL=path      lull binary (default target/debug/lull; built when missing)
#   SPDK=dir       built SPDK v25.09 tree (spdk_tgt in build/bin, scripts/rpc.py);
#                  or SPDK_PEER=script with an `env` command that prints
#                  `export SPDK=... LD_LIBRARY_PATH=...`
#   PORT=n         NVMe/TCP ports PORT and PORT+1 on 127.0.0.1 (default 45931)
#   SPDK_MEM_MB=n  spdk_tgt memory, MB, from ordinary pages (--no-huge; default 1024)
# Loopback only; private RPC sockets in a temp dir; each daemon is stopped
# before the next starts; the whole run is bounded (TIME_LIMIT, default 300 s).
# Prints one PASS/FAIL line per check; exits non-zero when any check failed.
set -euo pipefail
if [ -z "${LULL_CFG_INNER:-}" ]; then
    export LULL_CFG_INNER=1
    exec timeout --signal=TERM --kill-after=10 "${TIME_LIMIT:-300}" "$0" "$@"
fi
cd "$(dirname "$0")/../.."

LULL=${LULL:-target/debug/lull}
PORT=${PORT:-45931}
SPDK_MEM_MB=${SPDK_MEM_MB:-1024}
NQN1=nqn.2016-06.io.lull:cfg-interop1
NQN2=nqn.2016-06.io.lull:cfg-interop2
NQNR=nqn.2016-06.io.lull:cfg-interop-remote
HOST1=nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-00000000cf01
UUID0=6f2c1d4e-1b2a-4c3d-8e4f-5a6b7c8d9e01
UUID1=6f2c1d4e-1b2a-4c3d-8e4f-5a6b7c8d9e02

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

if [ -z "${SPDK:-}" ]; then
    peer=${SPDK_PEER:-$(command -v spdk-peer || true)}
    [ -n "$peer" ] || die "setup: set SPDK=<built SPDK v25.09 tree> or SPDK_PEER=<runner with an env command>"
    eval "$("$peer" env)"
fi
export LD_LIBRARY_PATH=$SPDK/build/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
SPDK_TGT=$SPDK/build/bin/spdk_tgt
[ -x "$SPDK_TGT" ] || die "setup: $SPDK_TGT not found (build SPDK first)"
command -v python3 >/dev/null || die "setup: python3 not found"
if [ ! -x "$LULL" ]; then cargo build -q -p lull || die "setup: cargo build -p lull failed"; fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-spdk-config.XXXXXX")
SOCK=$WORK/rpc.sock
PID=
LOG=
REMOTE_PID=

cleanup() {
    local rc=$?
    for p in $PID $REMOTE_PID; do
        if kill -0 "$p" 2>/dev/null; then
            kill -KILL "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        fi
    done
    if { [ "$rc" -ne 0 ] || [ "$fails" -ne 0 ]; } && [ -n "$LOG" ] && [ -s "$LOG" ]; then
        echo "--- last lines of $LOG"
        tail -n 30 "$LOG"
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

RPC() { timeout 60 python3 "$SPDK/scripts/rpc.py" -t 30 -s "$SOCK" "$@"; }
LULLC() { timeout 60 "$LULL" "$@" -r "$SOCK"; }

# Waits for the daemon on $SOCK to answer, or for it to exit.
wait_up() {
    local i
    for i in $(seq 1 300); do
        if [ -S "$SOCK" ] && RPC spdk_get_version >/dev/null 2>&1; then return 0; fi
        kill -0 "$PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

# Stops the daemon (SIGINT/SIGTERM, then SIGKILL after 20 s).
stop() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    local i
    for i in $(seq 1 200); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
    rm -f "$SOCK"
}

start_lull() { # name, then extra arguments
    LOG=$WORK/$1.log
    shift
    rm -f "$SOCK"
    "$LULL" target --cores 0 --log-level warn -r "$SOCK" "$@" >"$LOG" 2>&1 </dev/null &
    PID=$!
    wait_up || die "lull target $* did not come up"
}

start_spdk() { # name, then extra arguments
    LOG=$WORK/$1.log
    shift
    rm -f "$SOCK"
    "$SPDK_TGT" -m 0x1 --no-huge -s "$SPDK_MEM_MB" -u --disable-cpumask-locks -r "$SOCK" "$@" >"$LOG" 2>&1 </dev/null &
    PID=$!
    wait_up || die "spdk_tgt $* did not come up"
    RPC framework_wait_init >/dev/null || die "spdk_tgt $*: framework_wait_init"
}

# What is compared, from rpc.py's bdev_get_bdevs and nvmf_get_subsystems.
snapshot() { # out file
    RPC bdev_get_bdevs >"$WORK/bdevs.json"
    RPC nvmf_get_subsystems >"$WORK/subs.json"
    RPC bdev_nvme_get_controllers >"$WORK/ctrlrs.json"
    python3 - "$WORK/bdevs.json" "$WORK/subs.json" "$WORK/ctrlrs.json" >"$1" <<'EOF'
import json, sys
bdevs = json.load(open(sys.argv[1]))
subs = json.load(open(sys.argv[2]))
ctrlrs = json.load(open(sys.argv[3]))
out = {
    "controllers": sorted(
        [c["name"]] + [[p["trid"]["trtype"].upper(), p["trid"]["traddr"], p["trid"]["trsvcid"], p["trid"]["subnqn"],
                        p["host"]["nqn"]] for p in c["ctrlrs"]]
        for c in ctrlrs),
    "bdevs": sorted([b["name"], b["num_blocks"], b["block_size"], b["uuid"].lower()] for b in bdevs),
    "subsystems": sorted(
        [s["nqn"], s["serial_number"], s["model_number"], s["allow_any_host"], s["max_namespaces"],
         sorted(h["nqn"] for h in s["hosts"]),
         sorted([n["nsid"], n["bdev_name"], n["uuid"].lower(), n["nguid"].upper()] for n in s["namespaces"]),
         sorted([a["trtype"].upper(), a["traddr"], a["trsvcid"]] for a in s["listen_addresses"])]
        for s in subs if s["subtype"] == "NVMe"),
}
print(json.dumps(out, indent=1))
EOF
}

same() { # what, expected file, actual file
    if cmp -s "$2" "$3"; then
        pass "$1"
    else
        fail "$1"
        diff "$2" "$3" | head -20 || true
    fi
}

# ---- 1. lull built over JSON-RPC, saved ------------------------------------------

# The remote target every daemon below attaches a controller to (runs throughout).
RSOCK=$WORK/remote.sock
"$LULL" target --cores 1 --log-level warn -r "$RSOCK" --listen "127.0.0.1:$((PORT + 1))" \
    --subnqn "$NQNR" --null-bdev "R0:64MiB" --allow-any-host >"$WORK/remote.log" 2>&1 </dev/null &
REMOTE_PID=$!
for _ in $(seq 1 100); do [ -S "$RSOCK" ] && break; sleep 0.1; done
[ -S "$RSOCK" ] || die "the remote lull target did not come up"

start_lull lull-a
LULLC rpc bdev_nvme_attach_controller "{\"name\":\"Nvme0\",\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"$((PORT + 1))\",\"subnqn\":\"$NQNR\",\"hostnqn\":\"$HOST1\"}" >/dev/null
LULLC rpc nvmf_create_transport '{"trtype":"TCP","in_capsule_data_size":4096}' >/dev/null
LULLC rpc bdev_malloc_create "{\"name\":\"Malloc0\",\"num_blocks\":65536,\"block_size\":512,\"uuid\":\"$UUID0\"}" >/dev/null
LULLC rpc bdev_malloc_create '{"name":"Malloc4k","num_blocks":4096,"block_size":4096}' >/dev/null
LULLC rpc bdev_null_create "{\"name\":\"Null0\",\"num_blocks\":131072,\"block_size\":512,\"uuid\":\"$UUID1\"}" >/dev/null
LULLC rpc nvmf_create_subsystem "{\"nqn\":\"$NQN1\",\"serial_number\":\"LULLCFG0001\",\"model_number\":\"lull cfg interop\",\"max_namespaces\":8}" >/dev/null
LULLC rpc nvmf_subsystem_add_host "{\"nqn\":\"$NQN1\",\"host\":\"$HOST1\"}" >/dev/null
LULLC rpc nvmf_subsystem_add_ns "{\"nqn\":\"$NQN1\",\"namespace\":{\"bdev_name\":\"Malloc0\",\"nsid\":3}}" >/dev/null
LULLC rpc nvmf_subsystem_add_ns "{\"nqn\":\"$NQN1\",\"namespace\":{\"bdev_name\":\"Null0\"}}" >/dev/null
LULLC rpc nvmf_create_subsystem "{\"nqn\":\"$NQN2\",\"serial_number\":\"LULLCFG0002\",\"allow_any_host\":true}" >/dev/null
LULLC rpc nvmf_subsystem_add_ns "{\"nqn\":\"$NQN2\",\"namespace\":{\"bdev_name\":\"Malloc4k\"}}" >/dev/null
LULLC rpc nvmf_subsystem_add_ns "{\"nqn\":\"$NQN2\",\"namespace\":{\"bdev_name\":\"Nvme0n1\"}}" >/dev/null
for n in $NQN1 $NQN2; do
    LULLC rpc nvmf_subsystem_add_listener "{\"nqn\":\"$n\",\"listen_address\":{\"trtype\":\"tcp\",\"adrfam\":\"ipv4\",\"traddr\":\"127.0.0.1\",\"trsvcid\":\"$PORT\"}}" >/dev/null
done
LULLC rpc lull_set_options '{"mode_policy":"hybrid","idle_poll_us":55,"nvme_ioq_poll_period_us":300}' >/dev/null
snapshot "$WORK/want.json"
LULLC config save "$WORK/lull.json"
python3 - "$WORK/lull.json" <<'EOF' && pass "lull config save: SPDK's subsystems in order, lull's settings under lull_subsystems" || fail "lull config save: document shape"
import json, sys
d = json.load(open(sys.argv[1]))
assert [s["subsystem"] for s in d["subsystems"]] == ["keyring", "bdev", "nvmf"], d["subsystems"]
bdev = [e["method"] for e in d["subsystems"][1]["config"]]
assert bdev[0] == "bdev_nvme_set_options" and bdev[-1] == "bdev_wait_for_examine", bdev
assert d["subsystems"][2]["config"][0]["method"] == "nvmf_create_transport"
lull = d["lull_subsystems"][0]
assert lull["subsystem"] == "lull" and lull["config"][0]["params"]["mode_policy"] == "hybrid", lull
EOF
stop
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["bdevs"])==4 and len(d["subsystems"])==2' "$WORK/want.json" ||
    die "the lull daemon's state was not built"

# ---- 2. spdk_tgt --json lull.json --------------------------------------------------

start_spdk spdk-json --json "$WORK/lull.json"
snapshot "$WORK/got.json"
same "spdk_tgt --json <lull's config>: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
stop

# ---- 3. spdk_tgt + rpc.py load_config; rpc.py save_config ----------------------------

start_spdk spdk-load
if RPC load_config -j "$WORK/lull.json" >"$WORK/load.out" 2>&1; then
    pass "rpc.py load_config <lull's config> into spdk_tgt"
else
    fail "rpc.py load_config <lull's config> into spdk_tgt"
    cat "$WORK/load.out"
fi
snapshot "$WORK/got.json"
same "rpc.py load_config into spdk_tgt: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
RPC save_config >"$WORK/spdk.json"
stop

# ---- 4. lull from spdk_tgt's config ---------------------------------------------------

start_lull lull-json --json-config "$WORK/spdk.json"
snapshot "$WORK/got.json"
same "lull target --json-config <spdk_tgt's config>: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
if grep -q "iobuf_set_options) skipped" "$LOG" && grep -q "framework_set_scheduler) skipped" "$LOG"; then
    pass "lull target --json-config: SPDK-only entries skipped with a warning naming them"
else
    fail "lull target --json-config: no warnings naming the skipped SPDK-only entries"
fi
stop

start_lull lull-load
if LULLC config load "$WORK/spdk.json" >"$WORK/load.out" 2>&1; then
    pass "lull config load <spdk_tgt's config>"
else
    fail "lull config load <spdk_tgt's config>"
    cat "$WORK/load.out"
fi
snapshot "$WORK/got.json"
same "lull config load: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
stop

# SPDK's rpc.py load_config checks every method against rpc_get_methods
# first: SPDK's tuning entries (iobuf_set_options, sock_impl_set_options,
# ...) are lull methods that change nothing a host sees.
start_lull lull-rpcpy
if RPC load_config -j "$WORK/spdk.json" >"$WORK/load.out" 2>&1; then
    pass "rpc.py load_config <spdk_tgt's config> into lull"
else
    fail "rpc.py load_config <spdk_tgt's config> into lull"
    cat "$WORK/load.out"
fi
snapshot "$WORK/got.json"
same "rpc.py load_config into lull: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
stop

# spdk_tgt's -c is its JSON config: lull target -c takes one too.
start_lull lull-c -c "$WORK/spdk.json"
snapshot "$WORK/got.json"
same "lull target -c <spdk_tgt's config>: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
stop

start_lull lull-own --json-config "$WORK/lull.json"
snapshot "$WORK/got.json"
same "lull target --json-config <lull's config>: same controller, bdevs and subsystems" "$WORK/want.json" "$WORK/got.json"
opts=$(LULLC rpc lull_get_options)
if python3 -c 'import json,sys; o=json.loads(sys.argv[1]); assert (o["mode_policy"], o["idle_poll_us"], o["nvme_ioq_poll_period_us"]) == ("hybrid", 55, 300), o' "$opts"; then
    pass "lull target --json-config <lull's config>: lull's own settings back"
else
    fail "lull target --json-config <lull's config>: lull's own settings: $opts"
fi
stop

if [ "$fails" -eq 0 ]; then
    echo "all checks passed"
else
    echo "$fails check(s) failed"
    exit 1
fi
