#!/usr/bin/python3
"""Many sessions, many changes (issue 13): does the broker thread's work per
status change grow with the number of sessions the broker holds?

For each session count N and each plugin build given, a fresh Debian
mosquitto with the plugin (standalone store, open-file limit raised to the
hard limit) holds N MQTT-over-TLS sessions open (devcert_hold_sessions: N
minus the CA group from the first CA's devices, MQTT 3.1.1, plus a group of
up to --ca-devices sessions of distinct devices of a second CA, MQTT 5).
Then, --reps times, each phase --seconds long:

  idle          nothing but the held sessions: the broker thread's CPU
  stream        a paced stream of --rate InactivateDeviceCertificate /
                ActiveDeviceCertificate calls a second (alternating, on
                synthetic devices that are not connected) from --callers
                processes with keep-alive admin connections: the broker
                thread's CPU (schedstat of the thread whose tid is the pid),
                as % of one core
  stream+churn  the same stream with devcert_loadgen making new connections
                (concurrency --churn-concurrency): connections/s
  churn         the same churn without the stream: connections/s

and finally, with the stream running: --kick-trials kicks of one connected
MQTT 5 device (admin response -> DISCONNECT seen), and --ca-kicks times an
InactivateCaCertificate of the second CA reaching every session of its
group (admin response -> each DISCONNECT; the group is opened again between
them). The load average is recorded with every phase: the machine may be
shared.

    bench/many_sessions.py --build build                          # N = 0, 9500, 19000
    bench/many_sessions.py --build build --plugin before=OLD.so --plugin after=build/plugin/mosquitto_devcert.so
    bench/many_sessions.py --build build --tiny                   # seconds (CI)
    bench/many_sessions.py --summarize run1.json --summarize run2.json   # medians over several runs

It prints a readable summary on stderr and one JSON line on stdout (or
writes it to --json-out). Exit status: 0 when it ran, 1 when something
failed to run, 2 for a bad argument. It judges no target: the targets and
their verdicts are in docs/performance.md.
"""

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from admin_bench import AdminClient, MqttDevice, expect_ok, percentile, timed_kick
from bench_common import MOSQUITTO, cpus_available, free_ports, listener_lines, log, stop_broker, write_config

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
INSTANCE = "bench"  # admin_bench's AdminClient sends this MqttInstanceId
# The held sessions connect from their own loopback address, so that the
# churn's connect() calls (from 127.0.0.1) need not search past their ports
# (see hold_sessions.cpp): real devices come from many addresses.
HOLD_SOURCE = "127.0.0.2"
CA1, CA2 = "0ca1", "0ca2"
KICK_SN = "0d000001"  # dev-0001 of the first CA: never held, never churned


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """Bad arguments: one line naming the flag, exit status 2."""

    def error(self, message):
        print(f"many_sessions: {message}", file=sys.stderr)
        sys.exit(2)


def session_counts(text):
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected counts separated by commas, got '{text}'") from None
    if not counts or any(n < 0 or n > 1_000_000 for n in counts):
        raise argparse.ArgumentTypeError(f"expected counts from 0 to 1000000, got '{text}'")
    return counts


def positive(kind):
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number above 0, got '{text}'") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"expected a number above 0, got '{text}'")
        return v
    return parse


def plugin_spec(text):
    label, sep, path = text.partition("=")
    if not sep or not label or not path:
        raise argparse.ArgumentTypeError(f"expected LABEL=PATH, got '{text}'")
    return label, Path(path)


def parse_args(argv=None):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("DEVCERT_BUILD_DIR", str(REPO / "build")))
    ap.add_argument("--plugin", action="append", type=plugin_spec, metavar="LABEL=PATH",
                    help="a plugin build to measure (repeatable; default: the build's, or DEVCERT_PLUGIN)")
    ap.add_argument("--work", help="work directory; the PKI and the filled store are kept there and reused")
    ap.add_argument("--sessions", type=session_counts, default=[0, 9500, 19000],
                    help="session counts to hold, comma-separated (default 0,9500,19000)")
    ap.add_argument("--reps", type=positive(int), default=5, help="repetitions of the phases per broker (default 5)")
    ap.add_argument("--seconds", type=positive(float), default=5.0, help="length of each phase (default 5)")
    ap.add_argument("--rate", type=positive(int), default=1000, help="admin calls a second in the stream (default 1000)")
    ap.add_argument("--callers", type=positive(int), default=4, help="processes sending the stream (default 4)")
    ap.add_argument("--records", type=positive(int), default=20_000, help="synthetic records in the store (default 20000)")
    ap.add_argument("--devices", type=positive(int), default=200,
                    help="device certificates of the first CA (default 200; dev-0001 is the kicked one)")
    ap.add_argument("--ca-devices", type=positive(int), default=1000,
                    help="devices of the second CA, one session each, kicked by its inactivation (default 1000)")
    ap.add_argument("--ca-kicks", type=positive(int), default=3, help="CA inactivations per broker (default 3)")
    ap.add_argument("--kick-trials", type=positive(int), default=50, help="one-device kicks per broker (default 50)")
    ap.add_argument("--churn-concurrency", type=positive(int), default=8, help="devcert_loadgen's (default 8)")
    ap.add_argument("--no-pin", dest="pin", action="store_false",
                    help="do not pin the broker to CPU 0 and the clients to CPU 1")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (N = 0 and 50, 1 s phases): checks that it runs")
    ap.add_argument("--json-out", help="write the JSON result here instead of stdout")
    ap.add_argument("--summarize", action="append", metavar="JSON",
                    help="measure nothing: print the summary of earlier results (repeatable, merged)")
    args = ap.parse_args(argv)
    if args.tiny:
        args.sessions, args.reps, args.seconds = [0, 50], 1, 1.0
        args.records, args.devices, args.ca_devices = 2_000, 8, 20
        args.ca_kicks, args.kick_trials, args.rate = 1, 3, 200
    if args.devices < 3:
        ap.error("--devices: expected at least 3 (one kicked, one held, one churned)")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    biggest = max(args.sessions)
    if hard != resource.RLIM_INFINITY and biggest + args.churn_concurrency + 200 > hard:
        ap.error(f"--sessions: {biggest} sessions need more open files than the hard limit {hard} allows the broker")
    # Each caller alternates Inactivate and Active over its own serials.
    if args.callers * 2 > args.records * 9 // 10:
        ap.error("--records: too few for the callers")
    return args


# ------------------------------------------------------------------ measuring

def load_average():
    return [round(x, 2) for x in os.getloadavg()]


def thread_cpu_seconds(pid, tid):
    """On-CPU time of one thread: schedstat's nanoseconds when the kernel
    keeps them, else utime+stime of its stat (10 ms ticks)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def synthetic_active(count):
    """fill_store's synthetic serials that it made active (every tenth is not)."""
    out, i = [], 1
    while len(out) < count:
        if i % 10 != 0:
            out.append(f"5a{i:014x}")
        i += 1
    return out


def stream_caller(admin_socket, serials, rate, cpu, stop, queue):
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    client = AdminClient(admin_socket)
    lat, errors, k = [], 0, 0
    start = time.monotonic()
    while not stop.is_set():
        due = start + k / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.05))
            continue
        sn = serials[(k // 2) % len(serials)]
        action = "InactivateDeviceCertificate" if k % 2 == 0 else "ActiveDeviceCertificate"
        t0 = time.monotonic()
        status, _ = client.call(action, CaSn=CA1, DeviceSn=sn)
        lat.append(time.monotonic() - t0)
        errors += status != 200
        k += 1
    end = time.monotonic()
    # Leave every record as it found it: an odd count ends on an inactivation.
    if k % 2 == 1:
        client.call("ActiveDeviceCertificate", CaSn=CA1, DeviceSn=serials[(k // 2) % len(serials)])
    client.close()
    queue.put({"calls": len(lat), "errors": errors, "start": start, "end": end, "latencies": lat})


class Stream:
    """--rate admin calls a second from --callers processes until stopped."""

    def __init__(self, args, admin_socket, serials):
        self.stop_event = multiprocessing.Event()
        self.queue = multiprocessing.Queue()
        per = len(serials) // args.callers
        rate = args.rate / args.callers
        cpu = 1 if args.pin else None
        self.procs = [multiprocessing.Process(target=stream_caller, args=(
            admin_socket, serials[c * per:(c + 1) * per], rate, cpu, self.stop_event, self.queue))
            for c in range(args.callers)]
        for p in self.procs:
            p.start()

    def stop(self):
        self.stop_event.set()
        results = [self.queue.get(timeout=60) for _ in self.procs]
        for p in self.procs:
            p.join()
        lat = [x for r in results for x in r["latencies"]]
        wall = max(r["end"] for r in results) - min(r["start"] for r in results)
        return {"calls": len(lat), "errors": sum(r["errors"] for r in results),
                "per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
                "p50_ms": round(percentile(lat, 50) * 1000, 3), "p99_ms": round(percentile(lat, 99) * 1000, 3)}


# ------------------------------------------------------------------ broker and clients

class Broker:
    def __init__(self, args, run_dir, plugin, store):
        self.plain_port, self.tls_port = free_ports(2)
        self.sock_dir = Path(tempfile.mkdtemp(prefix="dcm-", dir="/tmp"))
        self.admin_socket = str(self.sock_dir / "admin.sock")
        lines = listener_lines(run_dir / "broker.log", self.plain_port, self.tls_port, args.pki,
                               cafile=args.cafile) + [
            f"plugin {plugin}",
            f"plugin_opt_instance_id {INSTANCE}",
            f"plugin_opt_db_path {store}",
            f"plugin_opt_admin_socket {self.admin_socket}",
            "plugin_opt_admin_rate_limit 1000000",
            f"plugin_opt_import_ca {args.pki / 'ca.crt'}",
            f"plugin_opt_import_ca {args.pki2 / 'ca.crt'}",
        ]
        conf = write_config(run_dir / "mosquitto.conf", lines)
        pin = ["taskset", "-c", "0"] if args.pin else []

        def raise_nofile():
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

        self.proc = subprocess.Popen(pin + [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(run_dir / "stderr.log", "wb"), preexec_fn=raise_nofile)
        self.run_dir = run_dir
        deadline = time.monotonic() + 60
        while not (os.path.exists(self.admin_socket) and self._answers()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode} at start-up, see {run_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker not ready within 60 s, see {run_dir}")
            time.sleep(0.02)

    def _answers(self):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.5):
                return True
        except OSError:
            return False

    def thread_cpu(self):
        return thread_cpu_seconds(self.proc.pid, self.proc.pid)

    def stop(self):
        status = stop_broker(self.proc, timeout=60)
        shutil.rmtree(self.sock_dir, ignore_errors=True)
        return status


class Holder:
    """A devcert_hold_sessions process holding `count` sessions."""

    def __init__(self, args, broker, cert_list, count, mqtt, prefix):
        pin = ["taskset", "-c", "1"] if args.pin else []
        self.proc = subprocess.Popen(
            pin + [str(args.hold), "--port", str(broker.tls_port), "--cert-list", str(cert_list),
                   "--ca", str(args.pki / "ca.crt"), "--sessions", str(count), "--mqtt", mqtt,
                   "--client-id-prefix", prefix, "--source", HOLD_SOURCE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.proc.stdout.readline() or '{"event":"exited"}')
        if ready.get("event") != "ready":
            raise RuntimeError(f"devcert_hold_sessions did not get ready: {ready}")
        self.ready = ready

    def report(self):
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def wait_all_ended(self, timeout):
        """The final report: when every session ended, or at the timeout."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        # communicate() closes stdin: at EOF the tool reports and exits.
        out, _ = self.proc.communicate(timeout=30)
        lines = [json.loads(x) for x in out.splitlines() if x.strip()]
        return lines[-1]

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


def churn(args, broker, seconds):
    pin = ["taskset", "-c", "1"] if args.pin else []
    out = subprocess.run(pin + [str(args.loadgen), "--port", str(broker.tls_port), "--cert-list",
                                str(args.churn_list), "--ca", str(args.pki / "ca.crt"), "--concurrency",
                                str(args.churn_concurrency), "--connections", "100000000", "--time-limit",
                                str(seconds), "--json", "--client-id-prefix", "churn"],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    r = json.loads(out)
    return {"per_s": r["connections_per_s"], "accepted": r["accepted"], "connections": r["connections"],
            "p99_ms": r["latency_ms"]["p99"]}


# ------------------------------------------------------------------ one broker

def phases(args, broker, serials):
    """One repetition of idle, stream, stream+churn, churn."""
    rep = {}
    la = load_average()
    c0 = broker.thread_cpu()
    time.sleep(args.seconds)
    rep["idle"] = {"broker_thread_pct": round((broker.thread_cpu() - c0) / args.seconds * 100, 3), "load": la}

    stream = Stream(args, broker.admin_socket, serials)
    time.sleep(0.5)  # the callers are connected and paced
    la = load_average()
    c0, p0, t0 = broker.thread_cpu(), process_cpu_seconds(broker.proc.pid), time.monotonic()
    time.sleep(args.seconds)
    c1, p1, t1 = broker.thread_cpu(), process_cpu_seconds(broker.proc.pid), time.monotonic()
    s = stream.stop()
    rep["stream"] = {"broker_thread_pct": round((c1 - c0) / (t1 - t0) * 100, 3),
                     "broker_process_pct": round((p1 - p0) / (t1 - t0) * 100, 3), "admin": s, "load": la}

    stream = Stream(args, broker.admin_socket, serials)
    time.sleep(0.5)
    la = load_average()
    c = churn(args, broker, args.seconds)
    s = stream.stop()
    rep["stream_churn"] = {"connections_per_s": c["per_s"], "churn": c, "admin": s, "load": la}

    la = load_average()
    c = churn(args, broker, args.seconds)
    rep["churn"] = {"connections_per_s": c["per_s"], "churn": c, "load": la}
    return rep


def device_kicks(args, broker):
    client = AdminClient(broker.admin_socket)
    lat, from_request, reasons = [], [], {}
    for t in range(args.kick_trials):
        dev = MqttDevice(broker.tls_port, args.pki, "dev-0001", f"kick-{t}")
        since_response, since_request, reason = timed_kick(client, dev, CA1, KICK_SN)
        lat.append(since_response)
        from_request.append(since_request)
        reasons[reason] = reasons.get(reason, 0) + 1
        dev.close()
        expect_ok(*client.call("ActiveDeviceCertificate", CaSn=CA1, DeviceSn=KICK_SN), "ActiveDeviceCertificate")
    client.close()
    return {"trials": len(lat), "latencies_ms": [round(x * 1000, 3) for x in lat],
            "p50_ms": round(percentile(lat, 50) * 1000, 3), "p99_ms": round(percentile(lat, 99) * 1000, 3),
            "max_ms": round(max(lat) * 1000, 3),
            "from_request_p99_ms": round(percentile(from_request, 99) * 1000, 3),
            "disconnect_reasons": {("close" if k == -1 else f"{k:#04x}"): v for k, v in reasons.items()}}


def ca_kick(args, broker, group):
    """Inactivates the second CA while `group` holds its sessions; returns
    the latency of each session's end from the admin response."""
    client = AdminClient(broker.admin_socket)
    cpu0 = broker.thread_cpu()
    t_request = time.monotonic()
    status, body = client.call("InactivateCaCertificate", Sn=CA2)
    t0 = time.monotonic()
    expect_ok(status, body, "InactivateCaCertificate")
    final = group.wait_all_ended(timeout=10)
    # What the kicks cost the broker thread (the stream's share in that
    # time is a few hundredths of it).
    kick_cpu = broker.thread_cpu() - cpu0
    expect_ok(*client.call("ActiveCaCertificate", Sn=CA2), "ActiveCaCertificate")
    client.close()
    ended = final["ended"]
    # From the admin response, as the target is stated; a session may end
    # before the caller has read the response (a negative latency). From
    # the request's start is the upper bound.
    lat = [t - t0 for t, _ in ended]
    from_request = [t - t_request for t, _ in ended]
    reasons = {}
    for _, r in ended:
        key = "close" if r == -1 else f"{r:#04x}"
        reasons[key] = reasons.get(key, 0) + 1
    return {"sessions": group.ready["open"], "kicked": len(ended), "still_held": final["held"],
            "first_ms": round(min(lat) * 1000, 3) if lat else None,
            "p50_ms": round(percentile(lat, 50) * 1000, 3), "p99_ms": round(percentile(lat, 99) * 1000, 3),
            "max_ms": round(max(lat) * 1000, 3) if lat else None,
            "from_request_p99_ms": round(percentile(from_request, 99) * 1000, 3),
            "admin_call_ms": round((t0 - t_request) * 1000, 3),
            "broker_thread_cpu_ms": round(kick_cpu * 1000, 3), "disconnect_reasons": reasons}


def one_broker(args, label, plugin, n, run_dir, serials):
    run_dir.mkdir(parents=True, exist_ok=True)
    store = run_dir / "store"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(args.store, store)
    group_n = min(args.ca_devices, n)
    bulk_n = n - group_n
    result = {"plugin": label, "sessions": n, "bulk_sessions": bulk_n, "ca_group_sessions": group_n,
              "reps": [], "load_start": load_average()}
    broker = Broker(args, run_dir, plugin, store)
    bulk = group = None
    failed = False
    try:
        t0 = time.monotonic()
        bulk = Holder(args, broker, args.bulk_list, bulk_n, "3", "bulk")
        group = Holder(args, broker, args.group_list, group_n, "5", "group")
        result["open_seconds"] = round(time.monotonic() - t0, 1)
        held = bulk.ready["open"] + group.ready["open"]
        result["held"] = held
        if held != n:
            raise RuntimeError(f"{label}, N={n}: only {held} sessions opened "
                               f"(failed: {bulk.ready['failed'] + group.ready['failed']})")
        log(f"{label}, N={n}: {held} sessions open in {result['open_seconds']} s")
        for r in range(args.reps):
            rep = phases(args, broker, serials)
            result["reps"].append(rep)
            log(f"  rep {r + 1}: broker thread idle {rep['idle']['broker_thread_pct']:.2f} %, "
                f"stream {rep['stream']['broker_thread_pct']:.2f} % "
                f"({rep['stream']['admin']['per_s']:.0f} calls/s), "
                f"conn/s with stream {rep['stream_churn']['connections_per_s']:.0f}, "
                f"without {rep['churn']['connections_per_s']:.0f}, load {rep['stream']['load'][0]}")
            failed |= rep["stream"]["admin"]["errors"] > 0 or rep["stream_churn"]["admin"]["errors"] > 0

        stream = Stream(args, broker.admin_socket, serials)
        try:
            time.sleep(0.5)
            result["kick_load"] = load_average()
            result["device_kick"] = device_kicks(args, broker)
            dk = result["device_kick"]
            log(f"  device kick: p50 {dk['p50_ms']:.2f} ms, p99 {dk['p99_ms']:.2f} ms, max {dk['max_ms']:.2f} ms, "
                f"DISCONNECT {dk['disconnect_reasons']}")
            result["ca_kicks"] = []
            for k in range(args.ca_kicks if group_n else 0):
                if k > 0:
                    group = Holder(args, broker, args.group_list, group_n, "5", f"group{k}")
                ck = ca_kick(args, broker, group)
                group = None
                result["ca_kicks"].append(ck)
                log(f"  CA kick {k + 1}: {ck['kicked']}/{ck['sessions']} ended, first {ck['first_ms']} ms, "
                    f"p50 {ck['p50_ms']:.2f} ms, p99 {ck['p99_ms']:.2f} ms, max {ck['max_ms']} ms, "
                    f"broker thread {ck['broker_thread_cpu_ms']:.1f} ms CPU, {ck['disconnect_reasons']}")
                failed |= ck["kicked"] != ck["sessions"]
        finally:
            result["kick_stream"] = stream.stop()
        result["bulk_still_held"] = bulk.report()["held"]
        failed |= result["bulk_still_held"] != bulk_n
    finally:
        for h in (group, bulk):
            if h:
                h.close()
        code = broker.stop()
        result["load_end"] = load_average()
    if code not in (0, -signal.SIGTERM):
        log(f"many_sessions: broker exited with {code}, see {run_dir}")
        failed = True
    return result, failed


# ------------------------------------------------------------------ summary

def med_range(values):
    if not values:
        return None
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3), "max": round(max(values), 3),
            "n": len(values)}


def summarize(result):
    reps = result["reps"]
    s = {
        "idle_broker_thread_pct": med_range([r["idle"]["broker_thread_pct"] for r in reps]),
        "stream_broker_thread_pct": med_range([r["stream"]["broker_thread_pct"] for r in reps]),
        "stream_calls_per_s": med_range([r["stream"]["admin"]["per_s"] for r in reps]),
        # The stream may fall short of --rate: the broker thread's time per call.
        "stream_broker_thread_us_per_call": med_range([
            r["stream"]["broker_thread_pct"] / r["stream"]["admin"]["per_s"] * 1e4
            for r in reps if r["stream"]["admin"]["per_s"] > 0]),
        "connections_per_s_with_stream": med_range([r["stream_churn"]["connections_per_s"] for r in reps]),
        "connections_per_s_without_stream": med_range([r["churn"]["connections_per_s"] for r in reps]),
        "load_1min": med_range([r["stream"]["load"][0] for r in reps]),
        "device_kick_p99_ms": result["device_kick"]["p99_ms"],
        "ca_kick_p99_ms": med_range([k["p99_ms"] for k in result.get("ca_kicks", [])]),
    }
    return s


def fmt(mr, unit=""):
    if mr is None:
        return "-"
    return f"{mr['median']:.2f}{unit} ({mr['min']:.2f}-{mr['max']:.2f})"


def print_summary(results):
    log("\nmany sessions, many changes: medians (min-max) over the repetitions")
    log(f"{'plugin':<10} {'N':>6} {'thread idle %':>20} {'thread stream %':>20} {'us/call':>8} {'conn/s stream':>22} "
        f"{'conn/s no stream':>22} {'dev kick p99':>13} {'CA kick p99 ms':>22} {'load':>18}")
    for r in results:
        s = r["summary"]
        log(f"{r['plugin']:<10} {r['sessions']:>6} {fmt(s['idle_broker_thread_pct']):>20} "
            f"{fmt(s['stream_broker_thread_pct']):>20} {s['stream_broker_thread_us_per_call']['median']:>8.1f} "
            f"{fmt(s['connections_per_s_with_stream']):>22} "
            f"{fmt(s['connections_per_s_without_stream']):>22} {s['device_kick_p99_ms']:>10.2f} ms "
            f"{fmt(s['ca_kick_p99_ms']):>22} {fmt(s['load_1min']):>18}")
    by_plugin = {}
    for r in results:
        by_plugin.setdefault(r["plugin"], {})[r["sessions"]] = r["summary"]
    for label, runs in by_plugin.items():
        if 0 not in runs:
            continue
        base = runs[0]
        for n, s in sorted(runs.items()):
            if n == 0:
                continue
            cpu = s["stream_broker_thread_pct"]["median"] / max(base["stream_broker_thread_pct"]["median"], 1e-9)
            conn = s["connections_per_s_with_stream"]["median"] / max(
                base["connections_per_s_with_stream"]["median"], 1e-9)
            per_call = s["stream_broker_thread_us_per_call"]["median"] / max(
                base["stream_broker_thread_us_per_call"]["median"], 1e-9)
            log(f"{label}, N={n} against N=0: broker thread with the stream x{cpu:.2f} (target at most x2; "
                f"per call x{per_call:.2f}), "
                f"connections/s with the stream x{conn:.3f} (target at least x0.95)")


# ------------------------------------------------------------------ main

def prepare(args, work):
    args.pki, args.pki2 = work / "pki", work / "pki-ca2"
    for pki, count, sn in ((args.pki, args.devices, CA1), (args.pki2, args.ca_devices, CA2)):
        marker = pki / "devices" / "serials.txt"
        if not (marker.exists() and len(marker.read_text().split()) == count):
            log(f"minting {count} device certificates of CA {sn}")
            shutil.rmtree(pki, ignore_errors=True)
            subprocess.run([str(BENCH_DIR / "pki.sh"), str(pki), str(count), sn], check=True,
                           stdout=subprocess.DEVNULL)
    args.cafile = work / "cas.pem"
    args.cafile.write_text((args.pki / "ca.crt").read_text() + (args.pki2 / "ca.crt").read_text())

    # dev-0001 is kicked; the rest of the first CA's devices are split between
    # the held sessions and the churn, so that neither shares a device.
    devs = sorted((args.pki / "devices").glob("dev-*.crt"))
    rest = [d for d in devs if d.stem != "dev-0001"]
    half = max(1, len(rest) // 2)
    args.bulk_list, args.churn_list, args.group_list = work / "bulk.txt", work / "churn.txt", work / "group.txt"
    args.bulk_list.write_text("".join(f"{c} {c.with_suffix('.key')}\n" for c in rest[:half]))
    args.churn_list.write_text("".join(f"{c} {c.with_suffix('.key')}\n" for c in rest[half:]))
    group = sorted((args.pki2 / "devices").glob("dev-*.crt"))
    args.group_list.write_text("".join(f"{c} {c.with_suffix('.key')}\n" for c in group))

    args.store = work / f"store-{args.records}"
    marker = work / f"store-{args.records}.filled"
    if not marker.exists():
        log(f"filling a store with {args.records} synthetic device records")
        shutil.rmtree(args.store, ignore_errors=True)
        subprocess.run([str(args.fill_store), "--db", str(args.store), "--ca", str(args.pki / "ca.crt"),
                        "--devices", str(args.pki / "devices"), "--count", str(args.records)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        marker.write_text("filled\n")


def versions(plugins):
    out = {}
    try:
        v = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "mosquitto"], capture_output=True, text=True)
        out["mosquitto"] = v.stdout.strip()
    except OSError:
        pass
    out["kernel"] = os.uname().release
    out["cpus"] = os.cpu_count()
    for label, path in plugins:
        out[f"plugin_{label}"] = str(path)
    try:
        out["commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                       text=True).stdout.strip()
    except OSError:
        pass
    return out


def summarize_files(paths):
    results = []
    for path in paths:
        try:
            results += json.loads(Path(path).read_text())["results"]
        except (OSError, ValueError, KeyError) as e:
            print(f"many_sessions: --summarize: cannot read '{path}': {e}", file=sys.stderr)
            return 2
    # Runs of the same plugin and session count pool their repetitions.
    merged = {}
    for r in results:
        key = (r["plugin"], r["sessions"])
        if key not in merged:
            merged[key] = r
            continue
        m = merged[key]
        m["reps"] += r["reps"]
        m["ca_kicks"] = m.get("ca_kicks", []) + r.get("ca_kicks", [])
        lat = m["device_kick"]["latencies_ms"] + r["device_kick"]["latencies_ms"]
        m["device_kick"] = {"trials": len(lat), "latencies_ms": lat, "p50_ms": round(percentile(lat, 50), 3),
                            "p99_ms": round(percentile(lat, 99), 3), "max_ms": max(lat)}
    results = list(merged.values())
    for r in results:
        r["summary"] = summarize(r)
    print_summary(results)
    return 0


def main():
    args = parse_args()
    if args.summarize:
        return summarize_files(args.summarize)
    build = Path(args.build).resolve()
    args.loadgen = build / "bench/devcert_loadgen"
    args.hold = build / "bench/devcert_hold_sessions"
    args.fill_store = build / "bench/devcert_fill_store"
    if not args.plugin:
        args.plugin = [("plugin", Path(os.environ.get("DEVCERT_PLUGIN") or build / "plugin/mosquitto_devcert.so"))]
    for p in [args.loadgen, args.hold, args.fill_store] + [p for _, p in args.plugin]:
        if not p.exists():
            print(f"many_sessions: {p} is missing: build it first", file=sys.stderr)
            return 1
    if args.pin and (cpus_available() < 2 or not shutil.which("taskset")):
        args.pin = False
    # The tools holding sessions inherit this process' limit.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    temp = None
    if args.work:
        work = Path(args.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        temp = tempfile.mkdtemp(prefix="devcert-many-")
        work = Path(temp)
    prepare(args, work)
    serials = synthetic_active(min(args.records * 9 // 10, 20_000))

    results, failed = [], False
    # Interleaved: every plugin at one session count before the next count.
    for n in args.sessions:
        for label, plugin in args.plugin:
            try:
                r, f = one_broker(args, label, plugin.resolve(), n, work / f"run-{label}-{n}", serials)
            except (RuntimeError, subprocess.CalledProcessError, OSError, ValueError) as e:
                log(f"many_sessions: {label}, N={n}: {e}")
                failed = True
                continue
            r["summary"] = summarize(r)
            results.append(r)
            failed |= f
    print_summary(results)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "plugin"}
    report = {"bench": "many_sessions", "settings": settings, "versions": versions(args.plugin),
              "results": results}
    line = json.dumps(report)
    if args.json_out:
        Path(args.json_out).write_text(line + "\n")
    else:
        print(line)
    if temp and not failed:
        shutil.rmtree(temp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
