"""Real-broker test harness: a PKI minted with the openssl CLI, Debian's
mosquitto started with the built plugin on free loopback ports, and clients
that report exactly what the broker answered.

Mosquitto runs as root in the test environment; the generated config says
`user root` so that it does not switch to the `mosquitto` user, which could
not reach the per-test store directory under the pytest tmp dir.
"""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import weakref
from pathlib import Path

# The broker under test: Debian's unless DEVCERT_MOSQUITTO names another
# binary (scripts/test-compat runs the tests against each vendored build).
MOSQUITTO = os.environ.get("DEVCERT_MOSQUITTO") or "/usr/sbin/mosquitto"


def broker_running(log):
    """True once the broker logged "mosquitto version X running" (2.1 also
    logs "running mosquitto as user: ..." before it loads plugins)."""
    return re.search(r"mosquitto version \S+ running", log) is not None


def plugin_path():
    path = os.environ.get("DEVCERT_PLUGIN")
    if not path or not Path(path).is_file():
        raise RuntimeError("DEVCERT_PLUGIN must name the built mosquitto_devcert.so")
    return path


def devcertctl_path():
    path = os.environ.get("DEVCERTCTL")
    if not path or not Path(path).is_file():
        raise RuntimeError("DEVCERTCTL must name the built devcertctl")
    return path


def free_ports(n):
    """`n` distinct TCP ports on 127.0.0.1 that are free now. All are bound
    at once: ports taken one after another can come back the same (the
    first is free again once its probe closes), and a broker given the same
    port for two listeners cannot start."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


# --------------------------------------------------------------------- PKI

class Cert:
    def __init__(self, directory, name, serial):
        self.name = name
        self.serial = serial  # canonical form, as the plugin logs it
        self.cert = str(Path(directory) / f"{name}.crt")
        self.key = str(Path(directory) / f"{name}.key")

    def pem(self):
        return Path(self.cert).read_text()


class Pki:
    """Root CA, device CA (registered), a second device CA, an unregistered
    CA, devices with fixed serials and a server certificate for localhost."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.root = self._ca("root", "01", "devcert test root", None)
        self.ca = self._ca("device-ca", "0c01", "devcert device ca", self.root)
        self.other_ca = self._ca("other-ca", "0c02", "devcert second ca", self.root)
        self.stranger_ca = self._ca("stranger-ca", "0e01", "devcert unregistered ca", None)
        self.server = self._leaf("server", "5e01", "localhost", self.root,
                                 "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        # Everything the device listener lets through the TLS handshake: the
        # plugin, not TLS, refuses devices of the unregistered CA.
        self.trust = str(self.dir / "trust.pem")
        Path(self.trust).write_text(self.root.pem() + self.ca.pem() + self.other_ca.pem() + self.stranger_ca.pem())
        self.client_trust = self.root.cert

    def _key(self, name):
        key = str(self.dir / f"{name}.key")
        run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        return key

    def _ca(self, name, serial, cn, issuer):
        c = Cert(self.dir, name, serial)
        self._key(name)
        ext = self.dir / f"{name}.ext"
        ext.write_text("basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                       "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        if issuer is None:
            run(["openssl", "req", "-new", "-x509", "-key", c.key, "-out", c.cert, "-subj", f"/CN={cn}",
                 "-days", "7300", "-set_serial", f"0x{serial}", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        else:
            self._sign(c, cn, issuer, ext)
        return c

    def _sign(self, c, subject_cn, issuer, ext, organization=None, set_serial=None):
        csr = str(self.dir / f"{c.name}.csr")
        subj = f"/CN={subject_cn}" + (f"/O={organization}" if organization else "")
        run(["openssl", "req", "-new", "-key", c.key, "-out", csr, "-subj", subj])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", issuer.cert, "-CAkey", issuer.key, "-out", c.cert,
             "-days", "7300", "-set_serial", set_serial or f"0x{c.serial}", "-extfile", str(ext)])

    def _leaf(self, name, serial, cn, issuer, extensions="", organization=None, set_serial=None):
        c = Cert(self.dir, name, serial)
        self._key(name)
        ext = self.dir / f"{name}.ext"
        ext.write_text("basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                       + extensions)
        self._sign(c, cn, issuer, ext, organization, set_serial)
        return c

    def device_with_serial(self, name, set_serial, cn=None, issuer=None):
        """A device certificate whose serial is given to openssl as is, e.g.
        "-5" or "0": serials no canonical form exists for. Its `serial` is
        "-", as the plugin logs it."""
        if (self.dir / f"{name}.crt").exists():
            return Cert(self.dir, name, "-")
        return self._leaf(name, "-", cn or name, issuer or self.ca, "extendedKeyUsage=clientAuth\n",
                          "devcert devices", set_serial)

    def device(self, serial, cn=None, issuer=None, organization="devcert devices"):
        """A device certificate with a fixed serial (hex, canonical)."""
        name = f"device-{serial}"
        if (self.dir / f"{name}.crt").exists():
            return Cert(self.dir, name, serial)
        return self._leaf(name, serial, cn or f"device-{serial}", issuer or self.ca,
                          "extendedKeyUsage=clientAuth\n", organization)


# ------------------------------------------------------------------ broker

class Broker:
    """One mosquitto process with the plugin, a TLS device listener and a
    plain listener used only to probe readiness."""

    def __init__(self, workdir, pki, options=None, extra_config="", admin_socket=False, import_ca=True,
                 per_listener_settings=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.db = str(self.workdir / "db")
        self.tls_port, self.plain_port = free_ports(2)
        self.conf = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.proc = None
        self.log_offset = 0
        self.admin_socket = None
        self.admin_socket_dir = None
        opts = {"db_path": self.db, "instance_id": "local"}
        if admin_socket:
            # Short path: a UNIX socket address holds 107 bytes, more than the
            # pytest tmp dir leaves. Removed by stop(), or when the Broker is
            # collected if stop() is never reached.
            self.admin_socket_dir = tempfile.mkdtemp(prefix=f"dc-{os.getpid()}-{self.tls_port}-", dir="/tmp")
            self._remove_socket_dir = weakref.finalize(self, shutil.rmtree, self.admin_socket_dir, True)
            self.admin_socket = str(Path(self.admin_socket_dir) / "admin.sock")
            opts["admin_socket"] = self.admin_socket
        else:
            opts["admin_socket"] = "off"
        opts.update(options or {})
        per_listener = "true" if per_listener_settings else "false"
        lines = [
            "user root",
            f"per_listener_settings {per_listener}",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "log_timestamp false",
            "persistence false",
            "set_tcp_nodelay true",
            "",
            # The plain listener comes first: with per_listener_settings true
            # the plugin belongs to the listener defined just before it.
            f"listener {self.plain_port} 127.0.0.1",
            "allow_anonymous true",
            "",
            f"listener {self.tls_port} 127.0.0.1",
            f"cafile {pki.trust}",
            f"certfile {pki.server.cert}",
            f"keyfile {pki.server.key}",
            "require_certificate true",
            "allow_anonymous false" if per_listener_settings else "",
            "",
            extra_config,
            f"plugin {plugin_path()}",
        ]
        if import_ca is True:
            import_ca = [pki.ca]
        for ca in import_ca or []:
            lines.append(f"plugin_opt_import_ca {ca.cert}")
        for key, value in opts.items():
            for v in (value if isinstance(value, list) else [value]):
                lines.append(f"plugin_opt_{key} {v}")
        self.conf.write_text("\n".join(lines) + "\n")

    def environment(self):
        env = dict(os.environ)
        if os.environ.get("DEVCERT_SANITIZE") == "address":
            # The module is instrumented, the broker is not: the runtime must
            # be loaded first.
            libs = [run(["gcc", f"-print-file-name={lib}"]).stdout.strip() for lib in ("libasan.so", "libubsan.so")]
            env["LD_PRELOAD"] = ":".join(libs)
            # Leaks stay checked, except those of the broker itself: 2.0.11
            # loses some of its configuration with per_listener_settings true.
            # Only allocations made through its own wrappers are excused; the
            # plugin allocates through malloc/new, so its leaks still show.
            suppressions = self.workdir / "lsan.supp"
            suppressions.write_text("".join(f"leak:mosquitto__{fn}\n"
                                            for fn in ("malloc", "calloc", "realloc", "strdup", "strndup")))
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
            env["LSAN_OPTIONS"] = f"suppressions={suppressions}:print_suppressions=0"
        return env

    def start(self, expect_ready=True, timeout=15):
        self.log_file = open(self.log_path, "ab")
        self.log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=self.log_file,
                                     stderr=subprocess.STDOUT, env=self.environment())
        return self.wait_ready(timeout) if expect_ready else self

    def wait_ready(self, timeout=15):
        """Waits until the broker started last serves its plain port and has
        logged that it runs (judged on this run's lines: a restarted broker
        appends to the same log)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.plain_port), timeout=0.2):
                    pass
                if broker_running(self.run_log()):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not become ready:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_log(self):
        """What the current (or last) run of the broker logged."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as f:
            f.seek(self.log_offset)
            return f.read().decode(errors="replace")

    def wait_for_log(self, fragment, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if fragment in self.log():
                return True
            time.sleep(0.02)
        return False

    def count_in_log(self, fragment):
        return self.log().count(fragment)

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout=10):
        """SIGTERM, then asserts a clean exit with no sanitizer report.
        Removes the admin socket's directory whatever happens."""
        try:
            self._stop(timeout)
        finally:
            if self.admin_socket_dir is not None:
                self._remove_socket_dir()

    def _stop(self, timeout):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"mosquitto did not stop within {timeout} s:\n{self.log()}")
        code = self.proc.returncode
        self.proc = None
        self.log_file.close()
        log = self.log()
        assert code == 0, f"mosquitto exited with {code}:\n{log}"
        assert "Sanitizer" not in log and "runtime error" not in log, log
        if self.admin_socket:
            assert not Path(self.admin_socket).exists(), "the admin socket was left behind"

    def wait_exit(self, timeout=10):
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        self.log_file.close()
        return code

    def admin(self, action, **params):
        """Calls the admin API over the broker's socket (HTTP over a UNIX
        socket, as curl --unix-socket does). MqttInstanceId defaults to the
        broker's. Returns (HTTP status, decoded JSON body)."""
        if self.admin_socket is None:
            raise RuntimeError("this broker has no admin socket: make it with admin_socket=True")
        query = {"Action": action, "MqttInstanceId": "local"}
        query.update({k: str(v) for k, v in params.items()})
        conn = UnixHttpConnection(self.admin_socket)
        try:
            conn.request("GET", "/?" + urllib.parse.urlencode(query))
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def stats(self):
        """GetStats through the admin socket: the Data object (CaCount,
        DeviceCount, ConnectedClients, Counters)."""
        status, body = self.admin("GetStats")
        assert status == 200, body
        return body["Data"]

    def counters(self):
        """Every counter of GetStats, by name ("connections_accepted",
        "connections_refused.device_inactive", "kicks", ...)."""
        return self.stats()["Counters"]

    def wait_counter(self, name, expected, timeout=5.0):
        """Polls GetStats until counter `name` reaches `expected` (counters
        bumped on the writer thread land after the CONNACK); returns every
        counter as last read."""
        deadline = time.monotonic() + timeout
        while True:
            counters = self.counters()
            if counters.get(name) == expected or time.monotonic() >= deadline:
                return counters
            time.sleep(0.02)

    def ctl(self, action, **params):
        """Runs devcertctl against the store directly, as another process."""
        cmd = [devcertctl_path(), "--db", self.db, action]
        for key, value in params.items():
            cmd += [f"--{key}", str(value)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


class UnixHttpConnection(http.client.HTTPConnection):
    """http.client over a UNIX stream socket (the admin socket)."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def refused(reason):
    """The GetStats counter name of a refusal reason ("device inactive" ->
    "connections_refused.device_inactive")."""
    return "connections_refused." + reason.replace(" ", "_")


# ----------------------------------------------------------------- clients

def tls_context(pki, device):
    ctx = ssl.create_default_context(cafile=pki.client_trust)
    ctx.check_hostname = False
    if device is not None:
        ctx.load_cert_chain(device.cert, device.key)
    return ctx


def raw_connect_v311(broker, device, client_id, timeout=5.0):
    """Sends an MQTT 3.1.1 CONNECT over TLS and returns the first 4 bytes
    the broker answers (b'' if it closed the connection)."""
    payload_id = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(payload_id).to_bytes(2, "big") + payload_id
    remaining = len(variable) + len(payload)
    packet = b"\x10" + bytes([remaining]) + variable + payload
    raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=timeout)
    with tls_context(broker.pki, device).wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(packet)
        data = b""
        try:
            while len(data) < 4:
                chunk = s.recv(4 - len(data))
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, ssl.SSLError):
            pass
        return data


def mosquitto_pub(broker, device, client_id, version="mqttv311"):
    """mosquitto_pub with the device's certificate; returns the CompletedProcess."""
    cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.tls_port), "--cafile", broker.pki.client_trust,
           "--cert", device.cert, "--key", device.key, "--insecure", "-i", client_id, "-V", version,
           "-t", "devcert/test", "-m", "hello", "-q", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


class Mqtt5Client:
    """A paho-mqtt MQTT 5 client that records the CONNACK and DISCONNECT
    reason codes it receives."""

    def __init__(self, broker, device, client_id, clean_start=True, session_expiry=None):
        import paho.mqtt.client as mqtt
        from paho.mqtt.properties import Properties
        from paho.mqtt.packettypes import PacketTypes

        self.mqtt = mqtt
        self.connack = None
        self.disconnect_reason = None
        self.connected = threading.Event()
        self.answered = threading.Event()
        self.disconnected = threading.Event()
        self.client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.tls_set_context(tls_context(broker.pki, device))
        self.client.tls_insecure_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        self.client.connect("127.0.0.1", broker.tls_port, keepalive=30, clean_start=clean_start, properties=props)
        self.client.loop_start()

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.connack = reason.value if hasattr(reason, "value") else int(reason)
        if self.connack == 0:
            self.connected.set()
        self.answered.set()

    def _on_disconnect(self, client, userdata, reason, properties=None):
        self.disconnect_reason = reason.value if hasattr(reason, "value") else reason
        self.disconnected.set()
        # Reconnecting would hide what the broker did: stop the loop.
        client.disconnect()

    def wait_connack(self, timeout=10):
        assert self.answered.wait(timeout), "no CONNACK"
        return self.connack

    def wait_disconnect(self, timeout=10):
        return self.disconnected.wait(timeout)

    def close(self):
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client.loop_stop()


def mqtt5_connack(broker, device, client_id):
    """The CONNACK reason code paho gets for a fresh MQTT 5 connection."""
    c = Mqtt5Client(broker, device, client_id)
    try:
        return c.wait_connack()
    finally:
        c.close()


def _varint(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


class RawMqtt5:
    """A minimal MQTT 5 client over TLS that reports packets byte for byte.
    paho-mqtt 1.6.1 drops the reason code of a DISCONNECT whose remaining
    length is 1, which is exactly what Mosquitto sends on a kick (e0 01 98)."""

    def __init__(self, broker, device, client_id, clean_start=True, session_expiry=None, timeout=5.0):
        raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=timeout)
        self.sock = tls_context(broker.pki, device).wrap_socket(raw, server_hostname="localhost")
        props = b""
        if session_expiry is not None:
            props = b"\x11" + session_expiry.to_bytes(4, "big")
        flags = 0x02 if clean_start else 0x00
        variable = b"\x00\x04MQTT\x05" + bytes([flags]) + b"\x00\x3c" + _varint(len(props)) + props
        cid = client_id.encode()
        payload = len(cid).to_bytes(2, "big") + cid
        body = variable + payload
        self.sock.sendall(b"\x10" + _varint(len(body)) + body)
        packet = self.read_packet(timeout)
        assert packet is not None and packet[0] == 0x20, f"expected CONNACK, got {packet}"
        self.session_present = bool(packet[1][0] & 1)
        self.connack = packet[1][1]

    def _read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def read_packet(self, timeout=5.0):
        """(first byte, body) of the next packet, or None if the connection closed."""
        self.sock.settimeout(timeout)
        try:
            head = self._read_exact(1)
            if head is None:
                return None
            length, shift = 0, 0
            while True:
                b = self._read_exact(1)
                if b is None:
                    return None
                length |= (b[0] & 0x7F) << shift
                shift += 7
                if not b[0] & 0x80:
                    break
            body = self._read_exact(length) if length else b""
            if body is None:
                return None
            return head[0], body
        except socket.timeout:
            raise
        except (ConnectionResetError, ssl.SSLError, OSError):
            return None

    def wait_disconnect(self, timeout=5.0):
        """The DISCONNECT reason code the broker sent, 'closed' if it closed
        the connection without one, or None if still connected at timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                packet = self.read_packet(max(0.01, deadline - time.monotonic()))
            except socket.timeout:
                return None
            if packet is None:
                return "closed"
            if packet[0] == 0xE0:
                return packet[1][0] if packet[1] else 0
        return None

    def still_connected(self, wait=0.3):
        return self.wait_disconnect(wait) is None

    def close(self):
        try:
            self.sock.sendall(b"\xe0\x00")
        except OSError:
            pass
        self.sock.close()
