#!/usr/bin/env bash
# Runs tests/interop/kernel-host.sh inside the kernel-peer VM (the Linux
# kernel's NVMe/TCP host). Usage: tests/interop/run.sh [kernel-peer path]
# Exit status: the script's; 0 with a notice when kernel-peer is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
KP=${1:-${KERNEL_PEER:-../shared/kernel-peer/kernel-peer}}
if [ ! -x "$KP" ]; then
    echo "kernel-peer not found at $KP: kernel interop not run" >&2
    exit 0
fi
[ -x target/release/lull ] || cargo build --release --locked
mkdir -p target/interop
rc=0
"$KP" run --share "$PWD/target/interop" --timeout 1500 --dmesg target/interop/dmesg.txt -- \
    "cd '$PWD' && OUT=$PWD/target/interop bash tests/interop/kernel-host.sh" || rc=$?

# The capture is decoded here, on the host: tshark starts far faster than under emulation.
pcap=target/interop/session.pcap
if [ -s "$pcap" ] && command -v tshark >/dev/null 2>&1; then
    pdus=$(tshark -r "$pcap" -d tcp.port==4420,nvme-tcp -Y nvme-tcp 2>/dev/null | wc -l)
    bad=$(tshark -r "$pcap" -d tcp.port==4420,nvme-tcp -Y '_ws.malformed || _ws.expert.severity == error' 2>/dev/null | wc -l)
    if [ "$pdus" -gt 20 ] && [ "$bad" -eq 0 ]; then
        echo "PASS tshark: $pdus NVMe/TCP frames decoded, none malformed"
    else
        echo "FAIL tshark: $pdus NVMe/TCP frames, $bad malformed or in error"
        tshark -r "$pcap" -d tcp.port==4420,nvme-tcp -Y '_ws.malformed || _ws.expert.severity == error' 2>/dev/null | head -5
        rc=1
    fi
else
    echo "FAIL tshark: no capture at $pcap, or tshark missing"
    rc=1
fi
exit $rc
