#include <catch2/catch.hpp>

#include <set>
#include <string>

#include "devcert/api.hpp"

namespace {

// 8-4-4-4-12 uppercase hex, version 4, RFC 4122 variant.
bool is_uppercase_uuid4(const std::string& id) {
    if (id.size() != 36) return false;
    for (std::size_t i = 0; i < id.size(); ++i) {
        const char c = id[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return id[14] == '4' && std::string("89AB").find(id[19]) != std::string::npos;
}

}  // namespace

TEST_CASE("a RequestId is an uppercase 8-4-4-4-12 hex UUID", "[api][request_id]") {
    CHECK_FALSE(is_uppercase_uuid4("020f6a43-19e6-4b6e-b846-44eb31df0000"));  // the check itself rejects lowercase
    for (int i = 0; i < 100; ++i) {
        const auto id = devcert::new_request_id();
        INFO(id);
        CHECK(is_uppercase_uuid4(id));
    }
}

TEST_CASE("RequestIds do not repeat", "[api][request_id]") {
    std::set<std::string> ids;
    for (int i = 0; i < 10000; ++i) ids.insert(devcert::new_request_id());
    CHECK(ids.size() == 10000);
}
