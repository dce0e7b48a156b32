"""devcertctl on its own: help and argument checks from the operations table,
exit statuses, @file parameters, what it sends over the socket (to a
recording HTTP server on a UNIX socket), --db on a store without a
broker, and --fleet on a fleet database (a PostgreSQL the tests start)."""

import http.server
import json
import os
import pwd
import re
import socketserver
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest

from devcert_harness import devcertctl_path
from pg_harness import PgServer

OPERATIONS = [
    "GetRegisterCode", "RegisterCaCertificate", "ActiveCaCertificate", "InactivateCaCertificate",
    "DeleteCaCertificate", "GetCaCertificate", "ListCaCertificate", "ActiveDeviceCertificate",
    "InactivateDeviceCertificate", "DeleteDeviceCertificate", "GetDeviceCertificate", "ListDeviceCertificate",
    "ListDeviceCertificateByCaSn", "RegisterDeviceCertificate", "RevokeDeviceCertificate",
    "ListCertificateChanges", "GetStats",
]


def ctl(*args, env=None, input=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEVCERT_")}
    full_env.update(env or {})
    return subprocess.run([devcertctl_path(), *args], capture_output=True, text=True, timeout=30, env=full_env,
                          input=input)


def assert_usage_error(result, fragment):
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("devcertctl: ")
    assert fragment in lines[0]


# ------------------------------------------------------- recording server

class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "content_type": self.headers.get("Content-Type"), "body": body})
        status, reply = self.server.replies.pop(0) if getattr(self.server, "replies", None) else self.server.reply
        data = getattr(self.server, "reply_bytes", None) or reply.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _serve
    do_POST = _serve

    def log_message(self, *args):
        pass

    def address_string(self):
        return "unix"


class _UnixHttpServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture
def fake_socket():
    """An HTTP server on a short UNIX socket path that records each request
    and answers with server.reply = (status, body)."""
    directory = tempfile.mkdtemp(prefix="dct-", dir="/tmp")
    path = os.path.join(directory, "a.sock")
    server = _UnixHttpServer(path, _Handler)
    server.requests = []
    server.reply = (200, '{"RequestId":"R","DeviceSn":"3c4d"}')
    server.path = path
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    os.unlink(path)
    os.rmdir(directory)


def sent_params(server):
    assert len(server.requests) == 1
    request = server.requests[0]
    assert request["method"] == "POST"
    assert request["path"] == "/"
    assert request["content_type"] == "application/x-www-form-urlencoded"
    return urllib.parse.parse_qsl(request["body"].decode(), keep_blank_values=True, strict_parsing=True)


# ------------------------------------------------------------------- help

def test_help_lists_every_operation_of_the_table_with_its_description():
    result = ctl("--help")
    assert result.returncode == 0
    operations, fleet_commands = result.stdout.split("operations:\n", 1)[1].split("fleet commands", 1)
    listed = re.findall(r"^  (\w+)  +\S", operations, re.M)
    assert listed == OPERATIONS
    assert re.findall(r"^  (\w+)  +\S", fleet_commands, re.M) == ["InitFleet", "MigrateToFleet", "CheckFleet"]
    assert "InactivateDeviceCertificate  inactivate a device certificate" in result.stdout


def test_operation_help_lists_its_parameters_required_and_optional():
    result = ctl("InactivateDeviceCertificate", "--help")
    assert result.returncode == 0
    assert ("usage: devcertctl [options] InactivateDeviceCertificate --MqttInstanceId <text> --CaSn <serial> "
            "--DeviceSn <serial>") in result.stdout
    assert "permission: mq:UnregisterDeviceCertificate" in result.stdout
    changes = ctl("ListCertificateChanges", "-h")
    assert changes.returncode == 0
    assert "[--SinceSeq <number>]" in changes.stdout
    assert re.search(r"--PageSize <number> +entries to return, 1 to 1000 .*; optional", changes.stdout)
    assert "<pem|@file>" in ctl("RegisterCaCertificate", "--help").stdout


def test_every_operation_has_help():
    for op in OPERATIONS:
        result = ctl(op, "--help")
        assert result.returncode == 0, op
        assert f"usage: devcertctl [options] {op}" in result.stdout


# ----------------------------------------------------------- usage errors

@pytest.mark.parametrize("args,fragment", [
    ([], "no operation given"),
    (["NoSuchOperation"], "unknown operation 'NoSuchOperation'"),
    (["GetStats"], "GetStats needs --MqttInstanceId"),
    (["InactivateDeviceCertificate", "--MqttInstanceId", "local"], "needs --CaSn, --DeviceSn"),
    (["GetStats", "--MqttInstanceId", "local", "--Sn", "0a"], "GetStats has no parameter --Sn"),
    (["GetStats", "--MqttInstanceId", "a", "--MqttInstanceId", "b"], "--MqttInstanceId is given twice"),
    (["GetStats", "--MqttInstanceId"], "--MqttInstanceId needs a value"),
    (["GetStats", "stray"], "unexpected argument 'stray'"),
    (["--output", "xml", "GetStats"], "--output 'xml' is not one of json, table"),
    (["--bogus", "x", "GetStats"], "unknown option --bogus"),
    (["--socket", "/tmp/x.sock", "--db", "/tmp", "GetStats", "--MqttInstanceId", "a"], "exclude each other"),
    (["RegisterDeviceCertificate", "--MqttInstanceId", "a", "--DeviceContent", "@/nonexistent/dev.pem"],
     "--DeviceContent: cannot read '/nonexistent/dev.pem'"),
])
def test_usage_errors_exit_2_with_one_line_and_send_nothing(fake_socket, args, fragment):
    result = ctl("--socket", fake_socket.path, *args) if "--db" not in args else ctl(*args)
    assert_usage_error(result, fragment)
    assert fake_socket.requests == []


def test_an_unreachable_socket_exits_2_naming_the_path():
    result = ctl("--socket", "/tmp/devcert-no-such-dir/a.sock", "GetStats", "--MqttInstanceId", "local")
    assert_usage_error(result, "cannot reach the admin socket '/tmp/devcert-no-such-dir/a.sock'")


def test_a_missing_store_directory_exits_2_naming_it(tmp_path):
    missing = tmp_path / "nothing-here"
    result = ctl("--db", str(missing), "GetStats", "--MqttInstanceId", "local")
    assert_usage_error(result, str(missing))
    assert not missing.exists()


# ------------------------------------------------------ over the socket

def test_a_call_is_posted_form_encoded_with_action_first(fake_socket):
    result = ctl("--socket", fake_socket.path, "InactivateDeviceCertificate", "--MqttInstanceId", "local",
                 "--CaSn", "0a1b", "--DeviceSn=3C:4D")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"RequestId": "R", "DeviceSn": "3c4d"}
    assert sent_params(fake_socket) == [("Action", "InactivateDeviceCertificate"), ("MqttInstanceId", "local"),
                                        ("CaSn", "0a1b"), ("DeviceSn", "3C:4D")]


def test_options_may_follow_the_operation(fake_socket):
    result = ctl("GetStats", "--MqttInstanceId", "local", "--socket", fake_socket.path, "--output", "json")
    assert result.returncode == 0, result.stderr
    assert sent_params(fake_socket) == [("Action", "GetStats"), ("MqttInstanceId", "local")]


def test_the_socket_and_instance_id_may_come_from_the_environment(fake_socket):
    result = ctl("GetStats", env={"DEVCERT_SOCKET": fake_socket.path, "DEVCERT_INSTANCE_ID": "plant-7"})
    assert result.returncode == 0, result.stderr
    assert sent_params(fake_socket) == [("Action", "GetStats"), ("MqttInstanceId", "plant-7")]


def test_an_explicit_instance_id_wins_over_the_environment(fake_socket):
    result = ctl("--socket", fake_socket.path, "GetStats", "--MqttInstanceId", "given",
                 env={"DEVCERT_INSTANCE_ID": "plant-7"})
    assert result.returncode == 0
    assert sent_params(fake_socket) == [("Action", "GetStats"), ("MqttInstanceId", "given")]


def test_file_parameters_read_at_path_and_values_keep_every_character(fake_socket, tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB+/=&%\n-----END CERTIFICATE-----\n"
    (tmp_path / "device.pem").write_text(pem)
    result = ctl("--socket", fake_socket.path, "RegisterDeviceCertificate", "--MqttInstanceId", "a b&c=d",
                 "--DeviceContent", f"@{tmp_path / 'device.pem'}")
    assert result.returncode == 0, result.stderr
    assert sent_params(fake_socket) == [("Action", "RegisterDeviceCertificate"), ("MqttInstanceId", "a b&c=d"),
                                        ("DeviceContent", pem)]


def test_at_is_literal_in_parameters_that_are_not_files(fake_socket):
    result = ctl("--socket", fake_socket.path, "GetStats", "--MqttInstanceId", "@local")
    assert result.returncode == 0
    assert sent_params(fake_socket) == [("Action", "GetStats"), ("MqttInstanceId", "@local")]


def test_an_api_error_exits_1_and_still_prints_the_error_json(fake_socket):
    error = {"RequestId": "R", "Code": "FindDeviceBySnError", "Message": "The device certificate is not found"}
    fake_socket.reply = (500, json.dumps(error))
    result = ctl("--socket", fake_socket.path, "--output", "table", "GetDeviceCertificate", "--MqttInstanceId",
                 "local", "--CaSn", "0a", "--DeviceSn", "0b")
    assert result.returncode == 1
    assert json.loads(result.stdout) == error
    assert result.stderr == ""


def test_the_table_output_aligns_list_records_and_leaves_out_pem(fake_socket):
    fake_socket.reply = (200, json.dumps({"RequestId": "R", "Data": {
        "DeviceCertificateVOS": [
            {"CaSn": "0c01", "DeviceSn": "0a", "Status": "1", "DeviceContent": "-----BEGIN..."},
            {"CaSn": "0c01", "DeviceSn": "0b0b0b", "Status": "0", "DeviceContent": "-----BEGIN..."},
        ],
        "PageNo": 1, "PageSize": 2, "Total": 5}}))
    result = ctl("--socket", fake_socket.path, "--output", "table", "ListDeviceCertificate", "--MqttInstanceId",
                 "local", "--PageNo", "1", "--PageSize", "2")
    assert result.returncode == 0
    assert result.stdout == ("CaSn  DeviceSn  Status\n"
                             "0c01  0a        1\n"
                             "0c01  0b0b0b    0\n"
                             "\n"
                             "PageNo 1  PageSize 2  Total 5\n")


def test_the_table_output_of_one_record_is_a_field_list(fake_socket):
    fake_socket.reply = (200, json.dumps({"RequestId": "R", "Data": {"Sn": "0c01", "CaContent": "x" * 10}}))
    result = ctl("--socket", fake_socket.path, "--output", "table", "GetCaCertificate", "--MqttInstanceId",
                 "local", "--Sn", "0c01")
    assert result.returncode == 0
    assert result.stdout == ("RequestId       R\n"
                             "Data.Sn         0c01\n"
                             "Data.CaContent  (10 bytes of PEM; --output json shows it)\n")


def test_the_table_output_shows_control_characters_from_certificates_as_visible_escapes(fake_socket):
    # A CN is whatever the certificate's issuer put there: ESC and CR must
    # not reach the operator's terminal (ESC [2J clears it, CR rewrites the
    # line), nor C1 controls, DEL or bytes that are not UTF-8.
    name = "dev\x1b[2J\rice\x7f\u009b31m\\ok \u00e9"
    fake_socket.reply = (200, json.dumps({"RequestId": "R", "Data": {
        "DeviceCertificateVOS": [{"CaSn": "0c01", "DeviceSn": "0a", "DeviceName": name}],
        "PageNo": 1, "PageSize": 1, "Total": 1}}, ensure_ascii=False))
    listed = ctl("--socket", fake_socket.path, "--output", "table", "ListDeviceCertificate", "--MqttInstanceId",
                 "local", "--PageNo", "1", "--PageSize", "1")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1] == "0c01  0a        dev\\x1b[2J\\rice\\x7f\\u009b31m\\\\ok \u00e9"

    fake_socket.reply = (200, json.dumps({"RequestId": "R", "Data": {"DeviceName": "a\rb\x1bc\nd\te"}}))
    one = ctl("--socket", fake_socket.path, "--output", "table", "GetDeviceCertificate", "--MqttInstanceId",
              "local", "--CaSn", "0c01", "--DeviceSn", "0a")
    assert one.returncode == 0
    assert one.stdout.splitlines()[1] == "Data.DeviceName  a\\rb\\x1bc\\nd\\te"
    for out in (listed.stdout, one.stdout):
        assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in out), repr(out)


def test_the_json_output_escapes_del_and_c1_controls_and_keeps_the_values(fake_socket):
    # Raw DEL and C1 are legal in a JSON string, but U+009B is CSI to a
    # terminal: the JSON output escapes them, and still parses to the same value.
    name = "dev\x1b[2J\x7f\u009b31m\u0085 \u00e9\u00a0"
    fake_socket.reply = (200, json.dumps({"RequestId": "R", "Data": {"DeviceName": name}}, ensure_ascii=False))
    result = ctl("--socket", fake_socket.path, "--output", "json", "GetDeviceCertificate", "--MqttInstanceId",
                 "local", "--CaSn", "0c01", "--DeviceSn", "0a")
    assert result.returncode == 0
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in result.stdout), repr(result.stdout)
    assert "\\u009b31m" in result.stdout and "\\u007f" in result.stdout and "\\u0085" in result.stdout
    assert "\u00e9\u00a0" in result.stdout  # printable non-ASCII stays as it is
    assert json.loads(result.stdout)["Data"]["DeviceName"] == name


def test_the_table_output_escapes_bytes_that_are_not_utf8(fake_socket):
    # Not JSON (the parser refuses the bytes), so shown as received: escaped.
    fake_socket.reply_bytes = b'{"RequestId":"R","Data":{"DeviceName":"a\xff\x9b\xc3b\x1b"}}'
    result = subprocess.run([devcertctl_path(), "--socket", fake_socket.path, "--output", "table",
                             "GetDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0c01", "--DeviceSn",
                             "0a"], capture_output=True, timeout=30)
    assert result.returncode == 0
    assert b"a\\xff\\x9b\\xc3b\\x1b" in result.stdout
    text = result.stdout.decode("utf-8")
    assert not any(ord(c) < 0x20 and c != "\n" or 0x7f <= ord(c) < 0xa0 for c in text), repr(text)


def test_all_follows_next_token_to_the_end_and_prints_one_list(fake_socket):
    def page(records, token=None):
        data = {"DeviceCertificateVOS": [{"CaSn": "0c01", "DeviceSn": sn} for sn in records], "PageSize": 2,
                "Total": 5}
        if token:
            data["NextToken"] = token
        return (200, json.dumps({"RequestId": "R", "Data": data}))
    fake_socket.replies = [page(["01", "02"], "tok-1"), page(["03", "04"], "tok-2"), page(["05"])]
    result = ctl("--socket", fake_socket.path, "--all", "ListDeviceCertificate", "--MqttInstanceId", "local",
                 "--PageSize", "2")
    assert result.returncode == 0, result.stderr
    sent = [urllib.parse.parse_qsl(r["body"].decode()) for r in fake_socket.requests]
    assert [dict(s).get("PageNo") for s in sent] == ["1", None, None]
    assert [dict(s).get("NextToken") for s in sent] == [None, "tok-1", "tok-2"]
    out = json.loads(result.stdout)
    assert [d["DeviceSn"] for d in out["Data"]["DeviceCertificateVOS"]] == ["01", "02", "03", "04", "05"]
    assert out["Data"]["Total"] == 5


def test_all_walks_by_page_number_when_pages_carry_no_token(fake_socket):
    # As the fleet store answers: PageNo pages, no NextToken.
    def page(records):
        data = {"CaCertificateVOS": [{"Sn": sn} for sn in records], "PageSize": 2, "Total": 5}
        return (200, json.dumps({"RequestId": "R", "Data": data}))
    fake_socket.replies = [page(["01", "02"]), page(["03", "04"]), page(["05"])]
    result = ctl("--socket", fake_socket.path, "--all", "ListCaCertificate", "--MqttInstanceId", "local",
                 "--PageSize", "2")
    assert result.returncode == 0, result.stderr
    sent = [dict(urllib.parse.parse_qsl(r["body"].decode())) for r in fake_socket.requests]
    assert [s.get("PageNo") for s in sent] == ["1", "2", "3"]
    assert [d["Sn"] for d in json.loads(result.stdout)["Data"]["CaCertificateVOS"]] == ["01", "02", "03", "04", "05"]


def test_all_is_refused_for_operations_that_are_not_lists_and_with_a_page_number(fake_socket):
    assert_usage_error(ctl("--socket", fake_socket.path, "--all", "GetStats", "--MqttInstanceId", "local"),
                       "--all walks lists")
    assert_usage_error(ctl("--socket", fake_socket.path, "--all", "ListCaCertificate", "--MqttInstanceId", "local",
                           "--PageNo", "2"), "leave out --PageNo")
    assert fake_socket.requests == []


# ------------------------------------------------------------------- --db

@pytest.fixture
def store_dir():
    directory = tempfile.mkdtemp(prefix="dcdb-", dir="/tmp")
    yield directory
    subprocess.run(["rm", "-rf", directory], check=True)


def db(store, *args, **kw):
    return ctl("--db", store, *args, **kw)


def test_db_mode_runs_the_whole_lifecycle_without_a_broker(store_dir, pki):
    code = db(store_dir, "GetRegisterCode", "--MqttInstanceId", "local")
    assert code.returncode == 0, code.stderr
    register_code = json.loads(code.stdout)["RegisterCode"]
    verification = pki.device("0f01", cn=register_code, issuer=pki.ca)

    registered = db(store_dir, "RegisterCaCertificate", "--MqttInstanceId", "local", "--CaName", "devices",
                    "--CaContent", f"@{pki.ca.cert}", "--VerificationContent", f"@{verification.cert}")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert json.loads(registered.stdout)["Sn"] == pki.ca.serial

    device = pki.device("0d01")
    added = db(store_dir, "RegisterDeviceCertificate", "--MqttInstanceId", "local", "--DeviceContent",
               f"@{device.cert}")
    assert added.returncode == 0, added.stdout
    assert json.loads(added.stdout)["DeviceSn"] == "0d01"

    inactivated = db(store_dir, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0C01",
                     "--DeviceSn", "0x0d01")
    assert inactivated.returncode == 0, inactivated.stdout
    assert json.loads(inactivated.stdout)["DeviceSn"] == "0d01"

    record = json.loads(db(store_dir, "GetDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0c01",
                           "--DeviceSn", "0d01").stdout)
    assert record["Data"]["Status"] == "0"

    table = db(store_dir, "--output", "table", "ListDeviceCertificateByCaSn", "--MqttInstanceId", "local",
               "--CaSn", "0c01", "--PageNo", "1", "--PageSize", "10")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()[:2]
    columns = header.split()
    assert "DeviceContent" not in columns
    assert row.split()[columns.index("DeviceSn")] == "0d01"
    assert row.split()[columns.index("Status")] == "0"
    assert "Total 1" in table.stdout

    changes = json.loads(db(store_dir, "ListCertificateChanges", "--MqttInstanceId", "local").stdout)
    callers = {entry["Caller"] for entry in changes["Data"]["Changes"]}
    assert callers == {f"devcertctl uid={os.getuid()}({pwd.getpwuid(os.getuid()).pw_name})"}
    actions = [entry["Action"] for entry in changes["Data"]["Changes"]]
    assert "InactivateDeviceCertificate" in actions


def test_db_mode_refuses_another_instance_id_with_exit_1(store_dir):
    result = db(store_dir, "GetRegisterCode", "--MqttInstanceId", "elsewhere")
    assert result.returncode == 1
    assert json.loads(result.stdout)["Code"] == "MqttInstanceNotFound"


def test_db_mode_reports_api_errors_with_exit_1_and_changes_nothing(store_dir):
    bad = db(store_dir, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "zz",
             "--DeviceSn", "01")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["Code"] == "ParameterFieldCheckFailed"
    missing = db(store_dir, "InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0a",
                 "--DeviceSn", "01")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["Code"] == "FindDeviceBySnError"
    changes = json.loads(db(store_dir, "ListCertificateChanges", "--MqttInstanceId", "local").stdout)
    assert changes["Data"]["Changes"] == []


# ---------------------------------------------------------------- --fleet

SECRET = "Sup3r-Secret-pw"


@pytest.fixture(scope="module")
def pg_server():
    with PgServer() as pg:
        yield pg


@pytest.fixture
def fleet_db(pg_server):
    """A fresh database holding the fleet schema and the instance plant-1."""
    conninfo = pg_server.create_database()
    created = fleet(conninfo, "InitFleet", "--MqttInstanceId", "plant-1")
    assert created.returncode == 0, created.stderr
    return conninfo


def fleet(conninfo, *args, **kw):
    return ctl("--fleet", conninfo, *args, **kw)


def assert_no_secret(result):
    assert SECRET not in result.stdout + result.stderr


def test_init_fleet_creates_the_schema_and_instance_and_is_idempotent(pg_server):
    conninfo = pg_server.create_database()
    first = fleet(conninfo, "InitFleet", "--MqttInstanceId", "plant-1")
    assert first.returncode == 0, first.stderr
    created = json.loads(first.stdout)
    assert created["InstanceId"] == "plant-1"
    assert created["SchemaVersion"] == 1
    assert re.fullmatch(r"[0-9a-f-]{8,}", created["Epoch"]), created
    assert created["LastSeq"] == 0
    again = fleet(conninfo, "InitFleet", "--MqttInstanceId", "plant-1")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == created  # the same instance, the same epoch
    assert pg_server.psql(conninfo, "SELECT count(*) FROM devcert.instances") == "1"
    other = fleet(conninfo, "InitFleet", "--MqttInstanceId", "plant-2")
    assert other.returncode == 0
    assert json.loads(other.stdout)["Epoch"] != created["Epoch"]


def test_fleet_mode_runs_operations_on_the_fleet_database(fleet_db, pki, pg_server):
    code = fleet(fleet_db, "GetRegisterCode", "--MqttInstanceId", "plant-1")
    assert code.returncode == 0, code.stderr
    # A serial of its own: the session's PKI keeps certificates by serial, and the CN differs.
    verification = pki.device("0f21", cn=json.loads(code.stdout)["RegisterCode"], issuer=pki.ca)
    registered = fleet(fleet_db, "RegisterCaCertificate", "--MqttInstanceId", "plant-1", "--CaName", "devices",
                       "--CaContent", f"@{pki.ca.cert}", "--VerificationContent", f"@{verification.cert}")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    assert json.loads(registered.stdout)["Sn"] == pki.ca.serial
    added = fleet(fleet_db, "RegisterDeviceCertificate", "--MqttInstanceId", "plant-1",
                  "--DeviceContent", f"@{pki.device('0d01').cert}")
    assert added.returncode == 0, added.stdout
    inactivated = fleet(fleet_db, "InactivateDeviceCertificate", "--MqttInstanceId", "plant-1", "--CaSn", "0c01",
                        "--DeviceSn", "0d01")
    assert inactivated.returncode == 0, inactivated.stdout

    # In PostgreSQL, for every broker of the fleet to follow.
    assert pg_server.psql(fleet_db, "SELECT last_seq FROM devcert.instances") == "3"
    record = json.loads(fleet(fleet_db, "GetDeviceCertificate", "--MqttInstanceId", "plant-1", "--CaSn", "0c01",
                              "--DeviceSn", "0d01").stdout)
    assert record["Data"]["Status"] == "0"
    listed = fleet(fleet_db, "--all", "ListDeviceCertificate", "--MqttInstanceId", "plant-1")
    assert listed.returncode == 0, listed.stdout
    assert [d["DeviceSn"] for d in json.loads(listed.stdout)["Data"]["DeviceCertificateVOS"]] == ["0d01"]
    changes = json.loads(fleet(fleet_db, "ListCertificateChanges", "--MqttInstanceId", "plant-1").stdout)
    callers = {entry["Caller"] for entry in changes["Data"]["Changes"]}
    assert callers == {f"devcertctl uid={os.getuid()}({pwd.getpwuid(os.getuid()).pw_name})"}
    stats = json.loads(fleet(fleet_db, "GetStats", "--MqttInstanceId", "plant-1").stdout)["Data"]
    assert (stats["CaCount"], stats["DeviceCount"]) == (1, 1)
    assert "Fleet" not in stats  # not a fleet member: no replica to report on

    # API errors are answers, as with --db.
    missing = fleet(fleet_db, "GetDeviceCertificate", "--MqttInstanceId", "plant-1", "--CaSn", "0c01",
                    "--DeviceSn", "0d02")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["Code"] == "FindDeviceBySnError"
    token = fleet(fleet_db, "ListCaCertificate", "--MqttInstanceId", "plant-1", "--NextToken", "x", "--PageSize", "10")
    assert token.returncode == 1
    assert json.loads(token.stdout)["Detail"] == "NextToken is not supported on the fleet store yet; use PageNo"


def test_fleet_mode_takes_the_connection_string_from_the_environment(fleet_db):
    result = ctl("GetStats", "--MqttInstanceId", "plant-1", env={"DEVCERT_FLEET": fleet_db})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Data"]["CaCount"] == 0


def test_an_instance_the_fleet_does_not_hold_exits_2_naming_it(fleet_db):
    result = fleet(fleet_db, "GetStats", "--MqttInstanceId", "elsewhere")
    assert_usage_error(result, "the fleet database holds no instance 'elsewhere'")
    assert "InitFleet" in result.stderr


def test_a_database_without_the_schema_or_with_a_newer_one_exits_2(pg_server, fleet_db):
    empty = pg_server.create_database()
    assert_usage_error(fleet(empty, "GetStats", "--MqttInstanceId", "plant-1"), "has no devcert schema")
    pg_server.psql(fleet_db, "UPDATE devcert.schema_version SET version = 99")
    assert_usage_error(fleet(fleet_db, "GetStats", "--MqttInstanceId", "plant-1"), "has schema version 99")
    assert_usage_error(fleet(fleet_db, "InitFleet", "--MqttInstanceId", "plant-1"), "schema version 99")


def test_an_unreachable_fleet_exits_2_with_one_line_and_no_password(pg_server, fleet_db):
    conninfo = f"{fleet_db} password={SECRET}"
    pg_server.stop()
    try:
        down = fleet(conninfo, "InactivateCaCertificate", "--MqttInstanceId", "plant-1", "--Sn", "0c01")
        init = fleet(conninfo, "InitFleet", "--MqttInstanceId", "plant-1")
    finally:
        pg_server.start()
    for result in (down, init):
        assert_usage_error(result, "fleet database unreachable: cannot connect")
        assert pg_server.dir in result.stderr  # names the place
        assert_no_secret(result)
    uri = fleet(f"postgresql://devcert:{SECRET}@/x?host=/tmp/devcert-no-such-dir&port=1", "GetStats",
                "--MqttInstanceId", "plant-1")
    assert_usage_error(uri, "fleet database unreachable")
    assert_no_secret(uri)


@pytest.mark.parametrize("conninfo", [
    f"host='unterminated password={SECRET}",
    f"host=x password={SECRET} nosuchkeyword=1",
    f"postgresql://u:{SECRET}@host/db?nosuchparameter=1",
])
def test_a_wrong_connection_string_exits_2_without_quoting_it(conninfo):
    for args in (["GetStats", "--MqttInstanceId", "x"], ["InitFleet", "--MqttInstanceId", "x"]):
        result = fleet(conninfo, *args)
        assert_usage_error(result, "connection string cannot be parsed")
        assert_no_secret(result)


@pytest.mark.parametrize("args,fragment", [
    (["InitFleet", "--MqttInstanceId", "x"], "InitFleet works on a fleet database: give --fleet CONNINFO"),
    (["--fleet", "host=x", "InitFleet"], "InitFleet needs --MqttInstanceId"),
    (["--fleet", "host=x", "InitFleet", "--MqttInstanceId", "x", "--Sn", "0a"], "InitFleet has no parameter --Sn"),
    (["--fleet", "host=x", "--db", "/tmp", "InitFleet", "--MqttInstanceId", "x"], "InitFleet takes --fleet only"),
    (["--fleet", "host=x", "--db", "/tmp", "GetStats", "--MqttInstanceId", "x"], "exclude each other"),
    (["--fleet", "", "GetStats", "--MqttInstanceId", "x"], "--fleet needs a connection string"),
])
def test_fleet_usage_errors_exit_2_with_one_line(args, fragment):
    assert_usage_error(ctl(*args), fragment)


def test_init_fleet_has_help():
    result = ctl("InitFleet", "--help")
    assert result.returncode == 0
    assert "usage: devcertctl --fleet CONNINFO InitFleet --MqttInstanceId <text>" in result.stdout


def test_migrate_to_fleet_moves_a_store_once_and_check_fleet_tells_a_store_from_a_replica(
        fleet_db, store_dir, pki, pg_server):
    code = db(store_dir, "GetRegisterCode", "--MqttInstanceId", "local")
    verification = pki.device("0f31", cn=json.loads(code.stdout)["RegisterCode"], issuer=pki.ca)
    registered = db(store_dir, "RegisterCaCertificate", "--MqttInstanceId", "local", "--CaName", "devices",
                    "--CaContent", f"@{pki.ca.cert}", "--VerificationContent", f"@{verification.cert}")
    assert registered.returncode == 0, registered.stdout + registered.stderr
    for serial in ("0d31", "0d32"):
        added = db(store_dir, "RegisterDeviceCertificate", "--MqttInstanceId", "local", "--DeviceContent",
                   f"@{pki.device(serial).cert}")
        assert added.returncode == 0, added.stdout
    assert db(store_dir, "RevokeDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", "0c01",
              "--DeviceSn", "0d32").returncode == 0

    moved = ctl("--db", store_dir, "--fleet", fleet_db, "MigrateToFleet", "--MqttInstanceId", "plant-1")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    report = json.loads(moved.stdout)
    assert (report["Cas"], report["Devices"], report["Changes"]) == (1, 2, 4)
    revoked = json.loads(fleet(fleet_db, "GetDeviceCertificate", "--MqttInstanceId", "plant-1", "--CaSn", "0c01",
                               "--DeviceSn", "0d32").stdout)
    assert revoked["Data"]["Status"] == "2"
    history = json.loads(fleet(fleet_db, "ListCertificateChanges", "--MqttInstanceId", "plant-1").stdout)
    assert [c["Seq"] for c in history["Data"]["Changes"]] == ["1", "2", "3", "4"]

    # Once only: the instance holds records now, and nothing changes.
    again = ctl("--db", store_dir, "--fleet", fleet_db, "MigrateToFleet", "--MqttInstanceId", "plant-1")
    assert again.returncode == 1
    assert json.loads(again.stdout)["Code"] == "MigrationRefused"
    assert pg_server.psql(fleet_db, "SELECT last_seq FROM devcert.instances") == "4"

    # A standalone store is no replica: CheckFleet says so, exit 1.
    checked = ctl("--db", store_dir, "--fleet", fleet_db, "CheckFleet", "--MqttInstanceId", "plant-1")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    check = json.loads(checked.stdout)
    assert check["Consistent"] is False
    assert any("never been loaded" in d for d in check["Differences"]), check


@pytest.mark.parametrize("command", ["MigrateToFleet", "CheckFleet"])
def test_migrate_and_check_need_a_store_and_a_fleet(command, store_dir):
    assert_usage_error(ctl("--fleet", "host=x", command, "--MqttInstanceId", "x"),
                       f"{command} works on a store and a fleet: give --db DIR")
    assert_usage_error(ctl("--db", store_dir, command, "--MqttInstanceId", "x"),
                       f"{command} works on a fleet database: give --fleet CONNINFO")
    missing = ctl("--db", "/nonexistent/devcert", "--fleet", "host=/nonexistent", command, "--MqttInstanceId", "x")
    assert missing.returncode == 2
