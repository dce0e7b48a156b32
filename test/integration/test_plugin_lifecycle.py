"""Start-up, restart, reload and shutdown of a broker with the plugin."""

import time

from devcert_harness import Mqtt5Client, raw_connect_v311

CONNACK_V3_ACCEPTED = b"\x20\x02\x00\x00"
CONNACK_V3_NOT_AUTHORIZED = b"\x20\x02\x00\x05"


def test_a_bad_option_stops_start_up_with_one_line_naming_the_key(make_broker):
    b = make_broker(options={"auto_register": "maybe"})
    b.start(expect_ready=False)
    assert b.wait_exit() != 0
    assert "devcert: plugin_opt_auto_register: 'maybe' is not one of active, inactive, off" in b.log()


def test_an_unknown_option_stops_start_up(make_broker):
    b = make_broker(options={"auto_registr": "active"})
    b.start(expect_ready=False)
    assert b.wait_exit() != 0
    assert "devcert: plugin_opt_auto_registr: unknown option" in b.log()


def test_an_unusable_store_path_stops_start_up_naming_the_path(make_broker, tmp_path):
    missing = tmp_path / "nowhere" / "db"
    b = make_broker(options={"db_path": str(missing)})
    b.start(expect_ready=False)
    assert b.wait_exit() != 0
    assert f"plugin_opt_db_path: cannot create '{missing}'" in b.log()


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
    again = make_broker(options={"auto_register": "active", "db_path": b.db}).start()
    assert raw_connect_v311(again, dev, "restart-c001") == CONNACK_V3_NOT_AUTHORIZED
    assert again.wait_for_log("(CaSn 0c01, DeviceSn c001): device inactive")
    assert again.wait_for_log("CA 0c01 from")  # already registered, not imported again
    other = pki.device("c002", "sensor-c002")
    assert raw_connect_v311(again, other, "restart-c002") == CONNACK_V3_ACCEPTED


def test_sighup_keeps_connected_devices_and_their_offline_sessions(broker, pki):
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
