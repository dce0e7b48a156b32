// check_replica reading the replica's own state through replica.hpp. In a
// file of its own so that a program which passes that state itself (the
// tests) does not need the replica's implementation linked.
#include "devcert/fleet_tools.hpp"
#include "devcert/replica.hpp"

namespace devcert {

namespace {
/// The queue is bounded by plugin_opt_fleet's own limit; this only caps
/// what a damaged store could make the check read.
constexpr std::size_t kMaxQueuedRead = 10'000'000;
}  // namespace

Result<ConsistencyReport> check_replica(Store& replica, Fleet& fleet) {
    ReplicaStateSource source;
    source.position = [&replica] { return replica_position(replica); };
    source.queued = [&replica] { return replica_queued_registrations(replica, kMaxQueuedRead); };
    return check_replica(replica, fleet, source);
}

}  // namespace devcert
