#include "write_view.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace devcert::fleet_detail {

namespace {

// The store's limits (src/store/record_format.hpp), so that both
// implementations refuse the same input.
constexpr std::size_t kMaxSerial = 128;
constexpr std::size_t kMaxSubjectKeyId = 255;
constexpr std::size_t kMaxMetaKey = 255;
constexpr std::string_view kReservedMetaPrefix = "store.";
// The same marker key as the LMDB store's: a CA whose deletion began.
constexpr std::string_view kDeletingCaPrefix = "store.deleting_ca.";

std::string deleting_key(std::string_view sn) {
    std::string key(kDeletingCaPrefix);
    key.append(sn);
    return key;
}
constexpr std::string_view kSchemaVersionKey = "schema_version";
/// Rows per INSERT of change entries (10 parameters each; libpq allows 65535).
constexpr std::size_t kChangeRowsPerInsert = 1000;

bool valid_key_serial(std::string_view sn) noexcept {
    return !sn.empty() && sn.size() <= kMaxSerial && sn.find('\0') == std::string_view::npos;
}
bool status_allowed(CertStatus s) noexcept { return static_cast<std::uint8_t>(s) <= 2; }

Error bad_serial(std::string_view what, std::string_view sn) {
    return make_error(Errc::invalid_argument,
                      fmt::format("{} '{}' is not a usable key (1 to {} characters, no NUL)", what,
                                  sn.substr(0, kMaxSerial), kMaxSerial));
}

std::string num(std::int64_t v) { return std::to_string(v); }
std::string num(std::uint64_t v) { return std::to_string(v); }
std::string status_param(CertStatus s) { return std::to_string(static_cast<int>(s)); }

std::string hex(std::string_view raw) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(raw.size() * 2);
    for (unsigned char c : raw) {
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
    }
    return out;
}

bool unhex(std::string_view text, std::string& out) {
    if (text.size() % 2 != 0) return false;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    out.clear();
    for (std::size_t i = 0; i < text.size(); i += 2) {
        const int hi = nibble(text[i]);
        const int lo = nibble(text[i + 1]);
        if (hi < 0 || lo < 0) return false;
        out.push_back(static_cast<char>((hi << 4) | lo));
    }
    return true;
}

std::string_view fingerprint_view(const Sha256& f) {
    return {reinterpret_cast<const char*>(f.data()), f.size()};
}

void set_fingerprint(std::string_view raw, Sha256& out) {
    out = {};
    std::copy_n(raw.begin(), std::min(raw.size(), out.size()), out.begin());
}

std::optional<CertStatus> status_from(const pg::Rows& rows, int row, int col) {
    if (rows.null(row, col)) return std::nullopt;
    return static_cast<CertStatus>(rows.i64(row, col));
}

// Continuation tokens (Page::after) are the LMDB store's for now: the fleet
// view pages by number only, and says so rather than ignore a token.
Error token_error() {
    return make_error(Errc::invalid_argument, "NextToken is not supported on the fleet store yet; use PageNo");
}

Error page_error(Page page) {
    return make_error(Errc::invalid_argument, fmt::format("page {} of size {} does not exist (both start at 1)",
                                                          page.page_no, page.page_size));
}

/// The LIMIT and OFFSET of a page, or nothing when it starts past `total`.
std::optional<std::pair<std::string, std::string>> page_window(Page page, std::uint64_t total) {
    const std::uint64_t skip = static_cast<std::uint64_t>(page.page_no - 1) * page.page_size;
    if (skip >= total) return std::nullopt;
    return std::make_pair(std::to_string(page.page_size), std::to_string(skip));
}

}  // namespace

const char* const kCaColumns =
    "sn, name, content_pem, verification_pem, registration_code, status, valid_begin_ms, valid_end_ms, "
    "created_ms, updated_ms, status_changed_ms, registered_by, subject_key_id, fingerprint, device_count";
const char* const kDeviceColumns =
    "ca_sn, device_sn, device_name, content_pem, status, valid_begin_ms, valid_end_ms, created_ms, updated_ms, "
    "status_changed_ms, registered_by, fingerprint";
const char* const kChangeColumns = "seq, time_ms, action, ca_sn, device_sn, old_status, new_status, caller, record";

CaRecord ca_from_row(const pg::Rows& r, int i, int c) {
    CaRecord rec;
    rec.sn = r.text(i, c + 0);
    rec.name = r.text(i, c + 1);
    rec.content_pem = r.text(i, c + 2);
    rec.verification_pem = r.text(i, c + 3);
    rec.registration_code = r.text(i, c + 4);
    rec.status = static_cast<CertStatus>(r.i64(i, c + 5));
    rec.valid_begin_ms = r.i64(i, c + 6);
    rec.valid_end_ms = r.i64(i, c + 7);
    rec.created_ms = r.i64(i, c + 8);
    rec.updated_ms = r.i64(i, c + 9);
    rec.status_changed_ms = r.i64(i, c + 10);
    rec.registered_by = static_cast<RegisteredBy>(r.i64(i, c + 11));
    rec.subject_key_id = r.bytes(i, c + 12);
    set_fingerprint(r.bytes(i, c + 13), rec.fingerprint);
    rec.device_count = r.u64(i, c + 14);
    return rec;
}

DeviceRecord device_from_row(const pg::Rows& r, int i, int c) {
    DeviceRecord rec;
    rec.ca_sn = r.text(i, c + 0);
    rec.device_sn = r.text(i, c + 1);
    rec.device_name = r.text(i, c + 2);
    rec.content_pem = r.text(i, c + 3);
    rec.status = static_cast<CertStatus>(r.i64(i, c + 4));
    rec.valid_begin_ms = r.i64(i, c + 5);
    rec.valid_end_ms = r.i64(i, c + 6);
    rec.created_ms = r.i64(i, c + 7);
    rec.updated_ms = r.i64(i, c + 8);
    rec.status_changed_ms = r.i64(i, c + 9);
    rec.registered_by = static_cast<RegisteredBy>(r.i64(i, c + 10));
    set_fingerprint(r.bytes(i, c + 11), rec.fingerprint);
    return rec;
}

std::string encode_ca_record(const CaRecord& rec) {
    nlohmann::json j = {
        {"name", rec.name},
        {"content_pem", rec.content_pem},
        {"verification_pem", rec.verification_pem},
        {"registration_code", rec.registration_code},
        {"status", static_cast<int>(rec.status)},
        {"valid_begin_ms", rec.valid_begin_ms},
        {"valid_end_ms", rec.valid_end_ms},
        {"created_ms", rec.created_ms},
        {"updated_ms", rec.updated_ms},
        {"status_changed_ms", rec.status_changed_ms},
        {"registered_by", static_cast<int>(rec.registered_by)},
        {"subject_key_id", hex(rec.subject_key_id)},
        {"fingerprint", hex(fingerprint_view(rec.fingerprint))},
        {"device_count", rec.device_count},
    };
    return j.dump();
}

std::string encode_device_record(const DeviceRecord& rec) {
    nlohmann::json j = {
        {"device_name", rec.device_name},
        {"content_pem", rec.content_pem},
        {"status", static_cast<int>(rec.status)},
        {"valid_begin_ms", rec.valid_begin_ms},
        {"valid_end_ms", rec.valid_end_ms},
        {"created_ms", rec.created_ms},
        {"updated_ms", rec.updated_ms},
        {"status_changed_ms", rec.status_changed_ms},
        {"registered_by", static_cast<int>(rec.registered_by)},
        {"fingerprint", hex(fingerprint_view(rec.fingerprint))},
    };
    return j.dump();
}

namespace {

template <class Fill>
bool decode_json(std::string_view text, Fill&& fill) {
    const auto j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return false;
    try {
        return fill(j);
    } catch (const nlohmann::json::exception&) {
        return false;
    }
}

}  // namespace

bool decode_ca_record(std::string_view json, std::string_view sn, CaRecord& out) {
    return decode_json(json, [&](const nlohmann::json& j) {
        out.sn = sn;
        out.name = j.at("name").get<std::string>();
        out.content_pem = j.at("content_pem").get<std::string>();
        out.verification_pem = j.at("verification_pem").get<std::string>();
        out.registration_code = j.at("registration_code").get<std::string>();
        out.status = static_cast<CertStatus>(j.at("status").get<int>());
        out.valid_begin_ms = j.at("valid_begin_ms").get<std::int64_t>();
        out.valid_end_ms = j.at("valid_end_ms").get<std::int64_t>();
        out.created_ms = j.at("created_ms").get<std::int64_t>();
        out.updated_ms = j.at("updated_ms").get<std::int64_t>();
        out.status_changed_ms = j.at("status_changed_ms").get<std::int64_t>();
        out.registered_by = static_cast<RegisteredBy>(j.at("registered_by").get<int>());
        out.device_count = j.at("device_count").get<std::uint64_t>();
        std::string fp;
        if (!unhex(j.at("subject_key_id").get<std::string>(), out.subject_key_id)) return false;
        if (!unhex(j.at("fingerprint").get<std::string>(), fp) || fp.size() != out.fingerprint.size()) return false;
        set_fingerprint(fp, out.fingerprint);
        return status_allowed(out.status);
    });
}

bool decode_device_record(std::string_view json, std::string_view ca_sn, std::string_view device_sn,
                          DeviceRecord& out) {
    return decode_json(json, [&](const nlohmann::json& j) {
        out.ca_sn = ca_sn;
        out.device_sn = device_sn;
        out.device_name = j.at("device_name").get<std::string>();
        out.content_pem = j.at("content_pem").get<std::string>();
        out.status = static_cast<CertStatus>(j.at("status").get<int>());
        out.valid_begin_ms = j.at("valid_begin_ms").get<std::int64_t>();
        out.valid_end_ms = j.at("valid_end_ms").get<std::int64_t>();
        out.created_ms = j.at("created_ms").get<std::int64_t>();
        out.updated_ms = j.at("updated_ms").get<std::int64_t>();
        out.status_changed_ms = j.at("status_changed_ms").get<std::int64_t>();
        out.registered_by = static_cast<RegisteredBy>(j.at("registered_by").get<int>());
        std::string fp;
        if (!unhex(j.at("fingerprint").get<std::string>(), fp) || fp.size() != out.fingerprint.size()) return false;
        set_fingerprint(fp, out.fingerprint);
        return status_allowed(out.status);
    });
}

bool change_from_row(const pg::Rows& r, int i, int c, FleetChange& out, bool record_required) {
    ChangeEntry& e = out.entry;
    e.seq = r.u64(i, c + 0);
    e.time_ms = r.i64(i, c + 1);
    e.action = r.text(i, c + 2);
    e.ca_sn = r.text(i, c + 3);
    e.device_sn = r.text(i, c + 4);
    e.old_status = status_from(r, i, c + 5);
    e.new_status = status_from(r, i, c + 6);
    e.caller = r.text(i, c + 7);
    out.ca.reset();
    out.device.reset();
    if (r.null(i, c + 8)) return !record_required || !e.new_status.has_value();
    if (e.device_sn.empty()) {
        CaRecord ca;
        if (!decode_ca_record(r.text(i, c + 8), e.ca_sn, ca)) return false;
        out.ca = std::move(ca);
    } else {
        DeviceRecord d;
        if (!decode_device_record(r.text(i, c + 8), e.ca_sn, e.device_sn, d)) return false;
        out.device = std::move(d);
    }
    return true;
}

// ---------------------------------------------------------------------------

Result<pg::Rows> FleetWriteView::exec(std::string_view what, const char* sql, const std::vector<pg::Param>& params) {
    locked_device_.reset();
    pg::Failure failure = pg::Failure::none;
    auto rows = conn_.exec(what, sql, params, &failure);
    if (failure != pg::Failure::connection) state_.answered = true;
    if (!rows) state_.note(failure, rows.error(), conn_.deferred_failed());
    return rows;
}

void FleetWriteView::log(std::string_view action, std::string_view ca_sn, std::string_view device_sn,
                         std::optional<CertStatus> old_status, std::optional<CertStatus> new_status,
                         std::string_view caller, std::int64_t time_ms, std::optional<CaRecord> ca,
                         std::optional<DeviceRecord> device) {
    FleetChange change;
    change.entry.time_ms = time_ms;
    change.entry.action.assign(action);
    change.entry.ca_sn.assign(ca_sn);
    change.entry.device_sn.assign(device_sn);
    change.entry.old_status = old_status;
    change.entry.new_status = new_status;
    change.entry.caller.assign(caller);
    change.ca = std::move(ca);
    change.device = std::move(device);
    pending_.push_back(std::move(change));
}

void FleetWriteView::rollback_to(const Mark& m) {
    if (numbered_.size() > m.numbered) {
        // A flush after the mark numbered every entry pending then; the
        // savepoint's rollback undid it, so they are pending again.
        std::vector<FleetChange> again;
        for (std::size_t i = m.numbered; i < numbered_.size() && again.size() < m.pending; ++i) {
            again.push_back(std::move(numbered_[i]));
            again.back().entry.seq = 0;
        }
        numbered_.resize(m.numbered);
        pending_ = std::move(again);
    } else {
        pending_.resize(m.pending);
    }
    ca_delta_ = m.ca_delta;
    device_delta_ = m.device_delta;
    ca_device_delta_ = m.ca_devices;
    locked_device_.reset();
}

void FleetWriteView::adjust(CaRecord& rec) const {
    if (const auto it = ca_device_delta_.find(rec.sn); it != ca_device_delta_.end()) {
        const std::int64_t n = static_cast<std::int64_t>(rec.device_count) + it->second;
        rec.device_count = n > 0 ? static_cast<std::uint64_t>(n) : 0;
    }
}

void FleetWriteView::flush() {
    if (state_.optimistic) {
        // The head row may be held by a pessimistic write that waits for one
        // of this write's records: a longer wait, still bounded, for the
        // writes committing ahead of this one (see Fleet::Impl::begin_write).
        conn_.defer("bound the wait for the head", fmt::format("SET LOCAL lock_timeout = {}", kOptimisticHeadWaitMs));
    }
    // CA rows in Sn order, sent with the head row's update in one round trip.
    for (const auto& [sn, delta] : ca_device_delta_) {
        if (delta == 0) continue;
        conn_.defer("write ca record",
                    "UPDATE devcert.cas SET device_count = greatest(device_count + $3, 0) "
                    "WHERE instance = $1 AND sn = $2",
                    {instance_, sn, num(delta)});
    }
    ca_device_delta_.clear();
    if (pending_.empty()) return;
    const std::uint64_t n = pending_.size();
    // The head row's lock, taken here, is held until commit: no other
    // transaction of the instance can take a seq until this one is visible.
    // Sent with the change log's rows and, usually, the commit: the lock is
    // held for one round trip. The entries learn their seqs when its answer
    // comes; the rows take theirs from the head row, in the transaction.
    const std::size_t first = numbered_.size();
    conn_.defer("take change sequence numbers",
                "UPDATE devcert.instances SET last_seq = last_seq + $2, ca_count = ca_count + $3, "
                "device_count = device_count + $4 WHERE id = $1 RETURNING last_seq",
                {instance_, num(n), num(ca_delta_), num(device_delta_)}, [this, first, n](pg::Rows head) {
                    if (head.size() != 1 || first + n > numbered_.size()) return;
                    std::uint64_t seq = head.u64(0, 0) - n + 1;
                    for (std::size_t i = first; i < first + n; ++i) numbered_[i].entry.seq = seq++;
                });

    for (std::size_t at = 0; at < pending_.size(); at += kChangeRowsPerInsert) {
        const std::size_t end = std::min(pending_.size(), at + kChangeRowsPerInsert);
        std::string sql =
            "INSERT INTO devcert.changes (instance, seq, time_ms, action, ca_sn, device_sn, old_status, "
            "new_status, caller, record) VALUES ";
        std::vector<std::optional<std::string>> params;
        params.reserve(1 + (end - at) * 9);
        params.emplace_back(instance_);
        for (std::size_t i = at; i < end; ++i) {
            const ChangeEntry& e = pending_[i].entry;
            const std::size_t p = params.size() + 1;
            // Entry i's seq is the head's, less the entries after it in this flush.
            sql += fmt::format(
                "{}($1, (SELECT last_seq FROM devcert.instances WHERE id = $1) - ${}, ${}, ${}, ${}, ${}, ${}, ${}, "
                "${}, ${}::jsonb)",
                i == at ? "" : ", ", p, p + 1, p + 2, p + 3, p + 4, p + 5, p + 6, p + 7, p + 8);
            params.emplace_back(num(n - 1 - i));
            params.emplace_back(num(e.time_ms));
            params.emplace_back(e.action);
            params.emplace_back(e.ca_sn);
            params.emplace_back(e.device_sn);
            params.emplace_back(e.old_status ? std::optional<std::string>(status_param(*e.old_status)) : std::nullopt);
            params.emplace_back(e.new_status ? std::optional<std::string>(status_param(*e.new_status)) : std::nullopt);
            params.emplace_back(e.caller);
            if (pending_[i].ca)
                params.emplace_back(encode_ca_record(*pending_[i].ca));
            else if (pending_[i].device)
                params.emplace_back(encode_device_record(*pending_[i].device));
            else
                params.emplace_back(std::nullopt);
        }
        // Sent with the next statement (the commit, or whatever the body runs
        // next), whose failure it then is.
        conn_.defer("append to the change log", std::move(sql), std::move(params));
    }
    for (auto& change : pending_) numbered_.push_back(std::move(change));
    pending_.clear();
    ca_delta_ = 0;
    device_delta_ = 0;
}

Result<std::pair<std::uint64_t, std::uint64_t>> FleetWriteView::stored_counts() {
    auto rows = exec("read counts", "SELECT ca_count, device_count FROM devcert.instances WHERE id = $1", {instance_});
    if (!rows) return rows.error();
    if (rows->size() != 1) return make_error(Errc::store_error, "fleet database: the instance's head row is missing");
    return std::make_pair(rows->u64(0, 0), rows->u64(0, 1));
}

namespace {
std::uint64_t plus(std::uint64_t stored, std::int64_t delta) {
    if (delta < 0) return stored >= static_cast<std::uint64_t>(-delta) ? stored - static_cast<std::uint64_t>(-delta) : 0;
    return stored + static_cast<std::uint64_t>(delta);
}
}  // namespace

Result<std::uint64_t> FleetWriteView::ca_count() {
    auto c = stored_counts();
    if (!c) return c.error();
    return plus(c->first, ca_delta_);
}

Result<std::uint64_t> FleetWriteView::device_count() {
    auto c = stored_counts();
    if (!c) return c.error();
    return plus(c->second, device_delta_);
}

Result<std::optional<CaRecord>> FleetWriteView::load_ca(std::string_view sn, bool lock) {
    if (!valid_key_serial(sn)) return std::optional<CaRecord>{};
    static const std::string plain =
        fmt::format("SELECT {} FROM devcert.cas WHERE instance = $1 AND sn = $2", kCaColumns);
    static const std::string locked = plain + " FOR UPDATE";
    auto rows = exec("read ca record", (lock ? locked : plain).c_str(), {instance_, sn});
    if (!rows) return rows.error();
    if (rows->size() == 0) return std::optional<CaRecord>{};
    CaRecord rec = ca_from_row(*rows, 0);
    adjust(rec);
    return std::optional<CaRecord>(std::move(rec));
}

Result<std::optional<DeviceRecord>> FleetWriteView::load_device(std::string_view ca_sn, std::string_view device_sn,
                                                                bool lock) {
    if (!valid_key_serial(ca_sn) || !valid_key_serial(device_sn)) return std::optional<DeviceRecord>{};
    if (lock && locked_device_ && locked_device_->ca_sn == ca_sn && locked_device_->device_sn == device_sn)
        return locked_device_;
    static const std::string plain = fmt::format(
        "SELECT {} FROM devcert.devices WHERE instance = $1 AND ca_sn = $2 AND device_sn = $3", kDeviceColumns);
    static const std::string locked = plain + " FOR UPDATE";
    auto rows = exec("read device record", (lock ? locked : plain).c_str(), {instance_, ca_sn, device_sn});
    if (!rows) return rows.error();
    if (rows->size() == 0) return std::optional<DeviceRecord>{};
    std::optional<DeviceRecord> found(device_from_row(*rows, 0));
    if (lock) locked_device_ = found;
    return found;
}

Result<std::optional<CaRecord>> FleetWriteView::get_ca(std::string_view sn) { return load_ca(sn, false); }

Result<std::optional<DeviceRecord>> FleetWriteView::get_device(std::string_view ca_sn, std::string_view device_sn) {
    return load_device(ca_sn, device_sn, writing_);
}

Result<PageResult<CaRecord>> FleetWriteView::list_cas(Page page) {
    if (!page.after.empty()) return token_error();
    if (page.page_no < 1 || page.page_size < 1) return page_error(page);
    auto total = ca_count();
    if (!total) return total.error();
    PageResult<CaRecord> result;
    result.total = *total;
    const auto window = page_window(page, result.total);
    if (!window) return result;
    static const std::string sql = fmt::format(
        "SELECT {} FROM devcert.cas WHERE instance = $1 ORDER BY sn LIMIT $2 OFFSET $3", kCaColumns);
    auto rows = exec("list ca records", sql.c_str(), {instance_, window->first, window->second});
    if (!rows) return rows.error();
    for (int i = 0; i < rows->size(); ++i) {
        result.items.push_back(ca_from_row(*rows, i));
        adjust(result.items.back());
    }
    return result;
}

Result<PageResult<DeviceRecord>> FleetWriteView::list_devices(Page page) {
    if (!page.after.empty()) return token_error();
    if (page.page_no < 1 || page.page_size < 1) return page_error(page);
    auto total = device_count();
    if (!total) return total.error();
    PageResult<DeviceRecord> result;
    result.total = *total;
    const auto window = page_window(page, result.total);
    if (!window) return result;
    static const std::string sql =
        fmt::format("SELECT {} FROM devcert.devices WHERE instance = $1 ORDER BY ca_sn, device_sn LIMIT $2 OFFSET $3",
                    kDeviceColumns);
    auto rows = exec("list device records", sql.c_str(), {instance_, window->first, window->second});
    if (!rows) return rows.error();
    for (int i = 0; i < rows->size(); ++i) result.items.push_back(device_from_row(*rows, i));
    return result;
}

Result<PageResult<DeviceRecord>> FleetWriteView::list_devices_by_ca(std::string_view ca_sn, Page page) {
    auto ca = load_ca(ca_sn, false);
    if (!ca) return ca.error();
    if (!*ca) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", ca_sn));
    if (!page.after.empty()) return token_error();
    if (page.page_no < 1 || page.page_size < 1) return page_error(page);
    PageResult<DeviceRecord> result;
    result.total = (*ca)->device_count;
    const auto window = page_window(page, result.total);
    if (!window) return result;
    static const std::string sql = fmt::format(
        "SELECT {} FROM devcert.devices WHERE instance = $1 AND ca_sn = $2 ORDER BY device_sn LIMIT $3 OFFSET $4",
        kDeviceColumns);
    auto rows = exec("list device records", sql.c_str(), {instance_, ca_sn, window->first, window->second});
    if (!rows) return rows.error();
    for (int i = 0; i < rows->size(); ++i) result.items.push_back(device_from_row(*rows, i));
    return result;
}

Result<bool> FleetWriteView::ca_being_deleted(std::string_view sn) {
    if (!valid_key_serial(sn)) return false;
    auto rows = exec("read metadata", "SELECT 1 FROM devcert.meta WHERE instance = $1 AND key = $2",
                     {instance_, deleting_key(sn)});
    if (!rows) return rows.error();
    return rows->size() != 0;
}

Outcome FleetWriteView::refuse_if_being_deleted(std::string_view sn) {
    auto deleting = ca_being_deleted(sn);
    if (!deleting) return deleting.error();
    if (*deleting)
        return make_error(Errc::not_found,
                          fmt::format("ca '{}' is being deleted (DeleteCaCertificate again finishes it)", sn));
    return Ok{};
}

Outcome FleetWriteView::clear_deletion_mark(std::string_view sn) {
    auto rows = exec("clear ca deletion marker", "DELETE FROM devcert.meta WHERE instance = $1 AND key = $2",
                     {instance_, deleting_key(sn)});
    if (!rows) return rows.error();
    return Ok{};
}

Result<std::optional<std::string>> FleetWriteView::ca_by_subject_key_id(std::string_view ski) {
    if (ski.empty() || ski.size() > kMaxSubjectKeyId) return std::optional<std::string>{};
    auto rows = exec("read subject key index",
                     "SELECT sn FROM devcert.cas WHERE instance = $1 AND subject_key_id = $2 "
                     "AND subject_key_id <> ''::bytea ORDER BY sn LIMIT 1",
                     {instance_, pg::bytea_param(ski)});
    if (!rows) return rows.error();
    if (rows->size() == 0) return std::optional<std::string>{};
    return std::optional<std::string>(std::string(rows->text(0, 0)));
}

Result<std::vector<ChangeEntry>> FleetWriteView::changes_after(std::uint64_t since, std::size_t limit) {
    std::vector<ChangeEntry> out;
    if (limit == 0 || since >= static_cast<std::uint64_t>(INT64_MAX)) return out;
    // This transaction's own entries are part of the log it reads.
    flush();
    const std::uint64_t capped = std::min<std::uint64_t>(limit, static_cast<std::uint64_t>(INT64_MAX));
    static const std::string sql = fmt::format(
        "SELECT {} FROM devcert.changes WHERE instance = $1 AND seq > $2 ORDER BY seq LIMIT $3", kChangeColumns);
    auto rows = exec("read change log", sql.c_str(), {instance_, num(since), num(capped)});
    if (!rows) return rows.error();
    out.reserve(static_cast<std::size_t>(rows->size()));
    for (int i = 0; i < rows->size(); ++i) {
        FleetChange change;
        // Only the entry is used here: a migrated one without its record is fine.
        if (!change_from_row(*rows, i, 0, change, false))
            return make_error(Errc::store_error,
                              fmt::format("change log record '{}' is unreadable", rows->text(i, 0)));
        out.push_back(std::move(change.entry));
    }
    return out;
}

Result<std::optional<std::string>> FleetWriteView::meta(std::string_view key) {
    if (key.empty() || key.size() > kMaxMetaKey) return std::optional<std::string>{};
    if (key == kSchemaVersionKey) {
        auto rows = exec("read schema version", "SELECT version FROM devcert.schema_version", {});
        if (!rows) return rows.error();
        if (rows->size() == 0) return std::optional<std::string>{};
        return std::optional<std::string>(std::string(rows->text(0, 0)));
    }
    auto rows = exec("read metadata", "SELECT value FROM devcert.meta WHERE instance = $1 AND key = $2",
                     {instance_, key});
    if (!rows) return rows.error();
    if (rows->size() == 0) return std::optional<std::string>{};
    return std::optional<std::string>(std::string(rows->text(0, 0)));
}

Outcome FleetWriteView::insert_ca(const CaRecord& rec, std::string_view action, std::string_view caller) {
    if (!valid_key_serial(rec.sn)) return bad_serial("ca serial", rec.sn);
    if (!status_allowed(rec.status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    if (rec.subject_key_id.size() > kMaxSubjectKeyId)
        return make_error(Errc::invalid_argument,
                          fmt::format("ca '{}' has a subject key identifier longer than {} bytes", rec.sn,
                                      kMaxSubjectKeyId));
    // A concurrent insert of the same Sn waits on the primary key until the
    // other transaction ends, then finds it taken.
    static const std::string sql = fmt::format(
        "INSERT INTO devcert.cas (instance, {}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, "
        "$14, $15, 0) ON CONFLICT DO NOTHING",
        kCaColumns);
    auto rows = exec("write ca record", sql.c_str(),
                     {instance_, rec.sn, rec.name, rec.content_pem, rec.verification_pem, rec.registration_code,
                      status_param(rec.status), num(rec.valid_begin_ms), num(rec.valid_end_ms), num(rec.created_ms),
                      num(rec.updated_ms), num(rec.status_changed_ms),
                      std::to_string(static_cast<int>(rec.registered_by)), pg::bytea_param(rec.subject_key_id),
                      pg::bytea_param(fingerprint_view(rec.fingerprint))});
    if (!rows) return rows.error();
    if (rows->affected() == 0)
        return make_error(Errc::already_exists, fmt::format("ca '{}' is already registered", rec.sn));
    CaRecord stored = rec;
    stored.device_count = 0;
    ca_device_delta_.erase(rec.sn);
    ++ca_delta_;
    log(action, rec.sn, {}, std::nullopt, rec.status, caller, rec.updated_ms != 0 ? rec.updated_ms : now_ms(),
        std::move(stored), std::nullopt);
    return Ok{};
}

Result<CertStatus> FleetWriteView::set_ca_status(std::string_view sn, CertStatus status, std::string_view action,
                                                 std::string_view caller) {
    if (!status_allowed(status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    auto found = load_ca(sn, true);
    if (!found) return found.error();
    if (!*found) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    CaRecord& ca = **found;
    const CertStatus old = ca.status;
    if (old == status) return old;
    if (old == CertStatus::revoked)
        return make_error(Errc::revoked, fmt::format("ca '{}' is revoked; revocation is final", sn));
    if (status == CertStatus::active) {
        if (auto r = refuse_if_being_deleted(sn); !r) return r.error();
    }
    const std::int64_t now = now_ms();
    auto rows = exec("write ca record",
                     "UPDATE devcert.cas SET status = $3, updated_ms = $4, status_changed_ms = $4 "
                     "WHERE instance = $1 AND sn = $2",
                     {instance_, sn, status_param(status), num(now)});
    if (!rows) return rows.error();
    ca.status = status;
    ca.updated_ms = ca.status_changed_ms = now;
    log(action, sn, {}, old, status, caller, now, std::move(ca), std::nullopt);
    return old;
}

Result<std::uint64_t> FleetWriteView::delete_ca(std::string_view sn, std::string_view action,
                                                std::string_view caller) {
    // The CA row's lock keeps devices from being added under it meanwhile
    // (insert_device locks it first).
    auto found = load_ca(sn, true);
    if (!found) return found.error();
    if (!*found) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    const CaRecord& ca = **found;
    const std::int64_t now = now_ms();
    auto removed = exec("delete device records",
                        "DELETE FROM devcert.devices WHERE instance = $1 AND ca_sn = $2 RETURNING device_sn, status",
                        {instance_, sn});
    if (!removed) return removed.error();
    std::vector<std::pair<std::string, CertStatus>> devices;
    devices.reserve(static_cast<std::size_t>(removed->size()));
    for (int i = 0; i < removed->size(); ++i)
        devices.emplace_back(std::string(removed->text(i, 0)), static_cast<CertStatus>(removed->i64(i, 1)));
    // Logged in key order, like the store (byte order: the columns' "C" collation).
    std::sort(devices.begin(), devices.end());
    auto gone = exec("delete ca record", "DELETE FROM devcert.cas WHERE instance = $1 AND sn = $2", {instance_, sn});
    if (!gone) return gone.error();
    for (const auto& [device_sn, old] : devices)
        log(action, sn, device_sn, old, std::nullopt, caller, now, std::nullopt, std::nullopt);
    if (const auto it = ca_device_delta_.find(sn); it != ca_device_delta_.end()) ca_device_delta_.erase(it);
    if (auto r = clear_deletion_mark(sn); !r) return r.error();
    --ca_delta_;
    device_delta_ -= static_cast<std::int64_t>(devices.size());
    log(action, sn, {}, ca.status, std::nullopt, caller, now, std::nullopt, std::nullopt);
    return static_cast<std::uint64_t>(devices.size());
}

Outcome FleetWriteView::begin_ca_deletion(std::string_view sn, std::string_view action, std::string_view caller) {
    auto found = load_ca(sn, true);
    if (!found) return found.error();
    if (!*found) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    if ((*found)->status == CertStatus::active) {
        // Its devices are refused from this very commit on, however long the
        // removal of their records takes.
        const std::int64_t now = now_ms();
        auto rows = exec("write ca record",
                         "UPDATE devcert.cas SET status = $3, updated_ms = $4, status_changed_ms = $4 "
                         "WHERE instance = $1 AND sn = $2",
                         {instance_, sn, status_param(CertStatus::inactive), num(now)});
        if (!rows) return rows.error();
        CaRecord ca = std::move(**found);
        ca.status = CertStatus::inactive;
        ca.updated_ms = ca.status_changed_ms = now;
        log(action, sn, {}, CertStatus::active, CertStatus::inactive, caller, now, std::move(ca), std::nullopt);
    }
    auto rows = exec("mark ca as being deleted",
                     "INSERT INTO devcert.meta (instance, key, value) VALUES ($1, $2, '1') "
                     "ON CONFLICT (instance, key) DO NOTHING",
                     {instance_, deleting_key(sn)});
    if (!rows) return rows.error();
    return Ok{};
}

Result<std::uint64_t> FleetWriteView::delete_ca_devices(std::string_view sn, std::uint64_t limit,
                                                        std::string_view action, std::string_view caller) {
    // The CA row's lock keeps devices from being added under it meanwhile.
    auto found = load_ca(sn, true);
    if (!found) return found.error();
    if (!*found) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    if (limit == 0) return std::uint64_t{0};
    const std::uint64_t capped = std::min<std::uint64_t>(limit, static_cast<std::uint64_t>(INT64_MAX));
    auto removed = exec("delete device records",
                        "DELETE FROM devcert.devices WHERE instance = $1 AND ca_sn = $2 AND device_sn IN "
                        "(SELECT device_sn FROM devcert.devices WHERE instance = $1 AND ca_sn = $2 "
                        "ORDER BY device_sn LIMIT $3) RETURNING device_sn, status",
                        {instance_, sn, num(capped)});
    if (!removed) return removed.error();
    std::vector<std::pair<std::string, CertStatus>> devices;
    devices.reserve(static_cast<std::size_t>(removed->size()));
    for (int i = 0; i < removed->size(); ++i)
        devices.emplace_back(std::string(removed->text(i, 0)), static_cast<CertStatus>(removed->i64(i, 1)));
    std::sort(devices.begin(), devices.end());
    const std::int64_t now = now_ms();
    for (const auto& [device_sn, old] : devices)
        log(action, sn, device_sn, old, std::nullopt, caller, now, std::nullopt, std::nullopt);
    const auto n = static_cast<std::int64_t>(devices.size());
    device_delta_ -= n;
    ca_device_delta_[std::string(sn)] -= n;
    return static_cast<std::uint64_t>(devices.size());
}

Outcome FleetWriteView::insert_device(const DeviceRecord& rec, std::string_view action, std::string_view caller) {
    if (!valid_key_serial(rec.ca_sn)) return bad_serial("ca serial", rec.ca_sn);
    if (!valid_key_serial(rec.device_sn)) return bad_serial("device serial", rec.device_sn);
    if (!status_allowed(rec.status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    // Locks the CA row: a concurrent delete_ca of it either ran first (the
    // CA is gone) or waits for this transaction.
    auto ca = exec("read ca record", "SELECT 1 FROM devcert.cas WHERE instance = $1 AND sn = $2 FOR UPDATE",
                   {instance_, rec.ca_sn});
    if (!ca) return ca.error();
    if (ca->size() == 0) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", rec.ca_sn));
    if (auto r = refuse_if_being_deleted(rec.ca_sn); !r) return r;
    static const std::string sql = fmt::format(
        "INSERT INTO devcert.devices (instance, {}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
        "ON CONFLICT DO NOTHING",
        kDeviceColumns);
    auto rows = exec("write device record", sql.c_str(),
                     {instance_, rec.ca_sn, rec.device_sn, rec.device_name, rec.content_pem, status_param(rec.status),
                      num(rec.valid_begin_ms), num(rec.valid_end_ms), num(rec.created_ms), num(rec.updated_ms),
                      num(rec.status_changed_ms), std::to_string(static_cast<int>(rec.registered_by)),
                      pg::bytea_param(fingerprint_view(rec.fingerprint))});
    if (!rows) return rows.error();
    if (rows->affected() == 0)
        return make_error(Errc::already_exists, fmt::format("device '{}' of ca '{}' is already registered",
                                                            rec.device_sn, rec.ca_sn));
    ++device_delta_;
    ++ca_device_delta_[rec.ca_sn];
    log(action, rec.ca_sn, rec.device_sn, std::nullopt, rec.status, caller,
        rec.updated_ms != 0 ? rec.updated_ms : now_ms(), std::nullopt, rec);
    return Ok{};
}

Result<CertStatus> FleetWriteView::set_device_status(std::string_view ca_sn, std::string_view device_sn,
                                                     CertStatus status, std::string_view action,
                                                     std::string_view caller) {
    if (!status_allowed(status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    auto found = load_device(ca_sn, device_sn, true);
    if (!found) return found.error();
    if (!*found)
        return make_error(Errc::not_found, fmt::format("device '{}' of ca '{}' is not registered", device_sn, ca_sn));
    DeviceRecord& d = **found;
    const CertStatus old = d.status;
    if (old == status) return old;
    if (old == CertStatus::revoked)
        return make_error(Errc::revoked, fmt::format("device '{}' of ca '{}' is revoked; revocation is final",
                                                     device_sn, ca_sn));
    const std::int64_t now = now_ms();
    // The row is locked and known: the update cannot miss it. It goes with
    // the transaction's next statement, whose failure a failure of it is.
    locked_device_.reset();
    conn_.defer("write device record",
                "UPDATE devcert.devices SET status = $4, updated_ms = $5, status_changed_ms = $5 "
                "WHERE instance = $1 AND ca_sn = $2 AND device_sn = $3",
                {instance_, std::string(ca_sn), std::string(device_sn), status_param(status), num(now)});
    d.status = status;
    d.updated_ms = d.status_changed_ms = now;
    log(action, ca_sn, device_sn, old, status, caller, now, std::nullopt, std::move(d));
    return old;
}

Outcome FleetWriteView::delete_device(std::string_view ca_sn, std::string_view device_sn, std::string_view action,
                                      std::string_view caller) {
    std::optional<CertStatus> old;
    if (valid_key_serial(ca_sn) && valid_key_serial(device_sn)) {
        auto rows = exec("delete device record",
                         "DELETE FROM devcert.devices WHERE instance = $1 AND ca_sn = $2 AND device_sn = $3 "
                         "RETURNING status",
                         {instance_, ca_sn, device_sn});
        if (!rows) return rows.error();
        if (rows->size() == 1) old = static_cast<CertStatus>(rows->i64(0, 0));
    }
    if (!old)
        return make_error(Errc::not_found, fmt::format("device '{}' of ca '{}' is not registered", device_sn, ca_sn));
    --device_delta_;
    if (auto it = ca_device_delta_.find(ca_sn); it != ca_device_delta_.end())
        --it->second;
    else
        ca_device_delta_.emplace(std::string(ca_sn), -1);
    log(action, ca_sn, device_sn, old, std::nullopt, caller, now_ms(), std::nullopt, std::nullopt);
    return Ok{};
}

Outcome FleetWriteView::set_meta(std::string_view key, std::string_view value) {
    if (key.empty() || key.size() > kMaxMetaKey)
        return make_error(Errc::invalid_argument, fmt::format("metadata key must be 1 to {} bytes long", kMaxMetaKey));
    if (key.starts_with(kReservedMetaPrefix) || key == kSchemaVersionKey)
        return make_error(Errc::invalid_argument, fmt::format("metadata key '{}' is reserved by the store", key));
    auto rows = exec("write metadata",
                     "INSERT INTO devcert.meta (instance, key, value) VALUES ($1, $2, $3) "
                     "ON CONFLICT (instance, key) DO UPDATE SET value = EXCLUDED.value",
                     {instance_, key, value});
    if (!rows) return rows.error();
    return Ok{};
}

}  // namespace devcert::fleet_detail
