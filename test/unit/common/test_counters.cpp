#include <catch2/catch.hpp>

#include <algorithm>

#include "devcert/counters.hpp"

using namespace devcert;

namespace {
std::uint64_t named(const Counters& c, const std::string& name) {
    auto all = c.snapshot();
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& kv) { return kv.first == name; });
    REQUIRE(it != all.end());
    return it->second;
}
}  // namespace

TEST_CASE("every refusal reason has its own named counter", "[counters]") {
    Counters c;
    for (std::size_t i = 0; i < kRefusalCount; ++i) {
        for (std::size_t n = 0; n <= i; ++n) c.refused(static_cast<Refusal>(i));
    }
    for (std::size_t i = 0; i < kRefusalCount; ++i) {
        auto r = static_cast<Refusal>(i);
        CHECK(named(c, std::string("connections_refused.") + refusal_key(r)) == i + 1);
        CHECK(std::string(refusal_reason(r)).find('_') == std::string::npos);
    }
}

TEST_CASE("admin calls are counted by operation and result", "[counters]") {
    Counters c;
    c.admin_call("InactivateDeviceCertificate", "Success");
    c.admin_call("InactivateDeviceCertificate", "Success");
    c.admin_call("InactivateDeviceCertificate", "FindDeviceBySnError");
    CHECK(c.admin_calls("InactivateDeviceCertificate", "Success") == 2);
    CHECK(c.admin_calls("InactivateDeviceCertificate", "FindDeviceBySnError") == 1);
    CHECK(c.admin_calls("GetStats", "Success") == 0);
    CHECK(named(c, "admin_calls.InactivateDeviceCertificate.Success") == 2);
}

TEST_CASE("the online registry counts sessions per device", "[counters]") {
    OnlineRegistry online;
    online.add("0a", "01");
    online.add("0a", "01");
    online.add("0a", "02");
    CHECK(online.connected() == 3);
    CHECK(online.online("0a", "01"));
    online.remove("0a", "01");
    CHECK(online.online("0a", "01"));
    online.remove("0a", "01");
    CHECK_FALSE(online.online("0a", "01"));
    online.remove("0a", "01");  // unknown: ignored, never negative
    CHECK(online.connected() == 1);
}
