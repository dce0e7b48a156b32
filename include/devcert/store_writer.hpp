// Group commit: one thread owns all writes made inside a process that serves
// many writers (the admin socket, registrations from first connections).
// Jobs queued while a commit is in flight are committed together in the next
// one, each in its own nested transaction; nothing is acknowledged before
// its commit is durable.
#pragma once

#include <functional>
#include <future>
#include <memory>

#include "devcert/store.hpp"

namespace devcert {

class StoreWriter {
public:
    using Job = std::function<Outcome(WriteView&)>;
    using Done = std::function<void(const Outcome&)>;

    /// `on_commit` runs on the writer thread after every durable commit that
    /// contained at least one successful job (the plugin wakes the broker
    /// thread there), before that commit's jobs are acknowledged. The thread
    /// starts with the first job (a process that never writes gets no
    /// thread) and blocks the broker's signals. Jobs run on the writer thread inside the
    /// store's write transaction: they must act only through the view and
    /// must not use a StatusReader or the store directly.
    StoreWriter(Store& store, std::function<void()> on_commit);
    /// Drains the queue, then joins the thread.
    ~StoreWriter();
    StoreWriter(const StoreWriter&) = delete;
    StoreWriter& operator=(const StoreWriter&) = delete;

    /// Queues a job; the future becomes ready once its outcome is durable.
    /// After stop() the future is ready at once with Errc::store_error.
    std::future<Outcome> submit(Job job);
    /// Queues a job; `done` runs on the writer thread after the commit.
    void submit(Job job, Done done);

    /// Stops accepting jobs, commits what is queued and joins. Idempotent.
    /// Called from a completion callback it only stops accepting jobs; the
    /// joining is left to a later stop() or the destructor on another thread.
    void stop();

    /// Number of commits and jobs so far (for tests and stats).
    std::uint64_t commits() const noexcept;
    std::uint64_t jobs() const noexcept;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace devcert
