// libpq, owned and made safe to log. The owners of PGconn and PGresult are
// defined here, once; every statement goes through PgConn::exec so that
// every error is classified and scrubbed of secrets the same way.
#pragma once

#include <libpq-fe.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "devcert/handles.hpp"
#include "devcert/result.hpp"

namespace devcert::pg {

using ConnPtr = std::unique_ptr<PGconn, CDeleter<PQfinish>>;
using ResultPtr = std::unique_ptr<PGresult, CDeleter<PQclear>>;

/// A parameter in text format; nullopt is SQL NULL.
using Param = std::optional<std::string_view>;

/// How a failed statement may be handled.
enum class Failure : std::uint8_t {
    none,
    retry,       ///< serialisation failure or deadlock: run the transaction again
    busy,        ///< a lock was not granted within lock_timeout (55P03): nothing was changed
    connection,  ///< the connection is gone: the outcome of an open transaction is unknown
    other,
};

/// Values libpq might echo in a message and that must never reach a log:
/// the password (and key passphrase) of the connection string. Collected
/// from the parsed string, never from a message.
class Secrets {
public:
    void add(std::string_view s) {
        if (!s.empty()) values_.emplace_back(s);
    }
    /// `text` with every secret replaced by "***".
    std::string scrub(std::string text) const;

private:
    std::vector<std::string> values_;
};

/// A query result with typed accessors (text format).
class Rows {
public:
    Rows() = default;
    explicit Rows(ResultPtr r) : r_(std::move(r)) {}
    int size() const noexcept { return r_ ? PQntuples(r_.get()) : 0; }
    bool null(int row, int col) const noexcept { return PQgetisnull(r_.get(), row, col) != 0; }
    std::string_view text(int row, int col) const noexcept {
        return {PQgetvalue(r_.get(), row, col), static_cast<std::size_t>(PQgetlength(r_.get(), row, col))};
    }
    std::int64_t i64(int row, int col) const noexcept;
    std::uint64_t u64(int row, int col) const noexcept { return static_cast<std::uint64_t>(i64(row, col)); }
    /// A bytea column in hex output format ("\x0a1b").
    std::string bytes(int row, int col) const;
    /// Rows affected by INSERT/UPDATE/DELETE.
    std::uint64_t affected() const noexcept;

private:
    ResultPtr r_;
};

/// A bytea parameter in hex input format.
std::string bytea_param(std::string_view raw);

/// What a session promises the server and what it waits for. A member of a
/// fleet must neither hold the fleet's locks while it does nothing (a broker
/// stopped or cut off in the middle of a transaction would stall every
/// other member's writes) nor wait without end on a server that does not
/// answer (its admin callers and its shutdown would wait with it).
struct SessionLimits {
    /// The server ends this session when it sits idle inside a transaction
    /// for longer (idle_in_transaction_session_timeout); 0: the server's setting.
    std::chrono::milliseconds idle_in_transaction{0};
    /// A statement waiting for a lock longer fails (lock_timeout); 0: the server's setting.
    std::chrono::milliseconds lock_wait{0};
    /// Every statement must be answered within this; otherwise the connection
    /// is dropped (Failure::connection). 0: no bound.
    std::chrono::milliseconds answer{0};
    /// Once set, a statement waiting for its answer gives up at once (the
    /// connection is dropped): the owner is stopping. May be null.
    const std::atomic<bool>* abandon = nullptr;
};

/// One connection, with the secrets of its connection string.
class Conn {
public:
    /// Connects; the error (Errc::unavailable, or Errc::invalid_argument for
    /// an unparseable string) names the server as libpq reports it, scrubbed.
    /// The limits' server settings go in the connection's startup options, so
    /// a reconnection keeps them; settings the connection string's own
    /// `options` gives win.
    static Result<Conn> open(std::string_view conninfo, unsigned connect_timeout_s, const SessionLimits& limits = {});

    PGconn* get() const noexcept { return conn_.get(); }
    const Secrets& secrets() const noexcept { return secrets_; }

    /// Runs one statement. On failure the error says `what` failed and why;
    /// `failure` (if given) receives the classification. A lost connection
    /// is Errc::unavailable (the transaction, if any, did not commit unless
    /// the statement was COMMIT: see Fleet::Impl::commit).
    /// The first time a session runs a statement's text (of at most
    /// kMaxPreparedParams parameters), it prepares it in the same round trip;
    /// later runs skip the server's parsing and, once it settles on a generic
    /// plan, its planning (at most kMaxPrepared texts a session).
    Result<Rows> exec(std::string_view what, const char* sql, std::initializer_list<Param> params = {},
                      Failure* failure = nullptr);
    Result<Rows> exec(std::string_view what, const char* sql, const std::vector<Param>& params,
                      Failure* failure = nullptr);
    /// Queues a statement (a savepoint, a lock, rows appended, a
    /// notification): it is sent ahead of the next exec() and answered in
    /// the same round trip (libpq's pipeline mode). The statements still run in order, one after the
    /// other; only the waits between them go. A queued statement's failure
    /// is that exec()'s, named by its own `what`, and the statements after
    /// it do not run. Only exec() sends what is queued.
    /// A statement whose rows are wanted gives `on_rows`: it gets them when
    /// the next exec() runs, if the statement succeeded (even if a later one
    /// fails: the caller knows its transaction's fate).
    void defer(std::string_view what, std::string sql, std::vector<std::optional<std::string>> params = {},
               std::function<void(Rows)> on_rows = {});
    /// Forgets the queued statements (their transaction is being rolled back).
    void discard_deferred() noexcept { deferred_.clear(); }
    /// Whether the last exec() failed in a statement queued by defer().
    bool deferred_failed() const noexcept { return deferred_failed_; }
    /// The SQLSTATE of the last exec()'s failure; empty if it had none.
    const std::string& last_sqlstate() const noexcept { return last_sqlstate_; }
    /// Runs several statements without parameters (DDL).
    Outcome exec_script(std::string_view what, const char* sql);
    /// Starts a statement whose result is read with next_result() (COPY).
    Outcome send(std::string_view what, const char* sql);
    /// The next result of the statement sent, waited for within the limits;
    /// null when there is none left. A lost or dropped connection is
    /// Errc::unavailable.
    Result<ResultPtr> next_result(std::string_view what);
    /// Waits within the limits until the server sent more of the statement's
    /// answer (consumed, for PQgetCopyData).
    Outcome await_answer(std::string_view what);
    /// Waits until the server sent something (consumed, for PQnotifies) for
    /// at most `for_at_most`, the only bound of this idle wait: then false,
    /// the connection kept.
    Result<bool> await_input(std::string_view what, std::chrono::milliseconds for_at_most);
    /// Replaces the bound on answers (SessionLimits::answer); returns the
    /// one it replaces.
    std::chrono::milliseconds set_answer_bound(std::chrono::milliseconds bound) noexcept {
        return std::exchange(answer_, bound);
    }
    bool alive() const noexcept { return conn_ && PQstatus(conn_.get()) == CONNECTION_OK; }
    /// How many statement texts this session has prepared.
    std::size_t prepared_count() const noexcept { return prepared_.size(); }
    static constexpr std::size_t kMaxPrepared = 128;
    static constexpr std::size_t kMaxPreparedParams = 128;
    /// Reconnects with the same parameters if the connection was lost.
    bool ensure_alive() noexcept;
    /// The connection's own message (scrubbed), for errors outside exec.
    std::string last_message() const;
    std::string describe() const;

private:
    using Clock = std::chrono::steady_clock;
    struct Statement {
        std::string what;
        std::string sql;
        std::vector<std::optional<std::string>> params;
        std::function<void(Rows)> on_rows;
    };
    /// The queued statements and then `last`, in one pipeline and one round trip.
    Result<Rows> exec_pipelined(Statement last, Failure* failure);
    /// The outcome of a statement's result: its rows, or its error classified.
    Result<Rows> outcome(std::string_view what, ResultPtr res, Failure* failure);
    /// Polls the socket for `events` until `until`, noticing the abandon
    /// flag: true when ready, false when `until` passed; the error's message
    /// is the reason alone (the broker stopping, a poll failure).
    Result<bool> poll_socket(short events, Clock::time_point until) const;
    /// Waits until the server sent something, then consumes it: true; false
    /// when `until` passed. Silence longer than `silence` (0: no bound), an
    /// abandoned wait or a failure drops the connection.
    Result<bool> wait_readable(std::string_view what, Clock::time_point until, std::chrono::milliseconds silence);
    /// Closes the connection for good; last_message() says `why` from then on.
    void drop(std::string why) noexcept;
    /// Drops the connection: the error for `what`, which failed for `why`.
    Error dropped(std::string_view what, std::string_view why);
    /// Drives a connection started by PQconnectStartParams or PQresetStart
    /// to the end, within connect_timeout_ and the abandon flag; drops it
    /// when it fails.
    Outcome finish_connecting();

    ConnPtr conn_;
    Secrets secrets_;
    std::chrono::milliseconds answer_{0};
    std::chrono::milliseconds connect_timeout_{0};
    const std::atomic<bool>* abandon_ = nullptr;
    std::string closed_why_;  // why the connection was dropped, once it was
    std::vector<Statement> deferred_;
    /// Statement texts prepared on this session, and their names; emptied
    /// when a new session starts (finish_connecting).
    std::unordered_map<std::string, std::string> prepared_;
    std::uint64_t prepared_names_ = 0;  // never reused, even for a failed preparation
    bool deferred_failed_ = false;
    std::string last_sqlstate_;
};

/// Error for a failed statement: "fleet database: <what> failed: <primary message>".
Error statement_error(std::string_view what, std::string_view why);

}  // namespace devcert::pg
