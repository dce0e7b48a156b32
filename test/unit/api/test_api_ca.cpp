#include <catch2/catch.hpp>

#include "api_pki.hpp"

using namespace devcert;
using namespace devcert::test;

TEST_CASE("GetRegisterCode returns one code until a CA registration consumes it", "[api][ca]") {
    ApiFixture f;
    const auto first = register_code(f);
    CHECK(first.size() == 32);
    CHECK(register_code(f) == first);

    const auto ca = test_ca("0a01", "Root A");
    const auto reply = f.call({{"Action", "RegisterCaCertificate"},
                               {"MqttInstanceId", "local"},
                               {"CaName", "root a"},
                               {"CaContent", ca.pem()},
                               {"VerificationContent", verification_for(ca, first).pem()}});
    REQUIRE(reply.status == 200);
    const auto next = register_code(f);
    CHECK(next != first);
    CHECK(register_code(f) == next);
}

TEST_CASE("RegisterCaCertificate registers the CA active and answers its canonical Sn", "[api][ca]") {
    ApiFixture f;
    const auto ca = test_ca("00ca01", "Root A");
    const auto reply = register_ca(f, ca, "fleet root");
    REQUIRE(reply.status == 200);
    CHECK(f.audit().back() == "devcert: admin uid=0(root) | RegisterCaCertificate | ca_name=\"fleet root\" sn=ca01 | ok | request_id=" +
                                  reply.body.at("RequestId").get<std::string>());
    CHECK(reply.body.at("Sn") == "ca01");
    CHECK(reply.body.at("RequestId").get<std::string>().size() == 36);

    const auto got = f.call(ca_call("GetCaCertificate", "CA:01"));
    REQUIRE(got.status == 200);
    const auto& data = got.body.at("Data");
    CHECK(data.at("Sn") == "ca01");
    CHECK(data.at("CaName") == "fleet root");
    CHECK(data.at("Status") == "1");
    CHECK(data.at("CaContent").get<std::string>().find("-----BEGIN CERTIFICATE-----") == 0);
    CHECK(data.at("VerificationContent").get<std::string>().find("-----BEGIN CERTIFICATE-----") == 0);
    CHECK(data.at("RegistrationCode").get<std::string>().size() == 32);
    CHECK(data.at("ValidBegin") == "1600000000000");
    CHECK(data.at("ValidEnd") == "4100000000000");
    CHECK(data.at("Fingerprint").get<std::string>().size() == 64);
    CHECK(data.at("RegisteredBy") == "api");
    for (const char* field : {"CreatedTime", "UpdateTime", "LastStatusChangeTime"}) {
        INFO(field);
        CHECK(std::stoll(data.at(field).get<std::string>()) > 1'600'000'000'000);
    }
}

TEST_CASE("a verification certificate with another code is RegisterCodeError", "[api][ca]") {
    ApiFixture f;
    (void)register_code(f);
    const auto ca = test_ca("0a01", "Root A");
    const auto reply = f.call({{"Action", "RegisterCaCertificate"},
                               {"MqttInstanceId", "local"},
                               {"CaName", "a"},
                               {"CaContent", ca.pem()},
                               {"VerificationContent", verification_for(ca, "not-the-code").pem()}});
    CHECK(reply.status == 400);
    CHECK(reply.code() == "RegisterCodeError");
    CHECK(f.call(ca_call("GetCaCertificate", "0a01")).code() == "FindCaBySnError");
}

TEST_CASE("a verification certificate not signed by the CA is RegisterCodeError", "[api][ca]") {
    ApiFixture f;
    const auto code = register_code(f);
    const auto ca = test_ca("0a01", "Root A");
    const auto other = test_ca("0b01", "Root B");
    const auto reply = f.call({{"Action", "RegisterCaCertificate"},
                               {"MqttInstanceId", "local"},
                               {"CaName", "a"},
                               {"CaContent", ca.pem()},
                               {"VerificationContent", verification_for(other, code).pem()}});
    CHECK(reply.code() == "RegisterCodeError");
    CHECK(register_code(f) == code);  // not consumed
}

TEST_CASE("a register code already consumed is RegisterCodeUsed", "[api][ca]") {
    ApiFixture f;
    const auto code = register_code(f);
    const auto first = test_ca("0a01", "Root A");
    REQUIRE(f.call({{"Action", "RegisterCaCertificate"},
                    {"MqttInstanceId", "local"},
                    {"CaName", "a"},
                    {"CaContent", first.pem()},
                    {"VerificationContent", verification_for(first, code).pem()}})
                .status == 200);
    const auto second = test_ca("0b01", "Root B");
    const auto reply = f.call({{"Action", "RegisterCaCertificate"},
                               {"MqttInstanceId", "local"},
                               {"CaName", "b"},
                               {"CaContent", second.pem()},
                               {"VerificationContent", verification_for(second, code).pem()}});
    CHECK(reply.status == 401);
    CHECK(reply.code() == "RegisterCodeUsed");
}

TEST_CASE("CA content that is not a CA certificate, or not PEM, is CertificateContentError", "[api][ca]") {
    ApiFixture f;
    const auto code = register_code(f);
    const auto root = test_ca("0a01", "Root A");
    const auto leaf = test_device(root, "0d01");
    auto attempt = [&](const std::string& ca_pem, const std::string& verification_pem) {
        return f.call({{"Action", "RegisterCaCertificate"},
                       {"MqttInstanceId", "local"},
                       {"CaName", "x"},
                       {"CaContent", ca_pem},
                       {"VerificationContent", verification_pem}});
    };
    const auto not_ca = attempt(leaf.pem(), verification_for(root, code).pem());
    CHECK(not_ca.status == 401);
    CHECK(not_ca.code() == "CertificateContentError");
    CHECK_THAT(not_ca.body.value("Detail", ""), Catch::StartsWith("CaContent: "));
    CHECK(attempt("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", verification_for(root, code).pem())
              .code() == "CertificateContentError");
    CHECK(attempt(root.pem(), "not a certificate").code() == "CertificateContentError");
    CHECK(register_code(f) == code);
}

TEST_CASE("registering a CA whose Sn is registered already is SnNotUnique", "[api][ca]") {
    ApiFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    const auto again = register_ca(f, ca);
    CHECK(again.status == 401);
    CHECK(again.code() == "SnNotUnique");
}

TEST_CASE("registering more than max_ca CAs is CaNumExceed", "[api][ca]") {
    ApiFixture f;  // max_ca 5
    for (int i = 1; i <= 5; ++i) REQUIRE(register_ca(f, test_ca("0a0" + std::to_string(i), "Root")).status == 200);
    const auto sixth = register_ca(f, test_ca("0a09", "Root"));
    CHECK(sixth.status == 401);
    CHECK(sixth.code() == "CaNumExceed");
}

TEST_CASE("CA status follows Inactivate and Active, and unknown Sns are FindCaBySnError", "[api][ca]") {
    ApiFixture f;
    REQUIRE(register_ca(f, test_ca("0a01", "Root A")).status == 200);
    auto status = [&] { return f.call(ca_call("GetCaCertificate", "0a01")).body.at("Data").at("Status"); };

    auto reply = f.call(ca_call("InactivateCaCertificate", "0x0A01"));
    REQUIRE(reply.status == 200);
    CHECK(reply.body.at("Sn") == "0a01");
    CHECK(status() == "0");
    CHECK(f.call(ca_call("InactivateCaCertificate", "0a01")).status == 200);  // idempotent
    REQUIRE(f.call(ca_call("ActiveCaCertificate", "0a01")).status == 200);
    CHECK(status() == "1");

    for (const char* action : {"ActiveCaCertificate", "InactivateCaCertificate", "DeleteCaCertificate", "GetCaCertificate"}) {
        INFO(action);
        const auto missing = f.call(ca_call(action, "0bad"));
        CHECK(missing.status == 500);
        CHECK(missing.code() == "FindCaBySnError");
    }
}

TEST_CASE("DeleteCaCertificate removes the CA and every device under it", "[api][ca]") {
    ApiFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    REQUIRE(register_device(f, test_device(ca, "0d01")).status == 200);
    REQUIRE(register_device(f, test_device(ca, "0d02")).status == 200);
    REQUIRE(f.call(device_call("RevokeDeviceCertificate", "0a01", "0d02")).status == 200);

    const auto reply = f.call(ca_call("DeleteCaCertificate", "0a01"));
    REQUIRE(reply.status == 200);
    CHECK(reply.body.at("Sn") == "0a01");
    CHECK(f.audit().back().find("| DeleteCaCertificate | sn=0a01 devices_removed=2 | ok |") != std::string::npos);
    CHECK(f.call(ca_call("GetCaCertificate", "0a01")).code() == "FindCaBySnError");
    CHECK(f.call(device_call("GetDeviceCertificate", "0a01", "0d01")).code() == "FindDeviceBySnError");
    CHECK(f.call(device_call("GetDeviceCertificate", "0a01", "0d02")).code() == "FindDeviceBySnError");
}

TEST_CASE("ListCaCertificate pages the registered CAs in Sn order", "[api][ca]") {
    ApiFixture f;
    for (const char* sn : {"0a03", "0a01", "0a02"}) REQUIRE(register_ca(f, test_ca(sn, "Root")).status == 200);
    const auto page = f.call({{"Action", "ListCaCertificate"}, {"MqttInstanceId", "local"}, {"PageNo", "1"}, {"PageSize", "2"}});
    REQUIRE(page.status == 200);
    const auto& data = page.body.at("Data");
    CHECK(data.at("Total") == 3);
    CHECK(data.at("PageNo") == 1);
    CHECK(data.at("PageSize") == 2);
    REQUIRE(data.at("CaCertificateVOS").size() == 2);
    CHECK(data.at("CaCertificateVOS")[0].at("Sn") == "0a01");
    CHECK(data.at("CaCertificateVOS")[1].at("Sn") == "0a02");
    const auto past = f.call({{"Action", "ListCaCertificate"}, {"MqttInstanceId", "local"}, {"PageNo", "9"}, {"PageSize", "2"}});
    REQUIRE(past.status == 200);
    CHECK(past.body.at("Data").at("CaCertificateVOS").empty());
    CHECK(past.body.at("Data").at("Total") == 3);
}
