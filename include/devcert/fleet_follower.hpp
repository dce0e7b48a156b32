// How a broker's replica follows the fleet's change log: pure decisions,
// no I/O. The caller fetches Fleet::changes_after(position.seq, n), asks
// plan_follow() what to do, does it, and records the new position in the
// replica in the same transaction as the changes it applied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "devcert/fleet.hpp"

namespace devcert {

/// What a replica has applied: the fleet's epoch and the seq of the last
/// change applied, with that change's digest (change_digest) when known.
struct FollowerPosition {
    std::string epoch;                   ///< "" for a replica never loaded from the fleet
    std::uint64_t seq = 0;
    std::optional<std::uint64_t> digest; ///< of the change at seq
};

enum class FollowAction {
    up_to_date,  ///< nothing to apply
    apply,       ///< apply changes[first, first + count), then position = new_seq
    refetch,     ///< a gap: apply what `count` says (may be 0), then fetch again from new_seq
    resync,      ///< rebuild the replica from a snapshot; apply nothing
};

struct FollowPlan {
    FollowAction action = FollowAction::up_to_date;
    std::size_t first = 0;               ///< index into batch.changes
    std::size_t count = 0;               ///< contiguous changes to apply
    std::uint64_t new_seq = 0;           ///< position after applying them
    std::string reason;                  ///< for refetch and resync, for the log
};

// change_digest(), the digest a FollowerPosition keeps, is in store.hpp.

/// Decides what to do with a batch fetched after position.seq:
///  - resync when the replica has no epoch, the epoch differs (another
///    database), the fleet's head is behind the position (restored from a
///    backup or failed over with commits lost), the position is older than
///    the retained log, or the anchor entry at the position differs from the
///    one applied;
///  - skip duplicates (seq <= position), apply the contiguous run that
///    follows, and stop at the first gap (refetch: never skip);
///  - a batch that ends short of the head with nothing usable is a gap too.
FollowPlan plan_follow(const FollowerPosition& position, const FleetChangeBatch& batch);

/// Turns repeated gaps into a resync: a gap seen `max_gaps` times in a row
/// at the same position is not a transaction about to become visible (the
/// head counter makes those impossible) but a damaged log.
class Follower {
public:
    explicit Follower(unsigned max_gaps = 3) noexcept : max_gaps_(max_gaps) {}
    FollowPlan plan(const FollowerPosition& position, const FleetChangeBatch& batch);

private:
    unsigned max_gaps_;
    unsigned gaps_ = 0;
    std::uint64_t gap_at_ = 0;
};

}  // namespace devcert
