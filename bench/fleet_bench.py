#!/usr/bin/python3
"""Fleet benchmarks: Debian's mosquitto with the plugin in fleet mode, a
durable PostgreSQL 15 (fsync on) on the same machine, started by the script
as in the tests (an unprivileged user, a UNIX socket).

    bench/fleet_bench.py --build build                     # every scenario, 5 runs each
    bench/fleet_bench.py --build build kick writes         # only these
    bench/fleet_bench.py --build build --tiny              # seconds each (CI)

Scenarios:
  kick       three brokers; an MQTT 5 client on broker C, the device
             inactivated through broker A's admin socket: time from A's
             response to C's DISCONNECT (0x98). Idle, then with every broker
             taking connection load (devcert_loadgen on each).
  fanout     one writer broker and 100 follower brokers (real brokers, each
             with its own replica and one session of the device): time from
             the writer's response to each follower's DISCONNECT.
  writes     three brokers, 8 caller processes spread over their admin
             sockets, each inactivating distinct active devices in a closed
             loop (every call a durable change acknowledged after
             PostgreSQL's commit); then one caller paced at 100/s. Each
             run also gives the share of the machine's CPU time the
             hypervisor gave to other guests during each part (steal):
             compare versions on runs with little of it.
  bootstrap  a broker with an empty replica joins a fleet of 1,000,000
             devices with PEMs, then one of 10,000,000 without: time from
             launch until it serves from the complete replica. Then a running
             broker that fell behind the retained log (stopped with SIGSTOP
             while 3 x the retention was written and trimmed) rebuilds while
             devcert_loadgen connects active devices to it: refusals counted.
  outage     three brokers under connection load (devices known active,
             known inactive, and new ones auto-registered); PostgreSQL
             stopped for 60 s, then started: wrong connection outcomes, and
             the time until every broker is at the fleet's head with no
             registration queued.

Each scenario runs --runs times (default 5) on fresh brokers and prints each
run, the median and the range; --json-out keeps everything. Stores and the
PKI are made once under --work (default /var/tmp/devcert-fleet-bench).
"""

import argparse
import json
import os
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from admin_bench import AdminClient, MqttDevice, active_serials, expect_ok, inactivation_run, percentile, timed_kick
from bench_common import Tools, busy_cpu_ms, cpu_ticks, fill_store, log, steal_pct
from fleet_common import BENCH_DIR, FleetDb, Member, start_pg, stop_all

KICK_DEVICE = "dev-0001"
PKI_DEVICES = 32
KNOWN_DEVICES = 8
KICK_SN = "0d000001"
CA_SN = "0ca1"


def ms(seconds):
    return round(seconds * 1000, 2)


def summary(values):
    return {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else {}


# ------------------------------------------------------------------ helpers

def connect_device(port, pki, client_id, timeout=10.0):
    """An accepted MQTT 5 session of KICK_DEVICE; retries while the broker
    still refuses it (a change not applied there yet)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return MqttDevice(port, pki, KICK_DEVICE, client_id)
        except (RuntimeError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def call_ok(client, action, **params):
    status, body = client.call(action, **params)
    expect_ok(status, body, action)
    return json.loads(body)


def load_list(work, pki, exclude=()):
    lst = work / "load-certs.txt"
    lst.write_text("".join(f"{c} {c.with_suffix('.key')}\n" for c in sorted((pki / "devices").glob("*.crt"))
                           if c.stem not in exclude))
    return lst


def start_loadgen(tools, port, pki, cert_list, prefix, concurrency=4):
    return subprocess.Popen([str(tools.loadgen), "--port", str(port), "--cert-list", str(cert_list), "--ca",
                             str(pki / "ca.crt"), "--concurrency", str(concurrency), "--connections", "100000000",
                             "--time-limit", "3600", "--json", "--client-id-prefix", prefix],
                            stdout=subprocess.PIPE, text=True)


def stop_loadgen(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    lines = (out or "").strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def refused(result):
    return sum(result.get("refused", {}).values())


def unanswered(result):
    return sum(result.get(k, 0) for k in ("tls_failures", "tcp_failures", "closed_before_connack",
                                          "protocol_errors", "timeouts"))


def fleet_stats(client):
    return call_ok(client, "GetStats")["Data"]["Fleet"]


def start_three(ctx, work):
    """Brokers a, b and c of the main fleet, started together."""
    members = [Member(ctx.tools, work / n, ctx.pki, ctx.fleet.conninfo) for n in "abc"]
    for m in members:
        m.launch()
    for m in members:
        m.wait_ready()
    return members


# ------------------------------------------------------------------ kick

def kick_run(ctx, run, under_load):
    work = ctx.run_dir(f"kick-{'load' if under_load else 'idle'}-{run}")
    members = start_three(ctx, work)
    a, c = members[0], members[2]
    loads = []
    try:
        admin = AdminClient(a.admin_socket)
        if under_load:
            lst = load_list(work, ctx.known, exclude=(KICK_DEVICE,))
            loads = [start_loadgen(ctx.tools, m.tls_port, ctx.pki, lst, f"load-{m.work.name}") for m in members]
            time.sleep(1.0)
        # Since the response: a DISCONNECT that came before it (C applied the
        # change while A was still answering) counts as the time to read it.
        lat, since_request, reasons = [], [], {}
        for t in range(ctx.args.trials):
            dev = connect_device(c.tls_port, ctx.pki, f"kick-{run}-{t}")
            since_response, since, reason = timed_kick(admin, dev, CA_SN, KICK_SN, timeout=10)
            lat.append(since_response)
            since_request.append(since)
            reasons[reason] = reasons.get(reason, 0) + 1
            dev.close()
            call_ok(admin, "ActiveDeviceCertificate", CaSn=CA_SN, DeviceSn=KICK_SN)
        admin.close()
        load_results = [stop_loadgen(p) for p in loads]
        loads = []
    finally:
        for p in loads:
            stop_loadgen(p)
        stop_all(members)
    r = {"trials": len(lat), "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)),
         "max_ms": ms(max(lat)), "since_request_p50_ms": ms(percentile(since_request, 50)),
         "since_request_p99_ms": ms(percentile(since_request, 99)), "reasons": {("close" if k == -1 else f"{k:#04x}"): v for k, v in reasons.items()}}
    if under_load:
        r["load_connections"] = sum(x.get("connections", 0) for x in load_results)
        r["load_per_s"] = round(sum(x.get("connections_per_s", 0) for x in load_results), 1)
    if set(reasons) != {0x98}:
        r["error"] = f"expected DISCONNECT 0x98 every time, got {r['reasons']}"
    return r


# ------------------------------------------------------------------ fan-out

def fanout_run(ctx, run, followers):
    """One run on `followers` (already serving): trials of one change each."""
    writer, members = followers[0], followers[1:]
    admin = AdminClient(writer.admin_socket)
    lat, since_request, per_trial, errors = [], [], [], []
    for t in range(ctx.args.fanout_trials):
        sessions = {}
        for i, m in enumerate(members):
            sessions[i] = connect_device(m.tls_port, ctx.pki, f"fan-{run}-{t}-{i}")
        sel = selectors.DefaultSelector()
        for i, dev in sessions.items():
            sel.register(dev.sock, selectors.EVENT_READ, i)
        t_req = time.monotonic()
        call_ok(admin, "InactivateDeviceCertificate", CaSn=CA_SN, DeviceSn=KICK_SN)
        t0 = time.monotonic()
        pending = set(sessions)
        trial = []
        while pending and time.monotonic() - t0 < 10:
            for key, _ in sel.select(timeout=0.5):
                i = key.data
                now = time.monotonic()
                reason = sessions[i].wait_disconnect(timeout=1)
                if reason != 0x98:
                    errors.append(f"follower {i}: DISCONNECT {reason}")
                trial.append(now - t0)
                since_request.append(now - t_req)
                sel.unregister(sessions[i].sock)
                pending.discard(i)
        if pending:
            errors.append(f"trial {t}: {len(pending)} followers saw nothing within 10 s")
        sel.close()
        for dev in sessions.values():
            dev.close()
        lat += trial
        per_trial.append(max(trial) if trial else 0.0)
        call_ok(admin, "ActiveDeviceCertificate", CaSn=CA_SN, DeviceSn=KICK_SN)
    admin.close()
    r = {"followers": len(members), "trials": ctx.args.fanout_trials, "observations": len(lat),
         "p50_ms": ms(percentile(lat, 50)), "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(max(lat)),
         "since_request_p99_ms": ms(percentile(since_request, 99)),
         "last_follower_p50_ms": ms(percentile(per_trial, 50))}
    if errors:
        r["error"] = "; ".join(errors[:5])
    return r


def fanout(ctx):
    work = ctx.run_dir("fanout")
    n = ctx.args.followers
    # A fleet of its own, small: a hundred replicas of the large one would
    # only measure a hundred bootstraps at once.
    fleet = FleetDb(ctx.pg, ctx.tools.devcertctl)
    fleet.init(fill_store(ctx.tools.fill_store, ctx.work / "store-1000", ctx.known, 1000))
    members = [Member(ctx.tools, work / f"w{i:03d}", ctx.pki, fleet.conninfo, admin=(i == 0),
                      extra=["plugin_opt_fleet_trim_interval 0"] if i else []) for i in range(n + 1)]
    runs = []
    try:
        t0 = time.monotonic()
        for m in members:
            m.launch()
        for m in members:
            m.wait_ready()
        log(f"fanout: {n + 1} brokers serving after {time.monotonic() - t0:.1f} s")
        for run in range(1, ctx.args.runs + 1):
            r = fanout_run(ctx, run, members)
            ctx.report("fanout", run, r, f"{r['observations']} observations, p50 {r['p50_ms']} ms, "
                       f"p99 {r['p99_ms']} ms, max {r['max_ms']} ms")
            runs.append(r)
    finally:
        stop_all(members)
    return runs


# ------------------------------------------------------------------ writes

def writes_run(ctx, run, serials):
    work = ctx.run_dir(f"writes-{run}")
    members = start_three(ctx, work)
    try:
        head0 = ctx.fleet.head()
        per = ctx.args.write_calls
        sockets = [m.admin_socket for m in members]
        ticks = cpu_ticks()
        closed = inactivation_run(sockets, 8, per, serials[:8 * per], 0, False)
        after = cpu_ticks()
        closed["steal_pct"] = steal_pct(ticks, after)
        # Everything on the machine (brokers, PostgreSQL, callers) per change.
        closed["cpu_ms_per_change"] = round(busy_cpu_ms(ticks, after) / max(1, closed["calls"]), 3)
        paced_n = int(100 * ctx.args.paced_seconds)
        ticks = cpu_ticks()
        paced = inactivation_run(sockets[:1], 1, paced_n, serials[8 * per:8 * per + paced_n], 100, False)
        paced["steal_pct"] = steal_pct(ticks, cpu_ticks())
        committed = ctx.fleet.head() - head0
    finally:
        stop_all(members)
    for part in (closed, paced):
        part["per_s"] = round(part["per_s"])
    r = {"closed_loop_8": closed, "paced_100": paced, "changes_committed": committed}
    if closed["errors"] or paced["errors"] or committed != closed["calls"] + paced["calls"]:
        r["error"] = (f"errors {closed['errors']}+{paced['errors']}, {committed} changes committed for "
                      f"{closed['calls'] + paced['calls']} calls")
    return r


# ------------------------------------------------------------------ bootstrap

def bootstrap_join(ctx, fleet, label, run, records):
    work = ctx.run_dir(f"boot-{label}-{run}")
    m = Member(ctx.tools, work, ctx.pki, fleet.conninfo, admin=True)
    try:
        seconds = m.start(timeout=900)
        admin = AdminClient(m.admin_socket)
        data = call_ok(admin, "GetStats")["Data"]
        admin.close()
        rss = 0
        for line in Path(f"/proc/{m.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) * 1024
    finally:
        m.stop()
    size = sum(f.stat().st_size for f in m.replica.iterdir() if f.is_file())
    shutil.rmtree(work, ignore_errors=True)
    devices = data["DeviceCount"]
    r = {"records": records, "serving_s": round(seconds, 2), "fleet_position": data["Fleet"]["Position"],
         "fleet_head": data["Fleet"]["Head"], "replica_bytes": size, "peak_rss": rss, "stats_devices": devices}
    if data["Fleet"]["Position"] != fleet.head() or devices != fleet.devices():
        r["error"] = (f"replica at {data['Fleet']['Position']} with {devices} devices, fleet head {fleet.head()} "
                      f"with {fleet.devices()}")
    return r


def rebuild_while_serving(ctx, fleet, run):
    """Broker B falls behind the retained log while stopped, then rebuilds
    while devcert_loadgen connects active devices to it."""
    work = ctx.run_dir(f"rebuild-{run}")
    retention = ctx.args.retention
    extra = [f"plugin_opt_change_log_retention {retention}", "plugin_opt_fleet_trim_interval 1"]
    a = Member(ctx.tools, work / "a", ctx.pki, fleet.conninfo, extra=extra)
    b = Member(ctx.tools, work / "b", ctx.pki, fleet.conninfo, extra=extra)
    members = [a, b]
    load = None
    try:
        a.start(timeout=900)
        b.start(timeout=900)
        b_admin = AdminClient(b.admin_socket)
        resyncs0 = fleet_stats(b_admin)["Resyncs"]
        b_admin.close()
        os.kill(b.proc.pid, signal.SIGSTOP)
        admin = AdminClient(a.admin_socket)
        sns, _ = active_serials(1 + (run - 1) * 2 * retention, 3 * retention // 2)
        for sn in sns:  # 2 changes each
            call_ok(admin, "InactivateDeviceCertificate", CaSn=CA_SN, DeviceSn=sn)
            call_ok(admin, "ActiveDeviceCertificate", CaSn=CA_SN, DeviceSn=sn)
        admin.close()
        deadline = time.monotonic() + 30
        while int(fleet.sql("SELECT trimmed_through FROM devcert.instances WHERE instance_id = 'bench'")) < \
                fleet.head() - retention - 10:
            if time.monotonic() > deadline:
                raise RuntimeError("the fleet's log was not trimmed within 30 s")
            time.sleep(0.2)
        lst = load_list(work, ctx.known)
        t0 = time.monotonic()
        os.kill(b.proc.pid, signal.SIGCONT)
        load = start_loadgen(ctx.tools, b.tls_port, ctx.pki, lst, "rebuild", concurrency=4)
        b_admin = AdminClient(b.admin_socket)
        head = fleet.head()
        while True:
            f = fleet_stats(b_admin)
            if f["Resyncs"] > resyncs0 and f["Position"] >= head:
                break
            if time.monotonic() - t0 > 600:
                raise RuntimeError(f"B did not rebuild within 600 s: {f}")
            time.sleep(0.05)
        rebuilt = time.monotonic() - t0
        b_admin.close()
        time.sleep(0.5)
        result = stop_loadgen(load)
        load = None
    finally:
        if load:
            stop_loadgen(load)
        if b.proc and b.proc.poll() is None:
            os.kill(b.proc.pid, signal.SIGCONT)
        stop_all(members)
    shutil.rmtree(work, ignore_errors=True)
    r = {"rebuild_s": round(rebuilt, 2), "connections": result.get("connections", 0),
         "accepted": result.get("accepted", 0), "refused": refused(result), "unanswered": unanswered(result)}
    if r["refused"] or r["unanswered"] or not r["accepted"]:
        r["error"] = f"during the rebuild: {r}"
    return r


def bootstrap(ctx):
    out = {}
    for label, records, small in (("1m-pem", ctx.args.boot_records, False),
                                  ("10m-small", ctx.args.boot_records_small, True)):
        store = fill_store(ctx.tools.fill_store, ctx.work / f"store-{records}{'-small' if small else ''}", ctx.known,
                           records, small=small)
        fleet = FleetDb(ctx.pg, ctx.tools.devcertctl)
        migrate_s = fleet.init(store)
        log(f"bootstrap {label}: fleet of {fleet.devices()} devices, migrated in {migrate_s:.1f} s")
        runs = []
        for run in range(1, ctx.args.runs + 1):
            r = bootstrap_join(ctx, fleet, label, run, records)
            r["migrate_s"] = round(migrate_s, 1)
            ctx.report(f"bootstrap {label}", run, r, f"serving after {r['serving_s']} s, replica "
                       f"{r['replica_bytes'] / 1e9:.2f} GB, peak RSS {r['peak_rss'] / 1e6:.0f} MB")
            runs.append(r)
        out[label] = runs
        if not small:
            rebuilds = []
            for run in range(1, ctx.args.runs + 1):
                r = rebuild_while_serving(ctx, fleet, run)
                ctx.report("rebuild while serving", run, r, f"rebuilt in {r['rebuild_s']} s; "
                           f"{r['accepted']} accepted, {r['refused']} refused, {r['unanswered']} unanswered")
                rebuilds.append(r)
            out["rebuild-while-serving"] = rebuilds
        ctx.pg.psql(ctx.pg.conninfo(), f"DROP DATABASE {fleet.conninfo.rpartition('=')[2]}")
    return out


# ------------------------------------------------------------------ outage

def outage_run(ctx, run):
    work = ctx.run_dir(f"outage-{run}")
    members = start_three(ctx, work)
    loads = {}
    try:
        admin = AdminClient(members[0].admin_socket)
        # Known active: the fleet's devices but dev-0002, which is known
        # inactive; new to the fleet: devices of the PKI the fleet was not
        # filled with, four a run, auto-registered on their first connection
        # (during the outage: queued).
        call_ok(admin, "InactivateDeviceCertificate", CaSn=CA_SN, DeviceSn="0d000002")
        for m in members:
            c = AdminClient(m.admin_socket)
            head = ctx.fleet.head()
            while fleet_stats(c)["Position"] < head:
                time.sleep(0.01)
            c.close()
        active = load_list(work / "a", ctx.known, exclude=("dev-0002",))
        inactive = work / "inactive.txt"
        inactive.write_text(f"{ctx.pki / 'devices/dev-0002.crt'} {ctx.pki / 'devices/dev-0002.key'}\n")
        fresh = work / "new.txt"
        fresh.write_text("".join(f"{ctx.pki / 'devices' / d}.crt {ctx.pki / 'devices' / d}.key\n"
                                 for d in ctx.new_devices(run)))
        for m in members:
            n = m.work.name
            loads[(n, "active")] = start_loadgen(ctx.tools, m.tls_port, ctx.pki, active, f"act-{n}", 2)
            loads[(n, "inactive")] = start_loadgen(ctx.tools, m.tls_port, ctx.pki, inactive, f"ina-{n}", 1)
            loads[(n, "new")] = start_loadgen(ctx.tools, m.tls_port, ctx.pki, fresh, f"new-{n}", 1)
        time.sleep(ctx.args.outage_lead)
        ctx.pg.stop()
        down = time.monotonic()
        status, _ = admin.call("InactivateDeviceCertificate", CaSn=CA_SN, DeviceSn="0d000003")
        write_during = status
        time.sleep(max(0.0, ctx.args.outage_seconds - (time.monotonic() - down)))
        ctx.pg.start()
        back = time.monotonic()
        clients = [AdminClient(m.admin_socket) for m in members]
        caught = {}
        while len(caught) < len(members):
            head = ctx.fleet.head()
            for m, c in zip(members, clients):
                if m.work.name in caught:
                    continue
                f = fleet_stats(c)
                if f["Connected"] and f["QueuedRegistrations"] == 0 and f["Position"] == head == ctx.fleet.head():
                    caught[m.work.name] = time.monotonic() - back
            if time.monotonic() - back > 120:
                raise RuntimeError(f"not caught up 120 s after the outage: {caught}")
            time.sleep(0.01)
        for c in clients:
            c.close()
        time.sleep(ctx.args.outage_lead)
        results = {k: stop_loadgen(p) for k, p in loads.items()}
        loads = {}
        admin.close()
    finally:
        for p in loads.values():
            stop_loadgen(p)
        stop_all(members)
    wrong = 0
    totals = {"active": [0, 0], "inactive": [0, 0], "new": [0, 0]}
    for (n, kind), res in results.items():
        acc, ref = res.get("accepted", 0), refused(res)
        totals[kind][0] += acc
        totals[kind][1] += ref
        wrong += acc if kind == "inactive" else ref
        wrong += unanswered(res)
    r = {"outage_s": round(back - down, 1), "write_during_outage_http": write_during,
         "caught_up_s": {k: round(v, 3) for k, v in sorted(caught.items())},
         "caught_up_max_s": round(max(caught.values()), 3), "wrong_outcomes": wrong,
         "accepted_refused": totals}
    if wrong or write_during != 503:
        r["error"] = f"{wrong} wrong outcomes, write during the outage answered {write_during}"
    return r


# ------------------------------------------------------------------ main

class Context:
    def __init__(self, args):
        self.args = args
        self.tools = Tools(args.build, "fleet_bench")
        self.work = Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.runs_dir = Path(tempfile.mkdtemp(prefix="runs-", dir=self.work))
        self.pki = self.work / "pki"
        self.results = {}
        self.failed = False

    def run_dir(self, name):
        d = self.runs_dir / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def report(self, scenario, run, r, text):
        if "error" in r:
            self.failed = True
            log(f"{scenario} run {run}: FAILED: {r['error']}")
        else:
            log(f"{scenario} run {run}: {text}")

    def prepare_pki(self):
        """PKI_DEVICES device certificates; the fleets know the first
        KNOWN_DEVICES (a directory of links to them), the others are new
        devices for the outage runs, four a run."""
        marker = self.pki / "devices" / "serials.txt"
        if not (marker.exists() and len(marker.read_text().split()) == PKI_DEVICES):
            shutil.rmtree(self.pki, ignore_errors=True)
            subprocess.run([str(BENCH_DIR / "pki.sh"), str(self.pki), str(PKI_DEVICES)], check=True,
                           stdout=subprocess.DEVNULL)
        self.known = self.work / "pki-known"
        (self.known / "devices").mkdir(parents=True, exist_ok=True)
        for f in ("ca.crt", "ca.key", "server.crt", "server.key"):
            if not (self.known / f).exists():
                (self.known / f).symlink_to(self.pki / f)
        for i in range(1, KNOWN_DEVICES + 1):
            for ext in ("crt", "key"):
                link = self.known / "devices" / f"dev-{i:04d}.{ext}"
                if not link.exists():
                    link.symlink_to(self.pki / "devices" / f"dev-{i:04d}.{ext}")

    def new_devices(self, run):
        first = KNOWN_DEVICES + 1 + 4 * (run - 1)
        if first + 3 > PKI_DEVICES:
            sys.exit(f"fleet_bench: the PKI has new devices for {(PKI_DEVICES - KNOWN_DEVICES) // 4} outage runs")
        return [f"dev-{i:04d}" for i in range(first, first + 4)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", default=["kick", "fanout", "writes", "bootstrap", "outage"])
    ap.add_argument("--build", default=os.environ.get("DEVCERT_BUILD_DIR", str(BENCH_DIR.parent / "build")))
    ap.add_argument("--work", help="PKI, stores and runs (default /var/tmp/devcert-fleet-bench, "
                    "a temporary directory with --tiny)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--trials", type=int, default=100, help="kicks per kick run (default 100)")
    ap.add_argument("--followers", type=int, default=100, help="fan-out followers (default 100)")
    ap.add_argument("--fanout-trials", type=int, default=10, help="changes per fan-out run (default 10)")
    ap.add_argument("--write-calls", type=int, default=1500, help="calls per caller, closed loop (default 1500)")
    ap.add_argument("--paced-seconds", type=float, default=10.0, help="length of the 100/s run (default 10)")
    ap.add_argument("--records", type=int, default=100_000, help="devices in the kick/writes/outage fleet")
    ap.add_argument("--boot-records", type=int, default=1_000_000)
    ap.add_argument("--boot-records-small", type=int, default=10_000_000)
    ap.add_argument("--retention", type=int, default=1000, help="change-log retention of the rebuild runs")
    ap.add_argument("--outage-seconds", type=float, default=60.0)
    ap.add_argument("--outage-lead", type=float, default=5.0, help="load before and after the outage, s")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, one run: checks that everything runs")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    known = {"kick", "fanout", "writes", "bootstrap", "outage"}
    if set(args.scenarios) - known:
        sys.exit(f"fleet_bench: unknown scenario(s) {sorted(set(args.scenarios) - known)}; known: {sorted(known)}")
    if args.runs < 1 or args.trials < 1 or args.followers < 1:
        sys.exit("fleet_bench: --runs, --trials and --followers must be at least 1")
    temp = None
    if args.tiny:
        args.runs, args.trials, args.followers, args.fanout_trials = 1, 5, 3, 2
        args.write_calls, args.paced_seconds, args.records = 20, 0.2, 2_000
        args.boot_records, args.boot_records_small = 2_000, 3_000
        args.outage_seconds, args.outage_lead = 2.0, 0.5
        if not args.work:
            temp = tempfile.mkdtemp(prefix="devcert-fleet-bench-")
            args.work = temp
    args.work = args.work or "/var/tmp/devcert-fleet-bench"

    ctx = Context(args)
    ctx.prepare_pki()
    ctx.pg = start_pg(max_connections=400)
    report = {"settings": {k: v for k, v in vars(args).items()}}
    try:
        needed = args.runs * (8 * args.write_calls + int(100 * args.paced_seconds)) + 10
        if needed > args.records * 9 // 10:
            sys.exit(f"fleet_bench: writes need {needed} active records, --records {args.records} holds fewer")
        if {"kick", "fanout", "writes", "outage"} & set(args.scenarios):
            store = fill_store(ctx.tools.fill_store, ctx.work / f"store-{args.records}", ctx.known, args.records)
            ctx.fleet = FleetDb(ctx.pg, ctx.tools.devcertctl)
            ctx.fleet.init(store)
        for scenario in args.scenarios:
            log(f"== {scenario}")
            try:
                run_scenario(ctx, scenario, report, needed)
            except (RuntimeError, OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                ctx.failed = True
                report.setdefault("errors", {})[scenario] = str(e)
                log(f"{scenario}: FAILED: {e}")
            if args.json_out:  # after each scenario: a later failure loses nothing
                Path(args.json_out).write_text(json.dumps(report, indent=1) + "\n")
    finally:
        ctx.pg.close()
    print(json.dumps(summarize(report)))
    if not ctx.failed:
        shutil.rmtree(ctx.runs_dir, ignore_errors=True)
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    return 1 if ctx.failed else 0


def run_scenario(ctx, scenario, report, needed):
    args = ctx.args
    if scenario == "kick":
        out = {}
        for load in (False, True):
            key = "under_load" if load else "idle"
            out[key] = []
            for run in range(1, args.runs + 1):
                r = kick_run(ctx, run, load)
                ctx.report(f"kick {key}", run, r, f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                           f"max {r['max_ms']} ms (since the request: p50 {r['since_request_p50_ms']} ms, "
                           f"p99 {r['since_request_p99_ms']} ms)" + (f", load {r['load_per_s']} conn/s" if load else ""))
                out[key].append(r)
        report["kick"] = out
    elif scenario == "fanout":
        report["fanout"] = fanout(ctx)
    elif scenario == "writes":
        serials, _ = active_serials(1, needed)
        per_run = 8 * args.write_calls + int(100 * args.paced_seconds)
        runs = []
        for run in range(1, args.runs + 1):
            r = writes_run(ctx, run, serials[(run - 1) * per_run:run * per_run])
            c, p = r["closed_loop_8"], r["paced_100"]
            ctx.report("writes", run, r, f"8 callers {c['per_s']}/s (p50 {c['p50_ms']} ms, p99 {c['p99_ms']} "
                       f"ms, CPU stolen {c['steal_pct']} %, {c['cpu_ms_per_change']} ms of CPU a change); 1 caller at 100/s: p50 {p['p50_ms']} ms, "
                       f"p99 {p['p99_ms']} ms (CPU stolen {p['steal_pct']} %)")
            runs.append(r)
        report["writes"] = runs
    elif scenario == "bootstrap":
        report["bootstrap"] = bootstrap(ctx)
    elif scenario == "outage":
        runs = []
        for run in range(1, args.runs + 1):
            r = outage_run(ctx, run)
            ctx.report("outage", run, r, f"{r['outage_s']} s down, {r['wrong_outcomes']} wrong outcomes, "
                       f"caught up after {r['caught_up_s']} s; {r['accepted_refused']}")
            runs.append(r)
        report["outage"] = runs


def summarize(report):
    """Medians and ranges over the runs of what each target is about."""
    s = {}
    for key, runs in report.get("kick", {}).items():
        s[f"kick_{key}_p99_ms"] = summary([r["p99_ms"] for r in runs])
    if "fanout" in report:
        s["fanout_p99_ms"] = summary([r["p99_ms"] for r in report["fanout"]])
    if "writes" in report:
        s["writes_8_callers_per_s"] = summary([r["closed_loop_8"]["per_s"] for r in report["writes"]])
        s["writes_100_per_s_p99_ms"] = summary([r["paced_100"]["p99_ms"] for r in report["writes"]])
        s["writes_cpu_ms_per_change"] = summary([r["closed_loop_8"]["cpu_ms_per_change"] for r in report["writes"]])
    for key, runs in report.get("bootstrap", {}).items():
        field = "rebuild_s" if key == "rebuild-while-serving" else "serving_s"
        s[f"bootstrap_{key}_{field}"] = summary([r[field] for r in runs])
    if "outage" in report:
        s["outage_wrong_outcomes"] = sum(r["wrong_outcomes"] for r in report["outage"])
        s["outage_caught_up_max_s"] = summary([r["caught_up_max_s"] for r in report["outage"]])
    return s


if __name__ == "__main__":
    sys.exit(main())
