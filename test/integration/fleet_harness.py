"""Fleet mode end to end: one real PostgreSQL (pg_harness), a fleet instance
in a fresh database per test, and brokers that are members of it, each with
its own LMDB replica and admin socket, all sharing one PKI.

    fleet = Fleet(pg, "fleet").init()         # devcertctl --fleet ... InitFleet
    a = FleetBroker(tmp / "a", pki, fleet).start()
    a.admin("InactivateDeviceCertificate", CaSn=..., DeviceSn=...)
    fleet.seqs()                               # the fleet's change log, by psql
    a.check_fleet()                            # devcertctl CheckFleet on a's replica
"""

import json
import shutil
import socket
import subprocess
import time
import weakref
from pathlib import Path

from devcert_harness import Broker, broker_running, devcertctl_path

# Options of every fleet broker unless a test says otherwise: the admin
# socket's rate limit must not be what a test of concurrent writers measures.
FLEET_OPTIONS = {"admin_rate_limit": "1000000"}


def wait_until(predicate, timeout=5.0, interval=0.02):
    """Polls predicate until it returns something truthy; returns the last
    value (falsy at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Fleet:
    """One fleet instance in its own database of the shared server."""

    def __init__(self, pg, instance_id="fleet"):
        self.pg = pg
        self.conninfo = pg.create_database()
        self.instance_id = instance_id

    # ------------------------------------------------------------ devcertctl

    def ctl(self, action, *args, db=None, timeout=60, **params):
        """devcertctl [--db DB] --fleet CONNINFO ACTION --MqttInstanceId ID ...;
        returns the CompletedProcess."""
        cmd = [devcertctl_path()]
        if db is not None:
            cmd += ["--db", str(db)]
        cmd += ["--fleet", self.conninfo, action]
        params.setdefault("MqttInstanceId", self.instance_id)
        for key, value in params.items():
            cmd += [f"--{key}", str(value)]
        cmd += list(args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def init(self, instance_id=None):
        done = self.ctl("InitFleet", MqttInstanceId=instance_id or self.instance_id)
        assert done.returncode == 0, f"InitFleet failed ({done.returncode}):\n{done.stdout}{done.stderr}"
        return self

    # ------------------------------------------------------------------- SQL

    def sql(self, query):
        return self.pg.psql(self.conninfo, query)

    def _instance(self):
        return f"(SELECT id FROM devcert.instances WHERE instance_id = '{self.instance_id}')"

    def head(self):
        """(last_seq, trimmed_through, epoch) of the instance."""
        row = self.sql(f"SELECT last_seq, trimmed_through, epoch FROM devcert.instances "
                       f"WHERE instance_id = '{self.instance_id}'")
        last, trimmed, epoch = row.split("|")
        return int(last), int(trimmed), epoch

    def seqs(self):
        """Every seq of the instance's change log, in order."""
        out = self.sql(f"SELECT seq FROM devcert.changes WHERE instance = {self._instance()} ORDER BY seq")
        return [int(s) for s in out.split()] if out else []

    def changes(self, where="true"):
        """Change-log rows as tuples of text (seq, action, ca_sn, device_sn,
        old_status, new_status, caller), in seq order; NULL as ''."""
        out = self.sql("SELECT seq, action, ca_sn, device_sn, coalesce(old_status::text, ''), "
                       "coalesce(new_status::text, ''), caller FROM devcert.changes "
                       f"WHERE instance = {self._instance()} AND ({where}) ORDER BY seq")
        return [tuple(line.split("|")) for line in out.splitlines()] if out else []

    def device_status(self, ca_sn, device_sn):
        """The device's status in the fleet as text, or None without a record."""
        out = self.sql(f"SELECT status FROM devcert.devices WHERE instance = {self._instance()} "
                       f"AND ca_sn = '{ca_sn}' AND device_sn = '{device_sn}'")
        return out or None

    def count(self, table, where="true"):
        return int(self.sql(f"SELECT count(*) FROM devcert.{table} WHERE instance = {self._instance()} "
                            f"AND ({where})"))


class FleetBroker(Broker):
    """A broker that is a member of `fleet`: plugin_opt_fleet and
    plugin_opt_instance_id set, its own store directory and admin socket."""

    def __init__(self, workdir, pki, fleet, options=None, **kw):
        self.fleet = fleet
        opts = {"fleet": fleet.conninfo, "instance_id": fleet.instance_id, **FLEET_OPTIONS}
        opts.update(options or {})
        kw.setdefault("admin_socket", True)
        super().__init__(workdir, pki, options=opts, **kw)
        self.name = self.workdir.name

    def start(self, expect_ready=True, timeout=15):
        # Broker.stop() removed the admin socket's directory: a restart needs
        # it back (and its removal at the end).
        if not Path(self.admin_socket_dir).is_dir():
            Path(self.admin_socket_dir).mkdir(mode=0o700)
            self._remove_socket_dir = weakref.finalize(self, shutil.rmtree, self.admin_socket_dir, True)
        return super().start(expect_ready, timeout)

    def kill(self):
        """SIGKILL; returns the exit code (-9)."""
        self.proc.kill()
        return self.wait_exit()

    def admin(self, action, **params):
        params.setdefault("MqttInstanceId", self.fleet.instance_id)
        return super().admin(action, **params)

    def ok(self, action, **params):
        status, body = self.admin(action, **params)
        assert status == 200, f"{self.name}: {action} {params}: HTTP {status} {body}"
        return body

    def fleet_stats(self):
        """GetStats' Data.Fleet."""
        data = self.stats()
        assert "Fleet" in data, f"{self.name}: GetStats has no Fleet object: {data}"
        return data["Fleet"]

    def wait_position(self, seq, timeout=5.0):
        """Waits until the replica applied seq; returns Data.Fleet as last read."""
        return wait_until(lambda: (lambda f: f if f["Position"] == seq else None)(self.fleet_stats()),
                          timeout) or self.fleet_stats()

    def device_status(self, ca_sn, device_sn):
        """The device's status in this broker's replica (through the socket),
        or None when it does not know the device."""
        status, body = self.admin("GetDeviceCertificate", CaSn=ca_sn, DeviceSn=device_sn)
        if status != 200:
            return None
        return body["Data"]["Status"]

    def change_log(self):
        """Every entry of ListCertificateChanges, walking NextSeq pages."""
        entries, seq = [], 0
        while True:
            data = self.ok("ListCertificateChanges", SinceSeq=seq, PageSize=1000)["Data"]
            if not data["Changes"]:
                return entries
            entries += data["Changes"]
            seq = int(data["NextSeq"])

    def check_fleet(self):
        """devcertctl --db <replica> --fleet ... CheckFleet: (exit code, the
        JSON report or the raw output when it is not JSON)."""
        done = self.fleet.ctl("CheckFleet", db=self.db)
        try:
            report = json.loads(done.stdout)
        except ValueError:
            report = done.stdout + done.stderr
        return done.returncode, report


def entry_key(entry):
    """A ListCertificateChanges entry as a tuple comparable with Fleet.changes()."""
    return (entry["Seq"], entry["Action"], entry["CaSn"], entry["DeviceSn"], entry["OldStatus"],
            entry["NewStatus"], entry["Caller"])
