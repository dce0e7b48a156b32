// What a follower gets from the fleet: the committed changes with their
// records, notifications, changes after a position, snapshots, trimming.
#include <catch2/catch.hpp>
#include <libpq-fe.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "devcert/fleet_follower.hpp"
#include "fleet_fixture.hpp"
#include "pg.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

Outcome status_outcome(const Result<CertStatus>& r) { return r ? Outcome(Ok{}) : Outcome(r.error()); }

/// Ends every session of the plugin's (by its application_name) from
/// another one. At least one must be there: a session closed a moment ago
/// may still be listed while its backend exits.
void terminate_plugin_sessions(const std::string& conninfo) {
    PGconn* admin = PQconnectdb((conninfo + " application_name=devcert-test-admin").c_str());
    REQUIRE(PQstatus(admin) == CONNECTION_OK);
    PGresult* res = PQexec(admin,
                           "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                           "AND application_name = 'mosquitto-devcert'");
    const bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) >= 1;
    PQclear(res);
    PQfinish(admin);
    REQUIRE(ok);
}

/// A raw connection LISTENing on a channel.
class Listener {
public:
    Listener(const std::string& conninfo, const std::string& channel) : conn_(PQconnectdb(conninfo.c_str())) {
        REQUIRE(PQstatus(conn_) == CONNECTION_OK);
        PGresult* res = PQexec(conn_, ("LISTEN " + channel).c_str());
        REQUIRE(PQresultStatus(res) == PGRES_COMMAND_OK);
        PQclear(res);
    }
    ~Listener() { PQfinish(conn_); }
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;

    /// Payloads of the notifications that arrive within `wait`.
    std::vector<std::string> receive(std::chrono::milliseconds wait) {
        std::vector<std::string> out;
        const auto deadline = std::chrono::steady_clock::now() + wait;
        for (;;) {
            PQconsumeInput(conn_);
            while (PGnotify* n = PQnotifies(conn_)) {
                out.emplace_back(n->extra);
                PQfreemem(n);
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                                    std::chrono::steady_clock::now());
            if (left.count() <= 0 || !out.empty()) return out;
            pollfd p{PQsocket(conn_), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()));
        }
    }

private:
    PGconn* conn_;
};

/// Commits CA 0a and its devices serial_for(1..n) in one write: changes 1 to n + 1.
void commit_ca_and_devices(Fleet& fleet, std::uint64_t n) {
    must_commit(fleet, [n](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= n; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i)), "A", "t"); !r) return r;
        return Ok{};
    });
}

class CollectingSink : public FleetSnapshotSink {
public:
    std::vector<CaRecord> cas;
    std::vector<DeviceRecord> devices;
    std::function<void()> on_first_ca;
    Outcome ca(const CaRecord& rec) override {
        if (cas.empty() && on_first_ca) on_first_ca();
        cas.push_back(rec);
        return Ok{};
    }
    Outcome device(const DeviceRecord& rec) override {
        devices.push_back(rec);
        return Ok{};
    }
};

}  // namespace

TEST_CASE("a write returns its committed changes with their seqs and the records after them", "[fleet][log]") {
    FleetDb db;
    auto fleet = db.connect();
    const auto created = must_commit(*fleet, [](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "ops"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "AutoRegister", "connection");
    });
    REQUIRE(created.size() == 2);
    CHECK(created[0].entry.seq == 1);
    REQUIRE(created[0].ca.has_value());
    CHECK(created[0].ca->name == "ca 0a");
    CHECK(created[0].ca->subject_key_id == "ski-0a");
    CHECK_FALSE(created[0].device.has_value());
    CHECK(created[1].entry.seq == 2);
    REQUIRE(created[1].device.has_value());
    CHECK(created[1].device->content_pem == std::string(64, 'p'));

    const auto changed = must_commit(*fleet, [](WriteView& v) {
        return status_outcome(v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
    });
    REQUIRE(changed.size() == 1);
    CHECK(changed[0].entry.seq == 3);
    REQUIRE(changed[0].device.has_value());
    CHECK(changed[0].device->status == CertStatus::inactive);
    CHECK(changed[0].device->status_changed_ms == changed[0].entry.time_ms);

    const auto nothing = must_commit(*fleet, [](WriteView& v) {
        return status_outcome(v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
    });
    CHECK(nothing.empty());

    const auto removed = must_commit(*fleet, [](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "DeleteCaCertificate", "ops");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    REQUIRE(removed.size() == 2);
    CHECK(removed[0].entry.seq == 4);
    CHECK_FALSE(removed[0].device.has_value());
    CHECK_FALSE(removed[1].ca.has_value());
    CHECK(fleet->head()->last_seq == 5);
}

TEST_CASE("a commit notifies the instance's channel with its last seq", "[fleet][log]") {
    FleetDb db;
    auto fleet = db.connect();
    Listener listener(db.conninfo, fleet_channel("fleet-test"));
    must_commit(*fleet, [](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "A", "t");
    });
    CHECK(listener.receive(std::chrono::seconds(5)) == std::vector<std::string>{"2"});
    // A transaction that changes nothing says nothing.
    must_commit(*fleet, [](WriteView& v) { return v.set_meta("instance_id", "x"); });
    CHECK(listener.receive(std::chrono::milliseconds(300)).empty());
    std::vector<Outcome> results;
    REQUIRE(fleet
                ->write_batch({[](WriteView& v) { return v.insert_device(make_device("0a", "02"), "A", "t"); },
                               [](WriteView& v) { return v.insert_device(make_device("0a", "03"), "A", "t"); }},
                              results)
                .ok());
    CHECK(listener.receive(std::chrono::seconds(5)) == std::vector<std::string>{"4"});
}

TEST_CASE("a listening fleet connection wakes up on another broker's commit", "[fleet][log]") {
    FleetDb db;
    auto writer = db.connect();
    auto follower = db.connect();
    CHECK(follower->wait_for_commit(std::chrono::milliseconds(10)).error().code == Errc::invalid_argument);
    REQUIRE(follower->listen().ok());
    CHECK(*follower->wait_for_commit(std::chrono::milliseconds(200)) == false);
    must_commit(*writer, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    must_commit(*writer, [](WriteView& v) { return v.insert_ca(make_ca("0b"), "R", "t"); });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));  // both notifications are on their way
    const auto start = std::chrono::steady_clock::now();
    CHECK(*follower->wait_for_commit(std::chrono::seconds(5)) == true);
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    // Both notifications were consumed at once; the newer names its head.
    CHECK(follower->heard_through() == std::optional<std::uint64_t>(2));
    CHECK(*follower->wait_for_commit(std::chrono::milliseconds(100)) == false);
    CHECK_FALSE(follower->heard_through());

    // A notification naming no change (sent by hand) wakes it, naming nothing.
    auto other = pg::Conn::open(db.conninfo, 10);
    REQUIRE(other.ok());
    REQUIRE(other->exec("notify", "SELECT pg_notify($1, 'hello')", {fleet_channel("fleet-test")}).ok());
    REQUIRE(other->exec("notify", "SELECT pg_notify($1, '7')", {fleet_channel("fleet-test")}).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    CHECK(*follower->wait_for_commit(std::chrono::seconds(5)) == true);
    CHECK_FALSE(follower->heard_through());

    // After the database restarts, the next call reconnects and listens again.
    auto& server = PgServer::shared();
    server.stop();
    CHECK_FALSE(follower->wait_for_commit(std::chrono::milliseconds(100)).ok());
    server.start();
    REQUIRE(follower->head().ok());
    must_commit(*writer, [](WriteView& v) { return v.insert_ca(make_ca("0c"), "R", "t"); });
    CHECK(*follower->wait_for_commit(std::chrono::seconds(5)) == true);
}

TEST_CASE("changes after a position come with the head and the anchor entry from one snapshot", "[fleet][log]") {
    FleetDb db;
    auto fleet = db.connect();
    commit_ca_and_devices(*fleet, 5);
    auto batch = fleet->changes_after(2, 3);
    REQUIRE(batch.ok());
    CHECK(batch->head.last_seq == 6);
    CHECK(batch->head.epoch == fleet->head()->epoch);
    REQUIRE(batch->anchor.has_value());
    CHECK(batch->anchor->entry.seq == 2);
    REQUIRE(batch->changes.size() == 3);
    CHECK(batch->changes[0].entry.seq == 3);
    CHECK(batch->changes[2].entry.seq == 5);
    REQUIRE(batch->changes[2].device.has_value());
    CHECK(batch->changes[2].device->device_sn == serial_for(4));
    CHECK(batch->changes[2].device->fingerprint == make_device("0a", serial_for(4)).fingerprint);

    auto from_start = fleet->changes_after(0, 100);
    REQUIRE(from_start.ok());
    CHECK_FALSE(from_start->anchor.has_value());
    CHECK(from_start->changes.size() == 6);
    auto end = fleet->changes_after(6, 100);
    REQUIRE(end.ok());
    CHECK(end->changes.empty());
    CHECK(end->anchor->entry.seq == 6);

    // A follower that applied entry 2 recognises it; one that applied
    // something else under that number is told to resync.
    FollowerPosition pos{batch->head.epoch, 2, change_digest(batch->anchor->entry)};
    CHECK(plan_follow(pos, *batch).action == FollowAction::apply);
    pos.digest = *pos.digest + 1;
    CHECK(plan_follow(pos, *batch).action == FollowAction::resync);
}

TEST_CASE("a write's catch-up holds the log up to its own changes, read in its transaction", "[fleet][log]") {
    FleetDb db;
    auto a = db.connect();
    auto b = db.connect();
    commit_ca_and_devices(*a, 3);

    // b's replica applied change 1; a committed 2-4 since.
    FleetCatchUp catch_up{1, 100, std::nullopt};
    auto own = b->write([](WriteView& v) { return v.insert_device(make_device("0a", serial_for(4)), "A", "t"); },
                        &catch_up);
    REQUIRE(own.ok());
    REQUIRE(own->size() == 1);
    CHECK(own->front().entry.seq == 5);
    REQUIRE(catch_up.batch.has_value());
    const FleetChangeBatch& before = *catch_up.batch;
    CHECK(before.head.last_seq == 4);  // the change before b's own
    CHECK(before.head.epoch == a->head()->epoch);
    REQUIRE(before.anchor.has_value());
    CHECK(before.anchor->entry.seq == 1);
    REQUIRE(before.changes.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(before.changes[i].entry.seq == i + 2);
        REQUIRE(before.changes[i].device.has_value());
        CHECK(before.changes[i].device->device_sn == serial_for(i + 1));
    }
    // What a follower at change 1 would do with it: apply 2-4.
    const FollowPlan plan = plan_follow({before.head.epoch, 1, change_digest(before.anchor->entry)}, before);
    CHECK(plan.action == FollowAction::apply);
    CHECK(plan.new_seq == 4);

    SECTION("a batch with a refused job: the head is still the change before the first committed") {
        FleetCatchUp up{5, 100, std::nullopt};
        must_commit(*a, [](WriteView& v) { return v.insert_device(make_device("0a", serial_for(5)), "A", "t"); });
        std::vector<Outcome> results;
        auto batch = b->write_batch(
            {[](WriteView& v) -> Outcome {
                 if (auto r = v.insert_device(make_device("0a", serial_for(6)), "A", "t"); !r) return r;
                 (void)v.changes_after(0, 1);  // numbers what is pending, then undone
                 return make_error(Errc::invalid_argument, "refused");
             },
             [](WriteView& v) { return v.insert_device(make_device("0a", serial_for(7)), "A", "t"); },
             [](WriteView& v) { return v.insert_device(make_device("0a", serial_for(8)), "A", "t"); }},
            results, &up);
        REQUIRE(batch.ok());
        REQUIRE(batch->size() == 2);
        CHECK(batch->front().entry.seq == 7);
        REQUIRE(up.batch.has_value());
        CHECK(up.batch->head.last_seq == 6);
        CHECK(up.batch->anchor->entry.seq == 5);
        REQUIRE(up.batch->changes.size() == 1);
        CHECK(up.batch->changes[0].entry.seq == 6);
    }
    SECTION("no more than the limit") {
        FleetCatchUp up{0, 2, std::nullopt};
        REQUIRE(b->write([](WriteView& v) { return v.insert_device(make_device("0a", serial_for(5)), "A", "t"); },
                         &up)
                    .ok());
        REQUIRE(up.batch.has_value());
        CHECK(up.batch->head.last_seq == 5);
        CHECK_FALSE(up.batch->anchor.has_value());
        REQUIRE(up.batch->changes.size() == 2);
        CHECK(up.batch->changes[1].entry.seq == 2);
    }
    SECTION("none when the write changes nothing or fails") {
        FleetCatchUp up{0, 100, FleetChangeBatch{}};
        REQUIRE(b->write([](WriteView&) -> Outcome { return Ok{}; }, &up).ok());
        CHECK_FALSE(up.batch.has_value());
        up.batch = FleetChangeBatch{};
        auto refused = b->write(
            [](WriteView& v) -> Outcome {
                if (auto r = v.insert_device(make_device("0a", serial_for(9)), "A", "t"); !r) return r;
                return make_error(Errc::invalid_argument, "refused");
            },
            &up);
        CHECK_FALSE(refused.ok());
        CHECK_FALSE(up.batch.has_value());
        CHECK(a->head()->last_seq == 5);
    }
}

TEST_CASE("a snapshot holds exactly the state at its head, in key order", "[fleet][log][snapshot]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) -> Outcome {
        for (const char* ca : {"0b", "0a"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        for (std::uint64_t i = 40; i >= 1; --i)
            if (auto r = v.insert_device(make_device(i % 2 ? "0a" : "0b", serial_for(i), CertStatus::active, 900),
                                         "A", "t");
                !r)
                return r;
        return status_outcome(v.set_device_status("0a", serial_for(3), CertStatus::revoked, "R", "t"));
    });
    // A write committed while the snapshot streams is not part of it.
    auto other = db.connect();
    CollectingSink sink;
    sink.on_first_ca = [&] {
        must_commit(*other, [](WriteView& v) { return v.insert_device(make_device("0a", "ff"), "A", "t"); });
    };
    auto head = fleet->snapshot(sink);
    REQUIRE(head.ok());
    CHECK(head->last_seq == 43);
    CHECK(fleet->head()->last_seq == 44);
    REQUIRE(sink.cas.size() == 2);
    CHECK(sink.cas[0].sn == "0a");
    CHECK(sink.cas[0].device_count == 20);
    CHECK(sink.cas[1].subject_key_id == "ski-0b");
    CHECK(sink.cas[1].fingerprint == make_ca("0b").fingerprint);
    REQUIRE(sink.devices.size() == 40);
    for (std::size_t i = 1; i < sink.devices.size(); ++i) {
        const auto& a = sink.devices[i - 1];
        const auto& b = sink.devices[i];
        CHECK(std::tie(a.ca_sn, a.device_sn) < std::tie(b.ca_sn, b.device_sn));
    }
    const DeviceRecord& third = sink.devices[1];  // 0a: 1, 3, 5, ...
    CHECK(third.device_sn == serial_for(3));
    CHECK(third.status == CertStatus::revoked);
    CHECK(third.content_pem == std::string(900, 'p'));
    CHECK(third.fingerprint == make_device("0a", serial_for(3)).fingerprint);
    CHECK(third.valid_end_ms == 2'600'000'000'000);
    CHECK(third.registered_by == RegisteredBy::connection);
    // The connection is usable afterwards.
    CHECK(fleet->head().ok());
}

TEST_CASE("a sink's error stops the snapshot and leaves the connection usable", "[fleet][log][snapshot]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) -> Outcome {
        for (const char* ca : {"0a", "0b", "0c"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        return Ok{};
    });
    struct Refusing : FleetSnapshotSink {
        int seen = 0;
        Outcome ca(const CaRecord&) override {
            ++seen;
            return make_error(Errc::io_error, "replica full");
        }
        Outcome device(const DeviceRecord&) override { return Ok{}; }
    } sink;
    auto head = fleet->snapshot(sink);
    REQUIRE_FALSE(head.ok());
    CHECK(head.error().message == "replica full");
    CHECK(sink.seen == 1);
    CHECK(fleet->head()->last_seq == 3);
}

TEST_CASE("trimming keeps the newest entries, and a follower behind them is told to resync", "[fleet][log][trim]") {
    FleetDb db;
    auto fleet = db.connect();
    commit_ca_and_devices(*fleet, 29);
    CHECK(fleet->trim(0).error().code == Errc::invalid_argument);
    CHECK(*fleet->trim(100) == 0);
    CHECK(*fleet->trim(10) == 20);
    CHECK(*fleet->trim(10) == 0);
    const auto head = fleet->head();
    CHECK(head->trimmed_through == 20);
    CHECK(head->last_seq == 30);

    auto behind = fleet->changes_after(5, 100);
    REQUIRE(behind.ok());
    CHECK(plan_follow(FollowerPosition{head->epoch, 5, std::nullopt}, *behind).action == FollowAction::resync);
    auto edge = fleet->changes_after(20, 100);
    REQUIRE(edge.ok());
    REQUIRE(edge->changes.size() == 10);
    CHECK(edge->changes.front().entry.seq == 21);
    const auto plan = plan_follow(FollowerPosition{head->epoch, 20, std::nullopt}, *edge);
    CHECK(plan.action == FollowAction::apply);
    CHECK(plan.new_seq == 30);

    // Seqs keep rising after trimming.
    const auto next = must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0b"), "R", "t"); });
    CHECK(next.at(0).entry.seq == 31);
}

TEST_CASE("a failed job in a batch takes no seq; the batch's changes are numbered contiguously", "[fleet][log]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    std::vector<Outcome> results;
    auto changes = fleet->write_batch(
        {[](WriteView& v) { return v.insert_device(make_device("0a", "01"), "A", "t"); },
         [](WriteView& v) -> Outcome {
             // Reads its own batch's log, which numbers what is pending so
             // far; its own failure must undo that as well.
             if (auto r = v.insert_device(make_device("0a", "02"), "A", "t"); !r) return r;
             CHECK(v.changes_after(0, 10)->size() == 3);
             return make_error(Errc::invalid_argument, "refused");
         },
         [](WriteView& v) { return v.insert_device(make_device("0a", "03"), "A", "t"); },
         [](WriteView& v) -> Outcome {
             // A read of the log in a job that commits: numbered twice in one transaction.
             if (auto r = v.insert_device(make_device("0a", "04"), "A", "t"); !r) return r;
             const auto log = *v.changes_after(1, 10);
             CHECK(log.size() == 3);
             return Ok{};
         },
         [](WriteView& v) { return v.insert_device(make_device("0a", "05"), "A", "t"); }},
        results);
    REQUIRE(changes.ok());
    REQUIRE(results.size() == 5);
    CHECK(results[0].ok());
    CHECK_FALSE(results[1].ok());
    CHECK(results[2].ok());
    CHECK(results[3].ok());
    CHECK(results[4].ok());
    REQUIRE(changes->size() == 4);
    const std::vector<std::string> serials{"01", "03", "04", "05"};
    auto log = fleet->changes_after(0, 10);
    REQUIRE(log->changes.size() == 5);
    CHECK(log->head.last_seq == 5);
    for (std::size_t i = 0; i < 4; ++i) {
        // What the write answered is what the log holds, seq for seq.
        CHECK(changes->at(i).entry.seq == i + 2);
        CHECK(changes->at(i).entry.device_sn == serials[i]);
        CHECK(log->changes[i + 1].entry.seq == i + 2);
        CHECK(log->changes[i + 1].entry.device_sn == serials[i]);
    }
    CHECK(fleet->read([](ReadView& v) -> Outcome {
        CHECK(*v.device_count() == 4);
        CHECK((*v.get_ca("0a"))->device_count == 4);
        return Ok{};
    }).ok());
}

TEST_CASE("a body that swallows a database error does not commit", "[fleet][log]") {
    FleetDb db;
    auto fleet = db.connect();
    // A value that is not UTF-8 makes PostgreSQL refuse the statement, which
    // aborts the transaction; the body ignores the error.
    auto out = fleet->write([](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        (void)v.set_meta("k", "bad \xff utf-8");
        return Ok{};
    });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().code == Errc::store_error);
    CHECK(fleet->head()->last_seq == 0);
    CHECK(fleet->read([](ReadView& v) -> Outcome {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        return Ok{};
    }).ok());
}

TEST_CASE("writers on different connections serialise on the same record", "[fleet][log][concurrency]") {
    FleetDb db;
    {
        auto fleet = db.connect();
        must_commit(*fleet, [](WriteView& v) -> Outcome {
            if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
            return v.insert_device(make_device("0a", "01"), "A", "t");
        });
    }
    constexpr int kThreads = 8;
    constexpr int kRounds = 40;
    std::atomic<int> errors{0};
    std::atomic<int> transitions{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            auto fleet = connect_fleet(db.options);
            for (int i = 0; i < kRounds; ++i) {
                const CertStatus target = (i + t) % 2 ? CertStatus::inactive : CertStatus::active;
                auto out = fleet->write([&](WriteView& v) {
                    return status_outcome(v.set_device_status("0a", "01", target, "Toggle", "t"));
                });
                if (!out)
                    ++errors;
                else
                    transitions += static_cast<int>(out->size());
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(errors == 0);
    auto fleet = db.connect();
    auto log = fleet->changes_after(2, 100'000);
    REQUIRE(log.ok());
    REQUIRE(static_cast<int>(log->changes.size()) == transitions.load());
    // Every change starts from the status the previous one left: no update
    // was lost between two writers that read the same old status.
    CertStatus current = CertStatus::active;
    for (const auto& c : log->changes) {
        CHECK(c.entry.old_status == current);
        CHECK(c.entry.new_status != c.entry.old_status);
        current = *c.entry.new_status;
    }
    CHECK(fleet->read([&](ReadView& v) -> Outcome {
        CHECK((*v.get_device("0a", "01"))->status == current);
        return Ok{};
    }).ok());
}

TEST_CASE("batches locking the same records in opposite orders both commit, without waiting for deadlock detection",
          "[fleet][log][concurrency]") {
    FleetDb db;
    {
        auto fleet = db.connect();
        must_commit(*fleet, [](WriteView& v) -> Outcome {
            if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
            if (auto r = v.insert_device(make_device("0a", "01"), "A", "t"); !r) return r;
            return v.insert_device(make_device("0a", "02"), "A", "t");
        });
    }
    // PostgreSQL would take a minute to notice the deadlock, and a lock may
    // be waited for as long: only the optimistic writes' brief wait ends it.
    FleetOptions options = db.options;
    options.conninfo += " options='-c deadlock_timeout=60s'";
    options.timeout_s = 60;
    // Each batch's first job locks its record, then waits until the other
    // batch has locked its own (first attempts only), so that each second
    // job needs the record the other holds.
    std::atomic<int> locked{0};
    auto batch = [&](const char* first, const char* second, CertStatus status) {
        auto fleet = connect_fleet(options);
        auto tries = std::make_shared<int>(0);
        std::vector<Fleet::WriteFn> fns{
            [&, first, status, tries](WriteView& v) -> Outcome {
                auto r = v.set_device_status("0a", first, status, "Swap", "t");
                if (!r) return r.error();
                if ((*tries)++ == 0) {
                    ++locked;
                    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
                    while (locked < 2 && std::chrono::steady_clock::now() < give_up)
                        std::this_thread::sleep_for(std::chrono::milliseconds(1));
                }
                return Ok{};
            },
            [&, second, status](WriteView& v) -> Outcome {
                return status_outcome(v.set_device_status("0a", second, status, "Swap", "t"));
            }};
        std::vector<Outcome> results;
        auto committed = fleet->write_batch(fns, results);
        return std::make_pair(committed.ok() ? committed->size() : 0, results);
    };
    const auto started = std::chrono::steady_clock::now();
    std::pair<std::size_t, std::vector<Outcome>> one, two;
    std::thread t1([&] { one = batch("01", "02", CertStatus::inactive); });
    std::thread t2([&] { two = batch("02", "01", CertStatus::inactive); });
    t1.join();
    t2.join();
    const auto took = std::chrono::steady_clock::now() - started;
    CHECK(locked == 2);  // the two first attempts did hold one record each
    CHECK(took < std::chrono::seconds(20));
    REQUIRE(one.second.size() == 2);
    REQUIRE(two.second.size() == 2);
    for (const auto& r : one.second) CHECK(r.ok());
    for (const auto& r : two.second) CHECK(r.ok());
    // Whichever committed first changed both records; the other found them changed.
    CHECK(one.first + two.first == 2);
    auto fleet = db.connect();
    auto log = fleet->changes_after(3, 100);
    REQUIRE(log.ok());
    REQUIRE(log->changes.size() == 2);
    CHECK(log->changes[0].entry.seq == 4);
    CHECK(log->changes[1].entry.seq == 5);
}

TEST_CASE("an optimistic batch with a refused job still commits while another member holds the head row for long",
          "[fleet][log][concurrency]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "A", "t");
    });
    // Another member holds the head row for longer than an optimistic
    // write waits for a record's lock.
    auto holder = pg::Conn::open(db.conninfo, 10);
    REQUIRE(holder.ok());
    REQUIRE(holder->exec("begin", "BEGIN").ok());
    REQUIRE(holder->exec("lock the head", "SELECT 1 FROM devcert.instances FOR UPDATE").ok());
    std::thread release([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        (void)holder->exec("commit", "COMMIT");
    });
    std::vector<Fleet::WriteFn> fns{
        [](WriteView& v) { return status_outcome(v.set_device_status("0a", "99", CertStatus::inactive, "S", "t")); },
        [](WriteView& v) { return status_outcome(v.set_device_status("0a", "01", CertStatus::inactive, "S", "t")); }};
    std::vector<Outcome> results;
    auto committed = fleet->write_batch(fns, results);
    release.join();
    REQUIRE(committed.ok());
    REQUIRE(results.size() == 2);
    CHECK(results[0].error().code == Errc::not_found);
    CHECK(results[1].ok());
    REQUIRE(committed->size() == 1);
    CHECK(committed->front().entry.device_sn == "01");
}

TEST_CASE("two brokers registering the same device at once yield one record and one change",
          "[fleet][log][concurrency]") {
    FleetDb db;
    {
        auto fleet = db.connect();
        must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    }
    constexpr int kThreads = 6;
    std::atomic<int> inserted{0};
    std::atomic<int> already{0};
    std::atomic<int> other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            auto fleet = connect_fleet(db.options);
            for (std::uint64_t i = 1; i <= 30; ++i) {
                auto out = fleet->write([&](WriteView& v) {
                    return v.insert_device(make_device("0a", serial_for(i)), "AutoRegister", "connection");
                });
                if (out)
                    ++inserted;
                else if (out.error().code == Errc::already_exists)
                    ++already;
                else
                    ++other;
            }
        });
    }
    for (auto& th : threads) th.join();
    CHECK(inserted == 30);
    CHECK(already == 30 * (kThreads - 1));
    CHECK(other == 0);
    auto fleet = db.connect();
    CHECK(fleet->head()->last_seq == 31);
    CHECK(fleet->read([](ReadView& v) -> Outcome {
        CHECK(*v.device_count() == 30);
        CHECK((*v.get_ca("0a"))->device_count == 30);
        return Ok{};
    }).ok());
}

TEST_CASE("while the database is down writes fail at once, and the next write after it returns reconnects",
          "[fleet][log][outage]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    auto& server = PgServer::shared();
    server.stop();
    const auto before = std::chrono::steady_clock::now();
    auto down = fleet->write([](WriteView& v) { return v.insert_ca(make_ca("0b"), "R", "t"); });
    const auto took = std::chrono::steady_clock::now() - before;
    auto head = fleet->head();
    server.start();
    REQUIRE_FALSE(down.ok());
    // Unavailable, not a store error: the API answers FleetUnavailable (503,
    // nothing changed), and a stopped server refuses at once rather than
    // after the connect timeout.
    CHECK(down.error().code == Errc::unavailable);
    CHECK_THAT(down.error().message, Catch::StartsWith("fleet database unreachable: "));
    CHECK(took < std::chrono::seconds(2));
    CHECK_FALSE(head.ok());
    const auto up = must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0c"), "R", "t"); });
    CHECK(up.at(0).entry.seq == 2);
}

TEST_CASE("a connection lost inside a transaction before COMMIT is unavailable and changes nothing",
          "[fleet][log][outage]") {
    FleetDb db;
    auto fleet = db.connect();
    // Another session ends ours while the write's transaction is open (the
    // body has inserted one CA, and inserts another after the kill).
    auto out = fleet->write([&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        terminate_plugin_sessions(db.conninfo);
        return v.insert_ca(make_ca("0b"), "R", "t");
    });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().code == Errc::unavailable);
    CHECK_THAT(out.error().message, Catch::StartsWith("fleet database unreachable: "));
    // The next call reconnects; the aborted transaction left nothing.
    CHECK(fleet->head()->last_seq == 0);
    CHECK(fleet->read([](ReadView& v) -> Outcome {
        CHECK(*v.ca_count() == 0);
        return Ok{};
    }).ok());
}

TEST_CASE("a write on a connection the server ended since the last call runs once on a new one",
          "[fleet][log][outage]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    terminate_plugin_sessions(db.conninfo);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the backend is gone
    // BEGIN goes with the body's first statement, and that round trip finds
    // the connection dead: the body runs again on a new one, and commits once.
    int runs = 0;
    const auto changes = must_commit(*fleet, [&](WriteView& v) -> Outcome {
        ++runs;
        if (auto ca = v.get_ca("0a"); !ca) return ca.error();
        return v.insert_ca(make_ca("0b"), "R", "t");
    });
    CHECK(runs == 2);
    REQUIRE(changes.size() == 1);
    CHECK(changes[0].entry.seq == 2);
    CHECK(fleet->head()->last_seq == 2);
}
