// The LMDB store as a fleet replica: what a broker in fleet mode does to its
// local store beyond the ordinary operations. The replica's change log holds
// the fleet's entries under the fleet's sequence numbers, so the broker
// thread's tail of the log (and the kicks it makes) works unchanged.
//
// A replica also keeps two things of its own, in the same environment:
//  - its position in the fleet's log (epoch, seq, digest of that change),
//    written in the same transaction as the changes applied;
//  - the registration queue: devices this broker registered on their first
//    connection that the fleet has not confirmed yet. Such a device is in
//    the replica's records at once (so its next connection finds it) but has
//    no change-log entry: its entry is the fleet's, applied when it comes.
//
// Every function runs its own write transaction (Store::write), so the
// threading rule of store.hpp applies: never call them while holding a
// StatusReader snapshot or from inside Store::read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "devcert/fleet.hpp"
#include "devcert/fleet_follower.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"

namespace devcert {

/// Action of the change-log entry a resynchronisation leaves (seq = the
/// snapshot's head; no serials, no statuses). The broker thread re-checks
/// every connected client when it reads it, or when the log's newest seq
/// goes backwards.
inline constexpr std::string_view kResyncAction = "FleetResync";

/// Where the replica stands. A store never loaded from a fleet has an empty
/// epoch and seq 0.
Result<FollowerPosition> replica_position(Store& store);

/// Applies, in one transaction, the changes that continue the replica's
/// position: entries with seq <= position are skipped (already applied), the
/// one at position + 1 is applied and so on; the first gap stops it. Each
/// applied change puts its record as given (or removes it; removing a CA
/// removes whatever devices of it the replica still holds), keeps the
/// replica's own counts and indexes right, appends the entry to the change
/// log under its own seq, and moves the position (with change_digest). A
/// registration the fleet now holds leaves the queue. Returns how many were
/// applied. Errc::invalid_argument when `epoch` is not the replica's
/// (resynchronise first).
Result<std::size_t> replica_apply(Store& store, const std::string& epoch, const std::vector<FleetChange>& changes);

/// Rebuilds the replica from a snapshot in one write transaction, so that
/// readers (the broker thread) keep seeing the old records until it
/// commits. `snapshot` streams every record into the sink it is given and
/// returns the head it was read at (Fleet::snapshot); it may be called again
/// from scratch if the map had to grow. The change log is emptied but for
/// one kResyncAction entry at the head's seq (when it is above 0), the
/// queued registrations the snapshot lacks are put back, and the position
/// becomes {head.epoch, head.last_seq, no digest}. `expected_bytes`, when
/// known, lets the map be grown once up front. Returns the head.
Result<FleetHead> replica_resync(Store& store, const std::function<Result<FleetHead>(FleetSnapshotSink&)>& snapshot,
                                 std::uint64_t expected_bytes = 0);

/// Inside a write (the plugin's StoreWriter job for a first connection):
/// puts `rec` in the replica's records without a change-log entry and
/// queues it for the fleet. Errc::already_exists when the replica holds the
/// device already (the caller then re-checks it: the fleet's record may
/// differ); Errc::not_found when the CA is not registered;
/// Errc::limit_exceeded when `max_queued` registrations already wait.
Outcome replica_queue_registration(WriteView& view, const DeviceRecord& rec, std::uint64_t max_queued);

/// Up to `limit` queued registrations, oldest first.
Result<std::vector<DeviceRecord>> replica_queued_registrations(Store& store, std::size_t limit);
/// Drops (CaSn, DeviceSn) from the queue (the fleet has answered for it).
/// Dropping one not queued is fine.
Outcome replica_drop_registration(Store& store, const std::string& ca_sn, const std::string& device_sn);
/// How many registrations wait.
Result<std::uint64_t> replica_queue_length(Store& store);

}  // namespace devcert
