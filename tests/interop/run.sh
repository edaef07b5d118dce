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
exec "$KP" run --share "$PWD/target/interop" --timeout 1500 --dmesg target/interop/dmesg.txt -- \
    "cd '$PWD' && OUT=$PWD/target/interop bash tests/interop/kernel-host.sh"
