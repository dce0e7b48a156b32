"""What a hostile client or a careless operator could make of the plugin:
each test reproduces one such case against the real broker."""

import socket
import subprocess
import time

import pytest

from devcert_harness import raw_connect_v311, tls_context

CONNACK_V3_ACCEPTED = b"\x20\x02\x00\x00"


def plain_connect_v311(broker, client_id, username=None, password=None, clean=True, timeout=5.0):
    """An MQTT 3.1.1 CONNECT on the plain listener (no TLS, so no
    certificate). Returns (socket, first 4 bytes of the answer)."""
    flags = 0x02 if clean else 0x00
    payload = len(client_id.encode()).to_bytes(2, "big") + client_id.encode()
    if username is not None:
        flags |= 0x80
        payload += len(username.encode()).to_bytes(2, "big") + username.encode()
    if password is not None:
        flags |= 0x40
        payload += len(password.encode()).to_bytes(2, "big") + password.encode()
    variable = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x3c"
    body = variable + payload
    s = socket.create_connection(("127.0.0.1", broker.plain_port), timeout=timeout)
    s.sendall(b"\x10" + bytes([len(body)]) + body)
    answer = b""
    try:
        while len(answer) < 4:
            chunk = s.recv(4 - len(answer))
            if not chunk:
                break
            answer += chunk
    except (ConnectionResetError, socket.timeout):
        pass
    return s, answer


def closed_within(sock, timeout):
    """True if the broker closes the connection within `timeout` s."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(64)
            if not data:
                return True
    except socket.timeout:
        return False
    except OSError:
        return True


def password_broker(make_broker, tmp_path, users):
    """A broker whose password file holds `users` (name -> password)."""
    passwords = tmp_path / "passwords"
    passwords.touch()
    for name, pw in users.items():
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, pw], check=True, capture_output=True)
    b = make_broker(admin_socket=True, extra_config=f"password_file {passwords}").start()
    return b, passwords


# ------------------------------------------------------ 1: reload re-check

def test_a_password_client_reusing_a_device_client_id_is_rechecked_by_the_password_file(make_broker, tmp_path, pki):
    broker, passwords = password_broker(make_broker, tmp_path, {"alice": "secret"})
    dev = pki.device("f001", "sensor-1")
    assert raw_connect_v311(broker, dev, "sensor-1") == CONNACK_V3_ACCEPTED  # connects and leaves
    assert broker.wait_for_log("accepted client 'sensor-1'")

    user, answer = plain_connect_v311(broker, "sensor-1", "alice", "secret")
    try:
        assert answer == CONNACK_V3_ACCEPTED
        subprocess.run(["mosquitto_passwd", "-D", str(passwords), "alice"], check=True, capture_output=True)
        broker.reload()
        assert broker.wait_for_log("reload: re-checking every session")
        assert closed_within(user, 5), "the reload kept a session whose password is gone"
    finally:
        user.close()
    again, answer = plain_connect_v311(broker, "sensor-1", "alice", "secret")
    again.close()
    assert answer == b"\x20\x02\x00\x05"


# ------------------------------------------------- 4: memory per client id

def _varint(n):
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tls_connect_and_leave(broker, device, client_id, version, context):
    """One TLS connection with a CONNECT (3.1.1 clean session, or MQTT 5
    with no session expiry), the CONNACK, then DISCONNECT."""
    cid = client_id.encode()
    if version == 5:
        variable = b"\x00\x04MQTT\x05\x02\x00\x3c\x00"
    else:
        variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    body = variable + len(cid).to_bytes(2, "big") + cid
    raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"\x10" + _varint(len(body)) + body)
        answer = b""
        while len(answer) < 4:
            chunk = s.recv(4 - len(answer))
            if not chunk:
                break
            answer += chunk
        s.sendall(b"\xe0\x00")
        return answer[:4]


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("version", [4, 5])
def test_thousands_of_fresh_client_ids_leave_the_broker_rss_flat(admin_broker, pki, version):
    """MQTT 3.1.1 clean sessions end with their connection: nothing stays.
    MQTT 5 sessions may outlive it and Mosquitto 2.0 does not tell a plugin
    when they end: their entries go when the broker reuses the session's
    memory or at the next reload; logrotate's nightly SIGHUP stands in for
    that here, every 500 cycles."""
    broker = admin_broker
    dev = pki.device("f040", "sensor-f040")
    context = tls_context(pki, dev)
    # Long ids make any per-id leak plain: 2,000 ids of 4 KB are 8 MB.
    pad = "x" * 4000

    def cycles(start, count):
        for i in range(start, start + count):
            answer = tls_connect_and_leave(broker, dev, f"fresh-{i}-{pad}", version, context)
            assert answer[0] == 0x20 and answer[3] == 0, answer  # CONNACK, accepted
        if version == 5:
            broker.reload()

    cycles(0, 500)  # warm-up: TLS, allocator arenas, the broker's own tables
    samples = [rss_kib(broker.proc.pid)]
    started = time.monotonic()
    for start in range(500, 2500, 500):
        cycles(start, 500)
        samples.append(rss_kib(broker.proc.pid))
    elapsed = time.monotonic() - started
    print(f"MQTT {version}: broker VmRSS (KiB) every 500 cycles after warm-up: {samples}, {elapsed:.1f} s")
    grown = samples[-1] - samples[0]
    assert grown < 512, f"VmRSS grew {grown} KiB over 2,000 fresh client ids: {samples}"
    assert broker.counters()["connections_accepted"] >= 2500
