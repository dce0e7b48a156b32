// A broker's LMDB replica (replica.hpp) fed by a real fleet: loaded from
// Fleet::snapshot, then following Fleet::changes_after, it holds what the
// fleet holds.
#include <catch2/catch.hpp>

#include "devcert/fleet_follower.hpp"
#include "devcert/replica.hpp"
#include "fleet_fixture.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

Outcome status_outcome(const Result<CertStatus>& r) { return r ? Outcome(Ok{}) : Outcome(r.error()); }
Outcome count_outcome(const Result<std::uint64_t>& r) { return r ? Outcome(Ok{}) : Outcome(r.error()); }

void require_same(Store& replica, Fleet& fleet) {
    Records a, b;
    REQUIRE(replica.read([&](ReadView& v) { return read_records(v, a); }).ok());
    REQUIRE(fleet.read([&](ReadView& v) { return read_records(v, b); }).ok());
    require_same_records(a, b);
}

/// One round of following: fetch, plan, apply or resync.
void follow(Store& replica, Fleet& fleet) {
    for (;;) {
        auto pos = replica_position(replica);
        REQUIRE(pos.ok());
        auto batch = fleet.changes_after(pos->seq, 7);
        REQUIRE(batch.ok());
        const FollowPlan plan = plan_follow(*pos, *batch);
        if (plan.action == FollowAction::up_to_date) return;
        if (plan.action == FollowAction::resync) {
            auto head = replica_resync(replica, [&](FleetSnapshotSink& sink) { return fleet.snapshot(sink); });
            if (!head) FAIL(head.error().message);
            continue;
        }
        auto applied = replica_apply(replica, batch->head.epoch, batch->changes);
        if (!applied) FAIL(applied.error().message);
        REQUIRE(*applied == plan.count);
        REQUIRE(replica_position(replica)->seq == plan.new_seq);
    }
}

}  // namespace

TEST_CASE("a replica loaded from the fleet and following its log holds what the fleet holds",
          "[fleet][replica]") {
    FleetDb db;
    auto fleet = db.connect();
    TempDir dir;
    auto replica = open_store(dir.path());

    must_commit(*fleet, [](WriteView& v) -> Outcome {
        for (const char* ca : {"0b", "0a", "0c"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= 12; ++i)
            if (auto r = v.insert_device(make_device(i % 3 == 0 ? "0c" : "0a", serial_for(i)), "A", "t"); !r)
                return r;
        return Ok{};
    });
    follow(*replica, *fleet);  // a resync, from nothing
    CHECK(replica_position(*replica)->epoch == fleet->head()->epoch);
    require_same(*replica, *fleet);

    // A registration this broker made that the fleet has not confirmed yet.
    REQUIRE(replica
                ->write([](WriteView& v) {
                    return replica_queue_registration(v, make_device("0c", serial_for(99)), 10);
                })
                .ok());

    must_commit(*fleet, [](WriteView& v) {
        return status_outcome(v.set_device_status("0a", serial_for(1), CertStatus::inactive, "I", "t"));
    });
    must_commit(*fleet, [](WriteView& v) { return v.insert_device(make_device("0b", serial_for(50)), "A", "t"); });
    must_commit(*fleet, [](WriteView& v) { return v.delete_device("0a", serial_for(2), "D", "t"); });
    must_commit(*fleet, [](WriteView& v) {
        return status_outcome(v.set_ca_status("0b", CertStatus::revoked, "RevokeCa", "t"));
    });
    // The CA holding the queued device goes, in steps.
    must_commit(*fleet, [](WriteView& v) { return v.begin_ca_deletion("0c", "DeleteCaCertificate", "t"); });
    must_commit(*fleet, [](WriteView& v) { return count_outcome(v.delete_ca_devices("0c", 2, "DeleteCa", "t")); });
    follow(*replica, *fleet);
    must_read(*replica, [](ReadView& v) {
        const auto ca = *v.get_ca("0c");
        REQUIRE(ca.has_value());
        CHECK(ca->status == CertStatus::inactive);
        CHECK(ca->device_count == 3);  // 9 and 12, and 99, the queued one
    });
    must_commit(*fleet, [](WriteView& v) { return count_outcome(v.delete_ca("0c", "DeleteCa", "t")); });
    follow(*replica, *fleet);

    require_same(*replica, *fleet);
    CHECK(*replica_queue_length(*replica) == 0);
    // The replica's log holds the fleet's entries under the fleet's seqs.
    const auto head = fleet->head();
    REQUIRE(head.ok());
    const auto pos = replica_position(*replica);
    CHECK(pos->seq == head->last_seq);
    std::vector<ChangeEntry> mine;
    must_read(*replica, [&](ReadView& v) { mine = *v.changes_after(0, 1000); });
    auto theirs = fleet->changes_after(0, 1000);
    REQUIRE(theirs.ok());
    REQUIRE(!mine.empty());
    CHECK(mine.front().action == kResyncAction);
    for (std::size_t i = 1; i < mine.size(); ++i) {
        const auto& t = theirs->changes[mine[i].seq - 1].entry;
        CHECK(t.seq == mine[i].seq);
        CHECK(change_digest(t) == change_digest(mine[i]));
    }
    CHECK(*pos->digest == change_digest(theirs->changes.back().entry));
}
