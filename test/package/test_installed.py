"""The installed package at work: Debian's broker (/usr/sbin/mosquitto) with
the installed module on a test configuration, a device connecting, and the
installed devcertctl inactivating it through the admin socket. Run by
test/package/test_package.sh after `dpkg -i`, with DEVCERT_PLUGIN and
DEVCERTCTL naming the installed files."""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "integration"))

from devcert_harness import Broker, Pki, RawMqtt5  # noqa: E402

ADMINISTRATIVE_ACTION = 0x98


def test_the_installed_module_and_devcertctl_enforce_a_status(tmp_path):
    pki = Pki(tmp_path / "pki")
    broker = Broker(tmp_path / "broker", pki, admin_socket=True).start()
    try:
        assert "Loading plugin: /usr/lib/" in broker.log(), broker.log()
        dev = pki.device("d101")
        session = RawMqtt5(broker, dev, "pkg-1")
        assert session.connack == 0
        result = subprocess.run(["/usr/bin/devcertctl", "--socket", broker.admin_socket, "InactivateDeviceCertificate",
                                 "--MqttInstanceId", "local", "--CaSn", "0c01", "--DeviceSn", "d101"],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stdout + result.stderr
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
        session.close()
        refused = RawMqtt5(broker, dev, "pkg-2")
        assert refused.connack == 0x87
        refused.close()
    finally:
        broker.stop()
