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


# ------------------------------------------------- one answer per request

def exchange_to_end(path, request, timeout=5.0):
    """Sends raw bytes, ends the sending half, and returns all the server
    sent until it closed the connection."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    try:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return data


def http_responses(data):
    """Splits `data` into HTTP/1.1 responses, checking that each is whole and
    well-formed with a JSON body and that nothing else was sent: a list of
    (status, headers, body)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, data[:300]
        lines = head.split(b"\r\n")
        version, status, _ = lines[0].split(b" ", 2)
        assert version == b"HTTP/1.1" and status.isdigit() and len(status) == 3, lines[0]
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            assert colon and name.strip() == name and name, line
            assert name.lower() not in headers, lines
            headers[name.lower()] = value.strip()
        assert headers[b"content-type"] == b"application/json", head
        length = int(headers[b"content-length"])
        assert len(rest) >= length, (head, rest)
        body = json.loads(rest[:length])
        assert isinstance(body, dict), body
        out.append((int(status), headers, body))
        data = rest[length:]
    return out


def post_with_length(length):
    return (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
            + length + b"\r\n\r\nAction=GetStats&MqttInstanceId=local")


GET = b"GET /?Action=GetStats&MqttInstanceId=local "
MALFORMED = [
    (post_with_length(b"5 5"), 400, "malformed HTTP request"),
    (post_with_length(b"-1"), 400, "malformed HTTP request"),
    (post_with_length(b"+5"), 400, "malformed HTTP request"),
    (post_with_length(b"abc"), 400, "malformed HTTP request"),
    (post_with_length(b"18446744073709551616"), 413, "request body over 64 KiB"),
    (post_with_length(b"184467440737095516160000"), 413, "request body over 64 KiB"),
    (GET + b"HTTP/1.1\r\nHost x\r\n\r\n", 400, "malformed HTTP request"),
    (GET + b"HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "malformed HTTP request"),
    (GET + b"HTTP/3.0\r\nHost: x\r\n\r\n", 400, "unsupported HTTP version"),
    (GET + b"HTTP/1.1\r\nX: " + b"v" * (70 * 1024) + b"\r\n\r\n", 413, "request line and headers over 64 KiB"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n123456789\r\nxx", 413,
     "request body over 64 KiB"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400,
     "malformed HTTP request"),
]


def test_each_malformed_request_gets_exactly_one_well_formed_response_with_the_json_error(make_broker):
    broker = make_broker(admin_socket=True).start()
    for request, status, detail in MALFORMED:
        responses = http_responses(exchange_to_end(broker.admin_socket, request))
        assert len(responses) == 1, (request[:120], responses)
        got_status, headers, body = responses[0]
        assert (got_status, body["Code"], body["Detail"]) == (status, "ParameterFieldCheckFailed", detail), \
            (request[:120], body)
        assert len(body["RequestId"]) == 36
        assert headers[b"connection"] == b"close"
    status, body = curl(broker, "?Action=GetStats&MqttInstanceId=local")
    assert status == 200


def _post(content_type, body):
    return (b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def _chunked(body, size=13):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[k:k + size]), body[k:k + size]) for k in range(0, len(body), size))
    return (b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")


SEEDS = [
    GET + b"HTTP/1.1\r\nHost: localhost\r\n\r\n",
    _post(b"application/x-www-form-urlencoded", b"Action=GetCaCertificate&MqttInstanceId=local&Sn=0c01&X=%41"),
    _post(b"application/json", b'{"Action":"GetCaCertificate","MqttInstanceId":"local"}'),
    _chunked(b'{"Action":"GetStats","MqttInstanceId":"local"}'),
    b"GET /?Action=GetStats&MqttInstanceId=local HTTP/1.0\r\n\r\n",
]
INTERESTING = [b"\r\n", b"\r", b"\n", b" ", b":", b"0", b"-", b"+", b"9" * 20, b"%", b"\x00", b"\xff", b"HTTP/1.1",
               b"Content-Length: 5 5\r\n", b"Transfer-Encoding: chunked\r\n", b";", b"\t", b"{", b"}", b"\""]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[at:at] = rng.choice(INTERESTING)
        elif op == 2 and data:
            del data[at:at + rng.randint(1, 8)]
        else:
            piece = bytes(data[rng.randrange(len(data)):][:rng.randint(1, 16)])
            data[at:at] = piece
    return bytes(data)


def test_20000_mutated_requests_each_get_only_well_formed_json_responses(make_broker):
    import random
    import threading
    import time
    broker = make_broker(admin_socket=True).start()
    rng = random.Random(20000)
    requests = [mutate(rng, rng.choice(SEEDS)) for _ in range(20000)]
    failures, lock = [], threading.Lock()

    def worker(part):
        for request in part:
            data = exchange_to_end(broker.admin_socket, request)
            try:
                responses = http_responses(data)
                assert responses, "no answer"
                if responses[0][1].get(b"connection") == b"close":
                    assert len(responses) == 1
            except (AssertionError, ValueError, KeyError, IndexError) as e:
                with lock:
                    failures.append((request[:200], data[:300], repr(e)))

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(requests[k::8],)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert not failures, (len(failures), failures[:5])
    assert elapsed < 60, elapsed
    assert broker.proc.poll() is None
    status, _ = curl(broker, "?Action=GetStats&MqttInstanceId=local")
    assert status in (200, 429)
