"""Who may call the admin API, judged from the caller's OS identity, with
curl and devcertctl run as other OS users (setpriv; no user is created):
the built-in rule without a policy file, Allow, Deny winning, Action
wildcards, Resource (instance) mismatch, principals by user name, uid and
group, unknown users, and policy files that stop the broker at start-up."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from admin_helpers import (ADMINISTRATIVE_ACTION, NOBODY, UNNAMED_UID, USERS_GID, call, check_error_shape,
                           connect5, ctl, ctl_error, device_record, module_broker, ok, open_to_everyone,
                           store_snapshot,
                           wait_online, wait_until)
from devcert_harness import broker_running

CA = "0c01"
GROUP_MEMBER = 54330     # no passwd entry; primary group "users" (gid 100)
DENIED_HERE = 54322      # allowed a permission everywhere, denied it on this instance
NUMERIC_STRING = 54340   # named in the policy as the string "54340"
STRANGER = 54399         # named nowhere

# Every operation with the permission it needs (docs/api.md).
PERMISSIONS = {
    "GetRegisterCode": "mq:GetRegisterCode", "RegisterCaCertificate": "mq:RegisterCa",
    "ActiveCaCertificate": "mq:ActiveCaCertificate", "InactivateCaCertificate": "mq:UnregisterCaCertificate",
    "DeleteCaCertificate": "mq:DeleteCaCertificate", "GetCaCertificate": "mq:GetCaCertificate",
    "ListCaCertificate": "mq:ListCaCertificate", "ActiveDeviceCertificate": "mq:ActiveDeviceCertificate",
    "InactivateDeviceCertificate": "mq:UnregisterDeviceCertificate",
    "DeleteDeviceCertificate": "mq:DeleteDeviceCertificate", "GetDeviceCertificate": "mq:GetDeviceCertificate",
    "ListDeviceCertificate": "mq:ListDeviceCertificate",
    "ListDeviceCertificateByCaSn": "mq:ListDeviceCertificateByCaSn",
    "RegisterDeviceCertificate": "mq:RegisterDeviceCertificate",
    "RevokeDeviceCertificate": "mq:RevokeDeviceCertificate", "ListCertificateChanges": "mq:ListCertificateChanges",
    "GetStats": "mq:GetStats",
}

POLICY = {"Version": "1", "Statement": [
    {"Sid": "root does everything", "Effect": "Allow", "Principal": {"user": "root"}, "Action": "mq:*",
     "Resource": "*"},
    {"Sid": "nobody reads here", "Effect": "Allow", "Principal": {"user": ["nobody"]}, "Action": ["mq:Get*"],
     "Resource": "local"},
    {"Sid": "nobody inactivates elsewhere", "Effect": "Allow", "Principal": {"uid": [NOBODY]},
     "Action": "mq:UnregisterDeviceCertificate", "Resource": ["prod-*"]},
    {"Sid": "everything but unregistering", "Effect": "Allow", "Principal": {"uid": [UNNAMED_UID]},
     "Action": "mq:*", "Resource": "*"},
    {"Effect": "Deny", "Principal": {"uid": [UNNAMED_UID]}, "Action": "mq:Unregister*", "Resource": "*"},
    {"Sid": "lists anywhere but here", "Effect": "Allow", "Principal": {"uid": [DENIED_HERE]},
     "Action": "MQ:list*", "Resource": "*"},
    {"Effect": "Deny", "Principal": {"uid": [DENIED_HERE]}, "Action": "mq:ListCaCertificate", "Resource": "loc*"},
    {"Sid": "the users group operates devices", "Effect": "Allow", "Principal": {"group": ["users"]},
     "Action": ["mq:UnregisterDeviceCertificate", "mq:GetDeviceCertificate"], "Resource": ["other", "lo*"]},
    {"Effect": "Allow", "Principal": {"uid": [str(NUMERIC_STRING)]}, "Action": "mq:GetStats", "Resource": "local"},
]}


@pytest.fixture(scope="module")
def open_broker(tmp_path_factory, pki):
    """No policy file: only root and the broker's own uid may call."""
    broker = module_broker(tmp_path_factory, pki, "nopolicy")
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def b(tmp_path_factory, pki):
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_text(json.dumps(POLICY, indent=2))
    broker = module_broker(tmp_path_factory, pki, "withpolicy", options={"admin_policy": str(path)})
    # A device for the calls to act on.
    dev = pki.device("b001")
    ok(broker, "RegisterDeviceCertificate", method="POST", DeviceContent=dev.pem())
    yield broker
    broker.stop()


def refused(broker, action, code, uid, gid=None, **params):
    reply = call(broker, action, uid=uid, gid=gid, **params)
    check_error_shape(reply, code, 403)
    return reply


# ---------------------------------------------------------- no policy file

def test_without_a_policy_every_operation_is_refused_to_other_users_naming_its_permission(open_broker):
    for uid, who in ((NOBODY, "uid=65534(nobody)"), (UNNAMED_UID, f"uid={UNNAMED_UID}")):
        for action, permission in PERMISSIONS.items():
            reply = refused(open_broker, action, "PermissionCheckFailed", uid)
            assert reply.body["Detail"] == f"{who} lacks {permission}", reply


def test_without_a_policy_root_may_call_and_the_refusals_are_audited_and_counted(open_broker):
    # The test before refused nobody many times this second, and refusals
    # beyond 10 a second per uid are summed into one line: start a new second.
    time.sleep(1.1)
    reply = refused(open_broker, "GetStats", "PermissionCheckFailed", NOBODY)
    line = wait_until(lambda: next((ln for ln in open_broker.log().splitlines()
                                    if ln.endswith(reply.body["RequestId"])), None), what="audit line")
    assert line == (f"devcert: admin uid=65534(nobody) | GetStats | - | error PermissionCheckFailed "
                    f"(uid=65534(nobody) lacks mq:GetStats) | request_id={reply.body['RequestId']}")
    stats = ok(open_broker, "GetStats")["Data"]["Counters"]
    assert stats["admin_calls.GetStats.PermissionCheckFailed"] >= 1
    assert ok(open_broker, "GetRegisterCode")["RegisterCode"]


def test_without_a_policy_devcertctl_run_by_another_user_exits_1_with_permission_check_failed(open_broker):
    for uid in (NOBODY, UNNAMED_UID):
        result = ctl_error(open_broker, "GetStats", "PermissionCheckFailed", uid=uid, MqttInstanceId="local")
        assert result.stderr == ""


# ---------------------------------------------------------------- Allow

def test_a_user_name_principal_with_a_get_wildcard_may_read_on_its_instance(b):
    status = call(b, "GetStats", uid=NOBODY)
    assert status.status == 200 and "Counters" in status.body["Data"], status
    reply = call(b, "GetDeviceCertificate", uid=NOBODY, CaSn=CA, DeviceSn="b001")
    assert reply.status == 200 and reply.body["Data"]["DeviceSn"] == "b001", reply
    assert call(b, "GetRegisterCode", uid=NOBODY).status == 200
    result = ctl(b, "GetDeviceCertificate", uid=NOBODY, MqttInstanceId="local", CaSn=CA, DeviceSn="b001")
    assert result.returncode == 0 and result.body["Data"]["Status"] == "1", result


def test_a_permission_the_wildcard_does_not_cover_is_permission_check_failed(b):
    for action in ("ListCaCertificate", "ListDeviceCertificate", "DeleteDeviceCertificate", "RevokeDeviceCertificate"):
        refused(b, action, "PermissionCheckFailed", NOBODY)
    ctl_error(b, "ListCaCertificate", "PermissionCheckFailed", uid=NOBODY, MqttInstanceId="local", PageNo=1,
              PageSize=10)


# ------------------------------------------------------ instance mismatch

def test_a_permission_allowed_only_on_other_instances_is_mqtt_owner_check_error(b, pki):
    before = store_snapshot(b)
    reply = refused(b, "InactivateDeviceCertificate", "MqttOwnerCheckError", NOBODY, CaSn=CA, DeviceSn="b001")
    assert reply.body["Detail"] == "uid=65534(nobody) lacks mq:UnregisterDeviceCertificate on instance local"
    ctl_error(b, "InactivateDeviceCertificate", "MqttOwnerCheckError", uid=NOBODY, MqttInstanceId="local",
              CaSn=CA, DeviceSn="b001")
    assert store_snapshot(b) == before
    assert device_record(b, CA, "b001")["Status"] == "1"


def test_the_instance_check_comes_after_the_parameters_and_the_instance_id(b):
    reply = call(b, "InactivateDeviceCertificate", uid=NOBODY, CaSn=CA, DeviceSn="not-hex")
    check_error_shape(reply, "ParameterFieldCheckFailed", 400)
    reply = call(b, "InactivateDeviceCertificate", uid=NOBODY, instance="prod-1", CaSn=CA, DeviceSn="b001")
    check_error_shape(reply, "MqttInstanceNotFound", 500)


def test_a_deny_on_this_instance_only_is_mqtt_owner_check_error(b):
    # MQ:list* (any ASCII case) allows every list; the Deny names one
    # permission on instances matching loc*.
    assert call(b, "ListDeviceCertificate", uid=DENIED_HERE, PageNo=1, PageSize=10).status == 200
    assert call(b, "ListCertificateChanges", uid=DENIED_HERE).status == 200
    refused(b, "ListCaCertificate", "MqttOwnerCheckError", DENIED_HERE, PageNo=1, PageSize=10)
    refused(b, "GetStats", "PermissionCheckFailed", DENIED_HERE)


# --------------------------------------------------------------- Deny wins

def test_an_explicit_deny_wins_over_an_allow_of_mq_star(b):
    assert call(b, "GetStats", uid=UNNAMED_UID).status == 200
    assert call(b, "ListCaCertificate", uid=UNNAMED_UID, PageNo=1, PageSize=10).status == 200
    before = store_snapshot(b)
    reply = refused(b, "InactivateDeviceCertificate", "PermissionCheckFailed", UNNAMED_UID, CaSn=CA, DeviceSn="b001")
    assert reply.body["Detail"] == f"uid={UNNAMED_UID} lacks mq:UnregisterDeviceCertificate"
    refused(b, "InactivateCaCertificate", "PermissionCheckFailed", UNNAMED_UID, Sn=CA)
    ctl_error(b, "InactivateDeviceCertificate", "PermissionCheckFailed", uid=UNNAMED_UID, MqttInstanceId="local",
              CaSn=CA, DeviceSn="b001")
    assert store_snapshot(b) == before


# -------------------------------------------------------------- principals

def test_a_group_principal_lets_a_member_inactivate_and_the_caller_is_recorded(b, pki):
    dev = pki.device("b002")
    session = connect5(b, dev, "policy-b002")
    try:
        wait_online(b, CA, "b002")
        # Same uid, another primary group: the group statement no longer applies.
        refused(b, "InactivateDeviceCertificate", "PermissionCheckFailed", GROUP_MEMBER, gid=GROUP_MEMBER,
                CaSn=CA, DeviceSn="b002")
        reply = call(b, "InactivateDeviceCertificate", uid=GROUP_MEMBER, gid=USERS_GID, CaSn=CA, DeviceSn="b002")
        assert reply.status == 200 and reply.body["DeviceSn"] == "b002", reply
        assert session.wait_disconnect(5) == ADMINISTRATIVE_ACTION
    finally:
        session.close()
    line = f"devcert: admin uid={GROUP_MEMBER} | InactivateDeviceCertificate | ca_sn=0c01 device_sn=b002 | ok"
    assert b.wait_for_log(line), b.log()[-2000:]
    changes = ok(b, "ListCertificateChanges", PageSize=1000)["Data"]["Changes"]
    last = changes[-1]
    assert (last["Action"], last["DeviceSn"], last["Caller"], last["OldStatus"], last["NewStatus"]) == \
        ("InactivateDeviceCertificate", "b002", f"uid={GROUP_MEMBER}", "1", "0")
    # The group grants nothing beyond its two permissions.
    refused(b, "ActiveDeviceCertificate", "PermissionCheckFailed", GROUP_MEMBER, gid=USERS_GID,
            CaSn=CA, DeviceSn="b002")


BIG_GROUP = "bigops"
BIG_GID = 54350


@pytest.fixture
def big_group():
    """A group "bigops" whose /etc/group line is over 64 KiB (2,000 long member
    names, "nobody" last), removed afterwards. Needs root, as CI runs."""
    if os.geteuid() != 0:
        pytest.skip("needs root to edit /etc/group")
    subprocess.run(["groupdel", BIG_GROUP], capture_output=True)
    subprocess.run(["groupadd", "-g", str(BIG_GID), BIG_GROUP], check=True)
    members = [f"member-with-a-rather-long-name-{k:05d}" for k in range(2000)] + ["nobody"]
    lines = Path("/etc/group").read_text().splitlines()
    fresh = [f"{BIG_GROUP}:x:{BIG_GID}:{','.join(members)}" if line.startswith(BIG_GROUP + ":") else line
             for line in lines]
    tmp = Path("/etc/group.devcert-test")
    tmp.write_text("\n".join(fresh) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, "/etc/group")
    assert len(next(line for line in fresh if line.startswith(BIG_GROUP + ":"))) > 64 * 1024
    try:
        yield BIG_GROUP
    finally:
        subprocess.run(["groupdel", BIG_GROUP], check=True)


def test_a_deny_for_a_group_whose_entry_is_over_64_kib_applies(make_broker, tmp_path, pki, big_group):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"Version": "1", "Statement": [
        {"Effect": "Allow", "Principal": {"uid": [0, NOBODY]}, "Action": "mq:*", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"group": [big_group]}, "Action": "mq:Delete*", "Resource": "*"}]}))
    broker = make_broker(admin_socket=True, options={"admin_socket_mode": "0666", "admin_policy": str(policy)})
    open_to_everyone(broker.start())
    ok(broker, "RegisterDeviceCertificate", method="POST", DeviceContent=pki.device("b0b0").pem())
    assert call(broker, "GetStats", uid=NOBODY).status == 200
    reply = refused(broker, "DeleteDeviceCertificate", "PermissionCheckFailed", NOBODY, CaSn=CA, DeviceSn="b0b0")
    assert reply.body["Detail"] == "uid=65534(nobody) lacks mq:DeleteDeviceCertificate", reply
    assert device_record(broker, CA, "b0b0")["Status"] == "1"


def test_a_uid_given_as_a_numeric_string_matches(b):
    assert call(b, "GetStats", uid=NUMERIC_STRING).status == 200
    refused(b, "GetRegisterCode", "PermissionCheckFailed", NUMERIC_STRING)


def test_a_user_no_statement_names_is_refused_everything(b):
    for action in ("GetStats", "InactivateDeviceCertificate", "ListCaCertificate"):
        reply = refused(b, action, "PermissionCheckFailed", STRANGER)
        assert reply.body["Detail"].startswith(f"uid={STRANGER} lacks "), reply
    ctl_error(b, "GetStats", "PermissionCheckFailed", uid=STRANGER, MqttInstanceId="local")


def test_root_named_by_the_policy_keeps_every_permission(b):
    assert ok(b, "GetDeviceCertificate", CaSn=CA, DeviceSn="b001")["Data"]["Status"] == "1"
    assert ok(b, "ListCaCertificate", PageNo=1, PageSize=10)["Data"]["Total"] == 1


# ----------------------------------------------------- bad policy files

@pytest.mark.parametrize("text,message", [
    ('{\n  "Statement": [\n    {"Effect": "Allow",,}\n  ]\n}\n', r"policy '.*broken\.json' line 3: "),
    ('{"Statement": [{"Effect": "Permit", "Principal": "*", "Action": "mq:*", "Resource": "*"}]}',
     r"policy '.*broken\.json': Statement\[0\]\.Effect must be \"Allow\" or \"Deny\""),
    ('{"Statement": [{"Effect": "Allow", "Principal": {"user": []}, "Action": "mq:*", "Resource": "*"}]}',
     r"policy '.*broken\.json': Statement\[0\]\.Principal"),
], ids=["syntax error", "bad Effect", "empty principal list"])
def test_a_policy_file_that_does_not_parse_stops_start_up_with_a_message_naming_the_place(
        make_broker, tmp_path, text, message):
    policy = tmp_path / "broken.json"
    policy.write_text(text)
    broker = make_broker(admin_socket=True, options={"admin_policy": str(policy)})
    broker.start(expect_ready=False)
    assert broker.wait_exit(15) != 0
    log = broker.log()
    assert re.search(message, log), log
    assert not broker_running(log)
    assert not Path(broker.admin_socket).exists()


def test_a_missing_policy_file_stops_start_up_naming_it(make_broker, tmp_path):
    broker = make_broker(admin_socket=True, options={"admin_policy": str(tmp_path / "absent.json")})
    broker.start(expect_ready=False)
    assert broker.wait_exit(15) != 0
    assert "absent.json" in broker.log() and not broker_running(broker.log()), broker.log()


# ------------------------------------------------------ reload (SIGHUP)

def test_sighup_re_reads_the_policy_file_and_a_broken_one_leaves_the_policy_in_force(tmp_path_factory, pki):
    path = tmp_path_factory.mktemp("reload-policy") / "policy.json"
    root_only = {"Statement": [{"Effect": "Allow", "Principal": {"user": "root"}, "Action": "mq:*",
                                "Resource": "*"}]}
    path.write_text(json.dumps(root_only))
    broker = module_broker(tmp_path_factory, pki, "reloadpolicy", options={"admin_policy": str(path)})
    try:
        refused(broker, "GetStats", "PermissionCheckFailed", NOBODY)

        # An edit changes nothing until the reload.
        widened = {"Statement": root_only["Statement"] + [
            {"Effect": "Allow", "Principal": {"uid": [NOBODY]}, "Action": "mq:GetStats", "Resource": "local"}]}
        path.write_text(json.dumps(widened))
        refused(broker, "GetStats", "PermissionCheckFailed", NOBODY)
        broker.reload()
        assert broker.wait_for_log(f"devcert: reload: admin policy '{path}' re-read: 2 statement(s)"), broker.log()
        assert call(broker, "GetStats", uid=NOBODY).status == 200
        refused(broker, "GetRegisterCode", "PermissionCheckFailed", NOBODY)

        # A file that no longer parses: one error line, the policy read last stays.
        path.write_text('{\n  "Statement": [\n    {"Effect": "Allow",,}\n  ]\n}\n')
        broker.reload()
        assert broker.wait_for_log("the previous admin policy stays in force"), broker.log()
        line = next(ln for ln in broker.log().splitlines() if "the previous admin policy stays in force" in ln)
        assert re.search(rf"devcert: reload: admin policy '{re.escape(str(path))}' line 3: .*; "
                         r"the previous admin policy stays in force$", line), line
        assert call(broker, "GetStats", uid=NOBODY).status == 200
        assert ok(broker, "GetRegisterCode")["RegisterCode"]

        # A removed file: the same, naming the file.
        path.unlink()
        broker.reload()
        wait_until(lambda: broker.count_in_log("the previous admin policy stays in force") == 2,
                   what="second reload error")
        assert call(broker, "GetStats", uid=NOBODY).status == 200

        # Fixed again: back in force at the next reload.
        path.write_text(json.dumps(root_only))
        broker.reload()
        wait_until(lambda: broker.count_in_log(f"admin policy '{path}' re-read: 1 statement(s)") == 1,
                   what="reload of the fixed file")
        refused(broker, "GetStats", "PermissionCheckFailed", NOBODY)
    finally:
        broker.stop()
