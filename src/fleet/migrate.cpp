// MigrateToFleet: a standalone store into an empty fleet instance, in one
// PostgreSQL transaction fed by binary COPY (a million devices is a few
// hundred megabytes of PEM; row-by-row INSERTs would take minutes).
#include <fmt/format.h>

#include <cstring>
#include <set>

#include "devcert/fleet_tools.hpp"
#include "pg.hpp"
#include "schema.hpp"
#include "write_view.hpp"

namespace devcert {

namespace {

/// Records read from the store per list call.
constexpr std::uint32_t kPageSize = 1000;
/// Change log entries read from the store per call.
constexpr std::size_t kChangesPerRead = 10000;
/// Bytes buffered before they are handed to libpq.
constexpr std::size_t kCopyChunk = 1u << 20;
/// The same marker key as the store's and FleetWriteView's.
constexpr std::string_view kDeletingCaPrefix = "store.deleting_ca.";

/// Writes one COPY ... FROM STDIN (FORMAT binary): PostgreSQL's documented
/// format, a signature header, then per tuple an int16 field count and per
/// field an int32 length (-1: NULL) and the value in the type's binary form.
class CopyIn {
public:
    CopyIn(pg::Conn& conn, std::string what) : conn_(conn), what_(std::move(what)) {}
    CopyIn(const CopyIn&) = delete;
    CopyIn& operator=(const CopyIn&) = delete;
    ~CopyIn() {
        if (open_) (void)end("the migration stopped");
    }

    Outcome start(const std::string& sql) {
        pg::ResultPtr res(PQexec(conn_.get(), sql.c_str()));
        if (!res || PQresultStatus(res.get()) != PGRES_COPY_IN) return pg::statement_error(what_, conn_.last_message());
        open_ = true;
        static constexpr char kHeader[] = "PGCOPY\n\377\r\n";
        buf_.append(kHeader, 11);
        u32(0);  // flags
        u32(0);  // header extension length
        return Ok{};
    }

    void tuple(std::int16_t fields) { u16(static_cast<std::uint16_t>(fields)); }
    void i16(std::int64_t v) {
        u32(2);
        u16(static_cast<std::uint16_t>(v));
    }
    void i32(std::int64_t v) {
        u32(4);
        u32(static_cast<std::uint32_t>(v));
    }
    void i64(std::int64_t v) {
        u32(8);
        const auto u = static_cast<std::uint64_t>(v);
        u32(static_cast<std::uint32_t>(u >> 32));
        u32(static_cast<std::uint32_t>(u));
    }
    /// text and bytea alike: the raw bytes.
    void bytes(std::string_view v) {
        u32(static_cast<std::uint32_t>(v.size()));
        buf_.append(v);
    }
    void null() { u32(0xffffffffu); }

    /// Hands what is buffered to libpq once it is large enough.
    Outcome maybe_flush() { return buf_.size() >= kCopyChunk ? flush() : Outcome(Ok{}); }

    /// Sends the trailer and ends the COPY; the server's verdict.
    Outcome finish() {
        u16(0xffffu);
        if (auto r = flush(); !r) {
            (void)end("the migration stopped");
            return r;
        }
        return end(nullptr);
    }

private:
    void u16(std::uint16_t v) {
        buf_.push_back(static_cast<char>(v >> 8));
        buf_.push_back(static_cast<char>(v));
    }
    void u32(std::uint32_t v) {
        for (int shift = 24; shift >= 0; shift -= 8) buf_.push_back(static_cast<char>(v >> shift));
    }
    Outcome flush() {
        if (!buf_.empty() &&
            PQputCopyData(conn_.get(), buf_.data(), static_cast<int>(buf_.size())) != 1)
            return pg::statement_error(what_, conn_.last_message());
        buf_.clear();
        return Ok{};
    }
    /// Ends the COPY (with an error message: aborts it) and reads its results.
    Outcome end(const char* abort_reason) {
        open_ = false;
        buf_.clear();
        if (PQputCopyEnd(conn_.get(), abort_reason) != 1) return pg::statement_error(what_, conn_.last_message());
        std::optional<Error> failed;
        for (pg::ResultPtr r(PQgetResult(conn_.get())); r; r.reset(PQgetResult(conn_.get()))) {
            if (PQresultStatus(r.get()) != PGRES_COMMAND_OK && !failed) {
                const char* primary = PQresultErrorField(r.get(), PG_DIAG_MESSAGE_PRIMARY);
                const char* context = PQresultErrorField(r.get(), PG_DIAG_CONTEXT);
                std::string why = conn_.secrets().scrub(primary ? primary : conn_.last_message());
                if (context) why += fmt::format(" ({})", context);
                failed = pg::statement_error(what_, why);
            }
        }
        if (failed) return *failed;
        return Ok{};
    }

    pg::Conn& conn_;
    std::string what_;
    std::string buf_;
    bool open_ = false;
};

std::string_view fingerprint_view(const Sha256& f) { return {reinterpret_cast<const char*>(f.data()), f.size()}; }

/// PostgreSQL text cannot hold a NUL byte; the store's may. Named so that
/// the operator can find the record.
Outcome no_nul(std::string_view value, std::string_view field, std::string_view record) {
    if (value.find('\0') == std::string_view::npos) return Ok{};
    return make_error(Errc::invalid_argument,
                      fmt::format("{} has a NUL byte in its {}, which PostgreSQL text cannot store; fix or remove "
                                  "the record and migrate again",
                                  record, field));
}

struct TextField {
    const std::string* value;
    const char* name;
};

template <std::size_t N>
Outcome no_nul(const TextField (&fields)[N], std::string_view record) {
    for (const TextField& f : fields)
        if (auto r = no_nul(*f.value, f.name, record); !r) return r;
    return Ok{};
}

/// The whole copy, inside the caller's PostgreSQL transaction and the
/// store's read transaction.
class Migration {
public:
    Migration(pg::Conn& conn, std::int64_t instance, const FleetOptions& options)
        : conn_(conn), instance_(instance), instance_text_(std::to_string(instance)), options_(options) {}

    Result<MigrationReport> run(ReadView& view) {
        report_ = MigrationReport{};
        ca_sns_.clear();
        deleting_.clear();
        if (auto r = check_instance_id(view); !r) return r.error();
        if (auto r = check_empty(); !r) return r.error();
        if (auto r = copy_cas(view); !r) return r.error();
        if (auto r = copy_devices(view); !r) return r.error();
        if (auto r = copy_changes(view); !r) return r.error();
        if (auto r = copy_meta(view); !r) return r.error();
        if (auto r = set_head(); !r) return r.error();
        return report_;
    }

private:
    Outcome check_instance_id(ReadView& view) {
        auto id = view.meta("instance_id");
        if (!id) return id.error();
        if (*id && **id != options_.instance_id)
            return make_error(Errc::invalid_argument,
                              fmt::format("the store belongs to instance '{}', not '{}' (migrate it with "
                                          "--MqttInstanceId {})",
                                          **id, options_.instance_id, **id));
        return Ok{};
    }

    Outcome check_empty() {
        // The head row's lock (every writer takes it before committing) keeps
        // the instance empty until this transaction ends.
        auto head = conn_.exec("lock the instance",
                               "SELECT last_seq, trimmed_through, ca_count, device_count, "
                               "EXISTS (SELECT 1 FROM devcert.cas WHERE instance = $1), "
                               "EXISTS (SELECT 1 FROM devcert.devices WHERE instance = $1), "
                               "EXISTS (SELECT 1 FROM devcert.changes WHERE instance = $1) "
                               "FROM devcert.instances WHERE id = $1 FOR UPDATE",
                               {instance_text_});
        if (!head) return head.error();
        if (head->size() != 1) return make_error(Errc::store_error, "fleet database: the instance's head row is missing");
        const bool empty = head->u64(0, 0) == 0 && head->u64(0, 1) == 0 && head->u64(0, 2) == 0 &&
                           head->u64(0, 3) == 0 && head->text(0, 4) == "f" && head->text(0, 5) == "f" &&
                           head->text(0, 6) == "f";
        if (!empty)
            return make_error(Errc::already_exists,
                              fmt::format("fleet instance '{}' already holds records or changes (last seq {}); a "
                                          "store can only be moved into an empty instance",
                                          options_.instance_id, head->u64(0, 0)));
        return Ok{};
    }

    Outcome copy_cas(ReadView& view) {
        CopyIn copy(conn_, "copy ca records");
        if (auto r = copy.start(fmt::format("COPY devcert.cas (instance, {}) FROM STDIN (FORMAT binary)",
                                            fleet_detail::kCaColumns));
            !r)
            return r;
        Page page(1, kPageSize);
        for (;;) {
            auto batch = view.list_cas(page);
            if (!batch) return batch.error();
            for (const CaRecord& ca : batch->items) {
                const std::string what = fmt::format("ca '{}'", ca.sn);
                const TextField fields[] = {{&ca.name, "name"},
                                            {&ca.content_pem, "content"},
                                            {&ca.verification_pem, "verification content"},
                                            {&ca.registration_code, "registration code"}};
                if (auto r = no_nul(fields, what); !r) return r;
                copy.tuple(16);
                copy.i32(instance_);
                copy.bytes(ca.sn);
                copy.bytes(ca.name);
                copy.bytes(ca.content_pem);
                copy.bytes(ca.verification_pem);
                copy.bytes(ca.registration_code);
                copy.i16(static_cast<int>(ca.status));
                copy.i64(ca.valid_begin_ms);
                copy.i64(ca.valid_end_ms);
                copy.i64(ca.created_ms);
                copy.i64(ca.updated_ms);
                copy.i64(ca.status_changed_ms);
                copy.i16(static_cast<int>(ca.registered_by));
                copy.bytes(ca.subject_key_id);
                copy.bytes(fingerprint_view(ca.fingerprint));
                copy.i64(0);  // counted from the devices copied, below
                ca_sns_.insert(ca.sn);
                auto deleting = view.ca_being_deleted(ca.sn);
                if (!deleting) return deleting.error();
                if (*deleting) deleting_.push_back(ca.sn);
                if (auto r = copy.maybe_flush(); !r) return r;
            }
            report_.cas += batch->items.size();
            if (batch->next.empty()) break;
            page.after = std::move(batch->next);
        }
        return copy.finish();
    }

    Outcome copy_devices(ReadView& view) {
        CopyIn copy(conn_, "copy device records");
        if (auto r = copy.start(fmt::format("COPY devcert.devices (instance, {}) FROM STDIN (FORMAT binary)",
                                            fleet_detail::kDeviceColumns));
            !r)
            return r;
        Page page(1, kPageSize);
        for (;;) {
            auto batch = view.list_devices(page);
            if (!batch) return batch.error();
            for (const DeviceRecord& d : batch->items) {
                const std::string what = fmt::format("device '{}' of ca '{}'", d.device_sn, d.ca_sn);
                if (!ca_sns_.contains(d.ca_sn))
                    return make_error(Errc::store_error,
                                      fmt::format("{} has no ca record in the store; the store is damaged", what));
                const TextField fields[] = {{&d.device_name, "name"}, {&d.content_pem, "content"}};
                if (auto r = no_nul(fields, what); !r) return r;
                copy.tuple(13);
                copy.i32(instance_);
                copy.bytes(d.ca_sn);
                copy.bytes(d.device_sn);
                copy.bytes(d.device_name);
                copy.bytes(d.content_pem);
                copy.i16(static_cast<int>(d.status));
                copy.i64(d.valid_begin_ms);
                copy.i64(d.valid_end_ms);
                copy.i64(d.created_ms);
                copy.i64(d.updated_ms);
                copy.i64(d.status_changed_ms);
                copy.i16(static_cast<int>(d.registered_by));
                copy.bytes(fingerprint_view(d.fingerprint));
                if (auto r = copy.maybe_flush(); !r) return r;
            }
            report_.devices += batch->items.size();
            if (batch->next.empty()) break;
            page.after = std::move(batch->next);
        }
        if (auto r = copy.finish(); !r) return r;
        // The fleet's per-CA counts are those of the rows it now holds.
        auto counted = conn_.exec("count the devices of each ca",
                                  "UPDATE devcert.cas c SET device_count = d.n FROM (SELECT ca_sn, count(*) AS n "
                                  "FROM devcert.devices WHERE instance = $1 GROUP BY ca_sn) d "
                                  "WHERE c.instance = $1 AND c.sn = d.ca_sn",
                                  {instance_text_});
        if (!counted) return counted.error();
        return Ok{};
    }

    Outcome copy_changes(ReadView& view) {
        CopyIn copy(conn_, "copy the change log");
        // `record` stays NULL: the record as it was after an old change is
        // not known. trimmed_through (set_head) keeps followers from
        // applying these entries.
        if (auto r = copy.start("COPY devcert.changes (instance, seq, time_ms, action, ca_sn, device_sn, old_status, "
                                "new_status, caller) FROM STDIN (FORMAT binary)");
            !r)
            return r;
        std::uint64_t after = 0;
        for (;;) {
            auto batch = view.changes_after(after, kChangesPerRead);
            if (!batch) return batch.error();
            for (const ChangeEntry& e : *batch) {
                const std::string what = fmt::format("change log entry {}", e.seq);
                const TextField fields[] = {
                    {&e.action, "action"}, {&e.ca_sn, "ca serial"}, {&e.device_sn, "device serial"}, {&e.caller, "caller"}};
                if (auto r = no_nul(fields, what); !r) return r;
                if (e.seq > static_cast<std::uint64_t>(INT64_MAX))
                    return make_error(Errc::invalid_argument, fmt::format("{} is out of PostgreSQL's range", what));
                copy.tuple(9);
                copy.i32(instance_);
                copy.i64(static_cast<std::int64_t>(e.seq));
                copy.i64(e.time_ms);
                copy.bytes(e.action);
                copy.bytes(e.ca_sn);
                copy.bytes(e.device_sn);
                for (const auto& status : {e.old_status, e.new_status}) {
                    if (status)
                        copy.i16(static_cast<int>(*status));
                    else
                        copy.null();
                }
                copy.bytes(e.caller);
                if (report_.first_seq == 0) report_.first_seq = e.seq;
                report_.last_seq = e.seq;
                after = e.seq;
                if (auto r = copy.maybe_flush(); !r) return r;
            }
            report_.changes += batch->size();
            if (batch->size() < kChangesPerRead) break;
        }
        return copy.finish();
    }

    Outcome put_meta(std::string_view key, std::string_view value) {
        if (auto r = no_nul(value, "value", fmt::format("metadata '{}'", key)); !r) return r;
        auto rows = conn_.exec("write metadata",
                               "INSERT INTO devcert.meta (instance, key, value) VALUES ($1, $2, $3) "
                               "ON CONFLICT (instance, key) DO UPDATE SET value = EXCLUDED.value",
                               {instance_text_, key, value});
        if (!rows) return rows.error();
        return Ok{};
    }

    Outcome copy_meta(ReadView& view) {
        // The store's page-token key and counters are its own; the registration
        // code and the CA limit belong to the instance. (Consumed registration
        // codes, "register_code.used.*", cannot be listed through a view and
        // stay behind: presenting one again reads as a wrong code.)
        report_.meta_keys.clear();
        if (auto r = put_meta("instance_id", options_.instance_id); !r) return r;
        report_.meta_keys.emplace_back("instance_id");
        for (const char* key : {"max_ca", "register_code"}) {
            auto value = view.meta(key);
            if (!value) return value.error();
            if (!*value) continue;
            if (auto r = put_meta(key, **value); !r) return r;
            report_.meta_keys.emplace_back(key);
        }
        for (const std::string& sn : deleting_) {
            std::string key(kDeletingCaPrefix);
            key += sn;
            if (auto r = put_meta(key, "1"); !r) return r;
        }
        report_.cas_being_deleted = deleting_.size();
        return Ok{};
    }

    Outcome set_head() {
        // The store's sequence numbers are kept (the instance had none), and
        // trimmed_through = last_seq: a follower at any position below it
        // (a broker that connected to the empty instance) resynchronises
        // from a snapshot instead of replaying entries without records.
        const std::string last = std::to_string(report_.last_seq);
        auto rows = conn_.exec("set the instance's head",
                               "UPDATE devcert.instances SET last_seq = $2, trimmed_through = $2, ca_count = $3, "
                               "device_count = $4 WHERE id = $1",
                               {instance_text_, last, std::to_string(report_.cas), std::to_string(report_.devices)});
        if (!rows) return rows.error();
        return Ok{};
    }

    pg::Conn& conn_;
    std::int64_t instance_;
    std::string instance_text_;
    const FleetOptions& options_;
    MigrationReport report_;
    std::set<std::string, std::less<>> ca_sns_;
    std::vector<std::string> deleting_;
};

}  // namespace

Result<MigrationReport> migrate_to_fleet(Store& store, const FleetOptions& options) {
    if (auto ok = fleet_detail::check_instance_id(options.instance_id); !ok) return ok.error();
    auto conninfo = fleet_conninfo(options.conninfo);
    if (!conninfo) return conninfo.error();
    auto conn = pg::Conn::open(*conninfo, options.connect_timeout_s);
    if (!conn) return conn.error();
    auto instance = fleet_detail::check_schema(*conn, options.instance_id);
    if (!instance) return instance.error();

    bool in_transaction = false;
    auto rollback = [&] {
        if (in_transaction) (void)conn->exec("roll back", "ROLLBACK");
        in_transaction = false;
    };
    Migration migration(*conn, instance->id, options);
    std::optional<MigrationReport> report;
    // Store::read may run the body again (another process grew the map):
    // each run starts a fresh PostgreSQL transaction.
    const Outcome copied = store.read([&](ReadView& view) -> Outcome {
        rollback();
        if (auto r = conn->exec("begin", "BEGIN ISOLATION LEVEL READ COMMITTED"); !r) return r.error();
        in_transaction = true;
        auto out = migration.run(view);
        if (!out) return out.error();
        report = std::move(*out);
        return Ok{};
    });
    if (!copied || !report) {
        rollback();
        return copied ? make_error(Errc::store_error, "the store could not be read") : copied.error();
    }
    // Brokers already listening learn the new head (and resynchronise).
    if (auto r = conn->exec("notify the fleet", "SELECT pg_notify($1, $2)",
                            {fleet_channel(options.instance_id), std::to_string(report->last_seq)});
        !r) {
        rollback();
        return r.error();
    }
    in_transaction = false;
    if (auto r = conn->exec("commit the migration", "COMMIT"); !r) {
        if (conn->alive()) return r.error();
        return make_error(Errc::store_error,
                          fmt::format("{} (whether the migration committed is unknown: run it again, it is refused "
                                      "if it did)",
                                      r.error().message));
    }
    return std::move(*report);
}

}  // namespace devcert
