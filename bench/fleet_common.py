"""What the fleet benchmarks share: a durable PostgreSQL 15 started for the
run (the tests' pg_harness, with fsync on), fleet instances filled from a
devcert_fill_store store by MigrateToFleet, and brokers that are members of
a fleet, each with its own replica."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import MOSQUITTO, free_ports, listener_lines, probe, stop_broker, write_config

_ports_given = set()


def unique_port():
    """A free port never handed out before in this process: with a hundred
    brokers, the kernel may offer a port again before a broker binds it."""
    while True:
        port = free_ports(1)[0]
        if port not in _ports_given:
            _ports_given.add(port)
            return port

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "test" / "integration"))

from pg_harness import PgServer  # noqa: E402  (the path above)

INSTANCE = "bench"


def start_pg(max_connections=100):
    """A durable server (fsync, synchronous commit and full-page writes on)."""
    return PgServer(durable=True, max_connections=max_connections).init().start()


class FleetDb:
    """One fleet instance in a database of its own on `pg`."""

    def __init__(self, pg, devcertctl):
        self.pg = pg
        self.devcertctl = str(devcertctl)
        self.conninfo = pg.create_database()

    def ctl(self, action, db=None, **params):
        cmd = [self.devcertctl] + (["--db", str(db)] if db else []) + ["--fleet", self.conninfo, action,
                                                                          "--MqttInstanceId", INSTANCE]
        for k, v in params.items():
            cmd += [f"--{k}", str(v)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"devcertctl {action} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done.stdout

    def init(self, store=None):
        """InitFleet, then (with a store) MigrateToFleet; returns the
        migration's seconds (0 without a store)."""
        self.ctl("InitFleet")
        if store is None:
            return 0.0
        t0 = time.monotonic()
        self.ctl("MigrateToFleet", db=store)
        return time.monotonic() - t0

    def sql(self, query):
        return self.pg.psql(self.conninfo, query)

    def head(self):
        return int(self.sql(f"SELECT last_seq FROM devcert.instances WHERE instance_id = '{INSTANCE}'"))

    def devices(self):
        return int(self.sql("SELECT device_count FROM devcert.instances WHERE instance_id = "
                            f"'{INSTANCE}'") or 0)


class Member:
    """A mosquitto with the plugin, member of a fleet. `admin` gives it an
    admin socket (rate limit raised: the benchmarks measure the fleet, not
    the limiter); `cpu` pins it."""

    def __init__(self, tools, work, pki, conninfo, admin=True, extra=(), cpu=None, replica=None):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.replica = Path(replica) if replica else self.work / "replica"
        self.plain_port, self.tls_port = unique_port(), unique_port()
        self.sock_dir = Path(tempfile.mkdtemp(prefix="dcf-", dir="/tmp")) if admin else None
        self.admin_socket = str(self.sock_dir / "admin.sock") if admin else None
        lines = listener_lines(self.work / "broker.log", plain_port=self.plain_port, tls_port=self.tls_port,
                               pki=pki) + [
            "log_type notice",
            f"plugin {tools.plugin}",
            f"plugin_opt_instance_id {INSTANCE}",
            f"plugin_opt_db_path {self.replica}",
            f"plugin_opt_admin_socket {self.admin_socket or 'off'}",
            "plugin_opt_admin_rate_limit 1000000",
            f"plugin_opt_import_ca {pki / 'ca.crt'}",
            f"plugin_opt_fleet {conninfo}",
        ] + list(extra)
        self.conf = write_config(self.work / "mosquitto.conf", lines)
        self.cpu = cpu
        self.proc = None

    def launch(self):
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        self.started = time.monotonic()
        self.proc = subprocess.Popen(pin + [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.work / "stderr.log", "ab"))
        return self

    def wait_ready(self, timeout=300):
        """Waits until the broker serves (its listener answers, its admin
        socket exists); returns the seconds since launch."""
        deadline = self.started + timeout
        while not ((self.admin_socket is None or os.path.exists(self.admin_socket)) and probe(self.plain_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode} at start-up, see {self.work}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"broker not serving within {timeout} s, see {self.work}")
            time.sleep(0.005)
        return time.monotonic() - self.started

    def start(self, timeout=300):
        self.launch()
        return self.wait_ready(timeout)

    def stop(self):
        status = stop_broker(self.proc) if self.proc else 0
        if self.sock_dir:
            shutil.rmtree(self.sock_dir, ignore_errors=True)
        return status


def stop_all(members):
    bad = []
    for m in members:
        code = m.stop()
        if code not in (0, -signal.SIGTERM):
            bad.append(f"{m.work}: exit {code}")
    if bad:
        raise RuntimeError("brokers exited badly: " + "; ".join(bad))
