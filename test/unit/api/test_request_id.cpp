#include <catch2/catch.hpp>

#include <regex>
#include <set>

#include "devcert/api.hpp"

TEST_CASE("a RequestId is an uppercase 8-4-4-4-12 hex UUID", "[api][request_id]") {
    const std::regex shape("^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$");
    for (int i = 0; i < 100; ++i) {
        const auto id = devcert::new_request_id();
        INFO(id);
        CHECK(std::regex_match(id, shape));
    }
}

TEST_CASE("RequestIds do not repeat", "[api][request_id]") {
    std::set<std::string> ids;
    for (int i = 0; i < 10000; ++i) ids.insert(devcert::new_request_id());
    CHECK(ids.size() == 10000);
}
