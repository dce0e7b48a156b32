#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <thread>

#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

void register_device(Store& store, const std::string& sn, CertStatus status = CertStatus::active) {
    must_write(store, [&](WriteView& v) { return v.insert_device(make_device("0a", sn, status), "A", "t"); });
}

void set_status(Store& store, const std::string& sn, CertStatus status) {
    must_write(store, [&](WriteView& v) -> Outcome {
        auto r = v.set_device_status("0a", sn, status, "Set", "t");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
}

std::unique_ptr<Store> store_with_ca(const TempDir& dir, std::uint64_t map = 8ull << 20) {
    auto store = open_store(dir.path(), map);
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    return store;
}

}  // namespace

TEST_CASE("a reader reports status and fingerprint of registered devices and CAs", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    register_device(*store, "01", CertStatus::inactive);
    StatusReader reader(*store);
    REQUIRE(reader.refresh());

    DeviceStatusView view;
    REQUIRE(reader.device_status("0a", "01", view) == Lookup::found);
    CHECK(view.status == CertStatus::inactive);
    CHECK(view.fingerprint == make_device("0a", "01").fingerprint);
    CHECK(reader.device_status("0a", "02", view) == Lookup::not_found);
    CHECK(reader.device_status("0b", "01", view) == Lookup::not_found);
    CHECK(reader.device_status("", "01", view) == Lookup::not_found);
    CHECK(reader.device_status("0a", std::string(129, 'a'), view) == Lookup::not_found);

    CertStatus ca = CertStatus::inactive;
    REQUIRE(reader.ca_status("0a", ca) == Lookup::found);
    CHECK(ca == CertStatus::active);
    CHECK(reader.ca_status("0b", ca) == Lookup::not_found);
    reader.release();
}

TEST_CASE("a reader without an open snapshot reports an error, not a stale answer", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    StatusReader reader(*store);
    CertStatus ca{};
    CHECK(reader.ca_status("0a", ca) == Lookup::error);
    REQUIRE(reader.refresh());
    reader.release();
    std::uint64_t seq = 0;
    CHECK(reader.last_change_seq(seq) == Lookup::error);
}

TEST_CASE("a snapshot sees commits made before its refresh and none after", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    register_device(*store, "01");
    StatusReader reader(*store);
    REQUIRE(reader.refresh());

    // Committed from another thread: this thread holds a snapshot, so it
    // must not write itself.
    std::thread([&] { set_status(*store, "01", CertStatus::inactive); }).join();

    DeviceStatusView view;
    REQUIRE(reader.device_status("0a", "01", view) == Lookup::found);
    CHECK(view.status == CertStatus::active);
    REQUIRE(reader.refresh());
    REQUIRE(reader.device_status("0a", "01", view) == Lookup::found);
    CHECK(view.status == CertStatus::inactive);
    reader.release();

    set_status(*store, "01", CertStatus::revoked);
    REQUIRE(reader.refresh());
    REQUIRE(reader.device_status("0a", "01", view) == Lookup::found);
    CHECK(view.status == CertStatus::revoked);
    reader.release();
}

TEST_CASE("a reader tails the change log from any seq", "[store][reader]") {
    TempDir dir;
    auto store = open_store(dir.path(), 8ull << 20, 4);
    StatusReader reader(*store);
    REQUIRE(reader.refresh());
    std::uint64_t first = 99, last = 99;
    CHECK(reader.first_change_seq(first) == Lookup::found);
    CHECK(reader.last_change_seq(last) == Lookup::found);
    CHECK(first == 0);
    CHECK(last == 0);
    reader.release();

    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    for (int i = 1; i <= 5; ++i) register_device(*store, serial_for(static_cast<std::uint64_t>(i)));
    set_status(*store, serial_for(3), CertStatus::inactive);

    REQUIRE(reader.refresh());
    CHECK(reader.first_change_seq(first) == Lookup::found);
    CHECK(reader.last_change_seq(last) == Lookup::found);
    CHECK(first == 4);  // retention 4 of 7 entries
    CHECK(last == 7);

    std::vector<std::uint64_t> seqs;
    std::vector<std::string> devices;
    auto collect = [&](const ChangeEntry& e) {
        seqs.push_back(e.seq);
        devices.push_back(e.device_sn);
    };
    CHECK(reader.changes_after(0, 100, collect) == Lookup::found);
    CHECK(seqs == std::vector<std::uint64_t>{4, 5, 6, 7});
    seqs.clear();
    CHECK(reader.changes_after(5, 1, collect) == Lookup::found);
    CHECK(seqs == std::vector<std::uint64_t>{6});
    seqs.clear();
    CHECK(reader.changes_after(7, 100, collect) == Lookup::found);
    CHECK(seqs.empty());
    CHECK(devices.back() == serial_for(5));
    reader.release();
}

TEST_CASE("a thread holding a snapshot is refused a write instead of deadlocking", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    StatusReader reader(*store);
    REQUIRE(reader.refresh());
    const Outcome out = store->write([&](WriteView& v) { return v.insert_device(make_device("0a", "01"), "A", "t"); });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().code == Errc::store_error);
    reader.release();

    const Outcome nested = store->read([&](ReadView&) {
        return store->write([&](WriteView& v) { return v.insert_device(make_device("0a", "01"), "A", "t"); });
    });
    CHECK_FALSE(nested.ok());

    // Reads inside reads are fine.
    const Outcome read_in_read = store->read([&](ReadView&) {
        if (!reader.refresh()) return Outcome(make_error(Errc::store_error, "refresh failed"));
        DeviceStatusView view;
        const Lookup l = reader.device_status("0a", "01", view);
        reader.release();
        return l == Lookup::not_found ? Outcome(Ok{}) : Outcome(make_error(Errc::store_error, "unexpected"));
    });
    CHECK(read_in_read.ok());
    register_device(*store, "01");
}

TEST_CASE("map growth waits for open snapshots, then readers follow the grown map", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir, 1ull << 20);
    StatusReader reader(*store);
    REQUIRE(reader.refresh());
    const std::uint64_t before = store->map_size();

    std::atomic<bool> released{false};
    std::atomic<bool> grew_while_held{false};
    std::thread writer([&] {
        must_write(*store, [&](WriteView& v) -> Outcome {
            for (std::uint64_t i = 1; i <= 3'000; ++i)
                if (auto r = v.insert_device(make_device("0a", serial_for(i), CertStatus::active, 1'000), "A", "t");
                    !r)
                    return r;
            return Ok{};
        });
        if (!released.load()) grew_while_held = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    DeviceStatusView view;
    CHECK(reader.device_status("0a", serial_for(1), view) == Lookup::not_found);  // the map stayed valid
    released = true;
    reader.release();
    writer.join();
    CHECK_FALSE(grew_while_held.load());
    CHECK(store->map_size() > before);

    REQUIRE(reader.refresh());
    CHECK(reader.device_status("0a", serial_for(3'000), view) == Lookup::found);
    reader.release();
}

TEST_CASE("a released reader can be used from another thread", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    register_device(*store, "01");
    StatusReader reader(*store);
    REQUIRE(reader.refresh());
    reader.release();
    Lookup seen = Lookup::error;
    std::thread([&] {
        if (!reader.refresh()) return;
        DeviceStatusView view;
        seen = reader.device_status("0a", "01", view);
        reader.release();
    }).join();
    CHECK(seen == Lookup::found);
}

TEST_CASE("the last commit id moves with every commit and stays still on reads", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    const std::uint64_t before = store->last_commit_id();
    REQUIRE(before > 0);

    StatusReader reader(*store);
    REQUIRE(reader.refresh());
    reader.release();
    REQUIRE(store->read([](ReadView& v) -> Outcome {
        auto n = v.device_count();
        return n ? Outcome(Ok{}) : Outcome(n.error());
    }));
    CHECK(store->last_commit_id() == before);

    register_device(*store, "01");
    const std::uint64_t after_insert = store->last_commit_id();
    CHECK(after_insert > before);

    set_status(*store, "01", CertStatus::inactive);
    CHECK(store->last_commit_id() > after_insert);
}

TEST_CASE("a snapshot knows which commit it sees, so a poller can tell it is behind", "[store][reader]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    StatusReader reader(*store);
    CHECK(reader.snapshot_commit_id() == 0);  // no snapshot open
    REQUIRE(reader.refresh());
    const std::uint64_t seen = reader.snapshot_commit_id();
    CHECK(seen == store->last_commit_id());
    reader.release();

    register_device(*store, "01");
    REQUIRE(reader.refresh());
    CHECK(reader.snapshot_commit_id() > seen);
    CHECK(reader.snapshot_commit_id() == store->last_commit_id());
    reader.release();
    CHECK(reader.snapshot_commit_id() == 0);
    // Commits by other processes move it too (LMDB's shared meta page); the
    // broker tests prove that end to end with devcertctl --db.
}
