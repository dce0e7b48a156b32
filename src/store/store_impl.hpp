// The store's internals shared by its translation units: the environment,
// the remap gate and the transaction views.
#pragma once

#include <fmt/format.h>
#include <lmdb.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "devcert/store.hpp"
#include "record_format.hpp"

namespace devcert {

struct EnvCloser {
    void operator()(MDB_env* env) const noexcept {
        if (env) mdb_env_close(env);
    }
};
using EnvPtr = std::unique_ptr<MDB_env, EnvCloser>;

// Small helpers of the transaction code (txn_view.cpp, replica.cpp).

inline MDB_val to_val(std::string_view s) noexcept { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view to_view(const MDB_val& v) noexcept {
    return {static_cast<const char*>(v.mv_data), v.mv_size};
}

/// Key of a device record: CaSn, NUL, DeviceSn (so a CA's devices are one
/// key range, in DeviceSn order).
inline std::string device_key_string(std::string_view ca_sn, std::string_view device_sn) {
    std::string key;
    key.reserve(ca_sn.size() + 1 + device_sn.size());
    key.append(ca_sn).push_back('\0');
    key.append(device_sn);
    return key;
}

/// The key prefix of every device of a CA.
inline std::string ca_prefix(std::string_view ca_sn) {
    std::string prefix(ca_sn);
    prefix.push_back('\0');
    return prefix;
}

/// Meta key marking a CA whose deletion began.
inline std::string deleting_key(std::string_view sn) {
    std::string key(store_format::kDeletingCaPrefix);
    key.append(sn);
    return key;
}

inline bool status_allowed(CertStatus s) noexcept {
    return store_format::valid_status_byte(static_cast<std::uint8_t>(s));
}

inline Error bad_serial(std::string_view what, std::string_view sn) {
    return make_error(Errc::invalid_argument,
                      fmt::format("{} '{}' is not a usable key (1 to {} characters, no NUL)", what,
                                  sn.substr(0, store_format::kMaxSerial), store_format::kMaxSerial));
}

inline Error corrupt(std::string_view what, std::string_view key) {
    return make_error(Errc::store_error, fmt::format("{} record '{}' is unreadable (unknown layout or truncated)",
                                                     what, key));
}

/// Owns a write or read transaction until commit; aborts otherwise.
class TxnOwner {
public:
    explicit TxnOwner(MDB_txn* txn = nullptr) noexcept : txn_(txn) {}
    TxnOwner(const TxnOwner&) = delete;
    TxnOwner& operator=(const TxnOwner&) = delete;
    ~TxnOwner() {
        if (txn_) mdb_txn_abort(txn_);
    }
    MDB_txn* get() const noexcept { return txn_; }
    /// Hands the handle over (to mdb_txn_commit, which frees it either way).
    MDB_txn* release() noexcept { return std::exchange(txn_, nullptr); }

private:
    MDB_txn* txn_;
};

class CursorOwner {
public:
    CursorOwner() noexcept = default;
    CursorOwner(const CursorOwner&) = delete;
    CursorOwner& operator=(const CursorOwner&) = delete;
    ~CursorOwner() {
        if (cursor_) mdb_cursor_close(cursor_);
    }
    MDB_cursor** out() noexcept { return &cursor_; }
    MDB_cursor* get() const noexcept { return cursor_; }

private:
    MDB_cursor* cursor_ = nullptr;
};

/// What happened to LMDB inside a transaction body, whatever the body made
/// of the errors it was given.
struct TxnState {
    bool map_full = false;
    /// A read that stepped out of its snapshot could not resume it: another
    /// process grew the map. Store::read adopts the map and runs fn again.
    bool map_resized = false;
};

/// The remap gate: shared by every transaction of the process, exclusive
/// for a remap. Unlike std::shared_mutex (glibc prefers readers, so a
/// stream of overlapping reads starves a remap for as long as it lasts), a
/// waiting remap stops ordinary new holders from entering. Priority holders
/// (the broker thread's snapshots: a microsecond each, and the broker must
/// not queue behind a remap that itself waits for slow readers) enter
/// whenever no remap is actually running.
class RemapGate {
public:
    void lock_shared(bool priority) {
        std::unique_lock lock(mutex_);
        changed_.wait(lock, [&] { return !exclusive_ && (priority || waiting_ == 0); });
        ++shared_;
    }
    void unlock_shared() {
        std::lock_guard lock(mutex_);
        if (--shared_ == 0 && waiting_ != 0) changed_.notify_all();
    }
    /// Takes the gate exclusively; with a limit, gives up when it passes.
    bool lock(std::optional<std::chrono::microseconds> limit = std::nullopt) {
        std::unique_lock lock(mutex_);
        ++waiting_;
        remap_waiting_.store(true, std::memory_order_relaxed);
        const auto free = [&] { return shared_ == 0 && !exclusive_; };
        const bool got = limit ? changed_.wait_for(lock, *limit, free) : (changed_.wait(lock, free), true);
        --waiting_;
        remap_waiting_.store(waiting_ != 0, std::memory_order_relaxed);
        if (got) {
            exclusive_ = true;
        } else if (waiting_ == 0) {
            changed_.notify_all();  // holders held back for this attempt may enter
        }
        return got;
    }
    void unlock() {
        std::lock_guard lock(mutex_);
        exclusive_ = false;
        changed_.notify_all();
    }
    /// Whether a remap waits for the holders to leave (a hint, read without
    /// the lock: a walk checks it every few records).
    bool remap_waiting() const noexcept { return remap_waiting_.load(std::memory_order_relaxed); }

private:
    std::mutex mutex_;
    std::condition_variable changed_;
    unsigned shared_ = 0;   // guarded by mutex_
    unsigned waiting_ = 0;  // remaps waiting; guarded by mutex_
    bool exclusive_ = false;
    std::atomic<bool> remap_waiting_{false};
};

struct StoreState {
    StoreOptions options;
    std::uint64_t change_log_retention = kDefaultChangeLogRetention;  ///< resolved at open
    EnvPtr env;
    MDB_dbi cas = 0;
    MDB_dbi devices = 0;
    MDB_dbi device_pem = 0;
    MDB_dbi ski = 0;
    MDB_dbi changes = 0;
    MDB_dbi meta = 0;
    /// A fleet replica's registration queue: device key -> order + record,
    /// and order -> device key (see replica.hpp).
    MDB_dbi queue = 0;
    MDB_dbi queue_order = 0;

    // Remapping (mdb_env_set_mapsize) is only safe while no transaction of
    // this process is open: every transaction holds this gate shared,
    // remapping holds it exclusive.
    RemapGate remap_gate;
    // Serialises this process's writers before they queue on LMDB's own
    // cross-process writer lock, so at most one of them remaps at a time.
    std::mutex writer;
    std::atomic<std::uint64_t> map_size{0};
    std::atomic<std::uint64_t> records_walked{0};
    /// Key of the page tokens' MAC, the store's own (meta), read at open.
    std::string page_token_key;
    /// A replica's unflushed-commits marker, while commits skip the flush
    /// (empty otherwise); flushed and removed when the store closes.
    std::string unflushed_marker;
    std::string discarded;  ///< see Store::discarded()

    Error lmdb_error(int rc, std::string_view what) const;

    /// Runs body in a fresh top-level write transaction and commits it;
    /// adopts or grows the map and runs body again when LMDB asks for it.
    Outcome run_write(const std::function<Outcome(MDB_txn*, TxnState&)>& body);

    /// Adopts the map size another process recorded (and, if `grow`, at
    /// least doubles it, or grows it to `at_least` if that is more) unless
    /// another thread already remapped since the caller saw `seen_size`.
    /// The calling thread must hold no transaction. With a `wait_limit`,
    /// gives up (Errc::store_error) when the gate is not free by then.
    Outcome remap(std::uint64_t seen_size, bool grow,
                  std::optional<std::chrono::microseconds> wait_limit = std::nullopt, std::uint64_t at_least = 0);
};

// Store::Impl is private to Store; the internals work on this base.
struct Store::Impl : StoreState {};

/// How the store's other translation units (replica.cpp) reach the state
/// behind a Store.
struct StoreAccess {
    static StoreState& state(Store& store) noexcept { return *store.impl_; }
};

/// A shared hold on the remap gate, re-entrant within one thread (a body
/// running inside Store::read may use a StatusReader, and so on), so that
/// the gate is never locked twice by one thread.
class SharedHold {
public:
    /// `priority`: see RemapGate (the broker thread's snapshots).
    explicit SharedHold(StoreState& impl, bool priority = false);
    ~SharedHold();
    SharedHold(const SharedHold&) = delete;
    SharedHold& operator=(const SharedHold&) = delete;

    /// Whether the calling thread holds the gate of `impl` at all.
    static bool held_by_this_thread(const StoreState& impl) noexcept;

    /// Lets a waiting remap through and takes the gate again, if this is
    /// the thread's only hold (its transaction reset by the caller first).
    /// False, doing nothing, when the thread holds the gate more deeply.
    bool let_remap_through();
    /// Whether this is the calling thread's only hold on the gate.
    bool only_hold() const noexcept;

private:
    StoreState& impl_;
    bool tracked_;
    bool priority_;
};

/// ReadView / WriteView over one LMDB transaction (top-level or nested).
class TxnView final : public WriteView {
public:
    TxnView(StoreState& impl, MDB_txn* txn, TxnState& state) noexcept : impl_(impl), txn_(txn), state_(state) {}

    /// For Store::read's top-level read-only transaction: long walks may
    /// reset it, let a waiting remap through `hold`, and renew it.
    void allow_pauses(SharedHold& hold) noexcept { pausable_ = &hold; }

    Result<std::optional<CaRecord>> get_ca(std::string_view sn) override;
    Result<std::optional<DeviceRecord>> get_device(std::string_view ca_sn, std::string_view device_sn) override;
    Result<PageResult<CaRecord>> list_cas(Page page) override;
    Result<PageResult<DeviceRecord>> list_devices(Page page) override;
    Result<PageResult<DeviceRecord>> list_devices_by_ca(std::string_view ca_sn, Page page) override;
    Result<bool> ca_being_deleted(std::string_view sn) override;
    Result<std::optional<std::string>> ca_by_subject_key_id(std::string_view ski) override;
    Result<std::vector<ChangeEntry>> changes_after(std::uint64_t since, std::size_t limit) override;
    Result<std::uint64_t> ca_count() override;
    Result<std::uint64_t> device_count() override;
    Result<std::optional<std::string>> meta(std::string_view key) override;

    Outcome insert_ca(const CaRecord& rec, std::string_view action, std::string_view caller) override;
    Result<CertStatus> set_ca_status(std::string_view sn, CertStatus status, std::string_view action,
                                     std::string_view caller) override;
    Result<std::uint64_t> delete_ca(std::string_view sn, std::string_view action, std::string_view caller) override;
    Outcome begin_ca_deletion(std::string_view sn, std::string_view action, std::string_view caller) override;
    Result<std::uint64_t> delete_ca_devices(std::string_view sn, std::uint64_t limit, std::string_view action,
                                            std::string_view caller) override;
    Outcome insert_device(const DeviceRecord& rec, std::string_view action, std::string_view caller) override;
    Result<CertStatus> set_device_status(std::string_view ca_sn, std::string_view device_sn, CertStatus status,
                                         std::string_view action, std::string_view caller) override;
    Outcome delete_device(std::string_view ca_sn, std::string_view device_sn, std::string_view action,
                          std::string_view caller) override;
    Outcome set_meta(std::string_view key, std::string_view value) override;

private:
    // The fleet replica's operations (replica.cpp) work with the helpers below.
    friend class ReplicaTxn;

    Error fail(int rc, std::string_view what);
    /// mdb_get: 0 found, MDB_NOTFOUND, or an error already turned into `err`.
    int get(MDB_dbi dbi, std::string_view key, MDB_val& value);
    Outcome put(MDB_dbi dbi, std::string_view key, std::string_view value, unsigned flags, std::string_view what);
    Outcome del(MDB_dbi dbi, std::string_view key, const std::string_view* value, std::string_view what);
    Result<std::uint64_t> counter(const char* key);
    Outcome add_to_counter(const char* key, std::int64_t delta);
    Outcome add_to_ca_device_count(std::string_view ca_sn, std::int64_t delta);
    Outcome log_change(std::string_view action, std::string_view ca_sn, std::string_view device_sn,
                       std::optional<CertStatus> old_status, std::optional<CertStatus> new_status,
                       std::string_view caller, std::int64_t time_ms);
    /// Writes `entry` under entry.seq (with the mdb_put `flags`) and trims
    /// the log to the retention. Leaves the next seq alone.
    Outcome put_change(const ChangeEntry& entry, unsigned flags);
    Outcome patch_status(MDB_dbi dbi, std::string_view key, const MDB_val& current, std::size_t header_size,
                         CertStatus status, std::int64_t time_ms, std::string_view what);
    /// A device record about to be changed: its key and its raw value, whose
    /// header has been checked.
    struct DeviceSlot {
        char key[store_format::kMaxDeviceKey];
        std::size_t key_len = 0;
        MDB_val value{};
        std::string_view key_view() const noexcept { return {key, key_len}; }
        CertStatus status() const noexcept;
    };
    /// Finds (CaSn, DeviceSn) for a mutation; Errc::not_found when absent.
    Outcome find_device(std::string_view ca_sn, std::string_view device_sn, DeviceSlot& slot);
    /// Fills rec.content_pem from the PEM database.
    Outcome load_device_pem(std::string_view key, DeviceRecord& rec);
    Outcome delete_pem(std::string_view key);
    /// Removes up to `limit` devices of `sn` with their log entries; does
    /// not touch the counters (the caller does, once).
    Result<std::uint64_t> remove_devices_of(std::string_view sn, std::uint64_t limit, std::string_view action,
                                            std::string_view caller, std::int64_t now);
    /// Errc::not_found naming the deletion, if `sn` is being deleted.
    Outcome refuse_if_being_deleted(std::string_view sn);
    template <class T, class Decode>
    Result<PageResult<T>> page_of(MDB_dbi dbi, std::string_view list, std::string_view prefix, std::uint64_t total,
                                  const Page& page, Decode&& decode);
    /// When a remap waits and this read may pause: steps out of the snapshot
    /// and back in, with `cursor` at the first key >= the one it was on
    /// (k, v updated). Returns an LMDB code (0: carry on).
    int pause_for_remap(MDB_cursor* cursor, MDB_val& k, MDB_val& v);

    StoreState& impl_;
    MDB_txn* txn_;
    TxnState& state_;
    SharedHold* pausable_ = nullptr;
};

}  // namespace devcert
