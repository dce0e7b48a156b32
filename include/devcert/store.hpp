// The status store: CA and device certificate records with their status in
// one LMDB environment, plus a change log that is both the audit trail and
// the way running brokers learn about changes made by anyone.
//
// Several processes may open the same directory at once (a broker and
// devcertctl); LMDB's lock file coordinates them. Within a process one Store
// is shared by all threads; never open the same directory twice in one
// process (LMDB's locks are per process).
//
// Threading rule. Growing the map (on MDB_MAP_FULL, or adopting a map another
// process grew) needs every transaction of this process closed, so every
// transaction holds a shared hold on the store's remap gate and remapping
// takes it exclusively. The gate prefers the remap: once one waits, new
// transactions wait behind it (StatusReader snapshots excepted, see below),
// and long list walks inside Store::read step out of their snapshot to let
// it through, so a remap waits for at most a bounded stretch of reads and a
// write never waits behind a stream of them. Hence:
//   - A thread holding a StatusReader snapshot (between refresh() and
//     release()) or running inside Store::read() must not call write() or
//     write_batch(): those refuse at once with Errc::store_error rather than
//     risk waiting on themselves. Reads inside reads are fine.
//   - Release StatusReader snapshots when idle: a growth waits for them.
//   - refresh() and release() of one snapshot run on the same thread; a
//     released StatusReader may move to another thread.
//   - Destroy every StatusReader and StoreWriter before their Store.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devcert/certificate.hpp"
#include "devcert/result.hpp"

namespace devcert {

/// Certificate status, stored as one byte; the API speaks "0", "1", "2".
enum class CertStatus : std::uint8_t { inactive = 0, active = 1, revoked = 2 };

/// "0", "1", "2".
const char* status_string(CertStatus s) noexcept;
/// "inactive", "active", "revoked" (for logs).
const char* status_name(CertStatus s) noexcept;

/// How a record came to be.
enum class RegisteredBy : std::uint8_t { connection = 0, api = 1, import = 2 };
const char* registered_by_string(RegisteredBy r) noexcept;  // "connection", "api", "import"

struct CaRecord {
    std::string sn;
    std::string name;                  ///< CaName
    std::string content_pem;           ///< CaContent
    std::string verification_pem;      ///< VerificationContent ("" when imported)
    std::string registration_code;     ///< code consumed by the registration
    CertStatus status = CertStatus::active;
    std::int64_t valid_begin_ms = 0;
    std::int64_t valid_end_ms = 0;
    std::int64_t created_ms = 0;
    std::int64_t updated_ms = 0;
    std::int64_t status_changed_ms = 0;
    RegisteredBy registered_by = RegisteredBy::api;
    std::string subject_key_id;        ///< raw bytes
    Sha256 fingerprint{};
    std::uint64_t device_count = 0;    ///< maintained by the store
};

struct DeviceRecord {
    std::string ca_sn;
    std::string device_sn;
    std::string device_name;           ///< subject CN
    std::string content_pem;
    CertStatus status = CertStatus::active;
    std::int64_t valid_begin_ms = 0;
    std::int64_t valid_end_ms = 0;
    std::int64_t created_ms = 0;
    std::int64_t updated_ms = 0;
    std::int64_t status_changed_ms = 0;
    RegisteredBy registered_by = RegisteredBy::connection;
    Sha256 fingerprint{};
};

/// A new CA record for a certificate validate_ca_certificate accepted:
/// serial, content, validity, key id and fingerprint from `info`, active,
/// every time stamp `now_ms`. Verification and registration code, when
/// there are any, are the caller's to fill in.
CaRecord new_ca_record(const CertificateInfo& info, std::string name, RegisteredBy by, std::int64_t now_ms);
/// A new device record for `info` under `ca_sn`: serial, subject CN,
/// content, validity and fingerprint from `info`, every time stamp `now_ms`.
DeviceRecord new_device_record(const CertificateInfo& info, std::string ca_sn, CertStatus status, RegisteredBy by,
                               std::int64_t now_ms);

/// One entry of the change log. Written in the same transaction as the change.
struct ChangeEntry {
    std::uint64_t seq = 0;             ///< strictly increasing, from 1
    std::int64_t time_ms = 0;
    std::string action;                ///< operation name, e.g. "InactivateDeviceCertificate", "AutoRegister"
    std::string ca_sn;
    std::string device_sn;             ///< "" for CA-level changes
    std::optional<CertStatus> old_status;  ///< nullopt: record did not exist
    std::optional<CertStatus> new_status;  ///< nullopt: record removed
    std::string caller;                ///< "uid=1000(ops)", "connection", "devcertctl uid=0(root)"
};

/// A stable 64-bit digest of a change (seq, time, action, serials, statuses,
/// caller), so a fleet replica can recognise "the change I applied at seq S"
/// after the database behind the fleet changed (see fleet_follower.hpp).
std::uint64_t change_digest(const ChangeEntry& entry) noexcept;

struct Page {
    Page() = default;
    Page(std::uint32_t no, std::uint32_t size) : page_no(no), page_size(size) {}

    std::uint32_t page_no = 1;         ///< from 1
    std::uint32_t page_size = 10;      ///< 1..100 (checked by callers; the store clamps nothing)
    /// A PageResult::next of the same list: continue after its last record
    /// instead of walking to page_no (which costs page_no * page_size steps).
    std::string after;
};

template <class T>
struct PageResult {
    std::vector<T> items;
    std::uint64_t total = 0;           ///< number of matching records
    /// When records follow this page: an opaque, tamper-evident token (URL-
    /// safe text) for Page::after. Bound to this store and this list; records
    /// inserted or deleted meanwhile do not disturb it. Empty at the end.
    std::string next;
};

inline constexpr std::uint64_t kDefaultChangeLogRetention = 1'000'000;

struct StoreOptions {
    std::string path = "/var/lib/mosquitto/devcert";
    std::uint64_t initial_map_size = 64ull << 20;   ///< grows by doubling on MDB_MAP_FULL
    /// Newest change-log entries kept. A value is recorded in the store; an
    /// open without one (devcertctl --db) applies the recorded value, or
    /// kDefaultChangeLogRetention in a store that never had one.
    std::optional<std::uint64_t> change_log_retention;
    bool create = true;                ///< create the directory if missing
    unsigned max_readers = 256;
    /// A fleet member's replica: PostgreSQL keeps the durable copy, so
    /// commits are not flushed to disk (MDB_NOSYNC). They reach the file
    /// through the kernel's page cache, which outlives the process (kill -9
    /// included) but not the system. While unflushed commits may exist the
    /// directory holds a marker naming the running boot (kUnflushedMarker,
    /// the kernel's boot id); closing the store flushes and removes it. An
    /// open under another boot that finds the marker discards the file,
    /// which may be missing pages, and starts empty: the member rebuilds it
    /// from the fleet (Store::discarded() says why). Where no boot id can be
    /// read, commits skip only LMDB's second flush, of the metadata page
    /// (MDB_NOMETASYNC), as a system crash can then only undo the last one.
    bool replica = false;
    /// Where the running boot's id is read (replica only; a test seam).
    std::string boot_id_file = "/proc/sys/kernel/random/boot_id";
};

/// The file in a replica's directory that holds the id of the boot under
/// which commits not yet flushed to disk may exist (StoreOptions::replica).
inline constexpr const char* kUnflushedMarker = "unflushed-since-boot";

/// Result of the hot-path lookups: no allocation, no record decoding.
enum class Lookup : std::uint8_t { found, not_found, error };

struct DeviceStatusView {
    CertStatus status = CertStatus::inactive;
    Sha256 fingerprint{};
};

class Store;
/// The store's internals' way in (src/store only).
struct StoreAccess;

/// A reusable read-only snapshot for one thread (the broker thread). Each
/// refresh() sees every commit made so far by any process. Lookups copy what
/// they return; nothing points into the map after they return.
class StatusReader {
public:
    explicit StatusReader(Store& store);
    ~StatusReader();
    StatusReader(const StatusReader&) = delete;
    StatusReader& operator=(const StatusReader&) = delete;

    /// Starts a fresh snapshot (renews the read transaction). Cheap (~1 µs).
    /// False if the store cannot be read; lookups then report Lookup::error.
    bool refresh() noexcept;
    /// Ends the snapshot (resets the read transaction) so the writer can
    /// reclaim pages. Call when idle.
    void release() noexcept;

    /// Lookups need an open snapshot (Lookup::error otherwise). A serial that
    /// cannot be a key (empty, over 128 characters) is simply not_found.
    Lookup device_status(std::string_view ca_sn, std::string_view device_sn, DeviceStatusView& out) noexcept;
    Lookup ca_status(std::string_view ca_sn, CertStatus& out) noexcept;
    /// Id of the commit the open snapshot sees (0 without one). Compared
    /// with Store::last_commit_id(), it tells whether a newer commit exists.
    std::uint64_t snapshot_commit_id() const noexcept;
    /// Seq of the newest change log entry, 0 if empty.
    Lookup last_change_seq(std::uint64_t& out) noexcept;
    /// Seq of the oldest entry still retained, 0 if empty.
    Lookup first_change_seq(std::uint64_t& out) noexcept;
    /// Calls fn for every entry with seq > after (ascending), up to `limit`.
    Lookup changes_after(std::uint64_t after, std::size_t limit,
                         const std::function<void(const ChangeEntry&)>& fn) noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

/// Read access inside a transaction (read-only or read-write).
class ReadView {
public:
    virtual ~ReadView() = default;
    virtual Result<std::optional<CaRecord>> get_ca(std::string_view sn) = 0;
    virtual Result<std::optional<DeviceRecord>> get_device(std::string_view ca_sn, std::string_view device_sn) = 0;
    /// CAs in Sn order. Lists refuse a Page::after that is not a token of
    /// the same list of this store with Errc::invalid_argument.
    virtual Result<PageResult<CaRecord>> list_cas(Page page) = 0;
    /// All devices in (CaSn, DeviceSn) order.
    virtual Result<PageResult<DeviceRecord>> list_devices(Page page) = 0;
    /// Devices of one CA in DeviceSn order; Errc::not_found for an unknown CA.
    virtual Result<PageResult<DeviceRecord>> list_devices_by_ca(std::string_view ca_sn, Page page) = 0;
    /// Whether a deletion of the CA began and has not finished.
    virtual Result<bool> ca_being_deleted(std::string_view sn) = 0;
    /// Sn of the CA with this Subject Key Identifier (raw bytes); when several
    /// registered CAs share the key, the lowest Sn.
    virtual Result<std::optional<std::string>> ca_by_subject_key_id(std::string_view ski) = 0;
    /// Change log entries with seq > since, ascending, at most `limit`.
    virtual Result<std::vector<ChangeEntry>> changes_after(std::uint64_t since, std::size_t limit) = 0;
    virtual Result<std::uint64_t> ca_count() = 0;
    virtual Result<std::uint64_t> device_count() = 0;
    /// Metadata strings ("instance_id", "register_code", ...); nullopt if unset.
    /// "schema_version" and keys starting "store." belong to the store.
    virtual Result<std::optional<std::string>> meta(std::string_view key) = 0;
};

/// Mutations inside a write transaction. Every status change or removal
/// appends to the change log in the same transaction, with `caller`.
class WriteView : public ReadView {
public:
    /// Errc::already_exists if the Sn is taken. Maintains the SKI index.
    /// rec.device_count is ignored (a new CA has no devices). Logged with
    /// old_status = nullopt.
    virtual Outcome insert_ca(const CaRecord& rec, std::string_view action, std::string_view caller) = 0;
    /// Returns the previous status. Errc::not_found if absent.
    virtual Result<CertStatus> set_ca_status(std::string_view sn, CertStatus status, std::string_view action,
                                             std::string_view caller) = 0;
    /// Removes the CA and every device under it (one log entry per record
    /// removed, the CA's last). Returns the number of devices removed. For
    /// a CA with many devices, do it in several commits: begin_ca_deletion,
    /// delete_ca_devices until it returns fewer than asked, then delete_ca.
    virtual Result<std::uint64_t> delete_ca(std::string_view sn, std::string_view action, std::string_view caller) = 0;
    /// Marks the CA as being deleted (recorded, so it survives a crash) and
    /// inactivates it (logged) unless it is inactive or revoked already:
    /// its devices are refused from this commit on. Until delete_ca removes
    /// it, it cannot be activated nor get devices (Errc::not_found, "being
    /// deleted"). Idempotent; Errc::not_found if absent.
    virtual Outcome begin_ca_deletion(std::string_view sn, std::string_view action, std::string_view caller) = 0;
    /// Removes up to `limit` devices of the CA (one log entry each) and
    /// returns how many; Errc::not_found if the CA is absent.
    virtual Result<std::uint64_t> delete_ca_devices(std::string_view sn, std::uint64_t limit, std::string_view action,
                                                    std::string_view caller) = 0;

    /// Errc::already_exists if (CaSn, DeviceSn) is taken; Errc::not_found if
    /// the CA is not registered. Logged with old_status = nullopt.
    virtual Outcome insert_device(const DeviceRecord& rec, std::string_view action, std::string_view caller) = 0;
    /// Returns the previous status. Errc::not_found if absent; Errc::revoked
    /// when the record is revoked and `status` is not revoked (revoked is
    /// terminal). Setting the current status again changes nothing and logs
    /// nothing.
    virtual Result<CertStatus> set_device_status(std::string_view ca_sn, std::string_view device_sn, CertStatus status,
                                                 std::string_view action, std::string_view caller) = 0;
    /// Errc::not_found if absent. Removing a revoked record is the caller's
    /// policy to refuse, not the store's.
    virtual Outcome delete_device(std::string_view ca_sn, std::string_view device_sn, std::string_view action,
                                  std::string_view caller) = 0;
    /// Errc::invalid_argument for the store's own keys (see meta()).
    virtual Outcome set_meta(std::string_view key, std::string_view value) = 0;
};

class Store {
public:
    /// Opens (creating if allowed) the environment. Errors name the path and
    /// the reason, e.g. "cannot open status store '/x': Permission denied",
    /// "status store '/x' has schema version 7, this build reads 1".
    static Result<std::unique_ptr<Store>> open(const StoreOptions& options);
    ~Store();
    Store(const Store&) = delete;
    Store& operator=(const Store&) = delete;

    const std::string& path() const noexcept;

    /// Runs fn in a read-only transaction.
    Outcome read(const std::function<Outcome(ReadView&)>& fn);

    /// Runs fn in a write transaction and commits durably (fsync) if fn
    /// returns ok; aborts otherwise and returns fn's error. If the map is full
    /// the transaction is aborted, the map grown, and fn run again from
    /// scratch, so fn must only act through the view. Thread-safe: writers
    /// are serialised. Exceptions thrown by fn abort and become errors. See
    /// the threading rule at the top of this header.
    Outcome write(const std::function<Outcome(WriteView&)>& fn);

    /// Like write(), for group commit: runs every fn in its own nested
    /// transaction inside one outer transaction with a single durable commit.
    /// A fn that fails has its changes undone and its error reported in its
    /// slot; the others still commit. Returns the commit's own error, if any
    /// (then every slot reports it).
    Outcome write_batch(const std::vector<std::function<Outcome(WriteView&)>>& fns, std::vector<Outcome>& results);

    /// The change-log retention in force (see StoreOptions).
    std::uint64_t change_log_retention() const noexcept;

    /// Cursor steps taken by list walks so far (a test of their cost).
    std::uint64_t records_walked() const noexcept;

    /// Current map size in bytes (grows on demand).
    std::uint64_t map_size() const noexcept;

    /// Why open discarded the replica's file and started empty (commits left
    /// unflushed by another boot, see StoreOptions::replica); empty if it
    /// did not.
    const std::string& discarded() const noexcept;

    /// Id of the newest committed write transaction, by any process. Reads
    /// LMDB's meta page without a transaction (tens of nanoseconds), so a
    /// caller polling for changes can skip opening a snapshot when it has
    /// not moved. 0 if it cannot be read. The meta page is written a moment
    /// before new snapshots can see the commit: compare it with
    /// StatusReader::snapshot_commit_id() of the snapshot actually read,
    /// never with an id read before that snapshot.
    std::uint64_t last_commit_id() const noexcept;

private:
    friend class StatusReader;
    friend struct StoreAccess;
    struct Impl;
    explicit Store(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// Current wall-clock time in Unix milliseconds.
std::int64_t now_ms() noexcept;

}  // namespace devcert
