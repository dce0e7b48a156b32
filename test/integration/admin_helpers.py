"""Calling the admin API of a real broker the ways an operator does (curl
over the UNIX socket, devcertctl, plain HTTP/1.1 on a kept-alive
connection), optionally as another OS user, and minting the certificates the
lifecycle needs with the openssl CLI.

Other OS users are simulated with setpriv (util-linux): no system user is
created; uid 65534 is `nobody`, uids like 54321 have no passwd entry."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

from devcert_harness import Broker, Cert, RawMqtt5, UnixHttpConnection, devcertctl_path, run, tls_context

NOBODY = 65534          # has a passwd entry: user and group "nobody"/"nogroup"
UNNAMED_UID = 54321     # no passwd entry: only a uid principal can match it
USERS_GID = 100         # the group "users", for group principals

ADMINISTRATIVE_ACTION = 0x98
NOT_AUTHORIZED = 0x87
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")

# The Message of every error code, exactly as docs/api.md (and the reference) give it.
MESSAGES = {
    "ParameterFieldCheckFailed": "Failed to validate the parameters. The parameters may be missing or invalid.",
    "FindDeviceBySnError": "Failed to find the device certificate by the SN. Please check sn is valid",
    "FindCaBySnError": "Failed to find the CA by the SN. Please check sn is valid.",
    "MqttInstanceNotFound": "Specified instance is not found",
    "PermissionCheckFailed": "Failed to verify API permissions.",
    "MqttOwnerCheckError": "Failed to validate the instance permission",
    "RegisterCodeError": "Register code error in verification certificate.",
    "RegisterCodeUsed": "Register code has been used.",
    "CertificateContentError": ("Certificate content error, please check ca/verification certificate content. "
                                "BasicConstraints extension should be set to true in CA certificate."),
    "SnNotUnique": "Sn is not unique in global.",
    "CaNumExceed": "CA certificate num exceed.",
    "InternalError": "An error occurred while processing your request. Try again later.",
    "InvalidAction.NotFound": "Specified api is not found, please check your url and method.",
    "Throttling.User": "Request was denied due to user flow control.",
    "CertificateRevoked": "The certificate is revoked; its status can no longer be changed.",
}


# ------------------------------------------------------------- brokers

def open_to_everyone(broker):
    """Lets other OS users reach the socket: the harness makes its directory
    0700 (mkdtemp); the socket itself gets plugin_opt_admin_socket_mode."""
    os.chmod(os.path.dirname(broker.admin_socket), 0o755)
    return broker


def module_broker(tmp_path_factory, pki, name, options=None, **kw):
    """A started broker with its admin socket open to every uid, for a whole
    test module. The caller stops it (see shared_broker in the modules)."""
    opts = {"admin_socket_mode": "0666"}
    opts.update(options or {})
    b = Broker(tmp_path_factory.mktemp(name), pki, options=opts, admin_socket=True, **kw)
    return open_to_everyone(b.start())


def as_uid(cmd, uid, gid=None):
    """The command line run as another OS user, with no supplementary groups."""
    if uid is None:
        return cmd
    gid = uid if gid is None else gid
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"] + cmd


# --------------------------------------------------------------- curl

class Reply:
    """One HTTP answer: status, headers (lower-case names) and the decoded JSON body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def code(self):
        return self.body.get("Code")

    def __repr__(self):
        return f"Reply({self.status}, {self.body})"


def curl(broker, items, uid=None, gid=None, method="GET", json_body=None):
    """Calls the admin socket with curl. `items` is a list of (name, value)
    pairs, so a parameter can be given twice. GET puts them in the query
    string; POST sends them form-encoded (curl --data-urlencode)."""
    cmd = ["curl", "-sS", "-D", "-", "--unix-socket", broker.admin_socket]
    if json_body is not None:
        cmd += ["http://localhost/", "-H", "Content-Type: application/json", "--data-binary", json_body]
    elif method == "GET":
        cmd.append("http://localhost/?" + urllib.parse.urlencode(items))
    else:
        cmd.append("http://localhost/")
        for key, value in items:
            cmd += ["--data-urlencode", f"{key}={value}"]
    out = subprocess.run(as_uid(cmd, uid, gid), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"curl failed: {out.stderr}"
    head, _, body = out.stdout.replace("\r\n", "\n").partition("\n\n")
    lines = head.split("\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert headers.get("content-type", "").startswith("application/json"), head
    return Reply(int(lines[0].split()[1]), headers, json.loads(body))


def call(broker, action, uid=None, gid=None, instance="local", method="GET", **params):
    items = [("Action", action)] if action is not None else []
    if instance is not None:
        items.append(("MqttInstanceId", instance))
    items += [(k, str(v)) for k, v in params.items()]
    return curl(broker, items, uid=uid, gid=gid, method=method)


def check_error_shape(reply, code, http):
    assert (reply.status, reply.code) == (http, code), reply
    assert set(reply.body) <= {"RequestId", "Code", "Message", "Detail"}, reply
    assert REQUEST_ID.match(reply.body["RequestId"]), reply
    assert reply.body["Message"] == MESSAGES[code], reply


def ok(broker, action, **params):
    reply = call(broker, action, **params)
    assert reply.status == 200, reply
    assert REQUEST_ID.match(reply.body["RequestId"]), reply
    return reply.body


def error(broker, action, code, http, **params):
    reply = call(broker, action, **params)
    check_error_shape(reply, code, http)
    return reply


# ----------------------------------------------------------- devcertctl

class CtlResult:
    def __init__(self, completed):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        try:
            self.body = json.loads(completed.stdout)
        except ValueError:
            self.body = None  # empty, or --output table

    def __repr__(self):
        return f"CtlResult({self.returncode}, {self.stdout!r}, {self.stderr!r})"


def ctl(broker, action, *args, uid=None, gid=None, **params):
    """devcertctl over the broker's socket. Params become --Name value."""
    cmd = [devcertctl_path(), "--socket", broker.admin_socket, action, *args]
    for key, value in params.items():
        cmd += [f"--{key}", str(value)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVCERT_")}
    return CtlResult(subprocess.run(as_uid(cmd, uid, gid), capture_output=True, text=True, timeout=30, env=env))


def ctl_error(broker, action, code, uid=None, **params):
    """devcertctl must exit 1 and print the API's error JSON."""
    result = ctl(broker, action, uid=uid, **params)
    assert result.returncode == 1, result
    assert result.body is not None and result.body["Code"] == code, result
    assert REQUEST_ID.match(result.body["RequestId"]) and result.body["Message"] == MESSAGES[code], result
    return result


def ctl_ok(broker, action, **params):
    result = ctl(broker, action, **params)
    assert result.returncode == 0, result
    return result.body


# ------------------------------------------------- kept-alive HTTP client

class KeepAlive:
    """Many calls over one kept-alive connection (http.client on the UNIX
    socket): the fastest way one process can call the API."""

    def __init__(self, path):
        self.conn = UnixHttpConnection(path)

    def get(self, query):
        self.conn.request("GET", "/?" + (query if isinstance(query, str) else urllib.parse.urlencode(query)))
        response = self.conn.getresponse()
        return response.status, response.getheader("Retry-After"), response.read()

    def post_form(self, items):
        self.conn.request("POST", "/", body=urllib.parse.urlencode(items),
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def close(self):
        self.conn.close()


def raw_exchange(path, request, timeout=5.0):
    """Sends raw bytes on a fresh connection and returns everything the
    server sent back until it closed or a whole response arrived."""
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
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length and len(body) >= int(length.group(1)):
                    break
    except (socket.timeout, ConnectionResetError):
        pass
    finally:
        s.close()
    return data


def parse_raw(answer):
    """(status, JSON body or None) of a raw HTTP answer; (None, None) if none came."""
    if not answer.startswith(b"HTTP/1."):
        return None, None
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


# ------------------------------------------------------- store and devices

def store_snapshot(broker):
    """Every record and change-log entry the API can show, to compare before
    and after calls that must not change anything."""
    def all_pages(action, key):
        records, page = [], 1
        while True:
            data = ok(broker, action, PageNo=page, PageSize=100)["Data"]
            records += data[key]
            if len(data[key]) < 100:
                return records, data["Total"]
            page += 1
    changes = ok(broker, "ListCertificateChanges", PageSize=1000)["Data"]
    return (all_pages("ListDeviceCertificate", "DeviceCertificateVOS"),
            all_pages("ListCaCertificate", "CaCertificateVOS"), changes)


def device_record(broker, ca_sn, device_sn):
    reply = call(broker, "GetDeviceCertificate", CaSn=ca_sn, DeviceSn=device_sn)
    return reply.body["Data"] if reply.status == 200 else None


def wait_until(predicate, timeout=5.0, what="condition"):
    """Bounded polling: returns the predicate's first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_online(broker, ca_sn, device_sn, online=True, timeout=5.0):
    """Waits until the device's record exists and its Online flag is `online`
    (auto-registration commits on the writer thread, after the CONNACK)."""
    return wait_until(lambda: (lambda r: r if r and r["Online"] is online else None)(
        device_record(broker, ca_sn, device_sn)), timeout, f"{ca_sn}/{device_sn} online={online}")


def connect5(broker, device, client_id):
    c = RawMqtt5(broker, device, client_id)
    assert c.connack == 0, f"{client_id} refused with {c.connack:#x}"
    return c


def connack5(broker, device, client_id):
    """The CONNACK reason code a fresh MQTT 5 connection gets."""
    c = RawMqtt5(broker, device, client_id)
    try:
        return c.connack
    finally:
        c.close()


class Raw311:
    """An MQTT 3.1.1 session kept open, to see the broker close it."""

    def __init__(self, broker, device, client_id):
        payload = len(client_id).to_bytes(2, "big") + client_id.encode()
        variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
        raw = socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5)
        self.sock = tls_context(broker.pki, device).wrap_socket(raw, server_hostname="localhost")
        self.sock.sendall(b"\x10" + bytes([len(variable) + len(payload)]) + variable + payload)
        self.connack = b""
        while len(self.connack) < 4:
            chunk = self.sock.recv(4 - len(self.connack))
            if not chunk:
                break
            self.connack += chunk

    def closed_by_broker(self, timeout=5.0):
        """True once the broker closes the connection (no packet may come first)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.sock.close()


# ------------------------------------------------------------ minting

class Minter:
    """Certificates made at test time with the openssl CLI: fresh CAs under
    the harness's root (trusted by the device listener, so their devices
    pass the TLS handshake when they send their chain), verification
    certificates, and many devices sharing one key."""

    def __init__(self, pki, directory):
        self.pki = pki
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.shared_key = self._key("shared")
        self.shared_csr = {}

    def _key(self, name):
        key = str(self.dir / f"{name}.key")
        if not Path(key).exists():
            run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key])
        return key

    def _ext(self, name, text):
        path = self.dir / f"{name}.ext"
        path.write_text(text)
        return str(path)

    def ca(self, name, serial, issuer=None):
        """A CA certificate (CA:TRUE) with its own key, issued by `issuer`
        (default: the harness's root) or self-signed when issuer is False."""
        c = Cert(self.dir, name, serial)
        self._key(name)
        if issuer is False:
            run(["openssl", "req", "-new", "-x509", "-key", c.key, "-out", c.cert, "-subj", f"/CN={name}",
                 "-days", "3650", "-set_serial", f"0x{serial}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
            c.chain = c.cert
            return c
        issuer = issuer or self.pki.root
        csr = str(self.dir / f"{name}.csr")
        run(["openssl", "req", "-new", "-key", c.key, "-out", csr, "-subj", f"/CN={name}"])
        ext = self._ext(name, "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
                              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", issuer.cert, "-CAkey", issuer.key, "-out", c.cert,
             "-days", "3650", "-set_serial", f"0x{serial}", "-extfile", ext])
        return c

    def verification(self, ca, code, serial="79", name=None):
        """A verification certificate: subject CN = `code`, signed by `ca`'s key."""
        name = name or f"verify-{ca.name}-{serial}"
        key = self._key(name)
        csr = str(self.dir / f"{name}.csr")
        crt = str(self.dir / f"{name}.crt")
        run(["openssl", "req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={code}"])
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-out", crt, "-days", "2",
             "-set_serial", f"0x{serial}"])
        return crt

    def device(self, ca, serial, cn=None):
        """A device certificate issued by `ca`, with the shared key; its cert
        file holds the chain (device, then CA) so the listener can verify a
        CA it does not list itself."""
        name = f"{ca.name}-dev-{serial}"
        c = Cert(self.dir, name, serial)
        c.key = self.shared_key
        leaf = str(self.dir / f"{name}.leaf.crt")
        if ca.name not in self.shared_csr:
            csr = str(self.dir / f"shared-{ca.name}.csr")
            run(["openssl", "req", "-new", "-key", self.shared_key, "-out", csr, "-subj", f"/CN=dev-of-{ca.name}"])
            self.shared_csr[ca.name] = csr
        ext = self._ext("device", "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
                                  "authorityKeyIdentifier=keyid\nextendedKeyUsage=clientAuth\n")
        run(["openssl", "x509", "-req", "-in", self.shared_csr[ca.name], "-CA", ca.cert, "-CAkey", ca.key,
             "-out", leaf, "-days", "3650", "-set_serial", f"0x{serial}", "-extfile", ext])
        Path(c.cert).write_text(Path(leaf).read_text() + Path(ca.cert).read_text())
        c.leaf = leaf
        return c


def pem(path):
    return Path(path).read_text()


def change_story(broker, since=0):
    """(Action, CaSn, DeviceSn, OldStatus, NewStatus) of every change-log
    entry after `since`, walking NextSeq pages."""
    out, seq = [], since
    while True:
        data = ok(broker, "ListCertificateChanges", SinceSeq=seq, PageSize=1000)["Data"]
        for e in data["Changes"]:
            out.append((e["Action"], e["CaSn"], e["DeviceSn"], e["OldStatus"], e["NewStatus"]))
        if not data["Changes"]:
            return out
        seq = int(data["NextSeq"])


def last_seq(broker):
    data = ok(broker, "ListCertificateChanges", PageSize=1000)["Data"]
    seq = int(data["NextSeq"])
    while True:
        more = ok(broker, "ListCertificateChanges", SinceSeq=seq, PageSize=1000)["Data"]
        if not more["Changes"]:
            return seq
        seq = int(more["NextSeq"])


def counters(broker):
    return ok(broker, "GetStats")["Data"]["Counters"]


def counter_delta(before, after):
    """Counters that changed, with how much (ignoring GetStats' own calls)."""
    names = set(before) | set(after)
    return {n: after.get(n, 0) - before.get(n, 0) for n in names
            if after.get(n, 0) != before.get(n, 0) and not n.startswith("admin_calls.GetStats.")}
