"""What a hostile client or a careless operator could make of the plugin:
each test reproduces one such case against the real broker."""

import socket
import subprocess
import time

from devcert_harness import raw_connect_v311

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
