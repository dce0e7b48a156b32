#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <set>
#include <vector>

#include "api_pki.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

// 250 devices under CA 0a01 and 3 under 0a02, written straight into the
// store: the listing is under test here, not the registration.
struct FleetFixture : ApiFixture {
    FleetFixture() {
        REQUIRE(register_ca(*this, test_ca("0a01", "Root A")).status == 200);
        REQUIRE(register_ca(*this, test_ca("0a02", "Root B")).status == 200);
        auto outcome = store->write([](WriteView& view) -> Outcome {
            auto add = [&](const std::string& ca, unsigned n) -> Outcome {
                DeviceRecord d;
                d.ca_sn = ca;
                d.device_sn = fmt::format("{:04x}", n);
                d.device_name = "device";
                d.content_pem = "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n";
                return view.insert_device(d, "test", "test");
            };
            for (unsigned i = 0; i < 250; ++i) {
                if (auto r = add("0a01", 0x1000 + i); !r) return r;
            }
            for (unsigned i = 0; i < 3; ++i) {
                if (auto r = add("0a02", 0x2000 + i); !r) return r;
            }
            return Ok{};
        });
        REQUIRE(outcome.ok());
    }

    Reply page(const std::string& action, unsigned no, const std::string& size, const char* ca = nullptr) {
        Params params{{"Action", action}, {"MqttInstanceId", "local"}, {"PageNo", std::to_string(no)}, {"PageSize", size}};
        if (ca != nullptr) params.emplace_back("CaSn", ca);
        return call(params);
    }

    // Walks every page; returns the keys in the order served.
    std::vector<std::string> walk(const std::string& action, unsigned size, const char* ca, std::uint64_t expected_total) {
        std::vector<std::string> keys;
        for (unsigned no = 1;; ++no) {
            auto reply = page(action, no, std::to_string(size), ca);
            REQUIRE(reply.status == 200);
            const auto& data = reply.body.at("Data");
            REQUIRE(data.at("Total") == expected_total);
            REQUIRE(data.at("PageNo") == no);
            REQUIRE(data.at("PageSize") == size);
            const auto& items = data.at("DeviceCertificateVOS");
            REQUIRE(items.size() <= size);
            for (const auto& item : items) keys.push_back(item.at("CaSn").get<std::string>() + "/" + item.at("DeviceSn").get<std::string>());
            if (items.size() < size) break;
            REQUIRE(no < 1000);
        }
        return keys;
    }
};

}  // namespace

TEST_CASE("250 devices page completely and in a stable order at PageSize 1, 7 and 100", "[api][paging]") {
    FleetFixture f;
    const auto reference = f.walk("ListDeviceCertificateByCaSn", 100, "0a01", 250);
    REQUIRE(reference.size() == 250);
    CHECK(std::set<std::string>(reference.begin(), reference.end()).size() == 250);
    CHECK(std::is_sorted(reference.begin(), reference.end()));
    for (unsigned size : {1u, 7u}) {
        INFO("PageSize " << size);
        CHECK(f.walk("ListDeviceCertificateByCaSn", size, "0a01", 250) == reference);
    }
    const auto everything = f.walk("ListDeviceCertificate", 7, nullptr, 253);
    CHECK(everything.size() == 253);
    CHECK(std::equal(reference.begin(), reference.end(), everything.begin()));
}

TEST_CASE("PageSize 101 and PageNo 0 are refused", "[api][paging]") {
    FleetFixture f;
    for (const char* action : {"ListDeviceCertificate", "ListDeviceCertificateByCaSn", "ListCaCertificate"}) {
        INFO(action);
        const bool by_ca = std::string(action) == "ListDeviceCertificateByCaSn";
        const auto big = f.page(action, 1, "101", by_ca ? "0a01" : nullptr);
        CHECK(big.status == 400);
        CHECK(big.code() == "ParameterFieldCheckFailed");
        CHECK_THAT(big.body.value("Detail", ""), Catch::Contains("PageSize"));
    }
    CHECK(f.page("ListDeviceCertificate", 0, "10").code() == "ParameterFieldCheckFailed");
    CHECK(f.call({{"Action", "ListDeviceCertificate"}, {"MqttInstanceId", "local"}, {"PageSize", "10"}}).code() ==
          "ParameterFieldCheckFailed");
}

TEST_CASE("a page past the end is empty and Total follows deletions", "[api][paging]") {
    FleetFixture f;
    const auto past = f.page("ListDeviceCertificateByCaSn", 4, "100", "0a01");
    REQUIRE(past.status == 200);
    CHECK(past.body.at("Data").at("DeviceCertificateVOS").empty());
    CHECK(past.body.at("Data").at("Total") == 250);

    for (const char* sn : {"1000", "1001", "10f9"}) REQUIRE(f.call(device_call("DeleteDeviceCertificate", "0a01", sn)).status == 200);
    CHECK(f.walk("ListDeviceCertificateByCaSn", 100, "0a01", 247).size() == 247);
    CHECK(f.walk("ListDeviceCertificate", 100, nullptr, 250).size() == 250);
    CHECK(f.walk("ListDeviceCertificateByCaSn", 7, "0a02", 3).size() == 3);
}

TEST_CASE("listing the devices of an unknown CA is FindCaBySnError", "[api][paging]") {
    FleetFixture f;
    const auto reply = f.page("ListDeviceCertificateByCaSn", 1, "10", "0bad");
    CHECK(reply.status == 500);
    CHECK(reply.code() == "FindCaBySnError");
}
