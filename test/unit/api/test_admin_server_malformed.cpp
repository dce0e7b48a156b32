// Requests that are not well-formed HTTP, sent byte for byte to the real Api
// behind the socket: each gets exactly one well-formed HTTP response whose
// body is the JSON error of docs/api.md, and nothing else.
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <string>

#include "api_fixture.hpp"
#include "devcert/admin_server.hpp"
#include "test_admin_server_support.hpp"

using namespace devcert;
using namespace devcert::test;
using namespace std::chrono_literals;

namespace {

struct Server : AdminHost {
    std::unique_ptr<AdminServer> server;
    Server() {
        config.admin_socket = dir.file("admin.sock");
        config.admin_socket_mode = 0600;
        auto started = AdminServer::start(context);
        if (!started) FAIL("admin server did not start: " << started.error().message);
        server = std::move(*started);
    }
};

/// Sends `request`, ends the sending half, and reads all the server sends
/// until it closes.
std::string send_and_read(const std::string& socket_path, const std::string& request) {
    const UniqueFd fd = raw_connect(socket_path);
    timeval tv{5, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::size_t sent = 0;
    while (sent < request.size()) {
        const ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;  // the server may refuse before reading everything
        sent += static_cast<std::size_t>(n);
    }
    ::shutdown(fd.get(), SHUT_WR);
    std::string answer;
    char buffer[8192];
    for (;;) {
        const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
        if (n <= 0) break;
        answer.append(buffer, static_cast<std::size_t>(n));
    }
    return answer;
}

struct OneResponse {
    int status = 0;
    nlohmann::json body;
};

/// Checks that `answer` is exactly one HTTP/1.1 response with a JSON body
/// of the length it declares, and returns its status and body.
OneResponse one_json_response(const std::string& answer) {
    INFO("answer: " << answer);
    REQUIRE(answer.rfind("HTTP/1.1 ", 0) == 0);
    const auto head_end = answer.find("\r\n\r\n");
    REQUIRE(head_end != std::string::npos);
    const std::string head = answer.substr(0, head_end + 2);
    OneResponse out;
    out.status = std::stoi(head.substr(9, 3));
    std::optional<std::size_t> length;
    std::string type;
    for (std::size_t at = head.find("\r\n") + 2; at < head.size();) {
        const auto eol = head.find("\r\n", at);
        const std::string line = head.substr(at, eol - at);
        at = eol + 2;
        const auto colon = line.find(':');
        REQUIRE(colon != std::string::npos);
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        const std::string value = line.substr(line.find_first_not_of(' ', colon + 1));
        if (name == "content-length") {
            REQUIRE_FALSE(length);
            length = std::stoul(value);
        }
        if (name == "content-type") type = value;
    }
    REQUIRE(length);
    CHECK(type == "application/json");
    REQUIRE(answer.size() == head_end + 4 + *length);  // nothing after the body
    out.body = nlohmann::json::parse(answer.substr(head_end + 4), nullptr, false);
    REQUIRE(out.body.is_object());
    return out;
}

std::string with_length(const std::string& length) {
    return "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: " +
           length + "\r\n\r\nAction=GetStats";
}

}  // namespace

TEST_CASE("a malformed request gets one well-formed response with the JSON error", "[admin_server][malformed]") {
    struct Case {
        const char* what;
        std::string request;
        int status;
        const char* detail;
    };
    const std::string get = "GET /?Action=GetStats&MqttInstanceId=local ";
    const Case cases[] = {
        {"Content-Length '5 5'", with_length("5 5"), 400, "malformed HTTP request"},
        {"Content-Length '-1'", with_length("-1"), 400, "malformed HTTP request"},
        {"Content-Length '+5'", with_length("+5"), 400, "malformed HTTP request"},
        {"Content-Length 'abc'", with_length("abc"), 400, "malformed HTTP request"},
        {"Content-Length 2^64", with_length("18446744073709551616"), 413, "request body over 64 KiB"},
        {"Content-Length far over 2^64", with_length("99999999999999999999999999"), 413, "request body over 64 KiB"},
        {"two Content-Lengths", "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400,
         "malformed HTTP request"},
        {"Content-Length and chunked", "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
         "malformed HTTP request"},
        {"a header line without a colon", get + "HTTP/1.1\r\nHost x\r\n\r\n", 400, "malformed HTTP request"},
        {"a space before the colon", get + "HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed HTTP request"},
        {"a folded header line", get + "HTTP/1.1\r\nHost: x\r\n  y\r\n\r\n", 400, "malformed HTTP request"},
        {"a control character in a value", get + "HTTP/1.1\r\nHost: x\x01y\r\n\r\n", 400, "malformed HTTP request"},
        {"an unknown HTTP version", get + "HTTP/2.0\r\nHost: x\r\n\r\n", 400, "unsupported HTTP version"},
        {"HTTP/1.2", get + "HTTP/1.2\r\nHost: x\r\n\r\n", 400, "unsupported HTTP version"},
        {"not HTTP", get + "HTTX/1.1\r\nHost: x\r\n\r\n", 400, "malformed HTTP request"},
        {"a request line without a version", "GET /?Action=GetStats\r\n\r\n", 400, "malformed HTTP request"},
        {"an oversized chunk", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFF\r\nx", 413,
         "request body over 64 KiB"},
        {"a chunk size that is not hex", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n", 400,
         "malformed HTTP request"},
        {"an unknown transfer coding", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
         "malformed HTTP request"},
        {"headers over 64 KiB", get + "HTTP/1.1\r\nX: " + std::string(70 * 1024, 'v') + "\r\n\r\n", 413,
         "request line and headers over 64 KiB"},
        {"a request cut short", get + "HTTP/1.1\r\nHost: x\r\n", 400, "malformed HTTP request"},
        {"a body cut short", with_length("100"), 400, "malformed HTTP request"},
    };
    Server s;
    for (const auto& c : cases) {
        INFO(c.what);
        const auto reply = one_json_response(send_and_read(s.config.admin_socket, c.request));
        CHECK(reply.status == c.status);
        CHECK(reply.body.value("Code", "") == "ParameterFieldCheckFailed");
        CHECK(reply.body.value("Detail", "") == c.detail);
        CHECK(reply.body.value("RequestId", "").size() == 36);
    }
    // Each was counted once, as a refused call.
    CHECK(s.counters.admin_calls("unknown", "ParameterFieldCheckFailed") == std::size(cases));
}

TEST_CASE("well-formed requests still get one response each, with or without a body", "[admin_server][malformed]") {
    Server s;
    const std::string requests[] = {
        "GET /?Action=GetStats&MqttInstanceId=local HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /?Action=GetStats&MqttInstanceId=local HTTP/1.0\r\n\r\n",
        "POST / HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 37\r\n\r\n"
        "Action=GetStats&MqttInstanceId=local&",
        "POST / HTTP/1.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        "a\r\n{\"Action\":\r\n1c;ext=1\r\n\"GetStats\",\"MqttInstanceId\":\r\n8\r\n\"local\"}\r\n0\r\nTrailer: x\r\n\r\n",
    };
    for (const auto& request : requests) {
        INFO(request);
        const auto reply = one_json_response(send_and_read(s.config.admin_socket, request));
        CHECK(reply.status == 200);
        CHECK(reply.body.contains("Data"));
    }
}
