"""What differs between the Mosquitto releases the plugin runs on, checked on
whichever broker DEVCERT_MOSQUITTO names (Debian's 2.0.11 by default;
scripts/test-compat runs this file on every vendored build too):

- kicks after another process's change (devcertctl --db) arrive within
  150 ms, also on a 2.1 build without websockets, whose idle loop sleeps;
- SIGHUP keeps the broker up (2.1 stops on a reload callback's non-zero
  result) and the plugin working;
- a second instance in one process is refused at start-up, naming the
  options (per_listener_settings true with the plugin on two listeners;
  2.1's global_plugin next to a listener's plugin); the plugin on one
  listener with per_listener_settings true kicks on 2.0.15+ and 2.1;
- the plugin names itself to a 2.1 broker;
- $SYS/broker/devcert/... is published, retained, on the plugin's
  sys_interval (read with mosquitto_sub).
"""

import re
import subprocess
import time

import pytest

from devcert_harness import MOSQUITTO, RawMqtt5

ADMINISTRATIVE_ACTION = 0x98


def broker_version():
    out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout
    m = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", out)
    assert m, out
    return tuple(int(x) for x in m.groups())


VERSION = broker_version()


def connect(broker, device, client_id):
    c = RawMqtt5(broker, device, client_id)
    assert c.connack == 0, f"{client_id} was not accepted (CONNACK {c.connack:#x})"
    return c


def ctl_ok(broker, action, **params):
    result = broker.ctl(action, MqttInstanceId="local", **params)
    assert result.returncode == 0, f"devcertctl {action}: {result.stdout}{result.stderr}"


def wait_registered(broker, ca_sn, device_sn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.ctl("GetDeviceCertificate", MqttInstanceId="local", CaSn=ca_sn, DeviceSn=device_sn).returncode == 0:
            return True
        time.sleep(0.05)
    return False


def test_kicks_after_another_process_changes_the_store_arrive_within_150_ms(make_broker, pki):
    broker = make_broker().start()
    devices = [pki.device(f"c1{i:02d}") for i in range(8)]
    sessions = []
    for i, dev in enumerate(devices):
        sessions.append(connect(broker, dev, f"lat-{i}"))
        assert wait_registered(broker, "0c01", dev.serial)
    latencies = []
    try:
        for i, (dev, session) in enumerate(zip(devices, sessions)):
            # Idle first, so that a loop that sleeps when idle is asleep, and
            # vary the phase against the broker's own wake-ups.
            time.sleep(0.4 + 0.037 * i)
            ctl_ok(broker, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn=dev.serial)
            committed = time.monotonic()  # devcertctl has exited: the commit is durable
            assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
            latencies.append((time.monotonic() - committed) * 1000)
    finally:
        for s in sessions:
            s.close()
    print(f"kick latency after devcertctl --db on {MOSQUITTO} {VERSION}: "
          f"max {max(latencies):.1f} ms, all {[round(x, 1) for x in latencies]}")
    assert max(latencies) < 150, latencies


def test_sighup_keeps_the_broker_and_the_plugin_working(make_broker, pki):
    broker = make_broker(admin_socket=True).start()
    dev = pki.device("c201")
    session = connect(broker, dev, "hup-1")
    try:
        for n in (1, 2):
            broker.reload()
            assert broker.wait_for_log("reload: re-checking every session", timeout=5)
            time.sleep(0.3)
            assert broker.proc.poll() is None, broker.log()
            assert broker.count_in_log("reload: re-checking every session") == n
        assert "produced error on reload" not in broker.log()
        assert session.still_connected()
        # Still enforcing after the reloads: the admin socket and the kick.
        status, body = broker.admin("InactivateDeviceCertificate", CaSn="0c01", DeviceSn="c201")
        assert status == 200, body
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
        late = pki.device("c202")
        connect(broker, late, "hup-2").close()
    finally:
        session.close()


def two_listener_config(broker, first_line, second_line):
    """Rewrites the broker's config so the plugin (and its options) is named
    by `first_line` and then again by `second_line` (under the plain
    listener)."""
    text = broker.conf.read_text()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("plugin "))
    plugin_block = lines[start:]
    path = plugin_block[0].split(" ", 1)[1]
    head = lines[:start]
    plain = next(i for i, line in enumerate(head) if line.startswith(f"listener {broker.plain_port}"))
    second = [f"{second_line} {path}"] + [line.replace(broker.db, broker.db + "-second") for line in plugin_block[1:]]
    head[plain + 1:plain + 1] = second
    broker.conf.write_text("\n".join(head + [f"{first_line} {path}"] + plugin_block[1:]) + "\n")


def test_the_plugin_on_two_listeners_is_refused_at_start_up_naming_the_options(make_broker):
    broker = make_broker(per_listener_settings=True)
    two_listener_config(broker, "plugin", "plugin")
    broker.start(expect_ready=False)
    assert broker.wait_exit(15) != 0
    log = broker.log()
    assert "already loaded in this broker" in log, log
    assert "per_listener_settings true" in log and "global_plugin" in log, log


@pytest.mark.skipif(VERSION < (2, 1, 0), reason="global_plugin exists from 2.1 on")
def test_global_plugin_next_to_a_listener_plugin_is_refused_at_start_up(make_broker):
    broker = make_broker()
    two_listener_config(broker, "global_plugin", "plugin")
    broker.start(expect_ready=False)
    assert broker.wait_exit(15) != 0
    assert "already loaded in this broker" in broker.log(), broker.log()


@pytest.mark.skipif(VERSION < (2, 1, 0), reason="global_plugin exists from 2.1 on")
def test_one_global_plugin_enforces_and_kicks(make_broker, pki):
    broker = make_broker()
    text = broker.conf.read_text()
    broker.conf.write_text(re.sub(r"^plugin ", "global_plugin ", text, flags=re.M))
    broker.start()
    dev = pki.device("c301")
    session = connect(broker, dev, "global-1")
    try:
        assert wait_registered(broker, "0c01", dev.serial)
        ctl_ok(broker, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn=dev.serial)
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    finally:
        session.close()


@pytest.mark.skipif(VERSION < (2, 0, 15), reason="2.0.11 fires no TICK with per_listener_settings true")
def test_per_listener_settings_with_the_plugin_on_one_listener_kicks(make_broker, pki):
    broker = make_broker(per_listener_settings=True).start()
    dev = pki.device("c401")
    session = connect(broker, dev, "perlistener-1")
    try:
        assert wait_registered(broker, "0c01", dev.serial)
        ctl_ok(broker, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn=dev.serial)
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    finally:
        session.close()


@pytest.mark.skipif(VERSION < (2, 1, 0), reason="mosquitto_plugin_set_info exists from 2.1 on")
def test_the_plugin_names_itself_to_a_2_1_broker(make_broker):
    broker = make_broker().start()
    assert "Plugin mosquitto-devcert has registered to receive 'tick' events" in broker.log(), broker.log()


def sys_values(broker, *extra):
    cmd = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.plain_port), "-t", "$SYS/broker/devcert/#", "-v",
           "-W", "3", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
    values = {}
    for line in out.splitlines():
        topic, _, value = line.partition(" ")
        values[topic] = value
    return values


def test_sys_topics_are_published_retained_on_the_plugins_sys_interval(make_broker, pki):
    broker = make_broker(options={"sys_interval": "1"}, extra_config="sys_interval 1").start()
    dev = pki.device("c501")
    session = connect(broker, dev, "sys-1")
    try:
        assert wait_registered(broker, "0c01", dev.serial)
        ctl_ok(broker, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn=dev.serial)
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    finally:
        session.close()
    time.sleep(1.5)  # one more round after the kick
    # --retained-only: only what the broker holds retained, then exit.
    values = sys_values(broker, "--retained-only")
    root = "$SYS/broker/devcert/"
    assert values.get(root + "connections_accepted") == "1", values
    assert values.get(root + "kicks") == "1", values
    assert values.get(root + "auto_registrations") == "1", values
    assert values.get(root + "store/cas") == "1", values
    assert values.get(root + "store/devices") == "1", values
    assert int(values.get(root + "change_log/position", "0")) >= 2, values
    assert root + "connections_refused/device_inactive" in values, values
    # A refused connection shows up at the next round.
    refused = RawMqtt5(broker, dev, "sys-2")
    refused.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        values = sys_values(broker, "--retained-only")
        if values.get(root + "connections_refused/device_inactive") == "1":
            break
        time.sleep(0.3)
    assert values.get(root + "connections_refused/device_inactive") == "1", values
