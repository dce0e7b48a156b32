#!/usr/bin/python3
"""Admin benchmarks against Debian's mosquitto with the plugin:

  1. InactivateDeviceCertificate throughput and latency over the admin
     socket, closed loop from 1 and from 8 concurrent callers (separate
     processes), and paced at 500/s from one caller. Every call inactivates
     a different active record, so every call is a durable commit.
  2. Kick latency: time from the API's response to an MQTT 5 client
     observing its DISCONNECT, on an idle broker and under connection load
     (devcert_loadgen in the background); then after the change is written
     by another process (devcertctl --db), measured from that process' exit.

    bench/admin_bench.py --build build            # full sizes
    bench/admin_bench.py --build build --tiny     # seconds (CI)

The rate limit is raised (plugin_opt_admin_rate_limit 1000000) so it measures
the store and the socket, not the limiter.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import MOSQUITTO, Tools, cpus_available, free_ports, listener_lines, log, stop_broker, write_config

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
INSTANCE = "bench"
KICK_DEVICE = "dev-0001"


def percentile(values, p):
    if not values:
        return 0.0
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def synthetic_serial(i):
    """fill_store's serial of synthetic record i."""
    return f"5a{i:014x}"


def active_serials(start, count):
    """Synthetic records fill_store made active (every tenth is inactive)."""
    out, i = [], start
    while len(out) < count:
        if i % 10 != 0:
            out.append(synthetic_serial(i))
        i += 1
    return out, i


# ------------------------------------------------------------------ admin socket client

class AdminClient:
    """Keep-alive HTTP/1.1 over the admin UNIX socket, minimal on purpose:
    the client's own cost must stay small against what it measures."""

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.buf = b""

    def _connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Far beyond any answer the benchmarks expect; a broker that stops
        # answering fails the run instead of holding it up.
        self.sock.settimeout(120)
        self.sock.connect(self.path)
        self.buf = b""

    def call(self, action, **params):
        body = "&".join([f"Action={action}", f"MqttInstanceId={INSTANCE}"] +
                        [f"{k}={v}" for k, v in params.items()]).encode()
        req = (b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        for attempt in (0, 1):
            if self.sock is None:
                self._connect()
            try:
                self.sock.sendall(req)
                return self._response()
            except (ConnectionError, BrokenPipeError):
                # The server may close an idle keep-alive connection: reconnect once.
                self.sock.close()
                self.sock = None
                if attempt:
                    raise

    def _response(self):
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("admin socket closed")
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        close = False
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
            if k.strip().lower() == "connection" and v.strip().lower() == "close":
                close = True
        while len(rest) < length:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("admin socket closed mid-response")
            rest += chunk
        body, self.buf = rest[:length], rest[length:]
        if close:
            self.sock.close()
            self.sock = None
        return status, body

    def close(self):
        if self.sock:
            self.sock.close()
            self.sock = None


def expect_ok(status, body, what):
    if status != 200:
        raise RuntimeError(f"{what}: HTTP {status}: {body.decode(errors='replace')}")


# ------------------------------------------------------------------ broker

class Broker:
    def __init__(self, args, work, pki, store):
        self.work = work
        self.plain_port, self.tls_port = free_ports(2)
        self.sock_dir = Path(tempfile.mkdtemp(prefix="dcb-", dir="/tmp"))  # short: sun_path holds 107 bytes
        self.admin_socket = str(self.sock_dir / "admin.sock")
        lines = listener_lines(work / "broker.log", self.plain_port, self.tls_port, pki) + [
            f"plugin {args.plugin}",
            f"plugin_opt_instance_id {INSTANCE}",
            f"plugin_opt_db_path {store}",
            f"plugin_opt_admin_socket {self.admin_socket}",
            "plugin_opt_admin_rate_limit 1000000",
            f"plugin_opt_import_ca {pki / 'ca.crt'}",
        ]
        conf = write_config(work / "mosquitto.conf", lines)
        pin = ["taskset", "-c", "0"] if args.pin else []
        self.proc = subprocess.Popen(pin + [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(work / "stderr.log", "wb"))
        deadline = time.monotonic() + 60
        while not (os.path.exists(self.admin_socket) and self._plain_answers()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode} at start-up, see {work}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker not ready within 60 s, see {work}")
            time.sleep(0.01)

    def _plain_answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self):
        status = stop_broker(self.proc)
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        return status


# ------------------------------------------------------------------ inactivation throughput

def caller_process(admin_socket, serials, rate, pin_cpu, queue):
    if pin_cpu is not None:
        os.sched_setaffinity(0, {pin_cpu})
    client = AdminClient(admin_socket)
    lat = []
    errors = 0
    t_start = time.monotonic()
    for n, sn in enumerate(serials):
        if rate:
            due = t_start + n / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        t0 = time.monotonic()
        status, body = client.call("InactivateDeviceCertificate", CaSn="0ca1", DeviceSn=sn)
        lat.append(time.monotonic() - t0)
        if status != 200:
            errors += 1
    client.close()
    queue.put({"latencies": lat, "errors": errors, "start": t_start, "end": time.monotonic()})


def inactivation_run(sockets, callers, per_caller, serials, rate, pin):
    """`callers` processes, caller c on admin socket sockets[c % len(sockets)],
    each inactivating its `per_caller` serials (paced at `rate`/s, or closed
    loop at 0)."""
    queue = multiprocessing.Queue()
    procs = []
    for c in range(callers):
        chunk = serials[c * per_caller:(c + 1) * per_caller]
        p = multiprocessing.Process(target=caller_process,
                                    args=(sockets[c % len(sockets)], chunk, rate, 1 if pin else None, queue))
        procs.append(p)
    for p in procs:
        p.start()
    results = [queue.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    lat = [x for r in results for x in r["latencies"]]
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "callers": callers,
        "calls": len(lat),
        "errors": sum(r["errors"] for r in results),
        "per_s": len(lat) / wall if wall > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "max_ms": round(max(lat) * 1000, 2) if lat else 0.0,
        "paced_per_s": rate,
    }


# ------------------------------------------------------------------ kick latency

class MqttDevice:
    """An MQTT 5 client on a blocking TLS socket: after the admin call
    returns, reading the socket shows whether the DISCONNECT has come."""

    def __init__(self, port, pki, name, client_id):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "devices" / f"{name}.crt"), str(pki / "devices" / f"{name}.key"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + bytes([len(body)]) + body)
        head = self._read(2)
        rest = self._read(head[1])
        if head[0] != 0x20 or rest[1] != 0:
            raise RuntimeError(f"{name} refused: CONNACK {rest[1:2].hex()}")

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def wait_disconnect(self, timeout):
        """Returns the DISCONNECT reason code, or -1 for a bare close."""
        self.sock.settimeout(timeout)
        try:
            head = self.sock.recv(2)
        except (ssl.SSLError, ConnectionError):
            return -1
        if not head:
            return -1
        if head[0] != 0xE0:
            raise RuntimeError(f"expected DISCONNECT, got packet type {head[0]:#x}")
        rest = self._read(head[1]) if len(head) > 1 and head[1] else b""
        return rest[0] if rest else 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def timed_kick(client, dev, ca_sn, sn, timeout=5):
    """Inactivates (ca_sn, sn) through `client` and waits for `dev`'s
    DISCONNECT: (seconds since the response was read, seconds since the
    request was sent, the reason code or -1 for a bare close)."""
    t_request = time.monotonic()
    status, body = client.call("InactivateDeviceCertificate", CaSn=ca_sn, DeviceSn=sn)
    t0 = time.monotonic()
    expect_ok(status, body, "InactivateDeviceCertificate")
    reason = dev.wait_disconnect(timeout=timeout)
    t1 = time.monotonic()
    return t1 - t0, t1 - t_request, reason


def kick_trials(broker, pki, trials, how, store, devcertctl):
    client = AdminClient(broker.admin_socket)
    sn = "0d000001"
    lat, reasons = [], {}
    for t in range(trials):
        dev = MqttDevice(broker.tls_port, pki, KICK_DEVICE, f"kick-{how}-{t}")
        if how == "admin":
            seconds, _, reason = timed_kick(client, dev, "0ca1", sn)
        else:
            subprocess.run([devcertctl, "--db", str(store), "InactivateDeviceCertificate", "--MqttInstanceId",
                            INSTANCE, "--CaSn", "0ca1", "--DeviceSn", sn], check=True, stdout=subprocess.DEVNULL)
            t0 = time.monotonic()
            reason = dev.wait_disconnect(timeout=5)
            seconds = time.monotonic() - t0
        lat.append(seconds)
        reasons[reason] = reasons.get(reason, 0) + 1
        dev.close()
        status, body = client.call("ActiveDeviceCertificate", CaSn="0ca1", DeviceSn=sn)
        expect_ok(status, body, "ActiveDeviceCertificate")
    client.close()
    return {
        "trials": trials,
        "p50_ms": percentile(lat, 50) * 1000,
        "p99_ms": percentile(lat, 99) * 1000,
        "max_ms": max(lat) * 1000,
        "disconnect_reasons": {("close" if k == -1 else f"{k:#04x}"): v for k, v in reasons.items()},
    }


def start_load(args, broker, pki, work):
    """Background connections from every device but the kicked one."""
    lst = work / "load-certs.txt"
    lst.write_text("".join(f"{c} {c.with_suffix('.key')}\n" for c in sorted((pki / "devices").glob("*.crt"))
                           if c.stem != KICK_DEVICE))
    pin = ["taskset", "-c", "1"] if args.pin else []
    return subprocess.Popen(pin + [str(args.loadgen), "--port", str(broker.tls_port), "--cert-list", str(lst),
                                   "--ca", str(pki / "ca.crt"), "--concurrency", "8", "--connections", "100000000",
                                   "--time-limit", "3600", "--json", "--client-id-prefix", "load"],
                            stdout=subprocess.PIPE, text=True)


def stop_load(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


# ------------------------------------------------------------------ main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("DEVCERT_BUILD_DIR", str(REPO / "build")))
    ap.add_argument("--work", help="work directory (default: a temporary one)")
    ap.add_argument("--records", type=int, default=100_000, help="synthetic records in the store (default 100000)")
    ap.add_argument("--calls", type=int, default=3000, help="calls per caller in the closed-loop runs (default 3000)")
    ap.add_argument("--paced-seconds", type=float, default=6.0, help="length of the 500/s run (default 6)")
    ap.add_argument("--trials", type=int, default=200, help="kick trials per condition (default 200)")
    ap.add_argument("--no-pin", dest="pin", action="store_false")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: checks that everything runs")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if args.tiny:
        args.records, args.calls, args.paced_seconds, args.trials = 2_000, 20, 0.2, 5
    tools = Tools(args.build, "admin_bench")
    args.loadgen, args.fill_store, args.devcertctl, args.plugin = (tools.loadgen, tools.fill_store, tools.devcertctl,
                                                                   tools.plugin)
    if args.pin and (cpus_available() < 2 or not shutil.which("taskset")):
        args.pin = False

    temp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        temp = tempfile.mkdtemp(prefix="devcert-admin-bench-")
        work = Path(temp)
    pki = work / "pki"
    if not (pki / "ca.crt").exists():
        subprocess.run([str(BENCH_DIR / "pki.sh"), str(pki), "8"], check=True, stdout=subprocess.DEVNULL)
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    subprocess.run([str(args.fill_store), "--db", str(store), "--ca", str(pki / "ca.crt"), "--devices",
                    str(pki / "devices"), "--count", str(args.records)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)

    paced_calls = max(1, int(500 * args.paced_seconds))
    needed = args.calls + 8 * args.calls + paced_calls
    if needed > args.records * 9 // 10:
        sys.exit(f"admin_bench: {needed} distinct active records needed, --records {args.records} holds fewer")
    serials, _ = active_serials(1, needed)

    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    broker = Broker(args, work, pki, store)
    failed = False
    try:
        runs = []
        used = 0
        for callers, rate, n in ((1, 0, args.calls), (8, 0, args.calls), (1, 500, paced_calls)):
            chunk = serials[used:used + callers * n]
            used += callers * n
            r = inactivation_run([broker.admin_socket], callers, n, chunk, rate, args.pin)
            runs.append(r)
            label = f"{callers} caller{'s' if callers > 1 else ''}" + (f", paced {rate}/s" if rate else ", closed loop")
            log(f"InactivateDeviceCertificate, {label}: {r['per_s']:.0f}/s, p50 {r['p50_ms']:.2f} ms, "
                f"p99 {r['p99_ms']:.2f} ms, max {r['max_ms']:.1f} ms, errors {r['errors']}")
            failed |= r["errors"] > 0
        report["inactivation"] = runs

        kicks = {}
        kicks["admin_idle"] = kick_trials(broker, pki, args.trials, "admin", store, args.devcertctl)
        load = start_load(args, broker, pki, work)
        try:
            time.sleep(0.5)
            kicks["admin_under_load"] = kick_trials(broker, pki, args.trials, "admin", store, args.devcertctl)
        finally:
            stop_load(load)
        kicks["other_process_idle"] = kick_trials(broker, pki, args.trials, "db", store, args.devcertctl)
        for k, r in kicks.items():
            log(f"kick latency, {k.replace('_', ' ')}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
                f"max {r['max_ms']:.1f} ms over {r['trials']} trials, DISCONNECT {r['disconnect_reasons']}")
        report["kick"] = kicks
    finally:
        code = broker.stop()
    if code not in (0, -signal.SIGTERM):
        log(f"admin_bench: broker exited with {code}, see {work}")
        failed = True

    print(json.dumps(report) if args.json_out is None else f"results in {args.json_out}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    if temp and not failed:
        shutil.rmtree(temp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
