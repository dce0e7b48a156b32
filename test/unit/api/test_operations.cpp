#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>

#include "devcert/operations.hpp"

using namespace devcert;

TEST_CASE("the operations table holds the reference's 13 operations and the 4 additions", "[api][operations]") {
    const std::map<std::string, std::string> permissions{
        {"GetRegisterCode", "mq:GetRegisterCode"},
        {"RegisterCaCertificate", "mq:RegisterCa"},
        {"ActiveCaCertificate", "mq:ActiveCaCertificate"},
        {"InactivateCaCertificate", "mq:UnregisterCaCertificate"},
        {"DeleteCaCertificate", "mq:DeleteCaCertificate"},
        {"GetCaCertificate", "mq:GetCaCertificate"},
        {"ListCaCertificate", "mq:ListCaCertificate"},
        {"ActiveDeviceCertificate", "mq:ActiveDeviceCertificate"},
        {"InactivateDeviceCertificate", "mq:UnregisterDeviceCertificate"},
        {"DeleteDeviceCertificate", "mq:DeleteDeviceCertificate"},
        {"GetDeviceCertificate", "mq:GetDeviceCertificate"},
        {"ListDeviceCertificate", "mq:ListDeviceCertificate"},
        {"ListDeviceCertificateByCaSn", "mq:ListDeviceCertificateByCaSn"},
        {"RegisterDeviceCertificate", "mq:RegisterDeviceCertificate"},
        {"RevokeDeviceCertificate", "mq:RevokeDeviceCertificate"},
        {"ListCertificateChanges", "mq:ListCertificateChanges"},
        {"GetStats", "mq:GetStats"},
    };
    REQUIRE(operations().size() == permissions.size());
    for (const auto& op : operations()) {
        INFO(op.name);
        REQUIRE(permissions.count(std::string(op.name)) == 1);
        CHECK(op.permission == permissions.at(std::string(op.name)));
        CHECK(op.handler != nullptr);
        CHECK_FALSE(op.help.empty());
        CHECK(find_operation(op.name) == &op);
    }
}

TEST_CASE("every operation takes a required MqttInstanceId and documents each parameter", "[api][operations]") {
    for (const auto& op : operations()) {
        INFO(op.name);
        const ParamSpec* instance = find_param(op, "MqttInstanceId");
        REQUIRE(instance != nullptr);
        CHECK(instance->required);
        std::set<std::string_view> names;
        for (const auto& p : op.params) {
            CHECK(names.insert(p.name).second);
            CHECK_FALSE(p.help.empty());
            CHECK(p.max_size > 0);
        }
    }
}

TEST_CASE("mutating operations are marked write, lookups read", "[api][operations]") {
    CHECK(find_operation("InactivateDeviceCertificate")->access == Access::write);
    CHECK(find_operation("RegisterCaCertificate")->access == Access::write);
    CHECK(find_operation("GetStats")->access == Access::read);
    CHECK(find_operation("ListCertificateChanges")->access == Access::read);
}

TEST_CASE("operation names match exactly, case included", "[api][operations]") {
    CHECK(find_operation("inactivatedevicecertificate") == nullptr);
    CHECK(find_operation("") == nullptr);
    CHECK(find_operation("GetStats ") == nullptr);
}

TEST_CASE("parameter values are validated into canonical text", "[api][operations]") {
    const auto& device = *find_operation("InactivateDeviceCertificate");
    const auto& sn = *find_param(device, "DeviceSn");
    CHECK(validate_param(sn, "0x0A:1B").value() == "0a1b");
    CHECK_FALSE(validate_param(sn, "").ok());
    CHECK_FALSE(validate_param(sn, "xyz").ok());
    CHECK_FALSE(validate_param(sn, std::string(129, 'a')).ok());

    const auto& list = *find_operation("ListDeviceCertificate");
    const auto& size = *find_param(list, "PageSize");
    CHECK(validate_param(size, "100").value() == "100");
    CHECK(validate_param(size, "007").value() == "7");
    CHECK_FALSE(validate_param(size, "101").ok());
    CHECK_FALSE(validate_param(size, "0").ok());
    CHECK_FALSE(validate_param(size, "-1").ok());
    CHECK_FALSE(validate_param(size, "+5").ok());
    CHECK_FALSE(validate_param(size, "1e2").ok());

    const auto& instance = *find_param(device, "MqttInstanceId");
    CHECK(validate_param(instance, "local").ok());
    CHECK_FALSE(validate_param(instance, std::string("lo\0cal", 6)).ok());
    CHECK_FALSE(validate_param(instance, "lo\ncal").ok());
    CHECK_FALSE(validate_param(instance, "\xc3\x28").ok());  // broken UTF-8
    CHECK(validate_param(instance, "caf\xc3\xa9").ok());

    const auto& status = *find_param(*find_operation("RegisterDeviceCertificate"), "Status");
    CHECK(validate_param(status, "0").ok());
    CHECK(validate_param(status, "1").ok());
    CHECK_FALSE(validate_param(status, "2").ok());

    const auto refused = validate_param(sn, "xyz");
    CHECK_THAT(refused.error().message, Catch::StartsWith("DeviceSn: "));
}
