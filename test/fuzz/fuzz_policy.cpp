// The admin policy file parser (AccessPolicy::parse) and its decisions.
//
// Input: policy text as an operator would write it.
// Properties: parsing never throws; a policy that parses gives the same
// decisions after a round trip through nlohmann::json (so nothing depends on
// spelling the parser does not look at); a Deny of everything for everyone
// appended to it denies every call (an explicit Deny wins); check() and
// check_permission() agree; glob_match matches a pattern against itself.
#include <nlohmann/json.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "devcert/api.hpp"
#include "devcert/policy.hpp"
#include "fuzz_check.hpp"

namespace {

using devcert::AccessPolicy;
using devcert::Caller;
using devcert::PolicyDecision;

std::array<Caller, 4> callers() {
    Caller root;
    root.user = "root";
    root.groups = {"root"};
    Caller ops;
    ops.uid = 1000;
    ops.gid = 1000;
    ops.user = "ops";
    ops.groups = {"ops", "mqtt-admins"};
    Caller unnamed;
    unnamed.uid = 1234;
    unnamed.gid = 1234;
    Caller broker;
    broker.uid = 110;
    broker.gid = 110;
    broker.user = "mosquitto";
    broker.groups = {"mosquitto", "bigops"};
    return {root, ops, unnamed, broker};
}

constexpr std::array<std::string_view, 5> kPermissions{"mq:GetStats", "mq:UnregisterDeviceCertificate",
                                                       "mq:DeleteCaCertificate", "MQ:LISTCACERTIFICATE", ""};
constexpr std::array<std::string_view, 4> kInstances{"local", "Local", "prod-1", ""};

void check_consistent(const AccessPolicy& policy) {
    for (const auto& caller : callers()) {
        for (const auto permission : kPermissions) {
            const PolicyDecision overall = policy.check_permission(caller, permission);
            for (const auto instance : kInstances) {
                const PolicyDecision here = policy.check(caller, permission, instance);
                if (overall == PolicyDecision::deny_permission) {
                    FUZZ_CHECK(here == PolicyDecision::deny_permission, permission);
                }
                if (here == PolicyDecision::allow) FUZZ_CHECK(overall == PolicyDecision::allow, permission);
            }
        }
    }
}

void check_same(const AccessPolicy& a, const AccessPolicy& b) {
    FUZZ_CHECK(a.statement_count() == b.statement_count(), "statement count changed in a round trip");
    for (const auto& caller : callers()) {
        for (const auto permission : kPermissions) {
            for (const auto instance : kInstances) {
                FUZZ_CHECK(a.check(caller, permission, instance) == b.check(caller, permission, instance),
                           "a decision changed in a round trip");
            }
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);

    // Any pattern matches itself; '*' matches anything.
    FUZZ_CHECK(devcert::glob_match(text, text, false), "a pattern does not match itself");
    FUZZ_CHECK(devcert::glob_match(text, text, true), "a pattern does not match itself ignoring case");
    FUZZ_CHECK(devcert::glob_match("*", text, false), "'*' does not match everything");

    auto policy = AccessPolicy::parse(text, "fuzz");
    if (!policy) {
        FUZZ_CHECK(policy.error().message.starts_with("admin policy 'fuzz'"), policy.error().message);
        return 0;
    }
    check_consistent(policy.value());

    auto doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    FUZZ_CHECK(!doc.is_discarded() && doc.is_object(), "the policy parsed but the JSON does not");
    auto again = AccessPolicy::parse(doc.dump(), "fuzz");
    FUZZ_CHECK(again.ok(), "the policy does not parse after a JSON round trip");
    check_same(policy.value(), again.value());

    doc["Statement"].push_back({{"Effect", "Deny"}, {"Principal", "*"}, {"Action", "*"}, {"Resource", "*"}});
    auto denied = AccessPolicy::parse(doc.dump(), "fuzz");
    FUZZ_CHECK(denied.ok(), "the policy does not parse with a Deny appended");
    for (const auto& caller : callers()) {
        for (const auto permission : kPermissions) {
            FUZZ_CHECK(denied->check_permission(caller, permission) == PolicyDecision::deny_permission,
                       "a Deny of everything does not win");
            for (const auto instance : kInstances) {
                FUZZ_CHECK(denied->check(caller, permission, instance) != PolicyDecision::allow,
                           "a Deny of everything does not win");
            }
        }
    }
    return 0;
}
