#include "devcert/fleet_follower.hpp"

#include <fmt/format.h>

namespace devcert {

namespace {

FollowPlan resync(std::string reason) {
    FollowPlan plan;
    plan.action = FollowAction::resync;
    plan.reason = std::move(reason);
    return plan;
}

}  // namespace

FollowPlan plan_follow(const FollowerPosition& pos, const FleetChangeBatch& batch) {
    const FleetHead& head = batch.head;
    if (pos.epoch.empty()) return resync("the replica has never been loaded from the fleet");
    if (pos.epoch != head.epoch)
        return resync(fmt::format("the fleet's epoch is {}, the replica followed {} (another or a re-created "
                                  "database)",
                                  head.epoch, pos.epoch));
    if (pos.seq > head.last_seq)
        return resync(fmt::format("the replica is at seq {} but the fleet's newest is {} (database restored or "
                                  "failed over with commits lost)",
                                  pos.seq, head.last_seq));
    if (pos.seq < head.trimmed_through)
        return resync(fmt::format("the replica is at seq {} but the fleet keeps changes after {} only", pos.seq,
                                  head.trimmed_through));
    if (pos.digest && pos.seq > head.trimmed_through && pos.seq > 0) {
        if (!batch.anchor || batch.anchor->entry.seq != pos.seq)
            return resync(fmt::format("the change at seq {} the replica applied is missing from the fleet", pos.seq));
        if (change_digest(batch.anchor->entry) != *pos.digest)
            return resync(fmt::format("the change at seq {} differs from the one the replica applied (database "
                                      "restored or failed over)",
                                      pos.seq));
    }

    FollowPlan plan;
    plan.new_seq = pos.seq;
    std::size_t i = 0;
    while (i < batch.changes.size() && batch.changes[i].entry.seq <= pos.seq) ++i;  // duplicates
    plan.first = i;
    // The contiguous run after the position; anything else (a gap, or an
    // entry out of order) ends it.
    while (i < batch.changes.size() && batch.changes[i].entry.seq == plan.new_seq + 1) {
        ++plan.count;
        ++plan.new_seq;
        ++i;
    }

    const bool stopped_at_gap = plan.first + plan.count < batch.changes.size();
    if (stopped_at_gap) {
        plan.action = FollowAction::refetch;
        plan.reason = fmt::format("expected seq {}, the fleet returned {}", plan.new_seq + 1,
                                  batch.changes[plan.first + plan.count].entry.seq);
        return plan;
    }
    if (plan.count == 0 && plan.new_seq < head.last_seq) {
        plan.action = FollowAction::refetch;
        plan.reason = fmt::format("the fleet's newest seq is {} but no change after {} was returned", head.last_seq,
                                  plan.new_seq);
        return plan;
    }
    plan.action = plan.count > 0 ? FollowAction::apply : FollowAction::up_to_date;
    return plan;
}

FollowPlan Follower::plan(const FollowerPosition& position, const FleetChangeBatch& batch) {
    FollowPlan p = plan_follow(position, batch);
    if (p.action != FollowAction::refetch || p.count > 0) {
        gaps_ = 0;
        return p;
    }
    if (gaps_ == 0 || gap_at_ != position.seq) {
        gaps_ = 0;
        gap_at_ = position.seq;
    }
    if (++gaps_ >= max_gaps_) {
        gaps_ = 0;
        return resync(fmt::format("a gap after seq {} persisted over {} fetches: {}", position.seq, max_gaps_,
                                  p.reason));
    }
    return p;
}

}  // namespace devcert
