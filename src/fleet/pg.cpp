#include "pg.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstring>

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

Result<Conn> Conn::open(std::string_view conninfo, unsigned connect_timeout_s) {
    auto parsed = parse_conninfo(std::string(conninfo));
    if (!parsed) return parsed.error();
    Conn conn;
    std::vector<const char*> keys;
    std::vector<const char*> values;
    bool has_timeout = false;
    bool has_app = false;
    for (PQconninfoOption* o = parsed->get(); o->keyword; ++o) {
        if (!o->val) continue;
        if (is_secret_keyword(o->keyword)) conn.secrets_.add(o->val);
        has_timeout |= std::strcmp(o->keyword, "connect_timeout") == 0;
        has_app |= std::strcmp(o->keyword, "application_name") == 0;
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
    keys.push_back(nullptr);
    values.push_back(nullptr);
    conn.conn_.reset(PQconnectdbParams(keys.data(), values.data(), 0));
    if (!conn.conn_) return make_error(Errc::store_error, "cannot connect to the fleet database: out of memory");
    // libpq prints notices (and the server's goodbye on shutdown) to stderr
    // by default, which inside a broker is nobody's log; errors reach the
    // caller through the results instead.
    PQsetNoticeProcessor(conn.conn_.get(), [](void*, const char*) {}, nullptr);
    if (PQstatus(conn.conn_.get()) != CONNECTION_OK)
        return make_error(Errc::unavailable, fmt::format("fleet database unreachable: cannot connect: {}", conn.last_message()));
    return conn;
}

std::string Conn::last_message() const {
    if (!conn_) return "no connection";
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
    if (PQstatus(conn_.get()) != CONNECTION_OK) PQreset(conn_.get());
    return PQstatus(conn_.get()) == CONNECTION_OK;
}

Result<Rows> Conn::exec(std::string_view what, const char* sql, std::initializer_list<Param> params,
                        Failure* failure) {
    return exec(what, sql, std::vector<Param>(params), failure);
}

Outcome Conn::exec_script(std::string_view what, const char* sql) {
    ResultPtr res(PQexec(conn_.get(), sql));
    if (res && PQresultStatus(res.get()) == PGRES_COMMAND_OK) return Ok{};
    const char* primary = res ? PQresultErrorField(res.get(), PG_DIAG_MESSAGE_PRIMARY) : nullptr;
    return statement_error(what, primary ? secrets_.scrub(one_line(primary)) : last_message());
}

Result<Rows> Conn::exec(std::string_view what, const char* sql, const std::vector<Param>& params, Failure* failure) {
    if (failure) *failure = Failure::none;
    // Text-format parameters must be NUL-terminated; views need not be.
    std::vector<std::string> owned;
    owned.reserve(params.size());
    std::vector<const char*> values;
    values.reserve(params.size());
    for (const auto& p : params) {
        if (p && p->find('\0') != std::string_view::npos) {
            if (failure) *failure = Failure::other;
            return make_error(Errc::invalid_argument,
                              fmt::format("fleet database: {} failed: a value holds a NUL byte, which PostgreSQL "
                                          "text cannot store",
                                          what));
        }
        if (p) {
            owned.emplace_back(*p);
            values.push_back(owned.back().c_str());
        } else {
            values.push_back(nullptr);
        }
    }
    ResultPtr res(PQexecParams(conn_.get(), sql, static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                               nullptr, 0));
    const ExecStatusType st = res ? PQresultStatus(res.get()) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return Rows(std::move(res));

    const char* state = res ? PQresultErrorField(res.get(), PG_DIAG_SQLSTATE) : nullptr;
    const std::string_view sqlstate = state ? state : "";
    Failure kind = Failure::other;
    if (sqlstate == "40001" || sqlstate == "40P01")
        kind = Failure::retry;
    else if (PQstatus(conn_.get()) != CONNECTION_OK || sqlstate.starts_with("08") || sqlstate.starts_with("57P"))
        kind = Failure::connection;
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
    return statement_error(what, why);
}

}  // namespace devcert::pg
