"""Connections against the real broker: who gets a session, and what each
MQTT version sees when refused."""

import pytest

from devcert_harness import mqtt5_connack, mosquitto_pub, raw_connect_v311, refused

CONNACK_V3_ACCEPTED = b"\x20\x02\x00\x00"
CONNACK_V3_NOT_AUTHORIZED = b"\x20\x02\x00\x05"
NOT_AUTHORIZED = 0x87


def refusals(counters):
    return {k: v for k, v in counters.items() if k.startswith("connections_refused.") and v}


def test_an_active_device_is_accepted_over_mqtt_311_and_mqtt_5(admin_broker, pki):
    broker = admin_broker
    dev = pki.device("a001", "sensor-a001")
    assert raw_connect_v311(broker, dev, "v3-a001") == CONNACK_V3_ACCEPTED
    result = mosquitto_pub(broker, dev, "pub-a001")
    assert result.returncode == 0, result.stderr
    assert mqtt5_connack(broker, dev, "v5-a001") == 0
    assert broker.wait_for_log("accepted client 'v5-a001' (CaSn 0c01, DeviceSn a001)")
    counters = broker.wait_counter("auto_registrations", 1)
    assert counters["connections_accepted"] == 3
    assert counters["auto_registrations"] == 1
    assert refusals(counters) == {}
    stats = broker.stats()
    assert (stats["CaCount"], stats["DeviceCount"]) == (1, 1)


def test_a_device_of_an_unregistered_ca_is_refused_with_connack_5_and_0x87(admin_broker, pki):
    broker = admin_broker
    dev = pki.device("a002", "sensor-a002", issuer=pki.stranger_ca)
    assert raw_connect_v311(broker, dev, "v3-a002") == CONNACK_V3_NOT_AUTHORIZED
    assert mqtt5_connack(broker, dev, "v5-a002") == NOT_AUTHORIZED
    assert broker.wait_for_log("refused client 'v3-a002' (CaSn -, DeviceSn a002): ca not registered")
    result = mosquitto_pub(broker, dev, "pub-a002")
    assert result.returncode != 0
    assert "not authori" in result.stderr.lower()
    counters = broker.counters()
    assert refusals(counters) == {refused("ca not registered"): 3}
    assert counters["connections_accepted"] == 0
    assert counters["auto_registrations"] == 0


def test_auto_register_inactive_refuses_a_new_device_and_keeps_refusing_it(make_broker, pki):
    b = make_broker(options={"auto_register": "inactive"}, admin_socket=True).start()
    dev = pki.device("a003", "sensor-a003")
    assert raw_connect_v311(b, dev, "v3-a003") == CONNACK_V3_NOT_AUTHORIZED
    assert b.wait_for_log("registered DeviceSn a003 under CaSn 0c01 as inactive")
    assert raw_connect_v311(b, dev, "v3-a003") == CONNACK_V3_NOT_AUTHORIZED
    assert b.count_in_log("(CaSn 0c01, DeviceSn a003): device inactive") == 2
    counters = b.wait_counter("auto_registrations", 1)
    assert counters["auto_registrations"] == 1
    assert refusals(counters) == {refused("device inactive"): 2}
    assert counters["connections_accepted"] == 0


def test_auto_register_off_refuses_a_new_device_as_not_registered(make_broker, pki):
    b = make_broker(options={"auto_register": "off"}, admin_socket=True).start()
    dev = pki.device("a004", "sensor-a004")
    assert mqtt5_connack(b, dev, "v5-a004") == NOT_AUTHORIZED
    assert b.wait_for_log("refused client 'v5-a004' (CaSn 0c01, DeviceSn a004): not registered")
    assert "registered DeviceSn a004" not in b.log()
    counters = b.counters()
    assert refusals(counters) == {refused("not registered"): 1}
    assert counters["auto_registrations"] == 0
    assert b.stats()["DeviceCount"] == 0


def test_auto_register_active_registers_a_new_device_once(admin_broker, pki):
    broker = admin_broker
    dev = pki.device("a005", "sensor-a005")
    assert raw_connect_v311(broker, dev, "v3-a005") == CONNACK_V3_ACCEPTED
    assert broker.wait_for_log("registered DeviceSn a005 under CaSn 0c01 as active")
    assert raw_connect_v311(broker, dev, "v3-a005") == CONNACK_V3_ACCEPTED
    assert broker.count_in_log("registered DeviceSn a005") == 1
    counters = broker.counters()
    assert (counters["connections_accepted"], counters["auto_registrations"]) == (2, 1)


@pytest.mark.parametrize("name,set_serial,why", [
    ("negative-serial", "-5", "negative serial number"),
    ("zero-serial", "0", "serial number zero"),
])
def test_a_device_certificate_with_a_negative_or_zero_serial_is_refused_and_the_broker_keeps_serving(
        admin_broker, pki, name, set_serial, why):
    broker = admin_broker
    bad = pki.device_with_serial(name, set_serial)
    # TLS lets it through (OpenSSL verifies such serials): the plugin refuses.
    assert raw_connect_v311(broker, bad, f"v3-{name}") == CONNACK_V3_NOT_AUTHORIZED
    assert mqtt5_connack(broker, bad, f"v5-{name}") == NOT_AUTHORIZED
    assert broker.wait_for_log(f"refused client 'v3-{name}' (CaSn -, DeviceSn -): bad certificate ({why})")
    counters = broker.counters()
    assert refusals(counters) == {refused("bad certificate"): 2}
    assert counters["auto_registrations"] == 0

    good = pki.device("a007", "sensor-a007")
    assert raw_connect_v311(broker, good, "v3-a007") == CONNACK_V3_ACCEPTED
    assert broker.wait_counter("auto_registrations", 1)["connections_accepted"] == 1
    # Only the good device was registered.
    assert broker.stats()["DeviceCount"] == 1


@pytest.mark.parametrize("mode,expected", [
    ("cn", "u'sensor-a006'"),
    ("subject", "u'O=devcert devices,CN=sensor-a006'"),
    ("device_sn", "u'a006'"),
    ("keep", "u'connect-name'"),
])
def test_the_username_is_set_per_the_username_option(make_broker, pki, mode, expected):
    b = make_broker(options={"username": mode}).start()
    dev = pki.device("a006", "sensor-a006")
    cmd_user = ["-u", "connect-name"]
    import subprocess
    result = subprocess.run(
        ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(b.tls_port), "--cafile", pki.client_trust, "--cert", dev.cert,
         "--key", dev.key, "--insecure", "-i", f"user-{mode}", "-t", "t", "-m", "m", *cmd_user],
        capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stderr
    assert b.wait_for_log(f"as user-{mode} ")
    line = next(l for l in b.log().splitlines() if f"as user-{mode} " in l)
    assert expected in line, line


def test_a_client_without_certificate_on_the_plain_listener_is_left_to_mosquitto(admin_broker):
    broker = admin_broker
    import paho.mqtt.client as mqtt
    c = mqtt.Client(client_id="plain-client", protocol=mqtt.MQTTv311)
    assert c.connect("127.0.0.1", broker.plain_port) == 0
    rc = None
    for _ in range(50):
        c.loop(timeout=0.1)
        if c.is_connected():
            rc = 0
            break
    c.disconnect()
    assert rc == 0
    assert "plain-client" not in "".join(l for l in broker.log().splitlines() if "devcert" in l)
    # Deferred to mosquitto: neither accepted nor refused by the plugin.
    counters = broker.counters()
    assert counters["connections_accepted"] == 0
    assert refusals(counters) == {}


def test_no_certificate_deny_refuses_a_plain_client_and_counts_it(make_broker):
    import socket
    b = make_broker(options={"no_certificate": "deny"}, admin_socket=True).start()
    client_id = b"plain-denied"
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    with socket.create_connection(("127.0.0.1", b.plain_port), timeout=5) as s:
        s.sendall(b"\x10" + bytes([len(body)]) + body)
        assert s.recv(4) == CONNACK_V3_NOT_AUTHORIZED
    assert b.wait_for_log("refused client 'plain-denied' (CaSn -, DeviceSn -): no certificate")
    counters = b.counters()
    assert refusals(counters) == {refused("no certificate"): 1}
    assert counters["connections_accepted"] == 0
