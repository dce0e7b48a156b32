// MigrateToFleet and CheckFleet: a standalone store moved into an empty
// instance, and a replica compared with the fleet.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <chrono>

#include "devcert/fleet_follower.hpp"
#include "devcert/fleet_tools.hpp"
#include "fleet_fixture.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

Outcome ok_of(const Result<CertStatus>& r) { return r ? Outcome(Ok{}) : Outcome(r.error()); }
Outcome ok_of(const Result<std::uint64_t>& r) { return r ? Outcome(Ok{}) : Outcome(r.error()); }

void require_same(const CaRecord& a, const CaRecord& b) {
    INFO("ca " << a.sn);
    CHECK(a.sn == b.sn);
    CHECK(a.name == b.name);
    CHECK(a.content_pem == b.content_pem);
    CHECK(a.verification_pem == b.verification_pem);
    CHECK(a.registration_code == b.registration_code);
    CHECK(a.status == b.status);
    CHECK(a.valid_begin_ms == b.valid_begin_ms);
    CHECK(a.valid_end_ms == b.valid_end_ms);
    CHECK(a.created_ms == b.created_ms);
    CHECK(a.updated_ms == b.updated_ms);
    CHECK(a.status_changed_ms == b.status_changed_ms);
    CHECK(a.registered_by == b.registered_by);
    CHECK(a.subject_key_id == b.subject_key_id);
    CHECK(a.fingerprint == b.fingerprint);
    CHECK(a.device_count == b.device_count);
}

void require_same(const DeviceRecord& a, const DeviceRecord& b) {
    INFO("device " << a.ca_sn << "/" << a.device_sn);
    CHECK(a.ca_sn == b.ca_sn);
    CHECK(a.device_sn == b.device_sn);
    CHECK(a.device_name == b.device_name);
    CHECK(a.content_pem == b.content_pem);
    CHECK(a.status == b.status);
    CHECK(a.valid_begin_ms == b.valid_begin_ms);
    CHECK(a.valid_end_ms == b.valid_end_ms);
    CHECK(a.created_ms == b.created_ms);
    CHECK(a.updated_ms == b.updated_ms);
    CHECK(a.status_changed_ms == b.status_changed_ms);
    CHECK(a.registered_by == b.registered_by);
    CHECK(a.fingerprint == b.fingerprint);
}

void require_same(const ChangeEntry& a, const ChangeEntry& b) {
    INFO("change " << a.seq);
    CHECK(a.seq == b.seq);
    CHECK(a.time_ms == b.time_ms);
    CHECK(a.action == b.action);
    CHECK(a.ca_sn == b.ca_sn);
    CHECK(a.device_sn == b.device_sn);
    CHECK(a.old_status == b.old_status);
    CHECK(a.new_status == b.new_status);
    CHECK(a.caller == b.caller);
}

/// Everything a view can list, in one read.
struct Contents {
    std::vector<CaRecord> cas;
    std::vector<DeviceRecord> devices;
    std::vector<ChangeEntry> changes;
    std::uint64_t ca_count = 0;
    std::uint64_t device_count = 0;
};

Outcome list_all(ReadView& v, Contents& out) {
    out = Contents{};
    auto cas = v.list_cas(Page(1, 100));
    if (!cas) return cas.error();
    out.cas = cas->items;
    auto devices = v.list_devices(Page(1, 100));
    if (!devices) return devices.error();
    out.devices = devices->items;
    auto changes = v.changes_after(0, 1000);
    if (!changes) return changes.error();
    out.changes = *changes;
    auto ca_count = v.ca_count();
    if (!ca_count) return ca_count.error();
    out.ca_count = *ca_count;
    auto device_count = v.device_count();
    if (!device_count) return device_count.error();
    out.device_count = *device_count;
    return Ok{};
}

Contents store_contents(Store& store) {
    Contents c;
    const Outcome out = store.read([&](ReadView& v) { return list_all(v, c); });
    if (!out) FAIL(out.error().message);
    return c;
}

Contents fleet_contents(Fleet& fleet) {
    Contents c;
    const Outcome out = fleet.read([&](ReadView& v) { return list_all(v, c); });
    if (!out) FAIL(out.error().message);
    return c;
}

/// A standalone store with history: CAs in every status and one being
/// deleted, devices in every status, a device removed, metadata.
void fill_store(Store& store) {
    must_write(store, [](WriteView& v) -> Outcome {
        if (auto r = v.set_meta("instance_id", "fleet-test"); !r) return r;
        if (auto r = v.set_meta("max_ca", "7"); !r) return r;
        if (auto r = v.set_meta("register_code", "c0ffee"); !r) return r;
        for (const char* sn : {"0a", "0b", "0c", "0d"})
            if (auto r = v.insert_ca(make_ca(sn), "RegisterCaCertificate", "uid=0(root)"); !r) return r;
        for (const char* sn : {"01", "02", "03", "04"})
            if (auto r = v.insert_device(make_device("0a", sn), "AutoRegister", "connection"); !r) return r;
        if (auto r = v.insert_device(make_device("0b", "01"), "RegisterDeviceCertificate", "uid=0(root)"); !r)
            return r;
        return v.insert_device(make_device("0c", "05", CertStatus::inactive, 3000), "AutoRegister", "connection");
    });
    must_write(store, [](WriteView& v) -> Outcome {
        if (auto r = ok_of(v.set_device_status("0a", "02", CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
            !r)
            return r;
        if (auto r = ok_of(v.set_device_status("0a", "03", CertStatus::revoked, "RevokeDeviceCertificate", "ops")); !r)
            return r;
        if (auto r = v.delete_device("0a", "04", "DeleteDeviceCertificate", "ops"); !r) return r;
        if (auto r = ok_of(v.set_ca_status("0b", CertStatus::inactive, "InactivateCaCertificate", "ops")); !r)
            return r;
        if (auto r = ok_of(v.set_ca_status("0d", CertStatus::revoked, "RevokeCaCertificate", "ops")); !r) return r;
        return v.begin_ca_deletion("0c", "DeleteCaCertificate", "ops");
    });
}

std::uint64_t store_last_seq(Store& store) {
    std::uint64_t last = 0;
    StatusReader reader(store);
    REQUIRE(reader.refresh());
    REQUIRE(reader.last_change_seq(last) == Lookup::found);
    reader.release();
    return last;
}

/// Loads a fresh store from the fleet's snapshot with the ordinary write
/// operations (what replica_resync does, without its bookkeeping).
class LoadingSink final : public FleetSnapshotSink {
public:
    explicit LoadingSink(WriteView& view) : view_(view) {}
    Outcome ca(const CaRecord& rec) override { return view_.insert_ca(rec, "FleetResync", "test"); }
    Outcome device(const DeviceRecord& rec) override { return view_.insert_device(rec, "FleetResync", "test"); }

private:
    WriteView& view_;
};

FleetHead load_replica(Store& replica, Fleet& fleet) {
    std::optional<FleetHead> head;
    must_write(replica, [&](WriteView& v) -> Outcome {
        LoadingSink sink(v);
        auto h = fleet.snapshot(sink);
        if (!h) return h.error();
        head = *h;
        return Ok{};
    });
    return *head;
}

/// The replica's own state, held by the test.
struct FakeReplicaState {
    FollowerPosition position;
    std::vector<DeviceRecord> queued;
    ReplicaStateSource source() {
        return {[this]() -> Result<FollowerPosition> { return position; },
                [this]() -> Result<std::vector<DeviceRecord>> { return queued; }};
    }
};

bool mentions(const std::vector<std::string>& lines, std::string_view text) {
    for (const auto& l : lines)
        if (l.find(text) != std::string::npos) return true;
    return false;
}

}  // namespace

TEST_CASE("a store moves into an empty instance with its records, statuses, history and metadata", "[migrate]") {
    TempDir dir;
    auto store = open_store(dir.path());
    fill_store(*store);
    const Contents before = store_contents(*store);
    const std::uint64_t last = store_last_seq(*store);
    FleetDb db;

    auto report = migrate_to_fleet(*store, db.options);
    REQUIRE(report.ok());
    CHECK(report->cas == 4);
    CHECK(report->devices == 5);
    CHECK(report->changes == before.changes.size());
    CHECK(report->cas_being_deleted == 1);
    CHECK(report->first_seq == 1);
    CHECK(report->last_seq == last);
    CHECK(report->meta_keys == std::vector<std::string>{"instance_id", "max_ca", "register_code"});

    auto fleet = db.connect();
    const Contents after = fleet_contents(*fleet);
    REQUIRE(after.cas.size() == before.cas.size());
    for (std::size_t i = 0; i < before.cas.size(); ++i) require_same(after.cas[i], before.cas[i]);
    REQUIRE(after.devices.size() == before.devices.size());
    for (std::size_t i = 0; i < before.devices.size(); ++i) require_same(after.devices[i], before.devices[i]);
    // ListCertificateChanges reads the same history under the same numbers.
    REQUIRE(after.changes.size() == before.changes.size());
    for (std::size_t i = 0; i < before.changes.size(); ++i) require_same(after.changes[i], before.changes[i]);
    CHECK(after.ca_count == 4);
    CHECK(after.device_count == 5);

    const Outcome meta = fleet->read([](ReadView& v) -> Outcome {
        CHECK(v.meta("instance_id")->value_or("") == "fleet-test");
        CHECK(v.meta("max_ca")->value_or("") == "7");
        CHECK(v.meta("register_code")->value_or("") == "c0ffee");
        CHECK(*v.ca_being_deleted("0c"));
        CHECK_FALSE(*v.ca_being_deleted("0a"));
        return Ok{};
    });
    REQUIRE(meta.ok());

    // The history is there to read, not to replay: a broker at any earlier
    // position (one that followed the empty instance) loads a snapshot.
    auto head = fleet->head();
    REQUIRE(head.ok());
    CHECK(head->last_seq == last);
    CHECK(head->trimmed_through == last);
    auto batch = fleet->changes_after(0, 100);
    REQUIRE(batch.ok());
    CHECK(batch->changes.size() == before.changes.size());
    CHECK(plan_follow({head->epoch, 0, std::nullopt}, *batch).action == FollowAction::resync);
    auto at_head = fleet->changes_after(last, 100);
    REQUIRE(at_head.ok());
    REQUIRE(at_head->anchor.has_value());
    CHECK(plan_follow({head->epoch, last, change_digest(at_head->anchor->entry)}, *at_head).action ==
          FollowAction::up_to_date);

    // The instance carries on from there, and the CA being deleted is still
    // refused an activation.
    const auto next = must_commit(*fleet, [](WriteView& v) {
        return ok_of(v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
    });
    REQUIRE(next.size() == 1);
    CHECK(next[0].entry.seq == last + 1);
    auto refused = fleet->write(
        [](WriteView& v) { return ok_of(v.set_ca_status("0c", CertStatus::active, "ActivateCaCertificate", "ops")); });
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == Errc::not_found);
    auto followed = fleet->changes_after(last, 100);
    REQUIRE(followed.ok());
    CHECK(plan_follow({head->epoch, last, change_digest(followed->anchor->entry)}, *followed).action ==
          FollowAction::apply);
}

TEST_CASE("a second migration is refused and changes nothing", "[migrate]") {
    TempDir dir;
    auto store = open_store(dir.path());
    fill_store(*store);
    FleetDb db;
    REQUIRE(migrate_to_fleet(*store, db.options).ok());
    auto fleet = db.connect();
    const Contents first = fleet_contents(*fleet);
    const FleetHead head = *fleet->head();

    auto again = migrate_to_fleet(*store, db.options);
    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == Errc::already_exists);
    CHECK_THAT(again.error().message, Catch::Contains("fleet-test"));
    const Contents second = fleet_contents(*fleet);
    CHECK(second.cas.size() == first.cas.size());
    CHECK(second.devices.size() == first.devices.size());
    CHECK(second.changes.size() == first.changes.size());
    CHECK(fleet->head()->last_seq == head.last_seq);

    SECTION("and so is one into an instance that has only a change left") {
        FleetDb other;
        auto f = other.connect();
        must_commit(*f, [](WriteView& v) { return v.insert_ca(make_ca("0f"), "R", "t"); });
        must_commit(*f, [](WriteView& v) { return ok_of(v.delete_ca("0f", "D", "t")); });
        auto refused = migrate_to_fleet(*store, other.options);
        REQUIRE_FALSE(refused.ok());
        CHECK(refused.error().code == Errc::already_exists);
        CHECK(f->head()->last_seq == 2);
    }
}

TEST_CASE("a store of another instance is refused, naming both", "[migrate]") {
    TempDir dir;
    auto store = open_store(dir.path());
    fill_store(*store);
    FleetDb db;
    FleetOptions other = db.options;
    other.instance_id = "fleet-other";
    REQUIRE(Fleet::init(other).ok());

    auto refused = migrate_to_fleet(*store, other);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error().code == Errc::invalid_argument);
    CHECK_THAT(refused.error().message, Catch::Contains("'fleet-test'") && Catch::Contains("'fleet-other'"));
    auto fleet = connect_fleet(other);
    CHECK(fleet->head()->last_seq == 0);
    CHECK(fleet_contents(*fleet).cas.empty());

    SECTION("a store without an instance id goes anywhere") {
        TempDir bare_dir;
        auto bare = open_store(bare_dir.path());
        must_write(*bare, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
        auto moved = migrate_to_fleet(*bare, other);
        REQUIRE(moved.ok());
        CHECK(moved->cas == 1);
        const Outcome meta = fleet->read([](ReadView& v) -> Outcome {
            CHECK(v.meta("instance_id")->value_or("") == "fleet-other");
            return Ok{};
        });
        CHECK(meta.ok());
    }
}

TEST_CASE("a migration that fails half-way leaves the instance as it was", "[migrate]") {
    TempDir dir;
    auto store = open_store(dir.path());
    fill_store(*store);
    FleetDb db;
    DeviceRecord bad = make_device("0e", "ff");
    std::string expected;

    SECTION("a NUL byte PostgreSQL text cannot hold, found after the CAs are copied") {
        bad.device_name = std::string("dev\0ice", 7);
        expected = "device 'ff' of ca '0e' has a NUL byte in its name";
    }
    SECTION("bytes PostgreSQL refuses as text, refused by the server in the middle of the copy") {
        bad.device_name = "latin-1 \xe9t\xe9";
        expected = "copy device records failed";
    }
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0e"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0e", "01"), "A", "t"); !r) return r;
        return v.insert_device(bad, "A", "t");
    });

    auto failed = migrate_to_fleet(*store, db.options);
    REQUIRE_FALSE(failed.ok());
    CHECK_THAT(failed.error().message, Catch::Contains(expected));
    auto fleet = db.connect();
    const Contents after = fleet_contents(*fleet);
    CHECK(after.cas.empty());
    CHECK(after.devices.empty());
    CHECK(after.changes.empty());
    CHECK(after.ca_count == 0);
    CHECK(fleet->head()->last_seq == 0);
    CHECK(fleet->head()->trimmed_through == 0);
    const Outcome meta = fleet->read([](ReadView& v) -> Outcome {
        CHECK_FALSE(v.meta("max_ca")->has_value());
        return Ok{};
    });
    CHECK(meta.ok());

    // Fixed, it goes through.
    must_write(*store, [](WriteView& v) { return v.delete_device("0e", "ff", "DeleteDeviceCertificate", "ops"); });
    REQUIRE(migrate_to_fleet(*store, db.options).ok());
}

TEST_CASE("a replica loaded from the fleet is consistent with it; a changed record is reported by its serials",
          "[migrate][check]") {
    TempDir dir;
    auto store = open_store(dir.path());
    fill_store(*store);
    FleetDb db;
    REQUIRE(migrate_to_fleet(*store, db.options).ok());
    auto fleet = db.connect();

    TempDir replica_dir;
    auto replica = open_store(replica_dir.path());
    const FleetHead head = load_replica(*replica, *fleet);
    FakeReplicaState state;
    state.position = {head.epoch, head.last_seq, std::nullopt};

    auto clean = check_replica(*replica, *fleet, state.source());
    REQUIRE(clean.ok());
    CHECK(clean->consistent());
    CHECK(clean->differences.empty());
    CHECK(clean->compared_cas == 4);
    CHECK(clean->compared_devices == 5);
    CHECK(clean->replica_position == head.last_seq);
    CHECK(clean->fleet_head == head.last_seq);
    CHECK(clean->behind_by() == 0);

    SECTION("a status changed in the replica alone") {
        must_write(*replica, [](WriteView& v) {
            return ok_of(v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "x"));
        });
        auto r = check_replica(*replica, *fleet, state.source());
        REQUIRE(r.ok());
        CHECK_FALSE(r->consistent());
        CHECK(r->difference_count == 1);
        REQUIRE(r->differences.size() == 1);
        CHECK_THAT(r->differences[0], Catch::StartsWith("device 0a/01: status (replica 0, fleet 1)"));
    }
    SECTION("records only on one side, and a CA's count with them") {
        must_write(*replica, [](WriteView& v) -> Outcome {
            if (auto r = v.delete_device("0a", "02", "D", "x"); !r) return r;
            return v.insert_device(make_device("0b", "09"), "A", "x");
        });
        auto r = check_replica(*replica, *fleet, state.source());
        REQUIRE(r.ok());
        CHECK(r->difference_count == 4);
        CHECK(mentions(r->differences, "device 0a/02: only in the fleet"));
        CHECK(mentions(r->differences, "device 0b/09: only in the replica"));
        CHECK(mentions(r->differences, "ca 0a: device_count (replica 2, fleet 3)"));
        CHECK(mentions(r->differences, "ca 0b: device_count (replica 2, fleet 1)"));
    }
    SECTION("a registration the fleet has not confirmed yet is queued, not a difference") {
        const DeviceRecord fresh = make_device("0a", "10");
        must_write(*replica, [&](WriteView& v) { return v.insert_device(fresh, "AutoRegister", "connection"); });
        state.queued = {fresh};
        auto r = check_replica(*replica, *fleet, state.source());
        REQUIRE(r.ok());
        // The device, and its CA's count that includes it already.
        CHECK(r->queued == 2);
        CHECK(r->consistent());
        CHECK(r->differences.empty());
        // A count off by more than the queue explains is a difference.
        must_write(*replica, [&](WriteView& v) { return v.insert_device(make_device("0a", "11"), "A", "x"); });
        auto more = check_replica(*replica, *fleet, state.source());
        REQUIRE(more.ok());
        CHECK(more->queued == 1);
        CHECK(more->difference_count == 2);
        CHECK(mentions(more->differences, "device 0a/11: only in the replica"));
        CHECK(mentions(more->differences, "ca 0a: device_count (replica 5, fleet 3)"));
    }
    SECTION("a replica behind the fleet is reported as such; the records changed since are in flight") {
        must_commit(*fleet, [](WriteView& v) {
            return ok_of(v.set_device_status("0b", "01", CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
        });
        auto r = check_replica(*replica, *fleet, state.source());
        REQUIRE(r.ok());
        CHECK_FALSE(r->consistent());
        CHECK(r->behind_by() == 1);
        CHECK(r->in_flight == 1);
        REQUIRE(r->differences.size() == 1);
        CHECK_THAT(r->differences[0], Catch::Contains("behind the fleet by 1 change"));
        // Caught up, it is consistent again.
        auto changed = fleet->changes_after(head.last_seq, 10);
        REQUIRE(changed.ok());
        REQUIRE(changed->changes.size() == 1);
        // The replica applied the record as the fleet gave it, time stamps too.
        must_write(*replica, [&](WriteView& v) -> Outcome {
            if (auto r2 = v.delete_device("0b", "01", "x", "x"); !r2) return r2;
            return v.insert_device(*changed->changes[0].device, "x", "x");
        });
        state.position.seq = changed->changes[0].entry.seq;
        auto again = check_replica(*replica, *fleet, state.source());
        REQUIRE(again.ok());
        CHECK(again->consistent());
        CHECK(again->differences.empty());
    }
    SECTION("a replica rebuilt while it was being checked is not called consistent") {
        int calls = 0;
        ReplicaStateSource moving{[&]() -> Result<FollowerPosition> {
                                      if (calls++ == 0) return FollowerPosition{};
                                      return state.position;
                                  },
                                  [] { return Result<std::vector<DeviceRecord>>(std::vector<DeviceRecord>{}); }};
        auto r = check_replica(*replica, *fleet, moving);
        REQUIRE(r.ok());
        CHECK_FALSE(r->consistent());
        CHECK_THAT(r->differences.at(0), Catch::Contains("rebuilt from a snapshot during the check"));
    }
    SECTION("a replica of another epoch is not consistent") {
        state.position.epoch = "another";
        auto r = check_replica(*replica, *fleet, state.source());
        REQUIRE(r.ok());
        CHECK_FALSE(r->consistent());
        CHECK_THAT(r->differences.at(0), Catch::Contains("epoch another"));
    }
}

TEST_CASE("figures: migrating 100,000 devices", "[.figures][migrate]") {
    TempDir dir;
    auto store = open_store(dir.path(), 512ull << 20);
    constexpr std::uint64_t kDevices = 100'000;
    must_write(*store, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    for (std::uint64_t at = 0; at < kDevices; at += 10'000) {
        must_write(*store, [&](WriteView& v) -> Outcome {
            for (std::uint64_t i = at; i < at + 10'000; ++i)
                if (auto r = v.insert_device(make_device("0a", serial_for(i), CertStatus::active, 1000), "A", "t"); !r)
                    return r;
            return Ok{};
        });
    }
    FleetDb db;
    const auto start = std::chrono::steady_clock::now();
    auto report = migrate_to_fleet(*store, db.options);
    const double migrate_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    REQUIRE(report.ok());
    CHECK(report->devices == kDevices);

    auto fleet = db.connect();
    TempDir replica_dir;
    auto replica = open_store(replica_dir.path(), 512ull << 20);
    const FleetHead head = load_replica(*replica, *fleet);
    FakeReplicaState state;
    state.position = {head.epoch, head.last_seq, std::nullopt};
    const auto check_start = std::chrono::steady_clock::now();
    auto checked = check_replica(*replica, *fleet, state.source());
    const double check_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - check_start).count();
    REQUIRE(checked.ok());
    CHECK(checked->consistent());
    WARN(fmt::format("migrating {} devices (1 KB PEM) and {} change log entries: {:.2f} s; checking a replica of "
                     "them: {:.2f} s",
                     kDevices, report->changes, migrate_s, check_s));
}

TEST_CASE("migrated history is trimmed like any other once newer changes pass the retention", "[migrate]") {
    TempDir dir;
    auto store = open_store(dir.path());
    fill_store(*store);
    const std::uint64_t last = store_last_seq(*store);
    REQUIRE(last > 4);
    FleetDb db;
    REQUIRE(migrate_to_fleet(*store, db.options).ok());
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) {
        return ok_of(v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
    });
    // Keep the newest 3: the new change and the last two migrated ones.
    auto removed = fleet->trim(3);
    REQUIRE(removed.ok());
    CHECK(*removed == last - 2);
    auto head = fleet->head();
    REQUIRE(head.ok());
    // Still the last migrated seq: what is left of that history is not replayable either.
    CHECK(head->trimmed_through == last);
    const Contents after = fleet_contents(*fleet);
    REQUIRE(after.changes.size() == 3);
    CHECK(after.changes.front().seq == last - 1);
    CHECK(*fleet->trim(100) == 0);
    CHECK(fleet->head()->trimmed_through == last);
}

TEST_CASE("the reports print as the JSON docs/fleet.md shows", "[migrate]") {
    ConsistencyReport r;
    r.compared_cas = 4;
    r.compared_devices = 5;
    r.replica_epoch = r.fleet_epoch = "e";
    r.replica_position = 16;
    r.fleet_head = 17;
    r.in_flight = 1;
    r.difference_count = 1;
    r.differences = {"device 0A/\xff: only in the fleet"};
    const auto j = nlohmann::json::parse(to_json(r));
    CHECK(j["Consistent"] == false);
    CHECK(j["BehindBy"] == 1);
    CHECK(j["InFlight"] == 1);
    CHECK(j["DifferenceCount"] == 1);
    CHECK(j["Differences"][0] == "device 0A/\xef\xbf\xbd: only in the fleet");
    MigrationReport m;
    m.devices = 3;
    m.meta_keys = {"instance_id"};
    const auto k = nlohmann::json::parse(to_json(m));
    CHECK(k["Devices"] == 3);
    CHECK(k["Renumbered"] == false);
    CHECK(k["MetaKeys"][0] == "instance_id");
}
