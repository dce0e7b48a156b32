// A broker's membership of a fleet (FleetNode) against a real PostgreSQL:
// start-up catch-up, following another member's writes, the registration
// queue, outages and rebuilds. The brokers themselves are in the end-to-end
// tests; here two nodes over two replicas stand for two of them.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "devcert/fleet_node.hpp"
#include "devcert/replica.hpp"
#include "fleet_fixture.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

/// One member: a replica in a temporary directory and its node.
struct Member {
    TempDir dir;
    std::unique_ptr<Store> store;
    std::unique_ptr<FleetNode> node;
    std::atomic<unsigned> applied{0};
    std::mutex lines_mutex;
    std::vector<std::string> lines;
    std::size_t fetch_limit = FleetNodeOptions{}.fetch_limit;

    explicit Member(std::uint64_t retention = 1'000'000) { store = open_store(dir.path(), 8ull << 20, retention); }

    Outcome start(const FleetDb& db, std::uint64_t retention = 1'000'000) {
        FleetNodeOptions o;
        o.fleet = db.options;
        o.poll_interval = std::chrono::milliseconds(100);
        o.trim_interval = std::chrono::seconds(0);
        o.log_retention = retention;
        o.fetch_limit = fetch_limit;
        auto started = FleetNode::start(
            *store, o, [this] { applied.fetch_add(1); },
            [this](FleetLogLevel, std::string line) {
                std::lock_guard lock(lines_mutex);
                lines.push_back(std::move(line));
            });
        if (!started) return started.error();
        node = std::move(*started);
        return Ok{};
    }

    void must_start(const FleetDb& db, std::uint64_t retention = 1'000'000) {
        if (auto ok = start(db, retention); !ok) FAIL(ok.error().message);
    }

    std::size_t lines_containing(std::string_view text) {
        std::lock_guard lock(lines_mutex);
        return static_cast<std::size_t>(
            std::count_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.find(text) != l.npos; }));
    }

    std::optional<CertStatus> device_status(const std::string& ca, const std::string& dev) {
        std::optional<CertStatus> out;
        const Outcome ok = store->read([&](ReadView& r) -> Outcome {
            auto d = r.get_device(ca, dev);
            if (!d) return d.error();
            out = *d ? std::optional<CertStatus>((*d)->status) : std::nullopt;
            return Ok{};
        });
        if (!ok) FAIL(ok.error().message);
        return out;
    }

    std::uint64_t position() {
        auto p = replica_position(*store);
        if (!p) FAIL(p.error().message);
        return p->seq;
    }
};

bool eventually(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
        if (done()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return done();
}

void seed(Fleet& fleet, int devices) {
    must_commit(fleet, [&](WriteView& v) -> Outcome {
        if (auto ok = v.insert_ca(make_ca("0c01"), "RegisterCaCertificate", "test"); !ok) return ok;
        for (int i = 0; i < devices; ++i) {
            if (auto ok = v.insert_device(make_device("0c01", serial_for(static_cast<std::uint64_t>(i))),
                                          "AutoRegister", "test");
                !ok)
                return ok;
        }
        return Ok{};
    });
}

Outcome set_status(RecordAccess& member, const std::string& dev, CertStatus status) {
    return member.write([&](WriteView& v) -> Outcome {
        auto r = v.set_device_status("0c01", dev, status, "InactivateDeviceCertificate", "test");
        if (!r) return r.error();
        return Ok{};
    });
}

}  // namespace

TEST_CASE("a new member loads the fleet before start() returns and follows another member's writes",
          "[fleet][node]") {
    FleetDb db;
    seed(*db.connect(), 50);
    Member a;
    Member b;
    a.must_start(db);
    b.must_start(db);
    // Loaded from a snapshot: every record, at the fleet's head.
    CHECK(a.device_status("0c01", serial_for(7)) == CertStatus::active);
    CHECK(a.position() == 51);
    CHECK(a.node->fleet_stats()->resyncs == 1);
    CHECK(a.node->fleet_stats()->connected);

    // A write through A is in A's replica when write() returns...
    REQUIRE(set_status(*a.node, serial_for(7), CertStatus::inactive));
    CHECK(a.device_status("0c01", serial_for(7)) == CertStatus::inactive);
    // ...and reaches B's replica through the log, under the same seq.
    CHECK(eventually([&] { return b.device_status("0c01", serial_for(7)) == CertStatus::inactive; }));
    CHECK(b.position() == 52);
    CHECK(b.applied.load() > 0);

    std::vector<ChangeEntry> log_a;
    std::vector<ChangeEntry> log_b;
    REQUIRE(a.store->read([&](ReadView& r) -> Outcome {
        auto c = r.changes_after(51, 10);
        if (!c) return c.error();
        log_a = *c;
        return Ok{};
    }));
    REQUIRE(b.store->read([&](ReadView& r) -> Outcome {
        auto c = r.changes_after(51, 10);
        if (!c) return c.error();
        log_b = *c;
        return Ok{};
    }));
    REQUIRE(log_a.size() == 1);
    REQUIRE(log_b.size() == 1);
    CHECK(log_a[0].seq == 52);
    CHECK(log_b[0].seq == 52);
    CHECK(log_b[0].new_status == CertStatus::inactive);
}

TEST_CASE("a member's write answers with its replica holding every change committed before its own",
          "[fleet][node]") {
    // A's changes come straight through the fleet, B's write right after
    // them: B's commit reads them, or B fetches them when they are more than
    // one read holds (a fetch limit of 2), or its follower brings them.
    const std::size_t limit = GENERATE(std::size_t{2000}, std::size_t{2});
    FleetDb db;
    seed(*db.connect(), 20);
    Member b;
    b.fetch_limit = limit;
    b.must_start(db);
    auto a = db.connect();
    for (int round = 0; round < 5; ++round) {
        for (int i = 0; i < 3; ++i) {
            const std::string dev = serial_for(static_cast<std::uint64_t>(round * 3 + i));
            must_commit(*a, [&](WriteView& v) -> Outcome {
                auto r = v.set_device_status("0c01", dev, CertStatus::inactive, "InactivateDeviceCertificate", "a");
                return r ? Outcome(Ok{}) : Outcome(r.error());
            });
        }
        const std::string own = serial_for(19);
        REQUIRE(set_status(*b.node, own, round % 2 ? CertStatus::active : CertStatus::inactive));
        const std::uint64_t head = a->head()->last_seq;
        CHECK(b.position() == head);
        for (int i = 0; i < 3; ++i)
            CHECK(b.device_status("0c01", serial_for(static_cast<std::uint64_t>(round * 3 + i))) ==
                  CertStatus::inactive);
        CHECK(b.device_status("0c01", own) == (round % 2 ? CertStatus::active : CertStatus::inactive));
    }
}

TEST_CASE("a write refused by the fleet's rules changes nothing anywhere and answers like the store",
          "[fleet][node]") {
    FleetDb db;
    seed(*db.connect(), 2);
    Member a;
    a.must_start(db);
    REQUIRE(set_status(*a.node, serial_for(0), CertStatus::revoked));
    const Outcome again = set_status(*a.node, serial_for(0), CertStatus::active);
    REQUIRE_FALSE(again);
    CHECK(again.error().code == Errc::revoked);
    const Outcome missing = set_status(*a.node, "ffff", CertStatus::inactive);
    REQUIRE_FALSE(missing);
    CHECK(missing.error().code == Errc::not_found);
    CHECK(a.device_status("0c01", serial_for(0)) == CertStatus::revoked);
    CHECK(db.connect()->head()->last_seq == 4);
}

TEST_CASE("registrations queued in the replica reach the fleet once, even from two members at once",
          "[fleet][node]") {
    FleetDb db;
    seed(*db.connect(), 0);
    Member a;
    Member b;
    a.must_start(db);
    b.must_start(db);
    // Both members saw the same new device connect before either heard of it.
    for (Member* m : {&a, &b}) {
        must_write(*m->store, [&](WriteView& w) -> Outcome {
            return replica_queue_registration(w, make_device("0c01", "d00d"), 100);
        });
        m->node->registration_queued();
    }
    auto fleet = db.connect();
    CHECK(eventually([&] {
        return a.node->fleet_stats()->queued_registrations == 0 && b.node->fleet_stats()->queued_registrations == 0;
    }));
    std::uint64_t records = 0;
    std::vector<ChangeEntry> changes;
    REQUIRE(fleet->read([&](ReadView& r) -> Outcome {
        auto n = r.device_count();
        if (!n) return n.error();
        records = *n;
        auto c = r.changes_after(0, 100);
        if (!c) return c.error();
        changes = *c;
        return Ok{};
    }));
    CHECK(records == 1);
    const auto registrations = std::count_if(changes.begin(), changes.end(), [](const ChangeEntry& e) {
        return e.device_sn == "d00d";
    });
    CHECK(registrations == 1);
    // Both replicas hold the fleet's entry under its seq.
    CHECK(eventually([&] { return a.position() == 2 && b.position() == 2; }));
}

TEST_CASE("a registration the fleet holds as inactive gives way to the fleet's record in the replica",
          "[fleet][node]") {
    FleetDb db;
    seed(*db.connect(), 0);
    Member a;
    a.must_start(db);
    a.node.reset();  // stopped: it cannot hear of what follows
    must_commit(*db.connect(), [](WriteView& v) -> Outcome {
        return v.insert_device(make_device("0c01", "bad0", CertStatus::inactive), "RegisterDeviceCertificate", "ops");
    });
    // The device connects to A (its replica does not know it yet).
    must_write(*a.store, [&](WriteView& w) -> Outcome {
        return replica_queue_registration(w, make_device("0c01", "bad0"), 100);
    });
    CHECK(a.device_status("0c01", "bad0") == CertStatus::active);
    a.must_start(db);
    CHECK(a.device_status("0c01", "bad0") == CertStatus::inactive);
    CHECK(eventually([&] { return a.node->fleet_stats()->queued_registrations == 0; }));
    // The replica's log has the fleet's entry: the broker thread kicks from it.
    std::vector<ChangeEntry> log;
    REQUIRE(a.store->read([&](ReadView& r) -> Outcome {
        auto c = r.changes_after(0, 10);
        if (!c) return c.error();
        log = *c;
        return Ok{};
    }));
    REQUIRE_FALSE(log.empty());
    CHECK(log.back().device_sn == "bad0");
    CHECK(log.back().new_status == CertStatus::inactive);
}

TEST_CASE("a member behind the retained log rebuilds from a snapshot when it starts", "[fleet][node]") {
    FleetDb db;
    seed(*db.connect(), 10);
    Member a;
    a.must_start(db);
    const std::uint64_t before = a.position();
    const std::size_t rebuilds = a.lines_containing("rebuilding the replica from a snapshot");
    CHECK(rebuilds == 1);  // the first start: a replica never loaded
    a.node.reset();
    auto fleet = db.connect();
    for (int round = 0; round < 3; ++round) {
        must_commit(*fleet, [&](WriteView& v) -> Outcome {
            for (int i = 0; i < 10; ++i) {
                auto r = v.set_device_status("0c01", serial_for(static_cast<std::uint64_t>(i)),
                                             round % 2 == 0 ? CertStatus::inactive : CertStatus::active, "x", "test");
                if (!r) return r.error();
            }
            return Ok{};
        });
    }
    REQUIRE(fleet->trim(5));
    a.must_start(db);
    CHECK(a.position() == before + 30);
    CHECK(a.node->fleet_stats()->resyncs == 1);
    CHECK(a.device_status("0c01", serial_for(3)) == CertStatus::inactive);
    CHECK(a.lines_containing("rebuilding the replica from a snapshot") == rebuilds + 1);
}

TEST_CASE("an unknown instance or a missing schema stops the start, naming it", "[fleet][node]") {
    FleetDb db;
    Member a;
    FleetOptions wrong = db.options;
    wrong.instance_id = "no-such-instance";
    FleetNodeOptions o;
    o.fleet = wrong;
    auto started = FleetNode::start(*a.store, o, {}, {});
    REQUIRE_FALSE(started);
    CHECK(started.error().code == Errc::not_found);
    CHECK_THAT(started.error().message, Catch::Contains("no-such-instance"));

    FleetNodeOptions bare;
    bare.fleet = fleet_options(PgServer::shared().create_database());
    auto unschemed = FleetNode::start(*a.store, bare, {}, {});
    REQUIRE_FALSE(unschemed);
    CHECK(unschemed.error().code == Errc::schema_mismatch);
}

TEST_CASE("with PostgreSQL down, writes fail at once and change nothing, reads answer, and the member catches up",
          "[fleet][node-outage]") {
    FleetDb db;
    seed(*db.connect(), 5);
    Member a;
    Member b;
    a.must_start(db);
    b.must_start(db);

    PgServer::shared().stop();
    const auto started = std::chrono::steady_clock::now();
    const Outcome refused = set_status(*a.node, serial_for(1), CertStatus::inactive);
    const auto took = std::chrono::steady_clock::now() - started;
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == Errc::unavailable);
    CHECK(took < std::chrono::seconds(3));
    CHECK(a.device_status("0c01", serial_for(1)) == CertStatus::active);
    CHECK(eventually([&] { return a.lines_containing("cannot reach the fleet database") == 1; }));
    CHECK_FALSE(a.node->fleet_stats()->connected);

    // A member that starts now starts from its replica.
    b.node.reset();
    b.must_start(db);
    CHECK(b.device_status("0c01", serial_for(2)) == CertStatus::active);

    // A first connection during the outage waits in the queue.
    must_write(*a.store, [&](WriteView& w) -> Outcome {
        return replica_queue_registration(w, make_device("0c01", "ab01"), 100);
    });
    a.node->registration_queued();

    PgServer::shared().start();
    CHECK(eventually([&] { return a.lines_containing("fleet database is reachable again") == 1; }));
    CHECK(eventually([&] { return a.node->fleet_stats()->queued_registrations == 0; }));
    // B learns of A's registration through the log.
    CHECK(eventually([&] { return b.device_status("0c01", "ab01") == CertStatus::active; }));
    REQUIRE(set_status(*b.node, serial_for(1), CertStatus::inactive));
    CHECK(eventually([&] { return a.device_status("0c01", serial_for(1)) == CertStatus::inactive; }));
    CHECK(a.lines_containing("cannot reach the fleet database") == 1);
    CHECK(a.lines_containing("reachable again") == 1);
}

TEST_CASE("a member whose replica was never loaded does not start without the fleet", "[fleet][node-outage]") {
    FleetDb db;
    Member a;
    PgServer::shared().stop();
    FleetNodeOptions o;
    o.fleet = db.options;
    auto started = FleetNode::start(*a.store, o, {}, {});
    PgServer::shared().start();
    REQUIRE_FALSE(started);
    CHECK(started.error().code == Errc::unavailable);
    CHECK_THAT(started.error().message, Catch::Contains("never loaded"));
}
