#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "devcert/store_writer.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

std::unique_ptr<Store> store_with_ca(const TempDir& dir, std::uint64_t map = 8ull << 20) {
    auto store = open_store(dir.path(), map);
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    return store;
}

StoreWriter::Job insert_job(std::uint64_t n, std::size_t pem = 64) {
    return [n, pem](WriteView& v) { return v.insert_device(make_device("0a", serial_for(n), CertStatus::active, pem), "A", "t"); };
}

bool committed_device(Store& store, std::uint64_t n) {
    bool found = false;
    must_read(store, [&](ReadView& v) { found = v.get_device("0a", serial_for(n))->has_value(); });
    return found;
}

}  // namespace

TEST_CASE("write_batch commits every job but the failing one", "[store][batch]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    std::vector<StoreWriter::Job> jobs{
        insert_job(1),
        [](WriteView& v) -> Outcome {
            if (auto r = v.insert_device(make_device("0a", serial_for(2)), "A", "t"); !r) return r;
            return make_error(Errc::invalid_argument, "second job refuses");
        },
        [](WriteView&) -> Outcome { throw std::runtime_error("third job throws"); },
        insert_job(1),  // duplicate of the first, which is visible inside the batch
        insert_job(5),
    };
    std::vector<Outcome> results;
    REQUIRE(store->write_batch(jobs, results).ok());
    REQUIRE(results.size() == 5);
    CHECK(results[0].ok());
    REQUIRE_FALSE(results[1].ok());
    CHECK(results[1].error().message == "second job refuses");
    REQUIRE_FALSE(results[2].ok());
    CHECK(results[2].error().code == Errc::store_error);
    REQUIRE_FALSE(results[3].ok());
    CHECK(results[3].error().code == Errc::already_exists);
    CHECK(results[4].ok());

    CHECK(committed_device(*store, 1));
    CHECK_FALSE(committed_device(*store, 2));
    CHECK(committed_device(*store, 5));
    must_read(*store, [&](ReadView& v) {
        CHECK(*v.device_count() == 2);
        CHECK(v.changes_after(0, 10)->size() == 3);  // the CA and two devices: undone jobs left no entry
    });
}

TEST_CASE("write_batch grows a full map and reruns every job", "[store][batch]") {
    TempDir dir;
    auto store = store_with_ca(dir, 1ull << 20);
    std::vector<StoreWriter::Job> jobs;
    for (std::uint64_t j = 0; j < 30; ++j)
        jobs.push_back([j](WriteView& v) -> Outcome {
            for (std::uint64_t i = j * 100 + 1; i <= j * 100 + 100; ++i)
                if (auto r = v.insert_device(make_device("0a", serial_for(i), CertStatus::active, 1'000), "A", "t"); !r)
                    return r;
            return Ok{};
        });
    std::vector<Outcome> results;
    REQUIRE(store->write_batch(jobs, results).ok());
    for (const auto& r : results) CHECK(r.ok());
    must_read(*store, [&](ReadView& v) { CHECK(*v.device_count() == 3'000); });
    CHECK(committed_device(*store, 3'000));
}

TEST_CASE("the writer groups jobs from many threads into fewer commits", "[store][writer]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    std::atomic<int> notified{0};
    StoreWriter writer(*store, [&] { ++notified; });

    constexpr int kThreads = 8;
    constexpr int kPerThread = 100;
    std::atomic<int> acknowledged_before_commit{0};
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kPerThread; ++i) {
                const auto n = static_cast<std::uint64_t>(t * kPerThread + i + 1);
                const Outcome out = writer.submit(insert_job(n)).get();
                if (!out) ++failures;
                // A fresh read transaction sees only what is committed.
                if (!committed_device(*store, n)) ++acknowledged_before_commit;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(failures == 0);
    CHECK(acknowledged_before_commit == 0);
    CHECK(writer.jobs() == kThreads * kPerThread);
    CHECK(writer.commits() < writer.jobs());
    CHECK(writer.commits() >= 1);
    CHECK(static_cast<std::uint64_t>(notified.load()) == writer.commits());
    must_read(*store, [&](ReadView& v) { CHECK(*v.device_count() == kThreads * kPerThread); });
}

TEST_CASE("a writer callback runs after the commit with the job's outcome", "[store][writer]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    std::atomic<int> notified{0};
    StoreWriter writer(*store, [&] { ++notified; });
    std::promise<std::pair<bool, bool>> seen;  // (outcome ok, visible to a fresh read)
    writer.submit(insert_job(1), [&](const Outcome& out) { seen.set_value({out.ok(), committed_device(*store, 1)}); });
    const auto [ok, visible] = seen.get_future().get();
    CHECK(ok);
    CHECK(visible);

    // A batch in which nothing succeeds commits nothing worth announcing.
    const int before = notified.load();
    const Outcome dup = writer.submit(insert_job(1)).get();
    REQUIRE_FALSE(dup.ok());
    CHECK(dup.error().code == Errc::already_exists);
    CHECK(notified.load() == before);
}

TEST_CASE("stopping the writer drains the queue and later submissions fail at once", "[store][writer]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    std::vector<std::future<Outcome>> pending;
    {
        StoreWriter writer(*store, nullptr);
        for (std::uint64_t n = 1; n <= 200; ++n) pending.push_back(writer.submit(insert_job(n)));
        writer.stop();
        writer.stop();  // idempotent

        const Outcome late = writer.submit(insert_job(999)).get();
        REQUIRE_FALSE(late.ok());
        CHECK(late.error().code == Errc::store_error);
        CHECK(late.error().message == "store writer stopped");
        bool called = false;
        writer.submit(insert_job(998), [&](const Outcome& out) { called = !out.ok(); });
        CHECK(called);
    }
    for (auto& f : pending) CHECK(f.get().ok());
    must_read(*store, [&](ReadView& v) { CHECK(*v.device_count() == 200); });
}

TEST_CASE("destroying the writer commits what was queued", "[store][writer]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    std::vector<std::future<Outcome>> pending;
    {
        StoreWriter writer(*store, nullptr);
        for (std::uint64_t n = 1; n <= 50; ++n) pending.push_back(writer.submit(insert_job(n)));
    }
    for (auto& f : pending) CHECK(f.get().ok());
    CHECK(committed_device(*store, 50));
}

namespace {

std::size_t threads_in_process() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) ++n;
    return n;
}

}  // namespace

TEST_CASE("the writer starts its thread with the first job, not before", "[store][writer]") {
    TempDir dir;
    auto store = store_with_ca(dir);
    // A sanitizer runtime starts its own helper thread with the process's
    // first pthread_create: let that happen before counting.
    std::thread([] {}).join();
    const std::size_t before = threads_in_process();
    {
        StoreWriter idle(*store, nullptr);
        CHECK(threads_in_process() == before);
        idle.stop();  // stopping a writer that never started is fine
        const Outcome late = idle.submit(insert_job(1)).get();
        REQUIRE_FALSE(late.ok());
        CHECK(late.error().message == "store writer stopped");
        CHECK(threads_in_process() == before);
    }
    StoreWriter writer(*store, nullptr);
    CHECK(threads_in_process() == before);
    CHECK(writer.submit(insert_job(2)).get().ok());
    CHECK(threads_in_process() == before + 1);
    CHECK(writer.submit(insert_job(3)).get().ok());
    CHECK(threads_in_process() == before + 1);  // one thread, started once
    writer.stop();
    // A joined thread leaves /proc a moment after pthread_join returns.
    for (int i = 0; i < 100 && threads_in_process() != before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(threads_in_process() == before);
    must_read(*store, [&](ReadView& v) { CHECK(*v.device_count() == 2); });
}
