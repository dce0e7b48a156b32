"""What a hostile client or a careless operator could make of the plugin:
each test reproduces one such case against the real broker."""

import os
import socket
import subprocess
import time

import pytest

from devcert_harness import RawMqtt5, raw_connect_v311, tls_context

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


@pytest.mark.skipif(os.environ.get("DEVCERT_SANITIZE") == "address",
                    reason="AddressSanitizer keeps freed memory in quarantine: RSS says nothing under it")
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
    assert broker.counters()["connections_accepted"] == 2500  # reloads re-check, they do not connect


# ----------------------------------------------------- 9: wake-up signal

SIGURG_OWNER = r"""
#include <signal.h>
static void owner(int signo) { (void)signo; }
/* What a Go runtime in another plugin does: SIGURG is its own. */
__attribute__((constructor)) static void take_sigurg(void) {
    struct sigaction a = {0};
    a.sa_handler = owner;
    sigemptyset(&a.sa_mask);
    a.sa_flags = SA_RESTART;
    sigaction(SIGURG, &a, 0);
}
"""


def with_preload(broker, library):
    environment = broker.environment

    def env():
        e = environment()
        e["LD_PRELOAD"] = ":".join(p for p in (e.get("LD_PRELOAD"), library) if p)
        return e
    broker.environment = env
    return broker


def test_start_up_is_refused_when_another_library_owns_the_wake_up_signal(make_broker, tmp_path):
    source = tmp_path / "sigurg_owner.c"
    source.write_text(SIGURG_OWNER)
    library = tmp_path / "libsigurg_owner.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)

    b = with_preload(make_broker(), str(library))
    b.start(expect_ready=False)
    assert b.wait_exit() != 0, b.log()
    lines = [line for line in b.log().splitlines() if line.startswith("devcert:")]
    assert lines[-1] == ("devcert: plugin_opt_wakeup_signal: SIGURG already has a handler in this process "
                         "(another plugin or library installed one); it is left alone: set "
                         "plugin_opt_wakeup_signal to a signal nothing else uses (e.g. RTMIN+2) or "
                         "plugin_opt_wakeup_signal off")

    # The fix the line names works.
    fixed = with_preload(make_broker(options={"wakeup_signal": "RTMIN+2"}), str(library)).start()
    assert fixed.wait_for_log("wake-up signal RTMIN+2") or fixed.wait_for_log("wake-up signal real-time")


def test_kicks_still_wake_the_broker_at_once_with_sa_restart(make_broker, pki):
    """SA_RESTART does not restart epoll_wait (signal(7)): the kick must
    still come well before the 100 ms an idle broker waits for its tick."""
    b = make_broker(admin_socket=True).start()
    dev = pki.device("f090", "sensor-f090")
    latencies = []
    for i in range(7):
        c = RawMqtt5(b, dev, f"wake-{i}")
        assert c.connack == 0
        if i == 0:
            assert b.wait_for_log("registered DeviceSn f090")
        time.sleep(0.15)  # the broker is idle, in epoll_wait
        try:
            b.admin("InactivateDeviceCertificate", CaSn="0c01", DeviceSn="f090")
            answered = time.monotonic()
            assert c.wait_disconnect(5) == 0x98
            latencies.append((time.monotonic() - answered) * 1000)
        finally:
            c.close()
        b.admin("ActiveDeviceCertificate", CaSn="0c01", DeviceSn="f090")
    latencies.sort()
    print(f"kick latency after the admin answer (ms): {[round(x, 2) for x in latencies]}")
    assert latencies[len(latencies) // 2] < 20, latencies


# ------------------------------------------- 3: names that become usernames

def mint_device(pki, serial_hex, name_attributes):
    """A device certificate of the registered CA whose subject is exactly
    the attributes given (any string type, any length, NULs included),
    minted with the cryptography package, which openssl's CLI cannot do."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from devcert_harness import Cert

    c = Cert(pki.dir, f"named-{serial_hex}", serial_hex)
    ca_cert = x509.load_pem_x509_certificate(pki.ca.pem().encode())
    ca_key = serialization.load_pem_private_key(open(pki.ca.key, "rb").read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    start = datetime.datetime(2020, 1, 1)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name(name_attributes))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(int(serial_hex, 16))
            .not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=7300))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    open(c.cert, "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(c.key, "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return c


def cn(value, asn1_type=None):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    if asn1_type is None:
        return x509.NameAttribute(NameOID.COMMON_NAME, value, _validate=False)
    return x509.NameAttribute(NameOID.COMMON_NAME, value, asn1_type, _validate=False)


def connected_as(broker, client_id, username):
    return broker.wait_for_log(f"as {client_id} (p2, c1, k60, u'{username}')")


def test_a_common_name_with_a_nul_is_refused_not_cut_into_another_device_s_username(admin_broker, pki):
    broker = admin_broker
    victim = pki.device("f101", "victim-sensor")
    assert raw_connect_v311(broker, victim, "victim") == CONNACK_V3_ACCEPTED
    assert connected_as(broker, "victim", "victim-sensor")

    forged = mint_device(pki, "f102", [cn("victim-sensor\x00suffix")])
    assert raw_connect_v311(broker, forged, "forged") == b"\x20\x02\x00\x05"
    assert broker.wait_for_log("refused client 'forged' (CaSn 0c01, DeviceSn f102): bad certificate "
                               "(common name contains a NUL character)")
    assert "as forged (" not in broker.log()
    counters = broker.counters()
    assert counters["connections_refused.bad_certificate"] == 1
    assert counters["connections_accepted"] == 1


def test_common_names_in_other_string_types_and_long_names_are_kept_whole(admin_broker, pki):
    from cryptography.x509.name import _ASN1Type
    broker = admin_broker
    bmp = mint_device(pki, "f111", [cn("sensor-\u00e9", _ASN1Type.BMPString)])
    assert raw_connect_v311(broker, bmp, "bmp") == CONNACK_V3_ACCEPTED
    assert connected_as(broker, "bmp", "sensor-\u00e9")

    prefix = "n" * 300
    one = mint_device(pki, "f112", [cn(prefix + "-one")])
    two = mint_device(pki, "f113", [cn(prefix + "-two")])
    assert raw_connect_v311(broker, one, "long-one") == CONNACK_V3_ACCEPTED
    assert raw_connect_v311(broker, two, "long-two") == CONNACK_V3_ACCEPTED
    assert connected_as(broker, "long-one", prefix + "-one")
    assert connected_as(broker, "long-two", prefix + "-two")


def test_long_subjects_are_kept_whole_in_subject_mode(make_broker, pki):
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    broker = make_broker(admin_socket=True, options={"username": "subject"}).start()
    units = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"unit-{i}-of-a-rather-long-subject")
             for i in range(10)]
    dev = mint_device(pki, "f121", [cn("sensor-f121")] + units)
    assert raw_connect_v311(broker, dev, "long-subject") == CONNACK_V3_ACCEPTED
    expected = ",".join([f"OU=unit-{i}-of-a-rather-long-subject" for i in reversed(range(10))] + ["CN=sensor-f121"])
    assert len(expected) > 255
    assert connected_as(broker, "long-subject", expected)


# ------------------------------------------- 11: a reload is not a connection

def test_a_reload_counts_its_re_check_as_such_not_as_connections(admin_broker, pki):
    broker = admin_broker
    devices = [pki.device(f"f20{i}", f"sensor-f20{i}") for i in range(3)]
    clients = [RawMqtt5(broker, d, f"nightly-{i}") for i, d in enumerate(devices)]
    try:
        assert all(c.connack == 0 for c in clients)
        assert broker.wait_counter("connections_accepted", 3)
        for night in (1, 2):  # logrotate, twice
            broker.reload()
            counters = broker.wait_counter("reload_sessions_kept", 3 * night)
            assert counters["reload_rechecks"] == night
            assert counters["connections_accepted"] == 3
            assert counters["reload_sessions_refused"] == 0
        assert all(c.still_connected() for c in clients)
        assert broker.count_in_log("devcert: accepted client 'nightly-") == 3
    finally:
        for c in clients:
            c.close()
