"""A real PostgreSQL 15 for end-to-end tests of fleet mode, started by the
tests themselves: initdb into a private temporary directory, UNIX socket
only (listen_addresses=''), fsync off, run as an unprivileged OS user when
the tests run as root (PostgreSQL refuses root), stopped at the end.

    with PgServer() as pg:
        conninfo = pg.create_database()
        pg.psql(conninfo, "SELECT 1")
        pg.stop(); pg.start()          # an outage

Benchmarks ask for a durable server (`PgServer(durable=True)`): fsync,
synchronous commit and full-page writes on, as in production.

A watchdog process (its own session, waiting for EOF on a pipe only this
process holds) stops the server and removes the directory if the test
process dies without doing so.

Environment: DEVCERT_PG_BIN (default /usr/lib/postgresql/15/bin),
DEVCERT_PG_USER (under root; default devcert-pg, else postgres).
"""

import itertools
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

PG_BIN = os.environ.get("DEVCERT_PG_BIN", "/usr/lib/postgresql/15/bin")
PSQL = "/usr/bin/psql"


def _server_user():
    """(name, uid, gid) the server runs as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("DEVCERT_PG_USER")
    for name in [wanted] if wanted else ["devcert-pg", "postgres"]:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        if pw.pw_uid != 0:
            return name, pw.pw_uid, pw.pw_gid
    raise RuntimeError("running as root and no unprivileged user for PostgreSQL: create devcert-pg "
                       "(scripts/setup does) or set DEVCERT_PG_USER")


class PgServer:
    """One PostgreSQL server in a private directory; see the module doc."""

    def __init__(self, durable=False, max_connections=100):
        self.durable = durable
        self.max_connections = max_connections
        if not os.access(f"{PG_BIN}/initdb", os.X_OK):
            raise RuntimeError(f"PostgreSQL server binaries not found in {PG_BIN} "
                               "(scripts/setup installs postgresql-15)")
        self.user = _server_user()
        # Short and under /tmp whatever TMPDIR says: the socket path must
        # stay below 107 bytes.
        self.dir = tempfile.mkdtemp(prefix="devcert-pg-", dir="/tmp")
        if self.user:
            os.chown(self.dir, self.user[1], self.user[2])
        self.data = f"{self.dir}/data"
        # The socket's name carries the port; the directory is private.
        self.port = 20000 + os.getpid() % 40000
        self.running = False
        self._names = itertools.count(1)
        self._watchdog = None

    # ------------------------------------------------------------- process

    def _run(self, argv, log):
        kw = {}
        if self.user:
            kw = {"user": self.user[1], "group": self.user[2], "extra_groups": []}
        with open(log, "ab") as out:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "LC_ALL": "C"}, check=False, **kw).returncode

    def _log(self, name):
        path = Path(self.dir) / name
        return path.read_text(errors="replace") if path.exists() else ""

    def _start_watchdog(self):
        as_user = f"runuser -u {shlex.quote(self.user[0])} -- " if self.user else ""
        script = (f"trap '' INT TERM HUP; cat >/dev/null; "
                  f"{as_user}{shlex.quote(PG_BIN)}/pg_ctl -D {shlex.quote(self.data)} -m immediate stop "
                  f">/dev/null 2>&1; rm -rf {shlex.quote(self.dir)}")
        self._watchdog = subprocess.Popen(["/bin/sh", "-c", script], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True)

    def init(self):
        self._start_watchdog()
        rc = self._run([f"{PG_BIN}/initdb", "-D", self.data, "-U", "devcert", "-A", "trust", "--no-sync",
                        "-E", "UTF8", "--locale=C"], f"{self.dir}/initdb.log")
        if rc != 0:
            raise RuntimeError(f"initdb failed (exit {rc}):\n{self._log('initdb.log')}")
        return self

    def start(self):
        options = f"-c listen_addresses='' -k {self.dir} -p {self.port} -c max_connections={self.max_connections}"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        rc = self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-w", "-t", "60", "-l", f"{self.dir}/server.log",
                        "-o", options, "start"], f"{self.dir}/pg_ctl.log")
        if rc != 0:
            raise RuntimeError(f"pg_ctl start failed (exit {rc}):\n{self._log('pg_ctl.log')}"
                               f"{self._log('server.log')}")
        self.running = True
        return self

    def stop(self, mode="fast"):
        """Stops the server; the data stays for start()."""
        if self.running:
            self._run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"], f"{self.dir}/pg_ctl.log")
            self.running = False

    def pids(self):
        """The postmaster and its children (backends, background processes)."""
        master = int(Path(self.data, "postmaster.pid").read_text().split()[0])
        pids = [master]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
            if int(fields[1]) == master:
                pids.append(int(stat.parent.name))
        return pids

    def signal_all(self, sig):
        """Sends sig to the server's every process: SIGSTOP freezes the
        server as a hung host would (connections stay open, nothing is
        answered); SIGCONT thaws it."""
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def close(self):
        """Stops the server and removes everything."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._watchdog:
            self._watchdog.stdin.close()
            self._watchdog.wait(timeout=30)
            self._watchdog = None

    def __enter__(self):
        try:
            return self.init().start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------- clients

    def conninfo(self, dbname="postgres"):
        return f"host={self.dir} port={self.port} user=devcert dbname={dbname}"

    def psql(self, conninfo, sql):
        """Runs SQL with psql; returns its unaligned, tuples-only output."""
        done = subprocess.run([PSQL, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout.strip()

    def create_database(self):
        """A fresh, empty database; returns its connection string."""
        name = f"t{next(self._names)}"
        self.psql(self.conninfo(), f"CREATE DATABASE {name} TEMPLATE template0")
        return self.conninfo(name)
