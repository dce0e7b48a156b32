// The property the head counter exists for: under many concurrent writers,
// a follower that polls "seq > S" and moves S to the last seq it read sees
// every committed change exactly once, in order. A bigserial fails this (a
// transaction holding a lower number commits after a higher one became
// visible, and the follower has already moved past it).
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "devcert/fleet_follower.hpp"
#include "fleet_fixture.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

/// What one naive follower saw.
struct Seen {
    std::vector<std::uint64_t> seqs;
    std::vector<std::uint64_t> digests;
    int batches_with_holes = 0;
    int errors = 0;
};

}  // namespace

TEST_CASE("followers polling seq > S see every committed change exactly once, in order, under 12 writers",
          "[fleet][followers][concurrency]") {
    FleetDb db;
    {
        auto fleet = db.connect();
        must_commit(*fleet, [](WriteView& v) -> Outcome {
            for (int c = 0; c < 4; ++c)
                if (auto r = v.insert_ca(make_ca("0" + std::to_string(c)), "R", "t"); !r) return r;
            return Ok{};
        });
    }
    constexpr int kWriters = 12;
    constexpr int kFollowers = 4;
    const auto duration = std::chrono::seconds(3);

    std::atomic<bool> stop_writers{false};
    std::atomic<bool> stop_followers{false};
    std::mutex committed_mutex;
    std::vector<FleetChange> committed;  // as the writers were told
    std::atomic<int> write_errors{0};
    std::string first_write_error;

    std::vector<std::thread> writers;
    for (int w = 0; w < kWriters; ++w) {
        writers.emplace_back([&, w] {
            auto fleet = connect_fleet(db.options);
            std::uint64_t n = 0;
            while (!stop_writers.load()) {
                ++n;
                const std::string ca = "0" + std::to_string(w % 4);
                const std::string sn = fmt::format("{:02x}{:06x}", w, n);
                // Mostly one change, sometimes two in one transaction.
                auto out = fleet->write([&](WriteView& v) -> Outcome {
                    if (auto r = v.insert_device(make_device(ca, sn), "AutoRegister", "connection"); !r) return r;
                    if (n % 5 == 0) {
                        auto s =
                            v.set_device_status(ca, sn, CertStatus::inactive, "InactivateDeviceCertificate", "ops");
                        if (!s) return s.error();
                    }
                    return Ok{};
                });
                std::lock_guard lock(committed_mutex);
                if (!out) {
                    if (write_errors++ == 0) first_write_error = out.error().message;
                    continue;
                }
                for (auto& c : *out) committed.push_back(std::move(c));
            }
        });
    }

    std::vector<Seen> seen(kFollowers);
    std::vector<std::thread> followers;
    for (int f = 0; f < kFollowers; ++f) {
        followers.emplace_back([&, f] {
            auto fleet = connect_fleet(db.options);
            Seen& mine = seen[static_cast<std::size_t>(f)];
            std::uint64_t cursor = 0;
            for (;;) {
                // Read the flag first: a poll that starts after the writers
                // stopped and finds nothing new means the follower is done.
                const bool last_round = stop_followers.load();
                auto batch = fleet->changes_after(cursor, 50);
                if (!batch) {
                    ++mine.errors;
                    continue;
                }
                std::uint64_t expected = cursor + 1;
                for (const auto& c : batch->changes) {
                    if (c.entry.seq != expected) ++mine.batches_with_holes;
                    mine.seqs.push_back(c.entry.seq);
                    mine.digests.push_back(change_digest(c.entry));
                    expected = c.entry.seq + 1;
                    cursor = c.entry.seq;  // the naive cursor: trust what was read
                }
                if (batch->changes.empty()) {
                    if (last_round) break;
                    std::this_thread::sleep_for(std::chrono::milliseconds(1));
                }
            }
        });
    }

    // At least `duration`, and until enough changes committed to make the
    // check worth something: on a loaded machine (ctest -j, sanitizers)
    // twelve writers serialising on one row commit slowly.
    const auto started = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(duration);
    auto committed_so_far = [&] {
        std::lock_guard lock(committed_mutex);
        return committed.size();
    };
    while (committed_so_far() <= 300 && std::chrono::steady_clock::now() - started < std::chrono::seconds(60))
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    stop_writers = true;
    for (auto& t : writers) t.join();
    stop_followers = true;
    for (auto& t : followers) t.join();

    CHECK(write_errors == 0);
    INFO("first write error: " << first_write_error);
    std::sort(committed.begin(), committed.end(),
              [](const FleetChange& a, const FleetChange& b) { return a.entry.seq < b.entry.seq; });
    // Writers were told contiguous numbers with nothing handed out twice.
    REQUIRE(committed.size() > 200);
    for (std::size_t i = 0; i < committed.size(); ++i) REQUIRE(committed[i].entry.seq == i + 5);
    const std::uint64_t last = committed.back().entry.seq;
    auto fleet = db.connect();
    CHECK(fleet->head()->last_seq == last);

    std::vector<std::uint64_t> all(last);
    for (std::uint64_t i = 0; i < last; ++i) all[i] = i + 1;
    for (const auto& s : seen) {
        CHECK(s.errors == 0);
        CHECK(s.batches_with_holes == 0);
        // Every change exactly once, in order...
        CHECK(s.seqs == all);
        // ... and it is the change the writer committed under that number.
        bool same = s.digests.size() == all.size();
        for (std::size_t i = 4; same && i < all.size(); ++i)
            same = s.digests[i] == change_digest(committed[i - 4].entry);
        CHECK(same);
    }
    WARN("committed " << last << " changes in " << duration.count() << " s with " << kWriters << " writers");
}
