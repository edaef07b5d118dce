#!/usr/bin/env bash
# Interop: DH-HMAC-CHAP (NVMe in-band authentication) between lull and the
# Linux kernel, both ways. Runs inside the kernel-peer VM (see
# tests/interop/run.sh), from the repository root, with the release binary
# built. It needs a guest kernel built with NVMe authentication
# (CONFIG_NVME_HOST_AUTH / CONFIG_NVME_AUTH and CONFIG_NVME_TARGET_AUTH):
# Debian's 6.1 has neither, its 6.12 (bookworm-backports) has both; run.sh
# boots that one for this script.
#
# Keys come from `nvme gen-dhchap-key` in the guest, one host key and one
# controller key per hash (-m 1/2/3: SHA-256/384/512 key transforms); lull's
# key files are mode 0600.
#
# Kernel host -> lull target, for each hash, the target requiring the keys
# (TOML [[subsystem.host_dhchap]]) and allowing one DH group (SPDK JSON
# nvmf_set_config dhchap_dhgroups):
#   nvme connect --dhchap-secret (unidirectional) and with
#   --dhchap-ctrl-secret (bidirectional), each with a short fio crc32c verify;
#   a wrong host secret, a wrong controller secret and no secret at all are
#   refused (no secret at all: once); the target log names no secret and has
#   no error.
# lull initiator -> kernel target (nvmet configured through configfs: the
# host's dhchap_key, dhchap_ctrl_key, dhchap_hash, dhchap_dhgroup):
#   lull perf --verify with --dhchap-key (unidirectional) and with
#   --dhchap-ctrlr-key (bidirectional) for each hash and a DH group each; a
#   wrong host key, a wrong controller key and (once) no key fail the
#   connection; a key file of mode 0644 is refused.
set -uo pipefail
export LC_ALL=C

LULL=${LULL:-./target/release/lull}
ADDR=127.0.0.1
PORT=4420
NQN=nqn.2024-01.io.lull:auth
KNQN=nqn.2024-01.io.lull:kernel-auth
HOSTNQN=nqn.2014-08.org.nvmexpress:uuid:5a1c7e00-0000-4000-8000-0000000a0001
OUT=${OUT:-/tmp/lull-interop}
LOGS=$OUT/kernel-auth
# Keys stay in guest RAM (tmpfs), never on the share.
KEYS=/tmp/lull-auth-keys
FIO_SECS=${FIO_SECS:-2}
PERF_SECS=${PERF_SECS:-2}
CORES=${CORES:-0}
mkdir -p "$LOGS" "$KEYS"
chmod 700 "$KEYS"

failures=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failures=$((failures + 1)); }
step() { printf '\n--- %s (%s)\n' "$*" "$(date +%T)"; }

HASHES=(sha256 sha384 sha512)
declare -A M=([sha256]=1 [sha384]=2 [sha512]=3)
# One DH group per hash keeps the run short and still covers null and a few
# FFDHE groups, ffdhe8192 included (seconds per queue under emulation: the case that once
# outlasted a 5 s KATO, which now runs from CC.EN).
declare -A TGT_GROUP=([sha256]=null [sha384]=ffdhe2048 [sha512]=ffdhe8192)
declare -A NVMET_GROUP=([sha256]=ffdhe2048 [sha384]=null [sha512]=ffdhe4096)

newkey() { # file, nqn, transform (0..3): a fresh secret, mode 0600
    (umask 077 && nvme gen-dhchap-key -n "$2" -m "$3" >"$1")
    grep -q '^DHHC-1:0[0-3]:' "$1"
}

t_script=$SECONDS
step "keys"
ok=1
for h in "${HASHES[@]}"; do
    newkey "$KEYS/host-$h" "$HOSTNQN" "${M[$h]}" || ok=
    newkey "$KEYS/ctrl-$h" "$NQN" "${M[$h]}" || ok=
    newkey "$KEYS/bad-$h" "$HOSTNQN" "${M[$h]}" || ok=
done
if [ -n "$ok" ]; then
    pass "nvme gen-dhchap-key: host, controller and wrong keys for SHA-256/384/512 transforms, mode $(stat -c %a "$KEYS/host-sha256")"
else
    fail "nvme gen-dhchap-key failed"
    exit 1
fi
# NVMe auth in this kernel: nvmet's hosts grow dhchap_* attributes.
modprobe crc32c 2>/dev/null
kernel-peer nvmet-reset
probe=/sys/kernel/config/nvmet/hosts/$HOSTNQN
mkdir -p "$probe" 2>/dev/null
if [ -e "$probe/dhchap_key" ]; then
    pass "kernel $(uname -r) has NVMe in-band authentication (nvmet hosts have dhchap_key)"
    rmdir "$probe"
else
    rmdir "$probe" 2>/dev/null
    fail "kernel $(uname -r) has no NVMe in-band authentication (CONFIG_NVME_AUTH / CONFIG_NVME_TARGET_AUTH)"
    exit 1
fi

# --- kernel host -> lull target -------------------------------------------

tgt_pid=
start_target() { # hash, log
    local h=$1 log=$2 conf=$LOGS/target-$1.toml json=$LOGS/target-$1.json
    cat >"$conf" <<EOF
listen = ["$ADDR:$PORT"]

[[bdev]]
name = "Malloc0"
type = "malloc"
size = "64MiB"
block_size = 512

[[subsystem]]
nqn = "$NQN"
serial_number = "LULLAUTH00000001"
model_number = "lull auth interop"
allow_any_host = false
hosts = ["$HOSTNQN"]
namespaces = [{ bdev = "Malloc0", nsid = 1 }]

[[subsystem.host_dhchap]]
host = "$HOSTNQN"
dhchap_key = "$KEYS/host-$h"
dhchap_ctrlr_key = "$KEYS/ctrl-$h"
EOF
    cat >"$json" <<EOF
{"subsystems": [{"subsystem": "nvmf", "config": [
  {"method": "nvmf_set_config", "params": {"dhchap_digests": ["$h"], "dhchap_dhgroups": ["${TGT_GROUP[$h]}"]}}
]}]}
EOF
    # The target's NVMe-oF debug lines (lull_engine::nvmf) say which queues authenticated.
    LULL_LOG=info,lull_engine::nvmf=debug "$LULL" target --config "$conf" --json-config "$json" --mode interrupt --cores "$CORES" \
        >"$log" 2>&1 &
    tgt_pid=$!
    for _ in $(seq 100); do
        grep -q 'connect:' "$log" 2>/dev/null && return 0
        kill -0 "$tgt_pid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$log"
    return 1
}

stop_target() {
    [ -n "$tgt_pid" ] || return 0
    kill -TERM "$tgt_pid" 2>/dev/null
    local rc=0
    wait "$tgt_pid" || rc=$?
    tgt_pid=
    return $rc
}

stem() { # a tag as a file name
    printf '%s' "${1//[^a-z0-9]/_}"
}

connect() { # output file, extra nvme connect arguments...
    local out=$1
    shift
    timeout 60 nvme connect -t tcp -a $ADDR -s $PORT -n "$NQN" --hostnqn="$HOSTNQN" "$@" >"$out" 2>&1
}

authed_io() { # tag, hash, DH group, nvme connect arguments...
    local tag=$1 h=$2 g=$3 dev f mark new how
    shift 3
    f=$LOGS/$(stem "$tag")
    mark=$(dmesg | wc -l)
    local tlog=$LOGS/target-$h.log tmark
    tmark=$(wc -l <"$tlog")
    if ! connect "$f-connect.txt" "$@"; then
        fail "$tag: nvme connect: $(tr '\n' ' ' <"$f-connect.txt") $(dmesg | tail -3 | tr '\n' ' ')"
        return
    fi
    if ! dev=$(kernel-peer nvme-wait "$NQN" 30); then
        fail "$tag: no block device"
        nvme disconnect -n "$NQN" >/dev/null 2>&1
        return
    fi
    # The kernel logs what the admin queue negotiated, and whether we proved
    # the controller key.
    new=$(dmesg | tail -n +$((mark + 1)))
    how="hmac($h) dhgroup $g"
    if ! grep -qF "qid 0: authenticated with hash $how" <<<"$new"; then
        fail "$tag: the kernel did not log authentication with $how: $(grep -i auth <<<"$new" | head -2 | tr '\n' ' ')"
    elif [[ " $* " == *" --dhchap-ctrl-secret="* ]] && ! grep -q 'qid 0: controller authenticated' <<<"$new"; then
        fail "$tag: the kernel did not log the controller authenticated"
    else
        pass "$tag: the kernel authenticated with $how$([[ " $* " == *" --dhchap-ctrl-secret="* ]] && echo ', and the controller')"
    fi
    # Every I/O queue authenticates too (section 8.13.1), each in its own
    # transaction: count the target's "queue authenticated" lines (logged
    # when it sends Success1 of a unidirectional transaction; a bidirectional
    # one ends with the host's Success2, which logs nothing).
    local ioq authd admin
    [[ " $* " == *" --dhchap-ctrl-secret="* ]] && tmark=-1
    ioq=$(grep -o 'creating [0-9]* I/O queues' <<<"$new" | grep -o '[0-9]*' | tail -1)
    admin=$(tail -n +$((tmark + 1)) "$tlog" | grep -c 'queue authenticated.*qid=0$')
    authd=$(tail -n +$((tmark + 1)) "$tlog" | grep -c 'queue authenticated.*qid=[1-9][0-9]*$')
    if [ "$tmark" -lt 0 ]; then
        :
    elif [ -n "$ioq" ] && [ "$admin" -eq 1 ] && [ "$authd" -eq "$ioq" ]; then
        pass "$tag: the target authenticated the admin queue and all $ioq I/O queues"
    else
        fail "$tag: ${ioq:-?} I/O queues created; the target logged $admin authenticated admin queue(s), $authd I/O queue(s)"
    fi
    if fio --name=verify --filename="$dev" --rw=randrw --rwmixread=50 --bs=4k --iodepth=16 \
        --ioengine=libaio --direct=1 --size=16M --runtime="$FIO_SECS" --time_based \
        --verify=crc32c --verify_backlog=256 --verify_fatal=1 >"$f-fio.txt" 2>&1 &&
        grep -q 'err= 0' "$f-fio.txt"; then
        pass "$tag: connected as $dev, fio randrw verify=crc32c ${FIO_SECS}s: $(grep -o 'IOPS=[^,]*' "$f-fio.txt" | tr '\n' ' ')"
    else
        fail "$tag: fio: $(tail -5 "$f-fio.txt")"
    fi
    if nvme disconnect -n "$NQN" >"$f-disconnect.txt" 2>&1 && grep -q 'disconnected 1' "$f-disconnect.txt"; then
        :
    else
        fail "$tag: nvme disconnect: $(cat "$f-disconnect.txt")"
    fi
}

refused() { # tag, what, nvme connect arguments...
    local tag=$1 what=$2 f
    shift 2
    f=$LOGS/$(stem "$tag, $what")
    local mark
    mark=$(dmesg | wc -l)
    if connect "$f-connect.txt" "$@"; then
        fail "$tag: $what was accepted"
        nvme disconnect -n "$NQN" >/dev/null 2>&1
    else
        pass "$tag: $what refused: $(tail -1 "$f-connect.txt"); kernel: $(dmesg | tail -n +$((mark + 1)) | grep -Ei 'auth.*(fail|error)|no key' | head -1 | sed 's/^\[[^]]*\] //')"
    fi
}

for h in "${HASHES[@]}"; do
    g=${TGT_GROUP[$h]}
    tag="kernel host, $h/$g"
    step "$tag"
    log=$LOGS/target-$h.log
    if ! start_target "$h" "$log"; then
        fail "$tag: target did not start"
        continue
    fi
    host=$(cat "$KEYS/host-$h") ctrl=$(cat "$KEYS/ctrl-$h") bad=$(cat "$KEYS/bad-$h")
    authed_io "$tag, unidirectional" "$h" "$g" --dhchap-secret="$host"
    authed_io "$tag, bidirectional" "$h" "$g" --dhchap-secret="$host" --dhchap-ctrl-secret="$ctrl"
    refused "$tag" "a wrong host secret" --dhchap-secret="$bad"
    refused "$tag" "a wrong controller secret" --dhchap-secret="$host" --dhchap-ctrl-secret="$bad"
    [ "$h" = sha256 ] && refused "$tag" "no secret"
    n=$(grep -c 'DH-HMAC-CHAP authentication failed' "$log")
    # The wrong host secret (and the missing one); the wrong controller
    # secret is the host's refusal, not ours.
    if [ "$n" -ge 1 ]; then pass "$tag: $n failed authentications logged by the target"; else fail "$tag: $n failed authentications logged, expected 1 or more"; fi
    if stop_target; then :; else fail "$tag: target exit status"; fi
    leaked=
    for k in "$host" "$ctrl" "$bad"; do
        s=${k#DHHC-1:0?:}
        grep -qF "${s%:}" "$log" && leaked=1
    done
    if [ -n "$leaked" ]; then
        fail "$tag: a secret appears in the target log"
    elif grep -Eq 'ERROR|panicked' "$log"; then
        fail "$tag: target logged errors: $(grep -E 'ERROR|panicked' "$log" | head -3)"
    else
        pass "$tag: target log names no secret and has no error"
    fi
done

# --- lull initiator -> kernel target --------------------------------------

step "kernel target: nvmet-tcp exporting a brd ramdisk to one host with DH-HMAC-CHAP"
modprobe brd rd_size=65536 rd_nr=1
KH=/sys/kernel/config/nvmet/hosts/$HOSTNQN
KS=/sys/kernel/config/nvmet/subsystems/$KNQN
if [ -b /dev/ram0 ] && kernel-peer nvmet-export --nqn "$KNQN" --addr $ADDR --port $PORT /dev/ram0 >/dev/null &&
    echo 0 >"$KS/attr_allow_any_host"; then
    pass "nvmet exports /dev/ram0 as $KNQN to $HOSTNQN only"
else
    fail "nvmet setup failed: $(dmesg | tail -3 | tr '\n' ' ')"
    echo "kernel-auth interop: $failures check(s) failed"
    exit 1
fi

nvmet_keys() { # hash, group, host key file, controller key file or ""
    # A fresh host entry each time: an empty write to dhchap_ctrl_key reaches
    # no store, so taking the controller key away means a new entry.
    rm -f "$KS/allowed_hosts/$HOSTNQN"
    rmdir "$KH" 2>/dev/null
    mkdir "$KH" && echo "hmac($1)" >"$KH/dhchap_hash" && echo "$2" >"$KH/dhchap_dhgroup" &&
        cat "$3" >"$KH/dhchap_key" &&
        { [ -z "$4" ] || cat "$4" >"$KH/dhchap_ctrl_key"; } &&
        ln -s "$KH" "$KS/allowed_hosts/$HOSTNQN"
}

perf() { # log stem, lull perf arguments...
    local stem=$1
    shift
    LULL_LOG=info timeout 90 "$LULL" perf --target "$ADDR:$PORT" --subnqn "$KNQN" --hostnqn "$HOSTNQN" \
        --cores "$CORES" --mode interrupt --ramp 0 --json --no-progress "$@" >"$stem.json" 2>"$stem.log"
}

jfield() { # name, file: the value of "name": in lull perf --json's first row
    sed -n "s/^ *\"$1\": *//p" "$2" | head -1 | sed 's/,$//; s/^"//; s/"$//'
}

perf_ok() { # tag, lull perf arguments...
    local tag=$1 stem rc=0 mark
    shift
    stem=$LOGS/perf-$(stem "$tag")
    mark=$(dmesg | wc -l)
    perf "$stem" --rw randrw --bs 4k --qd 8 --verify --size 8M --time "$PERF_SECS" "$@" || rc=$?
    local r w errs vf
    r=$(jfield read_iops "$stem.json") w=$(jfield write_iops "$stem.json")
    errs=$(jfield errors "$stem.json") vf=$(jfield verify_failures "$stem.json")
    if [ $rc -eq 0 ] && [ "$errs" = 0 ] && [ "$vf" = 0 ] && [ "$(printf '%.0f' "${r:-0}")" -gt 0 ] &&
        [ "$(printf '%.0f' "${w:-0}")" -gt 0 ]; then
        pass "$tag: lull perf --verify ${PERF_SECS}s: $(printf '%.0f' "$(jfield iops "$stem.json")") IOPS, no error, no mismatch"
    else
        fail "$tag: lull perf exit $rc, errors ${errs:-?}, mismatches ${vf:-?}; log: $(tail -3 "$stem.log" | tr '\n' ' ') kernel: $(dmesg | tail -n +$((mark + 1)) | tail -3 | tr '\n' ' ')"
    fi
    if grep -Eq 'ERROR|panicked' "$stem.log"; then
        fail "$tag: lull logged errors: $(grep -E 'ERROR|panicked' "$stem.log" | head -3 | tr '\n' ' ')"
    fi
}

perf_refused() { # tag, what, lull perf arguments...
    local tag=$1 what=$2 stem rc=0
    shift 2
    stem=$LOGS/perf-$(stem "$tag, $what")
    perf "$stem" --rw randread --bs 4k --qd 1 --time 1 "$@" || rc=$?
    if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -qi 'auth' "$stem.log"; then
        pass "$tag: $what refused (exit $rc): $(tail -1 "$stem.log" | cut -c1-200)"
    else
        fail "$tag: $what: lull perf exit $rc: $(tail -3 "$stem.log" | tr '\n' ' ')"
    fi
}

for h in "${HASHES[@]}"; do
    g=${NVMET_GROUP[$h]}
    tag="lull initiator, $h/$g"
    step "$tag"
    if ! nvmet_keys "$h" "$g" "$KEYS/host-$h" ""; then
        fail "$tag: nvmet host attributes: $(dmesg | tail -2 | tr '\n' ' ')"
        continue
    fi
    perf_ok "$tag, unidirectional" --dhchap-key "$KEYS/host-$h"
    perf_refused "$tag" "a wrong host key" --dhchap-key "$KEYS/bad-$h"
    [ "$h" = sha256 ] && perf_refused "$tag" "no key"
    if ! nvmet_keys "$h" "$g" "$KEYS/host-$h" "$KEYS/ctrl-$h"; then
        fail "$tag: nvmet dhchap_ctrl_key: $(dmesg | tail -2 | tr '\n' ' ')"
        continue
    fi
    perf_ok "$tag, bidirectional" --dhchap-key "$KEYS/host-$h" --dhchap-ctrlr-key "$KEYS/ctrl-$h"
    perf_refused "$tag" "a wrong controller key" --dhchap-key "$KEYS/host-$h" --dhchap-ctrlr-key "$KEYS/bad-$h"
done

step "a key file others can read"
chmod 644 "$KEYS/host-sha256"
perf "$LOGS/perf-mode" --rw randread --bs 4k --qd 1 --time 1 --dhchap-key "$KEYS/host-sha256"
rc=$?
chmod 600 "$KEYS/host-sha256"
if [ $rc -ne 0 ] && grep -q 'chmod' "$LOGS/perf-mode.log"; then
    pass "a key file of mode 0644 is refused: $(grep -m1 'chmod' "$LOGS/perf-mode.log" | cut -c1-200)"
else
    fail "a key file of mode 0644: exit $rc: $(tail -2 "$LOGS/perf-mode.log" | tr '\n' ' ')"
fi

rm -f "$KS/allowed_hosts/$HOSTNQN"
kernel-peer nvmet-reset
rmdir "$KH" 2>/dev/null
rm -rf "$KEYS"

step "summary"
echo "kernel-auth interop: $((SECONDS - t_script)) s"
if [ $failures -eq 0 ]; then
    echo "kernel-auth interop: all checks passed"
else
    echo "kernel-auth interop: $failures check(s) failed"
fi
exit $((failures > 0))
