"""Fleet mode end to end: a real PostgreSQL 15, a fleet instance in a fresh
database per test, and two or three real brokers that are members of it, each
with its own LMDB replica and admin socket, all trusting one PKI.

What must hold (issue 12): a change made through any broker is enforced by
every broker within a fraction of a second; auto-registration is local and
reaches the fleet once; PostgreSQL down leaves connections checked against the
replica, writes refused with 503 FleetUnavailable, reads answered, and the
broker catches up alone when it is back; a stopped, killed or far-behind
broker catches up (or rebuilds) before it accepts devices; concurrent writers
everywhere leave one contiguous sequence and identical replicas."""

import json
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

# Under AddressSanitizer (the runtime preloaded into Debian's uninstrumented
# broker) a broker's first libpq connection blocks for good in glibc's
# gettext lock (bindtextdomain, called by PQconnectPoll), before the plugin
# finishes loading: the fleet's end-to-end tests run in the plain build, and
# the fleet code itself is covered under ASan by the unit tests (members,
# replica, migration, the API on a fleet) and under ThreadSanitizer.
pytestmark = pytest.mark.skipif(os.environ.get("DEVCERT_SANITIZE") == "address",
                                reason="a libpq connection from the ASan-preloaded broker blocks in glibc's gettext lock")

from admin_helpers import connack5 as connack
from devcert_harness import RawMqtt5, broker_running
from fleet_harness import Fleet, FleetBroker, entry_key, wait_until
from pg_harness import PgServer

CA = "0c01"  # the harness's registered device CA
OTHER_CA = "0c02"
ADMINISTRATIVE_ACTION = 0x98
NOT_AUTHORIZED = 0x87
FLEET_KEYS = {"Connected", "Epoch", "Position", "Head", "Lag", "LagMs", "QueuedRegistrations", "Resyncs"}
UNREACHABLE = "cannot reach the fleet database"
REACHABLE = "fleet database is reachable again"


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def pg():
    with PgServer() as server:
        yield server


@pytest.fixture
def fleet(pg):
    if not pg.running:
        pg.start()
    yield Fleet(pg).init()
    # A test that failed during an outage leaves the server stopped.
    if not pg.running:
        pg.start()


@pytest.fixture
def members(tmp_path, pki, fleet):
    """Makes fleet brokers ("a", "b", ...) and stops each at the end,
    asserting a clean exit."""
    brokers = []

    def make(name, start=True, **kw):
        b = FleetBroker(tmp_path / name, pki, fleet, **kw)
        brokers.append(b)
        return b.start() if start else b

    yield make
    failures = []
    for b in brokers:
        try:
            b.stop()
        except Exception as e:  # noqa: BLE001 - reported below, whatever it is
            failures.append(e)
    if failures:
        raise failures[0]


def start_together(brokers):
    for b in brokers:
        b.start(expect_ready=False)
    for b in brokers:
        b.wait_ready()
    return brokers


# ------------------------------------------------------------------- helpers

def register(broker, dev, status="1"):
    body = broker.ok("RegisterDeviceCertificate", DeviceContent=dev.pem(), Status=status)
    assert (body["CaSn"], body["DeviceSn"]) == (CA, dev.serial), body
    return body


def connect(broker, dev, client_id):
    c = RawMqtt5(broker, dev, client_id)
    assert c.connack == 0, f"{client_id} not accepted by {broker.name} (CONNACK {c.connack:#x}):\n{broker.run_log()}"
    return c




def all_at_head(fleet, brokers, timeout=5.0):
    """Waits until every broker applied the fleet's head; returns the head."""
    head = fleet.head()[0]
    for b in brokers:
        stats = b.wait_position(head, timeout)
        assert stats["Position"] == head, f"{b.name} stuck at {stats} (fleet head {head}):\n{b.run_log()}"
    return head


def assert_logs_match_fleet(fleet, brokers):
    """Every broker's ListCertificateChanges holds the fleet's log: the same
    seqs, each once, with the same content. A replica loaded from a snapshot
    starts with one FleetResync entry at the snapshot's seq, and holds the
    fleet's entries after it."""
    expected = fleet.changes()
    for b in brokers:
        got = [entry_key(e) for e in b.change_log()]
        seqs = [int(e[0]) for e in got]
        assert seqs == sorted(set(seqs)), f"{b.name} lists a seq twice or out of order: {seqs}"
        base = 0
        if got and got[0][1] == "FleetResync":
            base = int(got[0][0])
            got = got[1:]
        want = [e for e in expected if int(e[0]) > base]
        assert got == want, f"{b.name}'s change log (after seq {base}) differs from the fleet's:\n{got}\n{want}"


def assert_consistent(broker):
    """CheckFleet on the broker's replica (which is at the fleet's head)."""
    code, report = broker.check_fleet()
    assert code == 0, f"CheckFleet on {broker.name}'s replica: exit {code}\n{report}"
    assert isinstance(report, dict), f"CheckFleet printed no JSON report: {report!r}"
    assert (report["Consistent"], report["DifferenceCount"], report["Differences"]) == (True, 0, []), report
    assert report["ReplicaEpoch"] == report["FleetEpoch"] and report["BehindBy"] == 0, report
    return report


def wait_kicked(session, timeout=5.0):
    return session.wait_disconnect(timeout)


# --------------------------------------------------------------- start-up

@pytest.mark.parametrize("case", ["no schema", "newer schema", "unknown instance", "unreachable, no replica"])
def test_a_broker_refuses_to_start_naming_what_is_wrong_with_the_fleet(pg, tmp_path, pki, case):
    if not pg.running:
        pg.start()
    fleet = Fleet(pg, "fleet")
    if case == "unreachable, no replica":
        fleet.init()
        pg.stop()
        expected = "cannot reach the fleet database and the replica was never loaded"
    elif case == "no schema":
        expected = "the fleet database has no devcert schema"
    elif case == "newer schema":
        fleet.init()
        fleet.sql("UPDATE devcert.schema_version SET version = version + 1")
        expected = "the fleet database has schema version 2"
    else:
        fleet.init()
        fleet.instance_id = "stranger"
        expected = "instance 'stranger' is not in the fleet database"
    b = FleetBroker(tmp_path / "a", pki, fleet)
    try:
        b.start(expect_ready=False)
        try:
            code = b.wait_exit(timeout=20)
        except Exception:
            b.kill()
            raise AssertionError(f"the broker kept running on a fleet with {case}:\n{b.log()}")
    finally:
        if not pg.running:
            pg.start()
    assert code != 0, b.log()
    assert expected in b.log(), b.log()
    assert not broker_running(b.log()), b.log()


@pytest.mark.parametrize("case", ["unknown instance", "unparseable"])
def test_the_fleet_connection_string_is_never_logged_even_when_it_is_wrong(pg, tmp_path, pki, case):
    secret = "Sup3r-Secret-pw"
    if not pg.running:
        pg.start()
    fleet = Fleet(pg, "fleet")
    fleet.init()
    if case == "unknown instance":
        fleet.instance_id = "stranger"
        fleet.conninfo += f" password={secret}"
        expected = "instance 'stranger' is not in the fleet database"
    else:
        fleet.conninfo = f"host=/tmp password={secret} nonsense"
        expected = "plugin_opt_fleet:"
    b = FleetBroker(tmp_path / "a", pki, fleet)
    b.start(expect_ready=False)
    try:
        code = b.wait_exit(timeout=20)
    except Exception:
        b.kill()
        raise AssertionError(f"the broker kept running with a wrong plugin_opt_fleet:\n{b.log()}")
    assert code != 0, b.log()
    assert expected in b.log(), b.log()
    assert secret not in b.log(), b.log()


def test_three_brokers_starting_at_once_import_the_ca_once_and_report_the_fleet_in_getstats(members, fleet):
    brokers = start_together([members(n, start=False) for n in "abc"])
    assert fleet.count("cas") == 1
    assert fleet.changes() == [("1", "ImportCaCertificate", CA, "", "", "1", "plugin_opt_import_ca")]
    last_seq, trimmed, epoch = fleet.head()
    assert (last_seq, trimmed) == (1, 0)
    all_at_head(fleet, brokers)
    for b in brokers:
        stats = b.fleet_stats()
        assert set(stats) == FLEET_KEYS, stats
        assert stats["Connected"] is True, stats
        assert stats["Epoch"] == epoch, stats
        assert (stats["Position"], stats["Head"], stats["Lag"], stats["LagMs"]) == (1, 1, 0, 0), stats
        assert stats["QueuedRegistrations"] == 0, stats
        assert b.stats()["CaCount"] == 1
    assert_logs_match_fleet(fleet, brokers)


# ----------------------------------------------------------- enforcement

def test_a_device_inactivated_through_one_broker_is_kicked_on_the_others_and_refused_everywhere(members, fleet, pki):
    a, b, c = (members(n) for n in "abc")
    dev = pki.device("f010")
    on_b = connect(b, dev, "f010-on-b")
    on_c = None
    try:
        assert wait_until(lambda: fleet.device_status(CA, "f010") == "1"), "the registration never reached the fleet"
        all_at_head(fleet, [a, b, c])
        on_c = connect(c, dev, "f010-on-c")
        a.ok("InactivateDeviceCertificate", CaSn=CA, DeviceSn="f010")
        answered = time.monotonic()
        assert wait_kicked(on_b) == ADMINISTRATIVE_ACTION, b.run_log()
        assert wait_kicked(on_c) == ADMINISTRATIVE_ACTION, c.run_log()
        took = time.monotonic() - answered
        assert took < 1.0, f"kicked {took * 1000:.0f} ms after the answer on broker a"
    finally:
        on_b.close()
        if on_c:
            on_c.close()
    for x in (a, b, c):
        assert connack(x, dev, f"f010-again-{x.name}") == NOT_AUTHORIZED, x.run_log()
        assert x.wait_for_log(f"refused client 'f010-again-{x.name}' (CaSn 0c01, DeviceSn f010): device inactive")
    assert b.wait_for_log("kicked client 'f010-on-b' (CaSn 0c01, DeviceSn f010): device no longer active")
    assert c.wait_for_log("kicked client 'f010-on-c' (CaSn 0c01, DeviceSn f010): device no longer active")
    assert [x.counters()["kicks"] for x in (a, b, c)] == [0, 1, 1]
    assert fleet.device_status(CA, "f010") == "0"
    all_at_head(fleet, [a, b, c])
    assert_logs_match_fleet(fleet, [a, b, c])


def test_a_change_made_with_devcertctl_on_the_fleet_reaches_every_broker(members, fleet, pki):
    a, b = members("a"), members("b")
    dev = pki.device("f0d0")
    register(a, dev)
    all_at_head(fleet, [a, b])
    session = connect(b, dev, "f0d0-on-b")
    try:
        done = fleet.ctl("InactivateDeviceCertificate", CaSn=CA, DeviceSn="f0d0")
        answered = time.monotonic()
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["DeviceSn"] == "f0d0", done.stdout
        assert wait_kicked(session) == ADMINISTRATIVE_ACTION, b.run_log()
        assert time.monotonic() - answered < 1.0
    finally:
        session.close()
    all_at_head(fleet, [a, b])
    assert [x.device_status(CA, "f0d0") for x in (a, b)] == ["0", "0"]
    assert [ch[1] for ch in fleet.changes("device_sn = 'f0d0'")] == ["RegisterDeviceCertificate",
                                                                     "InactivateDeviceCertificate"]
    assert_logs_match_fleet(fleet, [a, b])


def test_a_ca_inactivated_through_one_broker_kicks_its_devices_on_every_broker(members, fleet, pki):
    a, b, c = (members(n, import_ca=[pki.ca, pki.other_ca]) for n in "abc")
    assert fleet.count("cas") == 2
    devs = {"f020": (a, pki.device("f020")), "f021": (b, pki.device("f021")), "f023": (c, pki.device("f023")),
            "f022": (c, pki.device("f022", issuer=pki.other_ca))}
    sessions = {}
    try:
        for sn, (x, dev) in devs.items():
            sessions[sn] = connect(x, dev, f"ca-{sn}")
        assert wait_until(lambda: fleet.count("devices") == 4), "registrations never reached the fleet"
        all_at_head(fleet, [a, b, c])
        b.ok("InactivateCaCertificate", Sn=CA)
        for sn in ("f020", "f021", "f023"):
            assert wait_kicked(sessions[sn], 2.0) == ADMINISTRATIVE_ACTION, f"{sn} was not kicked"
        assert sessions["f022"].still_connected(0.5), "a device of the other CA was kicked"
    finally:
        for s in sessions.values():
            s.close()
    assert [x.wait_counter("kicks", k)["kicks"] for x, k in ((a, 1), (b, 1), (c, 1))] == [1, 1, 1]
    assert connack(c, devs["f020"][1], "ca-f020-again") == NOT_AUTHORIZED
    assert c.wait_for_log("refused client 'ca-f020-again' (CaSn 0c01, DeviceSn f020): ca inactive")
    all_at_head(fleet, [a, b, c])
    assert_logs_match_fleet(fleet, [a, b, c])


# ------------------------------------------------------ auto-registration

def test_devices_connecting_to_two_brokers_at_once_are_registered_once(members, fleet, pki):
    a, b, c = (members(n) for n in "abc")
    serials = [f"f03{i}" for i in range(8)]
    devs = [pki.device(s) for s in serials]
    sessions, failures = [], []

    def attach(x, dev, barrier):
        barrier.wait()
        try:
            sessions.append(connect(x, dev, f"{dev.serial}-on-{x.name}"))
        except Exception as e:  # noqa: BLE001 - reported below, whatever it is
            failures.append(e)

    try:
        for dev in devs:
            barrier = threading.Barrier(2)
            threads = [threading.Thread(target=attach, args=(x, dev, barrier)) for x in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert not failures, failures
        assert len(sessions) == 2 * len(devs)
        assert wait_until(lambda: fleet.count("devices") == len(devs)), fleet.count("devices")
        assert wait_until(lambda: all(x.fleet_stats()["QueuedRegistrations"] == 0 for x in (a, b)))
        head = all_at_head(fleet, [a, b, c])
    finally:
        for s in sessions:
            s.close()
    for sn in serials:
        changes = fleet.changes(f"device_sn = '{sn}'")
        assert len(changes) == 1, f"{sn}: {changes}"
        assert changes[0][1:] == ("AutoRegister", CA, sn, "", "1", "connection"), changes
    assert head == 1 + len(serials)
    assert fleet.seqs() == list(range(1, head + 1))
    assert_logs_match_fleet(fleet, [a, b, c])


def test_a_device_registered_on_two_brokers_during_an_outage_gives_one_record_and_one_change(members, fleet, pg, pki):
    a, b, c = (members(n) for n in "abc")
    dev = pki.device("f03f")
    pg.stop()
    sessions = []
    try:
        sessions.append(connect(a, dev, "f03f-on-a"))
        sessions.append(connect(b, dev, "f03f-on-b"))
        # Both decided locally: each registered it in its replica.
        for x in (a, b):
            assert x.wait_counter("auto_registrations", 1)["auto_registrations"] == 1
            assert wait_until(lambda: x.fleet_stats()["QueuedRegistrations"] == 1), x.fleet_stats()
        pg.start()
        assert wait_until(lambda: all(x.fleet_stats()["QueuedRegistrations"] == 0 for x in (a, b)), 10.0), \
            [x.fleet_stats() for x in (a, b)]
        all_at_head(fleet, [a, b, c], 10.0)
        assert all(s.still_connected(0.1) for s in sessions)
    finally:
        for s in sessions:
            s.close()
    assert fleet.count("devices", "device_sn = 'f03f'") == 1
    assert fleet.changes("device_sn = 'f03f'") == [("2", "AutoRegister", CA, "f03f", "", "1", "connection")]
    assert_logs_match_fleet(fleet, [a, b, c])
    for x in (a, b, c):
        assert_consistent(x)


def test_a_device_the_fleet_holds_inactive_is_accepted_by_a_broker_that_does_not_know_it_then_kicked(
        members, fleet, pg, pki):
    a, b = members("a"), members("b")
    all_at_head(fleet, [a, b])
    b.stop()
    dev = pki.device("f040")
    register(a, dev, status="0")
    pg.stop()
    b.start()  # from its replica, which does not know the device
    assert b.wait_for_log(UNREACHABLE, 10.0), b.run_log()
    session = connect(b, dev, "f040-on-b")
    try:
        # Registered in the replica on b's writer thread, after the CONNACK.
        assert wait_until(lambda: b.device_status(CA, "f040") == "1"), b.run_log()
        pg.start()
        assert wait_kicked(session, 10.0) == ADMINISTRATIVE_ACTION, b.run_log()
    finally:
        session.close()
    assert b.wait_for_log(REACHABLE, 5.0), b.run_log()
    assert b.device_status(CA, "f040") == "0"
    assert connack(b, dev, "f040-again") == NOT_AUTHORIZED
    assert wait_until(lambda: b.fleet_stats()["QueuedRegistrations"] == 0), b.fleet_stats()
    # The fleet's record won: the local registration added nothing.
    assert fleet.device_status(CA, "f040") == "0"
    assert [ch[1] for ch in fleet.changes("device_sn = 'f040'")] == ["RegisterDeviceCertificate"]
    all_at_head(fleet, [a, b])
    assert_logs_match_fleet(fleet, [a, b])
    assert_consistent(b)


def test_a_queued_registration_survives_a_kill_and_reaches_the_fleet_when_it_is_back(members, fleet, pg, pki):
    a, b = members("a"), members("b")
    dev = pki.device("f0a0")
    pg.stop()
    connect(a, dev, "f0a0-on-a").close()
    assert wait_until(lambda: a.fleet_stats()["QueuedRegistrations"] == 1), a.fleet_stats()
    assert a.kill() == -9
    a.start()  # PostgreSQL still down: from the replica, with its queue
    assert a.fleet_stats()["QueuedRegistrations"] == 1, a.fleet_stats()
    assert a.device_status(CA, "f0a0") == "1"
    assert b.device_status(CA, "f0a0") is None
    pg.start()
    assert wait_until(lambda: a.fleet_stats()["QueuedRegistrations"] == 0, 10.0), a.fleet_stats()
    assert fleet.changes("device_sn = 'f0a0'") == [("2", "AutoRegister", CA, "f0a0", "", "1", "connection")]
    assert wait_until(lambda: b.device_status(CA, "f0a0") == "1"), "b never learnt the registration"
    all_at_head(fleet, [a, b])
    assert_logs_match_fleet(fleet, [a, b])
    assert_consistent(a)


def test_past_the_queue_bound_new_devices_are_refused_and_known_ones_are_not(members, fleet, pg, pki):
    a = members("a", options={"fleet_queue_max": "1"})
    first, second = pki.device("f0b0"), pki.device("f0b1")
    pg.stop()
    connect(a, first, "f0b0-on-a").close()
    assert wait_until(lambda: a.fleet_stats()["QueuedRegistrations"] == 1), a.fleet_stats()
    assert connack(a, second, "f0b1-on-a") == NOT_AUTHORIZED
    assert a.wait_for_log("refused client 'f0b1-on-a' (CaSn 0c01, DeviceSn f0b1): store error "
                          "(the registrations waiting for the fleet reached plugin_opt_fleet_queue_max)"), a.run_log()
    connect(a, first, "f0b0-again").close()  # known to the replica: not a registration
    counters = a.counters()
    assert (counters["auto_registrations"], counters["connections_refused.store_error"]) == (1, 1), counters
    assert a.device_status(CA, "f0b1") is None
    pg.start()
    assert wait_until(lambda: a.fleet_stats()["QueuedRegistrations"] == 0, 10.0), a.fleet_stats()
    connect(a, second, "f0b1-later").close()
    assert wait_until(lambda: fleet.device_status(CA, "f0b1") == "1"), "the second registration never reached the fleet"
    assert [ch[1] for ch in fleet.changes("device_sn IN ('f0b0', 'f0b1')")] == ["AutoRegister", "AutoRegister"]


# ---------------------------------------------------------------- outages

def test_an_outage_keeps_connections_checked_refuses_writes_and_ends_with_catch_up_without_restart(
        members, fleet, pg, pki):
    a, b = members("a"), members("b")
    active, inactive, newcomer = pki.device("f050"), pki.device("f051"), pki.device("f052")
    register(a, active)
    register(a, inactive, status="0")
    head = all_at_head(fleet, [a, b])
    on_b = connect(b, active, "f050-on-b")
    try:
        pg.stop()
        for x in (a, b):
            assert x.wait_for_log(UNREACHABLE, 10.0), x.run_log()
            assert wait_until(lambda: x.fleet_stats()["Connected"] is False), x.fleet_stats()

        # Writes fail at once, whichever broker, and change nothing.
        for x, action, sn in ((a, "InactivateDeviceCertificate", "f050"), (b, "ActiveDeviceCertificate", "f051")):
            started = time.monotonic()
            status, body = x.admin(action, CaSn=CA, DeviceSn=sn)
            assert (status, body.get("Code")) == (503, "FleetUnavailable"), (x.name, status, body)
            assert time.monotonic() - started < 2.0
        # Reads answer from the replica.
        assert [x.device_status(CA, sn) for x in (a, b) for sn in ("f050", "f051")] == ["1", "0", "1", "0"]
        assert len(b.change_log()) == head
        # Connections are checked against the replica's last known state.
        assert on_b.still_connected(0.3)
        assert connack(b, inactive, "f051-on-b") == NOT_AUTHORIZED
        connect(a, active, "f050-on-a").close()
        # A new device is accepted and its registration queued.
        connect(a, newcomer, "f052-on-a").close()
        assert wait_until(lambda: a.fleet_stats()["QueuedRegistrations"] == 1), a.fleet_stats()
        time.sleep(1.5)  # three safety-net polls: still one outage line
        for x in (a, b):
            assert x.count_in_log(UNREACHABLE) == 1, x.run_log()

        pg.start()
        for x in (a, b):
            assert x.wait_for_log(REACHABLE, 10.0), x.run_log()
        assert wait_until(lambda: a.fleet_stats()["QueuedRegistrations"] == 0, 5.0), a.fleet_stats()
        assert wait_until(lambda: fleet.device_status(CA, "f052") == "1"), "the queued registration was lost"
        assert wait_until(lambda: b.device_status(CA, "f052") == "1"), "b never learnt the registration"
        # Writes work again without a restart, and reach the other broker.
        a.ok("InactivateDeviceCertificate", CaSn=CA, DeviceSn="f050")
        assert wait_kicked(on_b, 2.0) == ADMINISTRATIVE_ACTION, b.run_log()
    finally:
        on_b.close()
    for x in (a, b):
        assert x.count_in_log(UNREACHABLE) == 1, x.run_log()
        assert x.count_in_log(REACHABLE) == 1, x.run_log()
        assert x.fleet_stats()["Connected"] is True
    assert [ch[1] for ch in fleet.changes("device_sn = 'f050'")] == ["RegisterDeviceCertificate",
                                                                     "InactivateDeviceCertificate"]
    assert [ch[1] for ch in fleet.changes("device_sn = 'f051'")] == ["RegisterDeviceCertificate"]
    assert [ch[1] for ch in fleet.changes("device_sn = 'f052'")] == ["AutoRegister"]
    all_at_head(fleet, [a, b])
    assert_logs_match_fleet(fleet, [a, b])


# ----------------------------------------------------------- catching up

def first_connack(broker, dev, client_id, timeout=20.0):
    """Connects as soon as the broker's device listener accepts a
    connection; returns the first CONNACK reason code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return connack(broker, dev, client_id)
        except (ConnectionRefusedError, ConnectionResetError):
            assert broker.proc.poll() is None, broker.run_log()
            time.sleep(0.005)
    raise AssertionError(f"{broker.name} never accepted a connection:\n{broker.run_log()}")


def test_a_stopped_broker_catches_up_before_it_accepts_devices(members, fleet, pki):
    a, b = members("a"), members("b")
    dev, later = pki.device("f060"), pki.device("f061")
    register(a, dev)
    all_at_head(fleet, [a, b])
    b.stop()
    a.ok("InactivateDeviceCertificate", CaSn=CA, DeviceSn="f060")
    register(a, later, status="0")
    head = fleet.head()[0]
    # The change log is locked for 2 s while b starts: its catch-up waits for
    # the lock; a broker that opened its listener before catching up would
    # accept the device from its stale replica meanwhile.
    holder = subprocess.Popen(["/usr/bin/psql", "-X", "-q", "-d", fleet.conninfo, "-c",
                               "BEGIN; LOCK TABLE devcert.changes IN ACCESS EXCLUSIVE MODE; "
                               "SELECT pg_sleep(2); COMMIT;"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_until(lambda: fleet.sql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' "
                                            "AND relation = 'devcert.changes'::regclass") == "1"), "no lock"
        b.start(expect_ready=False)
        assert first_connack(b, dev, "f060-on-b") == NOT_AUTHORIZED, b.run_log()
    finally:
        _, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    b.wait_ready()
    assert connack(b, later, "f061-on-b") == NOT_AUTHORIZED, b.run_log()
    stats = b.fleet_stats()
    assert (stats["Position"], stats["Head"], stats["Resyncs"]) == (head, head, 0), stats
    assert b.counters()["auto_registrations"] == 0
    assert_logs_match_fleet(fleet, [a, b])
    assert_consistent(b)


def toggler(broker, serials, stop, answers, seed, latencies=None):
    """Inactivates and activates random devices through the broker until
    stop is set; appends each (status, Code, Detail) answered, and each call's
    duration in seconds to latencies."""
    rng = random.Random(seed)
    while not stop.is_set():
        action = rng.choice(["InactivateDeviceCertificate", "ActiveDeviceCertificate"])
        started = time.monotonic()
        status, body = broker.admin(action, CaSn=CA, DeviceSn=rng.choice(serials))
        if latencies is not None:
            latencies.append(time.monotonic() - started)
        answers.append((status, body.get("Code"), body.get("Detail")))


def server_log(pg):
    """PostgreSQL's own log (deadlocks, errors)."""
    path = Path(pg.dir) / "server.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_broker_killed_while_it_applies_changes_restarts_cleanly_and_applies_each_once(members, fleet, pki):
    a, b = members("a"), members("b")
    serials = [f"f07{i}" for i in range(6)]
    for s in serials:
        register(a, pki.device(s))
    stop, answers = threading.Event(), []
    writer = threading.Thread(target=toggler, args=(a, serials, stop, answers, 7))
    writer.start()
    rng = random.Random(11)
    try:
        for _ in range(3):
            time.sleep(rng.uniform(0.3, 0.7))
            position = b.fleet_stats()["Position"]
            assert b.kill() == -9
            b.start()
            assert b.fleet_stats()["Position"] >= position
    finally:
        stop.set()
        writer.join()
    assert answers and all(ans == (200, None, None) for ans in answers), [x for x in answers if x[0] != 200][:5]
    head = all_at_head(fleet, [a, b], 10.0)
    assert head > 20, f"only {head} changes: the kills met no stream"
    assert fleet.seqs() == list(range(1, head + 1))
    assert_logs_match_fleet(fleet, [a, b])
    assert_consistent(b)
    for s in serials:
        assert b.device_status(CA, s) == fleet.device_status(CA, s)


def test_a_replica_left_unflushed_by_a_system_that_went_down_is_rebuilt_from_the_fleet(members, fleet, pki):
    # A replica's commits skip the flush to disk while a marker names the
    # boot they were made under: a kill -9 loses nothing (the page cache
    # holds them), a system that went down may have, and its file is
    # discarded at the next start.
    a, b = members("a"), members("b")
    dev = pki.device("f0b0")
    register(a, dev)
    all_at_head(fleet, [a, b])
    marker = Path(b.db) / "unflushed-since-boot"
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert marker.read_text().strip() == boot
    b.stop()
    assert not marker.exists(), "a clean stop flushes and removes the marker"
    b.start()
    assert b.fleet_stats()["Resyncs"] == 0
    assert b.kill() == -9
    b.start()  # the same boot: the replica as the killed broker left it
    assert b.fleet_stats()["Resyncs"] == 0, b.run_log()
    assert b.kill() == -9
    a.ok("InactivateDeviceCertificate", CaSn=CA, DeviceSn="f0b0")
    # What a system that went down with b's commits in its page cache leaves.
    marker.write_text("00000000-0000-0000-0000-000000000000\n")
    b.start()
    log = b.run_log()
    assert "was discarded (commits made under boot 00000000-0000-0000-0000-000000000000 were not flushed" in log, log
    stats = b.fleet_stats()
    assert stats["Resyncs"] == 1, stats
    assert stats["Position"] == fleet.head()[0], stats
    assert marker.read_text().strip() == boot
    assert b.device_status(CA, "f0b0") == "0"
    assert connack(b, dev, "f0b0-on-b") == NOT_AUTHORIZED, b.run_log()
    assert_consistent(b)


def test_a_broker_behind_the_retained_log_rebuilds_from_a_snapshot(members, fleet, pki):
    options = {"change_log_retention": "1000", "fleet_trim_interval": "1"}
    a, b = members("a", options=options), members("b", options=options)
    serials = [f"f08{i}" for i in range(8)]
    for s in serials:
        register(a, pki.device(s))
    all_at_head(fleet, [a, b])
    stopped_at = b.fleet_stats()["Position"]
    b.stop()

    # Each call flips its own device: one change per call.
    def flip(mine, count, answers):
        status = {s: "1" for s in mine}
        for i in range(count):
            s = mine[i % len(mine)]
            action = "InactivateDeviceCertificate" if status[s] == "1" else "ActiveDeviceCertificate"
            answers.append(a.admin(action, CaSn=CA, DeviceSn=s)[0])
            status[s] = "0" if status[s] == "1" else "1"

    answers = []
    threads = [threading.Thread(target=flip, args=(serials[i::4], 300, answers)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers.count(200) == 1200, sorted(set(answers))
    assert wait_until(lambda: fleet.head()[1] > stopped_at, 10.0), \
        f"no trim past {stopped_at}: {fleet.head()}\n{a.run_log()}"
    last_seq, trimmed, _ = fleet.head()
    assert last_seq == 1 + len(serials) + 1200
    # What is kept is exactly what lies above trimmed_through.
    assert fleet.seqs() == list(range(trimmed + 1, last_seq + 1))

    b.start()
    stats = b.fleet_stats()
    assert stats["Resyncs"] == 1, stats
    assert (stats["Position"], stats["Head"]) == (last_seq, last_seq), stats
    assert_consistent(b)
    for s in serials:
        assert b.device_status(CA, s) == fleet.device_status(CA, s)
    # Still following after the rebuild.
    flipped = "0" if fleet.device_status(CA, serials[0]) == "1" else "1"
    a.ok("InactivateDeviceCertificate" if flipped == "0" else "ActiveDeviceCertificate", CaSn=CA, DeviceSn=serials[0])
    assert b.wait_position(last_seq + 1)["Position"] == last_seq + 1
    assert b.device_status(CA, serials[0]) == flipped


# ------------------------------------------------------ concurrent writers

def test_concurrent_writers_on_every_broker_leave_a_contiguous_sequence_and_identical_replicas(members, fleet, pki):
    brokers = [members(n) for n in "abc"]
    serials = [f"f09{i}" for i in range(8)]
    for s in serials:
        register(brokers[0], pki.device(s))
    stop, answers, latencies = threading.Event(), [], []
    seq_before = fleet.head()[0]
    deadlocks_before = server_log(fleet.pg).count("deadlock detected")
    threads = [threading.Thread(target=toggler, args=(x, serials, stop, answers, 100 * i + j, latencies))
               for i, x in enumerate(brokers) for j in range(4)]
    for t in threads:
        t.start()
    time.sleep(4.0)
    stop.set()
    for t in threads:
        t.join()
    assert answers and all(ans == (200, None, None) for ans in answers), [x for x in answers if x[0] != 200][:5]

    last_seq, trimmed, _ = fleet.head()
    assert trimmed == 0
    assert fleet.seqs() == list(range(1, last_seq + 1))
    # Twelve writers for 4 s make hundreds of calls when writes do not wait
    # on each other across brokers.
    deadlocks = server_log(fleet.pg).count("deadlock detected") - deadlocks_before
    made = last_seq - seq_before
    assert made > 40, (f"only {made} changes from {len(answers)} calls in 4 s; slowest calls "
                       f"{sorted(round(x, 2) for x in latencies)[-5:]} s; PostgreSQL detected {deadlocks} deadlocks")
    all_at_head(fleet, brokers, 10.0)
    # Each device's changes chain: every change starts from the status the
    # previous one left.
    for s in serials:
        chain = fleet.changes(f"device_sn = '{s}'")
        for before, after in zip(chain, chain[1:]):
            assert after[4] == before[5], f"{s}: {before} then {after}"
        assert chain[-1][5] == fleet.device_status(CA, s)
    for x in brokers:
        assert_consistent(x)
        assert [x.device_status(CA, s) for s in serials] == [fleet.device_status(CA, s) for s in serials]
    assert_logs_match_fleet(fleet, brokers)


# ------------------------------------------------- a member or the database frozen

FROZEN_APP = "frozen-member"


def frozen_session(fleet, state):
    """The row of pg_stat_activity of the broker connected as FROZEN_APP
    when its state is `state`, as "state|wait_event", or ''."""
    return fleet.sql(f"SELECT state || '|' || coalesce(wait_event, '') FROM pg_stat_activity "
                     f"WHERE application_name = '{FROZEN_APP}' AND state = '{state}'")


def test_a_broker_stopped_inside_a_transaction_holds_up_the_fleets_writes_for_its_timeout_at_most(
        members, fleet, pki):
    # Broker b holds the instance's head row and waits for its answer to a
    # read; b is stopped meanwhile, so its session sits idle in the
    # transaction with the row locked, as a broker paused, swapped out or cut
    # off would leave it. Every other member's write needs that row. A write
    # holds the head row across a wait for its broker only when it runs
    # pessimistic (the head row first), which it does after its optimistic
    # attempt waited too long for a record: here another session holds
    # b's device for 1.5 s.
    a = members("a", options={"fleet_timeout": "2"})
    b = members("b", options={"fleet_timeout": "2", "fleet": f"{fleet.conninfo} application_name={FROZEN_APP}"})
    first, second = pki.device("f0a1"), pki.device("f0a2")
    register(a, first)
    register(a, second)
    all_at_head(fleet, [a, b])
    holder = subprocess.Popen(["/usr/bin/psql", "-X", "-q", "-d", fleet.conninfo, "-c",
                               "BEGIN; SELECT 1 FROM devcert.devices WHERE device_sn = '" + first.serial +
                               "' FOR UPDATE; SELECT pg_sleep(1.5); COMMIT;"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    answer = {}
    caller = threading.Thread(target=lambda: answer.update(
        b=b.admin("InactivateDeviceCertificate", CaSn=CA, DeviceSn=first.serial)))
    try:
        assert wait_until(lambda: fleet.sql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                                            "'%pg_sleep(1.5)%' AND wait_event = 'PgSleep'") == "1", 10.0), \
            "the record's holder never started"
        caller.start()
        assert wait_until(lambda: fleet.sql(
            f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{FROZEN_APP}' "
            "AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'") == "1", 10.0), \
            "b's write never waited for the record"
        # Holding the head row (pessimistic) while it waits, unless this is
        # still the optimistic attempt: that one gives up within 50 ms.
        assert wait_until(lambda: fleet.sql(
            f"SELECT count(*) FROM pg_locks l JOIN pg_stat_activity s USING (pid) "
            f"WHERE s.application_name = '{FROZEN_APP}' AND l.relation = 'devcert.instances'::regclass "
            "AND l.mode = 'RowShareLock' AND l.granted") == "1", 10.0), "b's write holds no head row"
        os.kill(b.proc.pid, signal.SIGSTOP)
        assert wait_until(lambda: frozen_session(fleet, "idle in transaction"), 5.0), \
            "b's session is not idle in its transaction"
        started = time.monotonic()
        status, body = a.admin("InactivateDeviceCertificate", CaSn=CA, DeviceSn=second.serial)
        waited = time.monotonic() - started
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
        if caller.is_alive() or caller.ident:
            caller.join(30)
        _, err = holder.communicate(timeout=30)
    assert holder.returncode == 0, err
    # The server ended b's session 2 s into its idle transaction, which
    # released the row: a's write waited for that, not for b.
    assert status == 200, (status, body)
    assert waited < 8.0, f"a's write waited {waited:.1f} s behind a stopped broker"
    assert "idle-in-transaction timeout" in server_log(fleet.pg)
    # b's own call lost its transaction with its session: nothing changed.
    assert answer["b"][0] == 503 and answer["b"][1]["Code"] == "FleetUnavailable", answer
    assert fleet.device_status(CA, first.serial) == "1"
    assert fleet.device_status(CA, second.serial) == "0"
    # b reconnects by itself and applies what a wrote.
    all_at_head(fleet, [a, b], 10.0)
    assert b.device_status(CA, second.serial) == "0"
    b.ok("InactivateDeviceCertificate", CaSn=CA, DeviceSn=first.serial)
    all_at_head(fleet, [a, b])
    assert a.device_status(CA, first.serial) == "0"
    assert_consistent(b)


def test_a_frozen_database_gets_writes_a_503_within_the_timeout_and_never_holds_up_a_stop(members, fleet, pki):
    # The server's processes are stopped: connections stay open and nothing
    # is answered, as with a hung host or a network that drops packets.
    a = members("a", options={"fleet_timeout": "1"})
    dev = pki.device("f0b1")
    register(a, dev)
    fleet.pg.signal_all(signal.SIGSTOP)
    try:
        started = time.monotonic()
        status, body = a.admin("InactivateDeviceCertificate", CaSn=CA, DeviceSn=dev.serial)
        waited = time.monotonic() - started
        assert (status, body.get("Code")) == (503, "FleetUnavailable"), (status, body)
        assert "did not answer within 3000 ms" in body["Detail"], body
        assert waited < 8.0, f"the write waited {waited:.1f} s for a frozen database"
        # Reads and connection checks come from the replica meanwhile.
        assert a.device_status(CA, dev.serial) == "1"
        connect(a, dev, "frozen-db-reader").close()
        # The follower is inside a statement (its poll of the log) or about
        # to be: a stop does not wait for the database.
        time.sleep(1.5)
        started = time.monotonic()
        a.stop(timeout=5)
        assert time.monotonic() - started < 3.0
    finally:
        fleet.pg.signal_all(signal.SIGCONT)
    a.start()
    a.ok("InactivateDeviceCertificate", CaSn=CA, DeviceSn=dev.serial)
    assert fleet.device_status(CA, dev.serial) == "0"
    assert_consistent(a)
