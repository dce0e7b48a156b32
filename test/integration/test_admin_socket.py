"""The admin socket inside a real broker: curl and devcertctl reach it, the
file has the configured mode, a stale file is replaced, and the broker
removes it when it stops (checked by the harness's stop())."""

import json
import os
import socket
import stat
import subprocess
from pathlib import Path

from devcert_harness import devcertctl_path


def curl(broker, query="", data=None, content_type=None):
    cmd = ["curl", "-sS", "--unix-socket", broker.admin_socket, "-o", "-", "-w", "\n%{http_code}",
           f"http://localhost/{query}"]
    if data is not None:
        cmd += ["--data-binary", data]
    if content_type is not None:
        cmd += ["-H", f"Content-Type: {content_type}"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


def ctl(broker, *args):
    return subprocess.run([devcertctl_path(), "--socket", broker.admin_socket, *args], capture_output=True,
                          text=True, timeout=30)


def test_curl_reaches_the_broker_over_its_admin_socket(make_broker):
    broker = make_broker(admin_socket=True).start()
    status, body = curl(broker, "?Action=GetRegisterCode&MqttInstanceId=local")
    assert status == 200
    assert len(body["RequestId"]) == 36
    assert body["RegisterCode"]
    status, body = curl(broker, "?Action=GetRegisterCode&MqttInstanceId=elsewhere")
    assert (status, body["Code"]) == (500, "MqttInstanceNotFound")


def test_the_socket_file_has_the_configured_mode(make_broker):
    broker = make_broker(admin_socket=True, options={"admin_socket_mode": "0600"}).start()
    assert stat.S_ISSOCK(os.lstat(broker.admin_socket).st_mode)
    assert stat.S_IMODE(os.lstat(broker.admin_socket).st_mode) == 0o600


def test_a_stale_socket_file_is_replaced_at_start(make_broker):
    broker = make_broker(admin_socket=True)
    left_over = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_over.bind(broker.admin_socket)
    left_over.close()
    assert Path(broker.admin_socket).exists()
    broker.start()
    status, _ = curl(broker, "?Action=GetRegisterCode&MqttInstanceId=local")
    assert status == 200


def test_devcertctl_inactivates_a_registered_device_through_the_broker(make_broker, pki):
    broker = make_broker(admin_socket=True).start()
    device = pki.device("0d21")
    added = ctl(broker, "RegisterDeviceCertificate", "--MqttInstanceId", "local", "--DeviceContent",
                f"@{device.cert}")
    assert added.returncode == 0, added.stdout + added.stderr
    result = ctl(broker, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", pki.ca.serial,
                 "--DeviceSn", "0D:21")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["DeviceSn"] == "0d21"
    assert broker.wait_for_log("| InactivateDeviceCertificate |")
    got = ctl(broker, "GetDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", pki.ca.serial,
              "--DeviceSn", "0d21")
    assert json.loads(got.stdout)["Data"]["Status"] == "0"


def test_devcertctl_exits_1_with_the_error_json_from_the_broker(make_broker, pki):
    broker = make_broker(admin_socket=True).start()
    result = ctl(broker, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", pki.ca.serial,
                 "--DeviceSn", "0d99")
    assert result.returncode == 1
    assert json.loads(result.stdout)["Code"] == "FindDeviceBySnError"


def test_db_mode_takes_the_instance_id_the_broker_wrote_to_the_store(make_broker):
    broker = make_broker(admin_socket=True, options={"instance_id": "plant-7"}).start()
    broker.stop()
    ours = subprocess.run([devcertctl_path(), "--db", broker.db, "GetRegisterCode", "--MqttInstanceId", "plant-7"],
                          capture_output=True, text=True, timeout=30)
    assert ours.returncode == 0, ours.stdout + ours.stderr
    local = subprocess.run([devcertctl_path(), "--db", broker.db, "GetRegisterCode", "--MqttInstanceId", "local"],
                           capture_output=True, text=True, timeout=30)
    assert local.returncode == 1
    assert json.loads(local.stdout)["Code"] == "MqttInstanceNotFound"


def test_malformed_and_oversized_requests_are_refused_and_the_broker_keeps_serving(make_broker):
    broker = make_broker(admin_socket=True).start()
    assert curl(broker, "?Action=GetRegisterCode&MqttInstanceId=lo%zz")[1]["Code"] == "ParameterFieldCheckFailed"
    assert curl(broker, data='{"Action":["x"]}', content_type="application/json")[1]["Code"] == \
        "ParameterFieldCheckFailed"
    status, _ = curl(broker, data=" " * (64 * 1024 + 1), content_type="application/json")
    assert status == 413
    status, _ = curl(broker, "?Action=GetRegisterCode&MqttInstanceId=local")
    assert status == 200
