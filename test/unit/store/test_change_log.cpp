#include <catch2/catch.hpp>

#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

void insert_devices(Store& store, std::uint64_t from, std::uint64_t to) {
    must_write(store, [&](WriteView& v) -> Outcome {
        for (std::uint64_t i = from; i <= to; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i)), "AutoRegister", "connection"); !r)
                return r;
        return Ok{};
    });
}

}  // namespace

TEST_CASE("the change log lists entries in commit order with consecutive seqs", "[store][changes]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "ops"); });
    insert_devices(*store, 1, 3);
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto r = v.set_device_status("0a", serial_for(2), CertStatus::inactive, "InactivateDeviceCertificate", "ops");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    must_read(*store, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 100);
        REQUIRE(log.size() == 5);
        for (std::size_t i = 0; i < log.size(); ++i) CHECK(log[i].seq == i + 1);
        CHECK(log[0].action == "RegisterCaCertificate");
        CHECK_FALSE(log[0].old_status.has_value());
        CHECK(log[0].new_status == CertStatus::active);
        CHECK(log[3].device_sn == serial_for(3));
        CHECK(log[4].action == "InactivateDeviceCertificate");
        CHECK(log[4].time_ms >= log[3].time_ms);

        const auto tail = *v.changes_after(3, 1);
        REQUIRE(tail.size() == 1);
        CHECK(tail[0].seq == 4);
        CHECK(v.changes_after(5, 10)->empty());
        CHECK(v.changes_after(UINT64_MAX, 10)->empty());
    });
}

TEST_CASE("the change log keeps only the newest entries up to its retention", "[store][changes]") {
    TempDir dir;
    auto store = open_store(dir.path(), 8ull << 20, 10);
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    insert_devices(*store, 1, 25);  // 26 entries in all, one transaction trims 16
    must_read(*store, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 100);
        REQUIRE(log.size() == 10);
        CHECK(log.front().seq == 17);
        CHECK(log.back().seq == 26);
        CHECK(log.back().device_sn == serial_for(25));
    });
}

TEST_CASE("seqs keep rising after trimming and are never reused", "[store][changes]") {
    TempDir dir;
    {
        auto store = open_store(dir.path(), 8ull << 20, 3);
        must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
        insert_devices(*store, 1, 5);
        // Removing everything empties the device tables but not the log's memory.
        must_write(*store, [&](WriteView& v) -> Outcome {
            auto r = v.delete_ca("0a", "DeleteCaCertificate", "t");
            return r ? Outcome(Ok{}) : Outcome(r.error());
        });
    }
    auto store = open_store(dir.path(), 8ull << 20, 3);
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0b"), "R", "t"); });
    must_read(*store, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 100);
        REQUIRE(log.size() == 3);
        CHECK(log[0].seq == 11);
        CHECK(log[1].seq == 12);
        CHECK(log[1].ca_sn == "0a");
        CHECK(log[2].seq == 13);
        CHECK(log[2].ca_sn == "0b");
    });
}

TEST_CASE("a retention of zero is refused when opening", "[store][changes]") {
    TempDir dir;
    StoreOptions options;
    options.path = dir.path();
    options.change_log_retention = 0;
    auto store = Store::open(options);
    REQUIRE_FALSE(store.ok());
    CHECK(store.error().code == Errc::invalid_argument);
}

TEST_CASE("a store opened without a retention applies the one it was last configured with", "[store][changes]") {
    // The broker opens the store with plugin_opt_change_log_retention;
    // devcertctl --db opens it without one and must trim to the same limit,
    // neither keeping more nor dropping what the broker would keep.
    TempDir dir;
    {
        auto broker = open_store(dir.path(), 8ull << 20, 5);
        must_write(*broker, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "ops"); });
    }
    StoreOptions bare;
    bare.path = dir.path();
    bare.create = false;
    {
        auto ctl = Store::open(bare);
        REQUIRE(ctl.ok());
        insert_devices(**ctl, 1, 9);
        must_read(**ctl, [&](ReadView& v) {
            const auto log = *v.changes_after(0, 100);
            REQUIRE(log.size() == 5);
            CHECK(log.front().seq == 6);
            CHECK(log.back().seq == 10);
        });
    }
    {
        // Configured again, larger: a bare open keeps everything up to it.
        auto broker = open_store(dir.path(), 8ull << 20, 20);
    }
    auto ctl = Store::open(bare);
    REQUIRE(ctl.ok());
    insert_devices(**ctl, 10, 19);
    must_read(**ctl, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 100);
        REQUIRE(log.size() == 15);
        CHECK(log.front().seq == 6);
        CHECK(log.back().seq == 20);
    });
}
