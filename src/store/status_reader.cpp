// The connection path's view of the store: one reusable read transaction,
// renewed per snapshot, and lookups that read fixed header offsets without
// decoding records or allocating.
#include <chrono>
#include <optional>

#include "record_format.hpp"
#include "store_impl.hpp"

namespace devcert {

namespace fmtx = store_format;

namespace {

// The broker thread adopts another process's growth itself, but waits at
// most kRemapWaitLimit, kRemapTries times, for this process's other
// transactions to end (reads step out of long walks for it; writes commit
// in bounded batches). If they still have not, this check fails as a store
// error and the next one tries again.
constexpr std::chrono::microseconds kRemapWaitLimit{4'000};
constexpr int kRemapTries = 3;

}  // namespace

struct StatusReader::Impl {
    explicit Impl(StoreState& s) : store(s) {}

    StoreState& store;
    MDB_txn* txn = nullptr;           // kept across snapshots (reset, then renewed)
    MDB_cursor* changes = nullptr;    // read-only cursor, renewed per snapshot
    bool cursor_current = false;
    std::optional<SharedHold> hold;   // engaged exactly while a snapshot is open
    ChangeEntry scratch;              // reused so tailing does not reallocate per entry

    void drop_txn() noexcept {
        if (changes) {
            mdb_cursor_close(changes);
            changes = nullptr;
        }
        if (txn) {
            mdb_txn_abort(txn);
            txn = nullptr;
        }
        cursor_current = false;
    }

    MDB_cursor* changes_cursor() noexcept {
        if (cursor_current) return changes;
        const int rc = changes ? mdb_cursor_renew(txn, changes) : mdb_cursor_open(txn, store.changes, &changes);
        if (rc != 0) return nullptr;
        cursor_current = true;
        return changes;
    }
};

StatusReader::StatusReader(Store& store) : impl_(std::make_unique<Impl>(*store.impl_)) {}

StatusReader::~StatusReader() {
    release();
    impl_->drop_txn();
}

std::uint64_t StatusReader::snapshot_commit_id() const noexcept {
    const auto& s = *impl_;
    return s.hold && s.txn ? static_cast<std::uint64_t>(mdb_txn_id(s.txn)) : 0;
}

bool StatusReader::refresh() noexcept {
    auto& s = *impl_;
    if (s.hold) {
        mdb_txn_reset(s.txn);
        s.cursor_current = false;
    }
    // Bounded: each MDB_MAP_RESIZED adopts a larger map; it can only recur
    // if another process keeps growing the file in between.
    int remap_failures = 0;
    for (int attempt = 0; attempt < 8; ++attempt) {
        const std::uint64_t seen = s.store.map_size.load();
        try {
            // Priority: a snapshot of the broker thread lasts microseconds, so
            // it need not queue behind a remap that waits for slow readers.
            if (!s.hold) s.hold.emplace(s.store, true);
        } catch (...) {
            return false;  // std::system_error from the gate: nothing is held
        }
        const int rc = s.txn ? mdb_txn_renew(s.txn) : mdb_txn_begin(s.store.env.get(), nullptr, MDB_RDONLY, &s.txn);
        if (rc == 0) return true;
        // A failed renew or begin leaves no usable snapshot: drop the handle
        // (the next refresh begins a fresh one) and, if another process grew
        // the map, adopt its size before trying again.
        s.drop_txn();
        s.hold.reset();
        if (rc != MDB_MAP_RESIZED) return false;
        try {
            // A remap that timed out or failed is tried again, a bounded
            // number of times: the gate may be free a moment later.
            if (!s.store.remap(seen, false, kRemapWaitLimit) && ++remap_failures >= kRemapTries) return false;
        } catch (...) {
            return false;
        }
    }
    return false;
}

void StatusReader::release() noexcept {
    auto& s = *impl_;
    if (!s.hold) return;
    mdb_txn_reset(s.txn);
    s.cursor_current = false;
    s.hold.reset();
}

Lookup StatusReader::device_status(std::string_view ca_sn, std::string_view device_sn,
                                   DeviceStatusView& out) noexcept {
    auto& s = *impl_;
    if (!s.hold) return Lookup::error;
    char key[fmtx::kMaxDeviceKey];
    const std::size_t n = fmtx::device_key(ca_sn, device_sn, key);
    if (n == 0) return Lookup::not_found;  // no such key can have been stored
    MDB_val k{n, key};
    MDB_val v{};
    const int rc = mdb_get(s.txn, s.store.devices, &k, &v);
    if (rc == MDB_NOTFOUND) return Lookup::not_found;
    if (rc != 0 || !fmtx::has_header(v.mv_data, v.mv_size, fmtx::kDeviceMagic, fmtx::kDeviceHeaderSize))
        return Lookup::error;
    const auto* h = static_cast<const std::uint8_t*>(v.mv_data);
    out.status = static_cast<CertStatus>(h[fmtx::kStatusOffset]);
    std::memcpy(out.fingerprint.data(), h + fmtx::kDeviceFingerprintOffset, out.fingerprint.size());
    return Lookup::found;
}

Lookup StatusReader::ca_status(std::string_view ca_sn, CertStatus& out) noexcept {
    auto& s = *impl_;
    if (!s.hold) return Lookup::error;
    if (!fmtx::valid_key_serial(ca_sn)) return Lookup::not_found;
    MDB_val k{ca_sn.size(), const_cast<char*>(ca_sn.data())};
    MDB_val v{};
    const int rc = mdb_get(s.txn, s.store.cas, &k, &v);
    if (rc == MDB_NOTFOUND) return Lookup::not_found;
    if (rc != 0 || !fmtx::has_header(v.mv_data, v.mv_size, fmtx::kCaMagic, fmtx::kCaHeaderSize))
        return Lookup::error;
    out = static_cast<CertStatus>(static_cast<const std::uint8_t*>(v.mv_data)[fmtx::kStatusOffset]);
    return Lookup::found;
}

namespace {

Lookup edge_seq(MDB_cursor* cursor, MDB_cursor_op op, std::uint64_t& out) noexcept {
    if (!cursor) return Lookup::error;
    MDB_val k{}, v{};
    const int rc = mdb_cursor_get(cursor, &k, &v, op);
    if (rc == MDB_NOTFOUND) {
        out = 0;
        return Lookup::found;
    }
    if (rc != 0) return Lookup::error;
    out = fmtx::seq_from_key(k.mv_data, k.mv_size);
    return Lookup::found;
}

}  // namespace

Lookup StatusReader::last_change_seq(std::uint64_t& out) noexcept {
    if (!impl_->hold) return Lookup::error;
    return edge_seq(impl_->changes_cursor(), MDB_LAST, out);
}

Lookup StatusReader::first_change_seq(std::uint64_t& out) noexcept {
    if (!impl_->hold) return Lookup::error;
    return edge_seq(impl_->changes_cursor(), MDB_FIRST, out);
}

Lookup StatusReader::changes_after(std::uint64_t after, std::size_t limit,
                                   const std::function<void(const ChangeEntry&)>& fn) noexcept {
    auto& s = *impl_;
    if (!s.hold) return Lookup::error;
    if (limit == 0 || after == UINT64_MAX) return Lookup::found;
    MDB_cursor* cursor = s.changes_cursor();
    if (!cursor) return Lookup::error;
    std::uint8_t key[8];
    fmtx::seq_key(after + 1, key);
    MDB_val k{8, key};
    MDB_val v{};
    int rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_RANGE);
    try {
        for (std::size_t delivered = 0; rc == 0 && delivered < limit; ++delivered) {
            const std::uint64_t seq = fmtx::seq_from_key(k.mv_data, k.mv_size);
            if (!fmtx::decode_change({static_cast<const char*>(v.mv_data), v.mv_size}, seq, s.scratch))
                return Lookup::error;
            fn(s.scratch);
            rc = mdb_cursor_get(cursor, &k, &v, MDB_NEXT);
        }
    } catch (...) {
        return Lookup::error;
    }
    return rc == 0 || rc == MDB_NOTFOUND ? Lookup::found : Lookup::error;
}

}  // namespace devcert
