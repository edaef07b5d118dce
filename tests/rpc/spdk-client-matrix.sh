#!/usr/bin/env bash
# Every method lull implements, through every version of SPDK's Python client
# on PyPI (package `spdk`), against an empty `lull target` per version.
#
#   1. installs each version with `pip install --target target/spdk-matrix/V`
#      (kept: a later run installs nothing);
#   2. per version: starts `lull target` on a private socket (-r) and drives
#      it with tests/rpc/spdk_client_matrix.py: SPDK's own `spdk-rpc` command
#      line (in its --server mode) for every method the client has, its
#      Python API for the rest (lull's own), I/O with `lull perf` between,
#      and a check that every method in rpc_get_methods was called;
#   3. stops the daemon with SIGTERM (exit status 0 expected).
#
# Usage: tests/rpc/spdk-client-matrix.sh      (after cargo build --release)
# Environment:
#   LULL=path              the binary (default target/release/lull)
#   SPDK_VERSIONS="a b"    the versions (default: the six on PyPI, 25.5 to 26.9)
# Prints PASS/FAIL per check and a last line `N passed, M failed`; exits
# non-zero on any failure. Bounded: 120 s per version after installation.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

LULL=${LULL:-target/release/lull}
VERSIONS=${SPDK_VERSIONS:-"25.5 25.5.1 25.9 26.1 26.5 26.9"}
CACHE=target/spdk-matrix

passed=0
failed=0
note() {
    echo "$1 $2"
    if [ "$1" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}
finish() {
    echo "tests/rpc/spdk-client-matrix.sh: $passed passed, $failed failed"
    [ "$failed" -eq 0 ]
}

[ -x "$LULL" ] || { note FAIL "setup: $LULL not found (run cargo build --release first)"; finish; exit 1; }
command -v python3 >/dev/null 2>&1 || { note FAIL "setup: python3 not found"; finish; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lull-spdk-matrix.XXXXXX")
DAEMON_PID=
cleanup() {
    local rc=$?
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- pip: the system's, else a venv's (Debian without python3-pip) ----------
PIP=()
if python3 -m pip --version >/dev/null 2>&1; then
    PIP=(python3 -m pip)
elif [ -x "$CACHE/venv/bin/pip" ] || { timeout 120 python3 -m venv "$CACHE/venv" >/dev/null 2>&1 && [ -x "$CACHE/venv/bin/pip" ]; }; then
    PIP=("$ROOT/$CACHE/venv/bin/pip")
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing python3-pip with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q python3-pip >/dev/null 2>&1 ||
        { timeout 600 apt-get update -q >/dev/null 2>&1 && timeout 600 apt-get install -y -q python3-pip >/dev/null 2>&1; } || true
    python3 -m pip --version >/dev/null 2>&1 && PIP=(python3 -m pip)
fi

# The version installed in DIR (nothing when none is).
installed() {
    python3 -c 'import sys, importlib.metadata as m
print(next(m.distributions(name="spdk", path=[sys.argv[1]])).version)' "$1" 2>/dev/null || true
}

for v in $VERSIONS; do
    dir=$CACHE/$v
    if [ "$(installed "$dir")" != "$v" ]; then
        if [ "${#PIP[@]}" -eq 0 ]; then
            note FAIL "$v: no pip to install spdk==$v (install python3-pip)"
            continue
        fi
        rm -rf "$dir"
        # The package has no run-time dependencies.
        if ! timeout 300 "${PIP[@]}" install -q --disable-pip-version-check --no-deps --target "$dir" "spdk==$v" \
            >"$WORK/pip-$v.log" 2>&1; then
            note FAIL "$v: pip install spdk==$v: $(tail -n 3 "$WORK/pip-$v.log" | tr '\n' ' ')"
            continue
        fi
    fi

    sock=$WORK/lull-$v.sock
    cores=0
    [ "$(nproc)" -ge 2 ] && cores=0,1
    NO_COLOR=1 "$LULL" target -r "$sock" --cores "$cores" >"$WORK/daemon-$v.log" 2>&1 &
    DAEMON_PID=$!
    for _ in $(seq 100); do
        [ -S "$sock" ] && break
        kill -0 "$DAEMON_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! [ -S "$sock" ]; then
        note FAIL "$v: lull target did not start: $(tail -n 5 "$WORK/daemon-$v.log" | tr '\n' ' ')"
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
        DAEMON_PID=
        continue
    fi

    rc=0
    PYTHONPATH=$ROOT/$dir timeout 120 python3 tests/rpc/spdk_client_matrix.py "$v" "$sock" "$ROOT/$LULL" "$WORK" \
        >"$WORK/driver-$v.log" 2>&1 || rc=$?
    grep '^FAIL ' "$WORK/driver-$v.log" | cut -c1-600 || true
    # The driver's last line: "spdk V: N passed, M failed".
    summary=$(grep -E "^spdk $v: [0-9]+ passed, [0-9]+ failed$" "$WORK/driver-$v.log" | tail -n 1 || true)
    p=$(sed -nE 's/.*: ([0-9]+) passed.*/\1/p' <<<"$summary")
    f=$(sed -nE 's/.* ([0-9]+) failed$/\1/p' <<<"$summary")
    p=${p:-$(grep -c '^PASS ' "$WORK/driver-$v.log" || true)}
    f=${f:-$(grep -c '^FAIL ' "$WORK/driver-$v.log" || true)}
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        note FAIL "$v: the driver exited with status $rc: $(tail -n 5 "$WORK/driver-$v.log" | tr '\n' ' ')"
    fi

    kill -TERM "$DAEMON_PID"
    stopped=
    for _ in $(seq 300); do
        kill -0 "$DAEMON_PID" 2>/dev/null || { stopped=1; break; }
        sleep 0.1
    done
    [ -n "$stopped" ] || kill -KILL "$DAEMON_PID" 2>/dev/null || true
    drc=0
    wait "$DAEMON_PID" || drc=$?
    DAEMON_PID=
    if [ -n "$stopped" ] && [ "$drc" -eq 0 ]; then
        note PASS "$v: spdk $v: $p checks passed, $f failed; lull target stopped cleanly"
    else
        note FAIL "$v: lull target exit status $drc after SIGTERM: $(tail -n 5 "$WORK/daemon-$v.log" | tr '\n' ' ')"
    fi
    if [ "$f" -ne 0 ]; then
        echo "--- $v: last lines of the daemon's log"
        tail -n 15 "$WORK/daemon-$v.log"
    fi
done

finish
