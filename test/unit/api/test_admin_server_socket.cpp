// The admin socket file: created with the configured mode, a stale one
// replaced, a live one or a non-socket left alone, removed at stop.
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <fstream>
#include <string>

#include "test_admin_server_support.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

/// A listening socket at `path`, as another running broker would hold it.
UniqueFd listen_at(const std::string& path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    REQUIRE(::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd.get(), 4) == 0);
    return fd;
}

Recorder g_recorder;

Result<std::unique_ptr<HttpTransport>> start_at(const std::string& path, unsigned mode = 0660) {
    HttpTransportOptions options;
    options.socket_path = path;
    options.socket_mode = mode;
    return HttpTransport::start(options, g_recorder.handler(), g_recorder.rejecter());
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

unsigned file_mode(const std::string& path) {
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    REQUIRE(S_ISSOCK(st.st_mode));
    return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("the socket file gets the configured mode", "[admin_server][socket]") {
    const unsigned mode = GENERATE(0600u, 0660u, 0666u);
    TempDir dir;
    const auto path = dir.file("a.sock");
    auto server = start_at(path, mode);
    REQUIRE(server.ok());
    CHECK(file_mode(path) == mode);
}

TEST_CASE("stop removes the socket file, and stopping again is harmless", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("a.sock");
    auto server = start_at(path);
    REQUIRE(server.ok());
    REQUIRE(exists(path));
    (*server)->stop();
    CHECK_FALSE(exists(path));
    (*server)->stop();
    server.value().reset();
    CHECK_FALSE(exists(path));
}

TEST_CASE("destroying the transport stops it and removes the socket file", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("a.sock");
    {
        auto server = start_at(path);
        REQUIRE(server.ok());
        REQUIRE(http_get(path, "/?Action=GetStats").status == 200);
    }
    CHECK_FALSE(exists(path));
    CHECK(http_get(path, "/?Action=GetStats").error != CURLE_OK);
}

TEST_CASE("a stale socket file nobody listens on is replaced", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("a.sock");
    { const UniqueFd left_over = listen_at(path); }  // closed; its file stays
    REQUIRE(exists(path));
    auto server = start_at(path);
    REQUIRE(server.ok());
    CHECK(http_get(path, "/?Action=GetStats").status == 200);
}

TEST_CASE("a socket another process listens on is refused, naming the path", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("a.sock");
    const UniqueFd live = listen_at(path);
    auto server = start_at(path);
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains(path) && Catch::Contains("in use"));
    CHECK(exists(path));
}

TEST_CASE("a file that is not a socket is never replaced", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("a.sock");
    std::ofstream(path) << "precious";
    auto server = start_at(path);
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains(path) && Catch::Contains("not a socket"));
    std::ifstream in(path);
    std::string content;
    in >> content;
    CHECK(content == "precious");
}

TEST_CASE("a socket path longer than 107 bytes is refused with its length", "[admin_server][socket]") {
    const std::string path = "/tmp/" + std::string(103, 'x');
    REQUIRE(path.size() == 108);
    auto server = start_at(path);
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains("108 bytes") && Catch::Contains("107"));
}

TEST_CASE("a socket in a missing directory is refused, naming the path", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("missing/a.sock");
    auto server = start_at(path);
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains(path) && Catch::Contains("No such file or directory"));
}

TEST_CASE("an empty socket path is refused", "[admin_server][socket]") {
    auto server = start_at("");
    REQUIRE_FALSE(server.ok());
    CHECK_THAT(server.error().message, Catch::Contains("empty"));
}

TEST_CASE("a socket file replaced by someone else is not removed at stop", "[admin_server][socket]") {
    TempDir dir;
    const auto path = dir.file("a.sock");
    auto server = start_at(path);
    REQUIRE(server.ok());
    REQUIRE(::unlink(path.c_str()) == 0);
    const UniqueFd newer = listen_at(path);
    (*server)->stop();
    CHECK(exists(path));
}
