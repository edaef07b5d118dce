#!/usr/bin/env python3
"""lull's NVMe/TCP target beside SPDK's nvmf_tgt, same initiator, same cores.

Each round starts one target on core 0 (lull's `lull target` with a RAM bdev, or SPDK's
`nvmf_tgt` with a malloc bdev when polling and an aio bdev on tmpfs in interrupt mode, the
bdev SPDK can sleep with), runs every workload against it from core 1, stops it, and does
the same with the other target; the order of the two targets alternates from round to round
(A B, B A, ...). Initiators: SPDK's spdk_nvme_perf, and lull's own `lull perf`.

For each workload it prints the median over the rounds of each target's IOPS, mean latency
and target CPU (% of a core over the run, and CPU microseconds per I/O), and the median of
the per-round ratios lull/SPDK (IOPS: higher is better for lull when > 1; latency: lower).

Usage:
    perf/scripts/spdk-side-by-side.py [--rounds 3] [--time 5] [--modes poll,interrupt]
        [--workloads NAME,...] [--json FILE]
Needs: target/release/lull (cargo build --release) and the SPDK peer build
(../shared/spdk-peer/spdk-peer build). Run as root (SPDK reserves hugepages). Uses ports
4470 (lull) and 4570 (SPDK) on 127.0.0.1. Takes about
rounds x modes x 2 targets x workloads x (time + 2) seconds.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOSTNQN = "nqn.2014-08.org.nvmexpress:uuid:0f7b3a52-6c1e-4b2d-9a8f-3e5d7c9b1a21"
LULL_NQN = "nqn.2024-01.io.lull:side"
SPDK_NQN = "nqn.2016-06.io.spdk:cnode1"
LULL_PORT = int(os.environ.get("LULL_PORT", "4470"))
SPDK_PORT = int(os.environ.get("SPDK_PORT", "4570"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

# name -> (initiator, rw, block size, queue depth)
WORKLOADS = {
    "randread-4k-qd1": ("spdk", "randread", 4096, 1),
    "randread-4k-qd32": ("spdk", "randread", 4096, 32),
    "randwrite-4k-qd1": ("spdk", "randwrite", 4096, 1),
    "randwrite-4k-qd32": ("spdk", "randwrite", 4096, 32),
    "read-128k-qd16": ("spdk", "read", 131072, 16),
    "write-128k-qd16": ("spdk", "write", 131072, 16),
    "lull-perf-randread-4k-qd1": ("lull", "randread", 4096, 1),
    "lull-perf-randread-4k-qd32": ("lull", "randread", 4096, 32),
    "lull-perf-randwrite-4k-qd32": ("lull", "randwrite", 4096, 32),
}


def cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def wait_for_socket(path, proc, what, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(path):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError(f"{what}: no RPC socket {path} after {timeout} s")


class LullTarget:
    name = "lull"
    port = LULL_PORT
    nqn = LULL_NQN

    def __init__(self, mode, work):
        self.sock = os.path.join(work, "lull.sock")
        self.log = open(os.path.join(work, f"lull-{mode}.log"), "w")
        self.proc = subprocess.Popen(
            [
                os.path.join(ROOT, "target/release/lull"), "target", "-r", self.sock, "--cores", "0",
                "--mode-policy", mode, "--listen", f"127.0.0.1:{LULL_PORT}", "--ram-bdev", "Ram0:256MiB",
                "--subnqn", LULL_NQN, "--allow-any-host",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        wait_for_socket(self.sock, self.proc, "lull target")
        self.pid = self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class SpdkTarget:
    name = "spdk"
    port = SPDK_PORT
    nqn = SPDK_NQN

    def __init__(self, mode, work, peer):
        self.peer = peer
        self.sock = os.path.join(work, "spdk.sock")
        args = [peer, "target", "--port", str(SPDK_PORT), "--core", "0", "--nqn", SPDK_NQN, "--size", "256",
                "--rpc-socket", self.sock, "--log", os.path.join(work, f"nvmf_tgt-{mode}.log")]
        args += ["--interrupt", "--bdev", "aio"] if mode == "interrupt" else ["--bdev", "malloc"]
        out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=60)
        self.pid = int(out.stdout.strip().splitlines()[-1])

    def stop(self):
        subprocess.run([self.peer, "stop", "--rpc-socket", self.sock], capture_output=True, timeout=30)


def run_spdk_perf(peer, target, rw, bs, qd, secs):
    trid = (f"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:{target.port} "
            f"subnqn:{target.nqn} hostnqn:{HOSTNQN}")
    out = subprocess.run(
        [peer, "exec", "spdk_nvme_perf", "-c", "0x2", "-q", str(qd), "-o", str(bs), "-w", rw, "-t", str(secs), "-r", trid],
        capture_output=True, text=True, timeout=secs + 60,
    )
    m = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)", out.stdout, re.M)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"spdk_nvme_perf failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    return float(m.group(1)), float(m.group(3))


def run_lull_perf(target, rw, bs, qd, secs):
    out = subprocess.run(
        [
            os.path.join(ROOT, "target/release/lull"), "perf", "--target", f"127.0.0.1:{target.port}",
            "--subnqn", target.nqn, "--hostnqn", HOSTNQN, "--cores", "1", "--mode", "poll", "--rw", rw,
            "--bs", str(bs), "--qd", str(qd), "--time", str(secs), "--ramp", "0", "--json",
        ],
        capture_output=True, text=True, timeout=secs + 60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"lull perf failed ({out.returncode}): {out.stderr[-500:]}")
    r = json.loads(out.stdout[out.stdout.find("{") if out.stdout.lstrip().startswith("{") else out.stdout.find("["):])
    if isinstance(r, list):
        r = r[0]
    if r["errors"]:
        raise RuntimeError(f"lull perf: {r['errors']} errors: {r.get('first_error')}")
    return r["iops"], r["lat_mean_us"] or 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time", type=int, default=5, help="seconds per workload run")
    ap.add_argument("--modes", default="poll,interrupt")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--peer", default=os.path.join(ROOT, "..", "shared", "spdk-peer", "spdk-peer"))
    ap.add_argument("--json", help="write every measurement to this file")
    a = ap.parse_args()
    if a.rounds < 1 or a.time < 1:
        ap.error("--rounds and --time must be at least 1")
    modes = a.modes.split(",")
    for m in modes:
        if m not in ("poll", "interrupt"):
            ap.error(f"--modes: {m!r} is not one of poll, interrupt")
    names = a.workloads.split(",")
    for n in names:
        if n not in WORKLOADS:
            ap.error(f"--workloads: {n!r} is not one of {', '.join(WORKLOADS)}")
    if not os.access(os.path.join(ROOT, "target/release/lull"), os.X_OK):
        sys.exit("target/release/lull not found: cargo build --release first")
    subprocess.run([a.peer, "build"], check=True)

    rows = []  # dicts: round, mode, target, workload, iops, lat_us, cpu_pct, cpu_us_per_io
    with tempfile.TemporaryDirectory(prefix="lull-side-") as work:
        for rnd in range(a.rounds):
            for mode in modes:
                order = ["spdk", "lull"] if rnd % 2 == 0 else ["lull", "spdk"]
                for tname in order:
                    t = SpdkTarget(mode, work, a.peer) if tname == "spdk" else LullTarget(mode, work)
                    try:
                        time.sleep(0.5)
                        for n in names:
                            initiator, rw, bs, qd = WORKLOADS[n]
                            c0, w0 = cpu_seconds(t.pid), time.monotonic()
                            if initiator == "spdk":
                                iops, lat = run_spdk_perf(a.peer, t, rw, bs, qd, a.time)
                            else:
                                iops, lat = run_lull_perf(t, rw, bs, qd, a.time)
                            c1, w1 = cpu_seconds(t.pid), time.monotonic()
                            cpu_s = c1 - c0
                            row = dict(round=rnd, mode=mode, target=tname, workload=n, iops=iops, lat_us=lat,
                                       cpu_pct=100.0 * cpu_s / (w1 - w0),
                                       cpu_us_per_io=1e6 * cpu_s / max(iops * a.time, 1.0))
                            rows.append(row)
                            print(f"round {rnd + 1} {mode:9} {tname:4} {n:28} {iops:11.0f} IOPS "
                                  f"{lat:8.1f} us  target CPU {row['cpu_pct']:5.1f} %", flush=True)
                    finally:
                        t.stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)

    print()
    print(f"medians of {a.rounds} rounds, {a.time} s each; ratio = median of per-round lull/SPDK")
    hdr = (f"{'mode':9} {'workload':28} {'SPDK IOPS':>10} {'lull IOPS':>10} {'ratio':>6} "
           f"{'SPDK us':>8} {'lull us':>8} {'SPDK CPU%':>9} {'lull CPU%':>9} {'SPDK us/IO':>10} {'lull us/IO':>10}")
    print(hdr)
    for mode in modes:
        for n in names:
            def pick(tn, key):
                return [r[key] for r in rows if r["mode"] == mode and r["workload"] == n and r["target"] == tn]
            ratios = [lr["iops"] / sr["iops"]
                      for lr in rows if lr["mode"] == mode and lr["workload"] == n and lr["target"] == "lull"
                      for sr in rows if sr["mode"] == mode and sr["workload"] == n and sr["target"] == "spdk"
                      and sr["round"] == lr["round"] and sr["iops"] > 0]
            med = statistics.median
            print(f"{mode:9} {n:28} {med(pick('spdk', 'iops')):10.0f} {med(pick('lull', 'iops')):10.0f} "
                  f"{med(ratios):6.2f} {med(pick('spdk', 'lat_us')):8.1f} {med(pick('lull', 'lat_us')):8.1f} "
                  f"{med(pick('spdk', 'cpu_pct')):9.1f} {med(pick('lull', 'cpu_pct')):9.1f} "
                  f"{med(pick('spdk', 'cpu_us_per_io')):10.2f} {med(pick('lull', 'cpu_us_per_io')):10.2f}")


if __name__ == "__main__":
    main()
