"""The admin socket's limits inside the real broker: the per-uid rate limit
(small, and the default 500), request body, parameter count and value size,
slow clients, concurrent connections, and 200 malformed requests. Each
excess gets its error or is cut, nothing reaches the store, and the socket
keeps serving everyone else."""

import json
import socket
import subprocess
import time
import urllib.parse

import pytest

from admin_helpers import (NOBODY, KeepAlive, as_uid, call, check_error_shape, connect5, counters, ctl_error,
                           curl, device_record, module_broker, ok, open_to_everyone, parse_raw, raw_exchange,
                           store_snapshot, wait_online, wait_until)

CA = "0c01"
KIB = 1024


def allow_root_and_nobody(tmp_path_factory):
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_text(json.dumps({"Statement": [
        {"Effect": "Allow", "Principal": {"uid": [0, NOBODY]}, "Action": "mq:*", "Resource": "*"}]}))
    return str(path)


@pytest.fixture(scope="module")
def b(tmp_path_factory, pki):
    broker = module_broker(tmp_path_factory, pki, "limits")
    yield broker
    broker.stop()


def served(broker, timeout=5.0):
    """A normal call succeeds (polled: a cut connection is released by the
    server's thread shortly after)."""
    return wait_until(lambda: call(broker, "GetStats").status == 200, timeout, "a normal call to be served")


def http(method, target=b"/", headers=(), body=b""):
    head = [method + b" " + target + b" HTTP/1.1", b"Host: localhost", b"Connection: close"]
    head += list(headers)
    if body or method == b"POST":
        head.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def form(body):
    return http(b"POST", headers=[b"Content-Type: application/x-www-form-urlencoded"], body=body)


def json_post(body):
    return http(b"POST", headers=[b"Content-Type: application/json"], body=body)


def get(query):
    return http(b"GET", b"/?" + query)


# ------------------------------------------------------------- rate limit

def test_over_a_small_rate_limit_a_caller_gets_429_with_retry_after_and_another_uid_does_not(
        make_broker, tmp_path_factory):
    broker = make_broker(admin_socket=True, options={"admin_socket_mode": "0666", "admin_rate_limit": "1",
                                                     "admin_policy": allow_root_and_nobody(tmp_path_factory)})
    open_to_everyone(broker.start())
    # One call a second, burst 1: the first call spends the token and the
    # next ones within the second are refused.
    assert call(broker, "GetRegisterCode").status == 200
    reply = call(broker, "GetStats")
    check_error_shape(reply, "Throttling.User", 429)
    assert int(reply.headers["retry-after"]) >= 1
    assert reply.body["Detail"] == "over 1 calls per second"
    # The rate limit comes before the Action check.
    check_error_shape(call(broker, "NoSuchAction"), "Throttling.User", 429)
    ctl_error(broker, "GetStats", "Throttling.User", MqttInstanceId="local")
    # Another uid has its own bucket.
    assert call(broker, "GetStats", uid=NOBODY).status == 200
    check_error_shape(call(broker, "GetStats", uid=NOBODY), "Throttling.User", 429)
    # Root is served again once Retry-After has passed.
    time.sleep(int(reply.headers["retry-after"]))
    stats = wait_until(lambda: (lambda r: r if r.status == 200 else None)(call(broker, "GetStats")), 3.0,
                       "root to be served again").body["Data"]["Counters"]
    assert stats["admin_calls.GetStats.Throttling.User"] >= 2
    assert stats["admin_calls.unknown.Throttling.User"] == 1


def test_transport_refusals_do_not_use_up_the_rate_limit(make_broker):
    broker = make_broker(admin_socket=True, options={"admin_rate_limit": "1"}).start()
    for _ in range(5):
        status, body = parse_raw(raw_exchange(broker.admin_socket, get(b"Action=GetStats&MqttInstanceId=lo%zz")))
        assert (status, body["Code"]) == (400, "ParameterFieldCheckFailed"), body
        status, body = parse_raw(raw_exchange(broker.admin_socket, http(b"DELETE")))
        assert status == 405, body
    assert call(broker, "GetStats").status == 200


def test_2000_refused_calls_write_a_few_lines_and_a_summary_per_second_while_successes_are_all_audited(
        make_broker):
    import re
    broker = make_broker(admin_socket=True, options={"admin_rate_limit": "1"}).start()
    conn = KeepAlive(broker.admin_socket)
    statuses = []
    started = time.monotonic()
    try:
        for _ in range(2000):
            statuses.append(conn.get("Action=GetStats&MqttInstanceId=local")[0])
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    refused = statuses.count(429)
    assert refused >= 2000 - elapsed - 2, (statuses.count(200), elapsed)
    seconds = int(elapsed) + 2
    # The summaries come once each second is over.
    summary = re.compile(r"devcert: admin uid=0\(root\) \| refused \| - \| (\d+) more refused within 1 s, not "
                         r"logged one by one: Throttling.User=(\d+) \| request_id=-")
    wait_until(lambda: sum(int(m.group(1)) for m in summary.finditer(broker.log())) + len(
        re.findall(r"\| GetStats \| - \| error Throttling.User", broker.log())) == refused, 5.0,
        "every refusal to be in a line or a summary")
    log = broker.log()
    singles = re.findall(r"\| GetStats \| - \| error Throttling.User", log)
    sums = summary.findall(log)
    assert len(singles) <= 10 * seconds, (len(singles), elapsed)
    assert 1 <= len(sums) <= seconds, (sums, elapsed)
    assert all(total == throttled for total, throttled in sums)
    # Every accepted call has its own line.
    assert len(re.findall(r"\| GetStats \| - \| ok \|", log)) == statuses.count(200)


def test_at_the_default_limit_the_501st_call_within_a_second_is_refused_and_another_uid_is_not(
        make_broker, tmp_path_factory):
    broker = make_broker(admin_socket=True, options={"admin_socket_mode": "0666",
                                                     "admin_policy": allow_root_and_nobody(tmp_path_factory)})
    open_to_everyone(broker.start())
    conn = KeepAlive(broker.admin_socket)
    statuses, retry_after = [], None
    started = time.monotonic()
    try:
        while time.monotonic() - started < 5.0:
            status, retry, _ = conn.get("Action=GetStats&MqttInstanceId=local")
            statuses.append(status)
            if status == 429:
                retry_after = retry
                break
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    # The bucket starts full (burst 500) and refills at 500/s: the first 500
    # calls are always served, and the first refusal comes no later than
    # what refilled while they were made.
    assert statuses[:500] == [200] * 500
    assert retry_after is not None, f"{len(statuses)} calls in {elapsed:.2f} s were all served"
    assert int(retry_after) >= 1
    assert len(statuses) - 1 <= 500 + 500 * elapsed + 1, (len(statuses), elapsed)
    # nobody, right after: its own full burst of 500, all served.
    script = (
        "import http.client, socket, sys\n"
        "class C(http.client.HTTPConnection):\n"
        "    def connect(self):\n"
        "        self.sock = socket.socket(socket.AF_UNIX); self.sock.connect(sys.argv[1])\n"
        "c = C('localhost'); codes = []\n"
        "for _ in range(500):\n"
        "    c.request('GET', '/?Action=GetStats&MqttInstanceId=local'); r = c.getresponse(); r.read()\n"
        "    codes.append(r.status)\n"
        "print(' '.join(map(str, codes)))\n")
    out = subprocess.run(as_uid(["/usr/bin/python3", "-c", script, broker.admin_socket], NOBODY),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200"] * 500


# ------------------------------------------------------------ size limits

def test_a_body_over_64_kib_gets_413_and_its_connection_is_closed(b):
    prefix = b"Action=GetStats&MqttInstanceId=local&"
    for size, expected in ((64 * KIB, 400), (64 * KIB + 1, 413), (200 * KIB, 413)):
        body = prefix + b"X=" + b"v" * (size - len(prefix) - 2)
        assert len(body) == size
        status, reply = parse_raw(raw_exchange(b.admin_socket, form(body)))
        assert status == expected, (size, reply)
        assert reply["Code"] == "ParameterFieldCheckFailed"
        if expected == 413:
            assert reply["Detail"] == "request body over 64 KiB"
        else:
            assert reply["Detail"] != "request body over 64 KiB"
    # Over a kept-alive connection the 413 ends the connection.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(b.admin_socket)
    big = b"v" * (64 * KIB + 1)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
              + str(len(big)).encode() + b"\r\n\r\n" + big)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            break
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    served(b)


def test_more_than_64_parameters_are_refused_counting_query_and_body_together(b):
    base = [("Action", "GetStats"), ("MqttInstanceId", "local")]
    reply = curl(b, base + [(f"p{k}", "1") for k in range(62)])  # 64
    check_error_shape(reply, "ParameterFieldCheckFailed", 400)
    assert reply.body["Detail"] != "more than 64 parameters", reply
    reply = curl(b, base + [(f"p{k}", "1") for k in range(63)])  # 65
    check_error_shape(reply, "ParameterFieldCheckFailed", 400)
    assert reply.body["Detail"] == "more than 64 parameters", reply
    query = urllib.parse.urlencode(base + [(f"q{k}", "1") for k in range(38)]).encode()
    body = urllib.parse.urlencode([(f"b{k}", "1") for k in range(25)]).encode()
    status, answer = parse_raw(raw_exchange(b.admin_socket, http(
        b"POST", b"/?" + query, [b"Content-Type: application/x-www-form-urlencoded"], body)))
    assert (status, answer["Detail"]) == (400, "more than 64 parameters"), answer
    served(b)


def test_a_parameter_value_or_name_over_8_kib_is_refused(b):
    for method in ("GET", "POST"):
        reply = curl(b, [("Action", "GetStats"), ("MqttInstanceId", "local"), ("X", "v" * (8 * KIB))], method=method)
        check_error_shape(reply, "ParameterFieldCheckFailed", 400)
        assert reply.body["Detail"] != "a parameter value over 8 KiB", reply
        reply = curl(b, [("Action", "GetStats"), ("MqttInstanceId", "local"), ("X", "v" * (8 * KIB + 1))],
                     method=method)
        check_error_shape(reply, "ParameterFieldCheckFailed", 400)
        assert reply.body["Detail"] == "a parameter value over 8 KiB", reply
        reply = curl(b, [("Action", "GetStats"), ("MqttInstanceId", "local"), ("n" * (8 * KIB + 1), "v")],
                     method=method)
        check_error_shape(reply, "ParameterFieldCheckFailed", 400)
    served(b)


# ------------------------------------------------------- connection limits

HOLD_SCRIPT = (
    "import socket, sys, time\n"
    "held, cut = [], 0\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
    "    held.append(s)\n"
    "    try:\n"
    "        s.sendall(b'GET /?Action=GetStats')\n"
    "    except OSError:\n"
    "        pass\n"
    "time.sleep(0.5)\n"
    "for s in held:\n"
    "    s.setblocking(False)\n"
    "    try:\n"
    "        cut += s.recv(1) == b''\n"
    "    except BlockingIOError:\n"
    "        pass\n"
    "    except OSError:\n"
    "        cut += 1\n"
    "print(len(held) - cut, cut, flush=True)\n"
    "sys.stdin.read()\n")


class HeldConnections:
    """A process run as `uid` that opens `count` connections, each with an
    incomplete request, and holds them until closed; `.held` and `.cut`
    say how many the server kept and how many it closed at once."""

    def __init__(self, broker, uid, count):
        self.proc = subprocess.Popen(as_uid(["/usr/bin/python3", "-c", HOLD_SCRIPT, broker.admin_socket, str(count)],
                                            uid), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().split()
        assert len(line) == 2, line
        self.held, self.cut = int(line[0]), int(line[1])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def test_a_uid_holding_its_share_of_connections_is_cut_at_once_while_root_and_other_uids_are_served(b):
    flood = HeldConnections(b, NOBODY, 64)
    try:
        # 16 connections per uid: the rest were closed as they were accepted.
        assert (flood.held, flood.cut) == (16, 48)
        started = time.monotonic()
        # Root is served at once, and so is another ordinary uid (refused by
        # the policy, but answered).
        assert call(b, "GetStats").status == 200
        assert call(b, "GetStats", uid=54321).code == "PermissionCheckFailed"
        assert time.monotonic() - started < 2.0
        # nobody's next connection is still cut at once, not left for 10 s.
        more = HeldConnections(b, NOBODY, 1)
        assert (more.held, more.cut) == (0, 1)
        more.close()
    finally:
        flood.close()
    served(b)


def test_ordinary_uids_together_cannot_take_the_slots_kept_for_root(b):
    floods = []
    try:
        # 56 of the 64 slots are for every uid, 16 per uid; the last 8 are
        # kept for root and the broker's own uid.
        for uid in (NOBODY, 54321, 54322, 54323):
            floods.append(HeldConnections(b, uid, 16))
        assert [f.held for f in floods] == [16, 16, 16, 8]
        late = HeldConnections(b, 54324, 1)
        assert (late.held, late.cut) == (0, 1)
        late.close()
        held = []
        try:
            for _ in range(7):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(b.admin_socket)
                s.sendall(b"GET /?Action=GetStats")
                held.append(s)
            # The 8th reserved slot serves root's call.
            assert call(b, "GetStats").status == 200
        finally:
            for s in held:
                s.close()
    finally:
        for f in floods:
            f.close()
    served(b)


def test_a_client_that_never_completes_its_request_is_cut_after_10_seconds_while_others_are_served(b):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(b.admin_socket)
    started = time.monotonic()
    s.sendall(b"GET /?Action=GetStats&MqttInstanceId=local HTTP/1.1\r\nHost: x\r\n")
    s.settimeout(0.5)
    received, closed_at, others_served = b"", None, 0
    try:
        while time.monotonic() - started < 15:
            try:
                s.sendall(b"X-Slow: 1\r\n")  # a header now and then, never the blank line
                chunk = s.recv(4096)
                if not chunk:
                    closed_at = time.monotonic()
                    break
                received += chunk
            except socket.timeout:
                if time.monotonic() - started < 8:
                    assert call(b, "GetStats").status == 200
                    others_served += 1
            except OSError:
                closed_at = time.monotonic()
                break
    finally:
        s.close()
    assert closed_at is not None, "the slow client was never cut"
    assert 9.5 <= closed_at - started <= 12.5, closed_at - started
    assert received == b""
    assert others_served >= 3
    served(b)


# ------------------------------------------------------ malformed requests

TARGETS = [
    b"Action=InactivateDeviceCertificate&MqttInstanceId=local&CaSn=0c01&DeviceSn=c601",
    b"Action=DeleteDeviceCertificate&MqttInstanceId=local&CaSn=0c01&DeviceSn=c601",
    b"Action=RevokeDeviceCertificate&MqttInstanceId=local&CaSn=0c01&DeviceSn=c601",
    b"Action=DeleteCaCertificate&MqttInstanceId=local&Sn=0c01",
    b"Action=InactivateCaCertificate&MqttInstanceId=local&Sn=0c01",
]
JSON_TARGETS = [dict(urllib.parse.parse_qsl(t.decode())) for t in TARGETS]


def bad_json(i):
    good = json.dumps(JSON_TARGETS[i % 5]).encode()
    variants = [good[:-1], good[:len(good) // 2], b"[" + good + b"]", b'"' + good.replace(b'"', b"'") + b'"',
                good.replace(b'"', b"'"), good[:-1] + b",}", b"{" + good, b"\xff\xfe" + good, good + b"}",
                b"{Action: InactivateDeviceCertificate}", b"{\"Action\"", b"null", b"42", b"{}}", good.replace(b":", b"=")]
    return json_post(variants[i % len(variants)]), (400,)


def bad_percent(i):
    target = TARGETS[i % 5]
    bad = [b"%zz", b"%4", b"%", b"%G1", b"%%", b"%u0063", b"%-1", b"% 1"][i % 8]
    poisoned = target.replace(b"local", b"lo" + bad + b"xcal") if i % 2 else target + b"&X" + bad + b"=1"
    return (get(poisoned) if i % 3 else form(poisoned)), (400,)


def nul_bytes(i):
    target = TARGETS[i % 5]
    variants = [get(target.replace(b"local", b"lo%00cal")), get(target.replace(b"0c01", b"0c01%00")),
                form(target.replace(b"local", b"lo\x00cal")), form(target + b"&%00=1"),
                json_post(json.dumps(JSON_TARGETS[i % 5]).encode().replace(b"local", b"lo\\u0000cal")),
                json_post(json.dumps(JSON_TARGETS[i % 5]).encode().replace(b"local", b"lo\x00cal"))]
    return variants[i % len(variants)], (400,)


def huge(i):
    target = TARGETS[i % 5]
    n = 8 * KIB + 1 + i
    variants = [form(target.replace(b"local", b"l" * n)), form(target + b"&X=" + b"v" * n),
                form(target + b"&" + b"k" * n + b"=1"), form(target + b"&X=" + b"v" * (64 * KIB + i)),
                json_post(json.dumps({**JSON_TARGETS[i % 5], "X": "v" * n}).encode())]
    expected = (413,) if i % len(variants) == 3 else (400,)
    return variants[i % len(variants)], expected


def duplicated(i):
    target = TARGETS[i % 5]
    name, value = target.rsplit(b"&", 1)[1].split(b"=")
    other = b"c602" if name == b"DeviceSn" else b"0c02"
    variants = [get(target + b"&" + name + b"=" + value), get(target + b"&" + name + b"=" + other),
                form(target + b"&" + name + b"=" + value),
                http(b"POST", b"/?" + target, [b"Content-Type: application/x-www-form-urlencoded"],
                     name + b"=" + value),
                json_post(json.dumps(JSON_TARGETS[i % 5]).encode()[:-1] + b', "' + name + b'": "'
                          + other + b'"}'),
                get(target + b"&MqttInstanceId=local")]
    return variants[i % len(variants)], (400,)


def wrong_types(i):
    fields = JSON_TARGETS[i % 5]
    key = "DeviceSn" if "DeviceSn" in fields else "Sn"
    value = [51713, None, True, ["c601"], {"v": "c601"}, 0xc601 + 0.5, False][i % 7]
    key = [key, "MqttInstanceId", "Action", key, key][i % 5] if i % 7 != 3 else key
    return json_post(json.dumps({**fields, key: value}).encode()), (400,)


def unknown_action(i):
    target = TARGETS[i % 5]
    op = target.split(b"&")[0].split(b"=")[1]
    bad = [op.lower(), op.upper(), op + b" ", b"%20" + op, op[:-1], op + b"s", b"Inactivate%20DeviceCertificate",
           b"" + op.replace(b"Certificate", b"Cert"), b"%C3%A9" + op, b"Unregister" + op[10:]][i % 10]
    return get(target.replace(op, bad, 1)), (404,)


def other_refusals(i):
    target = TARGETS[i % 5]
    variants = [(http(b"PUT", b"/?" + target), (405,)), (http(b"DELETE", b"/?" + target), (405,)),
                (http(b"GET", b"/admin?" + target), (404,)),
                (http(b"POST", headers=[b"Content-Type: text/plain"], body=target), (415,)),
                (http(b"POST", headers=[b"Content-Type: multipart/form-data; boundary=x"], body=target), (415,)),
                (get(target + b"&Force=1"), (400,)), (get(target.replace(b"0c01", b"0c:01:")), (400,)),
                (get(target.replace(b"local", b"")), (400,))]
    return variants[i % len(variants)]


GENERATORS = [bad_json, bad_percent, nul_bytes, huge, duplicated, wrong_types, unknown_action, other_refusals]


def malformed_requests():
    out = [gen(i) for gen in GENERATORS for i in range(25)]
    assert len(out) == 200
    return out


def test_200_malformed_requests_change_nothing_and_the_broker_keeps_serving(b, pki):
    dev = pki.device("c601")
    connect5(b, dev, "limits-c601").close()
    wait_online(b, CA, "c601", online=False)
    ok(b, "RegisterDeviceCertificate", method="POST", DeviceContent=pki.device("c602").pem())
    before, stats_before = store_snapshot(b), counters(b)
    for request, expected in malformed_requests():
        status, body = parse_raw(raw_exchange(b.admin_socket, request))
        assert status in expected, (request[:160], status, body)
        assert body is not None and body["Code"] and body["RequestId"], (request[:160], body)
    assert store_snapshot(b) == before
    stats_after = counters(b)
    # Every refusal is counted once, and nothing succeeded but the reads
    # made here to compare the store.
    refusals = {k: stats_after.get(k, 0) - stats_before.get(k, 0) for k in stats_after
                if k.startswith("admin_calls.") and not k.endswith(".Success")}
    assert sum(refusals.values()) == 200, refusals
    successes = {k for k in stats_after if k.endswith(".Success") and stats_after[k] != stats_before.get(k, 0)}
    assert successes <= {"admin_calls.ListDeviceCertificate.Success", "admin_calls.ListCaCertificate.Success",
                         "admin_calls.ListCertificateChanges.Success", "admin_calls.GetStats.Success"}, successes
    assert b.proc.poll() is None
    assert device_record(b, CA, "c601")["Status"] == "1"
    connect5(b, dev, "limits-c601-again").close()
