// The replica's decisions on a fetched batch: pure logic, no database.
#include <catch2/catch.hpp>

#include <initializer_list>

#include "devcert/fleet_follower.hpp"

using namespace devcert;

namespace {

const std::string kEpoch = "3f1c7a52-epoch";

FleetChange change(std::uint64_t seq) {
    FleetChange c;
    c.entry.seq = seq;
    c.entry.time_ms = 1'700'000'000'000 + static_cast<std::int64_t>(seq);
    c.entry.action = "InactivateDeviceCertificate";
    c.entry.ca_sn = "0a";
    c.entry.device_sn = std::to_string(seq);
    c.entry.old_status = CertStatus::active;
    c.entry.new_status = CertStatus::inactive;
    c.entry.caller = "ops";
    return c;
}

FleetChangeBatch batch(std::uint64_t last_seq, std::initializer_list<std::uint64_t> seqs,
                       std::uint64_t trimmed_through = 0, std::string epoch = kEpoch) {
    FleetChangeBatch b;
    b.head = FleetHead{std::move(epoch), last_seq, trimmed_through};
    for (auto s : seqs) b.changes.push_back(change(s));
    return b;
}

FollowerPosition at(std::uint64_t seq) { return FollowerPosition{kEpoch, seq, std::nullopt}; }

}  // namespace

TEST_CASE("a contiguous batch after the position is applied whole", "[fleet][follower]") {
    const auto plan = plan_follow(at(10), batch(13, {11, 12, 13}));
    CHECK(plan.action == FollowAction::apply);
    CHECK(plan.first == 0);
    CHECK(plan.count == 3);
    CHECK(plan.new_seq == 13);
}

TEST_CASE("nothing after the head is up to date", "[fleet][follower]") {
    const auto plan = plan_follow(at(13), batch(13, {}));
    CHECK(plan.action == FollowAction::up_to_date);
    CHECK(plan.count == 0);
    CHECK(plan.new_seq == 13);
    CHECK(plan_follow(at(0), batch(0, {})).action == FollowAction::up_to_date);
}

TEST_CASE("entries at or before the position are duplicates and skipped", "[fleet][follower]") {
    const auto plan = plan_follow(at(10), batch(12, {9, 10, 11, 12}));
    CHECK(plan.action == FollowAction::apply);
    CHECK(plan.first == 2);
    CHECK(plan.count == 2);
    CHECK(plan.new_seq == 12);
    const auto all_old = plan_follow(at(12), batch(12, {11, 12}));
    CHECK(all_old.action == FollowAction::up_to_date);
    CHECK(all_old.count == 0);
}

TEST_CASE("a gap stops the run before it and asks for a refetch, never a skip", "[fleet][follower]") {
    const auto plan = plan_follow(at(10), batch(15, {11, 12, 14, 15}));
    CHECK(plan.action == FollowAction::refetch);
    CHECK(plan.first == 0);
    CHECK(plan.count == 2);
    CHECK(plan.new_seq == 12);
    CHECK(plan.reason == "expected seq 13, the fleet returned 14");

    const auto at_once = plan_follow(at(10), batch(15, {12, 13}));
    CHECK(at_once.action == FollowAction::refetch);
    CHECK(at_once.count == 0);
    CHECK(at_once.new_seq == 10);
}

TEST_CASE("entries out of order end the run", "[fleet][follower]") {
    const auto plan = plan_follow(at(10), batch(13, {11, 13, 12}));
    CHECK(plan.action == FollowAction::refetch);
    CHECK(plan.count == 1);
    CHECK(plan.new_seq == 11);
    const auto repeated = plan_follow(at(10), batch(13, {11, 12, 12, 13}));
    CHECK(repeated.action == FollowAction::refetch);
    CHECK(repeated.count == 2);
    CHECK(repeated.new_seq == 12);
}

TEST_CASE("an empty batch short of the head is a gap", "[fleet][follower]") {
    const auto plan = plan_follow(at(10), batch(12, {}));
    CHECK(plan.action == FollowAction::refetch);
    CHECK(plan.count == 0);
}

TEST_CASE("a batch cut short by its limit is applied without complaint", "[fleet][follower]") {
    const auto plan = plan_follow(at(10), batch(500, {11, 12}));
    CHECK(plan.action == FollowAction::apply);
    CHECK(plan.new_seq == 12);
}

TEST_CASE("another epoch, or none, means a full resync", "[fleet][follower]") {
    const auto other = plan_follow(at(10), batch(12, {11, 12}, 0, "another-epoch"));
    CHECK(other.action == FollowAction::resync);
    CHECK(other.count == 0);
    CHECK_THAT(other.reason, Catch::Contains("epoch"));
    const auto fresh = plan_follow(FollowerPosition{}, batch(12, {1, 2}));
    CHECK(fresh.action == FollowAction::resync);
}

TEST_CASE("a position older than the retained log means a full resync", "[fleet][follower]") {
    const auto trimmed = plan_follow(at(10), batch(100, {51, 52}, 50));
    CHECK(trimmed.action == FollowAction::resync);
    CHECK_THAT(trimmed.reason, Catch::Contains("keeps changes after 50"));
    // Exactly at the trim point the next entry is still there.
    const auto edge = plan_follow(at(50), batch(100, {51, 52}, 50));
    CHECK(edge.action == FollowAction::apply);
}

TEST_CASE("a fleet behind the replica (restored or failed over) means a full resync", "[fleet][follower]") {
    const auto plan = plan_follow(at(20), batch(15, {}));
    CHECK(plan.action == FollowAction::resync);
    CHECK_THAT(plan.reason, Catch::Contains("commits lost"));
}

TEST_CASE("a different change at the position means a full resync", "[fleet][follower]") {
    FollowerPosition pos = at(10);
    pos.digest = change_digest(change(10).entry);
    auto same = batch(12, {11, 12});
    same.anchor = change(10);
    CHECK(plan_follow(pos, same).action == FollowAction::apply);

    auto replaced = same;
    replaced.anchor->entry.caller = "someone else";
    const auto plan = plan_follow(pos, replaced);
    CHECK(plan.action == FollowAction::resync);
    CHECK_THAT(plan.reason, Catch::Contains("differs"));

    auto missing = same;
    missing.anchor.reset();
    CHECK(plan_follow(pos, missing).action == FollowAction::resync);
    // Without a recorded digest the anchor is not checked.
    CHECK(plan_follow(at(10), missing).action == FollowAction::apply);
}

TEST_CASE("digests tell changes apart by every field", "[fleet][follower]") {
    const auto base = change(7).entry;
    auto differs = [&](auto mutate) {
        ChangeEntry e = base;
        mutate(e);
        return change_digest(e) != change_digest(base);
    };
    CHECK(change_digest(base) == change_digest(change(7).entry));
    CHECK(differs([](ChangeEntry& e) { e.seq = 8; }));
    CHECK(differs([](ChangeEntry& e) { e.time_ms += 1; }));
    CHECK(differs([](ChangeEntry& e) { e.action = "ActivateDeviceCertificate"; }));
    CHECK(differs([](ChangeEntry& e) { e.ca_sn = "0b"; }));
    CHECK(differs([](ChangeEntry& e) { e.device_sn = "8"; }));
    CHECK(differs([](ChangeEntry& e) { e.old_status.reset(); }));
    CHECK(differs([](ChangeEntry& e) { e.new_status = CertStatus::revoked; }));
    CHECK(differs([](ChangeEntry& e) { e.caller = "other"; }));
    // Field boundaries count: ("0a", "7") is not ("0a7", "").
    CHECK(differs([](ChangeEntry& e) {
        e.ca_sn = "0a7";
        e.device_sn = "";
    }));
}

TEST_CASE("a gap that persists at one position becomes a resync", "[fleet][follower]") {
    Follower follower(3);
    const auto gap = batch(15, {12, 13});
    CHECK(follower.plan(at(10), gap).action == FollowAction::refetch);
    CHECK(follower.plan(at(10), gap).action == FollowAction::refetch);
    const auto third = follower.plan(at(10), gap);
    CHECK(third.action == FollowAction::resync);
    CHECK_THAT(third.reason, Catch::Contains("persisted"));
}

TEST_CASE("a gap that clears, or moves on, does not count towards a resync", "[fleet][follower]") {
    Follower follower(2);
    CHECK(follower.plan(at(10), batch(15, {12})).action == FollowAction::refetch);
    CHECK(follower.plan(at(10), batch(15, {11, 12, 13, 14, 15})).action == FollowAction::apply);
    CHECK(follower.plan(at(15), batch(17, {17})).action == FollowAction::refetch);
    // Progress before the gap resets the count too.
    CHECK(follower.plan(at(15), batch(18, {16, 18})).action == FollowAction::refetch);
    CHECK(follower.plan(at(16), batch(18, {18})).action == FollowAction::refetch);
    CHECK(follower.plan(at(16), batch(18, {18})).action == FollowAction::resync);
}
