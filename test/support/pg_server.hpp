// A real PostgreSQL 15 for tests, started by the test executable itself:
// initdb into a private temporary directory, UNIX socket only, fsync off,
// run as an unprivileged OS user (PostgreSQL refuses root; CI runs as
// root), stopped at exit. A watchdog process stops it and removes the
// directory if the test executable dies without doing so (crash, abort,
// SIGKILL).
//
// Environment: DEVCERT_PG_BIN (default /usr/lib/postgresql/15/bin),
// DEVCERT_PG_USER (when running as root; default devcert-pg, else postgres).
#pragma once

#include <string>
#include <string_view>

namespace devcert::test {

class PgServer {
public:
    /// The server of this test executable, started on first use. A server
    /// that cannot start fails the calling test with the reason and the
    /// server's log.
    static PgServer& shared();

    /// Creates a fresh, empty database and returns its libpq connection
    /// string.
    std::string create_database();
    /// Connection string for an existing database.
    std::string conninfo(std::string_view dbname) const;

    /// Stops the server (pg_ctl -m fast) / starts it again with the same
    /// data: for outage tests.
    void stop();
    void start();
    bool running() const noexcept { return running_; }

    const std::string& socket_dir() const noexcept { return dir_; }
    int port() const noexcept { return port_; }

    ~PgServer();
    PgServer(const PgServer&) = delete;
    PgServer& operator=(const PgServer&) = delete;

private:
    PgServer();
    void init();

    std::string bin_;
    std::string user_;       ///< "" when not root: run as ourselves
    unsigned uid_ = 0;
    unsigned gid_ = 0;
    std::string dir_;        ///< socket directory; data in dir_/data
    int port_ = 0;
    int watchdog_fd_ = -1;   ///< its EOF tells the watchdog to clean up
    bool running_ = false;
    unsigned databases_ = 0;
};

}  // namespace devcert::test
