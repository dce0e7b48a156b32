// The LMDB store as a fleet replica (replica.hpp): the fleet's changes put
// as given, the position, the resynchronisation and the registration queue.
#include "devcert/replica.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "record_format.hpp"
#include "store_impl.hpp"

namespace devcert {

namespace fmtx = store_format;

namespace {

std::string order_key(std::uint64_t order) {
    std::uint8_t key[8];
    fmtx::seq_key(order, key);
    return std::string(reinterpret_cast<const char*>(key), 8);
}

Error not_a_txn_view() {
    return make_error(Errc::invalid_argument, "the registration queue needs a write of the LMDB store");
}

Outcome check_device(const DeviceRecord& rec) {
    if (!fmtx::valid_key_serial(rec.ca_sn)) return bad_serial("ca serial", rec.ca_sn);
    if (!fmtx::valid_key_serial(rec.device_sn)) return bad_serial("device serial", rec.device_sn);
    if (!status_allowed(rec.status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    return Ok{};
}

Outcome check_ca(const CaRecord& rec) {
    if (!fmtx::valid_key_serial(rec.sn)) return bad_serial("ca serial", rec.sn);
    if (!status_allowed(rec.status)) return make_error(Errc::invalid_argument, "unknown certificate status");
    if (rec.subject_key_id.size() > fmtx::kMaxSubjectKeyId)
        return make_error(Errc::invalid_argument,
                          fmt::format("ca '{}' has a subject key identifier longer than {} bytes", rec.sn,
                                      fmtx::kMaxSubjectKeyId));
    return Ok{};
}

// A queued registration's value: order:u64be, pem length:u32le, pem, then
// the device record as the devices database holds it.
std::string encode_queued(std::uint64_t order, const DeviceRecord& rec) {
    std::string out = order_key(order);
    const auto n = static_cast<std::uint32_t>(rec.content_pem.size());
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(n >> (8 * i)));
    out.append(rec.content_pem);
    out.append(fmtx::encode_device(rec));
    return out;
}

bool decode_queued(std::string_view key, std::string_view value, std::uint64_t& order, DeviceRecord& out) {
    const auto sep = key.find('\0');
    if (sep == std::string_view::npos || value.size() < 12) return false;
    order = fmtx::seq_from_key(value.data(), 8);
    const auto* p = reinterpret_cast<const std::uint8_t*>(value.data()) + 8;
    std::uint32_t n = 0;
    for (int i = 3; i >= 0; --i) n = (n << 8) | p[i];
    if (value.size() - 12 < n) return false;
    if (!fmtx::decode_device(value.substr(12 + n), key.substr(0, sep), key.substr(sep + 1), out)) return false;
    out.content_pem.assign(value.substr(12, n));
    return true;
}

Result<std::uint64_t> parse_u64(std::string_view text, std::string_view what) {
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size())
        return make_error(Errc::store_error, fmt::format("metadata '{}' is not a number", what));
    return n;
}

std::string decimal(std::uint64_t n) { return std::to_string(n); }

}  // namespace

/// The replica's operations inside one transaction of the store (a friend
/// of TxnView, whose helpers it uses).
class ReplicaTxn {
public:
    explicit ReplicaTxn(TxnView& view) noexcept : v_(view), impl_(view.impl_), txn_(view.txn_) {}

    // ---- metadata --------------------------------------------------------
    Result<std::optional<std::string>> meta(std::string_view key) {
        MDB_val v{};
        const int rc = v_.get(impl_.meta, key, v);
        if (rc == MDB_NOTFOUND) return std::optional<std::string>{};
        if (rc != 0) return v_.fail(rc, "read metadata");
        return std::optional<std::string>(std::string(to_view(v)));
    }
    Outcome put_meta(std::string_view key, std::string_view value) {
        return v_.put(impl_.meta, key, value, 0, "write metadata");
    }
    Outcome del_meta(std::string_view key) { return del_if_there(impl_.meta, key, "write metadata"); }
    Outcome set_counter(const char* key, std::uint64_t n) { return put_meta(key, decimal(n)); }

    Result<FollowerPosition> position() {
        FollowerPosition pos;
        auto epoch = meta(fmtx::kFleetEpochKey);
        if (!epoch) return epoch.error();
        if (*epoch) pos.epoch = std::move(**epoch);
        auto seq = meta(fmtx::kFleetSeqKey);
        if (!seq) return seq.error();
        if (*seq) {
            auto n = parse_u64(**seq, fmtx::kFleetSeqKey);
            if (!n) return n.error();
            pos.seq = *n;
        }
        auto digest = meta(fmtx::kFleetDigestKey);
        if (!digest) return digest.error();
        if (*digest) {
            auto n = parse_u64(**digest, fmtx::kFleetDigestKey);
            if (!n) return n.error();
            pos.digest = *n;
        }
        return pos;
    }

    Outcome set_position(std::string_view epoch, std::uint64_t seq, std::optional<std::uint64_t> digest) {
        if (auto r = put_meta(fmtx::kFleetEpochKey, epoch); !r) return r;
        if (auto r = set_counter(fmtx::kFleetSeqKey, seq); !r) return r;
        if (digest) return set_counter(fmtx::kFleetDigestKey, *digest);
        return del_meta(fmtx::kFleetDigestKey);
    }

    // ---- records ---------------------------------------------------------
    /// Devices of `ca_sn` in the replica.
    Result<std::uint64_t> count_devices_of(std::string_view ca_sn) {
        const std::string prefix = ca_prefix(ca_sn);
        CursorOwner cursor;
        if (const int rc = mdb_cursor_open(txn_, impl_.devices, cursor.out()); rc != 0)
            return v_.fail(rc, "open device cursor");
        MDB_val k = to_val(prefix);
        MDB_val v{};
        std::uint64_t n = 0;
        int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
        while (rc == 0 && to_view(k).starts_with(prefix)) {
            ++n;
            rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
        }
        if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "count devices of ca");
        return n;
    }

    /// Puts the CA as given but for its device count, which stays the
    /// replica's own; keeps the SKI index and the CA count right.
    Outcome upsert_ca(const CaRecord& rec) {
        if (auto r = check_ca(rec); !r) return r;
        MDB_val current{};
        const int rc = v_.get(impl_.cas, rec.sn, current);
        if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "read ca record");
        const bool fresh = rc == MDB_NOTFOUND;
        CaRecord stored = rec;
        std::string old_ski;
        if (fresh) {
            auto n = count_devices_of(rec.sn);
            if (!n) return n.error();
            stored.device_count = *n;
        } else {
            CaRecord old;
            if (!fmtx::decode_ca(to_view(current), rec.sn, old)) return corrupt("ca", rec.sn);
            stored.device_count = old.device_count;
            old_ski = std::move(old.subject_key_id);
        }
        if (auto r = v_.put(impl_.cas, rec.sn, fmtx::encode_ca(stored), 0, "write ca record"); !r) return r;
        if (!old_ski.empty() && old_ski != rec.subject_key_id)
            if (auto r = del_pair(impl_.ski, old_ski, rec.sn, "delete subject key index entry"); !r) return r;
        if (!rec.subject_key_id.empty())
            if (auto r = v_.put(impl_.ski, rec.subject_key_id, rec.sn, 0, "write subject key index"); !r) return r;
        if (fresh) return v_.add_to_counter(fmtx::kCaCountKey, 1);
        return Ok{};
    }

    /// Removes the CA with whatever devices of it the replica holds (queued
    /// ones too) and its deletion marker.
    Outcome remove_ca(std::string_view sn) {
        if (!fmtx::valid_key_serial(sn)) return Ok{};
        MDB_val current{};
        const int rc = v_.get(impl_.cas, sn, current);
        if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "read ca record");
        const bool present = rc == 0;
        std::string ski;
        if (present) {
            CaRecord old;
            if (!fmtx::decode_ca(to_view(current), sn, old)) return corrupt("ca", sn);
            ski = std::move(old.subject_key_id);
        }
        auto removed = remove_devices_of(sn);
        if (!removed) return removed.error();
        if (auto r = queue_drop_ca(sn); !r) return r;
        if (auto r = del_meta(deleting_key(sn)); !r) return r;
        if (*removed != 0)
            if (auto r = v_.add_to_counter(fmtx::kDeviceCountKey, -static_cast<std::int64_t>(*removed)); !r) return r;
        if (!present) return Ok{};
        if (!ski.empty())
            if (auto r = del_pair(impl_.ski, ski, sn, "delete subject key index entry"); !r) return r;
        if (auto r = v_.del(impl_.cas, sn, nullptr, "delete ca record"); !r) return r;
        return v_.add_to_counter(fmtx::kCaCountKey, -1);
    }

    /// Puts the device as given (its CA must be held); counts it when it is
    /// new. It leaves the queue: the caller queues it again if it must.
    Outcome upsert_device(const DeviceRecord& rec) {
        if (auto r = check_device(rec); !r) return r;
        const std::string key = device_key_string(rec.ca_sn, rec.device_sn);
        MDB_val current{};
        const int rc = v_.get(impl_.devices, key, current);
        if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "read device record");
        const bool fresh = rc == MDB_NOTFOUND;
        if (fresh) {
            auto exists = ca_exists(rec.ca_sn);
            if (!exists) return exists.error();
            if (!*exists)
                return make_error(Errc::store_error,
                                  fmt::format("the fleet changed device '{}' of ca '{}', which the replica does not "
                                              "hold; resynchronise",
                                              rec.device_sn, rec.ca_sn));
        }
        if (auto r = put_device(key, rec, 0); !r) return r;
        if (fresh) {
            if (auto r = v_.add_to_ca_device_count(rec.ca_sn, 1); !r) return r;
            if (auto r = v_.add_to_counter(fmtx::kDeviceCountKey, 1); !r) return r;
        }
        return queue_drop(key);
    }

    Outcome remove_device(std::string_view ca_sn, std::string_view device_sn) {
        if (!fmtx::valid_key_serial(ca_sn) || !fmtx::valid_key_serial(device_sn)) return Ok{};
        const std::string key = device_key_string(ca_sn, device_sn);
        MDB_val current{};
        const int rc = v_.get(impl_.devices, key, current);
        if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "read device record");
        if (rc == 0) {
            if (auto r = v_.del(impl_.devices, key, nullptr, "delete device record"); !r) return r;
            if (auto r = v_.delete_pem(key); !r) return r;
            if (auto r = v_.add_to_ca_device_count(ca_sn, -1); !r && r.error().code != Errc::not_found) return r;
            if (auto r = v_.add_to_counter(fmtx::kDeviceCountKey, -1); !r) return r;
        }
        return queue_drop(key);
    }

    /// The device's record and PEM (none: no PEM entry), with mdb_put flags.
    Outcome put_device(std::string_view key, const DeviceRecord& rec, unsigned flags) {
        if (auto r = v_.put(impl_.devices, key, fmtx::encode_device(rec), flags, "write device record"); !r) return r;
        if (rec.content_pem.empty()) return v_.delete_pem(key);
        return v_.put(impl_.device_pem, key, rec.content_pem, flags, "write device certificate");
    }

    Result<bool> ca_exists(std::string_view sn) {
        MDB_val v{};
        const int rc = v_.get(impl_.cas, sn, v);
        if (rc == MDB_NOTFOUND) return false;
        if (rc != 0) return v_.fail(rc, "read ca record");
        return true;
    }

    Result<bool> device_exists(std::string_view key) {
        MDB_val v{};
        const int rc = v_.get(impl_.devices, key, v);
        if (rc == MDB_NOTFOUND) return false;
        if (rc != 0) return v_.fail(rc, "read device record");
        return true;
    }

    /// Sets a CA's device count in place.
    Outcome set_ca_device_count(std::string_view sn, std::uint64_t n) {
        MDB_val v{};
        const int rc = v_.get(impl_.cas, sn, v);
        if (rc == MDB_NOTFOUND)
            return make_error(Errc::store_error,
                              fmt::format("the fleet's snapshot holds devices of ca '{}' but not the ca", sn));
        if (rc != 0) return v_.fail(rc, "read ca record");
        if (!fmtx::has_header(v.mv_data, v.mv_size, fmtx::kCaMagic, fmtx::kCaHeaderSize)) return corrupt("ca", sn);
        std::string value(to_view(v));
        fmtx::put_u64(reinterpret_cast<std::uint8_t*>(value.data()) + fmtx::kCaDeviceCountOffset, n);
        return v_.put(impl_.cas, sn, value, 0, "write ca record");
    }

    // ---- change log ------------------------------------------------------
    /// Appends the fleet's entry under its own seq (trimming to the
    /// retention) and keeps the next seq beyond it.
    Outcome log_fleet_entry(const ChangeEntry& entry) {
        if (auto r = v_.put_change(entry, 0); !r) return r;
        auto next = v_.counter(fmtx::kNextSeqKey);
        if (!next) return next.error();
        if (*next > entry.seq) return Ok{};
        return set_counter(fmtx::kNextSeqKey, entry.seq + 1);
    }

    // ---- the registration queue -----------------------------------------
    Result<std::uint64_t> queue_length() {
        MDB_stat stat{};
        if (const int rc = mdb_stat(txn_, impl_.queue, &stat); rc != 0) return v_.fail(rc, "count queue");
        return static_cast<std::uint64_t>(stat.ms_entries);
    }

    Outcome queue_put(std::string_view key, const DeviceRecord& rec) {
        if (auto r = queue_drop(key); !r) return r;
        auto next = v_.counter(fmtx::kQueueNextKey);
        if (!next) return next.error();
        const std::uint64_t order = *next;
        if (auto r = v_.put(impl_.queue, key, encode_queued(order, rec), 0, "queue registration"); !r) return r;
        if (auto r = v_.put(impl_.queue_order, order_key(order), key, 0, "queue registration"); !r) return r;
        return set_counter(fmtx::kQueueNextKey, order + 1);
    }

    /// Drops a queued registration; fine when it is not queued.
    Outcome queue_drop(std::string_view key) {
        MDB_val v{};
        const int rc = v_.get(impl_.queue, key, v);
        if (rc == MDB_NOTFOUND) return Ok{};
        if (rc != 0) return v_.fail(rc, "read queue");
        if (v.mv_size < 8) return corrupt("queued registration", key);
        const std::string order(static_cast<const char*>(v.mv_data), 8);
        if (auto r = del_if_there(impl_.queue_order, order, "drop queued registration"); !r) return r;
        return v_.del(impl_.queue, key, nullptr, "drop queued registration");
    }

    Outcome queue_drop_ca(std::string_view ca_sn) {
        const std::string prefix = ca_prefix(ca_sn);
        std::vector<std::string> keys;
        {
            CursorOwner cursor;
            if (const int rc = mdb_cursor_open(txn_, impl_.queue, cursor.out()); rc != 0)
                return v_.fail(rc, "open queue cursor");
            MDB_val k = to_val(prefix);
            MDB_val v{};
            int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
            while (rc == 0 && to_view(k).starts_with(prefix)) {
                keys.emplace_back(to_view(k));
                rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
            }
            if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "read queue");
        }
        for (const auto& key : keys)
            if (auto r = queue_drop(key); !r) return r;
        return Ok{};
    }

    struct Queued {
        std::string key;
        DeviceRecord rec;
    };

    /// Up to `limit` queued registrations, oldest first.
    Result<std::vector<Queued>> queued(std::size_t limit) {
        std::vector<Queued> out;
        CursorOwner cursor;
        if (const int rc = mdb_cursor_open(txn_, impl_.queue_order, cursor.out()); rc != 0)
            return v_.fail(rc, "open queue cursor");
        MDB_val k{};
        MDB_val v{};
        int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_FIRST);
        while (rc == 0 && out.size() < limit) {
            Queued q;
            q.key.assign(to_view(v));
            MDB_val value{};
            const int grc = v_.get(impl_.queue, q.key, value);
            if (grc != 0 && grc != MDB_NOTFOUND) return v_.fail(grc, "read queue");
            std::uint64_t order = 0;
            if (grc == MDB_NOTFOUND || !decode_queued(q.key, to_view(value), order, q.rec))
                return corrupt("queued registration", q.key.substr(0, q.key.find('\0')));
            out.push_back(std::move(q));
            rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_NEXT);
        }
        if (rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, "read queue");
        return out;
    }

    // ---- resynchronisation ----------------------------------------------
    /// Empties the records, the indexes, the change log, the counts and
    /// the deletion markers; the queue and the rest of the metadata stay.
    Outcome clear_records() {
        for (const MDB_dbi dbi : {impl_.cas, impl_.devices, impl_.device_pem, impl_.ski, impl_.changes})
            if (const int rc = mdb_drop(txn_, dbi, 0); rc != 0) return v_.fail(rc, "empty the replica");
        if (auto r = del_meta(fmtx::kCaCountKey); !r) return r;
        if (auto r = del_meta(fmtx::kDeviceCountKey); !r) return r;
        CursorOwner cursor;
        if (const int rc = mdb_cursor_open(txn_, impl_.meta, cursor.out()); rc != 0)
            return v_.fail(rc, "open metadata cursor");
        for (;;) {
            MDB_val k = to_val(fmtx::kDeletingCaPrefix);
            MDB_val v{};
            const int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
            if (rc == MDB_NOTFOUND) break;
            if (rc != 0) return v_.fail(rc, "read metadata");
            if (!to_view(k).starts_with(fmtx::kDeletingCaPrefix)) break;
            if (const int drc = mdb_cursor_del(cursor.get(), 0); drc != 0) return v_.fail(drc, "clear ca deletion marker");
        }
        return Ok{};
    }

    /// mdb_put with MDB_APPEND, falling back to an ordinary insert when the
    /// key does not sort after the last one; a key given twice is an error.
    Outcome load(MDB_dbi dbi, std::string_view key, std::string_view value, std::string_view what) {
        MDB_val k = to_val(key);
        MDB_val v = to_val(value);
        int rc = mdb_put(txn_, dbi, &k, &v, MDB_APPEND);
        if (rc == MDB_KEYEXIST) {
            k = to_val(key);
            v = to_val(value);
            rc = mdb_put(txn_, dbi, &k, &v, MDB_NOOVERWRITE);
            if (rc == MDB_KEYEXIST)
                return make_error(Errc::store_error, fmt::format("the fleet's snapshot holds {} '{}' twice", what,
                                                                 key.substr(0, key.find('\0'))));
        }
        if (rc != 0) return v_.fail(rc, fmt::format("write {}", what));
        return Ok{};
    }

    Outcome put_ski(std::string_view ski, std::string_view sn) {
        return v_.put(impl_.ski, ski, sn, 0, "write subject key index");
    }

private:
    Outcome del_if_there(MDB_dbi dbi, std::string_view key, std::string_view what) {
        MDB_val k = to_val(key);
        if (const int rc = mdb_del(txn_, dbi, &k, nullptr); rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, what);
        return Ok{};
    }

    Outcome del_pair(MDB_dbi dbi, std::string_view key, std::string_view value, std::string_view what) {
        MDB_val k = to_val(key);
        MDB_val v = to_val(value);
        if (const int rc = mdb_del(txn_, dbi, &k, &v); rc != 0 && rc != MDB_NOTFOUND) return v_.fail(rc, what);
        return Ok{};
    }

    /// Removes every device of `sn` with its PEM, without log entries (the
    /// fleet logged each) and without touching the counts; returns how many.
    Result<std::uint64_t> remove_devices_of(std::string_view sn) {
        const std::string prefix = ca_prefix(sn);
        CursorOwner cursor;
        if (const int rc = mdb_cursor_open(txn_, impl_.devices, cursor.out()); rc != 0)
            return v_.fail(rc, "open device cursor");
        std::uint64_t removed = 0;
        for (;;) {
            MDB_val k = to_val(prefix);
            MDB_val v{};
            const int rc = mdb_cursor_get(cursor.get(), &k, &v, MDB_SET_RANGE);
            if (rc == MDB_NOTFOUND) break;
            if (rc != 0) return v_.fail(rc, "list devices of ca");
            if (!to_view(k).starts_with(prefix)) break;
            const std::string key(to_view(k));
            if (const int drc = mdb_cursor_del(cursor.get(), 0); drc != 0) return v_.fail(drc, "delete device record");
            if (auto r = v_.delete_pem(key); !r) return r.error();
            ++removed;
        }
        return removed;
    }

    TxnView& v_;
    StoreState& impl_;
    MDB_txn* txn_;
};

namespace {

/// Runs fn with the replica's operations in a write of `store`.
template <class Fn>
Outcome replica_write(Store& store, Fn&& fn) {
    return store.write([&](WriteView& view) -> Outcome {
        auto* txn_view = dynamic_cast<TxnView*>(&view);
        if (txn_view == nullptr) return not_a_txn_view();
        ReplicaTxn txn(*txn_view);
        return fn(txn);
    });
}

template <class Fn>
Outcome replica_read(Store& store, Fn&& fn) {
    return store.read([&](ReadView& view) -> Outcome {
        auto* txn_view = dynamic_cast<TxnView*>(&view);
        if (txn_view == nullptr) return not_a_txn_view();
        ReplicaTxn txn(*txn_view);
        return fn(txn);
    });
}

Outcome apply_change(ReplicaTxn& txn, const FleetChange& change) {
    const ChangeEntry& e = change.entry;
    if (e.device_sn.empty()) {
        if (!change.ca) return txn.remove_ca(e.ca_sn);
        if (change.ca->sn != e.ca_sn)
            return make_error(Errc::invalid_argument,
                              fmt::format("change {} is about ca '{}' but carries ca '{}'", e.seq, e.ca_sn,
                                          change.ca->sn));
        return txn.upsert_ca(*change.ca);
    }
    if (!change.device) return txn.remove_device(e.ca_sn, e.device_sn);
    if (change.device->ca_sn != e.ca_sn || change.device->device_sn != e.device_sn)
        return make_error(Errc::invalid_argument,
                          fmt::format("change {} is about device '{}' of ca '{}' but carries another record", e.seq,
                                      e.device_sn, e.ca_sn));
    return txn.upsert_device(*change.device);
}

/// Takes a snapshot's records into an emptied replica.
class ResyncSink final : public FleetSnapshotSink {
public:
    ResyncSink(ReplicaTxn& txn, const StoreState& state) : txn_(txn), state_(state) {}

    Outcome ca(const CaRecord& rec) override {
        if (auto r = check_ca(rec); !r) return r;
        CaRecord stored = rec;
        stored.device_count = 0;  // counted from the devices that follow
        if (auto r = txn_.load(state_.cas, rec.sn, fmtx::encode_ca(stored), "ca"); !r) return r;
        if (!rec.subject_key_id.empty())
            if (auto r = txn_.put_ski(rec.subject_key_id, rec.sn); !r) return r;
        ++cas;
        return Ok{};
    }

    Outcome device(const DeviceRecord& rec) override {
        if (auto r = check_device(rec); !r) return r;
        const std::string key = device_key_string(rec.ca_sn, rec.device_sn);
        if (auto r = txn_.load(state_.devices, key, fmtx::encode_device(rec), "device"); !r) return r;
        if (!rec.content_pem.empty())
            if (auto r = txn_.load(state_.device_pem, key, rec.content_pem, "device certificate"); !r) return r;
        ++per_ca[rec.ca_sn];
        ++devices;
        return Ok{};
    }

    std::uint64_t cas = 0;
    std::uint64_t devices = 0;
    std::unordered_map<std::string, std::uint64_t> per_ca;

private:
    ReplicaTxn& txn_;
    const StoreState& state_;
};

// Snapshots are sized as their records' encoding; the map gets twice that
// (B-tree pages are rarely full, and the old records stay until commit).
constexpr std::uint64_t kMapHeadroomFactor = 2;
constexpr std::uint64_t kMapGranule = 1ull << 20;
constexpr std::uint64_t kMaxWantedMap = 1ull << 44;

}  // namespace

Result<FollowerPosition> replica_position(Store& store) {
    FollowerPosition pos;
    const Outcome out = replica_read(store, [&](ReplicaTxn& txn) -> Outcome {
        auto p = txn.position();
        if (!p) return p.error();
        pos = std::move(*p);
        return Ok{};
    });
    if (!out) return out.error();
    return pos;
}

Result<std::size_t> replica_apply(Store& store, const std::string& epoch, const std::vector<FleetChange>& changes) {
    std::size_t applied = 0;
    const Outcome out = replica_write(store, [&](ReplicaTxn& txn) -> Outcome {
        applied = 0;  // a rerun after growing the map starts over
        auto pos = txn.position();
        if (!pos) return pos.error();
        if (pos->epoch.empty())
            return make_error(Errc::invalid_argument,
                              fmt::format("the replica has never been loaded from the fleet, so it cannot apply "
                                          "changes of epoch {}; resynchronise",
                                          epoch));
        if (pos->epoch != epoch)
            return make_error(Errc::invalid_argument,
                              fmt::format("the replica follows epoch {}, not {}; resynchronise", pos->epoch, epoch));
        std::uint64_t seq = pos->seq;
        std::uint64_t digest = 0;
        for (const FleetChange& change : changes) {
            if (change.entry.seq <= seq) continue;      // applied already
            if (change.entry.seq != seq + 1) break;     // a gap: never skip
            if (auto r = apply_change(txn, change); !r) return r;
            if (auto r = txn.log_fleet_entry(change.entry); !r) return r;
            seq = change.entry.seq;
            digest = change_digest(change.entry);
            ++applied;
        }
        if (applied == 0) return Ok{};
        return txn.set_position(epoch, seq, digest);
    });
    if (!out) return out.error();
    return applied;
}

Result<FleetHead> replica_resync(Store& store, const std::function<Result<FleetHead>(FleetSnapshotSink&)>& snapshot,
                                 std::uint64_t expected_bytes) {
    StoreState& state = StoreAccess::state(store);
    if (expected_bytes != 0) {
        const std::uint64_t wanted =
            expected_bytes >= kMaxWantedMap / kMapHeadroomFactor
                ? kMaxWantedMap
                : (expected_bytes * kMapHeadroomFactor + kMapGranule - 1) / kMapGranule * kMapGranule;
        // Another process may grow the map meanwhile: a few rounds at most.
        for (int round = 0; round < 4 && state.map_size.load() < wanted; ++round)
            if (auto r = state.remap(state.map_size.load(), true, std::nullopt, wanted); !r) return r.error();
    }

    FleetHead head;
    const Outcome out = replica_write(store, [&](ReplicaTxn& txn) -> Outcome {
        // The queue is read before the records go: its registrations the
        // snapshot lacks are put back.
        auto queued = txn.queued(SIZE_MAX);
        if (!queued) return queued.error();
        if (auto r = txn.clear_records(); !r) return r;

        ResyncSink sink(txn, state);
        auto got = snapshot(sink);
        if (!got) return got.error();
        if (got->epoch.empty()) return make_error(Errc::invalid_argument, "the fleet's snapshot names no epoch");
        head = *got;

        for (const auto& q : *queued) {
            auto held = txn.device_exists(q.key);
            if (!held) return held.error();
            auto ca = txn.ca_exists(q.rec.ca_sn);
            if (!ca) return ca.error();
            // The fleet holds it now, or its CA is gone: it waits no more.
            if (*held || !*ca) {
                if (auto r = txn.queue_drop(q.key); !r) return r;
                continue;
            }
            if (auto r = txn.put_device(q.key, q.rec, 0); !r) return r;
            ++sink.per_ca[q.rec.ca_sn];
            ++sink.devices;
        }
        for (const auto& [sn, n] : sink.per_ca)
            if (auto r = txn.set_ca_device_count(sn, n); !r) return r;
        if (auto r = txn.set_counter(fmtx::kCaCountKey, sink.cas); !r) return r;
        if (auto r = txn.set_counter(fmtx::kDeviceCountKey, sink.devices); !r) return r;

        if (head.last_seq > 0) {
            ChangeEntry entry;
            entry.seq = head.last_seq;
            entry.time_ms = now_ms();
            entry.action.assign(kResyncAction);
            entry.caller = "fleet";
            if (auto r = txn.log_fleet_entry(entry); !r) return r;
        }
        if (auto r = txn.set_counter(fmtx::kNextSeqKey, head.last_seq + 1); !r) return r;
        return txn.set_position(head.epoch, head.last_seq, std::nullopt);
    });
    if (!out) return out.error();
    return head;
}

Outcome replica_queue_registration(WriteView& view, const DeviceRecord& rec, std::uint64_t max_queued) {
    auto* txn_view = dynamic_cast<TxnView*>(&view);
    if (txn_view == nullptr) return not_a_txn_view();
    ReplicaTxn txn(*txn_view);
    if (auto r = check_device(rec); !r) return r;
    auto ca = txn.ca_exists(rec.ca_sn);
    if (!ca) return ca.error();
    if (!*ca) return make_error(Errc::not_found, fmt::format("ca '{}' is not registered", rec.ca_sn));
    auto deleting = view.ca_being_deleted(rec.ca_sn);
    if (!deleting) return deleting.error();
    if (*deleting)
        return make_error(Errc::not_found,
                          fmt::format("ca '{}' is being deleted (DeleteCaCertificate again finishes it)", rec.ca_sn));
    const std::string key = device_key_string(rec.ca_sn, rec.device_sn);
    auto held = txn.device_exists(key);
    if (!held) return held.error();
    if (*held)
        return make_error(Errc::already_exists, fmt::format("device '{}' of ca '{}' is already registered",
                                                            rec.device_sn, rec.ca_sn));
    auto waiting = txn.queue_length();
    if (!waiting) return waiting.error();
    if (*waiting >= max_queued)
        return make_error(Errc::limit_exceeded,
                          fmt::format("{} registrations already wait for the fleet", *waiting));
    if (auto r = txn.upsert_device(rec); !r) return r;
    return txn.queue_put(key, rec);
}

Result<std::vector<DeviceRecord>> replica_queued_registrations(Store& store, std::size_t limit) {
    std::vector<DeviceRecord> out;
    const Outcome done = replica_read(store, [&](ReplicaTxn& txn) -> Outcome {
        auto queued = txn.queued(limit);
        if (!queued) return queued.error();
        out.clear();
        out.reserve(queued->size());
        for (auto& q : *queued) out.push_back(std::move(q.rec));
        return Ok{};
    });
    if (!done) return done.error();
    return out;
}

Outcome replica_drop_registration(Store& store, const std::string& ca_sn, const std::string& device_sn) {
    if (!fmtx::valid_key_serial(ca_sn) || !fmtx::valid_key_serial(device_sn)) return Ok{};
    const std::string key = device_key_string(ca_sn, device_sn);
    return replica_write(store, [&](ReplicaTxn& txn) { return txn.queue_drop(key); });
}

Result<std::uint64_t> replica_queue_length(Store& store) {
    std::uint64_t n = 0;
    const Outcome out = replica_read(store, [&](ReplicaTxn& txn) -> Outcome {
        auto len = txn.queue_length();
        if (!len) return len.error();
        n = *len;
        return Ok{};
    });
    if (!out) return out.error();
    return n;
}

}  // namespace devcert
