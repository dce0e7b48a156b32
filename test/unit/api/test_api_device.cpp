#include <catch2/catch.hpp>

#include <set>

#include "api_pki.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

struct DeviceFixture : ApiFixture {
    Issued ca = test_ca("0a01", "Root A");
    Issued device = test_device(ca, "0d01");
    DeviceFixture() {
        REQUIRE(register_ca(*this, ca).status == 200);
        REQUIRE(register_device(*this, device).status == 200);
    }
    std::string status() {
        auto reply = call(device_call("GetDeviceCertificate", "0a01", "0d01"));
        REQUIRE(reply.status == 200);
        return reply.body.at("Data").at("Status").get<std::string>();
    }
};

}  // namespace

TEST_CASE("RegisterDeviceCertificate registers a device of a registered CA", "[api][device]") {
    ApiFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    const auto reply = register_device(f, test_device(ca, "00d001"));
    REQUIRE(reply.status == 200);
    CHECK(reply.body.at("CaSn") == "0a01");
    CHECK(reply.body.at("DeviceSn") == "d001");

    const auto inactive = register_device(f, test_device(ca, "0d02"), "0");
    REQUIRE(inactive.status == 200);
    CHECK(f.call(device_call("GetDeviceCertificate", "0a01", "0d02")).body.at("Data").at("Status") == "0");
}

TEST_CASE("RegisterDeviceCertificate refuses duplicates, unknown issuers and bad content", "[api][device]") {
    ApiFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    const auto device = test_device(ca, "0d01");
    REQUIRE(register_device(f, device).status == 200);

    const auto again = register_device(f, device);
    CHECK(again.status == 401);
    CHECK(again.code() == "SnNotUnique");

    const auto stranger = test_ca("0b01", "Root B");
    const auto orphan = register_device(f, test_device(stranger, "0d09"));
    CHECK(orphan.status == 500);
    CHECK(orphan.code() == "FindCaBySnError");

    CHECK(register_device(f, ca).code() == "CertificateContentError");  // a CA is not a device
    CHECK(f.call({{"Action", "RegisterDeviceCertificate"}, {"MqttInstanceId", "local"}, {"DeviceContent", "junk"}})
              .code() == "CertificateContentError");
    CHECK(register_device(f, test_device(ca, "0d03"), "2").code() == "ParameterFieldCheckFailed");
}

TEST_CASE("GetDeviceCertificate answers every field of the record", "[api][device]") {
    DeviceFixture f;
    auto reply = f.call(device_call("GetDeviceCertificate", "0A01", "0x0D01"));
    REQUIRE(reply.status == 200);
    const auto& data = reply.body.at("Data");
    CHECK(data.at("CaSn") == "0a01");
    CHECK(data.at("DeviceSn") == "0d01");
    CHECK(data.at("DeviceName") == "device-0d01");
    CHECK(data.at("DeviceContent").get<std::string>().find("-----BEGIN CERTIFICATE-----") == 0);
    CHECK(data.at("Status") == "1");
    CHECK(data.at("ValidBegin") == "1600000000000");
    CHECK(data.at("ValidEnd") == "4100000000000");
    CHECK(data.at("Fingerprint").get<std::string>().size() == 64);
    CHECK(data.at("RegisteredBy") == "api");
    CHECK(data.at("CreatedTime").is_string());
    CHECK(data.at("UpdateTime").is_string());
    CHECK(data.at("LastStatusChangeTime").is_string());
    CHECK(data.at("Online") == false);

    f.online.add("0a01", "0d01");
    CHECK(f.call(device_call("GetDeviceCertificate", "0a01", "0d01")).body.at("Data").at("Online") == true);
}

TEST_CASE("InactivateDeviceCertificate answers the canonical DeviceSn and is idempotent", "[api][device]") {
    DeviceFixture f;
    auto reply = f.call(device_call("InactivateDeviceCertificate", "0a01", "0X0D01"));
    REQUIRE(reply.status == 200);
    CHECK(reply.body.size() == 2);
    CHECK(reply.body.at("DeviceSn") == "0d01");
    CHECK(f.status() == "0");
    const auto again = f.call(device_call("InactivateDeviceCertificate", "0a01", "0d01"));
    CHECK(again.status == 200);
    CHECK(again.body.at("DeviceSn") == "0d01");
    CHECK(f.status() == "0");
    REQUIRE(f.call(device_call("ActiveDeviceCertificate", "0a01", "0d01")).status == 200);
    CHECK(f.status() == "1");
}

TEST_CASE("device operations on an unknown device are FindDeviceBySnError", "[api][device]") {
    DeviceFixture f;
    for (const char* action : {"ActiveDeviceCertificate", "InactivateDeviceCertificate", "DeleteDeviceCertificate",
                               "GetDeviceCertificate", "RevokeDeviceCertificate"}) {
        INFO(action);
        const auto reply = f.call(device_call(action, "0a01", "0dff"));
        CHECK(reply.status == 500);
        CHECK(reply.code() == "FindDeviceBySnError");
        CHECK(f.call(device_call(action, "0bff", "0d01")).code() == "FindDeviceBySnError");
    }
}

TEST_CASE("a revoked device stays revoked: no activation, no deletion, inactivation succeeds", "[api][device]") {
    DeviceFixture f;
    const auto revoked = f.call(device_call("RevokeDeviceCertificate", "0a01", "0d01"));
    REQUIRE(revoked.status == 200);
    CHECK(revoked.body.at("DeviceSn") == "0d01");
    CHECK(f.status() == "2");

    const auto activate = f.call(device_call("ActiveDeviceCertificate", "0a01", "0d01"));
    CHECK(activate.status == 400);
    CHECK(activate.code() == "CertificateRevoked");
    const auto remove = f.call(device_call("DeleteDeviceCertificate", "0a01", "0d01"));
    CHECK(remove.status == 400);
    CHECK(remove.code() == "CertificateRevoked");
    CHECK(f.call(device_call("InactivateDeviceCertificate", "0a01", "0d01")).status == 200);
    CHECK(f.call(device_call("RevokeDeviceCertificate", "0a01", "0d01")).status == 200);
    CHECK(f.status() == "2");
}

TEST_CASE("DeleteDeviceCertificate removes the record", "[api][device]") {
    DeviceFixture f;
    const auto reply = f.call(device_call("DeleteDeviceCertificate", "0a01", "0d01"));
    REQUIRE(reply.status == 200);
    CHECK(reply.body.at("DeviceSn") == "0d01");
    CHECK(f.call(device_call("GetDeviceCertificate", "0a01", "0d01")).code() == "FindDeviceBySnError");
    CHECK(f.call(device_call("DeleteDeviceCertificate", "0a01", "0d01")).code() == "FindDeviceBySnError");
}

TEST_CASE("ListCertificateChanges is the trail of every change with its caller", "[api][device]") {
    DeviceFixture f;
    REQUIRE(f.call(device_call("InactivateDeviceCertificate", "0a01", "0d01")).status == 200);
    const auto all = f.call({{"Action", "ListCertificateChanges"}, {"MqttInstanceId", "local"}});
    REQUIRE(all.status == 200);
    const auto& changes = all.body.at("Data").at("Changes");
    REQUIRE(changes.size() >= 3);
    const auto& last = changes.back();
    CHECK(last.at("Action") == "InactivateDeviceCertificate");
    CHECK(last.at("CaSn") == "0a01");
    CHECK(last.at("DeviceSn") == "0d01");
    CHECK(last.at("OldStatus") == "1");
    CHECK(last.at("NewStatus") == "0");
    CHECK(last.at("Caller") == "uid=0(root)");
    CHECK(last.at("Seq").is_string());
    CHECK(last.at("Time").is_string());
    CHECK(changes.front().at("OldStatus") == "");  // a registration: nothing before
    CHECK(all.body.at("Data").at("NextSeq") == last.at("Seq"));

    const auto one = f.call({{"Action", "ListCertificateChanges"}, {"MqttInstanceId", "local"}, {"SinceSeq", "0"}, {"PageSize", "1"}});
    REQUIRE(one.body.at("Data").at("Changes").size() == 1);
    const auto next = one.body.at("Data").at("NextSeq").get<std::string>();
    const auto rest = f.call({{"Action", "ListCertificateChanges"}, {"MqttInstanceId", "local"}, {"SinceSeq", next}});
    CHECK(rest.body.at("Data").at("Changes").size() == changes.size() - 1);
    const auto none = f.call({{"Action", "ListCertificateChanges"}, {"MqttInstanceId", "local"},
                              {"SinceSeq", last.at("Seq").get<std::string>()}});
    CHECK(none.body.at("Data").at("Changes").empty());
    CHECK(none.body.at("Data").at("NextSeq") == last.at("Seq"));
    CHECK(f.call({{"Action", "ListCertificateChanges"}, {"MqttInstanceId", "local"}, {"PageSize", "1001"}}).code() ==
          "ParameterFieldCheckFailed");
}

TEST_CASE("GetStats reports records, connected clients and the admin call counters", "[api][device]") {
    DeviceFixture f;
    f.online.add("0a01", "0d01");
    const auto reply = f.call({{"Action", "GetStats"}, {"MqttInstanceId", "local"}});
    REQUIRE(reply.status == 200);
    const auto& data = reply.body.at("Data");
    CHECK(data.at("CaCount") == 1);
    CHECK(data.at("DeviceCount") == 1);
    CHECK(data.at("ConnectedClients") == 1);
    CHECK(data.at("Counters").at("admin_calls.RegisterDeviceCertificate.Success") == 1);
    CHECK(data.at("Counters").contains("connections_accepted"));
    CHECK_FALSE(data.contains("Fleet"));  // only a fleet member's records report fleet figures
}
