"""Crash consistency: a real broker is killed with SIGKILL at random moments
while admin calls and auto-registrations are being committed, then restarted
on the same store. After every crash:

- the store opens cleanly: the broker starts, and mdb_stat / mdb_dump
  (lmdb-utils) read every database of it;
- every acknowledged change is there. Each client thread owns its devices and
  has at most one call in flight, so at the kill each device has a last
  acknowledged status and at most one unacknowledged call; its status after
  the restart is the acknowledged one, or the unacknowledged call's target
  (it may have committed just before the kill, its answer lost);
- the change log agrees: its sequence numbers are strictly increasing with
  no hole (nothing is trimmed at this size), what was there before a crash
  is there unchanged after it, and the entries a device got in a round are
  exactly its acknowledged status changes, plus the in-flight one only if
  the device's status shows that it landed;
- with devices auto-registering during the kill: each device is registered
  at most once (one record, one AutoRegister entry per registered device,
  none for the others), across every crash, even when it reconnects.

DEVCERT_CRASH_SEED=<n> replays one sequence of kill moments and choices;
DEVCERT_CRASH_ROUNDS overrides the number of crashes per test (default 20).
"""

import os
import random
import subprocess
import threading
import time
from pathlib import Path

from devcert_harness import Broker, Cert, run

CA = "0c01"
ROUNDS = int(os.environ.get("DEVCERT_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("DEVCERT_CRASH_SEED", str(random.SystemRandom().randrange(1 << 31))))
OPTIONS = {"admin_rate_limit": "1000000", "auto_register": "active"}
# Printed at the end of each test (pytest -s): what the kills met.
STATS = {"in_flight": 0, "landed": 0}


# ------------------------------------------------------------------ helpers

def mint_devices(pki, directory, serials):
    """Device certificates of the registered CA, one key shared by all (only
    the serial tells them apart): one openssl call per certificate."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "shared.key"
    csr = directory / "shared.csr"
    ext = directory / "device.ext"
    if not key.exists():
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key)])
        run(["openssl", "req", "-new", "-key", str(key), "-out", str(csr), "-subj", "/CN=crash-device"])
        ext.write_text("basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                       "extendedKeyUsage=clientAuth\n")
    devices = []
    for serial in serials:
        name = f"crash-{serial}"
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", pki.ca.cert, "-CAkey", pki.ca.key,
             "-out", str(directory / f"{name}.crt"), "-days", "7300", "-set_serial", f"0x{serial}",
             "-extfile", str(ext)])
        (directory / f"{name}.key").write_bytes(key.read_bytes())
        devices.append(Cert(directory, name, serial))
    return devices


def admin_ok(broker, action, **params):
    status, body = broker.admin(action, **params)
    assert status == 200, (action, params, body)
    return body


def full_change_log(broker):
    """Every change-log entry, walking NextSeq pages."""
    entries, seq = [], 0
    while True:
        data = admin_ok(broker, "ListCertificateChanges", SinceSeq=seq, PageSize=1000)["Data"]
        if not data["Changes"]:
            return entries
        entries += data["Changes"]
        seq = int(data["NextSeq"])


def all_devices(broker):
    records, page = [], 1
    while True:
        data = admin_ok(broker, "ListDeviceCertificate", PageNo=page, PageSize=100)["Data"]
        records += data["DeviceCertificateVOS"]
        if len(data["DeviceCertificateVOS"]) < 100:
            assert data["Total"] == len(records), data
            return records
        page += 1


def check_store_readable(db):
    """lmdb-utils read the environment the killed broker left: the statistics
    of every database and a full dump of each."""
    stat = subprocess.run(["mdb_stat", "-a", "-e", db], capture_output=True, text=True, timeout=60)
    assert stat.returncode == 0, f"mdb_stat cannot read {db}:\n{stat.stdout}{stat.stderr}"
    dump = subprocess.run(["mdb_dump", "-a", db], capture_output=True, timeout=60)
    assert dump.returncode == 0, f"mdb_dump cannot read {db}:\n{dump.stderr.decode(errors='replace')}"
    assert b"HEADER=END" in dump.stdout


def kill_and_restart(broker):
    """SIGKILL at once (no clean shutdown of the store or the socket), check
    the files with lmdb-utils, start again on the same store and socket path."""
    broker.proc.kill()
    code = broker.wait_exit()
    assert code == -9, code
    check_store_readable(broker.db)
    broker.start()


class ChangeLogChecker:
    """What the change log must keep across crashes."""

    def __init__(self):
        self.seen = []  # entries read after the previous crash

    def check(self, log):
        seqs = [int(e["Seq"]) for e in log]
        assert seqs, "the change log is empty"
        for a, b in zip(seqs, seqs[1:]):
            assert b == a + 1, f"change log sequence jumps from {a} to {b}"
        assert log[:len(self.seen)] == self.seen, "entries committed before the crash changed or vanished"
        self.seen = log
        return log


class Devices:
    """The devices of one client thread and what it knows of each: the last
    acknowledged status, and the target of a call whose answer never came."""

    def __init__(self, serials, status="1"):
        self.acked = {s: status for s in serials}
        self.in_flight = {}
        self.round_changes = {s: [] for s in serials}  # acknowledged changes this round, in order

    def start_round(self):
        self.in_flight = {}
        self.round_changes = {s: [] for s in self.acked}


def status_worker(broker, devices, rng, stop, errors):
    """Inactivates and activates its own devices one call at a time until the
    broker dies (or stop is set)."""
    serials = sorted(devices.acked)
    while not stop.is_set():
        serial = rng.choice(serials)
        target = rng.choice("01")
        action = "InactivateDeviceCertificate" if target == "0" else "ActiveDeviceCertificate"
        devices.in_flight[serial] = target
        try:
            status, body = broker.admin(action, CaSn=CA, DeviceSn=serial)
        except Exception:
            return  # the broker is gone: the call stays in flight
        if status != 200:
            errors.append((action, serial, status, body))
            return
        del devices.in_flight[serial]
        if devices.acked[serial] != target:
            devices.round_changes[serial].append(target)
        devices.acked[serial] = target


def check_statuses(broker, owners, round_start_seq, log):
    """The status of every device after a restart, and its entries in the
    change log since the round began, against what its owner acknowledged."""
    by_device = {}
    for e in log:
        if int(e["Seq"]) > round_start_seq and e["DeviceSn"]:
            by_device.setdefault(e["DeviceSn"], []).append(e)
    for devices in owners:
        for serial, acked in devices.acked.items():
            record = admin_ok(broker, "GetDeviceCertificate", CaSn=CA, DeviceSn=serial)["Data"]
            pending = devices.in_flight.get(serial)
            STATS["in_flight"] += pending is not None
            STATS["landed"] += pending is not None and record["Status"] != acked
            allowed = {acked} if pending is None else {acked, pending}
            assert record["Status"] in allowed, (
                f"device {serial}: status {record['Status']} after the crash; acknowledged {acked}"
                + (f", in flight {pending}" if pending else ""))
            expected = list(devices.round_changes[serial])
            if record["Status"] != acked:
                expected.append(record["Status"])  # the in-flight call landed
            got = [e["NewStatus"] for e in by_device.get(serial, []) if e["Action"] != "AutoRegister"]
            assert got == expected, (
                f"device {serial}: change log has {got} this round, acknowledged {devices.round_changes[serial]}"
                f", in flight {pending}, status now {record['Status']}")
            # What the store holds is now what the next round builds on.
            devices.acked[serial] = record["Status"]


def run_status_round(broker, rng, owners, extra_workers=()):
    """One round: the status workers (and any extra ones) run until the broker
    is killed at a random moment."""
    stop = threading.Event()
    errors = []
    for devices in owners:
        devices.start_round()
    threads = [threading.Thread(target=status_worker, args=(broker, d, random.Random(rng.random()), stop, errors))
               for d in owners]
    threads += [threading.Thread(target=w, args=(stop,)) for w in extra_workers]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.15, 0.9))
    kill_and_restart(broker)
    stop.set()
    for t in threads:
        t.join(30)
        assert not t.is_alive(), "a client thread hangs after the crash"
    assert not errors, errors


def make_broker(tmp_path, pki):
    return Broker(tmp_path / "broker", pki, options=OPTIONS, admin_socket=True).start()


# -------------------------------------------------------------------- tests

def test_acknowledged_status_changes_survive_sigkill(tmp_path, pki):
    print(f"DEVCERT_CRASH_SEED={SEED}")
    rng = random.Random(SEED)
    serials = [f"c1{i:02x}" for i in range(12)]
    devices = mint_devices(pki, tmp_path / "devices", serials)
    broker = make_broker(tmp_path, pki)
    try:
        for dev in devices:
            admin_ok(broker, "RegisterDeviceCertificate", DeviceContent=dev.pem())
        owners = [Devices(serials[i::4]) for i in range(4)]
        changes = ChangeLogChecker()
        changes.check(full_change_log(broker))
        acknowledged = 0
        for _ in range(ROUNDS):
            round_start = int(changes.seen[-1]["Seq"])
            run_status_round(broker, rng, owners)
            log = changes.check(full_change_log(broker))
            acknowledged += sum(len(c) for d in owners for c in d.round_changes.values())
            check_statuses(broker, owners, round_start, log)
        # The test is only worth something if the kills met real traffic.
        assert acknowledged >= ROUNDS, f"only {acknowledged} acknowledged changes in {ROUNDS} rounds"
        print(f"{ROUNDS} crashes: {acknowledged} acknowledged status changes, {STATS['in_flight']} calls in "
              f"flight at a kill, {STATS['landed']} of them landed; change log up to Seq {changes.seen[-1]['Seq']}")
        broker.stop()
    finally:
        if broker.proc is not None:
            broker.proc.kill()
            broker.wait_exit()


def test_auto_registration_survives_sigkill(tmp_path, pki):
    print(f"DEVCERT_CRASH_SEED={SEED}")
    rng = random.Random(SEED + 1)
    rounds = max(1, ROUNDS // 2)
    fresh_per_round = 6
    admin_serials = [f"c2{i:02x}" for i in range(4)]
    crash_serials = [f"d1{r:02x}{i:02x}" for r in range(rounds) for i in range(fresh_per_round)]
    admin_devices = mint_devices(pki, tmp_path / "devices", admin_serials)
    crash_devices = mint_devices(pki, tmp_path / "devices", crash_serials)
    broker = make_broker(tmp_path, pki)
    try:
        for dev in admin_devices:
            admin_ok(broker, "RegisterDeviceCertificate", DeviceContent=dev.pem())
        owners = [Devices(admin_serials[i::2]) for i in range(2)]
        changes = ChangeLogChecker()
        changes.check(full_change_log(broker))
        accepted = []

        def connector(pool, seed):
            """Connects devices of the pool (new ones and ones of earlier
            rounds, registered or not) until the broker dies."""
            from devcert_harness import raw_connect_v311
            r = random.Random(seed)

            def work(stop):
                n = 0
                while not stop.is_set():
                    dev = r.choice(pool)
                    n += 1
                    try:
                        answer = raw_connect_v311(broker, dev, f"{dev.serial}-{seed}-{n}", timeout=2.0)
                    except Exception:
                        time.sleep(0.01)
                        continue
                    if answer[:4] == b"\x20\x02\x00\x00":
                        accepted.append(dev.serial)
            return work

        for r in range(rounds):
            round_start = int(changes.seen[-1]["Seq"])
            fresh = crash_devices[r * fresh_per_round:(r + 1) * fresh_per_round]
            pool = fresh + crash_devices[:r * fresh_per_round]
            workers = [connector(pool, rng.randrange(1 << 30)) for _ in range(3)]
            run_status_round(broker, rng, owners, workers)
            log = changes.check(full_change_log(broker))
            check_statuses(broker, owners, round_start, log)

            registrations = {}
            for e in log:
                if e["Action"] == "AutoRegister":
                    registrations[e["DeviceSn"]] = registrations.get(e["DeviceSn"], 0) + 1
            records = all_devices(broker)
            keys = [(d["CaSn"], d["DeviceSn"]) for d in records]
            assert len(keys) == len(set(keys)), "a device is listed twice"
            registered = {d["DeviceSn"] for d in records}
            for dev in crash_devices:
                expected = 1 if dev.serial in registered else 0
                assert registrations.get(dev.serial, 0) == expected, (
                    f"device {dev.serial}: {registrations.get(dev.serial, 0)} registration entries, "
                    f"{'registered' if expected else 'not registered'}")
            assert set(admin_serials) <= registered
        # Auto-registration must have happened across the crashes.
        assert sum(registrations.values()) >= fresh_per_round, registrations
        assert accepted, "no device was accepted"
        print(f"{rounds} crashes with auto-registration: {len(registered) - len(admin_serials)} of "
              f"{len(crash_devices)} devices registered, {len(accepted)} connections accepted; change log up to "
              f"Seq {changes.seen[-1]['Seq']}")
        broker.stop()
    finally:
        if broker.proc is not None:
            broker.proc.kill()
            broker.wait_exit()
