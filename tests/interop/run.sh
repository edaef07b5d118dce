#!/usr/bin/env bash
# Runs the kernel interop scripts inside one kernel-peer VM:
#   tests/interop/kernel-host.sh    the Linux kernel's NVMe/TCP host against our target;
#   tests/interop/kernel-target.sh  our initiator (lull perf) against the kernel target (nvmet-tcp);
#   tests/interop/kernel-daemon.sh  the daemon from deploy/lull.toml, built further with SPDK's
#                                   JSON-RPC client, against the kernel host;
# then decodes the sessions they captured with tshark, here on the host.
# Usage: tests/interop/run.sh [kernel-peer path]
# INTEROP="kernel-host kernel-target kernel-daemon" (the default) picks the scripts.
# Exit status: non-zero when any check failed; 0 with a notice when kernel-peer is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
KP=${1:-${KERNEL_PEER:-../shared/kernel-peer/kernel-peer}}
INTEROP=${INTEROP:-kernel-host kernel-target kernel-daemon}
if [ ! -x "$KP" ]; then
    echo "kernel-peer not found at $KP: kernel interop not run" >&2
    exit 0
fi
[ -x target/release/lull ] || cargo build --release --locked
want() { [[ " $INTEROP " == *" $1 "* ]]; }
# kernel-daemon drives the daemon with SPDK's Python client (PyPI package
# spdk). The guest has no network: install it here, before the boot; the
# guest sees this venv through its read-only view of the host's /.
if want kernel-daemon && ! [ -x target/spdk-venv/bin/spdk-rpc ]; then
    rm -rf target/spdk-venv
    if ! { python3 -m venv target/spdk-venv && target/spdk-venv/bin/pip install -q 'spdk>=25.5'; } >&2; then
        echo "could not install SPDK's client into target/spdk-venv: kernel-daemon will fail" >&2
    fi
fi
mkdir -p target/interop
rm -f target/interop/session.pcap target/interop/initiator.pcap
# The VM runs its own copy of the binary: the guest sees target/ over 9p, and a
# `cargo build` on the host while the VM runs (minutes) replaces the file under
# it; the guest then faults in pages of the new file into the old mapping and
# every lull started after that dies of SIGSEGV.
rm -f target/interop/lull
cp target/release/lull target/interop/lull
# One VM for both: a boot under emulation costs 5-25 s. Each script cleans up
# after itself (our target stopped; nvmet ports and subsystems removed).
job="cd '$PWD' && rc=0"
for s in $INTEROP; do
    [ -f "tests/interop/$s.sh" ] || { echo "no tests/interop/$s.sh" >&2; exit 2; }
    job+="; OUT='$PWD/target/interop' LULL='$PWD/target/interop/lull' bash tests/interop/$s.sh || rc=1"
done
job+='; exit $rc'
rc=0
"$KP" run --share "$PWD/target/interop" --timeout 1500 --dmesg target/interop/dmesg.txt -- "$job" || rc=$?

# The captures are decoded here, on the host: tshark starts far faster than under emulation.
# Digests are verified (Wireshark leaves them unverified by default).
decode() { # label, pcap
    local label=$1 pcap=$2
    local ts=(tshark -r "$pcap" -d tcp.port==4420,nvme-tcp -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE)
    if ! [ -s "$pcap" ] || ! command -v tshark >/dev/null 2>&1; then
        echo "FAIL tshark $label: no capture at $pcap, or tshark missing"
        rc=1
        return
    fi
    local pdus bad good_dgst bad_dgst psdt
    pdus=$("${ts[@]}" -Y nvme-tcp 2>/dev/null | wc -l || true)
    bad=$("${ts[@]}" -Y '_ws.malformed || _ws.expert.severity == error' 2>/dev/null | wc -l || true)
    # Digest status: 0 bad, 1 good (2 unverified).
    good_dgst=$("${ts[@]}" -T fields -e nvme-tcp.hdgst.status -e nvme-tcp.ddgst.status 2>/dev/null | tr '\t,' '\n\n' | grep -c '^1$' || true)
    bad_dgst=$("${ts[@]}" -T fields -e nvme-tcp.hdgst.status -e nvme-tcp.ddgst.status 2>/dev/null | tr '\t,' '\n\n' | grep -c '^0$' || true)
    # NVMe over Fabrics commands must say PSDT 01b (SGL) (nvmet refuses others).
    psdt=$("${ts[@]}" -Y nvme.cmd.psdt -T fields -e nvme.cmd.psdt 2>/dev/null | tr ',' '\n' | grep -vc '^0x01$' || true)
    if [ "$pdus" -gt 20 ] && [ "$bad" -eq 0 ] && [ "$good_dgst" -gt 0 ] && [ "$bad_dgst" -eq 0 ] && [ "$psdt" -eq 0 ]; then
        echo "PASS tshark $label: $pdus NVMe/TCP frames decoded, none malformed; $good_dgst digests good, none bad; every PSDT 01b"
    else
        echo "FAIL tshark $label: $pdus NVMe/TCP frames, $bad malformed or in error, $good_dgst digests good, $bad_dgst bad, $psdt commands with PSDT other than 01b"
        "${ts[@]}" -Y '_ws.malformed || _ws.expert.severity == error' 2>/dev/null | head -5
        rc=1
    fi
}
want kernel-host && decode "kernel host -> lull target" target/interop/session.pcap
want kernel-target && decode "lull initiator -> kernel target" target/interop/initiator.pcap
exit $rc
