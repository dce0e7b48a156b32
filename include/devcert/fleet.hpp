// Fleet mode: several brokers share one truth in PostgreSQL. The fleet
// holds the CA and device records of one MqttInstanceId and an ordered
// change log; every broker keeps its LMDB store as a local replica and
// applies the log in sequence order (see fleet_follower.hpp).
//
// One Fleet is one libpq connection bound to one instance id. It is not
// thread-safe: give each thread its own, or serialise calls.
//
// Sequence numbers come from a one-row-per-instance head counter taken
// (UPDATE ... SET last_seq = last_seq + n RETURNING) inside the same
// transaction as the change. The row lock it takes is held until commit, so
// sequence numbers are gap-free and become visible in order: a follower that
// has read seq S can never later find a committed S' < S it has not seen,
// which a bigserial cannot promise. See docs/fleet.md, "Schema".
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devcert/result.hpp"
#include "devcert/store.hpp"

namespace devcert {

/// Version of the fleet schema this build creates and reads.
inline constexpr unsigned kFleetSchemaVersion = 1;

struct FleetOptions {
    /// A libpq connection string ("host=db dbname=devcert"), a URI
    /// ("postgresql://db/devcert") or a service name from pg_service.conf
    /// ("devcert"). Credentials come from the usual libpq places.
    std::string conninfo;
    std::string instance_id;
    /// Runs of a transaction body after a serialisation failure or deadlock.
    unsigned max_attempts = 5;
    /// Seconds to wait for a connection (libpq connect_timeout) unless the
    /// connection string sets one.
    unsigned connect_timeout_s = 10;
    /// Seconds this side may keep the fleet waiting, and be kept waiting:
    /// the server ends the session when it sits idle inside a transaction
    /// this long (a broker stopped or cut off while it holds the head row
    /// stalls every member's writes no longer), a lock is waited for twice
    /// as long, and every statement must be answered within three times as
    /// long or its connection is dropped. 0: no bounds.
    unsigned timeout_s = 10;
    /// Once set, a statement waiting for its answer gives up at once (its
    /// connection is dropped): a stopping broker does not wait for the
    /// database. May be null.
    const std::atomic<bool>* abandon = nullptr;
};

/// One committed entry of the fleet change log with what a follower needs to
/// apply it without another query: the record as it is after the change
/// (nullopt when the change removed it). entry.seq is the fleet sequence
/// number. A CA record's device_count is the fleet's count at that moment;
/// a replica maintains its own.
struct FleetChange {
    ChangeEntry entry;
    std::optional<CaRecord> ca;          ///< CA-level change (entry.device_sn empty) leaving a record
    std::optional<DeviceRecord> device;  ///< device-level change leaving a record
};

/// Where the fleet's log stands, read in one snapshot.
struct FleetHead {
    std::string epoch;                   ///< random id made when the instance was created
    std::uint64_t last_seq = 0;          ///< newest committed seq (0: none yet)
    std::uint64_t trimmed_through = 0;   ///< every seq <= this has been trimmed away
};

/// Changes after a position, read in one snapshot with the head.
struct FleetChangeBatch {
    FleetHead head;
    /// The entry at the position asked about, when it is still retained, so
    /// a follower can check it is the change it applied (see
    /// fleet_follower.hpp: a database restored or failed over to an
    /// asynchronous standby may have re-used the number).
    std::optional<FleetChange> anchor;
    std::vector<FleetChange> changes;    ///< seq > position, ascending, at most the limit
};

/// What a write also reads for its broker's replica: the changes numbered
/// before its own, read in its transaction once its numbers are taken, so
/// that the broker can apply them with its own without another round trip.
/// Given to Fleet::write or write_batch with `after` (the replica's
/// position) and `limit`; when the write commits changes, `batch` holds
/// what changes_after(after, limit) would have returned just before the
/// first of them: its head is the change before the write's first.
struct FleetCatchUp {
    std::uint64_t after = 0;
    std::size_t limit = 0;
    std::optional<FleetChangeBatch> batch;  ///< set only when the write committed changes
};

/// Receives a snapshot: every CA in Sn order, then every device in
/// (CaSn, DeviceSn) order (the store's key order, so a replica can load
/// with MDB_APPEND). Returning an error stops the snapshot with it.
class FleetSnapshotSink {
public:
    virtual ~FleetSnapshotSink() = default;
    virtual Outcome ca(const CaRecord& rec) = 0;
    virtual Outcome device(const DeviceRecord& rec) = 0;
};

/// The channel a commit for `instance_id` is notified on (LISTEN name,
/// already a safe identifier); the payload is the new last seq in decimal.
std::string fleet_channel(std::string_view instance_id);

/// The connection string as libpq will see it: a bare service name becomes
/// "service=NAME". Errc::invalid_argument for an unparseable string; the
/// message never quotes the string (it may hold a password).
Result<std::string> fleet_conninfo(std::string_view value);

class Fleet {
public:
    using WriteFn = std::function<Outcome(WriteView&)>;
    using ReadFn = std::function<Outcome(ReadView&)>;

    /// Creates the fleet schema, or upgrades it to kFleetSchemaVersion, and
    /// the instance (with a new epoch) if it does not exist. Idempotent, and
    /// safe when several processes run it at once (an advisory lock
    /// serialises them). Errc::schema_mismatch when the database holds a
    /// newer schema than this build reads.
    static Outcome init(const FleetOptions& options);

    /// Connects and checks that the schema exists at a version this build
    /// reads and that the instance exists; the error names what is wrong
    /// (Errc::schema_mismatch for the schema, Errc::not_found for the
    /// instance, Errc::store_error when the database cannot be reached).
    static Result<std::unique_ptr<Fleet>> connect(const FleetOptions& options);

    ~Fleet();
    Fleet(const Fleet&) = delete;
    Fleet& operator=(const Fleet&) = delete;

    const std::string& instance_id() const noexcept;
    /// "host=... port=... dbname=... user=..." of the live connection, for
    /// logs; never the password.
    std::string describe() const;

    /// Runs fn in one READ COMMITTED transaction whose mutations lock the
    /// rows they change (so writers on different brokers serialise on the
    /// same record), commits, notifies fleet_channel(), and returns the
    /// committed changes in seq order. fn may run again from scratch after a
    /// serialisation failure or a deadlock (bounded by max_attempts), so it
    /// must act only through the view. fn's error aborts and is returned; an
    /// exception aborts and becomes Errc::store_error.
    /// With `catch_up`, see FleetCatchUp.
    Result<std::vector<FleetChange>> write(const WriteFn& fn, FleetCatchUp* catch_up = nullptr);

    /// Group commit: every fn in its own savepoint inside one transaction,
    /// one commit. A fn that fails has its changes undone and its error in
    /// its slot; the others commit. Returns the commit's error, if any (then
    /// every slot reports it), or the committed changes of all fns.
    Result<std::vector<FleetChange>> write_batch(const std::vector<WriteFn>& fns, std::vector<Outcome>& results,
                                                 FleetCatchUp* catch_up = nullptr);

    /// Runs fn in a REPEATABLE READ, READ ONLY transaction.
    Outcome read(const ReadFn& fn);

    Result<FleetHead> head();

    /// Entries with seq > after, ascending, at most `limit`, with the head
    /// and the anchor entry at `after`, all from one snapshot.
    Result<FleetChangeBatch> changes_after(std::uint64_t after, std::size_t limit);

    /// A consistent snapshot (REPEATABLE READ) streamed to sink by binary
    /// COPY in primary-key order; returns the head read in the same
    /// snapshot, so a replica loaded from it resumes at head.last_seq.
    Result<FleetHead> snapshot(FleetSnapshotSink& sink);

    /// Subscribes this connection to fleet_channel() (LISTEN), renewed
    /// whenever the connection is re-established. Listen on a connection of
    /// its own (a follower's), and on the primary: a hot standby refuses
    /// LISTEN.
    Outcome listen();
    /// Waits up to `timeout` for a commit notification on this listening
    /// connection; true if at least one arrived (every pending one is
    /// consumed). A notification is only a hint: notifications sent while
    /// the connection was down are lost, so poll changes_after() too.
    Result<bool> wait_for_commit(std::chrono::milliseconds timeout);
    /// The highest change seq named by the notifications the last
    /// wait_for_commit() consumed (a commit's names the head it left);
    /// nullopt when it consumed none, or one that named no seq.
    std::optional<std::uint64_t> heard_through() const noexcept;

    /// Removes change log entries older than the newest `retention` and
    /// advances trimmed_through; returns how many were removed.
    /// Errc::invalid_argument for a retention of 0.
    Result<std::uint64_t> trim(std::uint64_t retention);

private:
    struct Impl;
    explicit Fleet(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace devcert
