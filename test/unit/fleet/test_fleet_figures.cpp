// Rough figures for fleet writes and snapshots on the test server (fsync
// off, so commit latency is not the disk's). Hidden: run on demand with
//   devcert_fleet_tests "[.figures]"
#include <catch2/catch.hpp>

#include <chrono>

#include "fleet_fixture.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

TEST_CASE("figures: fleet writes, batches and a snapshot", "[.figures][fleet]") {
    FleetDb db;
    auto fleet = db.connect();
    must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });

    constexpr std::uint64_t kSingles = 1000;
    auto start = std::chrono::steady_clock::now();
    for (std::uint64_t i = 1; i <= kSingles; ++i)
        must_commit(*fleet, [&](WriteView& v) { return v.insert_device(make_device("0a", serial_for(i)), "A", "t"); });
    const double singles = seconds_since(start);

    constexpr std::uint64_t kBatches = 1000;
    constexpr std::uint64_t kPerBatch = 100;
    start = std::chrono::steady_clock::now();
    for (std::uint64_t b = 0; b < kBatches; ++b) {
        std::vector<Fleet::WriteFn> jobs;
        for (std::uint64_t i = 0; i < kPerBatch; ++i) {
            const std::uint64_t n = kSingles + 1 + b * kPerBatch + i;
            jobs.emplace_back([n](WriteView& v) {
                return v.insert_device(make_device("0a", serial_for(n), CertStatus::active, 1000), "A", "t");
            });
        }
        std::vector<Outcome> results;
        REQUIRE(fleet->write_batch(jobs, results).ok());
    }
    const double batched = seconds_since(start);

    struct Counting : FleetSnapshotSink {
        std::uint64_t devices = 0;
        Outcome ca(const CaRecord&) override { return Ok{}; }
        Outcome device(const DeviceRecord&) override {
            ++devices;
            return Ok{};
        }
    } sink;
    start = std::chrono::steady_clock::now();
    auto head = fleet->snapshot(sink);
    const double snapshot = seconds_since(start);
    REQUIRE(head.ok());
    CHECK(sink.devices == kSingles + kBatches * kPerBatch);

    start = std::chrono::steady_clock::now();
    std::uint64_t fetched = 0;
    for (std::uint64_t pos = 0;;) {
        auto batch = fleet->changes_after(pos, 1000);
        REQUIRE(batch.ok());
        if (batch->changes.empty()) break;
        fetched += batch->changes.size();
        pos = batch->changes.back().entry.seq;
    }
    const double follow = seconds_since(start);

    WARN(fmt::format("one change per transaction: {:.0f} commits/s; batches of {} jobs (1 KB PEM): {:.0f} changes/s; "
                     "snapshot of {} devices: {:.2f} s; fetching {} changes 1000 at a time: {:.2f} s",
                     kSingles / singles, kPerBatch, kBatches * kPerBatch / batched, sink.devices, snapshot, fetched,
                     follow));
}
