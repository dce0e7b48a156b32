#!/usr/bin/python3
"""Connection benchmark: Debian's mosquitto in the configurations of issue 6,
interleaved (A B C A B C ...), a fresh broker for every run, broker pinned to
CPU 0 and the load generator to CPU 1.

    bench/run_connections.py --build build                # 5 rounds, every configuration
    bench/run_connections.py --build build --tiny         # seconds, tiny sizes (CI)
    bench/run_connections.py --build build --configs plain,plugin-1m --rounds 15
    bench/run_connections.py --build build --broker-env GLIBC_TUNABLES=glibc.malloc.tcache_count=2000

Configurations: plain (TLS listener, use_identity_as_username, no plugin);
plain-thread (the same with a preloaded library that starts one idle
thread: what any second thread in the broker costs); plugin-1m, plugin-10m
(the plugin on a store of 1M / 10M records, admin socket off);
plugin-1m-admin (the same with the admin socket on, the default);
fleet-1m (the plugin in fleet mode, admin socket off: a fleet of 1M records
in a durable PostgreSQL started by the script, the broker checking against
its replica, bootstrapped once before the rounds and reused by every run as
a restarted broker's would be);
crl-1k, crl-100k, crl-1m (no plugin, crlfile with that many revoked serials).

Per run it records connections/s, connect-to-CONNACK p50/p99, broker start-up
time (process start until the plain listener answers a CONNECT) and resident
memory after the run (VmRSS, and RssAnon: what is not a mapped file, i.e.
not the store's pages). It prints medians, min-max and the paired ratio of
every configuration to the first one of the same round.

The PKI, CRLs and filled stores are made once under --work and reused.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import MOSQUITTO, cpus_available, fill_store, free_ports, listener_lines, log, probe, stop_broker, write_config

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

# name -> (kind, size at full scale, size with --tiny)
CONFIGS = {
    "plain": ("plain", 0, 0),
    "plain-thread": ("plain-thread", 0, 0),
    "plugin-1m": ("plugin", 1_000_000, 2_000),
    "plugin-10m": ("plugin", 10_000_000, 20_000),
    "plugin-1m-admin": ("plugin-admin", 1_000_000, 2_000),
    "fleet-1m": ("fleet", 1_000_000, 2_000),
    "crl-1k": ("crl", 1_000, 10),
    "crl-100k": ("crl", 100_000, 100),
    "crl-1m": ("crl", 1_000_000, 1_000),
}


class Paths:
    def __init__(self, build, work):
        self.build = Path(build).resolve()
        self.work = Path(work).resolve()
        self.pki = self.work / "pki"
        self.loadgen = self._tool("bench/devcert_loadgen")
        self.make_crl = self._tool("bench/devcert_make_crl")
        self.fill_store = self._tool("bench/devcert_fill_store")
        plugin = os.environ.get("DEVCERT_PLUGIN") or str(self.build / "plugin/mosquitto_devcert.so")
        self.plugin = Path(plugin)
        self.idle_thread = self.build / "bench/devcert_idle_thread.so"
        self.devcertctl = Path(os.environ.get("DEVCERTCTL") or self.build / "admin/devcertctl")
        self.pg = None  # the PostgreSQL of the fleet configurations
        self.fleets = {}

    def _tool(self, rel):
        p = self.build / rel
        if not p.exists():
            sys.exit(f"run_connections: {p} is missing: build the bench targets first")
        return p


def prepare_pki(paths, devices):
    marker = paths.pki / "devices" / "serials.txt"
    if marker.exists() and len(marker.read_text().split()) == devices:
        return
    shutil.rmtree(paths.pki, ignore_errors=True)
    subprocess.run([str(BENCH_DIR / "pki.sh"), str(paths.pki), str(devices)], check=True,
                   stdout=subprocess.DEVNULL)


def prepare_crl(paths, count):
    out = paths.work / f"crl-{count}.pem"
    if not out.exists():
        log(f"making a CRL with {count} revoked serials")
        tmp = out.with_suffix(".tmp")
        subprocess.run([str(paths.make_crl), "--ca", str(paths.pki / "ca.crt"), "--key", str(paths.pki / "ca.key"),
                        "--count", str(count), "--out", str(tmp)], check=True, stdout=subprocess.DEVNULL)
        tmp.rename(out)
    return out


def prepare_store(paths, count):
    return fill_store(paths.fill_store, paths.work / f"store-{count}", paths.pki, count, quiet=False)


def prepare_fleet(paths, count):
    """A fleet migrated from the filled store of `count` records, on the
    PostgreSQL main() started, and a replica of it bootstrapped once; returns
    (replica, connection string)."""
    if count not in paths.fleets:
        from fleet_common import FleetDb, Member
        fleet = FleetDb(paths.pg, paths.devcertctl)
        log(f"migrating the store of {count} records into a fleet")
        seconds = fleet.init(prepare_store(paths, count))
        replica = paths.work / f"fleet-replica-{count}"
        shutil.rmtree(replica, ignore_errors=True)
        member = Member(paths, paths.work / "runs" / f"fleet-bootstrap-{count}", paths.pki, fleet.conninfo,
                        admin=False, replica=replica)
        log(f"migrated in {seconds:.1f} s; a broker's replica bootstrapped in {member.start():.1f} s")
        member.stop()
        paths.fleets[count] = (replica, fleet.conninfo)
    return paths.fleets[count]


def uses_store(kind):
    return kind in ("plugin", "plugin-admin", "fleet")


def broker_config(run_dir, kind, plain_port, tls_port, paths, crl=None, store=None, fleet=None):
    pki = paths.pki
    lines = listener_lines(run_dir / "broker.log", plain_port, tls_port, pki)
    if kind in ("plain", "plain-thread", "crl"):
        lines.append("use_identity_as_username true")
    if kind == "crl":
        lines.append(f"crlfile {crl}")
    if uses_store(kind):
        admin = f"{run_dir / 'admin.sock'}" if kind == "plugin-admin" else "off"
        lines += [
            f"plugin {paths.plugin}",
            "plugin_opt_instance_id bench",
            f"plugin_opt_db_path {store}",
            f"plugin_opt_admin_socket {admin}",
            f"plugin_opt_import_ca {pki / 'ca.crt'}",
        ] + ([f"plugin_opt_fleet {fleet}"] if fleet else [])
    return write_config(run_dir / "mosquitto.conf", lines)


def proc_status(pid):
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def thread_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def pin(cpu, pinned):
    return ["taskset", "-c", str(cpu)] if pinned else []


def run_one(paths, name, spec, args, round_no):
    kind, size = spec
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-r{round_no}-", dir=paths.work / "runs"))
    plain_port, tls_port = free_ports(2)
    crl = prepare_crl(paths, size) if kind == "crl" else None
    fleet = None
    if kind == "fleet":
        store, fleet = prepare_fleet(paths, size)
    elif uses_store(kind):
        store = prepare_store(paths, size)
    else:
        store = None
    conf = broker_config(run_dir, kind, plain_port, tls_port, paths, crl=crl, store=store, fleet=fleet)

    result = {"config": name, "round": round_no}
    t0 = time.monotonic()
    env = dict(os.environ)
    env.update(args.broker_env)
    if kind == "plain-thread":
        env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD"), str(paths.idle_thread)]))
    broker = subprocess.Popen(pin(0, args.pin) + [MOSQUITTO, "-c", str(conf)], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(run_dir / "stderr.log", "wb"))
    try:
        deadline = t0 + args.start_timeout
        while not probe(plain_port):
            if broker.poll() is not None:
                raise RuntimeError(f"{name}: broker exited with status {broker.returncode} at start-up, see {run_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: broker did not answer within {args.start_timeout} s, see {run_dir}")
            time.sleep(0.002)
        result["startup_s"] = time.monotonic() - t0
        result["rss_after_start"] = proc_status(broker.pid).get("VmRSS", 0)
        result["threads_after_start"] = thread_count(broker.pid)

        base = pin(1, args.pin) + [str(paths.loadgen), "--port", str(tls_port), "--certs", str(paths.pki / "devices"),
                                   "--ca", str(paths.pki / "ca.crt"), "--concurrency", str(args.concurrency),
                                   "--mqtt", args.mqtt, "--json", "--client-id-prefix", f"{name}-{round_no}"]
        if args.warmup:
            subprocess.run(base + ["--connections", str(args.warmup), "--time-limit", "30"], check=True,
                           stdout=subprocess.DEVNULL)
        cpu_before = cpu_seconds(broker.pid)
        out = subprocess.run(base + ["--connections", str(args.connections), "--time-limit", str(args.time_limit)],
                             check=True, stdout=subprocess.PIPE, text=True).stdout
        cpu_used = cpu_seconds(broker.pid) - cpu_before
        load = json.loads(out.strip().splitlines()[-1])
        # Broker CPU per connection: unlike connections/s, it barely moves
        # when other processes compete for the cores.
        result["broker_cpu_ms_per_conn"] = 1000 * cpu_used / max(1, load["connections"])
        result.update({
            "connections": load["connections"],
            "connections_per_s": load["connections_per_s"],
            "accepted": load["accepted"],
            "refused": load["refused"],
            "tls_failures": load["tls_failures"],
            "p50_ms": load["latency_ms"]["p50"],
            "p99_ms": load["latency_ms"]["p99"],
        })
        mem = proc_status(broker.pid)
        result["threads"] = thread_count(broker.pid)
        result["rss"] = mem.get("VmRSS", 0)
        result["rss_anon"] = mem.get("RssAnon", 0)
        result["rss_file"] = mem.get("RssFile", 0)
        if load["accepted"] != load["connections"]:
            result["error"] = f"only {load['accepted']} of {load['connections']} connections accepted"
    finally:
        stop_broker(broker)
    if broker.returncode not in (0, -signal.SIGTERM):
        result["error"] = f"broker exited with status {broker.returncode}, see {run_dir}"
    if "error" not in result and not args.keep_runs:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def fmt_mb(b):
    return f"{b / 1048576:.1f}"


def summarize(results, names):
    rows = []
    first = names[0]
    by_round = {}
    for r in results:
        by_round.setdefault(r["round"], {})[r["config"]] = r
    for name in names:
        runs = [r for r in results if r["config"] == name and "error" not in r]
        if not runs:
            rows.append({"config": name, "runs": 0})
            continue
        rates = [r["connections_per_s"] for r in runs]
        ratios, cpu_ratios = [], []
        for rnd in by_round.values():
            a, b = rnd.get(first), rnd.get(name)
            if a and b and "error" not in a and "error" not in b and a["connections_per_s"] > 0:
                ratios.append(b["connections_per_s"] / a["connections_per_s"])
                if a["broker_cpu_ms_per_conn"] > 0:
                    cpu_ratios.append(b["broker_cpu_ms_per_conn"] / a["broker_cpu_ms_per_conn"])
        med = statistics.median
        rows.append({
            "config": name,
            "runs": len(runs),
            "connections_per_s": med(rates),
            "connections_per_s_min": min(rates),
            "connections_per_s_max": max(rates),
            "paired_ratio": med(ratios) if ratios else None,
            "paired_ratio_min": min(ratios) if ratios else None,
            "paired_ratio_max": max(ratios) if ratios else None,
            "broker_cpu_ms_per_conn": med(r["broker_cpu_ms_per_conn"] for r in runs),
            "cpu_ratio": med(cpu_ratios) if cpu_ratios else None,
            "p50_ms": med(r["p50_ms"] for r in runs),
            "p99_ms": med(r["p99_ms"] for r in runs),
            "startup_s": med(r["startup_s"] for r in runs),
            "startup_s_min": min(r["startup_s"] for r in runs),
            "startup_s_max": max(r["startup_s"] for r in runs),
            "rss": med(r["rss"] for r in runs),
            "rss_anon": med(r["rss_anon"] for r in runs),
            "threads": max(r.get("threads", 0) for r in runs),
        })
    return rows


def print_table(rows, first):
    print(f"{'configuration':<15} {'runs':>4} {'conn/s':>8} {'min-max':>15} {'ratio':>6} {'ratio min-max':>13} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'cpu ms/c':>8} {'cpu ratio':>9} {'start s':>8} {'RSS MB':>7} "
          f"{'anon MB':>7} {'threads':>7}")
    for r in rows:
        if not r["runs"]:
            print(f"{r['config']:<15} {0:>4}  (every run failed)")
            continue
        ratio = "-" if r["paired_ratio"] is None else f"{r['paired_ratio']:.3f}"
        spread = "-" if r["paired_ratio"] is None else f"{r['paired_ratio_min']:.2f}-{r['paired_ratio_max']:.2f}"
        print(f"{r['config']:<15} {r['runs']:>4} {r['connections_per_s']:>8.1f} "
              f"{r['connections_per_s_min']:>7.1f}-{r['connections_per_s_max']:<7.1f} {ratio:>6} {spread:>13} "
              f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['broker_cpu_ms_per_conn']:>8.3f} "
              f"{'-' if r['cpu_ratio'] is None else format(r['cpu_ratio'], '.3f'):>9} "
              f"{r['startup_s']:>8.3f} {fmt_mb(r['rss']):>7} "
              f"{fmt_mb(r['rss_anon']):>7} {r['threads']:>7}")
    print(f"ratio: median over rounds of (configuration / {first}) measured in the same round; "
          f"cpu ms/c: broker CPU time per connection; threads: the broker's threads after the run")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.environ.get("DEVCERT_BUILD_DIR", str(REPO / "build")),
                    help="build directory holding bench/ and plugin/ (default: build)")
    ap.add_argument("--work", help="where the PKI, CRLs, stores and run directories go (default: a temp dir "
                    "for --tiny, /var/tmp/devcert-bench otherwise)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, first is the reference "
                    f"(default: {','.join(CONFIGS)})")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=3000, help="per run (default 3000)")
    ap.add_argument("--warmup", type=int, default=64, help="connections before each measured run (default 64)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per run at most (default 60)")
    ap.add_argument("--mqtt", choices=["3", "5"], default="3")
    ap.add_argument("--devices", type=int, default=32, help="distinct device certificates (default 32)")
    ap.add_argument("--start-timeout", type=float, default=120.0)
    ap.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin broker and load generator")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, one round: checks that everything runs")
    ap.add_argument("--json-out", help="write every run and the summary to this file")
    ap.add_argument("--keep-runs", action="store_true", help="keep each run's config and logs")
    ap.add_argument("--broker-env", action="append", default=[], metavar="NAME=VALUE",
                    help="set in every broker's environment (repeatable), e.g. "
                    "GLIBC_TUNABLES=glibc.malloc.tcache_count=2000")
    args = ap.parse_args()

    broker_env = {}
    for item in args.broker_env:
        key, sep, value = item.partition("=")
        if not sep or not key or not key.replace("_", "").isalnum():
            sys.exit(f"run_connections: --broker-env wants NAME=VALUE, got '{item}'")
        broker_env[key] = value
    args.broker_env = broker_env

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown or not names:
        sys.exit(f"run_connections: unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    if args.rounds < 1 or args.connections < 1 or args.concurrency < 1:
        sys.exit("run_connections: --rounds, --connections and --concurrency must be at least 1")
    if args.tiny:
        args.rounds, args.connections, args.concurrency, args.warmup, args.devices = 1, 40, 4, 4, 4
    if args.pin and (cpus_available() < 2 or not shutil.which("taskset")):
        log("fewer than 2 CPUs or no taskset: not pinning")
        args.pin = False

    temp_work = None
    if args.work:
        work = Path(args.work)
    elif args.tiny:
        temp_work = tempfile.mkdtemp(prefix="devcert-bench-")
        work = Path(temp_work)
    else:
        work = Path("/var/tmp/devcert-bench")
    (work / "runs").mkdir(parents=True, exist_ok=True)
    paths = Paths(args.build, work)
    if any(uses_store(CONFIGS[n][0]) for n in names) and not paths.plugin.exists():
        sys.exit(f"run_connections: plugin {paths.plugin} is missing (build it or set DEVCERT_PLUGIN)")
    if "plain-thread" in names and not paths.idle_thread.exists():
        sys.exit(f"run_connections: {paths.idle_thread} is missing: build the bench targets first")

    prepare_pki(paths, args.devices)
    specs = {n: (CONFIGS[n][0], CONFIGS[n][2] if args.tiny else CONFIGS[n][1]) for n in names}
    if any(kind == "fleet" for kind, _ in specs.values()):
        from fleet_common import start_pg
        paths.pg = start_pg()
    try:
        return run_rounds(args, paths, names, specs, temp_work)
    finally:
        if paths.pg:
            paths.pg.close()


def run_rounds(args, paths, names, specs, temp_work):
    for n, (kind, size) in specs.items():  # everything made before the first timed run
        if kind == "crl":
            prepare_crl(paths, size)
        elif kind == "fleet":
            prepare_fleet(paths, size)
        elif uses_store(kind):
            prepare_store(paths, size)

    log(f"configurations {', '.join(names)}; {args.rounds} rounds of {args.connections} connections, "
        f"{args.concurrency} in flight, MQTT {args.mqtt}, pinned: {args.pin}"
        + (f", broker environment {args.broker_env}" if args.broker_env else ""))
    results = []
    failed = False
    for rnd in range(1, args.rounds + 1):
        for name in names:
            try:
                r = run_one(paths, name, specs[name], args, rnd)
            except (RuntimeError, subprocess.CalledProcessError, ValueError, KeyError) as e:
                r = {"config": name, "round": rnd, "error": str(e)}
            results.append(r)
            if "error" in r:
                failed = True
                log(f"round {rnd} {name}: FAILED: {r['error']}")
            else:
                log(f"round {rnd} {name}: {r['connections_per_s']:.1f}/s cpu {r['broker_cpu_ms_per_conn']:.3f} ms/conn "
                    f"p50 {r['p50_ms']:.1f} ms "
                    f"p99 {r['p99_ms']:.1f} ms start {r['startup_s']:.3f} s RSS {fmt_mb(r['rss'])} MB "
                    f"(anon {fmt_mb(r['rss_anon'])} MB)")

    rows = summarize(results, names)
    print_table(rows, names[0])
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "runs": results, "summary": rows,
            "settings": {k: getattr(args, k) for k in ("rounds", "connections", "warmup", "concurrency", "mqtt",
                                                        "devices", "pin", "tiny", "broker_env")},
            "sizes": {n: s for n, (_, s) in specs.items()},
        }, indent=1) + "\n")
    if temp_work:
        shutil.rmtree(temp_work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
