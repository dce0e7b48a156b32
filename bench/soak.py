#!/usr/bin/env python3
"""Soak: a real broker with the plugin under TLS connect/disconnect churn and
a paced stream of admin calls, for a bounded time, watching the broker's
memory and file descriptors and every outcome.

  bench/soak.py --build build                 # 3 minutes
  bench/soak.py --build build --minutes 30    # the long run of docs/performance.md
  bench/soak.py --build build --seconds 45    # CI (bench/run_all_tiny.sh)

Traffic:
- churn threads connect devices over TLS (MQTT 3.1.1 CONNECT, read the
  CONNACK, DISCONNECT, close); half of them reuse one client id per device,
  the other half send a fresh client id every time (--ids reuse|fresh|mixed);
- holder threads keep one MQTT 5 session of their device open until the
  broker closes it or a few seconds pass, then reconnect;
- one admin thread inactivates and activates devices at --admin-rate calls
  per second: churned devices, held (connected) devices and devices that
  never connect.

Checked:
- every CONNACK against the device's status: an active device refused or an
  inactive device accepted is a wrong outcome, unless a status change of that
  device was in flight within --race-window seconds of the attempt;
- a held device still connected --kick-window seconds after its
  inactivation was acknowledged is a wrong outcome;
- every admin call answers 200;
- the broker's RSS and open file descriptors, sampled every --sample-every
  seconds: after the warm-up (a quarter of the run, at most 60 s), growth
  (last - first) beyond --max-rss-growth-mb or --max-fd-growth fails the run.
  The least-squares slope is reported too.

Exits 0 when all is well, 1 on a wrong outcome or growth beyond the limits
(the report says which), 2 on bad arguments. Prints a summary, and the same
as one JSON line last.
"""

import argparse
import json
import os
import random
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "test" / "integration"))

CA = "0c01"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default=str(HERE.parent / "build"), help="build directory (plugin, devcertctl)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, help="run time in minutes (default 3)")
    length.add_argument("--seconds", type=float, help="run time in seconds")
    p.add_argument("--work", help="working directory (default: a temporary one, removed)")
    p.add_argument("--churn-threads", type=int, default=4)
    p.add_argument("--holders", type=int, default=2)
    p.add_argument("--ids", choices=("reuse", "fresh", "mixed"), default="mixed",
                   help="client ids of the churn threads (default mixed: half reuse, half fresh)")
    p.add_argument("--fresh-id-bytes", type=int, default=100, help="length of a fresh client id")
    p.add_argument("--admin-rate", type=float, default=4.0, help="admin calls per second")
    p.add_argument("--sample-every", type=float, default=2.0)
    p.add_argument("--race-window", type=float, default=0.25)
    p.add_argument("--kick-window", type=float, default=1.5)
    p.add_argument("--max-rss-growth-mb", type=float, default=16.0)
    p.add_argument("--max-fd-growth", type=int, default=16)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args()
    a.duration = a.seconds if a.seconds is not None else 60.0 * (a.minutes if a.minutes is not None else 3.0)
    if a.duration <= 0 or a.churn_threads < 1 or a.holders < 0 or a.admin_rate <= 0 or a.fresh_id_bytes < 1 \
            or a.fresh_id_bytes > 65535:
        p.error("durations, rates and thread counts must be positive (client ids at most 65535 bytes)")
    return a


def varint(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def connect_once(port, ctx, client_id, timeout=10.0):
    """One MQTT 3.1.1 connection: 'accepted', 'refused' (CONNACK 5), or
    'error: ...' for anything else."""
    cid = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"\x10" + varint(len(body)) + body)
            answer = read_exact(s, 4)
            if answer == b"\x20\x02\x00\x00":
                try:
                    s.sendall(b"\xe0\x00")
                except OSError:
                    pass
                return "accepted"
            if answer is not None and answer[:2] == b"\x20\x02" and answer[3] in (4, 5):
                return "refused"
            return f"error: answer {answer!r}"
    except (OSError, ssl.SSLError) as e:
        return f"error: {type(e).__name__}"


class Model:
    """The status of each device as the admin thread changed it, with the
    time span of every change (sent .. acknowledged)."""

    def __init__(self, serials):
        self.lock = threading.Lock()
        self.status = {s: "1" for s in serials}
        self.changes = {s: [] for s in serials}  # (sent, acked, status)
        self.pending = {}                          # serial -> sent time of the call in flight

    def begin(self, serial, now):
        with self.lock:
            self.pending[serial] = now

    def end(self, serial, sent, acked, status):
        with self.lock:
            self.pending.pop(serial, None)
            if self.status[serial] != status:
                self.changes[serial].append((sent, acked, status))
            self.status[serial] = status

    def status_at(self, serial, t):
        with self.lock:
            status = "1"
            for sent, acked, st in self.changes[serial]:
                if acked <= t:
                    status = st
            return status

    def changing_near(self, serial, t0, t1, window):
        """Whether a change of the device overlaps [t0 - window, t1 + window]."""
        with self.lock:
            sent = self.pending.get(serial)
            if sent is not None and sent <= t1 + window:
                return True
            return any(s <= t1 + window and a >= t0 - window for s, a, _ in self.changes[serial])

    def inactive_since(self, serial):
        """The acknowledgement time of the inactivation in force, or None."""
        with self.lock:
            if self.status[serial] != "0" or serial in self.pending:
                return None
            for sent, acked, st in reversed(self.changes[serial]):
                if st == "0":
                    return acked
            return None


class Report:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.wrong = []

    def count(self, name, n=1):
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + n

    def wrong_outcome(self, text):
        with self.lock:
            self.wrong.append(text)
        log(f"soak: WRONG: {text}")


def slope_per_minute(points):
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    return 0.0 if den == 0 else 60.0 * sum((t - mx) * (v - my) for t, v in points) / den


def sample(pid):
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss_kb, len(os.listdir(f"/proc/{pid}/fd"))


def main():
    args = parse_args()
    rng = random.Random(args.seed)
    build = Path(args.build).resolve()
    os.environ.setdefault("DEVCERT_PLUGIN", str(build / "plugin" / "mosquitto_devcert.so"))
    os.environ.setdefault("DEVCERTCTL", str(build / "admin" / "devcertctl"))
    from devcert_harness import Broker, Pki, RawMqtt5, tls_context

    work_tmp = None
    if args.work:
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
    else:
        work_tmp = tempfile.TemporaryDirectory(prefix="devcert-soak-")
        work = Path(work_tmp.name)

    log(f"soak: minting the PKI in {work}")
    pki = Pki(work / "pki")
    churned = [pki.device(f"5a{i:02x}") for i in range(8)]
    held = [pki.device(f"5b{i:02x}") for i in range(args.holders)]
    idle = [pki.device(f"5c{i:02x}") for i in range(2)]
    everyone = churned + held + idle
    model = Model([d.serial for d in everyone])
    report = Report()

    broker = Broker(work / "broker", pki, options={"admin_rate_limit": "100000"}, admin_socket=True,
                    extra_config="connection_messages false\n")
    broker.start()
    pid = broker.proc.pid
    for dev in everyone:
        status, body = broker.admin("RegisterDeviceCertificate", DeviceContent=dev.pem())
        assert status == 200, body

    stop = threading.Event()
    contexts = {d.serial: tls_context(pki, d) for d in everyone}

    def churn(index):
        r = random.Random(rng.random())
        fresh_ids = args.ids == "fresh" or (args.ids == "mixed" and index % 2 == 1)
        while not stop.is_set():
            dev = r.choice(churned)
            if fresh_ids:
                cid = (uuid.uuid4().hex * (args.fresh_id_bytes // 32 + 1))[:args.fresh_id_bytes]
            else:
                cid = f"soak-{dev.serial}-{index}"
            t0 = time.monotonic()
            outcome = connect_once(broker.tls_port, contexts[dev.serial], cid)
            t1 = time.monotonic()
            report.count("connections")
            if outcome.startswith("error"):
                report.count("transport_errors")
                report.count(outcome)
                continue
            report.count(outcome + ("_fresh_id" if fresh_ids else "_reused_id"))
            if model.changing_near(dev.serial, t0, t1, args.race_window):
                report.count("in_race_window")
                continue
            expected = "accepted" if model.status_at(dev.serial, t0) == "1" else "refused"
            if outcome != expected:
                report.wrong_outcome(f"device {dev.serial} {outcome}, expected {expected} "
                                     f"(status {model.status_at(dev.serial, t0)}, client id {cid[:40]})")

    def hold(dev):
        n = 0
        while not stop.is_set():
            n += 1
            t0 = time.monotonic()
            try:
                c = RawMqtt5(broker, dev, f"soak-held-{dev.serial}", timeout=10.0)
            except Exception as e:
                report.count("transport_errors")
                report.count(f"error: held {type(e).__name__}")
                time.sleep(0.2)
                continue
            t1 = time.monotonic()
            report.count("held_sessions")
            accepted = c.connack == 0
            near = model.changing_near(dev.serial, t0, t1, args.race_window)
            expected = model.status_at(dev.serial, t0) == "1"
            if not near and accepted != expected:
                report.wrong_outcome(f"held device {dev.serial} CONNACK {c.connack:#x} with status "
                                     f"{'1' if expected else '0'}")
            if accepted:
                until = time.monotonic() + random.uniform(1.0, 4.0)
                while not stop.is_set() and time.monotonic() < until:
                    reason = c.wait_disconnect(0.1)
                    if reason is not None:
                        report.count("kicks_seen")
                        break
                    since = model.inactive_since(dev.serial)
                    if since is not None and time.monotonic() > since + args.kick_window:
                        report.wrong_outcome(f"held device {dev.serial} still connected "
                                             f"{time.monotonic() - since:.1f} s after its inactivation")
                        break
            c.close()
            if not accepted:
                time.sleep(0.1)  # refused: try again shortly, not in a tight loop

    def admin():
        r = random.Random(rng.random())
        period = 1.0 / args.admin_rate
        next_call = time.monotonic()
        while not stop.is_set():
            next_call += period
            dev = r.choice(everyone)
            target = "0" if model.status[dev.serial] == "1" and r.random() < 0.6 else "1"
            action = "InactivateDeviceCertificate" if target == "0" else "ActiveDeviceCertificate"
            sent = time.monotonic()
            model.begin(dev.serial, sent)
            try:
                status, body = broker.admin(action, CaSn=CA, DeviceSn=dev.serial)
            except Exception as e:
                report.wrong_outcome(f"admin {action} {dev.serial}: {type(e).__name__}: {e}")
                stop.set()
                return
            if status != 200:
                report.wrong_outcome(f"admin {action} {dev.serial}: HTTP {status} {body}")
            else:
                model.end(dev.serial, sent, time.monotonic(), target)
            report.count("admin_calls")
            time.sleep(max(0.0, next_call - time.monotonic()))

    threads = [threading.Thread(target=churn, args=(i,), daemon=True) for i in range(args.churn_threads)]
    threads += [threading.Thread(target=hold, args=(d,), daemon=True) for d in held]
    threads.append(threading.Thread(target=admin, daemon=True))
    start = time.monotonic()
    for t in threads:
        t.start()
    log(f"soak: {args.duration:.0f} s of churn ({args.churn_threads} threads, ids {args.ids}), "
        f"{args.holders} held sessions, {args.admin_rate:g} admin calls/s; broker pid {pid}")

    samples = []  # (seconds since start, rss kB, fds)
    last_log = 0.0
    while time.monotonic() - start < args.duration and not stop.is_set():
        if broker.proc.poll() is not None:
            report.wrong_outcome(f"the broker exited with {broker.proc.returncode}")
            break
        rss, fds = sample(pid)
        now = time.monotonic() - start
        samples.append((now, rss, fds))
        if now - last_log >= 60 or not last_log:
            last_log = now or 0.001
            log(f"soak: {now:6.0f} s  rss {rss / 1024:.1f} MiB  fds {fds}  {dict(sorted(report.counts.items()))}")
        time.sleep(min(args.sample_every, max(0.0, args.duration - now)))
    stop.set()
    for t in threads:
        t.join(30)
    if broker.proc.poll() is None:
        rss, fds = sample(pid)
        samples.append((time.monotonic() - start, rss, fds))
        broker.stop()

    warmup = min(60.0, args.duration / 4)
    steady = [s for s in samples if s[0] >= warmup] or samples
    rss_first, rss_last = steady[0][1], steady[-1][1]
    fd_first, fd_last = steady[0][2], steady[-1][2]
    result = {
        "duration_s": round(time.monotonic() - start, 1),
        "ids": args.ids,
        "counts": dict(sorted(report.counts.items())),
        "connections_per_s": round(report.counts.get("connections", 0) / max(1.0, args.duration), 1),
        "warmup_s": warmup,
        "rss_mib_first": round(rss_first / 1024, 2),
        "rss_mib_last": round(rss_last / 1024, 2),
        "rss_mib_max": round(max(s[1] for s in steady) / 1024, 2),
        "rss_kib_per_min": round(slope_per_minute([(t, r) for t, r, _ in steady]), 1),
        "fds_first": fd_first,
        "fds_last": fd_last,
        "fds_max": max(s[2] for s in steady),
        "fds_per_min": round(slope_per_minute([(t, f) for t, _, f in steady]), 3),
        "wrong_outcomes": report.wrong,
    }
    failures = []
    if report.wrong:
        failures.append(f"{len(report.wrong)} wrong outcomes")
    if (rss_last - rss_first) / 1024 > args.max_rss_growth_mb:
        failures.append(f"RSS grew {(rss_last - rss_first) / 1024:.1f} MiB after the warm-up "
                        f"(limit {args.max_rss_growth_mb:g})")
    if fd_last - fd_first > args.max_fd_growth:
        failures.append(f"open file descriptors grew by {fd_last - fd_first} (limit {args.max_fd_growth})")
    connections = report.counts.get("connections", 0)
    if connections == 0 or report.counts.get("transport_errors", 0) > max(5, connections // 100):
        failures.append(f"{report.counts.get('transport_errors', 0)} transport errors in {connections} connections")
    result["failures"] = failures

    log(f"soak: {connections} connections ({result['connections_per_s']}/s), "
        f"{report.counts.get('admin_calls', 0)} admin calls, {report.counts.get('kicks_seen', 0)} kicks seen")
    log(f"soak: RSS after warm-up {result['rss_mib_first']} -> {result['rss_mib_last']} MiB "
        f"(max {result['rss_mib_max']}, slope {result['rss_kib_per_min']} KiB/min); "
        f"fds {fd_first} -> {fd_last} (max {result['fds_max']})")
    log("soak: " + ("; ".join(failures) if failures else "no wrong outcome, no growth beyond the limits"))
    print(json.dumps(result))
    if work_tmp is not None:
        work_tmp.cleanup()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
