"""The whole certificate lifecycle on the admin socket of a real broker: a CA
minted at test time is registered with a verification certificate made
with the openssl CLI, its devices connect and register themselves, and the
CA and its devices are inactivated, activated, revoked, pre-registered,
deleted, with what the devices see and what the change log records at each
step. Also every registration error, paging over 250 devices, and each
operation's own errors through devcertctl and curl."""

import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from admin_helpers import (ADMINISTRATIVE_ACTION, NOT_AUTHORIZED, KeepAlive, Minter, call, change_story,
                           check_error_shape, connack5, connect5, counters, ctl, ctl_error, ctl_ok, device_record,
                           error, last_seq, module_broker, ok, pem, wait_online, wait_until)

FLEET = "0f1e01"


@pytest.fixture(scope="module")
def minter(tmp_path_factory, pki):
    return Minter(pki, tmp_path_factory.mktemp("minted"))


def register_ca(broker, minter, ca, name, serial="79"):
    code = ok(broker, "GetRegisterCode")["RegisterCode"]
    verification = minter.verification(ca, code, serial=serial)
    return call(broker, "RegisterCaCertificate", method="POST", CaName=name, CaContent=pem(ca.cert),
                VerificationContent=pem(verification))


def audit(broker, fragment):
    assert broker.wait_for_log(fragment), f"no audit line with {fragment!r}:\n{broker.log()[-3000:]}"


# ------------------------------------------------------- CA registration

def test_registering_a_ca_checks_its_content_the_code_the_signer_uniqueness_and_the_ca_limit(
        make_broker, minter, pki):
    b = make_broker(admin_socket=True, import_ca=[], options={"max_ca": "2"}).start()
    first, second, third = minter.ca("reg-one", "0e11"), minter.ca("reg-two", "0e12"), minter.ca("reg-three", "0e13")

    code = ok(b, "GetRegisterCode")["RegisterCode"]
    assert re.fullmatch(r"[0-9a-f]{32}", code), code
    assert ok(b, "GetRegisterCode")["RegisterCode"] == code
    assert ctl_ok(b, "GetRegisterCode", MqttInstanceId="local")["RegisterCode"] == code

    good = minter.verification(first, code, serial="71")
    # Not a CA: a device certificate, then text that is no certificate.
    for content in (pki.device("e0e1").pem(), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                    "hello"):
        reply = call(b, "RegisterCaCertificate", method="POST", CaName="x", CaContent=content,
                     VerificationContent=pem(good))
        check_error_shape(reply, "CertificateContentError", 401)
    # The code's CN but signed by another CA's key; then the right signer
    # but a CN that is not the code.
    wrong_signer = minter.verification(second, code, serial="72")
    reply = call(b, "RegisterCaCertificate", method="POST", CaName="x", CaContent=pem(first.cert),
                 VerificationContent=pem(wrong_signer))
    check_error_shape(reply, "RegisterCodeError", 400)
    assert reply.body["Detail"] == "VerificationContent is not signed by the CA", reply
    wrong_cn = minter.verification(first, "0123456789abcdef0123456789abcdef", serial="73")
    result = ctl_error(b, "RegisterCaCertificate", "RegisterCodeError", MqttInstanceId="local", CaName="x",
                       CaContent=f"@{first.cert}", VerificationContent=f"@{wrong_cn}")
    assert result.stderr == ""
    assert ok(b, "ListCaCertificate", PageNo=1, PageSize=10)["Data"]["Total"] == 0
    assert ok(b, "GetRegisterCode")["RegisterCode"] == code  # refusals do not consume the code

    registered = ctl_ok(b, "RegisterCaCertificate", MqttInstanceId="local", CaName="Fleet One",
                        CaContent=f"@{first.cert}", VerificationContent=f"@{good}")
    assert registered["Sn"] == "0e11"
    record = ok(b, "GetCaCertificate", Sn="0x0E11")["Data"]
    assert (record["Sn"], record["CaName"], record["Status"], record["RegisteredBy"], record["RegistrationCode"]) == \
        ("0e11", "Fleet One", "1", "api", code)
    assert record["CaContent"] == pem(first.cert) and record["VerificationContent"] == pem(good)
    audit(b, '| RegisterCaCertificate | ca_name="Fleet One" sn=0e11 | ok |')

    # The code is consumed: a new one replaces it, the old one is "used".
    new_code = ok(b, "GetRegisterCode")["RegisterCode"]
    assert new_code != code
    reply = call(b, "RegisterCaCertificate", method="POST", CaName="again", CaContent=pem(second.cert),
                 VerificationContent=pem(minter.verification(second, code, serial="74")))
    check_error_shape(reply, "RegisterCodeUsed", 401)
    # The same CA again, with a fresh code.
    check_error_shape(register_ca(b, minter, first, "twice", serial="75"), "SnNotUnique", 401)

    assert register_ca(b, minter, second, "Fleet Two", serial="76").body["Sn"] == "0e12"
    reply = register_ca(b, minter, third, "Fleet Three", serial="77")
    check_error_shape(reply, "CaNumExceed", 401)
    code = ok(b, "GetRegisterCode")["RegisterCode"]
    ctl_error(b, "RegisterCaCertificate", "CaNumExceed", MqttInstanceId="local", CaName="Fleet Three",
              CaContent=f"@{third.cert}", VerificationContent=f"@{minter.verification(third, code, serial='78')}")
    # devcertctl --db works on the store without the broker, and applies the
    # limit the broker recorded there.
    direct = b.ctl("RegisterCaCertificate", MqttInstanceId="local", CaName="Fleet Three", CaContent=f"@{third.cert}",
                   VerificationContent=f"@{minter.verification(third, code, serial='7a')}")
    assert direct.returncode == 1, direct
    assert (json.loads(direct.stdout)["Code"], json.loads(direct.stdout)["Detail"]) == \
        ("CaNumExceed", "plugin_opt_max_ca is 2"), direct.stdout
    listed = ok(b, "ListCaCertificate", PageNo=1, PageSize=10)["Data"]
    assert [c["Sn"] for c in listed["CaCertificateVOS"]] == ["0e11", "0e12"] and listed["Total"] == 2
    assert change_story(b) == [("RegisterCaCertificate", "0e11", "", "", "1"),
                               ("RegisterCaCertificate", "0e12", "", "", "1")]


# ---------------------------------------------------------- walk-through

def test_the_whole_lifecycle_from_registering_a_ca_to_deleting_it(make_broker, minter, pki):
    b = make_broker(admin_socket=True).start()  # the harness's CA 0c01 is imported: a bystander
    fleet = minter.ca("fleet", FLEET)
    e1, e2, e3, e4, e5 = (minter.device(fleet, f"e00{i}") for i in range(1, 6))
    bystander_dev = pki.device("b501")
    start = last_seq(b)
    stats0 = counters(b)

    # Not registered yet: refused as "ca not registered".
    assert connack5(b, e1, "life-e1") == NOT_AUTHORIZED
    assert register_ca(b, minter, fleet, "fleet").body["Sn"] == FLEET

    # Devices connect and register themselves, one after the other.
    sessions = {}
    for dev in (e1, e2, e3):
        sessions[dev.serial] = connect5(b, dev, f"life-{dev.serial}")
        record = wait_online(b, FLEET, dev.serial)
        assert (record["Status"], record["RegisteredBy"], record["DeviceName"]) == ("1", "connection", "dev-of-fleet")
    bystander = connect5(b, bystander_dev, "life-bystander")
    wait_online(b, "0c01", "b501")

    pages = [ok(b, "ListDeviceCertificateByCaSn", CaSn="0F:1E:01", PageNo=n, PageSize=2)["Data"] for n in (1, 2, 3)]
    assert [[d["DeviceSn"] for d in p["DeviceCertificateVOS"]] for p in pages] == [["e001", "e002"], ["e003"], []]
    assert all(p["Total"] == 3 and p["PageSize"] == 2 for p in pages) and [p["PageNo"] for p in pages] == [1, 2, 3]
    assert all(d["Online"] is True and d["CaSn"] == FLEET for p in pages for d in p["DeviceCertificateVOS"])
    table = ctl(b, "--output", "table", "ListDeviceCertificateByCaSn", MqttInstanceId="local", CaSn=FLEET,
                PageNo=1, PageSize=10)
    assert table.returncode == 0 and "e003" in table.stdout and "Total 3" in table.stdout, table

    # Inactivating the CA kicks every session of its devices, and only those.
    ok(b, "InactivateCaCertificate", Sn=FLEET)
    for serial, session in sessions.items():
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION, serial
        session.close()
    assert bystander.still_connected(0.2)
    assert connack5(b, e2, "life-e2") == NOT_AUTHORIZED
    assert device_record(b, FLEET, "e002")["Status"] == "1"  # the devices keep their own status
    assert ok(b, "GetCaCertificate", Sn=FLEET)["Data"]["Status"] == "0"

    # Activating it lets them in again.
    ok(b, "ActiveCaCertificate", Sn=FLEET)
    sessions = {dev.serial: connect5(b, dev, f"life-{dev.serial}") for dev in (e1, e2, e3)}
    for serial in sessions:
        wait_online(b, FLEET, serial)

    # Revoked is terminal: kicked, cannot be activated, deleted, or come back.
    assert ok(b, "RevokeDeviceCertificate", CaSn=FLEET, DeviceSn="e001")["DeviceSn"] == "e001"
    assert sessions.pop("e001").wait_disconnect(5) == ADMINISTRATIVE_ACTION
    error(b, "ActiveDeviceCertificate", "CertificateRevoked", 400, CaSn=FLEET, DeviceSn="e001")
    error(b, "DeleteDeviceCertificate", "CertificateRevoked", 400, CaSn=FLEET, DeviceSn="e001")
    ctl_error(b, "ActiveDeviceCertificate", "CertificateRevoked", MqttInstanceId="local", CaSn=FLEET,
              DeviceSn="e001")
    ctl_error(b, "DeleteDeviceCertificate", "CertificateRevoked", MqttInstanceId="local", CaSn=FLEET,
              DeviceSn="e001")
    assert connack5(b, e1, "life-e1") == NOT_AUTHORIZED
    assert ok(b, "RevokeDeviceCertificate", CaSn=FLEET, DeviceSn="e001")["DeviceSn"] == "e001"  # no change
    assert device_record(b, FLEET, "e001")["Status"] == "2"

    # Pre-registered inactive: refused until activated.
    added = ctl_ok(b, "RegisterDeviceCertificate", MqttInstanceId="local", DeviceContent=f"@{e4.leaf}", Status="0")
    assert (added["CaSn"], added["DeviceSn"]) == (FLEET, "e004")
    audit(b, f"| RegisterDeviceCertificate | status=0 ca_sn={FLEET} device_sn=e004 | ok |")
    record = device_record(b, FLEET, "e004")
    assert (record["Status"], record["RegisteredBy"], record["Online"]) == ("0", "api", False)
    error(b, "RegisterDeviceCertificate", "SnNotUnique", 401, method="POST", DeviceContent=pem(e4.leaf))
    assert connack5(b, e4, "life-e4") == NOT_AUTHORIZED
    ok(b, "ActiveDeviceCertificate", CaSn=FLEET, DeviceSn="e004")
    connect5(b, e4, "life-e4").close()
    # Registered active by default.
    reply = call(b, "RegisterDeviceCertificate", method="POST", DeviceContent=pem(e5.leaf))
    assert reply.status == 200 and reply.body["DeviceSn"] == "e005", reply
    audit(b, f"| RegisterDeviceCertificate | ca_sn={FLEET} device_sn=e005 | ok | request_id={reply.body['RequestId']}")
    connect5(b, e5, "life-e5").close()

    # Deleting a device kicks it; auto_register active brings it back.
    created = device_record(b, FLEET, "e002")["CreatedTime"]
    ok(b, "DeleteDeviceCertificate", CaSn=FLEET, DeviceSn="e002")
    assert sessions.pop("e002").wait_disconnect(5) == ADMINISTRATIVE_ACTION
    error(b, "GetDeviceCertificate", "FindDeviceBySnError", 500, CaSn=FLEET, DeviceSn="e002")
    sessions["e002"] = connect5(b, e2, "life-e2")
    again = wait_online(b, FLEET, "e002")
    assert again["RegisteredBy"] == "connection" and int(again["CreatedTime"]) >= int(created)

    # Deleting the CA removes every record under it and kicks their sessions.
    ok(b, "DeleteCaCertificate", Sn=FLEET)
    for serial, session in sessions.items():
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION, serial
        session.close()
    assert bystander.still_connected(0.2)
    bystander.close()
    audit(b, f"| DeleteCaCertificate | sn={FLEET} devices_removed=5 | ok |")
    error(b, "GetCaCertificate", "FindCaBySnError", 500, Sn=FLEET)
    error(b, "ListDeviceCertificateByCaSn", "FindCaBySnError", 500, CaSn=FLEET, PageNo=1, PageSize=10)
    for serial in ("e001", "e002", "e003", "e004", "e005"):
        error(b, "GetDeviceCertificate", "FindDeviceBySnError", 500, CaSn=FLEET, DeviceSn=serial)
    assert connack5(b, e3, "life-e3") == NOT_AUTHORIZED
    listed = ok(b, "ListDeviceCertificate", PageNo=1, PageSize=100)["Data"]
    assert [(d["CaSn"], d["DeviceSn"]) for d in listed["DeviceCertificateVOS"]] == [("0c01", "b501")]

    # The change log tells the whole story, in order.
    story = change_story(b, start)
    assert story[:15] == [
        ("RegisterCaCertificate", FLEET, "", "", "1"),
        ("AutoRegister", FLEET, "e001", "", "1"),
        ("AutoRegister", FLEET, "e002", "", "1"),
        ("AutoRegister", FLEET, "e003", "", "1"),
        ("AutoRegister", "0c01", "b501", "", "1"),
        ("InactivateCaCertificate", FLEET, "", "1", "0"),
        ("ActiveCaCertificate", FLEET, "", "0", "1"),
        ("RevokeDeviceCertificate", FLEET, "e001", "1", "2"),
        ("RegisterDeviceCertificate", FLEET, "e004", "", "0"),
        ("ActiveDeviceCertificate", FLEET, "e004", "0", "1"),
        ("RegisterDeviceCertificate", FLEET, "e005", "", "1"),
        ("DeleteDeviceCertificate", FLEET, "e002", "1", ""),
        ("AutoRegister", FLEET, "e002", "", "1"),
    ] + story[13:15]
    # The deletion: the CA inactivated first (its devices refused from then
    # on), its devices removed, the CA removed last.
    removal = story[13:]
    assert removal[0] == ("DeleteCaCertificate", FLEET, "", "1", "0")
    assert sorted(removal[1:-1]) == [("DeleteCaCertificate", FLEET, f"e00{i}", "2" if i == 1 else "1", "")
                                     for i in range(1, 6)]
    assert removal[-1] == ("DeleteCaCertificate", FLEET, "", "0", "")
    entries = ok(b, "ListCertificateChanges", SinceSeq=start, PageSize=1000)["Data"]["Changes"]
    assert all(e["Caller"] in ("uid=0(root)", "connection") for e in entries)
    assert len({e["Time"] for e in entries[-6:-1]}) == 1  # the devices went in one commit, at one time

    # The counters saw it all.
    stats = ok(b, "GetStats")["Data"]
    c = stats["Counters"]
    assert (stats["CaCount"], stats["DeviceCount"], stats["ConnectedClients"]) == (1, 1, 0)
    # CA inactivated (3 sessions), revoke, delete device, delete CA (e002, e003).
    assert c["kicks"] - stats0["kicks"] == 3 + 1 + 1 + 2
    assert c["auto_registrations"] - stats0["auto_registrations"] == 5
    assert c["connections_refused.ca_not_registered"] - stats0["connections_refused.ca_not_registered"] == 2
    assert c["connections_refused.ca_inactive"] - stats0["connections_refused.ca_inactive"] == 1
    assert c["connections_refused.device_revoked"] - stats0["connections_refused.device_revoked"] == 1
    assert c["connections_refused.device_inactive"] - stats0["connections_refused.device_inactive"] == 1
    for op in ("RegisterCaCertificate", "InactivateCaCertificate", "ActiveCaCertificate", "DeleteCaCertificate",
               "ActiveDeviceCertificate", "DeleteDeviceCertificate"):
        assert c[f"admin_calls.{op}.Success"] == 1, op
    assert c["admin_calls.RevokeDeviceCertificate.Success"] == 2
    assert c["admin_calls.RegisterDeviceCertificate.Success"] == 2
    assert c["admin_calls.ActiveDeviceCertificate.CertificateRevoked"] == 2
    assert c["admin_calls.DeleteDeviceCertificate.CertificateRevoked"] == 2


# ----------------------------------------------------------------- paging

def page_through(conn, action, size, **params):
    """Every page of a list until an empty one; returns (serials, Totals seen)."""
    serials, totals, page = [], set(), 1
    while True:
        status, body = conn.post_form([("Action", action), ("MqttInstanceId", "local"), ("PageNo", page),
                                       ("PageSize", size)] + list(params.items()))
        assert status == 200, body
        data = body["Data"]
        assert (data["PageNo"], data["PageSize"]) == (page, size)
        totals.add(data["Total"])
        items = data["DeviceCertificateVOS"]
        assert len(items) <= size
        if not items:
            return serials, totals
        serials += [d["DeviceSn"] for d in items]
        page += 1


def test_250_devices_page_the_same_at_every_page_size_and_totals_follow_deletions(make_broker, minter, pki):
    # Paging 250 records at every size takes more calls than the default
    # 500 per second allow; the rate limit has its own tests.
    b = make_broker(admin_socket=True, options={"admin_rate_limit": "100000"}).start()
    serials = [f"{0x2000 + i:04x}" for i in range(250)]
    with ThreadPoolExecutor(2) as pool:
        devices = list(pool.map(lambda s: minter.device(pki.ca, s), serials))
    conn = KeepAlive(b.admin_socket)
    try:
        for dev in reversed(devices):  # registration order must not matter
            status, body = conn.post_form([("Action", "RegisterDeviceCertificate"), ("MqttInstanceId", "local"),
                                           ("DeviceContent", pem(dev.leaf))])
            assert status == 200, body

        for action, extra in (("ListDeviceCertificate", {}), ("ListDeviceCertificateByCaSn", {"CaSn": "0c01"})):
            for size in (1, 7, 100):
                listed, totals = page_through(conn, action, size, **extra)
                assert listed == serials and totals == {250}, (action, size)

        for size in (101, 0):
            error(b, "ListDeviceCertificate", "ParameterFieldCheckFailed", 400, PageNo=1, PageSize=size)
            ctl_error(b, "ListDeviceCertificateByCaSn", "ParameterFieldCheckFailed", MqttInstanceId="local",
                      CaSn="0c01", PageNo=1, PageSize=size)
        error(b, "ListDeviceCertificate", "ParameterFieldCheckFailed", 400, PageNo=0, PageSize=10)
        error(b, "ListCaCertificate", "ParameterFieldCheckFailed", 400, PageNo=1, PageSize=101)

        deleted = serials[::15]
        for serial in deleted:
            ok(b, "DeleteDeviceCertificate", CaSn="0c01", DeviceSn=serial)
        remaining = [s for s in serials if s not in deleted]
        assert len(remaining) == 250 - 17
        for action, extra in (("ListDeviceCertificate", {}), ("ListDeviceCertificateByCaSn", {"CaSn": "0c01"})):
            for size in (7, 100):
                listed, totals = page_through(conn, action, size, **extra)
                assert listed == remaining and totals == {233}, (action, size)
        past = ok(b, "ListDeviceCertificate", PageNo=4, PageSize=100)["Data"]
        assert (past["DeviceCertificateVOS"], past["Total"], past["PageNo"]) == ([], 233, 4)
        last = ok(b, "ListDeviceCertificateByCaSn", CaSn="0c01", PageNo=3, PageSize=100)["Data"]
        assert [d["DeviceSn"] for d in last["DeviceCertificateVOS"]] == remaining[200:]

        # The change log pages the same way through NextSeq.
        seen, since = [], 0
        while True:
            status, body = conn.post_form([("Action", "ListCertificateChanges"), ("MqttInstanceId", "local"),
                                           ("SinceSeq", since), ("PageSize", 7)])
            assert status == 200, body
            changes = body["Data"]["Changes"]
            assert len(changes) <= 7
            if not changes:
                assert int(body["Data"]["NextSeq"]) == since
                break
            seen += changes
            since = int(body["Data"]["NextSeq"])
            assert since == int(changes[-1]["Seq"])
    finally:
        conn.close()
    seqs = [int(e["Seq"]) for e in seen]
    assert seqs == sorted(set(seqs)) and len(seen) == 1 + 250 + 17
    assert [e["Action"] for e in seen].count("RegisterDeviceCertificate") == 250
    error(b, "ListCertificateChanges", "ParameterFieldCheckFailed", 400, PageSize=1001)
    assert ok(b, "ListCaCertificate", PageNo=1, PageSize=1)["Data"]["Total"] == 1


# ---------------------------------------------- each operation's own errors

MISSING = "0dead1"

OPERATION_ERRORS = [
    ("ActiveCaCertificate", {"Sn": MISSING}, "FindCaBySnError", 500),
    ("InactivateCaCertificate", {"Sn": MISSING}, "FindCaBySnError", 500),
    ("DeleteCaCertificate", {"Sn": MISSING}, "FindCaBySnError", 500),
    ("GetCaCertificate", {"Sn": MISSING}, "FindCaBySnError", 500),
    ("ListDeviceCertificateByCaSn", {"CaSn": MISSING, "PageNo": 1, "PageSize": 10}, "FindCaBySnError", 500),
    ("ActiveDeviceCertificate", {"CaSn": "0c01", "DeviceSn": "dead"}, "FindDeviceBySnError", 500),
    ("DeleteDeviceCertificate", {"CaSn": "0c01", "DeviceSn": "dead"}, "FindDeviceBySnError", 500),
    ("GetDeviceCertificate", {"CaSn": MISSING, "DeviceSn": "dead"}, "FindDeviceBySnError", 500),
    ("RevokeDeviceCertificate", {"CaSn": "0c01", "DeviceSn": "dead"}, "FindDeviceBySnError", 500),
    ("GetRegisterCode", {"MqttInstanceId": ""}, "ParameterFieldCheckFailed", 400),
    ("RegisterCaCertificate", {"CaName": "", "CaContent": "x", "VerificationContent": "x"},
     "ParameterFieldCheckFailed", 400),
    ("ActiveCaCertificate", {"Sn": "zz"}, "ParameterFieldCheckFailed", 400),
    ("InactivateCaCertificate", {"Sn": "0"}, "ParameterFieldCheckFailed", 400),
    ("DeleteCaCertificate", {"Sn": ""}, "ParameterFieldCheckFailed", 400),
    ("GetCaCertificate", {"Sn": "0c:01:"}, "ParameterFieldCheckFailed", 400),
    ("ListCaCertificate", {"PageNo": 1, "PageSize": 101}, "ParameterFieldCheckFailed", 400),
    ("ActiveDeviceCertificate", {"CaSn": "0c01", "DeviceSn": "x1"}, "ParameterFieldCheckFailed", 400),
    ("DeleteDeviceCertificate", {"CaSn": "", "DeviceSn": "dead"}, "ParameterFieldCheckFailed", 400),
    ("GetDeviceCertificate", {"CaSn": "0x", "DeviceSn": "dead"}, "ParameterFieldCheckFailed", 400),
    ("ListDeviceCertificate", {"PageNo": 0, "PageSize": 10}, "ParameterFieldCheckFailed", 400),
    ("ListDeviceCertificateByCaSn", {"CaSn": "0c01", "PageNo": 1, "PageSize": "ten"}, "ParameterFieldCheckFailed",
     400),
    ("RegisterDeviceCertificate", {"DeviceContent": "x", "Status": "2"}, "ParameterFieldCheckFailed", 400),
    ("RevokeDeviceCertificate", {"CaSn": "0c01", "DeviceSn": "00"}, "ParameterFieldCheckFailed", 400),
    ("ListCertificateChanges", {"SinceSeq": "-1"}, "ParameterFieldCheckFailed", 400),
    ("GetStats", {"MqttInstanceId": "x" * 129}, "ParameterFieldCheckFailed", 400),
    ("GetCaCertificate", {"MqttInstanceId": "elsewhere", "Sn": "0c01"}, "MqttInstanceNotFound", 500),
    ("ListCertificateChanges", {"MqttInstanceId": "elsewhere"}, "MqttInstanceNotFound", 500),
]


@pytest.fixture(scope="module")
def errors_broker(tmp_path_factory, pki):
    broker = module_broker(tmp_path_factory, pki, "operrors")
    yield broker
    broker.stop()


@pytest.mark.parametrize("action,params,code,http", OPERATION_ERRORS,
                         ids=[f"{a}-{c}-{i}" for i, (a, _, c, _) in enumerate(OPERATION_ERRORS)])
def test_each_operation_answers_its_errors_through_devcertctl_and_curl(errors_broker, action, params, code, http):
    full = {"MqttInstanceId": "local", **params}
    result = ctl_error(errors_broker, action, code, **full)
    assert result.stderr == ""
    instance = full.pop("MqttInstanceId")
    reply = call(errors_broker, action, instance=instance, method="POST", **full)
    check_error_shape(reply, code, http)


def test_registering_a_device_checks_its_issuer_content_and_uniqueness(errors_broker, pki):
    b = errors_broker
    stranger = pki.device("e0f1", issuer=pki.stranger_ca)
    ctl_error(b, "RegisterDeviceCertificate", "FindCaBySnError", MqttInstanceId="local",
              DeviceContent=f"@{stranger.cert}")
    ctl_error(b, "RegisterDeviceCertificate", "CertificateContentError", MqttInstanceId="local",
              DeviceContent=f"@{pki.ca.cert}")
    reply = call(b, "RegisterDeviceCertificate", method="POST", DeviceContent="not a certificate")
    check_error_shape(reply, "CertificateContentError", 401)
    dev = pki.device("e0f2")
    assert ctl_ok(b, "RegisterDeviceCertificate", MqttInstanceId="local", DeviceContent=f"@{dev.cert}")["DeviceSn"] \
        == "e0f2"
    ctl_error(b, "RegisterDeviceCertificate", "SnNotUnique", MqttInstanceId="local", DeviceContent=f"@{dev.cert}")
    # A CA's errors through devcertctl too.
    ctl_error(b, "RegisterCaCertificate", "CertificateContentError", MqttInstanceId="local", CaName="x",
              CaContent=f"@{dev.cert}", VerificationContent=f"@{dev.cert}")
    wait_until(lambda: device_record(b, "0c01", "e0f2"), what="e0f2 registered")
