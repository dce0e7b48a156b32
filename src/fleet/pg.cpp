#include "pg.hpp"

#include <fmt/format.h>

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

namespace devcert::pg {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r'))
        s.remove_suffix(1);
    return s;
}

/// libpq's messages end in a newline and may span lines; a log line may not.
std::string one_line(std::string_view text) {
    std::string out;
    for (const char c : trim(text)) {
        if (c == '\n') {
            out += "; ";
        } else if (c != '\r') {
            out += c;
        }
    }
    return out;
}

struct OptionsFree {
    void operator()(PQconninfoOption* o) const noexcept {
        if (o) PQconninfoFree(o);
    }
};
using OptionsPtr = std::unique_ptr<PQconninfoOption, OptionsFree>;

/// Parses without ever passing libpq's message on: for a malformed string it
/// quotes the token it stopped at, which may be the password.
Result<OptionsPtr> parse_conninfo(const std::string& conninfo) {
    char* err = nullptr;
    OptionsPtr options(PQconninfoParse(conninfo.c_str(), &err));
    if (err) PQfreemem(err);
    if (!options)
        return make_error(Errc::invalid_argument,
                          "the fleet connection string cannot be parsed (libpq's reason is not shown as it may "
                          "quote a password): use key=value pairs, a postgresql:// URI or a service name");
    return options;
}

bool is_secret_keyword(std::string_view k) { return k == "password" || k == "sslpassword"; }

}  // namespace

std::string Secrets::scrub(std::string text) const {
    for (const auto& secret : values_) {
        for (std::size_t at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3))
            text.replace(at, secret.size(), "***");
    }
    return text;
}

std::int64_t Rows::i64(int row, int col) const noexcept {
    const std::string_view t = text(row, col);
    std::int64_t v = 0;
    std::from_chars(t.data(), t.data() + t.size(), v);
    return v;
}

std::string Rows::bytes(int row, int col) const {
    const std::string_view t = text(row, col);
    std::string out;
    if (t.size() < 2 || t[0] != '\\' || t[1] != 'x') return out;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return 0;
    };
    out.reserve((t.size() - 2) / 2);
    for (std::size_t i = 2; i + 1 < t.size(); i += 2)
        out.push_back(static_cast<char>((nibble(t[i]) << 4) | nibble(t[i + 1])));
    return out;
}

std::uint64_t Rows::affected() const noexcept {
    const char* n = r_ ? PQcmdTuples(r_.get()) : nullptr;
    if (!n || !*n) return 0;
    std::uint64_t v = 0;
    std::from_chars(n, n + std::strlen(n), v);
    return v;
}

std::string bytea_param(std::string_view raw) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out = "\\x";
    out.reserve(2 + raw.size() * 2);
    for (unsigned char c : raw) {
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
    }
    return out;
}

Error statement_error(std::string_view what, std::string_view why) {
    return make_error(Errc::store_error, fmt::format("fleet database: {} failed: {}", what, why));
}

Result<Conn> Conn::open(std::string_view conninfo, unsigned connect_timeout_s, const SessionLimits& limits) {
    auto parsed = parse_conninfo(std::string(conninfo));
    if (!parsed) return parsed.error();
    Conn conn;
    conn.answer_ = limits.answer;
    conn.abandon_ = limits.abandon;
    std::vector<const char*> keys;
    std::vector<const char*> values;
    // Ours first: a later -c of the same name (the string's own) wins.
    std::string session;
    if (limits.idle_in_transaction.count() > 0)
        session += fmt::format("-c idle_in_transaction_session_timeout={} ", limits.idle_in_transaction.count());
    if (limits.lock_wait.count() > 0) session += fmt::format("-c lock_timeout={} ", limits.lock_wait.count());
    bool has_timeout = false;
    bool has_app = false;
    for (PQconninfoOption* o = parsed->get(); o->keyword; ++o) {
        if (!o->val) continue;
        if (is_secret_keyword(o->keyword)) conn.secrets_.add(o->val);
        has_timeout |= std::strcmp(o->keyword, "connect_timeout") == 0;
        has_app |= std::strcmp(o->keyword, "application_name") == 0;
        if (std::strcmp(o->keyword, "options") == 0) {
            session += o->val;
            continue;
        }
        keys.push_back(o->keyword);
        values.push_back(o->val);
    }
    const std::string timeout = std::to_string(connect_timeout_s);
    if (!has_timeout && connect_timeout_s > 0) {
        keys.push_back("connect_timeout");
        values.push_back(timeout.c_str());
    }
    if (!has_app) {
        keys.push_back("application_name");
        values.push_back("mosquitto-devcert");
    }
    if (!session.empty()) {
        keys.push_back("options");
        values.push_back(session.c_str());
    }
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn.connect_timeout_ = std::chrono::seconds(connect_timeout_s);
    conn.conn_.reset(PQconnectStartParams(keys.data(), values.data(), 0));
    if (!conn.conn_) return make_error(Errc::store_error, "cannot connect to the fleet database: out of memory");
    // libpq prints notices (and the server's goodbye on shutdown) to stderr
    // by default, which inside a broker is nobody's log; errors reach the
    // caller through the results instead.
    PQsetNoticeProcessor(conn.conn_.get(), [](void*, const char*) {}, nullptr);
    if (auto r = conn.finish_connecting(); !r) return r.error();
    return conn;
}

Outcome Conn::finish_connecting() {
    // PQconnectdbParams would wait out connect_timeout however its owner
    // fares; this loop also gives up when the owner stops.
    auto failed = [this](std::string_view why) {
        drop(fmt::format("cannot connect: {}", why));
        return make_error(Errc::unavailable, fmt::format("fleet database unreachable: cannot connect: {}", why));
    };
    prepared_.clear();  // a new session: nothing is prepared on it
    if (PQstatus(conn_.get()) == CONNECTION_BAD) return failed(last_message());
    const Clock::time_point give_up =
        connect_timeout_.count() > 0 ? Clock::now() + connect_timeout_ : Clock::time_point::max();
    PostgresPollingStatusType state = PGRES_POLLING_WRITING;
    while (state != PGRES_POLLING_OK) {
        if (state == PGRES_POLLING_FAILED) return failed(last_message());
        auto ready = poll_socket(state == PGRES_POLLING_READING ? POLLIN : POLLOUT, give_up);
        if (!ready) return failed(ready.error().message);
        if (!*ready)
            return failed(fmt::format("no answer within {} s",
                                      std::chrono::ceil<std::chrono::seconds>(connect_timeout_).count()));
        state = PQconnectPoll(conn_.get());
    }
    return Ok{};
}

std::string Conn::last_message() const {
    if (!conn_) return closed_why_.empty() ? "no connection" : closed_why_;
    return secrets_.scrub(one_line(PQerrorMessage(conn_.get())));
}

std::string Conn::describe() const {
    if (!conn_) return "not connected";
    auto field = [](const char* v) { return v && *v ? std::string(v) : std::string("-"); };
    return fmt::format("host={} port={} dbname={} user={}", field(PQhost(conn_.get())), field(PQport(conn_.get())),
                       field(PQdb(conn_.get())), field(PQuser(conn_.get())));
}

bool Conn::ensure_alive() noexcept {
    if (!conn_) return false;
    if (PQstatus(conn_.get()) == CONNECTION_OK) return true;
    if (PQresetStart(conn_.get()) == 0) return false;
    try {
        return finish_connecting().ok();
    } catch (...) {  // formatting the message: out of memory
        return false;
    }
}

Result<Rows> Conn::exec(std::string_view what, const char* sql, std::initializer_list<Param> params,
                        Failure* failure) {
    return exec(what, sql, std::vector<Param>(params), failure);
}

Outcome Conn::exec_script(std::string_view what, const char* sql) {
    if (auto r = send(what, sql); !r) return r;
    std::optional<Error> failed;
    for (;;) {
        auto res = next_result(what);
        if (!res) return res.error();
        if (!*res) break;
        if (PQresultStatus(res->get()) != PGRES_COMMAND_OK && !failed) {
            const char* primary = PQresultErrorField(res->get(), PG_DIAG_MESSAGE_PRIMARY);
            failed = statement_error(what, primary ? secrets_.scrub(one_line(primary)) : last_message());
        }
    }
    if (failed) return *failed;
    return Ok{};
}

void Conn::drop(std::string why) noexcept {
    conn_.reset();
    closed_why_ = std::move(why);
}

Error Conn::dropped(std::string_view what, std::string_view why) {
    // Whatever the server does with the statement, this side will never read
    // its answer: the connection cannot be used again (an open transaction
    // ends when the server notices). Later errors on it say why.
    std::string message = fmt::format("{} failed: {}; the connection is dropped", what, why);
    auto error = make_error(Errc::unavailable, "fleet database unreachable: " + message);
    drop(std::move(message));
    return error;
}

Result<bool> Conn::poll_socket(short events, Clock::time_point until) const {
    // Short slices, so that a stopping owner is noticed within one.
    constexpr std::chrono::milliseconds kSlice{100};
    for (;;) {
        if (abandon_ && abandon_->load(std::memory_order_relaxed))
            return make_error(Errc::unavailable, "the broker is stopping");
        const auto now = Clock::now();
        if (now >= until) return false;
        pollfd p{PQsocket(conn_.get()), events, 0};
        if (p.fd < 0) return make_error(Errc::unavailable, "the connection is closed");
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - now);
        const int n = ::poll(&p, 1, static_cast<int>(std::min(left, kSlice).count()));
        if (n < 0 && errno != EINTR) return make_error(Errc::unavailable, std::strerror(errno));
        if (n > 0) return true;
    }
}

Result<bool> Conn::wait_readable(std::string_view what, Clock::time_point until, std::chrono::milliseconds silence) {
    if (!conn_) return dropped(what, "the connection is closed");
    const Clock::time_point answer_by = silence.count() > 0 ? Clock::now() + silence : Clock::time_point::max();
    auto ready = poll_socket(POLLIN, std::min(until, answer_by));
    if (!ready) return dropped(what, ready.error().message);
    if (!*ready) {
        if (answer_by <= until)
            return dropped(what, fmt::format("the server did not answer within {} ms", silence.count()));
        return false;
    }
    if (PQconsumeInput(conn_.get()) == 0)
        return make_error(Errc::unavailable, fmt::format("fleet database unreachable: {} failed: {}; the connection "
                                                         "is lost",
                                                         what, last_message()));
    return true;
}

Outcome Conn::send(std::string_view what, const char* sql) {
    if (!conn_ || PQsendQuery(conn_.get(), sql) == 0)
        return make_error(Errc::unavailable,
                          fmt::format("fleet database unreachable: {} failed: {}; the connection is lost", what,
                                      last_message()));
    return Ok{};
}

Result<ResultPtr> Conn::next_result(std::string_view what) {
    while (conn_ && PQisBusy(conn_.get())) {
        if (auto r = wait_readable(what, Clock::time_point::max(), answer_); !r) return r.error();
    }
    if (!conn_) return dropped(what, "the connection is closed");
    return ResultPtr(PQgetResult(conn_.get()));
}

Outcome Conn::await_answer(std::string_view what) {
    if (auto r = wait_readable(what, Clock::time_point::max(), answer_); !r) return r.error();
    return Ok{};
}

Result<bool> Conn::await_input(std::string_view what, std::chrono::milliseconds for_at_most) {
    // An idle wait is not a statement: only the caller's bound applies.
    return wait_readable(what, Clock::now() + for_at_most, std::chrono::milliseconds{0});
}

namespace {
bool holds_nul(const std::optional<std::string_view>& p) noexcept {
    return p && p->find('\0') != std::string_view::npos;
}
Error nul_error(std::string_view what) {
    return make_error(Errc::invalid_argument,
                      fmt::format("fleet database: {} failed: a value holds a NUL byte, which PostgreSQL text "
                                  "cannot store",
                                  what));
}
}  // namespace

void Conn::defer(std::string_view what, std::string sql, std::vector<std::optional<std::string>> params,
                 std::function<void(Rows)> on_rows) {
    deferred_.push_back(Statement{std::string(what), std::move(sql), std::move(params), std::move(on_rows)});
}

Result<Rows> Conn::exec(std::string_view what, const char* sql, const std::vector<Param>& params, Failure* failure) {
    if (failure) *failure = Failure::none;
    deferred_failed_ = false;
    last_sqlstate_.clear();
    Statement last{std::string(what), sql, {}, {}};
    last.params.reserve(params.size());
    for (const auto& p : params) last.params.push_back(p ? std::optional<std::string>(*p) : std::nullopt);
    return exec_pipelined(std::move(last), failure);
}

Result<Rows> Conn::exec_pipelined(Statement last, Failure* failure) {
    std::vector<Statement> list = std::exchange(deferred_, {});
    list.push_back(std::move(last));
    auto lost = [&](std::string_view what) -> Error {
        if (failure) *failure = Failure::connection;
        return make_error(Errc::unavailable, fmt::format("fleet database unreachable: {} failed: {}; the connection "
                                                         "is lost",
                                                         what, last_message()));
    };
    for (const Statement& st : list) {
        for (const auto& p : st.params) {
            if (holds_nul(p ? std::optional<std::string_view>(*p) : std::nullopt)) {
                if (failure) *failure = Failure::other;
                deferred_failed_ = &st != &list.back();
                return nul_error(st.what);
            }
        }
    }
    if (!conn_ || PQenterPipelineMode(conn_.get()) != 1) return lost(list.front().what);
    // What was sent, in order: each statement's execution, preceded by its
    // preparation the first time this session runs its text. Each answers
    // with results of its own.
    struct Sent {
        std::size_t statement;
        std::string preparing;  // the name being prepared; empty: the execution
    };
    std::vector<Sent> sent;
    sent.reserve(list.size() * 2);
    for (std::size_t i = 0; i < list.size(); ++i) {
        const Statement& st = list[i];
        std::vector<const char*> values;
        values.reserve(st.params.size());
        for (const auto& p : st.params) values.push_back(p ? p->c_str() : nullptr);
        const int n = static_cast<int>(values.size());
        std::string name;
        if (const auto it = prepared_.find(st.sql); it != prepared_.end()) {
            name = it->second;
        } else if (prepared_.size() < kMaxPrepared && st.params.size() <= kMaxPreparedParams) {
            // Counted as prepared from here, so that the same text later in
            // this pipeline runs by the same name; forgotten below if the
            // server does not prepare it.
            name = fmt::format("devcert_{}", ++prepared_names_);
            if (PQsendPrepare(conn_.get(), name.c_str(), st.sql.c_str(), n, nullptr) != 1) return lost(st.what);
            prepared_.emplace(st.sql, name);
            sent.push_back(Sent{i, name});
        }
        const int queued = name.empty() ? PQsendQueryParams(conn_.get(), st.sql.c_str(), n, nullptr, values.data(),
                                                            nullptr, nullptr, 0)
                                        : PQsendQueryPrepared(conn_.get(), name.c_str(), n, values.data(), nullptr,
                                                              nullptr, 0);
        if (queued != 1) return lost(st.what);
        sent.push_back(Sent{i, {}});
    }
    if (PQpipelineSync(conn_.get()) != 1) return lost(list.back().what);
    // Each result group ends with a null; after the last, the sync's.
    // A failed statement's error is kept; those after it come back aborted.
    ResultPtr kept;
    std::size_t kept_of = list.size() - 1;
    // A connection lost after a statement failed is that failure's doing
    // (the server ended the session with it): the failure is reported.
    auto kept_failure = [&] { return kept && PQresultStatus(kept.get()) != PGRES_COMMAND_OK &&
                                     PQresultStatus(kept.get()) != PGRES_TUPLES_OK; };
    bool ended = false;
    for (std::size_t k = 0; k < sent.size() && !ended; ++k) {
        const std::size_t i = sent[k].statement;
        const bool preparing = !sent[k].preparing.empty();
        bool prepared = false;
        for (;;) {
            auto next = next_result(list[i].what);
            if (!next) {
                if (!kept_failure()) {
                    if (failure) *failure = Failure::connection;
                    return next.error();
                }
                ended = true;
                break;
            }
            if (!*next) break;
            const ExecStatusType st = PQresultStatus(next->get());
            if (st == PGRES_PIPELINE_ABORTED) continue;
            const bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
            const bool kept_failed = kept && kept_of < i;
            if (!ok && !kept_failed) {
                kept = std::move(*next);
                kept_of = i;
            } else if (ok && preparing) {
                prepared = true;
            } else if (ok && i + 1 == list.size() && !kept) {
                kept = std::move(*next);
            } else if (ok && list[i].on_rows) {
                list[i].on_rows(Rows(std::move(*next)));
            }
        }
        if (preparing && !prepared) prepared_.erase(list[i].sql);  // failed, or never ran
    }
    std::optional<Result<ResultPtr>> sync;
    if (!ended) {
        sync.emplace(next_result(list.back().what));
        if (!*sync) {
            if (!kept_failure()) {
                if (failure) *failure = Failure::connection;
                return sync->error();
            }
            ended = true;
        }
    }
    if (ended) {
        deferred_failed_ = kept_of + 1 < list.size();
        return outcome(list[kept_of].what, std::move(kept), failure);
    }
    if (!**sync || PQresultStatus((*sync)->get()) != PGRES_PIPELINE_SYNC || PQexitPipelineMode(conn_.get()) != 1)
        return dropped(list.back().what, "the pipeline of statements did not end as sent");
    deferred_failed_ = kept_of + 1 < list.size();
    return outcome(list[kept_of].what, std::move(kept), failure);
}

Result<Rows> Conn::outcome(std::string_view what, ResultPtr res, Failure* failure) {
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Rows(std::move(res));

    const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
    const std::string_view sqlstate = state ? state : "";
    last_sqlstate_.assign(sqlstate);
    Failure kind = Failure::other;
    if (sqlstate == "40001" || sqlstate == "40P01")
        kind = Failure::retry;
    else if (!conn_ || PQstatus(conn_.get()) != CONNECTION_OK || sqlstate.starts_with("08") ||
             sqlstate.starts_with("57P") || sqlstate == "25P03")
        kind = Failure::connection;
    else if (sqlstate == "55P03")
        kind = Failure::busy;
    if (failure) *failure = kind;
    const char* primary = res ? PQresultErrorField(res.get(), PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    std::string why = primary ? secrets_.scrub(one_line(primary)) : last_message();
    if (!sqlstate.empty()) why += fmt::format(" (SQLSTATE {})", sqlstate);
    if (kind == Failure::connection) {
        // Nothing an open transaction did is kept when its connection is
        // lost before COMMIT; the caller that was committing says otherwise.
        return make_error(Errc::unavailable,
                          fmt::format("fleet database unreachable: {} failed: {}; the connection is lost", what, why));
    }
    if (sqlstate == "55P03") {
        // lock_timeout: another session held what this one needs for too long
        // (another member's transaction; nothing was changed here).
        return make_error(Errc::unavailable,
                          fmt::format("fleet database busy: {} failed: {}; another session held the lock for "
                                      "longer than this broker waits",
                                      what, why));
    }
    return statement_error(what, why);
}

}  // namespace devcert::pg
