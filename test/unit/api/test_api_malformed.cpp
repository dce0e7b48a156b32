#include <catch2/catch.hpp>

#include <fmt/format.h>

#include "api_pki.hpp"
#include "devcert/operations.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

// Every mutating operation, each with its required parameters valid, so that
// the one spoiled parameter is what a case tests.
std::vector<Params> valid_mutations(const std::string& code_ca_pem, const std::string& verification_pem,
                                    const std::string& device_pem) {
    return {
        device_call("InactivateDeviceCertificate", "0a01", "0d01"),
        device_call("ActiveDeviceCertificate", "0a01", "0d01"),
        device_call("DeleteDeviceCertificate", "0a01", "0d01"),
        device_call("RevokeDeviceCertificate", "0a01", "0d01"),
        ca_call("InactivateCaCertificate", "0a01"),
        ca_call("DeleteCaCertificate", "0a01"),
        {{"Action", "RegisterCaCertificate"}, {"MqttInstanceId", "local"}, {"CaName", "b"},
         {"CaContent", code_ca_pem}, {"VerificationContent", verification_pem}},
        {{"Action", "RegisterDeviceCertificate"}, {"MqttInstanceId", "local"}, {"DeviceContent", device_pem}},
    };
}

}  // namespace

TEST_CASE("200 malformed requests leave the store unchanged", "[api][malformed]") {
    ApiFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    REQUIRE(register_device(f, test_device(ca, "0d01")).status == 200);
    const auto ca_b = test_ca("0b01", "Root B");
    const auto valid = valid_mutations(ca_b.pem(), verification_for(ca_b, register_code(f)).pem(),
                                       test_device(ca, "0d02").pem());
    const std::string before = f.snapshot();

    // Ways to spoil one parameter value.
    const std::vector<std::string> bad_values{
        "", std::string("0a\0" "01", 5), "0x", "zz", "0a:", ":0a", "-0a", std::string(200, 'a'),
        "0a01\n", "\xff\xfe", std::string(9000, 'A'), " 0a01", "00", "0a 01",
    };
    int sent = 0;
    auto send = [&](const Params& params) {
        const auto reply = f.call(params);
        INFO(reply.body.dump());
        CHECK(reply.status != 200);
        ++sent;
    };
    for (const auto& base : valid) {
        // Each parameter spoiled in each way (the Action aside).
        for (std::size_t i = 1; i < base.size() && sent < 170; ++i) {
            for (const auto& bad : bad_values) {
                auto spoiled = base;
                // Free text that is still valid text would be a valid call: skip it.
                const ParamSpec* spec = find_param(*find_operation(base[0].second), spoiled[i].first);
                REQUIRE(spec != nullptr);
                if (spec->kind == ParamKind::text && spoiled[i].first != "MqttInstanceId" && validate_param(*spec, bad).ok()) {
                    continue;
                }
                spoiled[i].second = bad;
                // A PEM parameter with a plain string inside is wrong content, not a bad parameter.
                if (spoiled[i].first.find("Content") != std::string::npos && !bad.empty() && bad.size() <= 8192 &&
                    bad.find('\0') == std::string::npos && bad.find('\xff') == std::string::npos) {
                    spoiled[i].second = "-----BEGIN CERTIFICATE-----\n" + bad + "\n-----END CERTIFICATE-----\n";
                }
                send(spoiled);
                if (sent >= 170) break;
            }
        }
    }
    for (const auto& base : valid) {
        auto missing = base;
        missing.pop_back();
        send(missing);
        auto duplicated = base;
        duplicated.push_back(base.back());
        send(duplicated);
        auto unknown = base;
        unknown.emplace_back("Unknown", "1");
        send(unknown);
    }
    while (sent < 200) {
        send({{"Action", fmt::format("Inactivate\x01{}", sent)}, {"MqttInstanceId", "local"}});
        send({{"Action", "InactivateDeviceCertificate"}, {"MqttInstanceId", "other"}, {"CaSn", "0a01"}, {"DeviceSn", "0d01"}});
    }
    CHECK(sent >= 200);
    CHECK(f.snapshot() == before);
}
