// Certificates and registrations the API tests share.
#pragma once

#include <string>

#include "api_fixture.hpp"
#include "pki.hpp"

namespace devcert::test {

inline Issued test_ca(const std::string& serial, const std::string& name) {
    CertSpec spec;
    spec.serial_hex = serial;
    spec.common_name = name;
    spec.is_ca = true;
    return make_root(spec);
}

inline Issued test_device(const Issued& ca, const std::string& serial) {
    CertSpec spec;
    spec.serial_hex = serial;
    spec.common_name = "device-" + serial;
    return issue(spec, ca);
}

/// A verification certificate: signed by `ca`, with `code` as its CN.
inline Issued verification_for(const Issued& ca, const std::string& code, const std::string& serial = "7e01") {
    CertSpec spec;
    spec.serial_hex = serial;
    spec.common_name = code;
    return issue(spec, ca);
}

inline std::string register_code(ApiFixture& f) {
    auto reply = f.call({{"Action", "GetRegisterCode"}, {"MqttInstanceId", "local"}});
    REQUIRE(reply.status == 200);
    return reply.body.at("RegisterCode").get<std::string>();
}

inline Reply register_ca(ApiFixture& f, const Issued& ca, const std::string& name = "test ca") {
    const auto verification = verification_for(ca, register_code(f));
    return f.call({{"Action", "RegisterCaCertificate"},
                   {"MqttInstanceId", "local"},
                   {"CaName", name},
                   {"CaContent", ca.pem()},
                   {"VerificationContent", verification.pem()}});
}

inline Reply register_device(ApiFixture& f, const Issued& device, const char* status = nullptr) {
    Params params{{"Action", "RegisterDeviceCertificate"}, {"MqttInstanceId", "local"}, {"DeviceContent", device.pem()}};
    if (status != nullptr) params.emplace_back("Status", status);
    return f.call(params);
}

inline Params device_call(const std::string& action, const std::string& ca_sn, const std::string& device_sn) {
    return {{"Action", action}, {"MqttInstanceId", "local"}, {"CaSn", ca_sn}, {"DeviceSn", device_sn}};
}

inline Params ca_call(const std::string& action, const std::string& sn) {
    return {{"Action", action}, {"MqttInstanceId", "local"}, {"Sn", sn}};
}

}  // namespace devcert::test
