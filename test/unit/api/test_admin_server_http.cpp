// The admin socket's HTTP layer: how requests become parameters, and how
// every cap and malformed input is refused before it reaches the Api.
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "test_admin_server_support.hpp"

using namespace devcert;
using namespace devcert::test;
using namespace std::chrono_literals;
using Pairs = std::vector<std::pair<std::string, std::string>>;

namespace {

std::string repeat(char c, std::size_t n) { return std::string(n, c); }

// Form-encoded parameters p1=v&p2=v&...
std::string many_params(std::size_t count) {
    std::string body;
    for (std::size_t i = 1; i <= count; ++i) {
        if (!body.empty()) body += '&';
        body += "P" + std::to_string(i) + "=v";
    }
    return body;
}

void require_refused(const RecordingServer& server, const HttpReply& reply, TransportError expected) {
    INFO("curl: " << curl_easy_strerror(reply.error) << ", body: " << reply.body);
    REQUIRE(reply.error == CURLE_OK);
    CHECK(reply.status == 400);
    CHECK(reply.body == std::string("{\"Code\":\"") + transport_error_name(expected) + "\"}");
    CHECK(server.recorder.calls().empty());
    REQUIRE(server.recorder.rejections().size() == 1);
    CHECK(server.recorder.rejections().front() == expected);
}

}  // namespace

TEST_CASE("a query-string request reaches the handler with its parameters in order", "[admin_server]") {
    RecordingServer server;
    const auto reply = http_get(server.socket_path, "/?Action=GetStats&MqttInstanceId=local&Action=Again");
    REQUIRE(reply.error == CURLE_OK);
    CHECK(reply.status == 200);
    CHECK(reply.content_type == "application/json");
    CHECK(reply.body == R"({"Params":"3"})");
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].params == Pairs{{"Action", "GetStats"}, {"MqttInstanceId", "local"}, {"Action", "Again"}});
}

TEST_CASE("the caller is the peer's uid and gid from the socket", "[admin_server]") {
    RecordingServer server;
    REQUIRE(http_get(server.socket_path, "/?Action=GetStats").status == 200);
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].uid == ::getuid());
    CHECK(calls[0].gid == ::getgid());
}

TEST_CASE("percent escapes and plus signs are decoded in names and values", "[admin_server]") {
    RecordingServer server;
    REQUIRE(http_get(server.socket_path, "/?Ca%4Eame=a+b%20c%2B%26%3d&Empty=&Bare").status == 200);
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].params == Pairs{{"CaName", "a b c+&="}, {"Empty", ""}, {"Bare", ""}});
}

TEST_CASE("a form body is read after the query's parameters, duplicates kept", "[admin_server]") {
    RecordingServer server;
    const auto reply = http_post(server.socket_path, "CaSn=0a&DeviceSn=%30b&CaSn=0c",
                                 "application/x-www-form-urlencoded; charset=utf-8", "/?Action=GetDeviceCertificate");
    REQUIRE(reply.status == 200);
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].params ==
          Pairs{{"Action", "GetDeviceCertificate"}, {"CaSn", "0a"}, {"DeviceSn", "0b"}, {"CaSn", "0c"}});
}

TEST_CASE("a JSON body of strings is read in order, duplicated keys kept", "[admin_server]") {
    RecordingServer server;
    const auto reply = http_post(server.socket_path,
                                 R"({"Action":"GetCaCertificate","Sn":"0a","Sn":"\u00e9\n"})", "Application/JSON");
    REQUIRE(reply.status == 200);
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].params == Pairs{{"Action", "GetCaCertificate"}, {"Sn", "0a"}, {"Sn", "\xc3\xa9\n"}});
}

TEST_CASE("an empty body of any type adds no parameters", "[admin_server]") {
    RecordingServer server;
    REQUIRE(http_post(server.socket_path, "", "text/plain", "/?Action=GetStats").status == 200);
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 1);
    CHECK(calls[0].params == Pairs{{"Action", "GetStats"}});
}

TEST_CASE("JSON that is not one flat object of strings is malformed", "[admin_server]") {
    const std::string body = GENERATE(as<std::string>{},
        R"(["Action","GetStats"])", R"({"Action":{"x":"y"}})", R"({"PageNo":1})", R"({"Action":null})",
        R"({"Action":true})", R"({"Action":["a"]})", R"({"Action":"GetStats"} {})", R"({"Action":"GetStats")",
        R"("Action")", R"({"Action":"a\u0000b"})", R"({"A\u0000":"b"})", "{\"Action\":\"\xff\"}");
    RecordingServer server;
    require_refused(server, http_post(server.socket_path, body, "application/json"), TransportError::malformed_body);
}

TEST_CASE("bad percent escapes and NUL bytes are malformed", "[admin_server]") {
    const std::string query = GENERATE(as<std::string>{}, "Action=%zz", "Action=ab%4", "Action=ab%", "Action=a%00b",
                                       "%00=x", "=value", "Action=%G1");
    SECTION("in the query string") {
        RecordingServer server;
        require_refused(server, http_get(server.socket_path, "/?" + query), TransportError::malformed_body);
    }
    SECTION("in a form body") {
        RecordingServer server;
        require_refused(server, http_post(server.socket_path, query, "application/x-www-form-urlencoded"),
                        TransportError::malformed_body);
    }
}

TEST_CASE("a raw NUL byte in a form body is malformed", "[admin_server]") {
    RecordingServer server;
    require_refused(server,
                    http_post(server.socket_path, std::string("Action=a\0b", 10), "application/x-www-form-urlencoded"),
                    TransportError::malformed_body);
}

TEST_CASE("paths other than the root are not found", "[admin_server]") {
    const std::string target = GENERATE(as<std::string>{}, "/x?Action=GetStats", "//", "/index.html", "/%2F");
    RecordingServer server;
    require_refused(server, http_get(server.socket_path, target), TransportError::not_found);
}

TEST_CASE("methods other than GET and POST are not allowed", "[admin_server]") {
    const std::string method = GENERATE(as<std::string>{}, "PUT", "DELETE", "PATCH", "OPTIONS");
    RecordingServer server;
    HttpCall call;
    call.method = method;
    call.target = "/?Action=GetStats";
    require_refused(server, http(server.socket_path, call), TransportError::method_not_allowed);
}

TEST_CASE("a body of another media type is refused as unsupported", "[admin_server]") {
    const std::string type = GENERATE(as<std::string>{}, "text/plain", "multipart/form-data; boundary=x",
                                      "application/jsonx", "");
    RecordingServer server;
    require_refused(server, http_post(server.socket_path, "Action=GetStats", type), TransportError::unsupported_media);
}

TEST_CASE("a body of exactly 64 KiB is read", "[admin_server][limits]") {
    RecordingServer server;
    std::string body = R"({"Action":"GetStats"})";
    body.append(kMaxRequestBody - body.size(), ' ');
    REQUIRE(body.size() == 64 * 1024);
    const auto reply = http_post(server.socket_path, body, "application/json");
    REQUIRE(reply.status == 200);
    CHECK(server.recorder.calls().size() == 1);
}

TEST_CASE("a body one byte over 64 KiB is refused before it is read", "[admin_server][limits]") {
    RecordingServer server;
    std::string body = R"({"Action":"GetStats"})";
    body.append(kMaxRequestBody + 1 - body.size(), ' ');
    require_refused(server, http_post(server.socket_path, body, "application/json"), TransportError::body_too_large);
}

TEST_CASE("a chunked body that grows over 64 KiB is refused and its connection closed", "[admin_server][limits]") {
    RecordingServer server;
    HttpCall call;
    call.method = "POST";
    call.content_type = "application/json";
    call.body = repeat(' ', 4 * kMaxRequestBody);
    call.chunked = true;
    const auto reply = http(server.socket_path, call);
    CHECK(server.recorder.calls().empty());
    REQUIRE(server.recorder.rejections().size() == 1);
    CHECK(server.recorder.rejections().front() == TransportError::body_too_large);
    // The server stops reading: the client sees the refusal or a cut, never a call.
    CHECK((reply.error != CURLE_OK || reply.status == 400));
    CHECK(http_get(server.socket_path, "/?Action=GetStats").status == 200);
}

TEST_CASE("64 parameters are read and the 65th is refused", "[admin_server][limits]") {
    RecordingServer server;
    SECTION("from the query string") {
        REQUIRE(http_get(server.socket_path, "/?" + many_params(64)).status == 200);
        REQUIRE(server.recorder.calls().at(0).params.size() == 64);
        const auto reply = http_get(server.socket_path, "/?" + many_params(65));
        CHECK(reply.status == 400);
        CHECK(server.recorder.rejections() == std::vector{TransportError::too_many_params});
    }
    SECTION("from the query string and a body together") {
        const auto reply = http_post(server.socket_path, many_params(33), "application/x-www-form-urlencoded",
                                     "/?" + many_params(31));
        REQUIRE(reply.status == 200);
        const auto refused = http_post(server.socket_path, many_params(33), "application/x-www-form-urlencoded",
                                       "/?" + many_params(31) + "&Extra=1");
        CHECK(refused.status == 400);
        CHECK(server.recorder.rejections() == std::vector{TransportError::too_many_params});
    }
    SECTION("from a JSON body") {
        std::string body = "{";
        for (int i = 1; i <= 65; ++i) body += (i > 1 ? "," : "") + ("\"P" + std::to_string(i) + "\":\"v\"");
        body += "}";
        CHECK(http_post(server.socket_path, body, "application/json").status == 400);
        CHECK(server.recorder.rejections() == std::vector{TransportError::too_many_params});
    }
}

TEST_CASE("a value of 8 KiB is read and one of 8 KiB and a byte is refused", "[admin_server][limits]") {
    RecordingServer server;
    SECTION("in the query string") {
        REQUIRE(http_get(server.socket_path, "/?CaContent=" + repeat('a', kMaxParamValue)).status == 200);
        CHECK(http_get(server.socket_path, "/?CaContent=" + repeat('a', kMaxParamValue + 1)).status == 400);
    }
    SECTION("in a form body, counted after decoding") {
        REQUIRE(http_post(server.socket_path, "CaContent=" + repeat('a', kMaxParamValue - 1) + "%41",
                          "application/x-www-form-urlencoded")
                    .status == 200);
        CHECK(http_post(server.socket_path, "CaContent=" + repeat('a', kMaxParamValue) + "%41",
                        "application/x-www-form-urlencoded")
                  .status == 400);
    }
    SECTION("in a JSON body") {
        REQUIRE(http_post(server.socket_path, "{\"CaContent\":\"" + repeat('a', kMaxParamValue) + "\"}",
                          "application/json")
                    .status == 200);
        CHECK(http_post(server.socket_path, "{\"CaContent\":\"" + repeat('a', kMaxParamValue + 1) + "\"}",
                        "application/json")
                  .status == 400);
    }
    CHECK(server.recorder.calls().size() == 1);
    CHECK(server.recorder.rejections() == std::vector{TransportError::value_too_large});
}

TEST_CASE("the handler's status, body and Retry-After are sent as given", "[admin_server]") {
    RecordingServer server;
    server.recorder.answer_with(429, 3u);
    const auto reply = http_get(server.socket_path, "/?Action=GetStats");
    CHECK(reply.status == 429);
    CHECK(reply.content_type == "application/json");
    CHECK(reply.body == R"({"Params":"1"})");
    REQUIRE(reply.retry_after);
    CHECK(*reply.retry_after == "3");

    server.recorder.answer_with(500, std::nullopt);
    const auto plain = http_get(server.socket_path, "/?Action=GetStats");
    CHECK(plain.status == 500);
    CHECK_FALSE(plain.retry_after);
}

TEST_CASE("several requests on one kept-alive connection are each answered", "[admin_server]") {
    RecordingServer server;
    const UniqueFd fd = raw_connect(server.socket_path);
    const std::string requests =
        "GET /?Action=One HTTP/1.1\r\nHost: x\r\n\r\n"
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        "10\r\n\r\nAction=Two"
        "GET /?Action=Three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    REQUIRE(::send(fd.get(), requests.data(), requests.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(requests.size()));
    REQUIRE(closed_by_server_within(fd.get(), 5s));
    const auto calls = server.recorder.calls();
    REQUIRE(calls.size() == 3);
    CHECK(calls[0].params == Pairs{{"Action", "One"}});
    CHECK(calls[1].params == Pairs{{"Action", "Two"}});
    CHECK(calls[2].params == Pairs{{"Action", "Three"}});
}

TEST_CASE("a client that stalls mid-request is cut after the timeout while others are served",
          "[admin_server][limits][slow]") {
    HttpTransportOptions options;
    options.connection_timeout_s = 1;
    RecordingServer server(options);
    const UniqueFd stalled = raw_connect(server.socket_path);
    const std::string partial = "GET /?Action=GetStats HTTP/1.1\r\nHost: x\r\n";
    REQUIRE(::send(stalled.get(), partial.data(), partial.size(), MSG_NOSIGNAL) > 0);
    CHECK(http_get(server.socket_path, "/?Action=GetStats").status == 200);
    const auto before = std::chrono::steady_clock::now();
    CHECK(closed_by_server_within(stalled.get(), 5s));
    CHECK(std::chrono::steady_clock::now() - before < 4s);
    CHECK(server.recorder.calls().size() == 1);
}

TEST_CASE("a client that keeps sending but never completes its request is cut after the timeout",
          "[admin_server][limits][slow]") {
    HttpTransportOptions options;
    options.connection_timeout_s = 1;
    RecordingServer server(options);
    const UniqueFd dribbling = raw_connect(server.socket_path);
    const std::string head = "GET /?Action=GetStats HTTP/1.1\r\nHost: x\r\n";
    REQUIRE(::send(dribbling.get(), head.data(), head.size(), MSG_NOSIGNAL) > 0);
    const auto started = std::chrono::steady_clock::now();
    bool cut = false;
    // A header byte every 200 ms: the deadline is for the whole request, not for silence.
    while (!cut && std::chrono::steady_clock::now() - started < 5s) {
        cut = ::send(dribbling.get(), "X", 1, MSG_NOSIGNAL) != 1 || closed_by_server_within(dribbling.get(), 200ms);
    }
    CHECK(cut);
    CHECK(std::chrono::steady_clock::now() - started < 3s);
    CHECK(server.recorder.calls().empty());
    CHECK(http_get(server.socket_path, "/?Action=GetStats").status == 200);
}

TEST_CASE("a kept-alive connection gets a fresh deadline for each request", "[admin_server][limits][slow]") {
    HttpTransportOptions options;
    options.connection_timeout_s = 1;
    RecordingServer server(options);
    const UniqueFd fd = raw_connect(server.socket_path);
    const std::string request = "GET /?Action=GetStats HTTP/1.1\r\nHost: x\r\n\r\n";
    // Three requests 600 ms apart span more than the timeout; each is on time.
    for (int i = 0; i < 3; ++i) {
        REQUIRE(::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size()));
        std::this_thread::sleep_for(600ms);
    }
    CHECK(server.recorder.calls().size() == 3);
}

TEST_CASE("connections beyond 64 are cut, and the socket serves again once one closes",
          "[admin_server][limits][slow]") {
    HttpTransportOptions options;
    options.connections_per_uid = 64;  // the overall limit, not the uid's share (test_admin_server_shares.cpp)
    RecordingServer server(options);
    std::vector<UniqueFd> held;
    for (int i = 0; i < 64; ++i) held.push_back(raw_connect(server.socket_path));
    // Let the server accept all of them before the 65th arrives.
    std::this_thread::sleep_for(300ms);
    const UniqueFd extra = raw_connect(server.socket_path);
    const std::string request = "GET /?Action=GetStats HTTP/1.1\r\nHost: x\r\n\r\n";
    ::send(extra.get(), request.data(), request.size(), MSG_NOSIGNAL);
    CHECK(closed_by_server_within(extra.get(), 3s));
    CHECK(server.recorder.calls().empty());

    held.pop_back();
    bool served = false;
    for (int attempt = 0; attempt < 50 && !served; ++attempt) {
        served = http_get(server.socket_path, "/?Action=GetStats").status == 200;
        if (!served) std::this_thread::sleep_for(50ms);
    }
    CHECK(served);
}

TEST_CASE("concurrent clients are all answered", "[admin_server]") {
    RecordingServer server;
    std::atomic<int> ok{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 8; ++t) {
        clients.emplace_back([&] {
            for (int i = 0; i < 20; ++i) {
                if (http_get(server.socket_path, "/?Action=GetStats").status == 200) ++ok;
            }
        });
    }
    for (auto& c : clients) c.join();
    CHECK(ok == 160);
    CHECK(server.recorder.calls().size() == 160);
}
