// The LMDB store as a fleet replica (replica.hpp). A second, ordinary store
// plays the fleet: its operations make the changes (one per transaction, so
// the record read right after is the record "as after the change"), its
// change log gives the fleet's seqs, and its records are what the replica
// must end up holding.
#include <catch2/catch.hpp>
#include <lmdb.h>

#include <thread>

#include "devcert/replica.hpp"
#include "record_format.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

constexpr const char* kEpoch = "epoch-1";

void require_ok(const Outcome& out) {
    if (!out) FAIL(out.error().message);
}

template <class T>
T require_value(Result<T> r) {
    if (!r) FAIL(r.error().message);
    return std::move(*r);
}

/// The fleet: an ordinary store whose changes become FleetChanges.
class FakeFleet {
public:
    FakeFleet() : store_(open_store(dir_.path())) {}

    Store& store() { return *store_; }
    const std::vector<FleetChange>& log() const { return log_; }

    std::uint64_t last_seq() {
        std::uint64_t seq = 0;
        must_read(*store_, [&](ReadView& v) {
            const auto next = *v.meta(store_format::kNextSeqKey);
            seq = next ? std::stoull(*next) - 1 : 0;
        });
        return seq;
    }

    /// Runs one operation in its own transaction; returns its changes.
    template <class Fn>
    std::vector<FleetChange> run(Fn&& fn) {
        const std::uint64_t before = last_seq();
        must_write(*store_, std::forward<Fn>(fn));
        std::vector<FleetChange> out;
        must_read(*store_, [&](ReadView& v) {
            const auto entries = *v.changes_after(before, 1'000'000);
            for (const ChangeEntry& e : entries) {
                FleetChange c;
                c.entry = e;
                if (e.new_status) {
                    if (e.device_sn.empty()) {
                        c.ca = **v.get_ca(e.ca_sn);
                        c.ca->device_count = 999;  // the fleet's count: a replica keeps its own
                    } else {
                        c.device = **v.get_device(e.ca_sn, e.device_sn);
                    }
                }
                out.push_back(std::move(c));
            }
        });
        log_.insert(log_.end(), out.begin(), out.end());
        return out;
    }

    void add_ca(const std::string& sn) {
        run([&](WriteView& v) { return v.insert_ca(make_ca(sn), "RegisterCaCertificate", "ops"); });
    }
    void add_device(const std::string& ca, const std::string& sn, CertStatus status = CertStatus::active) {
        run([&](WriteView& v) { return v.insert_device(make_device(ca, sn, status), "AutoRegister", "connection"); });
    }
    void set_device(const std::string& ca, const std::string& sn, CertStatus status) {
        run([&](WriteView& v) -> Outcome {
            auto r = v.set_device_status(ca, sn, status, "SetDevice", "ops");
            return r ? Outcome(Ok{}) : Outcome(r.error());
        });
    }
    void set_ca(const std::string& sn, CertStatus status) {
        run([&](WriteView& v) -> Outcome {
            auto r = v.set_ca_status(sn, status, "SetCa", "ops");
            return r ? Outcome(Ok{}) : Outcome(r.error());
        });
    }
    void delete_ca(const std::string& sn) {
        run([&](WriteView& v) -> Outcome {
            auto r = v.delete_ca(sn, "DeleteCaCertificate", "ops");
            return r ? Outcome(Ok{}) : Outcome(r.error());
        });
    }
    void delete_device(const std::string& ca, const std::string& sn) {
        run([&](WriteView& v) { return v.delete_device(ca, sn, "DeleteDeviceCertificate", "ops"); });
    }

    /// Changes with seq in [from, to].
    std::vector<FleetChange> changes(std::uint64_t from, std::uint64_t to) const {
        std::vector<FleetChange> out;
        for (const auto& c : log_)
            if (c.entry.seq >= from && c.entry.seq <= to) out.push_back(c);
        return out;
    }

    /// Streams every record like Fleet::snapshot (CAs in Sn order, then
    /// devices in key order) and returns the head.
    Result<FleetHead> snapshot(FleetSnapshotSink& sink) {
        std::vector<CaRecord> cas;
        std::vector<DeviceRecord> devices;
        must_read(*store_, [&](ReadView& v) {
            Page page(1, 100);
            for (;;) {
                auto r = *v.list_cas(page);
                cas.insert(cas.end(), r.items.begin(), r.items.end());
                if (r.next.empty()) break;
                page.after = r.next;
            }
            page = Page(1, 100);
            for (;;) {
                auto r = *v.list_devices(page);
                devices.insert(devices.end(), r.items.begin(), r.items.end());
                if (r.next.empty()) break;
                page.after = r.next;
            }
        });
        for (auto& ca : cas) {
            ca.device_count = 999;
            if (auto r = sink.ca(ca); !r) return r.error();
        }
        for (const auto& d : devices)
            if (auto r = sink.device(d); !r) return r.error();
        FleetHead head;
        head.epoch = kEpoch;
        head.last_seq = last_seq();
        return head;
    }

private:
    TempDir dir_;
    std::unique_ptr<Store> store_;
    std::vector<FleetChange> log_;
};

/// Loads the replica from the fleet as it stands.
FleetHead resync(Store& replica, FakeFleet& fleet, std::uint64_t expected_bytes = 0) {
    return require_value(replica_resync(
        replica, [&](FleetSnapshotSink& sink) { return fleet.snapshot(sink); }, expected_bytes));
}

/// Loads an empty replica at epoch kEpoch, seq 0.
void start_empty(Store& replica) {
    auto head = replica_resync(replica, [](FleetSnapshotSink&) -> Result<FleetHead> {
        FleetHead h;
        h.epoch = kEpoch;
        return h;
    });
    require_ok(head ? Outcome(Ok{}) : Outcome(head.error()));
}

std::size_t apply_all(Store& replica, const std::vector<FleetChange>& changes, const std::string& epoch = kEpoch) {
    return require_value(replica_apply(replica, epoch, changes));
}

/// Everything a reader can see of a store but its change log.
struct Contents {
    Records records;
    std::vector<std::optional<std::string>> by_ski;
};

Contents contents(Store& store, const std::vector<std::string>& skis) {
    Contents c;
    must_read(store, [&](ReadView& v) {
        REQUIRE(read_records(v, c.records).ok());
        for (const auto& ski : skis) c.by_ski.push_back(*v.ca_by_subject_key_id(ski));
    });
    return c;
}

void require_same(Store& replica, Store& fleet, const std::vector<std::string>& skis) {
    const Contents a = contents(replica, skis);
    const Contents b = contents(fleet, skis);
    require_same_records(a.records, b.records);
    CHECK(a.by_ski == b.by_ski);
}

std::vector<ChangeEntry> change_log(Store& store) {
    std::vector<ChangeEntry> log;
    must_read(store, [&](ReadView& v) { log = *v.changes_after(0, 1'000'000); });
    return log;
}

std::vector<std::string> queued_serials(Store& store) {
    std::vector<std::string> out;
    for (const auto& d : require_value(replica_queued_registrations(store, 1000)))
        out.push_back(d.ca_sn + "/" + d.device_sn);
    return out;
}

Outcome queue(Store& store, const DeviceRecord& rec, std::uint64_t max_queued = 100) {
    return store.write([&](WriteView& v) { return replica_queue_registration(v, rec, max_queued); });
}

/// A fleet with two CAs sharing nothing and some devices, and its history.
void build_history(FakeFleet& fleet) {
    fleet.add_ca("0a");
    fleet.add_ca("0b");
    for (int i = 1; i <= 4; ++i) fleet.add_device("0a", serial_for(static_cast<std::uint64_t>(i)));
    fleet.add_device("0b", serial_for(1));
    fleet.set_device("0a", serial_for(2), CertStatus::inactive);
    fleet.set_device("0a", serial_for(3), CertStatus::revoked);
    fleet.delete_device("0a", serial_for(4));
    fleet.set_ca("0b", CertStatus::inactive);
}

}  // namespace

TEST_CASE("a replica never loaded has no position and refuses changes", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    const auto pos = require_value(replica_position(*replica));
    CHECK(pos.epoch.empty());
    CHECK(pos.seq == 0);
    CHECK_FALSE(pos.digest.has_value());

    FakeFleet fleet;
    fleet.add_ca("0a");
    auto r = replica_apply(*replica, kEpoch, fleet.log());
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find("resynchronise") != std::string::npos);
}

TEST_CASE("a replica applies the fleet's changes in order and ends where the fleet is", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    build_history(fleet);
    const std::uint64_t last = fleet.last_seq();
    REQUIRE(last == 11);

    CHECK(apply_all(*replica, fleet.log()) == 11);
    require_same(*replica, fleet.store(), {"ski-0a", "ski-0b", "ski-0c"});

    // Counts the ordinary operations keep: 0a has devices 1..3, 0b has one.
    const Contents c = contents(*replica, {});
    REQUIRE(c.records.cas.size() == 2);
    CHECK(c.records.cas[0].device_count == 3);
    CHECK(c.records.cas[1].device_count == 1);
    CHECK(c.records.cas[1].status == CertStatus::inactive);

    // The log holds the fleet's entries under the fleet's seqs.
    const auto log = change_log(*replica);
    REQUIRE(log.size() == 11);
    for (std::size_t i = 0; i < log.size(); ++i) {
        CHECK(log[i].seq == fleet.log()[i].entry.seq);
        CHECK(log[i].action == fleet.log()[i].entry.action);
        CHECK(log[i].device_sn == fleet.log()[i].entry.device_sn);
        CHECK(log[i].new_status == fleet.log()[i].entry.new_status);
        CHECK(log[i].time_ms == fleet.log()[i].entry.time_ms);
    }

    const auto pos = require_value(replica_position(*replica));
    CHECK(pos.epoch == kEpoch);
    CHECK(pos.seq == last);
    REQUIRE(pos.digest.has_value());
    CHECK(*pos.digest == change_digest(fleet.log().back().entry));

    // The broker thread's view.
    StatusReader reader(*replica);
    REQUIRE(reader.refresh());
    DeviceStatusView d;
    REQUIRE(reader.device_status("0a", serial_for(1), d) == Lookup::found);
    CHECK(d.status == CertStatus::active);
    REQUIRE(reader.device_status("0a", serial_for(2), d) == Lookup::found);
    CHECK(d.status == CertStatus::inactive);
    REQUIRE(reader.device_status("0a", serial_for(3), d) == Lookup::found);
    CHECK(d.status == CertStatus::revoked);
    CHECK(reader.device_status("0a", serial_for(4), d) == Lookup::not_found);
    CertStatus ca = CertStatus::active;
    REQUIRE(reader.ca_status("0b", ca) == Lookup::found);
    CHECK(ca == CertStatus::inactive);
    std::uint64_t newest = 0;
    REQUIRE(reader.last_change_seq(newest) == Lookup::found);
    CHECK(newest == last);
    reader.release();

    // An ordinary write after the applies takes the next seq.
    must_write(*replica, [&](WriteView& v) { return v.insert_ca(make_ca("0c"), "R", "t"); });
    CHECK(change_log(*replica).back().seq == last + 1);
}

TEST_CASE("a replica skips what it applied and stops at a gap", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    build_history(fleet);

    CHECK(apply_all(*replica, fleet.changes(1, 3)) == 3);
    CHECK(apply_all(*replica, fleet.changes(2, 5)) == 2);  // 2 and 3 are duplicates
    CHECK(apply_all(*replica, fleet.changes(1, 5)) == 0);
    CHECK(require_value(replica_position(*replica)).seq == 5);

    // 6, 7, then a hole where 8 is: 9 to 11 wait.
    auto with_gap = fleet.changes(6, 7);
    for (const auto& c : fleet.changes(9, 11)) with_gap.push_back(c);
    CHECK(apply_all(*replica, with_gap) == 2);
    const auto pos = require_value(replica_position(*replica));
    CHECK(pos.seq == 7);
    CHECK(*pos.digest == change_digest(fleet.changes(7, 7).front().entry));
    CHECK(change_log(*replica).back().seq == 7);
    must_read(*replica, [&](ReadView& v) {
        // seq 8 inactivated device 2: not applied.
        CHECK((*v.get_device("0a", serial_for(2)))->status == CertStatus::active);
    });
    // A batch that starts after a gap applies nothing.
    CHECK(apply_all(*replica, fleet.changes(9, 11)) == 0);

    CHECK(apply_all(*replica, fleet.changes(8, 11)) == 4);
    require_same(*replica, fleet.store(), {"ski-0a", "ski-0b"});
}

TEST_CASE("a replica refuses changes of another epoch and changes nothing", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    build_history(fleet);
    auto r = replica_apply(*replica, "epoch-2", fleet.log());
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message.find("epoch-1") != std::string::npos);
    CHECK(r.error().message.find("epoch-2") != std::string::npos);
    CHECK(require_value(replica_position(*replica)).seq == 0);
    CHECK(contents(*replica, {}).records.cas.empty());
}

TEST_CASE("a replica's log keeps the retention with the fleet's seqs", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path(), 8ull << 20, 4);
    start_empty(*replica);
    FakeFleet fleet;
    build_history(fleet);
    CHECK(apply_all(*replica, fleet.changes(1, 3)) == 3);
    CHECK(apply_all(*replica, fleet.changes(4, 11)) == 8);
    const auto log = change_log(*replica);
    REQUIRE(log.size() == 4);
    CHECK(log.front().seq == 8);
    CHECK(log.back().seq == 11);
}

TEST_CASE("a replica keeps the SKI index when the fleet changes a CA's key", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    fleet.add_ca("0a");
    apply_all(*replica, fleet.log());
    FleetChange rekey = fleet.log().back();
    rekey.entry.seq = 2;
    rekey.ca->subject_key_id = "ski-new";
    CHECK(apply_all(*replica, std::vector<FleetChange>{rekey}) == 1);
    must_read(*replica, [&](ReadView& v) {
        CHECK_FALSE(v.ca_by_subject_key_id("ski-0a")->has_value());
        CHECK(**v.ca_by_subject_key_id("ski-new") == "0a");
        CHECK(*v.ca_count() == 1);
    });
}

TEST_CASE("removing a CA removes the devices the replica holds of it, queued ones too", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    fleet.add_ca("0a");
    fleet.add_ca("0b");
    fleet.add_device("0a", serial_for(1));
    apply_all(*replica, fleet.log());

    require_ok(queue(*replica, make_device("0a", serial_for(7))));
    require_ok(queue(*replica, make_device("0b", serial_for(8))));
    CHECK(require_value(replica_queue_length(*replica)) == 2);
    CHECK(contents(*replica, {}).records.device_count == 3);

    const std::uint64_t from = fleet.last_seq() + 1;
    fleet.delete_ca("0a");
    CHECK(apply_all(*replica, fleet.changes(from, fleet.last_seq())) == 2);  // device 1, then the CA
    must_read(*replica, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        CHECK_FALSE(v.get_device("0a", serial_for(7))->has_value());
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
        CHECK_FALSE(v.ca_by_subject_key_id("ski-0a")->has_value());
    });
    CHECK(queued_serials(*replica) == std::vector<std::string>{"0b/" + serial_for(8)});
}

TEST_CASE("a registration the fleet confirms leaves the queue and is counted once", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    fleet.add_ca("0a");
    apply_all(*replica, fleet.log());

    require_ok(queue(*replica, make_device("0a", serial_for(1))));
    require_ok(queue(*replica, make_device("0a", serial_for(2))));
    // The queued device is in the records at once, without a log entry.
    must_read(*replica, [&](ReadView& v) {
        CHECK((*v.get_device("0a", serial_for(1)))->content_pem == std::string(64, 'p'));
        CHECK(*v.device_count() == 2);
        CHECK((*v.get_ca("0a"))->device_count == 2);
    });
    CHECK(change_log(*replica).size() == 1);

    const std::uint64_t from = fleet.last_seq() + 1;
    fleet.add_device("0a", serial_for(1));
    CHECK(apply_all(*replica, fleet.changes(from, fleet.last_seq())) == 1);
    CHECK(queued_serials(*replica) == std::vector<std::string>{"0a/" + serial_for(2)});
    must_read(*replica, [&](ReadView& v) {
        CHECK(*v.device_count() == 2);
        CHECK((*v.get_ca("0a"))->device_count == 2);
    });
    CHECK(change_log(*replica).back().device_sn == serial_for(1));

    // The fleet removing a queued device: it leaves records and queue.
    FleetChange gone;
    gone.entry.seq = fleet.last_seq() + 1;
    gone.entry.action = "DeleteDeviceCertificate";
    gone.entry.ca_sn = "0a";
    gone.entry.device_sn = serial_for(2);
    gone.entry.old_status = CertStatus::active;
    CHECK(apply_all(*replica, std::vector<FleetChange>{gone}) == 1);
    CHECK(require_value(replica_queue_length(*replica)) == 0);
    must_read(*replica, [&](ReadView& v) {
        CHECK_FALSE(v.get_device("0a", serial_for(2))->has_value());
        CHECK(*v.device_count() == 1);
        CHECK((*v.get_ca("0a"))->device_count == 1);
    });
}

TEST_CASE("the registration queue keeps order, a bound, and drops", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    fleet.add_ca("0a");
    fleet.add_ca("0b");
    apply_all(*replica, fleet.log());

    // Inserted out of key order: the queue answers in insertion order.
    require_ok(queue(*replica, make_device("0b", serial_for(3)), 3));
    require_ok(queue(*replica, make_device("0a", serial_for(9)), 3));
    require_ok(queue(*replica, make_device("0a", serial_for(1)), 3));
    CHECK(queued_serials(*replica) ==
          std::vector<std::string>{"0b/" + serial_for(3), "0a/" + serial_for(9), "0a/" + serial_for(1)});
    const auto two = require_value(replica_queued_registrations(*replica, 2));
    REQUIRE(two.size() == 2);
    CHECK(two[1].device_sn == serial_for(9));
    CHECK(two[1].device_name == "device " + serial_for(9));
    CHECK(two[1].content_pem == std::string(64, 'p'));
    CHECK(two[1].fingerprint == make_device("0a", serial_for(9)).fingerprint);

    auto full = queue(*replica, make_device("0a", serial_for(4)), 3);
    REQUIRE_FALSE(full);
    CHECK(full.error().code == Errc::limit_exceeded);
    must_read(*replica, [&](ReadView& v) { CHECK_FALSE(v.get_device("0a", serial_for(4))->has_value()); });

    auto again = queue(*replica, make_device("0a", serial_for(9)), 10);
    REQUIRE_FALSE(again);
    CHECK(again.error().code == Errc::already_exists);
    auto no_ca = queue(*replica, make_device("0c", serial_for(1)), 10);
    REQUIRE_FALSE(no_ca);
    CHECK(no_ca.error().code == Errc::not_found);

    require_ok(replica_drop_registration(*replica, "0a", serial_for(9)));
    require_ok(replica_drop_registration(*replica, "0a", serial_for(9)));  // not queued: fine
    require_ok(replica_drop_registration(*replica, "0z", serial_for(1)));
    CHECK(require_value(replica_queue_length(*replica)) == 2);
    // Dropped from the queue, not from the records (the fleet answers for it).
    must_read(*replica, [&](ReadView& v) { CHECK(v.get_device("0a", serial_for(9))->has_value()); });
    require_ok(queue(*replica, make_device("0a", serial_for(4)), 3));
    CHECK(queued_serials(*replica) ==
          std::vector<std::string>{"0b/" + serial_for(3), "0a/" + serial_for(1), "0a/" + serial_for(4)});
}

TEST_CASE("the registration queue survives a reopen of the store", "[store][replica]") {
    TempDir dir;
    {
        auto replica = open_store(dir.path());
        start_empty(*replica);
        FakeFleet fleet;
        fleet.add_ca("0a");
        apply_all(*replica, fleet.log());
        require_ok(queue(*replica, make_device("0a", serial_for(2))));
        require_ok(queue(*replica, make_device("0a", serial_for(1))));
    }
    auto replica = open_store(dir.path());
    CHECK(queued_serials(*replica) == std::vector<std::string>{"0a/" + serial_for(2), "0a/" + serial_for(1)});
    const auto pos = require_value(replica_position(*replica));
    CHECK(pos.epoch == kEpoch);
    CHECK(pos.seq == 1);
    require_ok(queue(*replica, make_device("0a", serial_for(3))));
    CHECK(queued_serials(*replica).back() == "0a/" + serial_for(3));
}

TEST_CASE("a store made before the queue existed opens with an empty queue", "[store][replica]") {
    TempDir dir;
    {
        auto store = open_store(dir.path());
        must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    }
    {
        // Remove the queue's databases, as a store of an older build lacks them.
        MDB_env* env = nullptr;
        REQUIRE(mdb_env_create(&env) == 0);
        mdb_env_set_maxdbs(env, 16);
        REQUIRE(mdb_env_open(env, dir.path().c_str(), 0, 0600) == 0);
        MDB_txn* txn = nullptr;
        REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
        for (const char* name : {store_format::kQueueDb, store_format::kQueueOrderDb}) {
            MDB_dbi dbi = 0;
            REQUIRE(mdb_dbi_open(txn, name, 0, &dbi) == 0);
            REQUIRE(mdb_drop(txn, dbi, 1) == 0);
        }
        REQUIRE(mdb_txn_commit(txn) == 0);
        MDB_dbi dbi = 0;
        REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
        CHECK(mdb_dbi_open(txn, store_format::kQueueDb, 0, &dbi) == MDB_NOTFOUND);
        mdb_txn_abort(txn);
        mdb_env_close(env);
    }
    auto store = open_store(dir.path());
    CHECK(require_value(replica_queue_length(*store)) == 0);
    must_read(*store, [&](ReadView& v) { CHECK(*v.ca_count() == 1); });
}

TEST_CASE("a resync replaces the records in one commit an open snapshot does not see", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    // The replica's own past: records and a log the fleet does not have.
    must_write(*replica, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0f"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0f", serial_for(1)), "A", "t"); !r) return r;
        return v.begin_ca_deletion("0f", "DeleteCaCertificate", "t");
    });
    must_write(*replica, [&](WriteView& v) { return v.set_meta("instance_id", "mqtt-1"); });
    std::string token_key;
    must_read(*replica, [&](ReadView& v) { token_key = **v.meta(store_format::kPageTokenKey); });

    FakeFleet fleet;
    build_history(fleet);

    StatusReader reader(*replica);
    REQUIRE(reader.refresh());
    FleetHead head;
    std::thread writer([&] { head = resync(*replica, fleet); });
    writer.join();
    CHECK(head.epoch == kEpoch);
    CHECK(head.last_seq == 11);

    // The open snapshot still sees the old records.
    DeviceStatusView d;
    CHECK(reader.device_status("0f", serial_for(1), d) == Lookup::found);
    CHECK(reader.device_status("0a", serial_for(1), d) == Lookup::not_found);
    REQUIRE(reader.refresh());
    CHECK(reader.device_status("0f", serial_for(1), d) == Lookup::not_found);
    REQUIRE(reader.device_status("0a", serial_for(2), d) == Lookup::found);
    CHECK(d.status == CertStatus::inactive);
    std::uint64_t newest = 0;
    REQUIRE(reader.last_change_seq(newest) == Lookup::found);
    CHECK(newest == 11);
    reader.release();

    require_same(*replica, fleet.store(), {"ski-0a", "ski-0b", "ski-0f"});
    const auto log = change_log(*replica);
    REQUIRE(log.size() == 1);
    CHECK(log[0].seq == 11);
    CHECK(log[0].action == kResyncAction);
    CHECK(log[0].ca_sn.empty());
    CHECK_FALSE(log[0].new_status.has_value());
    must_read(*replica, [&](ReadView& v) {
        CHECK_FALSE(*v.ca_being_deleted("0f"));
        CHECK(**v.meta("instance_id") == "mqtt-1");
        CHECK(**v.meta(store_format::kPageTokenKey) == token_key);
    });
    const auto pos = require_value(replica_position(*replica));
    CHECK(pos.epoch == kEpoch);
    CHECK(pos.seq == 11);
    CHECK_FALSE(pos.digest.has_value());

    // It follows on from there.
    fleet.add_device("0b", serial_for(5));
    CHECK(apply_all(*replica, fleet.changes(12, 12)) == 1);
    require_same(*replica, fleet.store(), {});
    // An ordinary write would take the seq after the fleet's.
    must_write(*replica, [&](WriteView& v) { return v.insert_ca(make_ca("0c"), "R", "t"); });
    CHECK(change_log(*replica).back().seq == 13);
}

TEST_CASE("a resync keeps the queued registrations the snapshot lacks", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    start_empty(*replica);
    FakeFleet fleet;
    fleet.add_ca("0a");
    fleet.add_ca("0b");
    apply_all(*replica, fleet.log());
    require_ok(queue(*replica, make_device("0a", serial_for(1))));  // the fleet gets it meanwhile
    require_ok(queue(*replica, make_device("0a", serial_for(2))));  // still waiting
    require_ok(queue(*replica, make_device("0b", serial_for(3))));  // its CA goes
    fleet.add_device("0a", serial_for(1));
    fleet.delete_ca("0b");

    resync(*replica, fleet);
    CHECK(queued_serials(*replica) == std::vector<std::string>{"0a/" + serial_for(2)});
    must_read(*replica, [&](ReadView& v) {
        CHECK(v.get_device("0a", serial_for(1))->has_value());
        CHECK(v.get_device("0a", serial_for(2))->has_value());
        CHECK_FALSE(v.get_device("0b", serial_for(3))->has_value());
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 2);
        CHECK((*v.get_ca("0a"))->device_count == 2);
        CHECK((*v.get_device("0a", serial_for(2)))->content_pem == std::string(64, 'p'));
    });
}

TEST_CASE("a resync that outgrows the map runs again from scratch and loads everything", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path(), 256u << 10);
    const std::uint64_t before = replica->map_size();
    constexpr std::uint64_t kDevices = 3000;

    int calls = 0;
    auto snapshot = [&](FleetSnapshotSink& sink) -> Result<FleetHead> {
        ++calls;
        for (const char* sn : {"0a", "0b"}) {
            CaRecord ca = make_ca(sn);
            ca.device_count = 7;
            if (auto r = sink.ca(ca); !r) return r.error();
        }
        for (std::uint64_t i = 1; i <= kDevices; ++i)
            if (auto r = sink.device(make_device("0a", serial_for(i), CertStatus::active, 200)); !r) return r.error();
        if (auto r = sink.device(make_device("0b", serial_for(1))); !r) return r.error();
        FleetHead head;
        head.epoch = kEpoch;
        head.last_seq = 5000;
        return head;
    };
    const auto head = require_value(replica_resync(*replica, snapshot));
    CHECK(head.last_seq == 5000);
    CHECK(calls >= 2);
    CHECK(replica->map_size() > before);
    must_read(*replica, [&](ReadView& v) {
        CHECK(*v.ca_count() == 2);
        CHECK(*v.device_count() == kDevices + 1);
        CHECK((*v.get_ca("0a"))->device_count == kDevices);
        CHECK((*v.get_ca("0b"))->device_count == 1);
        CHECK((*v.get_device("0a", serial_for(kDevices)))->content_pem.size() == 200);
        CHECK(**v.ca_by_subject_key_id("ski-0b") == "0b");
        std::uint64_t listed = 0;
        Page page(1, 100);
        for (;;) {
            auto r = *v.list_devices(page);
            listed += r.items.size();
            if (r.next.empty()) break;
            page.after = r.next;
        }
        CHECK(listed == kDevices + 1);
        const auto log = *v.changes_after(0, 10);
        REQUIRE(log.size() == 1);
        CHECK(log[0].seq == 5000);
    });
}

TEST_CASE("a resync told the snapshot's size grows the map once up front", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path(), 256u << 10);
    int calls = 0;
    auto snapshot = [&](FleetSnapshotSink& sink) -> Result<FleetHead> {
        ++calls;
        if (auto r = sink.ca(make_ca("0a")); !r) return r.error();
        for (std::uint64_t i = 1; i <= 3000; ++i)
            if (auto r = sink.device(make_device("0a", serial_for(i), CertStatus::active, 200)); !r) return r.error();
        FleetHead head;
        head.epoch = kEpoch;
        return head;
    };
    require_value(replica_resync(*replica, snapshot, 3000 * 320));
    CHECK(calls == 1);
    CHECK(replica->map_size() >= 2 * 3000 * 320);
    const auto log = change_log(*replica);
    CHECK(log.empty());  // head seq 0: no entry
}

TEST_CASE("a snapshot out of key order still loads, a duplicate does not", "[store][replica]") {
    TempDir dir;
    auto replica = open_store(dir.path());
    auto unordered = [](FleetSnapshotSink& sink) -> Result<FleetHead> {
        for (const char* sn : {"0b", "0a"})
            if (auto r = sink.ca(make_ca(sn)); !r) return r.error();
        for (const char* sn : {"02", "01"})
            if (auto r = sink.device(make_device("0a", sn)); !r) return r.error();
        FleetHead head;
        head.epoch = kEpoch;
        head.last_seq = 3;
        return head;
    };
    require_value(replica_resync(*replica, unordered));
    must_read(*replica, [&](ReadView& v) {
        CHECK(*v.ca_count() == 2);
        CHECK((*v.get_ca("0a"))->device_count == 2);
        CHECK(v.list_cas(Page(1, 10))->items.front().sn == "0a");
    });

    auto twice = [](FleetSnapshotSink& sink) -> Result<FleetHead> {
        for (const char* sn : {"0a", "0a"})
            if (auto r = sink.ca(make_ca(sn)); !r) return r.error();
        FleetHead head;
        head.epoch = "epoch-2";
        return head;
    };
    auto r = replica_resync(*replica, twice);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Errc::store_error);
    // Nothing changed.
    CHECK(require_value(replica_position(*replica)).epoch == kEpoch);
    must_read(*replica, [&](ReadView& v) { CHECK(*v.ca_count() == 2); });
}
