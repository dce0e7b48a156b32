"""InactivateDeviceCertificate through the real broker: what connected MQTT 5
and MQTT 3.1.1 devices see, idempotency, serials in any accepted form, the
response and audit line shapes, every error row of its table through curl
and through devcertctl, and the counters GetStats reports for all of it.

One broker serves the whole module; each test uses its own device serials."""

import os
import shutil
import subprocess
import time

import pytest

from admin_helpers import (ADMINISTRATIVE_ACTION, NOBODY, NOT_AUTHORIZED, REQUEST_ID, UNNAMED_UID, Raw311,
                           call, check_error_shape, connack5, connect5, counter_delta, counters, ctl, ctl_error,
                           curl, device_record, error, module_broker, ok, store_snapshot, wait_online, wait_until)
from devcert_harness import mosquitto_pub, raw_connect_v311

CA = "0c01"  # the harness's registered device CA


@pytest.fixture(scope="module")
def b(tmp_path_factory, pki):
    broker = module_broker(tmp_path_factory, pki, "inactivate")
    yield broker
    broker.stop()


def registered(b, pki, serial):
    """A device of the registered CA, registered active through the API."""
    dev = pki.device(serial)
    reply = call(b, "RegisterDeviceCertificate", method="POST", DeviceContent=dev.pem())
    assert reply.status == 200 and reply.body["DeviceSn"] == serial, reply
    return dev


def audit_line(b, request_id):
    """The broker log line of the call with this RequestId (it is logged on
    the broker thread, shortly after the response)."""
    def find():
        return next((line for line in b.log().splitlines() if line.endswith(f"request_id={request_id}")), None)
    return wait_until(find, 5.0, f"the audit line of {request_id}")


# ------------------------------------------------------ connected devices

def test_a_connected_mqtt5_device_gets_disconnect_0x98_and_its_reconnect_gets_connack_0x87(b, pki):
    dev = pki.device("a501")
    session = connect5(b, dev, "inact-a501")
    try:
        wait_online(b, CA, "a501")
        before = counters(b)
        body = ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a501")
        answered = time.monotonic()
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
        kicked_after = time.monotonic() - answered
    finally:
        session.close()
    assert set(body) == {"RequestId", "DeviceSn"} and body["DeviceSn"] == "a501"
    # The kick is promised within 10 ms; the bound here leaves room for a
    # loaded two-core machine while still catching a kick left to the
    # broker's periodic tick or to the next keep-alive.
    assert kicked_after < 1.0, f"kicked {kicked_after * 1000:.0f} ms after the response"

    assert connack5(b, dev, "inact-a501") == NOT_AUTHORIZED
    # A stock client sees the same refusal.
    pub = mosquitto_pub(b, dev, "inact-a501-pub", version="mqttv5")
    assert pub.returncode != 0 and "Not authorized" in pub.stderr, pub.stderr
    assert wait_online(b, CA, "a501", online=False)["Status"] == "0"

    delta = counter_delta(before, counters(b))
    assert delta == {"kicks": 1, "connections_refused.device_inactive": 2,
                     "admin_calls.InactivateDeviceCertificate.Success": 1,
                     "admin_calls.GetDeviceCertificate.Success": delta.get("admin_calls.GetDeviceCertificate.Success")}
    assert b.count_in_log("devcert: kicked client 'inact-a501' (CaSn 0c01, DeviceSn a501): device no longer active") == 1


def test_a_connected_mqtt311_device_is_closed_and_its_reconnect_gets_connack_5(b, pki):
    dev = pki.device("a311")
    session = Raw311(b, dev, "inact-a311")
    try:
        assert session.connack == b"\x20\x02\x00\x00"
        wait_online(b, CA, "a311")
        before = counters(b)
        ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a311")
        assert session.closed_by_broker(5), "the broker left the MQTT 3.1.1 session open"
    finally:
        session.close()
    assert raw_connect_v311(b, dev, "inact-a311") == b"\x20\x02\x00\x05"
    pub = mosquitto_pub(b, dev, "inact-a311-pub", version="mqttv311")
    assert pub.returncode != 0 and "not authorised" in pub.stderr, pub.stderr
    delta = counter_delta(before, counters(b))
    assert delta["kicks"] == 1 and delta["connections_refused.device_inactive"] == 2


def test_inactivating_one_device_leaves_the_other_sessions_of_its_ca_connected(b, pki):
    target, neighbour = pki.device("a401"), pki.device("a402")
    t, n = connect5(b, target, "inact-a401"), connect5(b, neighbour, "inact-a402")
    try:
        wait_online(b, CA, "a401")
        ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a401")
        assert t.wait_disconnect(5) == ADMINISTRATIVE_ACTION
        assert n.still_connected(0.3)
    finally:
        t.close()
        n.close()


# ---------------------------------------------------------- idempotency

def test_inactivating_an_inactive_device_answers_the_same_and_writes_no_change(b, pki):
    registered(b, pki, "a502")
    first = ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a502")
    snapshot = store_snapshot(b)
    second = ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a502")
    assert set(first) == set(second) == {"RequestId", "DeviceSn"}
    assert first["DeviceSn"] == second["DeviceSn"] == "a502"
    assert first["RequestId"] != second["RequestId"]
    assert store_snapshot(b) == snapshot


def test_inactivating_a_revoked_device_succeeds_and_leaves_it_revoked(b, pki):
    dev = registered(b, pki, "a503")
    ok(b, "RevokeDeviceCertificate", CaSn=CA, DeviceSn="a503")
    snapshot = store_snapshot(b)
    body = ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a503")
    assert set(body) == {"RequestId", "DeviceSn"} and body["DeviceSn"] == "a503"
    assert device_record(b, CA, "a503")["Status"] == "2"
    assert store_snapshot(b) == snapshot
    assert connack5(b, dev, "inact-a503") == NOT_AUTHORIZED


# ------------------------------------------------ serials in other forms

@pytest.mark.parametrize("ca_sn,device_sn,canonical", [
    ("0C01", "A5C1", "a5c1"),
    ("0x0c01", "0xa5c2", "a5c2"),
    ("0C:01", "A5:C3", "a5c3"),
    ("00000c01", "0000a5c4", "a5c4"),
    ("c01", "0X00A5C5", "a5c5"),
])
def test_serials_in_any_accepted_form_are_answered_and_logged_in_canonical_form(b, pki, ca_sn, device_sn, canonical):
    registered(b, pki, canonical)
    body = ok(b, "InactivateDeviceCertificate", CaSn=ca_sn, DeviceSn=device_sn)
    assert body["DeviceSn"] == canonical
    assert device_record(b, CA, canonical)["Status"] == "0"
    line = audit_line(b, body["RequestId"])
    assert line == (f"devcert: admin uid=0(root) | InactivateDeviceCertificate | ca_sn=0c01 device_sn={canonical} "
                    f"| ok | request_id={body['RequestId']}")


def test_the_response_has_a_fresh_uppercase_uuid_and_the_audit_line_carries_it(b, pki):
    registered(b, pki, "a504")
    ids = set()
    for _ in range(5):
        body = ok(b, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a504")
        assert REQUEST_ID.match(body["RequestId"])
        # Version 4 UUID: the version nibble is 4 and the variant is 8, 9, A or B.
        assert body["RequestId"][14] == "4" and body["RequestId"][19] in "89AB", body["RequestId"]
        ids.add(body["RequestId"])
        assert "| InactivateDeviceCertificate | ca_sn=0c01 device_sn=a504 | ok |" in audit_line(b, body["RequestId"])
    assert len(ids) == 5


# ------------------------------------------------------------ error rows

LONG_CA = "0c" * 64 + "01"  # 130 hex digits: over the 128-byte limit

# (what, query items after Action, HTTP, Code)
ERROR_ROWS = [
    ("MqttInstanceId missing", [("CaSn", CA), ("DeviceSn", "a600")], 400, "ParameterFieldCheckFailed"),
    ("CaSn missing", [("MqttInstanceId", "local"), ("DeviceSn", "a600")], 400, "ParameterFieldCheckFailed"),
    ("DeviceSn missing", [("MqttInstanceId", "local"), ("CaSn", CA)], 400, "ParameterFieldCheckFailed"),
    ("MqttInstanceId empty", [("MqttInstanceId", ""), ("CaSn", CA), ("DeviceSn", "a600")], 400,
     "ParameterFieldCheckFailed"),
    ("CaSn empty", [("MqttInstanceId", "local"), ("CaSn", ""), ("DeviceSn", "a600")], 400,
     "ParameterFieldCheckFailed"),
    ("DeviceSn empty", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "")], 400,
     "ParameterFieldCheckFailed"),
    ("DeviceSn not hex", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a6zz")], 400,
     "ParameterFieldCheckFailed"),
    ("DeviceSn zero", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "00")], 400,
     "ParameterFieldCheckFailed"),
    ("DeviceSn misplaced colon", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a60:0")], 400,
     "ParameterFieldCheckFailed"),
    ("CaSn over 128 bytes", [("MqttInstanceId", "local"), ("CaSn", LONG_CA), ("DeviceSn", "a600")], 400,
     "ParameterFieldCheckFailed"),
    ("CaSn duplicated", [("MqttInstanceId", "local"), ("CaSn", CA), ("CaSn", CA), ("DeviceSn", "a600")], 400,
     "ParameterFieldCheckFailed"),
    ("DeviceSn duplicated", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a600"),
                             ("DeviceSn", "a600")], 400, "ParameterFieldCheckFailed"),
    ("unknown parameter", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a600"), ("Force", "1")], 400,
     "ParameterFieldCheckFailed"),
    ("another instance", [("MqttInstanceId", "post-cn-elsewhere"), ("CaSn", CA), ("DeviceSn", "a600")], 500,
     "MqttInstanceNotFound"),
    ("instance id in other case", [("MqttInstanceId", "LOCAL"), ("CaSn", CA), ("DeviceSn", "a600")], 500,
     "MqttInstanceNotFound"),
    ("no such device", [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a6ff")], 500,
     "FindDeviceBySnError"),
    ("no such CA", [("MqttInstanceId", "local"), ("CaSn", "0dead1"), ("DeviceSn", "a600")], 500,
     "FindDeviceBySnError"),
]


@pytest.mark.parametrize("what,items,http,code", ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS])
def test_each_error_row_is_answered_through_curl_with_its_code_status_and_message(b, pki, what, items, http, code):
    registered(b, pki, "a600") if device_record(b, CA, "a600") is None else None
    before_store, before = store_snapshot(b), counters(b)
    for method in ("GET", "POST"):
        # Refusals beyond 10 a second per uid are summed into one line, not
        # audited one by one: keep this walk well under that rate.
        time.sleep(0.3)
        reply = curl(b, [("Action", "InactivateDeviceCertificate")] + items, method=method)
        check_error_shape(reply, code, http)
        line = audit_line(b, reply.body["RequestId"])
        assert line.startswith("devcert: admin uid=0(root) | InactivateDeviceCertificate | "), line
        assert f"| error {code}" in line, line
    assert store_snapshot(b) == before_store
    assert device_record(b, CA, "a600")["Status"] == "1"
    delta = counter_delta(before, counters(b))
    assert delta.get(f"admin_calls.InactivateDeviceCertificate.{code}") == 2, delta


def test_the_detail_names_the_parameter_refused_and_why(b):
    reply = error(b, "InactivateDeviceCertificate", "ParameterFieldCheckFailed", 400, CaSn=CA)
    assert reply.body["Detail"].startswith("DeviceSn"), reply
    reply = error(b, "InactivateDeviceCertificate", "ParameterFieldCheckFailed", 400, CaSn="0c 01", DeviceSn="a600")
    assert reply.body["Detail"].startswith("CaSn"), reply
    reply = error(b, "InactivateDeviceCertificate", "ParameterFieldCheckFailed", 400, CaSn=LONG_CA, DeviceSn="a600")
    assert reply.body["Detail"].startswith("CaSn"), reply


@pytest.mark.parametrize("items", [
    [("Action", "FlyToTheMoon"), ("MqttInstanceId", "local")],
    [("Action", "inactivateDeviceCertificate"), ("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a600")],
    [("Action", ""), ("MqttInstanceId", "local")],
    [("MqttInstanceId", "local"), ("CaSn", CA), ("DeviceSn", "a600")],
], ids=["unknown", "wrong case", "empty", "missing"])
def test_an_unknown_or_missing_action_is_invalid_action_not_found(b, items):
    before = counters(b)
    reply = curl(b, items)
    check_error_shape(reply, "InvalidAction.NotFound", 404)
    assert counter_delta(before, counters(b)) == {"admin_calls.unknown.InvalidAction.NotFound": 1}


def test_the_action_is_checked_before_the_parameters_and_the_parameters_before_the_instance(b):
    reply = curl(b, [("Action", "NoSuchThing"), ("CaSn", "zz")])
    check_error_shape(reply, "InvalidAction.NotFound", 404)
    reply = call(b, "InactivateDeviceCertificate", instance="elsewhere", CaSn="zz", DeviceSn="a600")
    check_error_shape(reply, "ParameterFieldCheckFailed", 400)
    reply = call(b, "InactivateDeviceCertificate", instance="elsewhere", CaSn=CA, DeviceSn="a6ff")
    check_error_shape(reply, "MqttInstanceNotFound", 500)


def test_a_caller_without_the_permission_is_refused_before_its_parameters_are_read(b, pki):
    registered(b, pki, "a601") if device_record(b, CA, "a601") is None else None
    for uid in (NOBODY, UNNAMED_UID):
        reply = call(b, "InactivateDeviceCertificate", uid=uid, CaSn=CA, DeviceSn="a601")
        check_error_shape(reply, "PermissionCheckFailed", 403)
        assert reply.body["Detail"].endswith("lacks mq:UnregisterDeviceCertificate"), reply
        reply = call(b, "InactivateDeviceCertificate", uid=uid, CaSn="not a serial")
        check_error_shape(reply, "PermissionCheckFailed", 403)
    assert device_record(b, CA, "a601")["Status"] == "1"


# ----------------------------------------------------- through devcertctl

CTL_ROWS = [
    ("empty DeviceSn", {"MqttInstanceId": "local", "CaSn": CA, "DeviceSn": ""}, "ParameterFieldCheckFailed"),
    ("DeviceSn not hex", {"MqttInstanceId": "local", "CaSn": CA, "DeviceSn": "a6zz"}, "ParameterFieldCheckFailed"),
    ("CaSn over 128 bytes", {"MqttInstanceId": "local", "CaSn": LONG_CA, "DeviceSn": "a600"},
     "ParameterFieldCheckFailed"),
    ("another instance", {"MqttInstanceId": "elsewhere", "CaSn": CA, "DeviceSn": "a600"}, "MqttInstanceNotFound"),
    ("no such device", {"MqttInstanceId": "local", "CaSn": CA, "DeviceSn": "a6ff"}, "FindDeviceBySnError"),
]


@pytest.mark.parametrize("what,params,code", CTL_ROWS, ids=[r[0] for r in CTL_ROWS])
def test_devcertctl_exits_1_and_prints_the_error_json_for_each_row(b, pki, what, params, code):
    registered(b, pki, "a600") if device_record(b, CA, "a600") is None else None
    result = ctl_error(b, "InactivateDeviceCertificate", code, **params)
    assert result.stderr == ""
    assert device_record(b, CA, "a600")["Status"] == "1"


def test_devcertctl_run_by_another_user_gets_permission_check_failed(b):
    for uid in (NOBODY, UNNAMED_UID):
        ctl_error(b, "InactivateDeviceCertificate", "PermissionCheckFailed", uid=uid,
                  MqttInstanceId="local", CaSn=CA, DeviceSn="a600")


def test_devcertctl_cannot_send_what_the_api_would_refuse_as_an_unknown_action(b):
    # An unknown operation or a duplicated or unknown parameter never leaves
    # devcertctl: it is a usage error (exit 2), checked against the same
    # operations table the server dispatches through.
    for args in (["FlyToTheMoon", "--MqttInstanceId", "local"],
                 ["InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", CA, "--CaSn", CA,
                  "--DeviceSn", "a600"],
                 ["InactivateDeviceCertificate", "--MqttInstanceId", "local", "--CaSn", CA]):
        result = ctl(b, *args)
        assert result.returncode == 2 and result.stdout == "" and result.stderr.startswith("devcertctl: "), result


def test_devcertctl_inactivates_with_non_canonical_serials_and_prints_the_canonical_one(b, pki):
    registered(b, pki, "a5c6")
    result = ctl(b, "InactivateDeviceCertificate", MqttInstanceId="local", CaSn="0x0C:01", DeviceSn="A5:C6")
    assert result.returncode == 0 and set(result.body) == {"RequestId", "DeviceSn"}, result
    assert result.body["DeviceSn"] == "a5c6" and REQUEST_ID.match(result.body["RequestId"])
    assert device_record(b, CA, "a5c6")["Status"] == "0"


# ------------------------------------------------------------ store failure

BREAK_RECORD_C = r"""
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* Rewrites a device record with a layout version no build reads: what a
   damaged page or a record from a newer build looks like to the store. */
int main(int argc, char **argv) {
    MDB_env *env; MDB_txn *txn; MDB_dbi dbi; MDB_val k, v;
    char key[512];
    size_t ca = strlen(argv[2]), dev = strlen(argv[3]);
    memcpy(key, argv[2], ca); key[ca] = 0; memcpy(key + ca + 1, argv[3], dev);
    k.mv_size = ca + 1 + dev; k.mv_data = key;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) || mdb_env_open(env, argv[1], 0, 0600)) return 2;
    if (mdb_txn_begin(env, NULL, 0, &txn) || mdb_dbi_open(txn, "devices", 0, &dbi)) return 3;
    if (mdb_get(txn, dbi, &k, &v)) return 4;
    char *copy = malloc(v.mv_size); memcpy(copy, v.mv_data, v.mv_size);
    copy[1] = 0x7f;
    v.mv_data = copy;
    if (mdb_put(txn, dbi, &k, &v, 0) || mdb_txn_commit(txn)) return 5;
    mdb_env_close(env);
    return 0;
}
"""


def test_a_store_failure_is_internal_error_and_writes_nothing(make_broker, pki, tmp_path):
    tool = tmp_path / "break_record"
    (tmp_path / "break_record.c").write_text(BREAK_RECORD_C)
    subprocess.run(["cc", "-o", str(tool), str(tmp_path / "break_record.c"), "-llmdb"], check=True)
    broker = make_broker(admin_socket=True)
    broker.start()
    dev = pki.device("a701")
    ok(broker, "RegisterDeviceCertificate", method="POST", DeviceContent=dev.pem())
    broker.stop()
    # The broker is stopped: LMDB must not be opened twice in one process
    # tree at once, and the record is rewritten behind the store's back.
    subprocess.run([str(tool), broker.db, CA, "a701"], check=True)
    # stop() removed the socket's directory; the restarted broker needs it
    # back, and it is removed again at the end (stop() removes it only once).
    os.makedirs(broker.admin_socket_dir, mode=0o700)
    try:
        broker.start()
        check_store_failure(broker, pki)
        broker.stop()
    finally:
        shutil.rmtree(broker.admin_socket_dir, ignore_errors=True)


def check_store_failure(broker, pki):
    changes = ok(broker, "ListCertificateChanges", PageSize=1000)["Data"]
    reply = call(broker, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a701")
    check_error_shape(reply, "InternalError", 500)
    assert "| error InternalError" in audit_line(broker, reply.body["RequestId"])
    assert ok(broker, "ListCertificateChanges", PageSize=1000)["Data"] == changes
    result = ctl_error(broker, "InactivateDeviceCertificate", "InternalError", MqttInstanceId="local", CaSn=CA,
                       DeviceSn="a701")
    assert result.stderr == ""
    # Only that record is unreadable: the rest of the store still works.
    other = pki.device("a702")
    ok(broker, "RegisterDeviceCertificate", method="POST", DeviceContent=other.pem())
    assert ok(broker, "InactivateDeviceCertificate", CaSn=CA, DeviceSn="a702")["DeviceSn"] == "a702"
