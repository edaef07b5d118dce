#!/usr/bin/env bash
# Runs the kernel interop scripts inside one kernel-peer VM:
#   tests/interop/kernel-host.sh    the Linux kernel's NVMe/TCP host against our target;
#   tests/interop/kernel-target.sh  our initiator (lull perf) against the kernel target (nvmet-tcp);
#   tests/interop/kernel-daemon.sh  the daemon from deploy/lull.toml, built further with SPDK's
#                                   JSON-RPC client, against the kernel host;
#   tests/interop/kernel-raid1.sh   a raid1 volume over three daemons (lull volume create)
#                                   under the kernel host's fio --verify while a replica is
#                                   kill -9ed, restarted and rebuilt;
# then decodes the sessions they captured with tshark, here on the host; then, in a second VM:
#   tests/interop/kernel-auth.sh    DH-HMAC-CHAP both ways (kernel host -> our target, our
#                                   initiator -> nvmet), on a kernel built with NVMe
#                                   authentication (see auth_kernel below).
# Usage: tests/interop/run.sh [kernel-peer path]
# INTEROP="kernel-host kernel-target kernel-daemon kernel-raid1 kernel-auth" (the default) picks
# the scripts.
# Exit status: non-zero when any check failed; 0 with a notice when kernel-peer is absent.
set -euo pipefail
cd "$(dirname "$0")/../.."
KP=${1:-${KERNEL_PEER:-../shared/kernel-peer/kernel-peer}}
INTEROP=${INTEROP:-kernel-host kernel-target kernel-daemon kernel-raid1 kernel-auth}
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
    [ "$s" = kernel-auth ] && continue
    [ -f "tests/interop/$s.sh" ] || { echo "no tests/interop/$s.sh" >&2; exit 2; }
    job+="; OUT='$PWD/target/interop' LULL='$PWD/target/interop/lull' bash tests/interop/$s.sh || rc=1"
done
job+='; exit $rc'
rc=0
if [ "$job" != "cd '$PWD' && rc=0; exit \$rc" ]; then
    "$KP" run --share "$PWD/target/interop" --timeout 1800 --dmesg target/interop/dmesg.txt -- "$job" || rc=$?
fi

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

# DH-HMAC-CHAP needs CONFIG_NVME_HOST_AUTH and CONFIG_NVME_TARGET_AUTH, which
# Debian's 6.1 (the default guest) lacks: the guest for kernel-auth boots the
# kernel of the release's backports suite (6.12 for bookworm), unpacked into a
# kernel-peer cache of its own the way kernel-peer unpacks its default one.
AUTH_CACHE=${KERNEL_PEER_AUTH_CACHE:-/var/tmp/kernel-peer-auth}
auth_kernel() {
    local kver suite apt pkg tmp
    kver=$(cat "$AUTH_CACHE/current" 2>/dev/null || true)
    [ -n "$kver" ] && [ -e "$AUTH_CACHE/$kver/.ready" ] && return 0
    suite=$(. /etc/os-release && echo "$VERSION_CODENAME")-backports
    mkdir -p "$AUTH_CACHE/apt/lists/partial" "$AUTH_CACHE/apt/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" \
        >"$AUTH_CACHE/apt/sources.list"
    # A private apt state: the host's sources and package lists stay as they are.
    apt=(-o Dir::Etc::SourceList="$AUTH_CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::State::Lists="$AUTH_CACHE/apt/lists" -o Dir::Cache="$AUTH_CACHE/apt/cache"
        -o Dir::State::status=/dev/null)
    apt-get "${apt[@]}" update -qq >&2 || return 1
    pkg=$(apt-cache "${apt[@]}" depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    [ -n "$pkg" ] || return 1
    kver=${pkg#linux-image-}
    tmp=$(mktemp -d "$AUTH_CACHE/.build.XXXXXX")
    chown _apt "$tmp" 2>/dev/null || true
    (cd "$tmp" && apt-get "${apt[@]}" download -qq "$pkg" >&2) &&
        dpkg-deb -x "$tmp"/*.deb "$tmp/root" && depmod -b "$tmp/root" "$kver" &&
        grep -q '^CONFIG_NVME_TARGET_AUTH=y' "$tmp/root/boot/config-$kver" || { rm -rf "$tmp"; return 1; }
    rm -rf "${AUTH_CACHE:?}/$kver"
    mv "$tmp/root" "$AUTH_CACHE/$kver"
    rm -rf "$tmp"
    touch "$AUTH_CACHE/$kver/.ready"
    echo "$kver" >"$AUTH_CACHE/current"
}
if want kernel-auth; then
    if auth_kernel; then
        KERNEL_PEER_CACHE=$AUTH_CACHE "$KP" run --share "$PWD/target/interop" --timeout 400 \
            --dmesg target/interop/dmesg-auth.txt -- \
            "cd '$PWD' && OUT='$PWD/target/interop' LULL='$PWD/target/interop/lull' bash tests/interop/kernel-auth.sh" || rc=1
    else
        echo "FAIL kernel-auth: no guest kernel with NVMe authentication (Debian's backports linux-image-amd64) in $AUTH_CACHE"
        rc=1
    fi
fi
exit $rc
