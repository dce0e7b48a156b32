#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

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

namespace {

using Clock = std::chrono::steady_clock;

std::int64_t ms_since(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// `count` devices under `ca_sn`, written straight into the store in large
// transactions (the deletion is under test, not the registration).
void fill_devices(ApiFixture& f, const std::string& ca_sn, std::uint64_t count, std::size_t pem_size) {
    const std::string pem(pem_size, 'p');
    for (std::uint64_t first = 0; first < count; first += 20'000) {
        auto outcome = f.write_records([&](WriteView& view) -> Outcome {
            for (std::uint64_t i = first; i < std::min(count, first + 20'000); ++i) {
                DeviceRecord d;
                d.ca_sn = ca_sn;
                d.device_sn = fmt::format("{:08x}", i + 1);
                d.device_name = "device";
                d.content_pem = pem;
                if (auto r = view.insert_device(d, "AutoRegister", "connection"); !r) return r;
            }
            return Ok{};
        });
        REQUIRE(outcome.ok());
    }
}

}  // namespace

// LMDB only: measures the LMDB store's bounded deletion commits against its connection-path reader.
TEST_CASE("deleting a CA with 100,000 devices keeps checks served and other writes waiting briefly",
          "[api][ca][slow]" DEVCERT_LMDB_ONLY) {
    ApiFixture f;
    const auto big = test_ca("0a01", "Root A");
    const auto other = test_ca("0a02", "Root B");
    REQUIRE(register_ca(f, big).status == 200);
    REQUIRE(register_ca(f, other).status == 200);
    REQUIRE(register_device(f, test_device(other, "0d01")).status == 200);
    constexpr std::uint64_t kDevices = 100'000;
    fill_devices(f, "0a01", kDevices, 700);

    std::atomic<bool> done{false};
    // Catch2's assertions are for the main thread only: the deleter keeps
    // the raw response, checked after the join.
    ApiResponse deleted_raw;
    const auto started = Clock::now();
    std::thread deleter([&] {
        ApiRequest request;
        request.params = ca_call("DeleteCaCertificate", "0a01");
        deleted_raw = f.api->handle(root_caller(), request);
        done = true;
    });

    // Connection checks (a fresh snapshot per check) and admin writes on
    // another CA, all the while.
    StatusReader reader(*f.store);
    std::int64_t worst_check_ms = 0;
    std::int64_t worst_write_ms = 0;
    unsigned checks = 0;
    unsigned writes = 0;
    bool saw_half_deleted = false;
    while (!done.load()) {
        const auto check = Clock::now();
        REQUIRE(reader.refresh());
        DeviceStatusView view;
        CertStatus ca_status = CertStatus::active;
        REQUIRE(reader.device_status("0a02", "0d01", view) == Lookup::found);
        // While the deletion runs, the CA's devices must be refused: the CA
        // is no longer active from its first commit on.
        if (reader.ca_status("0a01", ca_status) == Lookup::found) {
            DeviceStatusView victim;
            const Lookup found = reader.device_status("0a01", fmt::format("{:08x}", kDevices), victim);
            if (found == Lookup::found && reader.device_status("0a01", "00000001", victim) == Lookup::not_found) {
                saw_half_deleted = true;
                CHECK(ca_status != CertStatus::active);
            }
        }
        reader.release();
        worst_check_ms = std::max(worst_check_ms, ms_since(check));
        ++checks;

        const auto write = Clock::now();
        const char* action = writes % 2 == 0 ? "InactivateDeviceCertificate" : "ActiveDeviceCertificate";
        REQUIRE(f.call(device_call(action, "0a02", "0d01")).status == 200);
        worst_write_ms = std::max(worst_write_ms, ms_since(write));
        ++writes;
    }
    deleter.join();
    const Reply deleted = ApiFixture::to_reply(deleted_raw);
    const auto total_ms = ms_since(started);
    INFO("deletion " << total_ms << " ms; " << checks << " checks (worst " << worst_check_ms << " ms), " << writes
                     << " writes (worst " << worst_write_ms << " ms)");
    REQUIRE(deleted.status == 200);
    const auto audit = f.audit();
    CHECK(std::any_of(audit.begin(), audit.end(), [](const std::string& line) {
        return line.find("| DeleteCaCertificate | sn=0a01 devices_removed=100000 | ok |") != std::string::npos;
    }));
    CHECK(f.call(ca_call("GetCaCertificate", "0a01")).code() == "FindCaBySnError");
    CHECK(f.call(device_call("GetDeviceCertificate", "0a02", "0d01")).status == 200);
    auto counted = f.read_records([&](ReadView& view) -> Outcome {
        CHECK(*view.device_count() == 1);
        CHECK(*view.ca_count() == 1);
        return Ok{};
    });
    REQUIRE(counted.ok());
    CHECK(writes >= 3);
    CHECK(worst_write_ms < 500);
    CHECK(worst_check_ms < 250);
    (void)saw_half_deleted;
}
