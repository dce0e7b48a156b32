// A CA deleted in several commits: what each step leaves behind, and that
// a deletion cut short anywhere is consistent and can be finished.
#include <catch2/catch.hpp>

#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

std::unique_ptr<Store> store_with_devices(TempDir& dir, std::uint64_t count) {
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        for (const char* ca : {"0a", "0b"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0b", serial_for(1)), "A", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= count; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i), i % 3 == 0 ? CertStatus::revoked
                                                                                      : CertStatus::active),
                                         "A", "t");
                !r)
                return r;
        return Ok{};
    });
    return store;
}

std::uint64_t last_seq(Store& store) {
    std::uint64_t seq = 0;
    must_read(store, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 1'000'000);
        seq = log.empty() ? 0 : log.back().seq;
    });
    return seq;
}

}  // namespace

TEST_CASE("a CA deleted in steps is refused from the first, keeps its counts right, and logs every record",
          "[store][ca-deletion]") {
    TempDir dir;
    auto store = store_with_devices(dir, 25);
    const std::uint64_t before = last_seq(*store);

    must_write(*store, [&](WriteView& v) { return v.begin_ca_deletion("0a", "DeleteCaCertificate", "ops"); });
    StatusReader reader(*store);
    REQUIRE(reader.refresh());
    CertStatus ca = CertStatus::active;
    REQUIRE(reader.ca_status("0a", ca) == Lookup::found);
    CHECK(ca == CertStatus::inactive);
    reader.release();

    std::vector<std::uint64_t> batches;
    for (;;) {
        std::uint64_t removed = 0;
        must_write(*store, [&](WriteView& v) -> Outcome {
            auto r = v.delete_ca_devices("0a", 10, "DeleteCaCertificate", "ops");
            if (!r) return r.error();
            removed = *r;
            return Ok{};
        });
        batches.push_back(removed);
        must_read(*store, [&](ReadView& v) {
            const auto left = v.list_devices_by_ca("0a", Page{1, 100});
            REQUIRE(left.ok());
            CHECK(left->total == left->items.size());  // the CA's count follows every batch
            CHECK(*v.device_count() == left->items.size() + 1);
        });
        if (removed < 10) break;
    }
    CHECK(batches == std::vector<std::uint64_t>{10, 10, 5});
    std::uint64_t last_removed = 99;
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "DeleteCaCertificate", "ops");
        if (!r) return r.error();
        last_removed = *r;
        return Ok{};
    });
    CHECK(last_removed == 0);
    must_read(*store, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        CHECK_FALSE(*v.ca_being_deleted("0a"));
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
        const auto log = *v.changes_after(before, 1'000);
        REQUIRE(log.size() == 1 + 25 + 1);
        CHECK(log.front().old_status == CertStatus::active);
        CHECK(log.front().new_status == CertStatus::inactive);
        CHECK(log.front().device_sn.empty());
        for (std::size_t i = 1; i <= 25; ++i) {
            CHECK(log[i].device_sn == serial_for(i));
            CHECK_FALSE(log[i].new_status.has_value());
        }
        CHECK(log.back().device_sn.empty());
        CHECK(log.back().old_status == CertStatus::inactive);
        CHECK_FALSE(log.back().new_status.has_value());
        for (std::size_t i = 1; i < log.size(); ++i) CHECK(log[i].seq == log[i - 1].seq + 1);
    });
}

TEST_CASE("a CA deletion cut short survives reopening, refuses activation and new devices, and finishes later",
          "[store][ca-deletion]") {
    TempDir dir;
    {
        auto store = store_with_devices(dir, 30);
        must_write(*store, [&](WriteView& v) { return v.begin_ca_deletion("0a", "DeleteCaCertificate", "ops"); });
        must_write(*store, [&](WriteView& v) -> Outcome {
            auto r = v.delete_ca_devices("0a", 12, "DeleteCaCertificate", "ops");
            return r ? Outcome(Ok{}) : Outcome(r.error());
        });
    }  // the process stops here: what was committed is all there is
    auto store = open_store(dir.path());
    must_read(*store, [&](ReadView& v) {
        CHECK(*v.ca_being_deleted("0a"));
        CHECK((*v.get_ca("0a"))->status == CertStatus::inactive);
        CHECK((*v.get_ca("0a"))->device_count == 18);
        CHECK(*v.device_count() == 19);
    });
    const Outcome activated = store->write([&](WriteView& v) -> Outcome {
        auto r = v.set_ca_status("0a", CertStatus::active, "ActiveCaCertificate", "ops");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    REQUIRE_FALSE(activated.ok());
    CHECK(activated.error().code == Errc::not_found);
    CHECK_THAT(activated.error().message, Catch::Contains("being deleted"));
    const Outcome joined = store->write(
        [&](WriteView& v) { return v.insert_device(make_device("0a", serial_for(999)), "A", "t"); });
    REQUIRE_FALSE(joined.ok());
    CHECK(joined.error().code == Errc::not_found);

    // Beginning again is harmless: no second status change is logged.
    const std::uint64_t seq = last_seq(*store);
    must_write(*store, [&](WriteView& v) { return v.begin_ca_deletion("0a", "DeleteCaCertificate", "ops"); });
    CHECK(last_seq(*store) == seq);
    std::uint64_t removed = 0;
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "DeleteCaCertificate", "ops");
        if (!r) return r.error();
        removed = *r;
        return Ok{};
    });
    CHECK(removed == 18);
    must_read(*store, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        CHECK(*v.device_count() == 1);
        CHECK_FALSE(*v.ca_being_deleted("0a"));
    });
    // The same serial can be registered again, fresh.
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    must_write(*store, [&](WriteView& v) { return v.insert_device(make_device("0a", serial_for(1)), "A", "t"); });
}

TEST_CASE("deleting the devices of an unknown CA is not_found", "[store][ca-deletion]") {
    TempDir dir;
    auto store = open_store(dir.path());
    const Outcome out = store->write([&](WriteView& v) -> Outcome {
        auto r = v.delete_ca_devices("0a", 10, "DeleteCaCertificate", "ops");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().code == Errc::not_found);
    const Outcome begun = store->write([&](WriteView& v) { return v.begin_ca_deletion("0a", "D", "ops"); });
    CHECK(begun.error().code == Errc::not_found);
}
