// FleetWriteView: the store's WriteView over one PostgreSQL transaction,
// with the observable semantics of the LMDB TxnView (src/store/txn_view.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devcert/fleet.hpp"
#include "devcert/store.hpp"
#include "pg.hpp"

namespace devcert::fleet_detail {

/// How long an optimistic write waits for a record's lock, and at flush for
/// the head row (milliseconds; see Fleet::Impl::begin_write).
inline constexpr int kOptimisticLockWaitMs = 50;
inline constexpr int kOptimisticHeadWaitMs = 200;

/// What happened to PostgreSQL inside a transaction body, whatever the body
/// made of the errors it was given (a failed statement aborts the whole
/// transaction, so a body that swallows an error must not commit).
struct TxnState {
    pg::Failure failure = pg::Failure::none;
    std::optional<Error> first_error;
    /// The first error was a statement queued ahead of the one the body ran
    /// (pg::Conn::defer): a savepoint, its release, the head's lock.
    bool queued_failed = false;
    /// The transaction takes the head row's lock last and waits for every
    /// lock briefly (see Fleet::Impl::begin_write).
    bool optimistic = false;
    /// The first error came while optimistic.
    bool failed_optimistic = false;
    /// The server answered one of the transaction's statements. BEGIN goes
    /// with the first (see Fleet::Impl::begin_write): a connection lost
    /// before any answer may have been found dead by it.
    bool answered = false;
    bool failed() const noexcept { return failure != pg::Failure::none; }
    /// Records a statement's failure, unless an earlier one is recorded.
    /// `queued`: it was a statement queued ahead (pg::Conn::deferred_failed()).
    void note(pg::Failure kind, const Error& error, bool queued) {
        if (failed()) return;
        failure = kind;
        first_error = error;
        queued_failed = queued;
        failed_optimistic = optimistic;
    }
    /// The transaction is worth running again (pessimistic from then on): a
    /// deadlock or serialisation failure, or a lock an optimistic
    /// transaction did not get in its brief wait.
    bool retryable() const noexcept {
        return failure == pg::Failure::retry || (failure == pg::Failure::busy && failed_optimistic);
    }
};

/// Change entries are numbered when the transaction is about to commit (or
/// when the body reads the log): the head row's lock, which orders all
/// writers of the instance, is then held for as short a time as possible.
class FleetWriteView final : public WriteView {
public:
    /// In a write transaction (`writing`), a device record read is locked
    /// (FOR UPDATE): a handler reads the record it is about to change, and
    /// the change then needs no second statement to lock and read it again.
    FleetWriteView(pg::Conn& conn, std::int64_t instance, TxnState& state, bool writing) noexcept
        : conn_(conn), instance_(std::to_string(instance)), state_(state), writing_(writing) {}

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

    /// Where a savepoint was taken, to undo the bookkeeping with it.
    using CountDeltas = std::map<std::string, std::int64_t, std::less<>>;
    struct Mark {
        std::size_t pending = 0;
        std::size_t numbered = 0;
        std::int64_t ca_delta = 0;
        std::int64_t device_delta = 0;
        CountDeltas ca_devices;
    };
    Mark mark() const { return {pending_.size(), numbered_.size(), ca_delta_, device_delta_, ca_device_delta_}; }
    /// After ROLLBACK TO SAVEPOINT taken at `m`.
    void rollback_to(const Mark& m);
    /// Queues (pg::Conn::defer) the head row's update, which takes the next
    /// seqs, and the pending entries' rows, which read theirs from the head
    /// row in the transaction: both go with the next exec() (the commit, or
    /// a read of the log), whose answer numbers the entries.
    void flush();
    /// Every entry numbered in this transaction, in seq order.
    std::vector<FleetChange> take_changes() { return std::move(numbered_); }
    /// Whether flush() numbered any change (its seqs come with the next exec()).
    bool has_changes() const noexcept { return !numbered_.empty(); }
    /// How many changes flush() numbered.
    std::size_t change_count() const noexcept { return numbered_.size(); }

private:
    Result<pg::Rows> exec(std::string_view what, const char* sql, const std::vector<pg::Param>& params);
    Result<std::pair<std::uint64_t, std::uint64_t>> stored_counts();
    void log(std::string_view action, std::string_view ca_sn, std::string_view device_sn,
             std::optional<CertStatus> old_status, std::optional<CertStatus> new_status, std::string_view caller,
             std::int64_t time_ms, std::optional<CaRecord> ca, std::optional<DeviceRecord> device);
    Result<std::optional<CaRecord>> load_ca(std::string_view sn, bool lock);
    Outcome refuse_if_being_deleted(std::string_view sn);
    Outcome clear_deletion_mark(std::string_view sn);
    Result<std::optional<DeviceRecord>> load_device(std::string_view ca_sn, std::string_view device_sn, bool lock);

    pg::Conn& conn_;
    std::string instance_;
    TxnState& state_;
    bool writing_;
    /// The device record the last statement read and locked, until the next
    /// statement: nothing can change it in between (this transaction ran
    /// nothing, and no other can write a locked row).
    std::optional<DeviceRecord> locked_device_;
    std::vector<FleetChange> pending_;
    std::vector<FleetChange> numbered_;
    std::int64_t ca_delta_ = 0;
    std::int64_t device_delta_ = 0;
    /// Devices added or removed per CA, written to the CA rows at flush:
    /// updating a CA row once per device would leave a chain of row versions
    /// that every later update in the transaction walks (quadratic).
    CountDeltas ca_device_delta_;
    void adjust(CaRecord& rec) const;
};

/// The record carried by a change row (jsonb), both ways.
std::string encode_ca_record(const CaRecord& rec);
std::string encode_device_record(const DeviceRecord& rec);
bool decode_ca_record(std::string_view json, std::string_view sn, CaRecord& out);
bool decode_device_record(std::string_view json, std::string_view ca_sn, std::string_view device_sn,
                          DeviceRecord& out);

/// Column lists and row decoders shared by the view and the snapshot.
extern const char* const kCaColumns;
extern const char* const kDeviceColumns;
extern const char* const kChangeColumns;
CaRecord ca_from_row(const pg::Rows& rows, int row, int first_col = 0);
DeviceRecord device_from_row(const pg::Rows& rows, int row, int first_col = 0);
/// A change row (kChangeColumns from first_col); false if its record is
/// unreadable, or absent from a change that leaves one while
/// `record_required` (a follower would take it for a removal). Entries moved
/// in by MigrateToFleet have none: they are all at or below trimmed_through,
/// so no follower applies them, but they are listed.
bool change_from_row(const pg::Rows& rows, int row, int first_col, FleetChange& out, bool record_required = true);

}  // namespace devcert::fleet_detail
