"""Start-up, restart, reload and shutdown of a broker with the plugin."""

import os
import re
import time

import pytest

from devcert_harness import Mqtt5Client, raw_connect_v311, refused

CONNACK_V3_ACCEPTED = b"\x20\x02\x00\x00"
CONNACK_V3_NOT_AUTHORIZED = b"\x20\x02\x00\x05"


def start_fails(make_broker, **kw):
    """Starts a broker that must refuse to start; returns its devcert log lines."""
    b = make_broker(**kw)
    b.start(expect_ready=False)
    assert b.wait_exit() != 0, b.log()
    lines = [l for l in b.log().splitlines() if l.startswith("devcert:")]
    assert lines, b.log()
    return lines


def the_error(lines):
    """The one line that says why start-up stopped (errors come last; the
    lines before it, if any, are the start-up notices that went well)."""
    return lines[-1]


# Every option, each with a value that cannot work and the start-up line it
# must produce: the key, the value and the reason.
BAD_OPTIONS = [
    ({"auto_registr": "active"}, "plugin_opt_auto_registr: unknown option"),
    ({"auto_register": "maybe"}, "plugin_opt_auto_register: 'maybe' is not one of active, inactive, off"),
    ({"username": "email"}, "plugin_opt_username: 'email' is not one of cn, subject, device_sn, keep"),
    ({"no_certificate": "allow"}, "plugin_opt_no_certificate: 'allow' is not one of defer, deny"),
    ({"on_store_error": "ignore"}, "plugin_opt_on_store_error: 'ignore' is not one of deny, allow"),
    ({"wakeup_signal": "SIGBOGUS"},
     "plugin_opt_wakeup_signal: 'SIGBOGUS' is not a signal name (e.g. SIGURG, WINCH, RTMIN+2) or off"),
    ({"wakeup_signal": "SIGHUP"}, "plugin_opt_wakeup_signal: 'SIGHUP' cannot be used: mosquitto uses it to reload"),
    ({"wakeup_signal": "RTMIN+999"}, "plugin_opt_wakeup_signal: 'RTMIN+999' is outside SIGRTMIN..SIGRTMAX"),
    ({"admin_socket_mode": "0698"}, "plugin_opt_admin_socket_mode: '0698' is not an octal number"),
    ({"admin_socket_mode": "1777"}, "plugin_opt_admin_socket_mode: '1777' is not between 0 and 777"),
    ({"admin_socket": "relative.sock"}, "plugin_opt_admin_socket: 'relative.sock' is not an absolute path"),
    ({"admin_socket": "/tmp/" + "s" * 110}, "plugin_opt_admin_socket: '/tmp/" + "s" * 110
     + "' is 115 bytes long, a UNIX socket path holds at most 107"),
    ({"admin_rate_limit": "0"}, "plugin_opt_admin_rate_limit: '0' is not between 1 and 1000000"),
    ({"instance_id": "a b"}, "plugin_opt_instance_id: 'a b' may hold only letters, digits, '-', '_' and '.'"),
    ({"max_ca": "many"}, "plugin_opt_max_ca: 'many' is not a number"),
    ({"change_log_retention": "10"}, "plugin_opt_change_log_retention: '10' is not between 1000 and 4294967295"),
    ({"map_size": "64Q"}, "plugin_opt_map_size: '64Q' is not a size (bytes, or a number with K, M or G)"),
    ({"db_path": "relative/db"}, "plugin_opt_db_path: 'relative/db' is not an absolute path"),
]


@pytest.mark.parametrize("options,expected", BAD_OPTIONS, ids=[next(iter(o)) + "=" + next(iter(o.values()))[:20]
                                                              for o, _ in BAD_OPTIONS])
def test_a_bad_option_stops_start_up_with_one_line_naming_the_key(make_broker, options, expected):
    lines = start_fails(make_broker, options=options)
    # Options are parsed before anything is opened: the reason is the only line.
    assert lines == ["devcert: " + expected]


def test_an_option_given_twice_stops_start_up(make_broker):
    lines = start_fails(make_broker, extra_config="", options={"username": ["cn", "subject"]})
    assert lines == ["devcert: plugin_opt_username: given more than once"]


def test_an_unusable_store_path_stops_start_up_naming_the_path(make_broker, tmp_path):
    missing = tmp_path / "nowhere" / "db"
    lines = start_fails(make_broker, options={"db_path": str(missing)})
    assert lines == [f"devcert: plugin_opt_db_path: cannot create '{missing}': parent directory "
                     f"'{missing.parent}' does not exist"]


def test_a_store_path_that_is_a_file_stops_start_up(make_broker, tmp_path):
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("")
    lines = start_fails(make_broker, options={"db_path": str(a_file)})
    assert lines == [f"devcert: plugin_opt_db_path: '{a_file}' exists and is not a directory"]


def test_a_store_of_another_schema_stops_start_up_naming_the_path(make_broker, tmp_path):
    # A directory that holds something other than a status store.
    db = tmp_path / "db"
    db.mkdir()
    (db / "data.mdb").write_bytes(b"this is not an lmdb file" * 400)
    lines = start_fails(make_broker, options={"db_path": str(db)})
    assert lines == [f"devcert: plugin_opt_db_path: cannot open status store '{db}': MDB_INVALID: "
                     "File is not an LMDB file"]


def test_a_missing_import_ca_file_stops_start_up(make_broker, tmp_path):
    missing = tmp_path / "missing-ca.pem"
    lines = start_fails(make_broker, import_ca=False, options={"import_ca": str(missing)})
    assert lines == [f"devcert: plugin_opt_import_ca: cannot use '{missing}': No such file or directory"]


def test_an_import_ca_path_that_is_a_directory_stops_start_up(make_broker, tmp_path):
    lines = start_fails(make_broker, import_ca=False, options={"import_ca": str(tmp_path)})
    assert lines == [f"devcert: plugin_opt_import_ca: '{tmp_path}' is not a regular file"]


def test_an_import_ca_file_without_a_certificate_stops_start_up(make_broker, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("this is not a certificate\n")
    lines = start_fails(make_broker, import_ca=False, options={"import_ca": str(junk)})
    assert the_error(lines).startswith(f"devcert: plugin_opt_import_ca: '{junk}': ")
    assert len(lines) == 1, lines


def test_an_import_ca_file_holding_a_device_certificate_stops_start_up(make_broker, pki):
    leaf = pki.device("c050", "sensor-c050")
    lines = start_fails(make_broker, import_ca=[leaf])
    assert the_error(lines).startswith(f"devcert: plugin_opt_import_ca: '{leaf.cert}': ")
    assert "CA" in the_error(lines)
    assert not any("imported CA" in l for l in lines)


@pytest.mark.parametrize("policy,reason", [
    ("{ not json", "line 1: "),
    ('{"Version": "1", "Statement": [{"Effect": "Maybe", "Principal": "*", "Action": "*", "Resource": "*"}]}',
     "must be \"Allow\" or \"Deny\""),
], ids=["not-json", "bad-effect"])
def test_an_unparsable_admin_policy_stops_start_up_naming_the_file(make_broker, tmp_path, policy, reason):
    path = tmp_path / "policy.json"
    path.write_text(policy)
    lines = start_fails(make_broker, admin_socket=True, options={"admin_policy": str(path)})
    # Checked before the store is touched: no CA was imported first.
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"devcert: plugin_opt_admin_policy: admin policy '{path}'")
    assert reason in lines[0]


def test_an_unparsable_admin_policy_stops_start_up_even_with_the_socket_off(make_broker, tmp_path):
    path = tmp_path / "policy.json"
    path.write_text("[]")
    lines = start_fails(make_broker, options={"admin_policy": str(path)})
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"devcert: plugin_opt_admin_policy: admin policy '{path}'")


def test_an_admin_socket_in_a_missing_directory_stops_start_up_naming_the_path(make_broker, tmp_path):
    sock = f"/tmp/dc-missing-{os.getpid()}/admin.sock"
    lines = start_fails(make_broker, options={"admin_socket": sock})
    assert the_error(lines).startswith("devcert: plugin_opt_admin_socket: ")
    assert sock in the_error(lines)


def test_a_missing_admin_policy_file_stops_start_up(make_broker, tmp_path):
    missing = tmp_path / "policy.json"
    lines = start_fails(make_broker, admin_socket=True, options={"admin_policy": str(missing)})
    assert lines == [f"devcert: plugin_opt_admin_policy: cannot use '{missing}': No such file or directory"]


def test_the_store_directory_is_created_and_imported_cas_are_logged(broker, pki):
    assert broker.wait_for_log("imported CA 0c01")
    assert broker.wait_for_log("instance 'local', store '" + broker.db + "'")


def test_a_broker_restart_keeps_every_status(make_broker, pki):
    b = make_broker(options={"auto_register": "inactive"}).start()
    dev = pki.device("c001", "sensor-c001")
    assert raw_connect_v311(b, dev, "restart-c001") == CONNACK_V3_NOT_AUTHORIZED
    assert b.wait_for_log("registered DeviceSn c001 under CaSn 0c01 as inactive")
    b.stop()

    # Same store, now registering new devices active: the stored status rules.
    again = make_broker(options={"auto_register": "active", "db_path": b.db}, admin_socket=True).start()
    assert raw_connect_v311(again, dev, "restart-c001") == CONNACK_V3_NOT_AUTHORIZED
    assert again.wait_for_log("(CaSn 0c01, DeviceSn c001): device inactive")
    assert again.wait_for_log("CA 0c01 from")  # already registered, not imported again
    other = pki.device("c002", "sensor-c002")
    assert raw_connect_v311(again, other, "restart-c002") == CONNACK_V3_ACCEPTED
    counters = again.wait_counter("auto_registrations", 1)
    assert counters[refused("device inactive")] == 1
    assert (counters["connections_accepted"], counters["auto_registrations"]) == (1, 1)
    assert again.stats()["DeviceCount"] == 2


def test_sighup_keeps_connected_devices_and_their_offline_sessions(admin_broker, pki):
    broker = admin_broker
    online_dev = pki.device("c010", "sensor-c010")
    durable_dev = pki.device("c011", "sensor-c011")
    online = Mqtt5Client(broker, online_dev, "hup-online")
    durable = Mqtt5Client(broker, durable_dev, "hup-durable", clean_start=True, session_expiry=3600)
    try:
        assert online.wait_connack() == 0
        assert durable.wait_connack() == 0
        durable.close()  # leaves an offline durable session behind
        time.sleep(0.3)

        broker.reload()
        assert broker.wait_for_log("reload: re-checking every session")
        time.sleep(0.5)
        assert not online.disconnected.is_set(), "the reload dropped an active device"

        back = Mqtt5Client(broker, durable_dev, "hup-durable", clean_start=False, session_expiry=3600)
        try:
            assert back.wait_connack() == 0
        finally:
            back.close()
        assert "Client hup-durable disconnected: not authorised" not in broker.log()
        counters = broker.counters()
        assert counters["reload_rechecks"] == 1
        # The connected device and, on 2.0, the offline session are re-checked;
        # 2.1 asks no listener's plugin about a session without a connection
        # (it has no listener), and keeps it all the same.
        version = re.search(r"mosquitto version (\d+)\.(\d+)", broker.log())
        assert version, "the broker logged no version"
        asked_offline = (int(version.group(1)), int(version.group(2))) < (2, 1)
        kept = 2 if asked_offline else 1
        assert (counters["reload_sessions_kept"], counters["reload_sessions_refused"]) == (kept, 0)
        assert counters["connections_accepted"] == 3
        assert counters["kicks"] == 0
        assert not any(v for k, v in counters.items() if k.startswith("connections_refused."))
    finally:
        online.close()


def test_a_missing_tick_is_reported_as_an_error_that_says_kicks_cannot_happen(make_broker, pki):
    b = make_broker(per_listener_settings=True).start()
    dev = pki.device("c030", "sensor-c030")
    assert raw_connect_v311(b, dev, "tickless-1") == CONNACK_V3_ACCEPTED
    time.sleep(5.5)
    assert raw_connect_v311(b, dev, "tickless-2") == CONNACK_V3_ACCEPTED
    assert b.wait_for_log("connected clients cannot be kicked")
    assert "per_listener_settings true" in b.log()


def test_the_broker_shuts_down_cleanly_with_clients_connected(broker, pki):
    dev = pki.device("c040", "sensor-c040")
    c = Mqtt5Client(broker, dev, "shutdown-c040")
    assert c.wait_connack() == 0
    broker.stop()
    c.close()
