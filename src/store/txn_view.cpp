#include <fmt/format.h>

#include <charconv>
#include <cstring>

#include "page_token.hpp"
#include "record_format.hpp"
#include "store_impl.hpp"

namespace devcert {

namespace fmtx = store_format;

namespace {

std::uint8_t header_byte(const MDB_val& v, std::size_t offset) noexcept {
    return static_cast<const std::uint8_t*>(v.mv_data)[offset];
}

std::string_view seq_key_view(const std::uint8_t (&key)[8]) noexcept {
    return {reinterpret_cast<const char*>(key), 8};
}

}  // namespace

Error TxnView::fail(int rc, std::string_view what) {
    if (rc == MDB_MAP_FULL) state_.map_full = true;
    return impl_.lmdb_error(rc, what);
}

int TxnView::get(MDB_dbi dbi, std::string_view key, MDB_val& value) {
    MDB_val k = to_val(key);
    const int rc = mdb_get(txn_, dbi, &k, &value);
    if (rc == MDB_MAP_FULL) state_.map_full = true;
    return rc;
}

Outcome TxnView::put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags,
                     std::string_view what) {
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    if (const int rc = mdb_put(txn_, dbi, &k, &v, flags); rc != 0) return fail(rc, what);
    return Ok{};
}

Outcome TxnView::del(MDB_dbi dbi, std::string_view key, const std::string_view* value, std::string_view what) {
    MDB_val k = to_val(key);
    MDB_val v{};
    if (value) v = to_val(*value);
    if (const int rc = mdb_del(txn_, dbi, &k, value ? &v : nullptr); rc != 0) return fail(rc, what);
    return Ok{};
}

Result<std::uint64_t> TxnView::counter(const char* key) {
    MDB_val v{};
    const int rc = get(impl_.meta, key, v);
    if (rc == MDB_NOTFOUND) return std::uint64_t{0};
    if (rc != 0) return fail(rc, "read metadata");
    std::uint64_t n = 0;
    const auto text = to_view(v);
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size())
        return make_error(Errc::store_error, fmt::format("metadata '{}' is not a number", key));
    return n;
}

Outcome TxnView::add_to_counter(const char* key, std::int64_t delta) {
    auto current = counter(key);
    if (!current) return current.error();
    // Counts cannot go below zero; clamping keeps a damaged count from wrapping.
    std::uint64_t next = *current;
    if (delta < 0)
        next = next >= static_cast<std::uint64_t>(-delta) ? next - static_cast<std::uint64_t>(-delta) : 0;
    else
        next += static_cast<std::uint64_t>(delta);
    char buf[24];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, next);
    (void)ec;
    return put(impl_.meta, key, std::string_view(buf, static_cast<std::size_t>(end - buf)), 0, "write metadata");
}

Outcome TxnView::add_to_ca_device_count(std::string_view ca_sn, std::int64_t delta) {
    MDB_val v{};
    const int rc = get(impl_.cas, ca_sn, v);
    if (rc == MDB_NOTFOUND) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", ca_sn));
    if (rc != 0) return fail(rc, "read ca record");
    if (!fmtx::has_header(v.mv_data, v.mv_size, fmtx::kCaMagic, fmtx::kCaHeaderSize)) return corrupt("ca", ca_sn);
    std::string value(to_view(v));
    auto* h = reinterpret_cast<std::uint8_t*>(value.data());
    std::uint64_t n = fmtx::get_u64(h + fmtx::kCaDeviceCountOffset);
    if (delta < 0)
        n = n >= static_cast<std::uint64_t>(-delta) ? n - static_cast<std::uint64_t>(-delta) : 0;
    else
        n += static_cast<std::uint64_t>(delta);
    fmtx::put_u64(h + fmtx::kCaDeviceCountOffset, n);
    return put(impl_.cas, ca_sn, value, 0, "write ca record");
}

Outcome TxnView::delete_pem(std::string_view key) {
    MDB_val k = to_val(key);
    // A device registered without a PEM has no entry here.
    if (const int rc = mdb_del(txn_, impl_.device_pem, &k, nullptr); rc != 0 && rc != MDB_NOTFOUND)
        return fail(rc, "delete device certificate");
    return Ok{};
}

Outcome TxnView::log_change(std::string_view action, std::string_view ca_sn, std::string_view device_sn,
                            std::optional<CertStatus> old_status, std::optional<CertStatus> new_status,
                            std::string_view caller, std::int64_t time_ms) {
    auto next = counter(fmtx::kNextSeqKey);
    if (!next) return next.error();
    // The next seq lives in metadata rather than being derived from the
    // newest entry, so a seq is never handed out twice, even after trimming.
    const std::uint64_t seq = *next == 0 ? 1 : *next;

    ChangeEntry entry;
    entry.seq = seq;
    entry.time_ms = time_ms;
    entry.action.assign(action);
    entry.ca_sn.assign(ca_sn);
    entry.device_sn.assign(device_sn);
    entry.old_status = old_status;
    entry.new_status = new_status;
    entry.caller.assign(caller);
    if (auto r = add_to_counter(fmtx::kNextSeqKey, static_cast<std::int64_t>(seq + 1 - *next)); !r) return r;
    return put_change(entry, MDB_APPEND);
}

Outcome TxnView::put_change(const ChangeEntry& entry, unsigned flags) {
    std::uint8_t key[8];
    fmtx::seq_key(entry.seq, key);
    if (auto r = put(impl_.changes, seq_key_view(key), fmtx::encode_change(entry), flags, "append change log"); !r)
        return r;

    MDB_stat stat{};
    if (const int rc = mdb_stat(txn_, impl_.changes, &stat); rc != 0) return fail(rc, "count change log");
    if (stat.ms_entries <= impl_.change_log_retention) return Ok{};
    std::size_t excess = stat.ms_entries - impl_.change_log_retention;
    CursorOwner cursor;
    if (const int rc = mdb_cursor_open(txn_, impl_.changes, cursor.out()); rc != 0)
        return fail(rc, "open change log cursor");
    MDB_val k{}, v{};
    for (; excess > 0; --excess) {
        if (const int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST); rc != 0)
            return fail(rc, "trim change log");
        if (const int rc = mdb_cursor_del(cursor.get(), 0); rc != 0) return fail(rc, "trim change log");
    }
    return Ok{};
}

Outcome TxnView::patch_status(MDB_dbi dbi, std::string_view key, const MDB_val& current, std::size_t header_size,
                              CertStatus status, std::int64_t time_ms, std::string_view what) {
    std::string value(to_view(current));
    if (value.size() < header_size + fmtx::kBodyStatusChangedOffset + 8) return corrupt(what, key);
    auto* h = reinterpret_cast<std::uint8_t*>(value.data());
    h[fmtx::kStatusOffset] = static_cast<std::uint8_t>(status);
    fmtx::put_u64(h + header_size + fmtx::kBodyUpdatedOffset, static_cast<std::uint64_t>(time_ms));
    fmtx::put_u64(h + header_size + fmtx::kBodyStatusChangedOffset, static_cast<std::uint64_t>(time_ms));
    return put(dbi, key, value, 0, fmt::format("write {} record", what));
}

int TxnView::pause_for_remap(MDB_cursor* cursor, MDB_val& k, MDB_val& v) {
    if (pausable_ == nullptr || !impl_.remap_gate.remap_waiting() || !pausable_->only_hold()) return 0;
    const std::string at(to_view(k));
    mdb_txn_reset(txn_);
    pausable_->let_remap_through();
    int rc = mdb_txn_renew(txn_);
    if (rc == MDB_MAP_RESIZED) state_.map_resized = true;
    if (rc != 0) return rc;
    if ((rc = mdb_cursor_renew(txn_, cursor)) != 0) return rc;
    k = to_val(at);
    return mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
}

namespace {

// A long walk checks this often whether a remap waits for it.
constexpr std::uint64_t kPauseCheckEvery = 64;

Error not_a_continuation() {
    return make_error(Errc::invalid_argument,
                      "NextToken is not a continuation of this list (altered, issued by another store, or for "
                      "another list)");
}

}  // namespace

template <class T, class Decode>
Result<PageResult<T>> TxnView::page_of(MDB_dbi dbi, std::string_view list, std::string_view prefix,
                                       std::uint64_t total, const Page& page, Decode&& decode) {
    if (page.page_size < 1 || (page.after.empty() && page.page_no < 1))
        return make_error(Errc::invalid_argument, fmt::format("page {} of size {} does not exist (both start at 1)",
                                                              page.page_no, page.page_size));
    PageResult<T> result;
    result.total = total;
    std::uint64_t steps = 0;
    struct Count {
        std::atomic<std::uint64_t>& to;
        std::uint64_t& steps;
        ~Count() { to.fetch_add(steps, std::memory_order_relaxed); }
    } count{impl_.records_walked, steps};

    CursorOwner cursor;
    if (const int rc = mdb_cursor_open(txn_, dbi, cursor.out()); rc != 0) return fail(rc, "open cursor");
    MDB_val k{};
    MDB_val v{};
    int rc = 0;
    if (!page.after.empty()) {
        // A token costs one seek, however deep the page: a whole walk is O(N).
        const auto after = page_token::open(impl_.page_token_key, list, page.after);
        if (!after || !after->starts_with(prefix) || after->size() == prefix.size()) return not_a_continuation();
        k = to_val(*after);
        rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
        ++steps;
        // Its record may have been deleted since: then the seek already
        // stands on the next one.
        if (rc == 0 && to_view(k) == *after) {
            rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
            ++steps;
        }
    } else {
        const std::uint64_t skip = static_cast<std::uint64_t>(page.page_no - 1) * page.page_size;
        if (skip >= total) return result;
        k = to_val(prefix);
        rc = mdb_cursor_get(cursor.get(), &k, &v, prefix.empty() ? MDB_FIRST : MDB_SET_RANGE);
        ++steps;
        // Offsets are walked, not computed: LMDB keeps no ranks, so page n
        // costs n pages of steps. The walk lets a waiting remap through now
        // and then, so it holds up no write however deep it goes.
        for (std::uint64_t i = 0; rc == 0 && i < skip; ++i) {
            if (!to_view(k).starts_with(prefix)) return result;
            rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
            ++steps;
            if (rc == 0 && steps % kPauseCheckEvery == 0) rc = pause_for_remap(cursor.get(), k, v);
        }
    }
    result.items.reserve(page.page_size);
    std::string last_key;
    while (rc == 0 && result.items.size() < page.page_size && to_view(k).starts_with(prefix)) {
        T item;
        if (!decode(to_view(k), to_view(v), item)) return corrupt("listed", to_view(k));
        result.items.push_back(std::move(item));
        last_key.assign(to_view(k));
        rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
        ++steps;
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return fail(rc, "list records");
    // The cursor already stands on the record after the page: a token only
    // when there is one.
    if (rc == 0 && !last_key.empty() && to_view(k).starts_with(prefix))
        result.next = page_token::seal(impl_.page_token_key, list, last_key);
    return result;
}

namespace {

bool decode_device_entry(std::string_view key, std::string_view value, DeviceRecord& out) {
    const auto sep = key.find('\0');
    if (sep == std::string_view::npos) return false;
    return fmtx::decode_device(value, key.substr(0, sep), key.substr(sep + 1), out);
}

}  // namespace

Outcome TxnView::load_device_pem(std::string_view key, DeviceRecord& rec) {
    MDB_val v{};
    const int rc = get(impl_.device_pem, key, v);
    if (rc == MDB_NOTFOUND) {
        rec.content_pem.clear();
        return Ok{};
    }
    if (rc != 0) return fail(rc, "read device certificate");
    rec.content_pem.assign(to_view(v));
    return Ok{};
}

Result<std::optional<CaRecord>> TxnView::get_ca(std::string_view sn) {
    if (!fmtx::valid_key_serial(sn)) return std::optional<CaRecord>{};
    MDB_val v{};
    const int rc = get(impl_.cas, sn, v);
    if (rc == MDB_NOTFOUND) return std::optional<CaRecord>{};
    if (rc != 0) return fail(rc, "read ca record");
    CaRecord rec;
    if (!fmtx::decode_ca(to_view(v), sn, rec)) return corrupt("ca", sn);
    return std::optional<CaRecord>(std::move(rec));
}

Result<std::optional<DeviceRecord>> TxnView::get_device(std::string_view ca_sn, std::string_view device_sn) {
    char key[fmtx::kMaxDeviceKey];
    const std::size_t n = fmtx::device_key(ca_sn, device_sn, key);
    if (n == 0) return std::optional<DeviceRecord>{};
    MDB_val v{};
    const int rc = get(impl_.devices, std::string_view(key, n), v);
    if (rc == MDB_NOTFOUND) return std::optional<DeviceRecord>{};
    if (rc != 0) return fail(rc, "read device record");
    DeviceRecord rec;
    if (!fmtx::decode_device(to_view(v), ca_sn, device_sn, rec)) return corrupt("device", device_sn);
    if (auto r = load_device_pem(std::string_view(key, n), rec); !r) return r.error();
    return std::optional<DeviceRecord>(std::move(rec));
}

Result<PageResult<CaRecord>> TxnView::list_cas(Page page) {
    auto total = counter(fmtx::kCaCountKey);
    if (!total) return total.error();
    return page_of<CaRecord>(impl_.cas, "cas", {}, *total, page, [](std::string_view k, std::string_view v, CaRecord& out) {
        return fmtx::decode_ca(v, k, out);
    });
}

Result<PageResult<DeviceRecord>> TxnView::list_devices(Page page) {
    auto total = counter(fmtx::kDeviceCountKey);
    if (!total) return total.error();
    auto result = page_of<DeviceRecord>(impl_.devices, "devices", {}, *total, page, decode_device_entry);
    if (!result) return result;
    for (auto& d : result->items)
        if (auto r = load_device_pem(device_key_string(d.ca_sn, d.device_sn), d); !r) return r.error();
    return result;
}

Result<PageResult<DeviceRecord>> TxnView::list_devices_by_ca(std::string_view ca_sn, Page page) {
    MDB_val v{};
    const int rc = fmtx::valid_key_serial(ca_sn) ? get(impl_.cas, ca_sn, v) : MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", ca_sn));
    if (rc != 0) return fail(rc, "read ca record");
    if (!fmtx::has_header(v.mv_data, v.mv_size, fmtx::kCaMagic, fmtx::kCaHeaderSize)) return corrupt("ca", ca_sn);
    const std::uint64_t total =
        fmtx::get_u64(static_cast<const std::uint8_t*>(v.mv_data) + fmtx::kCaDeviceCountOffset);
    const std::string prefix = ca_prefix(ca_sn);
    auto result = page_of<DeviceRecord>(impl_.devices, "devices of ca", prefix, total, page, decode_device_entry);
    if (!result) return result;
    for (auto& d : result->items)
        if (auto r = load_device_pem(device_key_string(d.ca_sn, d.device_sn), d); !r) return r.error();
    return result;
}

Result<std::optional<std::string>> TxnView::ca_by_subject_key_id(std::string_view ski) {
    if (ski.empty() || ski.size() > fmtx::kMaxSubjectKeyId) return std::optional<std::string>{};
    MDB_val v{};
    const int rc = get(impl_.ski, ski, v);
    if (rc == MDB_NOTFOUND) return std::optional<std::string>{};
    if (rc != 0) return fail(rc, "read subject key index");
    return std::optional<std::string>(std::string(to_view(v)));
}

Result<std::vector<ChangeEntry>> TxnView::changes_after(std::uint64_t since, std::size_t limit) {
    std::vector<ChangeEntry> out;
    if (limit == 0 || since == UINT64_MAX) return out;
    CursorOwner cursor;
    if (const int rc = mdb_cursor_open(txn_, impl_.changes, cursor.out()); rc != 0)
        return fail(rc, "open change log cursor");
    std::uint8_t key[8];
    fmtx::seq_key(since + 1, key);
    MDB_val k = to_val(seq_key_view(key));
    MDB_val v{};
    int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
    while (rc == 0 && out.size() < limit) {
        ChangeEntry entry;
        const std::uint64_t seq = fmtx::seq_from_key(k.mv_data, k.mv_size);
        if (!fmtx::decode_change(to_view(v), seq, entry)) return corrupt("change log", std::to_string(seq));
        out.push_back(std::move(entry));
        rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return fail(rc, "read change log");
    return out;
}

Result<std::uint64_t> TxnView::ca_count() { return counter(fmtx::kCaCountKey); }

Result<std::uint64_t> TxnView::device_count() { return counter(fmtx::kDeviceCountKey); }

Result<std::optional<std::string>> TxnView::meta(std::string_view key) {
    if (key.empty() || key.size() > fmtx::kMaxMetaKey) return std::optional<std::string>{};
    MDB_val v{};
    const int rc = get(impl_.meta, key, v);
    if (rc == MDB_NOTFOUND) return std::optional<std::string>{};
    if (rc != 0) return fail(rc, "read metadata");
    return std::optional<std::string>(std::string(to_view(v)));
}

Outcome TxnView::insert_ca(const CaRecord& rec, std::string_view action, std::string_view caller) {
    if (!fmtx::valid_key_serial(rec.sn)) return bad_serial("ca serial", rec.sn);
    if (!status_allowed(rec.status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    if (rec.subject_key_id.size() > fmtx::kMaxSubjectKeyId)
        return make_error(Errc::invalid_argument,
                          fmt::format("ca '{}' has a subject key identifier longer than {} bytes", rec.sn,
                                      fmtx::kMaxSubjectKeyId));
    MDB_val existing{};
    const int rc = get(impl_.cas, rec.sn, existing);
    if (rc == 0) return make_error(Errc::already_exists, fmt::format("ca '{}' is already registered", rec.sn));
    if (rc != MDB_NOTFOUND) return fail(rc, "read ca record");

    CaRecord stored = rec;
    stored.device_count = 0;  // devices are counted as they are inserted
    if (auto r = put(impl_.cas, rec.sn, fmtx::encode_ca(stored), MDB_NOOVERWRITE, "write ca record"); !r) return r;
    if (!rec.subject_key_id.empty()) {
        // Several CAs may share a key (a re-issued CA certificate): the index
        // keeps every Sn under the SKI, sorted.
        if (auto r = put(impl_.ski, rec.subject_key_id, rec.sn, 0, "write subject key index");
            !r)
            return r;
    }
    if (auto r = add_to_counter(fmtx::kCaCountKey, 1); !r) return r;
    return log_change(action, rec.sn, {}, std::nullopt, rec.status, caller,
                      rec.updated_ms != 0 ? rec.updated_ms : now_ms());
}

Result<CertStatus> TxnView::set_ca_status(std::string_view sn, CertStatus status, std::string_view action,
                                          std::string_view caller) {
    if (!status_allowed(status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    MDB_val v{};
    const int rc = fmtx::valid_key_serial(sn) ? get(impl_.cas, sn, v) : MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    if (rc != 0) return fail(rc, "read ca record");
    if (!fmtx::has_header(v.mv_data, v.mv_size, fmtx::kCaMagic, fmtx::kCaHeaderSize)) return corrupt("ca", sn);
    const auto old = static_cast<CertStatus>(header_byte(v, fmtx::kStatusOffset));
    if (old == status) return old;
    if (old == CertStatus::revoked)
        return make_error(Errc::revoked, fmt::format("ca '{}' is revoked; revocation is final", sn));
    if (status == CertStatus::active)
        if (auto r = refuse_if_being_deleted(sn); !r) return r.error();
    const std::int64_t now = now_ms();
    if (auto r = patch_status(impl_.cas, sn, v, fmtx::kCaHeaderSize, status, now, "ca"); !r) return r.error();
    if (auto r = log_change(action, sn, {}, old, status, caller, now); !r) return r.error();
    return old;
}

Result<bool> TxnView::ca_being_deleted(std::string_view sn) {
    if (!fmtx::valid_key_serial(sn)) return false;
    MDB_val v{};
    const int rc = get(impl_.meta, deleting_key(sn), v);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) return fail(rc, "read metadata");
    return true;
}

Outcome TxnView::refuse_if_being_deleted(std::string_view sn) {
    auto deleting = ca_being_deleted(sn);
    if (!deleting) return deleting.error();
    if (*deleting)
        return make_error(Errc::not_found,
                          fmt::format("ca '{}' is being deleted (DeleteCaCertificate again finishes it)", sn));
    return Ok{};
}

Result<std::uint64_t> TxnView::remove_devices_of(std::string_view sn, std::uint64_t limit, std::string_view action,
                                                 std::string_view caller, std::int64_t now) {
    const std::string prefix = ca_prefix(sn);
    CursorOwner cursor;
    if (const int rc = mdb_cursor_open(txn_, impl_.devices, cursor.out()); rc != 0)
        return fail(rc, "open device cursor");
    std::uint64_t removed = 0;
    while (removed < limit) {
        // Re-seek after every deletion rather than relying on where a cursor
        // lands after mdb_cursor_del.
        MDB_val k = to_val(prefix);
        MDB_val v{};
        const int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
        if (rc == MDB_NOTFOUND) break;
        if (rc != 0) return fail(rc, "list devices of ca");
        const auto key = to_view(k);
        if (!key.starts_with(prefix)) break;
        if (!fmtx::has_header(v.mv_data, v.mv_size, fmtx::kDeviceMagic, fmtx::kDeviceHeaderSize))
            return corrupt("device", key.substr(prefix.size()));
        const auto old = static_cast<CertStatus>(header_byte(v, fmtx::kStatusOffset));
        const std::string device_sn(key.substr(prefix.size()));
        if (const int drc = mdb_cursor_del(cursor.get(), 0); drc != 0) return fail(drc, "delete device record");
        if (auto r = delete_pem(device_key_string(sn, device_sn)); !r) return r.error();
        if (auto r = log_change(action, sn, device_sn, old, std::nullopt, caller, now); !r) return r.error();
        ++removed;
    }
    return removed;
}

Outcome TxnView::begin_ca_deletion(std::string_view sn, std::string_view action, std::string_view caller) {
    MDB_val v{};
    const int rc = fmtx::valid_key_serial(sn) ? get(impl_.cas, sn, v) : MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    if (rc != 0) return fail(rc, "read ca record");
    if (!fmtx::has_header(v.mv_data, v.mv_size, fmtx::kCaMagic, fmtx::kCaHeaderSize)) return corrupt("ca", sn);
    const auto old = static_cast<CertStatus>(header_byte(v, fmtx::kStatusOffset));
    if (old == CertStatus::active) {
        // Its devices are refused, and their sessions kicked, from this very
        // commit on, however long the removal of their records takes.
        const std::int64_t now = now_ms();
        if (auto r = patch_status(impl_.cas, sn, v, fmtx::kCaHeaderSize, CertStatus::inactive, now, "ca"); !r)
            return r;
        if (auto r = log_change(action, sn, {}, old, CertStatus::inactive, caller, now); !r) return r;
    }
    return put(impl_.meta, deleting_key(sn), "1", 0, "mark ca as being deleted");
}

Result<std::uint64_t> TxnView::delete_ca_devices(std::string_view sn, std::uint64_t limit, std::string_view action,
                                                 std::string_view caller) {
    if (!fmtx::valid_key_serial(sn)) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    auto removed = remove_devices_of(sn, limit, action, caller, now_ms());
    if (!removed) return removed;
    if (*removed == 0) {
        MDB_val v{};
        const int rc = get(impl_.cas, sn, v);
        if (rc == MDB_NOTFOUND) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
        if (rc != 0) return fail(rc, "read ca record");
        return removed;
    }
    const auto delta = -static_cast<std::int64_t>(*removed);
    if (auto r = add_to_ca_device_count(sn, delta); !r) return r.error();
    if (auto r = add_to_counter(fmtx::kDeviceCountKey, delta); !r) return r.error();
    return removed;
}

Result<std::uint64_t> TxnView::delete_ca(std::string_view sn, std::string_view action, std::string_view caller) {
    auto found = get_ca(sn);
    if (!found) return found.error();
    if (!*found) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", sn));
    const CaRecord& ca = **found;
    const std::int64_t now = now_ms();

    auto removed = remove_devices_of(sn, UINT64_MAX, action, caller, now);
    if (!removed) return removed;
    if (!ca.subject_key_id.empty()) {
        MDB_val k = to_val(ca.subject_key_id);
        MDB_val v = to_val(sn);
        // A missing index entry must not keep a CA from being removed.
        if (const int rc = mdb_del(txn_, impl_.ski, &k, &v); rc != 0 && rc != MDB_NOTFOUND)
            return fail(rc, "delete subject key index entry");
    }
    if (auto r = del(impl_.cas, sn, nullptr, "delete ca record"); !r) return r.error();
    {
        const std::string marker = deleting_key(sn);
        MDB_val k = to_val(marker);
        if (const int rc = mdb_del(txn_, impl_.meta, &k, nullptr); rc != 0 && rc != MDB_NOTFOUND)
            return fail(rc, "clear ca deletion marker");
    }
    if (auto r = add_to_counter(fmtx::kCaCountKey, -1); !r) return r.error();
    if (auto r = add_to_counter(fmtx::kDeviceCountKey, -static_cast<std::int64_t>(*removed)); !r) return r.error();
    if (auto r = log_change(action, sn, {}, ca.status, std::nullopt, caller, now); !r) return r.error();
    return removed;
}

Outcome TxnView::insert_device(const DeviceRecord& rec, std::string_view action, std::string_view caller) {
    if (!fmtx::valid_key_serial(rec.ca_sn)) return bad_serial("ca serial", rec.ca_sn);
    if (!fmtx::valid_key_serial(rec.device_sn)) return bad_serial("device serial", rec.device_sn);
    if (!status_allowed(rec.status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    MDB_val v{};
    int rc = get(impl_.cas, rec.ca_sn, v);
    if (rc == MDB_NOTFOUND)
        return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", rec.ca_sn));
    if (rc != 0) return fail(rc, "read ca record");
    if (auto r = refuse_if_being_deleted(rec.ca_sn); !r) return r;

    const std::string key = device_key_string(rec.ca_sn, rec.device_sn);
    rc = get(impl_.devices, key, v);
    if (rc == 0)
        return make_error(Errc::already_exists, fmt::format("device '{}' of ca '{}' is already registered",
                                                            rec.device_sn, rec.ca_sn));
    if (rc != MDB_NOTFOUND) return fail(rc, "read device record");
    if (auto r = put(impl_.devices, key, fmtx::encode_device(rec), MDB_NOOVERWRITE, "write device record"); !r)
        return r;
    if (!rec.content_pem.empty())
        if (auto r = put(impl_.device_pem, key, rec.content_pem, 0, "write device certificate"); !r) return r;
    if (auto r = add_to_ca_device_count(rec.ca_sn, 1); !r) return r;
    if (auto r = add_to_counter(fmtx::kDeviceCountKey, 1); !r) return r;
    return log_change(action, rec.ca_sn, rec.device_sn, std::nullopt, rec.status, caller,
                      rec.updated_ms != 0 ? rec.updated_ms : now_ms());
}

Outcome TxnView::find_device(std::string_view ca_sn, std::string_view device_sn, DeviceSlot& slot) {
    slot.key_len = fmtx::device_key(ca_sn, device_sn, slot.key);
    const int rc = slot.key_len != 0 ? get(impl_.devices, slot.key_view(), slot.value) : MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND)
        return make_error(Errc::not_found,
                          fmt::format("device '{}' of ca '{}' is not registered", device_sn, ca_sn));
    if (rc != 0) return fail(rc, "read device record");
    if (!fmtx::has_header(slot.value.mv_data, slot.value.mv_size, fmtx::kDeviceMagic, fmtx::kDeviceHeaderSize))
        return corrupt("device", device_sn);
    return Ok{};
}

CertStatus TxnView::DeviceSlot::status() const noexcept {
    return static_cast<CertStatus>(header_byte(value, fmtx::kStatusOffset));
}

Result<CertStatus> TxnView::set_device_status(std::string_view ca_sn, std::string_view device_sn, CertStatus status,
                                              std::string_view action, std::string_view caller) {
    if (!status_allowed(status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    DeviceSlot slot;
    if (auto found = find_device(ca_sn, device_sn, slot); !found) return found.error();
    const std::string_view k = slot.key_view();
    const MDB_val& v = slot.value;
    const CertStatus old = slot.status();
    if (old == status) return old;
    if (old == CertStatus::revoked)
        return make_error(Errc::revoked, fmt::format("device '{}' of ca '{}' is revoked; revocation is final",
                                                     device_sn, ca_sn));
    const std::int64_t now = now_ms();
    if (auto r = patch_status(impl_.devices, k, v, fmtx::kDeviceHeaderSize, status, now, "device"); !r)
        return r.error();
    if (auto r = log_change(action, ca_sn, device_sn, old, status, caller, now); !r) return r.error();
    return old;
}

Outcome TxnView::delete_device(std::string_view ca_sn, std::string_view device_sn, std::string_view action,
                               std::string_view caller) {
    DeviceSlot slot;
    if (auto found = find_device(ca_sn, device_sn, slot); !found) return found.error();
    const std::string_view k = slot.key_view();
    const CertStatus old = slot.status();
    if (auto r = del(impl_.devices, k, nullptr, "delete device record"); !r) return r;
    if (auto r = delete_pem(k); !r) return r;
    if (auto r = add_to_ca_device_count(ca_sn, -1); !r) return r;
    if (auto r = add_to_counter(fmtx::kDeviceCountKey, -1); !r) return r;
    return log_change(action, ca_sn, device_sn, old, std::nullopt, caller, now_ms());
}

Outcome TxnView::set_meta(std::string_view key, std::string_view value) {
    if (key.empty() || key.size() > fmtx::kMaxMetaKey)
        return make_error(Errc::invalid_argument,
                          fmt::format("metadata key must be 1 to {} bytes long", fmtx::kMaxMetaKey));
    if (key.starts_with(fmtx::kReservedMetaPrefix) || key == fmtx::kSchemaVersionKey)
        return make_error(Errc::invalid_argument, fmt::format("metadata key '{}' is reserved by the store", key));
    return put(impl_.meta, key, value, 0, "write metadata");
}

}  // namespace devcert
