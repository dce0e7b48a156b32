#include "devcert/fleet.hpp"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <exception>

#include "pg.hpp"
#include "schema.hpp"
#include "write_view.hpp"

namespace devcert {

using fleet_detail::FleetWriteView;
using fleet_detail::TxnState;

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

/// The head and entries of a change log read (changes_after and a write's
/// catch-up): row 0 carries the head, each row an entry unless null.
Result<FleetChangeBatch> batch_from_rows(const pg::Rows& rows, std::uint64_t after, std::size_t limit) {
    if (rows.size() == 0) return make_error(Errc::store_error, "fleet database: the instance's head row is missing");
    FleetChangeBatch batch;
    batch.head = FleetHead{std::string(rows.text(0, 0)), rows.u64(0, 1), rows.u64(0, 2)};
    for (int i = 0; i < rows.size(); ++i) {
        if (rows.null(i, 3)) break;
        FleetChange change;
        // Entries up to trimmed_through are never applied (they are history
        // moved in by MigrateToFleet, which carries no records).
        if (!fleet_detail::change_from_row(rows, i, 3, change, rows.u64(i, 3) > batch.head.trimmed_through))
            return make_error(Errc::store_error,
                              fmt::format("fleet database: change log entry {} is unreadable", rows.text(i, 3)));
        if (change.entry.seq == after)
            batch.anchor = std::move(change);
        else if (batch.changes.size() < limit)
            batch.changes.push_back(std::move(change));
    }
    return batch;
}

/// The change log after a position, with the head, in one statement and so
/// from one snapshot: seq >= $2 brings the anchor entry along, $3 is
/// statement_limit(), and the newest $4 entries are left out, the head with
/// them. changes_after passes 0; a write's catch-up, its own changes' number.
const std::string& change_log_sql() {
    static const std::string sql = fmt::format(
        "SELECT i.epoch, i.last_seq - $4, i.trimmed_through, c.* FROM devcert.instances i "
        "LEFT JOIN LATERAL (SELECT {} FROM devcert.changes WHERE instance = i.id AND seq >= $2 "
        "AND seq <= i.last_seq - $4 ORDER BY seq LIMIT $3) c ON true WHERE i.id = $1",
        fleet_detail::kChangeColumns);
    return sql;
}

/// changes_after's limit as the statement's: one more, for the anchor.
std::string statement_limit(std::size_t limit) {
    return std::to_string(std::min<std::uint64_t>(limit, static_cast<std::uint64_t>(INT64_MAX) - 1) + 1);
}

std::string statement_seq(std::uint64_t seq) {
    return std::to_string(std::min<std::uint64_t>(seq, static_cast<std::uint64_t>(INT64_MAX)));
}

Error thrown(std::string_view what) {
    return make_error(Errc::store_error, fmt::format("transaction body failed: {}", what));
}

template <class Fn>
Outcome guarded(Fn&& fn) noexcept {
    try {
        return fn();
    } catch (const std::exception& e) {
        return thrown(e.what());
    } catch (...) {
        return thrown("unknown exception");
    }
}

Error retries_exhausted(unsigned attempts, const Error& last) {
    return make_error(Errc::store_error,
                      fmt::format("fleet database: the transaction conflicted with others {} times in a row; last: {}",
                                  attempts, last.message));
}

}  // namespace

std::string fleet_channel(std::string_view instance_id) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_Digest(instance_id.data(), instance_id.size(), digest, &len, EVP_sha256(), nullptr);
    std::string out = "devcert_fleet_";
    static constexpr char kHex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 8 && i < len; ++i) {
        out.push_back(kHex[digest[i] >> 4]);
        out.push_back(kHex[digest[i] & 15]);
    }
    return out;
}

Result<std::string> fleet_conninfo(std::string_view value) {
    const std::string_view v = trim(value);
    if (v.empty()) return make_error(Errc::invalid_argument, "the fleet connection string is empty");
    std::string conninfo;
    if (v.find('=') == std::string_view::npos && !v.starts_with("postgresql://") && !v.starts_with("postgres://")) {
        // A bare word is a service name (pg_service.conf).
        conninfo = "service='";
        for (char c : v) {
            if (c == '\'' || c == '\\') conninfo.push_back('\\');
            conninfo.push_back(c);
        }
        conninfo.push_back('\'');
    } else {
        conninfo.assign(v);
    }
    char* err = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &err);
    if (err) PQfreemem(err);
    if (!parsed)
        return make_error(Errc::invalid_argument,
                          "the fleet connection string cannot be parsed (libpq's reason is not shown as it may "
                          "quote a password): use key=value pairs, a postgresql:// URI or a service name");
    PQconninfoFree(parsed);
    return conninfo;
}

namespace {

/// How one run of a write's body ended: commit it, run it again from
/// scratch (a serialisation failure or deadlock), or give up with `error`.
struct Attempt {
    enum class Next { commit, retry, abort } next = Next::commit;
    std::optional<Error> error;

    static Attempt commit() { return {}; }
    static Attempt retry(Error e) { return {Next::retry, std::move(e)}; }
    static Attempt abort(Error e) { return {Next::abort, std::move(e)}; }
};

}  // namespace

struct Fleet::Impl {
    FleetOptions options;
    pg::Conn conn;
    std::int64_t instance = 0;
    std::string channel;

    bool listening = false;
    std::optional<std::uint64_t> heard;  // see heard_through()

    /// Reconnects if the connection was lost (never inside a transaction:
    /// its outcome would be unknown), renewing LISTEN.
    Outcome reachable() {
        const bool was_down = !conn.alive();
        if (!conn.ensure_alive())
            return make_error(Errc::unavailable, fmt::format("fleet database unreachable: {}", conn.last_message()));
        if (was_down && listening) return listen_now();
        return Ok{};
    }
    Outcome listen_now() {
        // The channel is a plain identifier (fleet_channel), safe to splice.
        if (auto r = conn.exec("listen for commits", ("LISTEN " + channel).c_str()); !r) return r.error();
        listening = true;
        return Ok{};
    }
    /// Starts a transaction. A connection found dead by BEGIN (the server
    /// restarted since the last call) is re-established and BEGIN sent
    /// again: nothing had started, so nothing can be applied twice.
    Outcome begin(const char* sql) {
        conn.discard_deferred();
        if (auto r = reachable(); !r) return r;
        pg::Failure failure = pg::Failure::none;
        if (auto r = conn.exec("begin a transaction", sql, {}, &failure); !r) {
            if (failure != pg::Failure::connection) return r.error();
            if (auto again = reachable(); !again) return again;
            if (auto retried = conn.exec("begin a transaction", sql); !retried) return retried.error();
        }
        return Ok{};
    }
    void rollback() {
        conn.discard_deferred();
        (void)conn.exec("roll back", "ROLLBACK");
    }

    /// Begins a write, READ COMMITTED. Every write of the instance takes its
    /// head row, which numbers the changes, and holds it until its commit is
    /// flushed: the fleet's writes serialise on it. So:
    ///  - optimistic (a first attempt): the records first, the head row
    ///    last, at flush(), held only for the change log's rows and the
    ///    commit. Every lock is waited for briefly: a record's for
    ///    kOptimisticLockWaitMs, the head's for kOptimisticHeadWaitMs. Two
    ///    writes that lock records in opposite orders, or an optimistic
    ///    write holding a record that a pessimistic one (holding the head)
    ///    waits for, would deadlock, and PostgreSQL notices a deadlock only
    ///    after deadlock_timeout (1 s by default): the brief wait ends that
    ///    at once, and the write runs again pessimistic;
    ///  - pessimistic: the head row first, so that writers serialise from
    ///    their first statement and can never hold records in opposite
    ///    orders; locks are waited for as the session says. Writes that
    ///    conflict keep their throughput of before the optimistic attempt.
    /// BEGIN and the first statement are sent with the body's first, in its
    /// round trip. A connection that turns out dead in that round trip (the
    /// server restarted since the last call) ran nothing: run_write runs
    /// the attempt again on a new one, as begin() does for BEGIN alone.
    Outcome begin_write(bool optimistic) {
        conn.discard_deferred();
        if (auto r = reachable(); !r) return r;
        conn.defer("begin a transaction", "BEGIN ISOLATION LEVEL READ COMMITTED");
        if (optimistic)
            conn.defer("bound lock waits", fmt::format("SET LOCAL lock_timeout = {}", fleet_detail::kOptimisticLockWaitMs));
        else
            conn.defer("lock the instance's head", "SELECT 1 FROM devcert.instances WHERE id = $1 FOR UPDATE",
                       {std::to_string(instance)});
        return Ok{};
    }

    /// The loop write() and write_batch() share: begin, the body, commit;
    /// an optimistic attempt first, then up to max_attempts pessimistic ones
    /// while the failures are retryable. Body:
    /// (FleetWriteView&, TxnState&) -> Attempt.
    template <class Body>
    Result<std::vector<FleetChange>> run_write(Body&& body, FleetCatchUp* catch_up);

    /// Queues the catch-up's read, after the head row's update: in this
    /// transaction the head is past the write's own `own` changes, and every
    /// change numbered before them is committed (their writers held the head
    /// row until their commits), so this statement's snapshot holds them all.
    /// An unreadable batch leaves `out` empty: the broker's follower reads it.
    void defer_catch_up(std::size_t own, const FleetCatchUp& catch_up, std::optional<FleetChangeBatch>& out) {
        conn.defer("read the change log before this write's changes", change_log_sql(),
                   {std::to_string(instance), statement_seq(catch_up.after), statement_limit(catch_up.limit),
                    std::to_string(own)},
                   [&out, after = catch_up.after, limit = catch_up.limit](pg::Rows rows) {
                       if (auto batch = batch_from_rows(rows, after, limit)) out = std::move(*batch);
                   });
    }

    /// Flushes, notifies and commits. `failure` tells a retryable failure.
    /// With `catch_up`, reads its batch in the same round trip.
    Outcome commit(FleetWriteView& view, TxnState& state, pg::Failure& failure, FleetCatchUp* catch_up) {
        failure = pg::Failure::none;
        view.flush();
        // NOTIFY is delivered at commit, so the payload names a committed
        // seq: the head's, read in the transaction (the head's update is
        // queued with it, and answered with the commit).
        std::optional<FleetChangeBatch> caught;
        if (view.has_changes()) {
            conn.defer("notify the fleet",
                       "SELECT pg_notify($1, (SELECT last_seq FROM devcert.instances WHERE id = $2)::text)",
                       {channel, std::to_string(instance)});
            if (catch_up) defer_catch_up(view.change_count(), *catch_up, caught);
        }
        // One round trip: the head's update, the change log's rows, the
        // notification and the catch-up's read, queued, then COMMIT.
        auto r = conn.exec("commit", "COMMIT", {}, &failure);
        committed = view.take_changes();
        // Only a committed write's read is the log before its changes.
        if (r && caught) catch_up->batch = std::move(caught);
        if (!r) {
            // A busy head row (waited for briefly, see begin_write) is
            // retryable like a busy record.
            state.note(failure, r.error(), conn.deferred_failed());
            // The server may have committed before the connection broke: this
            // is not "unavailable, nothing changed". Unless the server ended
            // the session for sitting idle in the transaction (25P03): it was
            // waiting for this COMMIT then, and rolled back.
            if (failure == pg::Failure::connection && conn.last_sqlstate() != "25P03")
                return make_error(Errc::store_error,
                                  fmt::format("fleet database: the connection was lost during COMMIT, so the outcome "
                                              "is unknown (the change may have been applied): {}",
                                              r.error().message));
            return r.error();
        }
        for (const FleetChange& change : committed) {
            if (change.entry.seq == 0)
                return make_error(Errc::store_error,
                                  "fleet database: committed, but the instance's head row gave no sequence numbers");
        }
        return Ok{};
    }
    std::vector<FleetChange> committed;
};

Fleet::Fleet(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Fleet::~Fleet() = default;

const std::string& Fleet::instance_id() const noexcept { return impl_->options.instance_id; }

std::string Fleet::describe() const { return impl_->conn.describe(); }

Outcome Fleet::init(const FleetOptions& options) {
    if (auto ok = fleet_detail::check_instance_id(options.instance_id); !ok) return ok;
    auto conninfo = fleet_conninfo(options.conninfo);
    if (!conninfo) return conninfo.error();
    auto conn = pg::Conn::open(*conninfo, options.connect_timeout_s);
    if (!conn) return conn.error();
    return fleet_detail::create_or_upgrade(*conn, options.instance_id);
}

Result<std::unique_ptr<Fleet>> Fleet::connect(const FleetOptions& options) {
    if (auto ok = fleet_detail::check_instance_id(options.instance_id); !ok) return ok.error();
    auto conninfo = fleet_conninfo(options.conninfo);
    if (!conninfo) return conninfo.error();
    pg::SessionLimits limits;
    if (options.timeout_s > 0) {
        const std::chrono::milliseconds t = std::chrono::seconds(options.timeout_s);
        limits.idle_in_transaction = t;
        limits.lock_wait = 2 * t;
        limits.answer = 3 * t;
    }
    limits.abandon = options.abandon;
    auto conn = pg::Conn::open(*conninfo, options.connect_timeout_s, limits);
    if (!conn) return conn.error();
    auto row = fleet_detail::check_schema(*conn, options.instance_id);
    if (!row) return row.error();
    auto impl = std::make_unique<Impl>();
    impl->options = options;
    impl->conn = std::move(*conn);
    impl->instance = row->id;
    impl->channel = fleet_channel(options.instance_id);
    if (impl->options.max_attempts == 0) impl->options.max_attempts = 1;
    return std::unique_ptr<Fleet>(new Fleet(std::move(impl)));
}


template <class Body>
Result<std::vector<FleetChange>> Fleet::Impl::run_write(Body&& body, FleetCatchUp* catch_up) {
    Impl& d = *this;
    if (catch_up) catch_up->batch.reset();
    Error last = make_error(Errc::store_error, "fleet database: no attempt made");
    bool reconnected = false;
    // Attempt 0 is the optimistic one.
    unsigned attempt = 0;
    while (attempt <= d.options.max_attempts) {
        const bool optimistic = attempt == 0;
        if (auto r = d.begin_write(optimistic); !r) return r.error();
        TxnState state;
        state.optimistic = optimistic;
        FleetWriteView view(d.conn, d.instance, state, true);
        Attempt run = body(view, state);
        if (run.next != Attempt::Next::commit) {
            d.rollback();
            if (state.failure == pg::Failure::connection && !state.answered && !reconnected) {
                reconnected = true;  // found dead by BEGIN's round trip: the same attempt, once
                continue;
            }
            if (run.next == Attempt::Next::abort) return *run.error;
            last = *run.error;
            ++attempt;
            continue;
        }
        pg::Failure failure = pg::Failure::none;
        if (auto r = d.commit(view, state, failure, catch_up); !r) {
            if (failure != pg::Failure::connection) d.rollback();
            if (state.retryable()) {
                last = r.error();
                ++attempt;
                continue;
            }
            return r.error();
        }
        return std::move(d.committed);
    }
    return retries_exhausted(d.options.max_attempts, last);
}

Result<std::vector<FleetChange>> Fleet::write(const WriteFn& fn, FleetCatchUp* catch_up) {
    return impl_->run_write(
        [&](FleetWriteView& view, TxnState& state) {
            const Outcome out = guarded([&] { return fn(view); });
            if (state.retryable()) return Attempt::retry(*state.first_error);
            if (state.failed()) return Attempt::abort(*state.first_error);
            if (!out) return Attempt::abort(out.error());
            return Attempt::commit();
        },
        catch_up);
}

Result<std::vector<FleetChange>> Fleet::write_batch(const std::vector<WriteFn>& fns, std::vector<Outcome>& results,
                                                    FleetCatchUp* catch_up) {
    Impl& d = *impl_;
    auto committed = d.run_write([&](FleetWriteView& view, TxnState& state) {
        results.clear();
        for (const auto& fn : fns) {
            // Savepoints and their releases go with the jobs' statements.
            d.conn.defer("take a savepoint", "SAVEPOINT devcert_job");
            const auto mark = view.mark();
            Outcome out = guarded([&] { return fn(view); });
            if (state.retryable()) return Attempt::retry(*state.first_error);
            if (state.failure == pg::Failure::connection) return Attempt::abort(*state.first_error);
            // A statement queued before this job's own failed (the previous
            // job's release, the head's lock): its savepoint may not exist.
            if (state.failed() && state.queued_failed) return Attempt::abort(*state.first_error);
            if (state.failed() && out) out = *state.first_error;
            if (!out) {
                if (auto r = d.conn.exec("roll back to the savepoint", "ROLLBACK TO SAVEPOINT devcert_job"); !r)
                    return Attempt::abort(r.error());
                view.rollback_to(mark);
                const bool optimistic = state.optimistic;  // the transaction's mode outlives the job
                state = TxnState{};
                state.optimistic = optimistic;
            } else {
                d.conn.defer("release the savepoint", "RELEASE SAVEPOINT devcert_job");
            }
            results.push_back(std::move(out));
        }
        return Attempt::commit();
    }, catch_up);
    if (!committed) results.assign(fns.size(), Outcome(committed.error()));
    return committed;
}

Outcome Fleet::read(const ReadFn& fn) {
    Impl& d = *impl_;
    if (auto r = d.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !r) return r;
    TxnState state;
    FleetWriteView view(d.conn, d.instance, state, false);
    const Outcome out = guarded([&] { return fn(view); });
    d.rollback();  // nothing to keep
    if (state.failed() && out) return *state.first_error;
    return out;
}

namespace {
constexpr const char* kHeadSql = "SELECT epoch, last_seq, trimmed_through FROM devcert.instances WHERE id = $1";

Result<FleetHead> read_head(pg::Conn& conn, const std::string& instance) {
    auto rows = conn.exec("read the change log head", kHeadSql, {instance});
    if (!rows) return rows.error();
    if (rows->size() != 1) return make_error(Errc::store_error, "fleet database: the instance's head row is missing");
    return FleetHead{std::string(rows->text(0, 0)), rows->u64(0, 1), rows->u64(0, 2)};
}
}  // namespace

Result<FleetHead> Fleet::head() {
    if (auto r = impl_->reachable(); !r) return r.error();
    auto head = read_head(impl_->conn, std::to_string(impl_->instance));
    // A read is safe to repeat on a fresh connection.
    if (!head && !impl_->conn.alive() && impl_->reachable())
        head = read_head(impl_->conn, std::to_string(impl_->instance));
    return head;
}

Result<FleetChangeBatch> Fleet::changes_after(std::uint64_t after, std::size_t limit) {
    Impl& d = *impl_;
    if (auto r = d.reachable(); !r) return r.error();
    const std::string instance = std::to_string(d.instance);
    const std::string from_text = statement_seq(after);
    const std::string n_text = statement_limit(limit);
    const std::vector<pg::Param> params{instance, from_text, n_text, "0"};
    const char* sql = change_log_sql().c_str();
    auto rows = d.conn.exec("read the change log", sql, params);
    if (!rows && !d.conn.alive() && d.reachable()) rows = d.conn.exec("read the change log", sql, params);
    if (!rows) return rows.error();
    return batch_from_rows(*rows, after, limit);
}

// ---------------------------------------------------------------------------
// Snapshot: binary COPY, parsed here.

namespace {

/// Reads the fields of binary COPY tuples (PostgreSQL's documented format:
/// a signature header, then per tuple an int16 field count and per field
/// an int32 length, -1 for NULL, and the value in the type's binary form).
class CopyReader {
public:
    /// Appends a chunk from PQgetCopyData.
    void feed(const char* data, std::size_t n) {
        if (pos_ > 0 && pos_ == buf_.size()) {
            buf_.clear();
            pos_ = 0;
        } else if (pos_ > (1u << 20)) {
            buf_.erase(0, pos_);
            pos_ = 0;
        }
        buf_.append(data, n);
    }
    /// Next complete tuple into fields; false when none is complete yet.
    /// `bad` is set on a malformed stream, `done` at the trailer.
    bool next(std::vector<std::optional<std::string_view>>& fields, bool& bad, bool& done) {
        bad = false;
        done = false;
        if (!header_read_) {
            static constexpr char kSignature[] = "PGCOPY\n\377\r\n";
            if (avail() < 19) return false;
            if (std::memcmp(buf_.data() + pos_, kSignature, 11) != 0) {
                bad = true;
                return false;
            }
            const std::uint32_t ext = u32(pos_ + 15);
            if (avail() < 19 + ext) return false;
            pos_ += 19 + ext;
            header_read_ = true;
        }
        if (avail() < 2) return false;
        const auto count = static_cast<std::int16_t>(u16(pos_));
        if (count == -1) {
            pos_ += 2;
            done = true;
            return false;
        }
        std::size_t at = pos_ + 2;
        fields.clear();
        for (int i = 0; i < count; ++i) {
            if (buf_.size() - at < 4) return false;
            const auto len = static_cast<std::int32_t>(u32(at));
            at += 4;
            if (len < 0) {
                fields.emplace_back(std::nullopt);
                continue;
            }
            if (buf_.size() - at < static_cast<std::size_t>(len)) return false;
            fields.emplace_back(std::string_view(buf_.data() + at, static_cast<std::size_t>(len)));
            at += static_cast<std::size_t>(len);
        }
        pos_ = at;
        return true;
    }

    static std::int64_t i64(std::string_view f) {
        std::uint64_t v = 0;
        for (unsigned char c : f) v = (v << 8) | c;
        if (f.size() == 2) return static_cast<std::int16_t>(v);
        if (f.size() == 4) return static_cast<std::int32_t>(v);
        return static_cast<std::int64_t>(v);
    }

private:
    std::size_t avail() const noexcept { return buf_.size() - pos_; }
    std::uint16_t u16(std::size_t at) const noexcept {
        const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + at);
        return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
    }
    std::uint32_t u32(std::size_t at) const noexcept {
        const auto* p = reinterpret_cast<const unsigned char*>(buf_.data() + at);
        return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
    }
    std::string buf_;
    std::size_t pos_ = 0;
    bool header_read_ = false;
};

struct CopyBufferFree {
    void operator()(char* p) const noexcept {
        if (p) PQfreemem(p);
    }
};

using Fields = std::vector<std::optional<std::string_view>>;

std::string_view field(const Fields& f, std::size_t i) { return f[i] ? *f[i] : std::string_view{}; }

void fill_fingerprint(std::string_view raw, Sha256& out) {
    out = {};
    std::memcpy(out.data(), raw.data(), std::min(raw.size(), out.size()));
}

bool ca_from_fields(const Fields& f, CaRecord& rec) {
    if (f.size() != 15) return false;
    rec.sn = field(f, 0);
    rec.name = field(f, 1);
    rec.content_pem = field(f, 2);
    rec.verification_pem = field(f, 3);
    rec.registration_code = field(f, 4);
    rec.status = static_cast<CertStatus>(CopyReader::i64(field(f, 5)));
    rec.valid_begin_ms = CopyReader::i64(field(f, 6));
    rec.valid_end_ms = CopyReader::i64(field(f, 7));
    rec.created_ms = CopyReader::i64(field(f, 8));
    rec.updated_ms = CopyReader::i64(field(f, 9));
    rec.status_changed_ms = CopyReader::i64(field(f, 10));
    rec.registered_by = static_cast<RegisteredBy>(CopyReader::i64(field(f, 11)));
    rec.subject_key_id = field(f, 12);
    fill_fingerprint(field(f, 13), rec.fingerprint);
    rec.device_count = static_cast<std::uint64_t>(CopyReader::i64(field(f, 14)));
    return true;
}

bool device_from_fields(const Fields& f, DeviceRecord& rec) {
    if (f.size() != 12) return false;
    rec.ca_sn = field(f, 0);
    rec.device_sn = field(f, 1);
    rec.device_name = field(f, 2);
    rec.content_pem = field(f, 3);
    rec.status = static_cast<CertStatus>(CopyReader::i64(field(f, 4)));
    rec.valid_begin_ms = CopyReader::i64(field(f, 5));
    rec.valid_end_ms = CopyReader::i64(field(f, 6));
    rec.created_ms = CopyReader::i64(field(f, 7));
    rec.updated_ms = CopyReader::i64(field(f, 8));
    rec.status_changed_ms = CopyReader::i64(field(f, 9));
    rec.registered_by = static_cast<RegisteredBy>(CopyReader::i64(field(f, 10)));
    fill_fingerprint(field(f, 11), rec.fingerprint);
    return true;
}

/// Runs one COPY ... TO STDOUT (FORMAT binary) and hands every tuple to
/// on_tuple. After an error from on_tuple the rest of the stream is read
/// and dropped, so the connection stays usable.
Outcome copy_out(pg::Conn& conn, const std::string& sql, std::string_view what,
                 const std::function<Outcome(const Fields&)>& on_tuple) {
    if (auto r = conn.send(what, sql.c_str()); !r) return r;
    auto start = conn.next_result(what);
    if (!start) return start.error();
    if (!*start || PQresultStatus(start->get()) != PGRES_COPY_OUT) {
        const std::string why = conn.last_message();
        while (true) {  // the statement's remaining results, so the connection stays usable
            auto rest = conn.next_result(what);
            if (!rest || !*rest) break;
        }
        return pg::statement_error(what, why);
    }
    CopyReader reader;
    Fields fields;
    std::optional<Error> failed;
    bool done = false;
    for (;;) {
        char* raw = nullptr;
        const int n = PQgetCopyData(conn.get(), &raw, 1);
        std::unique_ptr<char, CopyBufferFree> chunk(raw);
        if (n == 0) {  // nothing buffered: wait (within the connection's limits) for more
            if (auto more = conn.await_answer(what); !more) return more;
            continue;
        }
        if (n == -1) break;
        if (n < 0) return pg::statement_error(what, conn.last_message());
        if (failed || done) continue;
        reader.feed(chunk.get(), static_cast<std::size_t>(n));
        bool bad = false;
        while (reader.next(fields, bad, done)) {
            if (auto r = on_tuple(fields); !r) {
                failed = r.error();
                break;
            }
        }
        if (bad) failed = pg::statement_error(what, "the COPY stream is malformed");
    }
    for (;;) {
        auto r = conn.next_result(what);
        if (!r) return r.error();
        if (!*r) break;
        if (PQresultStatus(r->get()) != PGRES_COMMAND_OK && !failed)
            failed = pg::statement_error(what, conn.last_message());
    }
    if (failed) return *failed;
    return Ok{};
}

}  // namespace

Result<FleetHead> Fleet::snapshot(FleetSnapshotSink& sink) {
    Impl& d = *impl_;
    if (auto r = d.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"); !r) return r.error();
    const std::string instance = std::to_string(d.instance);
    // A snapshot of millions of records may take the server long before its
    // first row: no bound on the answers but the owner stopping.
    struct Unbounded {
        pg::Conn& conn;
        std::chrono::milliseconds was;
        ~Unbounded() { conn.set_answer_bound(was); }
    } unbounded{d.conn, d.conn.set_answer_bound(std::chrono::milliseconds{0})};
    auto run = [&]() -> Result<FleetHead> {
        // The head is read first: in REPEATABLE READ every statement sees the
        // snapshot taken by the first one, so the records below are exactly
        // the state after head.last_seq.
        auto head = read_head(d.conn, instance);
        if (!head) return head;
        CaRecord ca;
        const std::string cas = fmt::format(
            "COPY (SELECT {} FROM devcert.cas WHERE instance = {} ORDER BY sn) TO STDOUT (FORMAT binary)",
            fleet_detail::kCaColumns, d.instance);
        if (auto r = copy_out(d.conn, cas, "copy ca records",
                              [&](const Fields& f) -> Outcome {
                                  if (!ca_from_fields(f, ca))
                                      return pg::statement_error("copy ca records", "unexpected columns");
                                  return sink.ca(ca);
                              });
            !r)
            return r.error();
        DeviceRecord device;
        const std::string devices = fmt::format(
            "COPY (SELECT {} FROM devcert.devices WHERE instance = {} ORDER BY ca_sn, device_sn) TO STDOUT "
            "(FORMAT binary)",
            fleet_detail::kDeviceColumns, d.instance);
        if (auto r = copy_out(d.conn, devices, "copy device records",
                              [&](const Fields& f) -> Outcome {
                                  if (!device_from_fields(f, device))
                                      return pg::statement_error("copy device records", "unexpected columns");
                                  return sink.device(device);
                              });
            !r)
            return r.error();
        return head;
    };
    Result<FleetHead> out = [&]() -> Result<FleetHead> {
        try {
            return run();
        } catch (const std::exception& e) {
            return thrown(e.what());
        }
    }();
    d.rollback();
    return out;
}

Outcome Fleet::listen() {
    if (auto r = impl_->reachable(); !r) return r;
    return impl_->listen_now();
}

Result<bool> Fleet::wait_for_commit(std::chrono::milliseconds timeout) {
    Impl& d = *impl_;
    if (!d.listening) return make_error(Errc::invalid_argument, "wait_for_commit needs listen() first");
    if (auto r = d.reachable(); !r) return r.error();
    d.heard.reset();
    bool named_none = false;
    auto drain = [&] {
        bool any = false;
        while (PGnotify* n = PQnotifies(d.conn.get())) {
            any = true;
            const std::string_view payload = n->extra ? n->extra : "";
            std::uint64_t seq = 0;
            const auto [end, ec] = std::from_chars(payload.data(), payload.data() + payload.size(), seq);
            if (ec != std::errc{} || end != payload.data() + payload.size() || payload.empty())
                named_none = true;
            else
                d.heard = std::max(d.heard.value_or(0), seq);
            PQfreemem(n);
        }
        if (named_none) d.heard.reset();
        return any;
    };
    if (PQconsumeInput(d.conn.get()) == 0)
        return make_error(Errc::unavailable, fmt::format("fleet database unreachable: waiting for commits failed: {}",
                                                         d.conn.last_message()));
    if (drain()) return true;
    auto ready = d.conn.await_input("wait for commits", std::max(timeout, std::chrono::milliseconds{0}));
    if (!ready) return ready.error();
    return *ready && drain();
}

std::optional<std::uint64_t> Fleet::heard_through() const noexcept { return impl_->heard; }

Result<std::uint64_t> Fleet::trim(std::uint64_t retention) {
    if (retention == 0) return make_error(Errc::invalid_argument, "a change log retention of 0 would keep nothing");
    Impl& d = *impl_;
    if (auto r = d.begin("BEGIN ISOLATION LEVEL READ COMMITTED"); !r) return r.error();
    const std::string instance = std::to_string(d.instance);
    auto run = [&]() -> Result<std::uint64_t> {
        auto head = read_head(d.conn, instance);
        if (!head) return head.error();
        // Not bounded by trimmed_through: entries at or below it may still be
        // there (history moved in by MigrateToFleet) and are trimmed alike.
        if (head->last_seq <= retention) return std::uint64_t{0};
        const std::string cut = std::to_string(head->last_seq - retention);
        // Entries and trimmed_through move together, so a follower reading
        // both in one snapshot never sees a hole it cannot explain.
        auto removed = d.conn.exec("trim the change log",
                                   "DELETE FROM devcert.changes WHERE instance = $1 AND seq <= $2", {instance, cut});
        if (!removed) return removed.error();
        auto moved = d.conn.exec("record the trim",
                                 "UPDATE devcert.instances SET trimmed_through = greatest(trimmed_through, $2) "
                                 "WHERE id = $1",
                                 {instance, cut});
        if (!moved) return moved.error();
        return removed->affected();
    };
    auto out = run();
    if (!out) {
        d.rollback();
        return out;
    }
    if (auto r = d.conn.exec("commit", "COMMIT"); !r) return r.error();
    return out;
}

}  // namespace devcert
