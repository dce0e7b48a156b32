#include "pg_server.hpp"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace devcert::test {

namespace {

std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v && *v ? v : fallback;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

/// Runs argv (as uid/gid when given), output to `log`; returns the exit status.
int run(const std::vector<std::string>& argv, const std::string& log, bool drop, unsigned uid, unsigned gid) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
        }
        const int null = ::open("/dev/null", O_RDONLY);
        if (null >= 0) ::dup2(null, 0);
        if (drop) {
            if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) ::_exit(126);
        }
        ::setenv("LC_ALL", "C", 1);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// The unprivileged account the server runs as when we are root.
bool find_user(std::string& name, unsigned& uid, unsigned& gid) {
    // An array rather than a vector built by assignment: GCC 12 under
    // -fsanitize=thread warns (free-nonheap-object) about the latter.
    const char* wanted = std::getenv("DEVCERT_PG_USER");
    const bool given = wanted != nullptr && *wanted != '\0';
    const std::array<std::string, 2> candidates{given ? std::string(wanted) : std::string("devcert-pg"),
                                                given ? std::string() : std::string("postgres")};
    for (const auto& c : candidates) {
        if (c.empty()) continue;
        if (const passwd* pw = ::getpwnam(c.c_str()); pw && pw->pw_uid != 0) {
            name = c;
            uid = pw->pw_uid;
            gid = pw->pw_gid;
            return true;
        }
    }
    return false;
}

}  // namespace

PgServer& PgServer::shared() {
    static PgServer server;
    return server;
}

PgServer::PgServer() { init(); }

void PgServer::init() {
    bin_ = env_or("DEVCERT_PG_BIN", "/usr/lib/postgresql/15/bin");
    if (::access((bin_ + "/initdb").c_str(), X_OK) != 0)
        FAIL("PostgreSQL server binaries not found in " << bin_
                                                         << " (scripts/setup installs postgresql-15; DEVCERT_PG_BIN "
                                                            "points elsewhere)");
    const bool root = ::geteuid() == 0;
    if (root && !find_user(user_, uid_, gid_))
        FAIL("running as root and no unprivileged user for PostgreSQL: create devcert-pg (scripts/setup does) or "
             "set DEVCERT_PG_USER");

    std::string pattern = "/tmp/devcert-pg-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) FAIL("mkdtemp failed: " << std::strerror(errno));
    dir_ = pattern;
    if (root && ::chown(dir_.c_str(), uid_, gid_) != 0) FAIL("cannot chown " << dir_ << ": " << std::strerror(errno));
    // The socket's name carries the port; the directory is private, so any
    // number would do, but a per-process one keeps logs telling servers apart.
    port_ = 20000 + static_cast<int>(::getpid() % 40000);

    // The watchdog: a shell in its own session waiting for EOF on its stdin,
    // which the kernel delivers when this process ends however it ends.
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) FAIL("pipe2 failed: " << std::strerror(errno));
    const std::string as_user = root ? "runuser -u " + user_ + " -- " : "";
    const std::string script = "trap '' INT TERM HUP; cat >/dev/null; " + as_user + bin_ + "/pg_ctl -D " + dir_ +
                               "/data -m immediate stop >/dev/null 2>&1; rm -rf " + dir_;
    const pid_t pid = ::fork();
    if (pid < 0) FAIL("fork failed: " << std::strerror(errno));
    if (pid == 0) {
        ::setsid();
        ::dup2(fds[0], 0);
        const int null = ::open("/dev/null", O_WRONLY);
        if (null >= 0) {
            ::dup2(null, 1);
            ::dup2(null, 2);
        }
        ::execl("/bin/sh", "sh", "-c", script.c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    ::close(fds[0]);
    watchdog_fd_ = fds[1];

    const std::string log = dir_ + "/initdb.log";
    const int rc = run({bin_ + "/initdb", "-D", dir_ + "/data", "-U", "devcert", "-A", "trust", "--no-sync", "-E",
                        "UTF8", "--locale=C"},
                       log, root, uid_, gid_);
    if (rc != 0) FAIL("initdb failed (exit " << rc << "):\n" << read_file(log));
    start();
}

void PgServer::start() {
    const bool root = !user_.empty();
    const std::string log = dir_ + "/server.log";
    const std::string options = "-c listen_addresses='' -k " + dir_ + " -p " + std::to_string(port_) +
                                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60";
    const int rc = run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-w", "-t", "60", "-l", log, "-o", options, "start"},
                       dir_ + "/pg_ctl.log", root, uid_, gid_);
    if (rc != 0)
        FAIL("pg_ctl start failed (exit " << rc << "):\n"
                                          << read_file(dir_ + "/pg_ctl.log") << read_file(log));
    running_ = true;
}

void PgServer::stop() {
    if (!running_) return;
    const bool root = !user_.empty();
    run({bin_ + "/pg_ctl", "-D", dir_ + "/data", "-m", "fast", "-w", "stop"}, dir_ + "/pg_ctl.log", root, uid_, gid_);
    running_ = false;
}

PgServer::~PgServer() {
    stop();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    if (watchdog_fd_ >= 0) ::close(watchdog_fd_);
}

std::string PgServer::conninfo(std::string_view dbname) const {
    return "host=" + dir_ + " port=" + std::to_string(port_) + " user=devcert dbname=" + std::string(dbname);
}

std::string PgServer::create_database() {
    const std::string name = "t" + std::to_string(++databases_);
    PGconn* conn = PQconnectdb(conninfo("postgres").c_str());
    if (PQstatus(conn) != CONNECTION_OK) {
        const std::string why = PQerrorMessage(conn);
        PQfinish(conn);
        FAIL("cannot connect to the test PostgreSQL: " << why);
    }
    PGresult* res = PQexec(conn, ("CREATE DATABASE " + name + " TEMPLATE template0").c_str());
    const bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    const std::string why = ok ? "" : PQerrorMessage(conn);
    PQclear(res);
    PQfinish(conn);
    if (!ok) FAIL("CREATE DATABASE " << name << " failed: " << why);
    return conninfo(name);
}

}  // namespace devcert::test
