#include <catch2/catch.hpp>

#include "devcert/api.hpp"
#include "devcert/policy.hpp"
#include "api_fixture.hpp"

using namespace devcert;
using devcert::test::named_caller;

namespace {

AccessPolicy parsed(std::string_view text) {
    auto policy = AccessPolicy::parse(text, "test.json");
    if (!policy) FAIL(policy.error().message);
    return std::move(policy).value();
}

std::string parse_error(std::string_view text) {
    auto policy = AccessPolicy::parse(text, "/etc/devcert/policy.json");
    REQUIRE_FALSE(policy.ok());
    return policy.error().message;
}

const Caller ops = named_caller(1000, "ops", {"ops", "mqtt-admins"});
const Caller viewer = named_caller(1001, "viewer", {"viewer"});
const Caller nameless = named_caller(4242, "", {});

}  // namespace

TEST_CASE("glob patterns match with '*' anywhere", "[api][policy]") {
    CHECK(glob_match("*", "", false));
    CHECK(glob_match("mq:*", "mq:GetStats", true));
    CHECK(glob_match("mq:Get*", "mq:GetCaCertificate", true));
    CHECK_FALSE(glob_match("mq:Get*", "mq:ListCaCertificate", true));
    CHECK(glob_match("mq:*Certificate", "mq:DeleteCaCertificate", true));
    CHECK(glob_match("MQ:getstats", "mq:GetStats", true));
    CHECK_FALSE(glob_match("LOCAL", "local", false));
    CHECK(glob_match("prod-*-eu", "prod-7-eu", false));
    CHECK_FALSE(glob_match("prod-*-eu", "prod-7-us", false));
    CHECK(glob_match("a*b*c", "aXXbYYc", false));
    CHECK_FALSE(glob_match("a*b*c", "aXXbYY", false));
}

TEST_CASE("an Allow statement grants its actions on its resources to its principals", "[api][policy]") {
    const auto policy = parsed(R"({"Version":"1","Statement":[
        {"Effect":"Allow","Principal":{"user":["ops"]},"Action":["mq:*"],"Resource":["local"]}]})");
    CHECK(policy.check(ops, "mq:UnregisterDeviceCertificate", "local") == PolicyDecision::allow);
    CHECK(policy.check(viewer, "mq:GetStats", "local") == PolicyDecision::deny_permission);
}

TEST_CASE("principals match by user, by any group, and by uid", "[api][policy]") {
    const auto policy = parsed(R"({"Statement":[
        {"Effect":"Allow","Principal":{"group":["mqtt-admins"]},"Action":"mq:GetStats","Resource":"*"},
        {"Effect":"Allow","Principal":{"uid":[4242, "1001"]},"Action":"mq:ListCaCertificate","Resource":"*"}]})");
    CHECK(policy.check(ops, "mq:GetStats", "local") == PolicyDecision::allow);
    CHECK(policy.check(nameless, "mq:ListCaCertificate", "local") == PolicyDecision::allow);
    CHECK(policy.check(viewer, "mq:ListCaCertificate", "local") == PolicyDecision::allow);
    CHECK(policy.check(viewer, "mq:GetStats", "local") == PolicyDecision::deny_permission);
}

TEST_CASE("a caller without a passwd entry matches only by uid or '*'", "[api][policy]") {
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Allow","Principal":{"user":[""]},"Action":"mq:*","Resource":"*"}]})"),
               Catch::Contains("Statement[0].Principal.user must not hold an empty string"));
    const auto by_name = parsed(R"({"Statement":[
        {"Effect":"Allow","Principal":{"user":["ops"],"group":["ops"]},"Action":"mq:*","Resource":"*"}]})");
    CHECK(by_name.check(nameless, "mq:GetStats", "local") == PolicyDecision::deny_permission);
    const auto anyone = parsed(R"({"Statement":[{"Effect":"Allow","Principal":"*","Action":"mq:*","Resource":"*"}]})");
    CHECK(anyone.check(nameless, "mq:GetStats", "local") == PolicyDecision::allow);
}

TEST_CASE("action wildcards grant families of permissions", "[api][policy]") {
    const auto policy = parsed(R"({"Statement":[
        {"Effect":"Allow","Principal":"*","Action":["mq:Get*","mq:List*"],"Resource":"*"}]})");
    CHECK(policy.check(viewer, "mq:GetCaCertificate", "local") == PolicyDecision::allow);
    CHECK(policy.check(viewer, "mq:ListDeviceCertificate", "local") == PolicyDecision::allow);
    CHECK(policy.check(viewer, "mq:DeleteCaCertificate", "local") == PolicyDecision::deny_permission);
}

TEST_CASE("an explicit Deny wins over any Allow", "[api][policy]") {
    const auto policy = parsed(R"({"Statement":[
        {"Effect":"Allow","Principal":{"user":["ops"]},"Action":"mq:*","Resource":"*"},
        {"Effect":"Deny","Principal":{"group":["mqtt-admins"]},"Action":"mq:Delete*","Resource":"*"}]})");
    CHECK(policy.check(ops, "mq:DeleteCaCertificate", "local") == PolicyDecision::deny_permission);
    CHECK(policy.check_permission(ops, "mq:DeleteCaCertificate") == PolicyDecision::deny_permission);
    CHECK(policy.check(ops, "mq:GetCaCertificate", "local") == PolicyDecision::allow);
}

TEST_CASE("a permission allowed on another instance only is an instance refusal", "[api][policy]") {
    const auto policy = parsed(R"({"Statement":[
        {"Effect":"Allow","Principal":{"user":["ops"]},"Action":"mq:*","Resource":["prod-*"]}]})");
    CHECK(policy.check_permission(ops, "mq:GetStats") == PolicyDecision::allow);
    CHECK(policy.check(ops, "mq:GetStats", "prod-eu") == PolicyDecision::allow);
    CHECK(policy.check(ops, "mq:GetStats", "local") == PolicyDecision::deny_instance);
}

TEST_CASE("a Deny on one instance refuses only that instance", "[api][policy]") {
    const auto policy = parsed(R"({"Statement":[
        {"Effect":"Allow","Principal":{"user":["ops"]},"Action":"mq:*","Resource":"*"},
        {"Effect":"Deny","Principal":{"user":["ops"]},"Action":"mq:*","Resource":"local"}]})");
    CHECK(policy.check_permission(ops, "mq:GetStats") == PolicyDecision::allow);
    CHECK(policy.check(ops, "mq:GetStats", "local") == PolicyDecision::deny_instance);
    CHECK(policy.check(ops, "mq:GetStats", "other") == PolicyDecision::allow);
}

TEST_CASE("the built-in policy allows root and the broker's own uid, nobody else", "[api][policy]") {
    const auto policy = AccessPolicy::builtin(1000);
    CHECK(policy.check(named_caller(0, "root", {"root"}), "mq:DeleteCaCertificate", "local") == PolicyDecision::allow);
    CHECK(policy.check(ops, "mq:DeleteCaCertificate", "any") == PolicyDecision::allow);
    CHECK(policy.check(viewer, "mq:GetStats", "local") == PolicyDecision::deny_permission);
}

TEST_CASE("a policy that is not JSON is refused naming the file and the line", "[api][policy]") {
    const auto message = parse_error("{\n  \"Statement\": [\n    {\"Effect\": \"Allow\",,\n  ]\n}\n");
    CHECK_THAT(message, Catch::Contains("/etc/devcert/policy.json"));
    CHECK_THAT(message, Catch::Contains("line 3"));
}

TEST_CASE("a policy cut short is refused naming its last line", "[api][policy]") {
    const auto message = parse_error("{\n\"Statement\": [\n");
    CHECK_THAT(message, Catch::Contains("line 3") || Catch::Contains("line 2"));
}

TEST_CASE("policy shapes are checked and errors say what is wrong", "[api][policy]") {
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Permit","Principal":"*","Action":"mq:*","Resource":"*"}]})"),
               Catch::Contains("Statement[0].Effect") && Catch::Contains("Permit"));
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Allow","Principal":"*","Action":[],"Resource":"*"}]})"),
               Catch::Contains("Statement[0].Action must not be empty"));
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Allow","Principal":"*","Action":"mq:*"}]})"),
               Catch::Contains("Statement[0] has no Resource"));
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Allow","Principal":{"users":["x"]},"Action":"mq:*","Resource":"*"}]})"),
               Catch::Contains("unknown key \"users\""));
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Allow","Principal":{"uid":[-1]},"Action":"mq:*","Resource":"*"}]})"),
               Catch::Contains("Statement[0].Principal.uid[0]"));
    CHECK_THAT(parse_error(R"({"Statement":[{"Effect":"Allow","Principal":"*","Action":[7],"Resource":"*"}]})"),
               Catch::Contains("Statement[0].Action[0] must be a string"));
    CHECK_THAT(parse_error(R"({"Statements":[]})"), Catch::Contains("unknown key \"Statements\""));
    CHECK_THAT(parse_error(R"([])"), Catch::Contains("JSON object"));
}

TEST_CASE("a policy file that cannot be read is refused naming it", "[api][policy]") {
    auto policy = AccessPolicy::load("/nonexistent/devcert-policy.json");
    REQUIRE_FALSE(policy.ok());
    CHECK_THAT(policy.error().message, Catch::Contains("/nonexistent/devcert-policy.json"));
}
