#!/usr/bin/env python3
"""Drives an empty `lull target` with one version of SPDK's Python client.

Run by tests/rpc/spdk-client-matrix.sh with PYTHONPATH set to that version's
`pip install --target` directory:

    spdk_client_matrix.py VERSION SOCKET LULL_BINARY WORKDIR

Every method the daemon lists (rpc_get_methods) is called, through the
client's own command line (`spdk-rpc --server`: one line per call, exactly
as `spdk-rpc -s SOCKET method args...`) where that client has the method,
else through its Python API (`JSONRPCClient.call`); each answer is checked.
A method the daemon lists and this script does not call is a failure.
Prints one PASS/FAIL line per check and `N passed, M failed`; exits 1 on
any failure.
"""

import base64
import json
import os
import select
import socket
import subprocess
import sys
import struct
import time
import zlib

VERSION, SOCK, LULL, WORK = sys.argv[1:5]
V = tuple(int(x) for x in VERSION.split("."))
NQN = "nqn.2016-06.io.spdk:cnode1"
HOST = "nqn.2014-08.org.nvmexpress:uuid:6c0e8e9c-3b3c-4c4e-9b8a-0000000000a1"
# A host that must authenticate with DH-HMAC-CHAP.
HOST2 = "nqn.2014-08.org.nvmexpress:uuid:6c0e8e9c-3b3c-4c4e-9b8a-0000000000a2"
CALL_TIMEOUT = 30

passed = 0
failed = 0
called = set()


def report(ok, what):
    global passed, failed
    what = " ".join(what.split())  # one line per check
    if ok:
        passed += 1
        print("PASS %s: %s" % (VERSION, what))
    else:
        failed += 1
        print("FAIL %s: %s" % (VERSION, what))
    sys.stdout.flush()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Cli:
    """spdk-rpc --server: a line in, its output and **STATUS=<0|1> out."""

    def __init__(self):
        self.p = subprocess.Popen(
            [sys.executable, "-m", "spdk.spdk_rpc", "--server"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(WORK, "spdk-rpc-%s.stderr" % VERSION), "w"))
        # Read the pipe's fd directly: a buffered reader would hold lines
        # that select() then never reports.
        self.buf = b""

    def run(self, line):
        self.p.stdin.write(("-s %s -t %d %s\n" % (SOCK, CALL_TIMEOUT, line)).encode())
        self.p.stdin.flush()
        deadline = time.monotonic() + CALL_TIMEOUT + 5
        fd = self.p.stdout.fileno()
        while True:
            for marker, ok in ((b"**STATUS=0\n", True), (b"**STATUS=1\n", False)):
                i = self.buf.find(marker)
                if i == 0 or (i > 0 and self.buf[i - 1:i] == b"\n"):
                    out, self.buf = self.buf[:i], self.buf[i + len(marker):]
                    return ok, out.decode(errors="replace")
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return False, "no answer within %d s" % (CALL_TIMEOUT + 5)
            chunk = os.read(fd, 65536)
            if not chunk:
                return False, "spdk-rpc --server exited: " + self.buf.decode(errors="replace")
            self.buf += chunk

    def close(self):
        self.p.stdin.close()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()


cli = Cli()
from spdk.rpc.client import JSONRPCClient  # noqa: E402 (from the version under test)

api = JSONRPCClient(SOCK, timeout=CALL_TIMEOUT)


def cli_call(method, args, check=None, expect_fail=None):
    """`spdk-rpc method args`; check(out) returns None when right, else why."""
    called.add(method)
    ok, out = cli.run(method + (" " + args if args else ""))
    what = "spdk-rpc %s %s" % (method, args)
    if expect_fail is not None:
        report(not ok and expect_fail in out, "%s fails with %s" % (what, expect_fail)
               + ("" if not ok else ": it succeeded"))
        return out
    if not ok:
        report(False, "%s: %s" % (what, out.strip()[-400:] or "refused (see the stderr file)"))
        return None
    why = check(out) if check else None
    report(why is None, what + ("" if why is None else ": " + why))
    return out


def api_call(method, params=None, check=None):
    called.add(method)
    what = "API %s %s" % (method, json.dumps(params) if params else "")
    try:
        r = api.call(method, params)
    except Exception as e:  # JSONRPCException and transport errors
        report(False, "%s: %s" % (what, str(e).strip()[-400:]))
        return None
    why = check(r) if check else None
    report(why is None, what + ("" if why is None else ": " + why))
    return r


def js(f):
    """A check on the output parsed as JSON."""
    def c(out):
        try:
            v = json.loads(out)
        except ValueError:
            return "not JSON: %r" % out[:200]
        try:
            return f(v)
        except (KeyError, IndexError, TypeError) as e:
            return "%r in %s" % (e, json.dumps(v)[:300])
    return c


def text(want, or_nothing=False):
    """The printed words (JSON string quotes dropped) are `want`'s; with
    or_nothing, printing nothing is right too (some versions print no result)."""
    def c(out):
        got = [w.strip('"') for w in out.split()]
        if got == want.split() or (or_nothing and not got):
            return None
        return "printed %r, expected %r" % (out.strip(), want)
    return c


def expect(cond, why):
    return None if cond else why


# ---- framework, logs ----
methods = api_call("rpc_get_methods", None, lambda r: expect(isinstance(r, list), "not a list")) or []
cli_call("rpc_get_methods", "", js(lambda v: expect("bdev_malloc_create" in v, "bdev_malloc_create missing")))
cli_call("spdk_get_version", "", js(lambda v: expect(v["version"].startswith("lull"), v["version"])))
cli_call("framework_get_reactors", "", js(lambda v: expect(len(v["reactors"]) >= 1 and v["tick_rate"] > 0, "no reactors")))


def set_log_level(level):
    # spdk 25.9's command line crashes on log_set_level before sending
    # anything (its cli/log.py calls the client's own log_set_level(lvl)):
    # that version sets it through the Python API.
    if V == (25, 9):
        api_call("log_set_level", {"level": level}, lambda r: expect(r is True, str(r)))
    else:
        cli_call("log_set_level", level)


cli_call("log_get_level", "", text("NOTICE"))
set_log_level("DEBUG")
cli_call("log_get_level", "", text("DEBUG"))
cli_call("log_set_print_level", "INFO")
cli_call("log_get_print_level", "", text("INFO"))
set_log_level("NOTICE")
cli_call("log_set_print_level", "NOTICE")
cli_call("log_get_flags", "", js(lambda v: expect(v.get("nvmf_tcp") is False and v.get("bdev") is False, "flags not all off")))
cli_call("log_set_flag", "nvmf_tcp")
cli_call("log_get_flags", "", js(lambda v: expect(v["nvmf_tcp"] is True and v["nvmf"] is False, "nvmf_tcp not on alone")))
cli_call("log_set_flag", "iscsi", expect_fail='"code": -32602')
cli_call("log_clear_flag", "all")
cli_call("log_get_flags", "", js(lambda v: expect(not any(v.values()), "a flag still on")))

# ---- bdevs ----
disk = os.path.join(WORK, "uring-%s.img" % VERSION)
with open(disk, "wb") as f:
    f.truncate(8 << 20)
cli_call("bdev_malloc_create", "-b Malloc0 32 512", text("Malloc0"))
cli_call("bdev_null_create", "Null0 16 4096", text("Null0"))
cli_call("bdev_uring_create", "%s Uring0" % disk, text("Uring0"))
cli_call("bdev_get_bdevs", "-b Malloc0", js(lambda v: expect(
    v[0]["num_blocks"] == 65536 and v[0]["block_size"] == 512, "Malloc0 is not 65536 x 512")))
cli_call("bdev_get_bdevs", "", js(lambda v: expect(
    {"Malloc0", "Null0", "Uring0"} <= {b["name"] for b in v}, "bdevs missing")))
cli_call("bdev_malloc_delete", "Nope0", expect_fail='"code": -19')

# ---- raid1, as on spdk_tgt: built of malloc bdevs, inspected, degraded,
# rebuilt, exported, refused where SPDK refuses, torn down ----
for b in ("Ra0", "Ra1", "Ra2", "Ra3"):
    cli_call("bdev_malloc_create", "-b %s 8 512" % b, text(b))
cli_call("bdev_raid_set_options", "-w 256 -b 0")


def raid_is(name, state, bases, operational, process=None):
    """A check of bdev_raid_get_bdevs: `bases` are the slots' names (None: empty)."""
    def c(v):
        r = [x for x in v if x["name"] == name]
        if not r:
            return "%s missing" % name
        r = r[0]
        got = ([b["name"] for b in r["base_bdevs_list"]], r["state"], r["num_base_bdevs_operational"],
               r["raid_level"], r["strip_size_kb"], r["num_base_bdevs"])
        want = (bases, state, operational, "raid1", 0, len(bases))
        if got != want:
            return "%s is %r, expected %r" % (name, got, want)
        if process is None and r.get("process") is not None:
            return "an unexpected process %r" % r["process"]
        return None
    return c


cli_call("bdev_raid_create", '-n Vol0 -r raid1 -b "Ra0 Ra1"')
cli_call("bdev_raid_get_bdevs", "all", js(raid_is("Vol0", "online", ["Ra0", "Ra1"], 2)))
cli_call("bdev_raid_get_bdevs", "online", js(lambda v: expect([r["name"] for r in v] == ["Vol0"], "online")))
cli_call("bdev_raid_get_bdevs", "offline", js(lambda v: expect(v == [], "offline: %r" % v)))
cli_call("bdev_get_bdevs", "-b Vol0", js(lambda v: expect(
    v[0]["product_name"] == "Raid Volume" and v[0]["num_blocks"] == 16384 and v[0]["block_size"] == 512
    and v[0]["driver_specific"]["raid"]["num_base_bdevs_discovered"] == 2, "Vol0 as a bdev")))
cli_call("bdev_get_bdevs", "-b Ra0", js(lambda v: expect(v[0]["claimed"] is True, "Ra0 not claimed")))
# Refused as spdk_tgt refuses: a claimed base (-EPERM), a duplicate name
# (-EEXIST), a missing raid (-ENODEV), an unknown category (-EINVAL), the
# last operational base.
cli_call("bdev_raid_create", '-n Vol1 -r raid1 -b "Ra0 Ra2"', expect_fail='"code": -1')
cli_call("bdev_raid_create", '-n Vol0 -r raid1 -b "Ra2 Null0"', expect_fail='"code": -17')
cli_call("bdev_raid_delete", "Nope0", expect_fail='"code": -19')
api_call("bdev_raid_get_bdevs", {"category": "all"}, lambda r: expect([x["name"] for x in r] == ["Vol0"], str(r)))
cli_call("bdev_raid_remove_base_bdev", "Ra1")
cli_call("bdev_raid_get_bdevs", "all", js(raid_is("Vol0", "online", ["Ra0", None], 1)))
cli_call("bdev_raid_remove_base_bdev", "Ra0", expect_fail='"code": -16')
cli_call("bdev_raid_add_base_bdev", "Vol0 Ra2")


def rebuilt(v):
    r = [x for x in v if x["name"] == "Vol0"][0]
    p = r.get("process")
    if p is not None:
        if p["type"] != "rebuild" or p["target"] != "Ra2" or not 0 <= p["progress"]["percent"] <= 100:
            return "process %r" % p
        return "still rebuilding"
    return raid_is("Vol0", "online", ["Ra0", "Ra2"], 2)(v)


# A 8 MiB rebuild: done within seconds.
deadline = time.monotonic() + 20
while True:
    r = api.call("bdev_raid_get_bdevs", {"category": "all"})
    why = rebuilt(r)
    if why != "still rebuilding" or time.monotonic() > deadline:
        break
    time.sleep(0.05)
report(why is None, "bdev_raid_add_base_bdev Vol0 Ra2: rebuilt%s" % ("" if why is None else ": " + why))
cli_call("bdev_raid_set_options", "-w 1024")
# -s: a superblock at the start of each base (1 MiB); created again over
# the same bases the volume is assembled from them, with its identity; a
# base holding another raid's superblock is refused (-EEXIST).
sb = {}


def superblock_raid(v):
    r = [x for x in v if x["name"] == "Vol1"]
    if not r:
        return "Vol1 missing"
    r = r[0]
    if not (r["superblock"] is True and [b["data_offset"] for b in r["base_bdevs_list"]] == [2048, 2048]
            and r["num_base_bdevs_operational"] == 2):
        return "Vol1 is %r" % r
    if sb.setdefault("uuid", r["uuid"]) != r["uuid"]:
        return "Vol1's uuid changed: %s, then %s" % (sb["uuid"], r["uuid"])
    return None


cli_call("bdev_raid_create", '-n Vol1 -r raid1 -b "Ra1 Ra3" -s')
cli_call("bdev_raid_get_bdevs", "all", js(superblock_raid))
cli_call("bdev_raid_delete", "Vol1")
cli_call("bdev_raid_create", '-n Other1 -r raid1 -b "Ra1 Ra3" -s', expect_fail='"code": -17')
cli_call("bdev_raid_create", '-n Vol1 -r raid1 -b "Ra1 Ra3" -s')
cli_call("bdev_raid_get_bdevs", "online", js(superblock_raid))
if V >= (26, 9):
    # -c zeroes the superblocks: the bases are free for another -s volume.
    cli_call("bdev_raid_delete", "-c Vol1")
    cli_call("bdev_raid_create", '-n Other1 -r raid1 -b "Ra1 Ra3" -s')
    cli_call("bdev_raid_delete", "-c Other1")
else:
    cli_call("bdev_raid_delete", "Vol1")
# Exported, it is a namespace like any bdev, and deleting it is refused
# until the namespace goes; a base of it cannot be a namespace.
RAID_NQN = NQN + "-raid"
cli_call("nvmf_create_subsystem", "%s -a -s SPDK00000000000002" % RAID_NQN)
cli_call("nvmf_subsystem_add_ns", "%s Vol0" % RAID_NQN, text("1", or_nothing=True))
cli_call("nvmf_subsystem_add_ns", "%s Ra0" % RAID_NQN, expect_fail="Ra0")
cli_call("bdev_raid_delete", "Vol0", expect_fail='"code": -16')
cli_call("nvmf_delete_subsystem", RAID_NQN)

# ---- initiator options (the call every client version failed) ----
cli_call("bdev_nvme_set_options", "")
cli_call("bdev_nvme_set_options", "-a reset -t 30000000 -k 10000 -i 100 -r 3 -l 10 -o 2 -u 5")
api_call("bdev_nvme_get_options", None, lambda r: expect(
    r["keep_alive_timeout_ms"] == 10000 and r["nvme_ioq_poll_period_us"] == 100 and r["ctrlr_loss_timeout_sec"] == 10,
    "options not applied"))
cli_call("bdev_nvme_set_options", "-l 0 -o 0 -u 0")
cli_call("bdev_nvme_set_options", "--transport-tos 3", expect_fail="transport_tos")

# ---- target ----
port = free_port()
# SPDK's documented command; 26.9 dropped -u (io_unit_size).
cli_call("nvmf_create_transport", "-t TCP -m 8 -c 8192" + (" -u 16384" if V < (26, 9) else ""))
cli_call("nvmf_get_transports", "", js(lambda v: expect(
    v[0]["trtype"] == "TCP" and v[0]["in_capsule_data_size"] == 8192, "transport")))
cli_call("nvmf_create_subsystem", "%s -a -s SPDK00000000000001 -d lull_matrix -m 8" % NQN)
cli_call("nvmf_subsystem_add_ns", "%s Malloc0" % NQN, text("1", or_nothing=True))
cli_call("nvmf_subsystem_add_ns", "-n 5 %s Null0" % NQN, text("5", or_nothing=True))
cli_call("nvmf_subsystem_add_listener", "%s -t tcp -a 127.0.0.1 -s %d -f ipv4" % (NQN, port))
cli_call("nvmf_subsystem_add_host", "%s %s" % (NQN, HOST))
cli_call("nvmf_get_subsystems", "", js(lambda v: expect(any(
    s["nqn"] == NQN and [n["nsid"] for n in s["namespaces"]] == [1, 5]
    and s["listen_addresses"][0]["trsvcid"] == str(port) and s["hosts"] == [{"nqn": HOST}]
    and s["serial_number"] == "SPDK00000000000001" for s in v), "subsystem as built")))
cli_call("nvmf_subsystem_get_listeners", NQN, js(lambda v: expect(
    [l["address"]["trsvcid"] for l in v] == [str(port)], "listeners")))


# ---- the keyring and DH-HMAC-CHAP keys: files of mode 0600, names in
# every answer, never a secret ----
def dhchap_secret(key):
    """The DHHC-1 form (no transformation): base64 of the key and its CRC-32, little-endian."""
    return "DHHC-1:00:%s:" % base64.b64encode(key + struct.pack("<I", zlib.crc32(key))).decode()


def key_file(name, key, mode):
    path = os.path.join(WORK, "%s-%s.key" % (name, VERSION))
    with open(path, "w") as f:
        f.write(dhchap_secret(key) + "\n")
    os.chmod(path, mode)
    return path


KEY0 = key_file("key0", bytes(range(32)), 0o600)
CKEY0 = key_file("ckey0", bytes(range(100, 132)), 0o600)
OPEN0 = key_file("open0", bytes(range(50, 82)), 0o644)
B64 = [dhchap_secret(k).split(":")[2][:16] for k in (bytes(range(32)), bytes(range(100, 132)), bytes(range(50, 82)))]


def no_secret(out):
    return expect(not any(b in out for b in B64) and "DHHC-1" not in out, "a secret is in the answer")


def keys_are(want):
    """want: {name: refcnt}; and no secret anywhere in the answer."""
    def c(out):
        why = no_secret(out)
        if why:
            return why
        v = json.loads(out)
        got = {k["name"]: k["refcnt"] for k in v}
        paths = {k["name"]: k["path"] for k in v}
        return expect(got == want and all(paths[n] == {"key0": KEY0, "ckey0": CKEY0}[n] for n in got)
                      and not any(k["removed"] or k["probed"] for k in v), "keys %s, expected %s" % (got, want))
    return c


cli_call("keyring_file_add_key", "key0 " + KEY0)
cli_call("keyring_file_add_key", "ckey0 " + CKEY0)
out = cli_call("keyring_file_add_key", "open0 " + OPEN0, expect_fail="chmod 0600")
report(out is not None and no_secret(out) is None, "a refused key file's error quotes no secret")
cli_call("keyring_file_add_key", "key0 " + KEY0, expect_fail='"code": -17')
cli_call("keyring_get_keys", "", keys_are({"key0": 1, "ckey0": 1}))
cli_call("nvmf_subsystem_add_host", "%s %s --dhchap-key key0 --dhchap-ctrlr-key nokey" % (NQN, HOST2),
         expect_fail="nokey")
cli_call("nvmf_subsystem_add_host", "%s %s --dhchap-key key0 --dhchap-ctrlr-key ckey0" % (NQN, HOST2))
cli_call("keyring_get_keys", "", keys_are({"key0": 2, "ckey0": 2}))
cli_call("nvmf_get_subsystems", "", js(lambda v: expect(
    [h for s in v if s["nqn"] == NQN for h in s["hosts"] if h["nqn"] == HOST2]
    == [{"nqn": HOST2, "dhchap_key": "key0", "dhchap_ctrlr_key": "ckey0"}], "HOST2's key names")))

# ---- the configuration: SPDK's client-side save_config, lull's server-side one ----
cli_call("framework_get_subsystems", "", js(lambda v: expect(
    [x["subsystem"] for x in v][:3] == ["keyring", "bdev", "nvmf"], "subsystems")))
cli_call("framework_get_config", "bdev", js(lambda v: expect(
    any(e["method"] == "bdev_malloc_create" and e["params"]["name"] == "Malloc0" for e in v), "bdev config")))
cli_call("bdev_wait_for_examine", "")


def config_methods(doc):
    return sorted(e["method"] for s in doc["subsystems"] for e in (s["config"] or []))


saved = cli_call("save_config", "", js(lambda v: expect(
    {"bdev_malloc_create", "nvmf_create_subsystem", "nvmf_subsystem_add_ns", "nvmf_subsystem_add_listener"}
    <= set(config_methods(v)), "save_config lacks the target built")))
saved = json.loads(saved) if saved else {"subsystems": []}
server_saved = api_call("save_config", None, lambda r: expect(
    config_methods(r) == config_methods(saved), "the client's and the server's save_config differ"))

# ---- I/O through the target, then the counters ----
perf = subprocess.run([LULL, "perf", "--target", "127.0.0.1:%d" % port, "--subnqn", NQN, "--rw", "randrw",
                       "--qd", "4", "--time", "1", "--no-progress"],
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
report(perf.returncode == 0, "lull perf randrw 1 s against it (exit %d)" % perf.returncode)
name_arg = "--names Malloc0" if V >= (26, 5) else "-b Malloc0"


def io_moved(v):
    b = [x for x in v["bdevs"] if x["name"] == "Malloc0"][0]
    return expect(v["tick_rate"] == 10 ** 9 and b["num_read_ops"] > 0 and b["num_write_ops"] > 0
                  and b["bytes_read"] >= 512 * b["num_read_ops"], "Malloc0 counters did not move: %s" % b)


cli_call("bdev_get_iostat", name_arg, js(io_moved))
cli_call("bdev_get_iostat", "-c " + name_arg, js(lambda v: expect(
    v["name"] == "Malloc0" and sum(c["num_write_ops"] for c in v["channels"]) > 0, "per-channel counters")))
cli_call("nvmf_get_stats", "", js(lambda v: expect(
    sum(g["admin_qpairs"] for g in v["poll_groups"]) >= 1
    and sum(g["completed_nvme_io"] for g in v["poll_groups"]) > 0, "poll group counters")))

# ---- initiator against the target itself ----
cli_call("bdev_nvme_attach_controller", "-b Nvme0 -t tcp -a 127.0.0.1 -s %d -f ipv4 -n %s -q %s" % (port, NQN, HOST),
         text("Nvme0n1 Nvme0n5"))
cli_call("bdev_nvme_get_controllers", "", js(lambda v: expect(
    v[0]["name"] == "Nvme0" and v[0]["ctrlrs"][0]["trid"]["trsvcid"] == str(port), "controllers")))
cli_call("nvmf_subsystem_get_controllers", NQN, js(lambda v: expect(
    [c["hostnqn"] for c in v] == [HOST] and v[0]["num_io_qpairs"] >= 1, "controllers of %s" % NQN)))
cli_call("nvmf_subsystem_get_qpairs", NQN, js(lambda v: expect(
    0 in [q["qid"] for q in v] and all(q["state"] == "enabled" for q in v), "queue pairs")))
if V >= (26, 5):
    cli_call("nvmf_subsystem_allow_any_host", "--no-allow-any-host " + NQN)
else:
    cli_call("nvmf_subsystem_allow_any_host", "-d " + NQN)
cli_call("nvmf_get_subsystems", "", js(lambda v: expect(
    [s["allow_any_host"] for s in v if s["nqn"] == NQN] == [False], "allow_any_host still on")))
cli_call("bdev_nvme_detach_controller", "Nvme0")

# ---- the initiator authenticating (ATR) on every queue, bidirectional,
# then unidirectional after nvmf_subsystem_set_keys; a wrong key refused;
# keys changed while connected (bdev_nvme_set_keys) ----
ATTACH2 = "-t tcp -a 127.0.0.1 -s %d -f ipv4 -n %s -q %s" % (port, NQN, HOST2)
cli_call("bdev_nvme_set_options", "--dhchap-digests sha384,sha256 --dhchap-dhgroups null,ffdhe2048")
api_call("bdev_nvme_get_options", None, lambda r: expect(
    r["dhchap_digests"] == ["sha384", "sha256"] and r["dhchap_dhgroups"] == ["ffdhe2048", "null"],
    "dhchap lists %s %s" % (r.get("dhchap_digests"), r.get("dhchap_dhgroups"))))
cli_call("bdev_nvme_set_options", "--dhchap-dhgroups ffdhe1024", expect_fail="ffdhe1024")
# The target's lists too: the attaches below negotiate SHA-384 and ffdhe2048.
cli_call("nvmf_set_config", "--dhchap-digests sha384 --dhchap-dhgroups ffdhe2048,ffdhe3072")
cli_call("bdev_nvme_attach_controller", "-b Auth0 %s --dhchap-key key0 --dhchap-ctrlr-key ckey0" % ATTACH2,
         text("Auth0n1 Auth0n5"))
cli_call("bdev_nvme_detach_controller", "Auth0")
cli_call("bdev_nvme_attach_controller", "-b Auth1 %s --dhchap-key ckey0" % ATTACH2,
         expect_fail="DH-HMAC-CHAP authentication failed")
cli_call("bdev_nvme_attach_controller", "-b Auth1 %s" % ATTACH2, expect_fail="no dhchap_key was given")
cli_call("nvmf_subsystem_set_keys", "%s %s --dhchap-key key0" % (NQN, HOST2))
cli_call("bdev_nvme_attach_controller", "-b Auth2 %s --dhchap-key key0" % ATTACH2, text("Auth2n1 Auth2n5"))
# New keys on both sides while connected: every queue of Auth2 re-authenticates
# (the client prints nothing); an unknown controller is -ENODEV.
cli_call("nvmf_subsystem_set_keys", "%s %s --dhchap-key ckey0" % (NQN, HOST2))
cli_call("bdev_nvme_set_keys", "Auth2 --dhchap-key ckey0")
cli_call("bdev_nvme_set_keys", "Auth9 --dhchap-key ckey0", expect_fail='"code": -19')
api_call("bdev_nvme_get_controllers", {"name": "Auth2"}, lambda r: expect(
    r[0]["ctrlrs"][0]["state"] == "enabled" and r[0]["ctrlrs"][0]["resets"] == 0,
    "Auth2 after bdev_nvme_set_keys: %r" % r))
cli_call("bdev_nvme_detach_controller", "Auth2")

# ---- teardown, in SPDK's order ----
cli_call("nvmf_subsystem_remove_host", "%s %s" % (NQN, HOST))
cli_call("nvmf_subsystem_remove_listener", "%s -t tcp -a 127.0.0.1 -s %d -f ipv4" % (NQN, port))
cli_call("nvmf_subsystem_remove_ns", "%s 5" % NQN)
cli_call("nvmf_delete_subsystem", NQN)
cli_call("keyring_file_remove_key", "ckey0")
cli_call("keyring_file_remove_key", "key0")
cli_call("keyring_file_remove_key", "key0", expect_fail='"code": -19')
cli_call("keyring_get_keys", "", keys_are({}))
cli_call("bdev_raid_delete", "Vol0")
cli_call("bdev_raid_get_bdevs", "all", js(lambda v: expect(v == [], "raids left: %r" % v)))
for b in ("Ra0", "Ra1", "Ra2", "Ra3"):
    cli_call("bdev_malloc_delete", b)
cli_call("bdev_uring_delete", "Uring0")
cli_call("bdev_null_delete", "Null0")
cli_call("bdev_malloc_delete", "Malloc0")

# ---- the saved configuration back: SPDK's client-side load_config (the
# transport stays: lull has no transport delete), then lull's load_config ----
replay = {"subsystems": [{"subsystem": x["subsystem"],
                          "config": [e for e in (x["config"] or []) if e["method"] != "nvmf_create_transport"]}
                         for x in saved["subsystems"]]}
conf = os.path.join(WORK, "saved-%s.json" % VERSION)
with open(conf, "w") as f:
    json.dump(replay, f)


def rebuilt_target(v):
    return expect(any(s["nqn"] == NQN and [n["nsid"] for n in s["namespaces"]] == [1, 5]
                      and s["listen_addresses"][0]["trsvcid"] == str(port)
                      and {"nqn": HOST2, "dhchap_key": "key0", "dhchap_ctrlr_key": "ckey0"} in s["hosts"]
                      for s in v), "not rebuilt")


cli_call("load_config", "-j " + conf)
cli_call("nvmf_get_subsystems", "", js(rebuilt_target))
# The volume came back from the saved config over its bases in sync.
cli_call("bdev_raid_get_bdevs", "all", js(raid_is("Vol0", "online", ["Ra0", "Ra2"], 2)))
for m, p in (("nvmf_delete_subsystem", {"nqn": NQN}), ("bdev_raid_delete", {"name": "Vol0"}),
             ("bdev_malloc_delete", {"name": "Ra0"}), ("bdev_malloc_delete", {"name": "Ra1"}),
             ("bdev_malloc_delete", {"name": "Ra2"}), ("bdev_malloc_delete", {"name": "Ra3"}),
             ("bdev_uring_delete", {"name": "Uring0"}),
             ("bdev_null_delete", {"name": "Null0"}), ("bdev_malloc_delete", {"name": "Malloc0"}),
             ("keyring_file_remove_key", {"name": "key0"}), ("keyring_file_remove_key", {"name": "ckey0"})):
    api_call(m, p)
if server_saved:
    api_call("load_config", server_saved, lambda r: expect(r["applied"] >= 5, str(r)))
    cli_call("nvmf_get_subsystems", "", js(rebuilt_target))
    cli_call("bdev_raid_get_bdevs", "all", js(raid_is("Vol0", "online", ["Ra0", "Ra2"], 2)))
    api_call("nvmf_delete_subsystem", {"nqn": NQN})
    api_call("bdev_raid_delete", {"name": "Vol0"})
    for b in ("Uring0", "Null0", "Malloc0", "Ra0", "Ra1", "Ra2", "Ra3"):
        api_call("lull_bdev_delete", {"name": b})
    for k in ("key0", "ckey0"):
        api_call("keyring_file_remove_key", {"name": k})

# ---- SPDK's tuning of parts lull does not have (what spdk_tgt's save_config
# writes): accepted when they change nothing a host sees, else refused
# naming the parameter; through the Python API (some command lines need
# arguments that only SPDK's own parts have) ----
for m, p in (("iobuf_set_options", {"small_pool_count": 8192, "large_pool_count": 1024}),
             ("sock_set_default_impl", {"impl_name": "posix"}),
             ("sock_impl_set_options", {"impl_name": "posix", "recv_buf_size": 2097152}),
             ("accel_set_options", {"small_cache_size": 128}),
             ("accel_assign_opc", {"opname": "copy", "module": "software"}),
             ("bdev_set_options", {"bdev_io_pool_size": 65535, "bdev_io_cache_size": 256}),
             ("bdev_raid_set_options", {"process_window_size_kb": 1024}),
             ("iscsi_set_options", None),
             ("nvmf_set_max_subsystems", {"max_subsystems": 1024}),
             ("keyring_linux_set_options", {"enable": False}),
             ("bdev_nvme_set_hotplug", {"enable": False, "period_us": 100000}),
             ("framework_set_scheduler", {"name": "static"}),
             ("nvmf_set_crdt", {"crdt1": 0, "crdt2": 0, "crdt3": 0}),
             ("nvmf_set_config", {"discovery_filter": "match_any"})):
    api_call(m, p, lambda r: expect(r is True, str(r)))


def refused(m, p, word):
    called.add(m)
    try:
        api.call(m, p)
        report(False, "API %s %s: accepted" % (m, json.dumps(p)))
    except Exception as e:
        report("-32602" in str(e) and word in str(e), "API %s %s refused naming %s: %s" % (m, json.dumps(p), word, str(e).strip()[-200:]))


refused("nvmf_set_crdt", {"crdt1": 5}, "crdt1")

# ---- lull's own methods, through the client's Python API ----
api_call("lull_get_status", None, lambda r: expect(len(r["reactors"]) >= 1, "no reactors"))
api_call("lull_reactor_set_mode", {"mode": "poll"})
api_call("lull_supervisor_get_config", None, lambda r: expect(r["mode_policy"] == "poll", r["mode_policy"]))
api_call("lull_supervisor_set_config", {"mode_policy": "interrupt"})
api_call("lull_set_options", {"idle_poll_us": 50})
api_call("lull_get_options", None, lambda r: expect(r["idle_poll_us"] == 50 and r["mode_policy"] == "interrupt", "options"))
cli_call("bdev_malloc_create", "-b Gone0 8 512", text("Gone0"))
api_call("lull_bdev_delete", {"name": "Gone0"}, lambda r: expect(r == {"name": "Gone0", "removed_namespaces": []}, str(r)))

missing = sorted(set(methods) - called)
report(not missing and methods, "every method the daemon lists was called (%d)%s" % (
    len(methods), "; not called: " + " ".join(missing) if missing else ""))
cli.close()
print("spdk %s: %d passed, %d failed" % (VERSION, passed, failed))
sys.exit(1 if failed else 0)
