// Operator tools for fleet mode: moving a standalone store into a fleet
// (devcertctl --db DIR --fleet CONNINFO MigrateToFleet --MqttInstanceId ID)
// and checking a broker's replica against the fleet (... CheckFleet).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "devcert/fleet.hpp"
#include "devcert/fleet_follower.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"

namespace devcert {

struct MigrationReport {
    std::uint64_t cas = 0;
    std::uint64_t devices = 0;
    std::uint64_t changes = 0;           ///< change log entries copied (the store's retained ones)
    std::uint64_t cas_being_deleted = 0; ///< CAs whose deletion had begun, still marked so in the fleet
    /// The entries keep the store's sequence numbers (the instance was empty,
    /// so none had to be renumbered): first_seq..last_seq, 0 when none.
    std::uint64_t first_seq = 0;
    std::uint64_t last_seq = 0;          ///< the instance's head after the migration
    std::vector<std::string> meta_keys;  ///< metadata copied ("instance_id", "max_ca", "register_code")
};

/// Moves a standalone store into a fleet instance that exists (InitFleet)
/// and is empty (no records, no changes): every CA and device with its
/// status and time stamps, the CAs whose deletion had begun, the store's
/// instance_id, max_ca and register_code, and the change log's retained
/// entries under their own sequence numbers; all in one transaction, so a
/// failure changes nothing. The migrated entries carry no record (the record
/// after an old change is not known) and the instance's trimmed_through is
/// set to the last of them, so no broker replays them: every broker loads its
/// replica from a snapshot. They stay readable (ListCertificateChanges).
/// Reads the store in one snapshot: writes made to it meanwhile (a running
/// broker's) are not moved, so stop its brokers first.
/// Errc::already_exists if the instance holds records or changes;
/// Errc::invalid_argument when the store's instance_id is set and differs
/// from options.instance_id (naming both) or a value cannot be stored in
/// PostgreSQL (naming the record); Errc::not_found without the instance.
Result<MigrationReport> migrate_to_fleet(Store& store, const FleetOptions& options);

/// At most this many differences are described in a ConsistencyReport.
inline constexpr std::size_t kMaxReportedDifferences = 100;

struct ConsistencyReport {
    std::uint64_t compared_cas = 0;      ///< CA records seen on either side
    std::uint64_t compared_devices = 0;  ///< device records seen on either side
    std::string replica_epoch;
    std::string fleet_epoch;
    std::uint64_t replica_position = 0;  ///< seq the replica had applied when the check ended
    std::uint64_t fleet_head = 0;        ///< the fleet's last_seq in the snapshot compared
    /// Records that differ only because a change between the two positions
    /// had not reached one side yet (not differences).
    std::uint64_t in_flight = 0;
    /// Devices in the replica's registration queue that differ from the
    /// fleet or are missing from it, and CAs whose device count is off by
    /// exactly those missing (not differences: the fleet has not confirmed
    /// them yet).
    std::uint64_t queued = 0;
    /// "device CA/DEV: status replica 1, fleet 0", "ca CA: only in the
    /// fleet", "the replica is behind the fleet by N changes (at seq P, the fleet's head is H)",
    /// ...: the first kMaxReportedDifferences.
    std::vector<std::string> differences;
    std::uint64_t difference_count = 0;  ///< all of them

    std::uint64_t behind_by() const noexcept {
        return fleet_head > replica_position ? fleet_head - replica_position : 0;
    }
    /// Same epoch, not behind, every record equal (in flight and queued aside).
    bool consistent() const noexcept { return difference_count == 0; }
};

/// Compares a replica (the LMDB store a broker keeps in fleet mode) with the
/// fleet: every CA and device record, field by field, each side walked in
/// key order (the replica in one read transaction, the fleet in one
/// snapshot). The replica's position is read before and after the walk; a
/// record touched by a fleet change between the replica's position and the
/// fleet's head is counted in_flight, one in the replica's registration
/// queue is counted queued, and neither is a difference. A replica behind
/// the fleet's head when the walk ends, or following another epoch, is a
/// difference. Reads its position and queue through replica.hpp.
Result<ConsistencyReport> check_replica(Store& replica, Fleet& fleet);

/// What check_replica reads of the replica beyond its records.
struct ReplicaStateSource {
    std::function<Result<FollowerPosition>()> position;
    /// The registration queue (replica_queued_registrations).
    std::function<Result<std::vector<DeviceRecord>>()> queued;
};
/// The reports as devcertctl prints them (one JSON object, keys in the
/// API's style: "Consistent", "ComparedCas", ..., "Differences"; see
/// docs/fleet.md). Invalid UTF-8 in a serial is replaced, never thrown on.
std::string to_json(const MigrationReport& report);
std::string to_json(const ConsistencyReport& report);

/// check_replica with the replica's own state read through `source` (tests,
/// and callers holding the replica's state elsewhere).
Result<ConsistencyReport> check_replica(Store& replica, Fleet& fleet, const ReplicaStateSource& source);

}  // namespace devcert
