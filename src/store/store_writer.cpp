#include "devcert/store_writer.hpp"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "devcert/threads.hpp"

namespace devcert {

namespace {

Error stopped_error() { return make_error(Errc::store_error, "store writer stopped"); }

struct Queued {
    StoreWriter::Job job;
    // Exactly one of the two is used: a promise for submit(job), a callback
    // for submit(job, done).
    std::promise<Outcome> promise;
    StoreWriter::Done done;
    bool has_promise = false;
};

}  // namespace

struct StoreWriter::Impl {
    Store& store;
    std::function<void()> on_commit;

    std::mutex mutex;
    std::condition_variable wake;
    std::deque<Queued> queue;     // guarded by mutex
    bool stopping = false;        // guarded by mutex
    std::thread thread;           // started by the first enqueue; guarded by mutex
    std::thread::id thread_id;    // until stopping is set
    std::mutex join_mutex;        // one joiner at a time

    std::atomic<std::uint64_t> commits{0};
    std::atomic<std::uint64_t> jobs{0};

    Impl(Store& s, std::function<void()> cb) : store(s), on_commit(std::move(cb)) {}

    /// Takes ownership of `item` and returns nothing, or hands `item` back
    /// untouched with the reason it was refused (the writer has stopped, or
    /// its thread could not be started) so the caller can fail it.
    std::optional<Error> enqueue(Queued& item) {
        {
            std::lock_guard lock(mutex);
            if (stopping) return stopped_error();
            if (!thread.joinable()) {
                // The thread starts with the first job, not with the writer:
                // a broker that never writes (no registrations, no admin
                // socket) stays single-threaded, and glibc's allocator is
                // measurably faster in a single-threaded process
                // (docs/performance.md).
                try {
                    thread = spawn_thread([this] { run(); });
                } catch (const std::exception& e) {
                    return make_error(Errc::store_error,
                                      std::string("cannot start the store writer thread: ") + e.what());
                }
                thread_id = thread.get_id();
            }
            queue.push_back(std::move(item));
        }
        wake.notify_one();
        return std::nullopt;
    }

    void run() {
        std::vector<Queued> batch;
        std::vector<Job> fns;
        std::vector<Outcome> results;
        for (;;) {
            {
                std::unique_lock lock(mutex);
                wake.wait(lock, [&] { return stopping || !queue.empty(); });
                if (queue.empty()) return;  // stopping, and everything drained
                // Everything queued while the previous commit was in flight
                // goes into this one: that is the group commit.
                batch.clear();
                while (!queue.empty()) {
                    batch.push_back(std::move(queue.front()));
                    queue.pop_front();
                }
            }
            fns.clear();
            for (auto& q : batch) fns.push_back(std::move(q.job));
            const Outcome committed = store.write_batch(fns, results);
            jobs.fetch_add(batch.size());
            bool any_ok = false;
            if (committed) {
                commits.fetch_add(1);
                for (const auto& r : results) any_ok = any_ok || r.ok();
            }
            // Wake the broker before answering callers: a caller that sees
            // its acknowledgement should find the change already on its way.
            if (any_ok && on_commit) {
                try {
                    on_commit();
                } catch (...) {
                    // A failing notification must not lose acknowledgements.
                }
            }
            for (std::size_t i = 0; i < batch.size(); ++i) complete(batch[i], std::move(results[i]));
            batch.clear();
        }
    }

    static void complete(Queued& q, Outcome outcome) noexcept {
        try {
            if (q.has_promise) {
                q.promise.set_value(std::move(outcome));
            } else if (q.done) {
                q.done(outcome);
            }
        } catch (...) {
            // A throwing callback is the caller's bug; the writer carries on.
        }
    }
};

StoreWriter::StoreWriter(Store& store, std::function<void()> on_commit)
    : impl_(std::make_unique<Impl>(store, std::move(on_commit))) {}

StoreWriter::~StoreWriter() { stop(); }

std::future<Outcome> StoreWriter::submit(Job job) {
    Queued item;
    item.job = std::move(job);
    item.has_promise = true;
    auto future = item.promise.get_future();
    if (auto refused = impl_->enqueue(item)) item.promise.set_value(Outcome(std::move(*refused)));
    return future;
}

void StoreWriter::submit(Job job, Done done) {
    Queued item;
    item.job = std::move(job);
    item.done = std::move(done);
    if (auto refused = impl_->enqueue(item); refused && item.done) item.done(Outcome(std::move(*refused)));
}

void StoreWriter::stop() {
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
    }
    impl_->wake.notify_all();
    // Called from a completion callback, the writer thread cannot join
    // itself: it finishes draining and exits, and a later stop() joins it.
    if (std::this_thread::get_id() == impl_->thread_id) return;
    std::lock_guard join(impl_->join_mutex);
    if (impl_->thread.joinable()) impl_->thread.join();
}

std::uint64_t StoreWriter::commits() const noexcept { return impl_->commits.load(); }
std::uint64_t StoreWriter::jobs() const noexcept { return impl_->jobs.load(); }

}  // namespace devcert
