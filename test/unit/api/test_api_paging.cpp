#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <functional>
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
        auto outcome = write_records([](WriteView& view) -> Outcome {
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

namespace {

struct TokenWalk {
    std::vector<std::string> keys;
    unsigned calls = 0;
};

std::string key_of(const nlohmann::json& item) {
    return item.at("CaSn").get<std::string>() + "/" + item.at("DeviceSn").get<std::string>();
}

// Walks a device list with NextToken from its first page.
TokenWalk walk_tokens(FleetFixture& f, const std::string& action, unsigned size, const char* ca,
                      const std::function<void(unsigned)>& between_pages = {}) {
    TokenWalk walk;
    auto reply = f.page(action, 1, std::to_string(size), ca);
    for (;;) {
        REQUIRE(reply.status == 200);
        ++walk.calls;
        const auto& data = reply.body.at("Data");
        for (const auto& item : data.at("DeviceCertificateVOS")) walk.keys.push_back(key_of(item));
        if (!data.contains("NextToken")) break;
        REQUIRE(walk.calls < 1000);
        if (between_pages) between_pages(walk.calls);
        Params params{{"Action", action}, {"MqttInstanceId", "local"}, {"PageSize", std::to_string(size)},
                      {"NextToken", data.at("NextToken").get<std::string>()}};
        if (ca != nullptr) params.emplace_back("CaSn", ca);
        reply = f.call(params);
    }
    return walk;
}

Params token_call(const std::string& action, const std::string& token, const char* ca = nullptr) {
    Params params{{"Action", action}, {"MqttInstanceId", "local"}, {"PageSize", "10"}, {"NextToken", token}};
    if (ca != nullptr) params.emplace_back("CaSn", ca);
    return params;
}

std::string first_token(FleetFixture& f, const std::string& action, const char* ca = nullptr) {
    const auto reply = f.page(action, 1, "10", ca);
    REQUIRE(reply.status == 200);
    return reply.body.at("Data").at("NextToken").get<std::string>();
}

}  // namespace

// LMDB only: the fleet store refuses NextToken (documented; it pages by PageNo).
TEST_CASE("NextToken walks a list page by page to the same records as PageNo", "[api][paging][token]" DEVCERT_LMDB_ONLY) {
    FleetFixture f;
    const auto by_page = f.walk("ListDeviceCertificateByCaSn", 7, "0a01", 250);
    const auto by_token = walk_tokens(f, "ListDeviceCertificateByCaSn", 7, "0a01");
    CHECK(by_token.keys == by_page);
    CHECK(by_token.calls == 36);  // 35 full pages of 7 and the last 5
    CHECK(walk_tokens(f, "ListDeviceCertificate", 100, nullptr).keys == f.walk("ListDeviceCertificate", 100, nullptr, 253));

    // The last page carries no token; a page that ends exactly at the end
    // may carry one whose next page is empty and tokenless.
    const auto last = f.page("ListDeviceCertificateByCaSn", 1, "3", "0a02");
    REQUIRE(last.status == 200);
    if (last.body.at("Data").contains("NextToken")) {
        const auto after = f.call(token_call("ListDeviceCertificateByCaSn",
                                             last.body.at("Data").at("NextToken").get<std::string>(), "0a02"));
        CHECK(after.body.at("Data").at("DeviceCertificateVOS").empty());
        CHECK_FALSE(after.body.at("Data").contains("NextToken"));
    }
    const auto small = f.page("ListDeviceCertificateByCaSn", 1, "10", "0a02");
    CHECK_FALSE(small.body.at("Data").contains("NextToken"));
}

// LMDB only: the fleet store refuses NextToken (documented; it pages by PageNo).
TEST_CASE("NextToken continues after the last record served, whatever changed in between", "[api][paging][token]" DEVCERT_LMDB_ONLY) {
    FleetFixture f;
    // Between pages: delete the next record to be served and the one just
    // served, and insert one ahead of the cursor and one behind it.
    const auto walk = walk_tokens(f, "ListDeviceCertificateByCaSn", 10, "0a01", [&](unsigned page) {
        if (page != 3) return;
        REQUIRE(f.call(device_call("DeleteDeviceCertificate", "0a01", "101e")).status == 200);  // 31st, next
        REQUIRE(f.call(device_call("DeleteDeviceCertificate", "0a01", "101d")).status == 200);  // 30th, served
        auto outcome = f.write_records([](WriteView& view) -> Outcome {
            for (const char* sn : {"1005a", "1100"}) {  // "1005a" sorts among served keys, "1100" ahead
                DeviceRecord d;
                d.ca_sn = "0a01";
                d.device_sn = sn;
                d.device_name = "late";
                if (auto r = view.insert_device(d, "test", "test"); !r) return r;
            }
            return Ok{};
        });
        REQUIRE(outcome.ok());
    });
    std::vector<std::string> expected;
    for (unsigned i = 0; i < 250; ++i) expected.push_back(fmt::format("0a01/{:04x}", 0x1000 + i));
    expected.erase(std::find(expected.begin(), expected.end(), "0a01/101e"));
    expected.push_back("0a01/1100");
    CHECK(walk.keys == expected);
}

// LMDB only: the fleet store refuses NextToken (documented; it pages by PageNo).
TEST_CASE("a tampered, foreign or misdirected NextToken is refused with a clear Detail", "[api][paging][token]" DEVCERT_LMDB_ONLY) {
    FleetFixture f;
    const std::string by_ca = first_token(f, "ListDeviceCertificateByCaSn", "0a01");
    const std::string all = first_token(f, "ListDeviceCertificate");

    auto refused = [&](const Params& params) {
        const auto reply = f.call(params);
        CHECK(reply.status == 400);
        CHECK(reply.code() == "ParameterFieldCheckFailed");
        CHECK_THAT(reply.body.value("Detail", ""), Catch::Contains("NextToken"));
    };
    // Every single-character change.
    for (std::size_t i = 0; i < by_ca.size(); ++i) {
        std::string tampered = by_ca;
        tampered[i] = tampered[i] == 'A' ? 'B' : 'A';
        INFO("changed at " << i);
        refused(token_call("ListDeviceCertificateByCaSn", tampered, "0a01"));
    }
    refused(token_call("ListDeviceCertificateByCaSn", by_ca.substr(0, by_ca.size() - 2), "0a01"));
    refused(token_call("ListDeviceCertificateByCaSn", "not-a-token", "0a01"));
    refused(token_call("ListDeviceCertificateByCaSn", by_ca, "0a02"));  // another CA's list
    refused(token_call("ListDeviceCertificate", by_ca));                // another list
    refused(token_call("ListDeviceCertificateByCaSn", all, "0a01"));
    refused(token_call("ListCaCertificate", all));

    // A token of another store (same list, same position) is foreign.
    FleetFixture other;
    refused(token_call("ListDeviceCertificateByCaSn", first_token(other, "ListDeviceCertificateByCaSn", "0a01"), "0a01"));

    // PageNo and NextToken together are ambiguous; neither is missing.
    Params both = token_call("ListDeviceCertificate", all);
    both.emplace_back("PageNo", "2");
    refused(both);
    const auto neither = f.call({{"Action", "ListDeviceCertificate"}, {"MqttInstanceId", "local"}, {"PageSize", "10"}});
    CHECK(neither.code() == "ParameterFieldCheckFailed");
}

// LMDB only: the fleet store refuses NextToken (documented; it pages by PageNo).
TEST_CASE("ListCaCertificate pages with NextToken too", "[api][paging][token]" DEVCERT_LMDB_ONLY) {
    FleetFixture f;
    const auto first = f.call({{"Action", "ListCaCertificate"}, {"MqttInstanceId", "local"}, {"PageNo", "1"}, {"PageSize", "1"}});
    REQUIRE(first.status == 200);
    const auto& data = first.body.at("Data");
    REQUIRE(data.at("CaCertificateVOS").size() == 1);
    const auto second = f.call({{"Action", "ListCaCertificate"}, {"MqttInstanceId", "local"}, {"PageSize", "1"},
                                {"NextToken", data.at("NextToken").get<std::string>()}});
    REQUIRE(second.status == 200);
    REQUIRE(second.body.at("Data").at("CaCertificateVOS").size() == 1);
    CHECK(second.body.at("Data").at("CaCertificateVOS")[0].at("Sn") == "0a02");
    CHECK(data.at("CaCertificateVOS")[0].at("Sn") == "0a01");
}
