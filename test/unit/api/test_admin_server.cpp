// AdminServer end to end: the real Api on a real store behind the socket,
// called with libcurl as an operator's curl would.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <mutex>
#include <string>
#include <vector>

#include "devcert/admin_server.hpp"
#include "devcert/api.hpp"
#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"
#include "api_fixture.hpp"
#include "test_admin_server_support.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

struct ServerFixture : AdminHost {
    ServerFixture() {
        config.admin_socket = dir.file("admin.sock");
        config.admin_socket_mode = 0600;
    }

    std::unique_ptr<AdminServer> start() {
        auto server = AdminServer::start(context);
        if (!server) FAIL("admin server did not start: " << server.error().message);
        return std::move(*server);
    }
};

nlohmann::json parsed(const HttpReply& reply) {
    INFO(reply.body);
    auto body = nlohmann::json::parse(reply.body, nullptr, false);
    REQUIRE(body.is_object());
    return body;
}

// Uppercase hex, 8-4-4-4-12.
bool is_request_id(const std::string& id) {
    if (id.size() != 36) return false;
    for (std::size_t i = 0; i < id.size(); ++i) {
        const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        const char c = id[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return false;
    }
    return true;
}

}  // namespace

TEST_CASE("an operation called over the socket runs against the store and answers JSON", "[admin_server][e2e]") {
    ServerFixture fixture;
    auto server = fixture.start();
    const auto reply = http_get(fixture.config.admin_socket, "/?Action=GetRegisterCode&MqttInstanceId=local");
    REQUIRE(reply.status == 200);
    CHECK(reply.content_type == "application/json");
    const auto body = parsed(reply);
    CHECK(is_request_id(body.value("RequestId", std::string())));
    CHECK_FALSE(body.value("RegisterCode", std::string()).empty());
    CHECK(fixture.counters.admin_calls("GetRegisterCode", "Success") == 1);
}

TEST_CASE("a form body and a JSON body reach the same operation", "[admin_server][e2e]") {
    ServerFixture fixture;
    auto server = fixture.start();
    const auto form = http_post(fixture.config.admin_socket, "Action=GetRegisterCode&MqttInstanceId=local",
                                "application/x-www-form-urlencoded");
    const auto json = http_post(fixture.config.admin_socket,
                                R"({"Action":"GetRegisterCode","MqttInstanceId":"local"})", "application/json");
    REQUIRE(form.status == 200);
    REQUIRE(json.status == 200);
    CHECK(parsed(form)["RegisterCode"] == parsed(json)["RegisterCode"]);
}

TEST_CASE("the Api's errors and the transport's refusals come back with their codes", "[admin_server][e2e]") {
    ServerFixture fixture;
    auto server = fixture.start();
    const auto& socket = fixture.config.admin_socket;

    const auto unknown = http_get(socket, "/?Action=NoSuchThing");
    CHECK(unknown.status == 404);
    CHECK(parsed(unknown)["Code"] == "InvalidAction.NotFound");

    const auto missing = http_get(socket, "/?Action=InactivateDeviceCertificate&MqttInstanceId=local&CaSn=0a");
    CHECK(missing.status == 400);
    CHECK(parsed(missing)["Code"] == "ParameterFieldCheckFailed");

    const auto duplicated = http_post(
        socket, R"({"Action":"GetRegisterCode","MqttInstanceId":"local","MqttInstanceId":"local"})",
        "application/json");
    CHECK(duplicated.status == 400);
    CHECK(parsed(duplicated)["Code"] == "ParameterFieldCheckFailed");

    const auto not_found = http_get(socket, "/device?Action=GetRegisterCode&MqttInstanceId=local");
    CHECK(not_found.status == 404);
    CHECK(parsed(not_found)["Code"] == "InvalidAction.NotFound");

    const auto media = http_post(socket, "Action=GetRegisterCode", "text/plain");
    CHECK(media.status == 415);
    CHECK(parsed(media)["Code"] == "UnsupportedMediaType");

    HttpCall put;
    put.method = "PUT";
    put.target = "/?Action=GetRegisterCode&MqttInstanceId=local";
    const auto method = http(socket, put);
    CHECK(method.status == 405);
    CHECK(parsed(method)["Code"] == "MethodNotAllowed");

    const auto malformed = http_get(socket, "/?Action=GetRegisterCode&MqttInstanceId=lo%zzcal");
    CHECK(malformed.status == 400);
    CHECK(parsed(malformed)["Code"] == "ParameterFieldCheckFailed");

    std::string huge(kMaxRequestBody + 1, ' ');
    const auto large = http_post(socket, huge, "application/json");
    CHECK(large.status == 413);

    // Every refusal is audited like a call.
    CHECK(fixture.audit().size() == 8);
}

TEST_CASE("a caller over its rate limit gets 429 with Retry-After", "[admin_server][e2e]") {
    ServerFixture fixture;
    fixture.config.admin_rate_limit = 2;
    auto server = fixture.start();
    const std::string target = "/?Action=GetRegisterCode&MqttInstanceId=local";
    // A slow machine may refill a token between calls: allow a few more.
    HttpReply reply;
    for (int i = 0; i < 10 && reply.status != 429; ++i) reply = http_get(fixture.config.admin_socket, target);
    REQUIRE(reply.status == 429);
    CHECK(parsed(reply)["Code"] == "Throttling.User");
    REQUIRE(reply.retry_after);
    CHECK(std::stoi(*reply.retry_after) >= 1);
}

TEST_CASE("the socket gets the configured mode and is removed at stop", "[admin_server][e2e]") {
    ServerFixture fixture;
    auto server = fixture.start();
    struct stat st {};
    REQUIRE(::lstat(fixture.config.admin_socket.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    server->stop();
    CHECK(::lstat(fixture.config.admin_socket.c_str(), &st) != 0);
    server->stop();
    server.reset();
}

TEST_CASE("a policy file that does not parse stops the start, naming it, and leaves no socket",
          "[admin_server][e2e]") {
    ServerFixture fixture;
    fixture.config.admin_policy = fixture.dir.write("policy.json", "{\n  \"Statement\": [\n    oops\n");
    auto server = AdminServer::start(fixture.context);
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains("policy.json"));
    struct stat st {};
    CHECK(::lstat(fixture.config.admin_socket.c_str(), &st) != 0);
}

TEST_CASE("a second server on a socket in use is refused and the first keeps serving", "[admin_server][e2e]") {
    ServerFixture fixture;
    auto server = fixture.start();
    auto second = AdminServer::start(fixture.context);
    REQUIRE_FALSE(second.ok());
    CHECK_THAT(second.error().message, Catch::Contains(fixture.config.admin_socket));
    CHECK(http_get(fixture.config.admin_socket, "/?Action=GetRegisterCode&MqttInstanceId=local").status == 200);
}

TEST_CASE("a server with the admin socket off is not started", "[admin_server][e2e]") {
    ServerFixture fixture;
    fixture.config.admin_socket.clear();
    auto server = AdminServer::start(fixture.context);
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains("off"));
}
