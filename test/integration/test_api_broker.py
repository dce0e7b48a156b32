"""The admin API inside a real broker: InactivateDeviceCertificate against
connected devices of both MQTT versions, every error row of its table
through curl and devcertctl, the access policy for other OS users, the
per-uid rate limit, and the whole certificate lifecycle."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from devcert_harness import RawMqtt5, devcertctl_path, raw_connect_v311, run, tls_context

ADMINISTRATIVE_ACTION = 0x98
NOT_AUTHORIZED = 0x87
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
NOBODY = 65534
UNNAMED_UID = 54321


def curl(broker, params, uid=None, method="GET"):
    """Calls the admin socket with curl, optionally as another OS user.
    Returns (http status, parsed body, headers text)."""
    cmd = ["curl", "-sS", "-D", "-", "--unix-socket", broker.admin_socket]
    if method == "GET":
        cmd.append("http://localhost/?" + urllib.parse.urlencode(params))
    else:
        cmd += ["http://localhost/"]
        for key, value in params:
            cmd += ["--data-urlencode", f"{key}={value}"]
    if uid is not None:
        cmd = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    status = int(head.split()[1])
    assert body, f"no body in: {out.stdout!r}"
    return status, json.loads(body), head


def call(broker, action, uid=None, instance="local", **params):
    items = [("Action", action)]
    if instance is not None:
        items.append(("MqttInstanceId", instance))
    items += list(params.items())
    return curl(broker, items, uid=uid)


def ok(broker, action, **params):
    status, body, _ = call(broker, action, **params)
    assert status == 200, body
    assert REQUEST_ID.match(body["RequestId"]), body
    return body


def error(broker, action, code, http, uid=None, **params):
    status, body, head = call(broker, action, uid=uid, **params)
    assert (status, body.get("Code")) == (http, code), body
    assert REQUEST_ID.match(body["RequestId"]) and body["Message"], body
    return body, head


def ctl(broker, *args):
    return subprocess.run([devcertctl_path(), "--socket", broker.admin_socket, *args],
                          capture_output=True, text=True, timeout=20)


def connect5(broker, device, client_id):
    c = RawMqtt5(broker, device, client_id)
    assert c.connack == 0, f"{client_id} refused with {c.connack:#x}"
    return c


class Raw311:
    """An MQTT 3.1.1 session kept open, to see the broker close it."""

    def __init__(self, broker, device, client_id):
        payload = len(client_id).to_bytes(2, "big") + client_id.encode()
        variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
        raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5)
        self.sock = tls_context(broker.pki, device).wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall(b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload)
        self.connack = self.sock.recv(4)

    def closed_by_broker(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, OSError):
            return True

    def close(self):
        self.sock.close()


def wait_online(broker, ca_sn, device_sn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, _ = call(broker, "GetDeviceCertificate", CaSn=ca_sn, DeviceSn=device_sn)
        if status == 200:
            return body
        time.sleep(0.05)
    raise AssertionError(f"device {ca_sn}/{device_sn} never registered")


def stats(broker):
    return ok(broker, "GetStats")["Data"]


def counter(data, name):
    """Finds a counter in GetStats' Data, whatever nesting the API uses."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == name and isinstance(value, (int, str)):
                return int(value)
            found = counter(value, name)
            if found is not None:
                return found
    if isinstance(data, list):
        for item in data:
            found = counter(item, name)
            if found is not None:
                return found
    return None


def open_to_everyone(broker):
    """Lets other OS users reach the socket: its directory must be searchable."""
    os.chmod(os.path.dirname(broker.admin_socket), 0o755)
    return broker


@pytest.fixture
def api_broker(make_broker):
    return open_to_everyone(make_broker(admin_socket=True, options={"admin_socket_mode": "0666"}).start())


# ------------------------------------------------- InactivateDeviceCertificate

def test_inactivation_kicks_mqtt5_with_0x98_and_closes_mqtt311_then_both_are_refused(api_broker, pki):
    b = api_broker
    d5, d3 = pki.device("c501", "sensor-c501"), pki.device("c311", "sensor-c311")
    v5 = connect5(b, d5, "api-c501")
    v3 = Raw311(b, d3, "api-c311")
    try:
        assert v3.connack == b"\x20\x02\x00\x00"
        wait_online(b, "0c01", "c501")
        wait_online(b, "0c01", "c311")
        kicks_before = counter(stats(b), "kicks")

        body = ok(b, "InactivateDeviceCertificate", CaSn="0C:01", DeviceSn="0x00C501")
        assert set(body) == {"RequestId", "DeviceSn"} and body["DeviceSn"] == "c501"
        assert v5.wait_disconnect(5) == ADMINISTRATIVE_ACTION
        ok(b, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn="c311")
        assert v3.closed_by_broker()
        assert counter(stats(b), "kicks") == kicks_before + 2
    finally:
        v5.close()
        v3.close()

    again = RawMqtt5(b, d5, "api-c501")
    assert again.connack == NOT_AUTHORIZED
    again.close()
    assert raw_connect_v311(b, d3, "api-c311") == b"\x20\x02\x00\x05"
    line = (f"devcert: admin uid=0(root) | InactivateDeviceCertificate | ca_sn=0c01 device_sn=c501 | ok | "
            f"request_id={body['RequestId']}")
    assert b.wait_for_log(line), b.log()[-2000:]


def test_inactivation_is_idempotent_and_leaves_a_revoked_certificate_revoked(api_broker, pki):
    b = api_broker
    dev = pki.device("c502", "sensor-c502")
    connect5(b, dev, "idem-c502").close()
    wait_online(b, "0c01", "c502")
    first = ok(b, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn="c502")
    second = ok(b, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn="c502")
    assert first["DeviceSn"] == second["DeviceSn"] == "c502" and first["RequestId"] != second["RequestId"]
    ok(b, "RevokeDeviceCertificate", CaSn="0c01", DeviceSn="c502")
    ok(b, "InactivateDeviceCertificate", CaSn="0c01", DeviceSn="c502")
    record = ok(b, "GetDeviceCertificate", CaSn="0c01", DeviceSn="c502")["Data"]
    assert record["Status"] == "2"


@pytest.mark.parametrize("params,code,http", [
    ({"CaSn": "0c01"}, "ParameterFieldCheckFailed", 400),
    ({"CaSn": "0c01", "DeviceSn": ""}, "ParameterFieldCheckFailed", 400),
    ({"CaSn": "0c01", "DeviceSn": "xyz"}, "ParameterFieldCheckFailed", 400),
    ({"CaSn": "0c01", "DeviceSn": "00"}, "ParameterFieldCheckFailed", 400),
    ({"CaSn": "a" * 130, "DeviceSn": "c5"}, "ParameterFieldCheckFailed", 400),
    ({"CaSn": "0c01", "DeviceSn": "ffff"}, "FindDeviceBySnError", 500),
    ({"CaSn": "0dead1", "DeviceSn": "c5"}, "FindDeviceBySnError", 500),
])
def test_each_error_row_is_answered_with_its_code_and_status(api_broker, params, code, http):
    error(api_broker, "InactivateDeviceCertificate", code, http, **params)
    assert api_broker.proc.poll() is None


def test_duplicated_parameters_wrong_instance_and_unknown_actions_are_refused(api_broker):
    b = api_broker
    status, body, _ = curl(b, [("Action", "InactivateDeviceCertificate"), ("MqttInstanceId", "local"),
                               ("CaSn", "0c01"), ("CaSn", "0c01"), ("DeviceSn", "c5")])
    assert (status, body["Code"]) == (400, "ParameterFieldCheckFailed")
    error(b, "InactivateDeviceCertificate", "MqttInstanceNotFound", 500, instance="post-cn-other",
          CaSn="0c01", DeviceSn="c5")
    error(b, "InactivateDeviceCertificate", "ParameterFieldCheckFailed", 400, instance=None,
          CaSn="0c01", DeviceSn="c5")
    error(b, "FlyToTheMoon", "InvalidAction.NotFound", 404)
    status, body, _ = curl(b, [("MqttInstanceId", "local")])
    assert (status, body["Code"]) == (404, "InvalidAction.NotFound")


def test_devcertctl_reports_api_errors_with_exit_1_and_the_error_json(api_broker, pki):
    b = api_broker
    out = ctl(b, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0c01", "--DeviceSn", "ffff")
    assert out.returncode == 1 and json.loads(out.stdout)["Code"] == "FindDeviceBySnError"
    out = ctl(b, "InactivateDeviceCertificate", "--MqttInstanceId", "nope", "--CaSn", "0c01", "--DeviceSn", "ff")
    assert out.returncode == 1 and json.loads(out.stdout)["Code"] == "MqttInstanceNotFound"
    out = ctl(b, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "zz", "--DeviceSn", "ff")
    assert out.returncode == 1 and json.loads(out.stdout)["Code"] == "ParameterFieldCheckFailed"
    dev = pki.device("c503", "sensor-c503")
    connect5(b, dev, "ctl-c503").close()
    wait_online(b, "0c01", "c503")
    out = ctl(b, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0C01", "--DeviceSn", "C503")
    assert out.returncode == 0 and json.loads(out.stdout)["DeviceSn"] == "c503"


# ------------------------------------------------------------ access policy

def test_without_a_policy_only_root_and_the_broker_user_may_call(api_broker):
    b = api_broker
    error(b, "GetStats", "PermissionCheckFailed", 403, uid=NOBODY)
    error(b, "InactivateDeviceCertificate", "PermissionCheckFailed", 403, uid=UNNAMED_UID,
          CaSn="0c01", DeviceSn="c5")
    ok(b, "GetStats")


def test_the_policy_allows_denies_and_scopes_by_instance_for_other_users(make_broker, pki, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"user": ["root"]}, "Action": ["mq:*"], "Resource": ["*"]},
        {"Effect": "Allow", "Principal": {"user": ["nobody"]}, "Action": ["mq:Get*"], "Resource": ["local"]},
        {"Effect": "Allow", "Principal": {"uid": [NOBODY]}, "Action": ["mq:UnregisterDeviceCertificate"],
         "Resource": ["prod-*"]},
        {"Effect": "Allow", "Principal": {"uid": [UNNAMED_UID]}, "Action": ["mq:*"], "Resource": ["*"]},
        {"Effect": "Deny", "Principal": {"uid": [UNNAMED_UID]}, "Action": ["mq:Unregister*"], "Resource": ["*"]},
    ]}))
    b = open_to_everyone(make_broker(admin_socket=True, options={"admin_socket_mode": "0666",
                                                                 "admin_policy": str(policy)}).start())
    dev = pki.device("c504", "sensor-c504")
    connect5(b, dev, "pol-c504").close()
    wait_online(b, "0c01", "c504")

    # Allowed by user name and a Get* wildcard.
    status, body, _ = call(b, "GetDeviceCertificate", uid=NOBODY, CaSn="0c01", DeviceSn="c504")
    assert status == 200 and body["Data"]["DeviceSn"] == "c504"
    # Allowed the permission, but only on other instances.
    error(b, "InactivateDeviceCertificate", "MqttOwnerCheckError", 403, uid=NOBODY, CaSn="0c01", DeviceSn="c504")
    # Not allowed at all.
    error(b, "ListCaCertificate", "PermissionCheckFailed", 403, uid=NOBODY, PageNo="1", PageSize="10")
    # mq:* allows, but the explicit Deny wins.
    status, _, _ = call(b, "GetStats", uid=UNNAMED_UID)
    assert status == 200
    error(b, "InactivateDeviceCertificate", "PermissionCheckFailed", 403, uid=UNNAMED_UID,
          CaSn="0c01", DeviceSn="c504")
    # A uid no statement names.
    error(b, "GetStats", "PermissionCheckFailed", 403, uid=UNNAMED_UID + 1)
    assert ok(b, "GetDeviceCertificate", CaSn="0c01", DeviceSn="c504")["Data"]["Status"] == "1"


def test_a_policy_file_that_does_not_parse_stops_start_up_naming_the_line(make_broker, tmp_path):
    policy = tmp_path / "broken.json"
    policy.write_text('{\n  "Statement": [\n    {"Effect": "Allow",,}\n  ]\n}\n')
    b = make_broker(admin_socket=True, options={"admin_policy": str(policy)})
    b.start(expect_ready=False)
    assert b.wait_exit(15) != 0
    assert re.search(r"broken\.json.*line 3", b.log()), b.log()


# ------------------------------------------------------------- rate limit

def test_the_rate_limit_refuses_one_uid_over_its_budget_and_not_another(make_broker, tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"uid": [0, NOBODY]}, "Action": ["mq:*"], "Resource": ["*"]}]}))
    b = open_to_everyone(make_broker(admin_socket=True, options={
        "admin_socket_mode": "0666", "admin_policy": str(policy), "admin_rate_limit": "500"}).start())
    # A token bucket of 500/s with a burst of 500: calls from root as fast as
    # one kept-alive connection goes are all served until the burst and what
    # refilled meanwhile are spent, then refused.
    import http.client

    class UnixConnection(http.client.HTTPConnection):
        def connect(self):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(b.admin_socket)

    conn = UnixConnection("localhost")
    served = 0
    retry_after = None
    started = time.monotonic()
    while time.monotonic() - started < 3.0:
        conn.request("GET", "/?Action=GetStats&MqttInstanceId=local")
        resp = conn.getresponse()
        resp.read()
        if resp.status == 429:
            retry_after = resp.getheader("Retry-After")
            break
        assert resp.status == 200
        served += 1
    elapsed = time.monotonic() - started
    conn.close()
    assert retry_after is not None, f"{served} calls in {elapsed:.2f} s were all served"
    assert int(retry_after) >= 1
    assert 500 <= served <= 500 + int(500 * elapsed) + 1, (served, elapsed)
    # Another uid has its own bucket: right after root was refused, nobody
    # gets 200 calls served back to back (a shared bucket would refuse them).
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rb')\n"
        "codes = []\n"
        "for _ in range(200):\n"
        "    s.sendall(b'GET /?Action=GetStats&MqttInstanceId=local HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n"
        "    codes.append(int(f.readline().split()[1]))\n"
        "    length = 0\n"
        "    while True:\n"
        "        line = f.readline().strip()\n"
        "        if not line: break\n"
        "        if line.lower().startswith(b'content-length:'): length = int(line.split(b':')[1])\n"
        "    f.read(length)\n"
        "print(' '.join(map(str, codes)))\n")
    out = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "/usr/bin/python3",
                          "-c", script, b.admin_socket], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200"] * 200


# ------------------------------------------------------ the whole lifecycle

def openssl_verification_cert(pki, ca, code, workdir):
    key = str(workdir / "verify.key")
    csr = str(workdir / "verify.csr")
    crt = str(workdir / "verify.crt")
    run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
    run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={code}"])
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-out", crt, "-days", "30",
         "-set_serial", "0x77"])
    return Path(crt).read_text()


def post(broker, action, **params):
    items = [("Action", action), ("MqttInstanceId", "local")] + list(params.items())
    return curl(broker, items, method="POST")


def test_the_whole_lifecycle_from_ca_registration_to_deletion(make_broker, pki, tmp_path):
    b = make_broker(admin_socket=True, import_ca=[], options={"max_ca": "1"}).start()
    ca = pki.other_ca  # trusted by the listener, unknown to the store
    dev_a, dev_b = pki.device("d0a1", "fleet-a", issuer=ca), pki.device("d0b2", "fleet-b", issuer=ca)
    assert RawMqtt5(b, dev_a, "life-a").connack == NOT_AUTHORIZED  # CA not registered yet

    code = ok(b, "GetRegisterCode")["RegisterCode"]
    assert ok(b, "GetRegisterCode")["RegisterCode"] == code  # stable until used
    wrong = openssl_verification_cert(pki, ca, "not-the-code", tmp_path)
    status, body, _ = post(b, "RegisterCaCertificate", CaName="fleet", CaContent=Path(ca.cert).read_text(),
                           VerificationContent=wrong)
    assert (status, body["Code"]) == (400, "RegisterCodeError")
    status, body, _ = post(b, "RegisterCaCertificate", CaName="fleet", CaContent=Path(dev_a.cert).read_text(),
                           VerificationContent=wrong)
    assert (status, body["Code"]) == (401, "CertificateContentError")

    verification = openssl_verification_cert(pki, ca, code, tmp_path)
    status, body, _ = post(b, "RegisterCaCertificate", CaName="fleet", CaContent=Path(ca.cert).read_text(),
                           VerificationContent=verification)
    assert status == 200 and body["Sn"] == "0c02", body
    status, body, _ = post(b, "RegisterCaCertificate", CaName="fleet", CaContent=Path(ca.cert).read_text(),
                           VerificationContent=verification)
    assert (status, body["Code"]) == (401, "RegisterCodeUsed")
    fresh = openssl_verification_cert(pki, ca, ok(b, "GetRegisterCode")["RegisterCode"], tmp_path)
    status, body, _ = post(b, "RegisterCaCertificate", CaName="again", CaContent=Path(ca.cert).read_text(),
                           VerificationContent=fresh)
    assert (status, body["Code"]) == (401, "SnNotUnique")
    stranger = pki.stranger_ca
    fresh = openssl_verification_cert(pki, stranger, ok(b, "GetRegisterCode")["RegisterCode"], tmp_path)
    status, body, _ = post(b, "RegisterCaCertificate", CaName="second", CaContent=Path(stranger.cert).read_text(),
                           VerificationContent=fresh)
    assert (status, body["Code"]) == (401, "CaNumExceed")  # plugin_opt_max_ca 1
    assert ok(b, "GetCaCertificate", Sn="0c02")["Data"]["Status"] == "1"

    # Devices connect and register themselves.
    a, bb = connect5(b, dev_a, "life-a"), connect5(b, dev_b, "life-b")
    wait_online(b, "0c02", "d0a1")
    wait_online(b, "0c02", "d0b2")
    page1 = ok(b, "ListDeviceCertificateByCaSn", CaSn="0c02", PageNo="1", PageSize="1")["Data"]
    page2 = ok(b, "ListDeviceCertificateByCaSn", CaSn="0c02", PageNo="2", PageSize="1")["Data"]
    page3 = ok(b, "ListDeviceCertificateByCaSn", CaSn="0c02", PageNo="3", PageSize="1")["Data"]
    assert int(page1["Total"]) == 2 and page3["DeviceCertificateVOS"] == []
    assert [page1["DeviceCertificateVOS"][0]["DeviceSn"], page2["DeviceCertificateVOS"][0]["DeviceSn"]] == \
        ["d0a1", "d0b2"]
    assert page1["DeviceCertificateVOS"][0]["Online"] is True
    error(b, "ListDeviceCertificateByCaSn", "ParameterFieldCheckFailed", 400, CaSn="0c02", PageNo="1",
          PageSize="101")
    error(b, "ListDeviceCertificateByCaSn", "FindCaBySnError", 500, CaSn="0c09", PageNo="1", PageSize="10")

    # Inactivating the CA kicks every device it issued.
    ok(b, "InactivateCaCertificate", Sn="0c02")
    assert a.wait_disconnect(5) == ADMINISTRATIVE_ACTION and bb.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    a.close()
    bb.close()
    assert RawMqtt5(b, dev_a, "life-a").connack == NOT_AUTHORIZED
    ok(b, "ActiveCaCertificate", Sn="0c02")
    a = connect5(b, dev_a, "life-a")

    # Revoked is terminal: kicked, never reactivated, never deleted.
    ok(b, "RevokeDeviceCertificate", CaSn="0c02", DeviceSn="d0a1")
    assert a.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    a.close()
    error(b, "ActiveDeviceCertificate", "CertificateRevoked", 400, CaSn="0c02", DeviceSn="d0a1")
    error(b, "DeleteDeviceCertificate", "CertificateRevoked", 400, CaSn="0c02", DeviceSn="d0a1")
    assert RawMqtt5(b, dev_a, "life-a").connack == NOT_AUTHORIZED

    # A deleted device registers again on its next connection.
    ok(b, "DeleteDeviceCertificate", CaSn="0c02", DeviceSn="d0b2")
    error(b, "GetDeviceCertificate", "FindDeviceBySnError", 500, CaSn="0c02", DeviceSn="d0b2")
    connect5(b, dev_b, "life-b").close()
    wait_online(b, "0c02", "d0b2")

    # Deleting the CA removes its devices and the change log tells the story.
    c = connect5(b, dev_b, "life-b2")
    ok(b, "DeleteCaCertificate", Sn="0c02")
    assert c.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    c.close()
    error(b, "GetCaCertificate", "FindCaBySnError", 500, Sn="0c02")
    error(b, "GetDeviceCertificate", "FindDeviceBySnError", 500, CaSn="0c02", DeviceSn="d0a1")
    changes = ok(b, "ListCertificateChanges", PageSize="1000")["Data"]
    entries = changes["Changes"]
    assert int(changes["NextSeq"]) == int(entries[-1]["Seq"])
    actions = [e["Action"] for e in entries]
    for expected in ["RegisterCaCertificate", "InactivateCaCertificate", "ActiveCaCertificate",
                     "RevokeDeviceCertificate", "DeleteDeviceCertificate", "DeleteCaCertificate"]:
        assert expected in actions, actions
    seqs = [int(e["Seq"]) for e in entries]
    assert seqs == sorted(seqs)
    assert actions.index("InactivateCaCertificate") < actions.index("RevokeDeviceCertificate") < \
        actions.index("DeleteCaCertificate")


# ------------------------------------------------ bad input and socket limits

def snapshot_of_store(broker):
    return (ok(broker, "ListDeviceCertificate", PageNo="1", PageSize="100")["Data"],
            ok(broker, "ListCaCertificate", PageNo="1", PageSize="100")["Data"],
            ok(broker, "ListCertificateChanges", PageSize="1000")["Data"])


def raw_request(path, request, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        s.sendall(request)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                length = re.search(rb"(?i)content-length:\s*(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    except (socket.timeout, ConnectionResetError):
        pass  # cut by the server: what arrived so far is the answer
    s.close()
    return data


def malformed_requests():
    """200 requests that must all be refused without touching the store."""
    target = b"Action=InactivateDeviceCertificate&MqttInstanceId=local&CaSn=0c01&DeviceSn=c601"
    out = []
    for i in range(25):
        out.append(b"GET /?" + target + b"&DeviceSn=c601 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out.append(b"GET /?" + target.replace(b"c601", b"%zz" + str(i).encode()) +
                   b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out.append(b"GET /?" + target.replace(b"c601", b"c6%0001") + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        body = b'{"Action":"InactivateDeviceCertificate","MqttInstanceId":"local","CaSn":"0c01","DeviceSn":' + \
            [b"1}", b"null}", b'"c601"', b'["c601"]}', b'"c601","DeviceSn":"c601"}'][i % 5]
        out.append(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        form = target.replace(b"c601", b"c" * (9000 + i))
        out.append(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded"
                   b"\r\nContent-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form)
        out.append(b"GET /?" + target.replace(b"Inactivate", b"Deactivate") + b" HTTP/1.1\r\nHost: x\r\n"
                   b"Connection: close\r\n\r\n")
        out.append(b"GET /?" + target.replace(b"CaSn=0c01", b"CaSn=" + b"0" * 200 + b"1") +
                   b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out.append(b"GET /?" + target + b"&" + b"&".join(b"p%d=1" % k for k in range(70)) +
                   b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return out


def test_200_malformed_requests_change_nothing_and_the_broker_keeps_serving(api_broker, pki):
    b = api_broker
    dev = pki.device("c601", "sensor-c601")
    connect5(b, dev, "bad-c601").close()
    wait_online(b, "0c01", "c601")
    before = snapshot_of_store(b)
    requests = malformed_requests()
    assert len(requests) == 200
    for request in requests:
        answer = raw_request(b.admin_socket, request)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None
        assert status in (400, 404, 413), (request[:120], answer[:300])
        assert b'"Code":' in answer
    after = snapshot_of_store(b)
    # Reading the lists is itself audited but changes no record and no log entry.
    assert before == after
    assert ok(b, "GetDeviceCertificate", CaSn="0c01", DeviceSn="c601")["Data"]["Status"] == "1"
    connect5(b, dev, "bad-c601-again").close()


def test_socket_limits_refuse_the_excess_and_keep_serving_everyone_else(api_broker):
    b = api_broker
    status, body, _ = curl(b, [("Action", "GetStats"), ("MqttInstanceId", "local")] +
                           [(f"p{k}", "1") for k in range(63)])
    assert (status, body["Code"]) == (400, "ParameterFieldCheckFailed")  # 65 parameters
    status, body, _ = curl(b, [("Action", "GetStats"), ("MqttInstanceId", "local"), ("X", "v" * (8 * 1024 + 1))],
                           method="POST")
    assert status == 400 and body["Code"] == "ParameterFieldCheckFailed"
    big = b"Action=GetStats&MqttInstanceId=local&X=" + b"v" * (64 * 1024)
    answer = raw_request(b.admin_socket, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
                         b"urlencoded\r\nContent-Length: " + str(len(big)).encode() + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]

    # 64 idle connections fill the socket; the 65th is cut, and once they are
    # gone everyone is served again.
    idle = []
    for _ in range(64):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(b.admin_socket)
        s.sendall(b"GET /?Action=GetStats")  # an incomplete request keeps the slot
        idle.append(s)
    time.sleep(0.2)
    extra = raw_request(b.admin_socket, b"GET /?Action=GetStats&MqttInstanceId=local HTTP/1.1\r\nHost: x\r\n\r\n",
                        timeout=3.0)
    assert not extra.startswith(b"HTTP/1.1 200"), extra[:200]
    for s in idle:
        s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if raw_request(b.admin_socket, b"GET /?Action=GetStats&MqttInstanceId=local HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n").startswith(b"HTTP/1.1 200"):
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the admin socket did not recover after the idle connections closed")


def test_a_client_that_never_finishes_its_request_is_cut_after_10_seconds(api_broker):
    b = api_broker
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b.admin_socket)
    started = time.monotonic()
    s.sendall(b"GET /?Action=GetStats&MqttInstanceId=local HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(1.0)
    closed_at = None
    while time.monotonic() - started < 15:
        try:
            s.sendall(b"X")  # one byte a second never completes the headers
            if s.recv(1024) == b"":
                closed_at = time.monotonic()
                break
        except socket.timeout:
            continue
        except OSError:
            closed_at = time.monotonic()
            break
    s.close()
    assert closed_at is not None and 9.0 <= closed_at - started <= 13.0, closed_at and closed_at - started
    assert ok(b, "GetStats")
