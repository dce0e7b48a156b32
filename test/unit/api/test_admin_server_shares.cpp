// Connection shares of the admin socket: a uid that holds its share of
// connections is refused at once while other uids, and the privileged ones
// in their reserved slots, still get in. Other uids are played by forked
// children that drop to them (the tests need root, as CI runs).
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "test_admin_server_support.hpp"

using namespace devcert;
using namespace devcert::test;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kOther = 65534;       // unprivileged in these tests
constexpr uid_t kThird = 65533;       // unprivileged too
constexpr uid_t kPrivileged = 65532;  // given the reserved slots

// In a forked child only system calls are made: another thread of the
// parent may have held the allocator's lock at fork.
int child_connect(const char* path) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path, std::strlen(path));
    if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) return -1;
    return fd;
}

bool child_become(uid_t uid) { return ::setresgid(uid, uid, uid) == 0 && ::setresuid(uid, uid, uid) == 0; }

/// Whether `uid`, connecting now, gets a 200 answer to one request.
bool served_as(const std::string& socket_path, uid_t uid) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        if (!child_become(uid)) ::_exit(2);
        const int fd = child_connect(socket_path.c_str());
        if (fd < 0) ::_exit(3);
        static const char request[] = "GET /?Action=GetStats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        if (::send(fd, request, sizeof request - 1, MSG_NOSIGNAL) < 0) ::_exit(4);
        char answer[64] = {};
        timeval tv{5, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        const ssize_t n = ::recv(fd, answer, sizeof answer - 1, MSG_WAITALL);
        ::_exit(n > 12 && std::strncmp(answer, "HTTP/1.1 200", 12) == 0 ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/// A child holding `count` idle connections as `uid` until destroyed.
class HeldAs {
public:
    HeldAs(const std::string& socket_path, uid_t uid, int count) {
        int ready[2];
        int release[2];
        REQUIRE(::pipe(ready) == 0);
        REQUIRE(::pipe(release) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::close(ready[0]);
            ::close(release[1]);
            if (!child_become(uid)) ::_exit(2);
            for (int i = 0; i < count; ++i) {
                const int fd = child_connect(socket_path.c_str());
                if (fd < 0) ::_exit(3);
                static const char partial[] = "GET /?Action=GetStats HTTP/1.1\r\n";
                ::send(fd, partial, sizeof partial - 1, MSG_NOSIGNAL);
            }
            const char byte = 'r';
            if (::write(ready[1], &byte, 1) != 1) ::_exit(4);
            char sink;
            while (::read(release[0], &sink, 1) > 0) {
            }
            ::_exit(0);
        }
        ::close(ready[1]);
        ::close(release[0]);
        release_ = release[1];
        char byte = 0;
        REQUIRE(::read(ready[0], &byte, 1) == 1);
        ::close(ready[0]);
        std::this_thread::sleep_for(200ms);  // let the server accept them all
    }
    ~HeldAs() {
        ::close(release_);
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }
    HeldAs(const HeldAs&) = delete;
    HeldAs& operator=(const HeldAs&) = delete;

private:
    pid_t pid_ = -1;
    int release_ = -1;
};

HttpTransportOptions shares() {
    HttpTransportOptions options;
    options.socket_mode = 0666;
    options.connection_limit = 10;
    options.reserved_connections = 2;
    options.connections_per_uid = 4;
    options.privileged_uids = {kPrivileged};  // not root: the test's own uid is an ordinary caller here
    return options;
}

bool cut_at_once(const std::string& socket_path) {
    const UniqueFd extra = raw_connect(socket_path);
    const std::string request = "GET /?Action=GetStats HTTP/1.1\r\nHost: x\r\n\r\n";
    ::send(extra.get(), request.data(), request.size(), MSG_NOSIGNAL);
    return closed_by_server_within(extra.get(), 1s);
}

}  // namespace

TEST_CASE("a uid over its share of connections is cut at once while another uid is served",
          "[admin_server][limits][shares]") {
    if (::geteuid() != 0) {
        WARN("skipped: needs root to connect as other uids");
        return;
    }
    RecordingServer server(shares());
    ::chmod(server.dir.path().c_str(), 0755);  // other uids must reach the socket
    std::vector<UniqueFd> held;
    for (int i = 0; i < 4; ++i) held.push_back(raw_connect(server.socket_path));
    std::this_thread::sleep_for(200ms);
    CHECK(cut_at_once(server.socket_path));
    CHECK(served_as(server.socket_path, kOther));
    CHECK(server.recorder.calls().size() == 1);
    // One of ours closes: our next connection gets in again.
    held.pop_back();
    bool served = false;
    for (int attempt = 0; attempt < 50 && !served; ++attempt) {
        served = http_get(server.socket_path, "/?Action=GetStats").status == 200;
        if (!served) std::this_thread::sleep_for(50ms);
    }
    CHECK(served);
}

TEST_CASE("when ordinary uids fill their slots a privileged uid still gets a reserved one",
          "[admin_server][limits][shares]") {
    if (::geteuid() != 0) {
        WARN("skipped: needs root to connect as other uids");
        return;
    }
    RecordingServer server(shares());
    ::chmod(server.dir.path().c_str(), 0755);  // other uids must reach the socket
    std::vector<UniqueFd> held;
    for (int i = 0; i < 4; ++i) held.push_back(raw_connect(server.socket_path));
    const HeldAs other(server.socket_path, kOther, 4);  // 8 of 10: the unprivileged slots are full
    CHECK_FALSE(served_as(server.socket_path, kThird));
    CHECK(served_as(server.socket_path, kPrivileged));
}

TEST_CASE("a privileged uid is held only by the overall limit, not by a share",
          "[admin_server][limits][shares]") {
    if (::geteuid() != 0) {
        WARN("skipped: needs root to connect as other uids");
        return;
    }
    RecordingServer server(shares());
    ::chmod(server.dir.path().c_str(), 0755);  // other uids must reach the socket
    const HeldAs privileged(server.socket_path, kPrivileged, 6);  // over the share of 4
    CHECK(served_as(server.socket_path, kPrivileged));
    const HeldAs more(server.socket_path, kPrivileged, 4);  // 10 of 10 held
    CHECK_FALSE(served_as(server.socket_path, kPrivileged));
}
