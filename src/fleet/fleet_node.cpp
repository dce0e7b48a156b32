#include "devcert/fleet_node.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "devcert/fleet_follower.hpp"
#include "devcert/replica.hpp"
#include "devcert/threads.hpp"

namespace devcert {

namespace {

constexpr std::size_t kMaxJobsPerCommit = 256;
constexpr std::size_t kRegistrationsPerRound = 256;
/// How long an admin write waits for the follower to apply the changes
/// before its own (the replica then lags; the answer is already durable).
constexpr std::chrono::seconds kReadYourWrites{2};
/// How long the writer waits, when calls came concurrently, for as many as
/// its last commit carried before it starts the next: the callers that
/// commit just answered send their next calls within moments, and one
/// transaction for all of them costs a fraction of one each.
constexpr std::chrono::microseconds kBatchLinger{1000};
/// How long the follower, told of another member's commit, waits for this
/// broker's commit in flight (which reads every change numbered before its
/// own) before it fetches the change itself.
constexpr std::chrono::milliseconds kAwaitWriter{50};
/// Reconnection attempts while the fleet is unreachable, at most this far apart.
constexpr std::chrono::milliseconds kMaxRetryPause{2000};

/// A refusal that is the fleet's to give (schema, instance), as opposed to
/// the fleet not answering.
bool fatal_for_start(const Error& e) { return e.code == Errc::schema_mismatch || e.code == Errc::not_found; }

Error unreachable(const Error& e) {
    if (e.code == Errc::unavailable) return e;
    return make_error(Errc::unavailable, e.message);
}

struct WriteJob {
    RecordAccess::WriteFn fn;
    std::promise<Outcome> done;
};

}  // namespace

struct FleetNode::Impl {
    Impl(Store& store, FleetNodeOptions opts, std::function<void()> applied, FleetLog sink)
        : replica(store), options(std::move(opts)), on_applied(std::move(applied)), log(std::move(sink)) {}

    Store& replica;
    const FleetNodeOptions options;
    const std::function<void()> on_applied;
    const FleetLog log;

    // The follower's connection and state: follower thread (and start()).
    std::unique_ptr<Fleet> follow;
    Follower planner;
    std::chrono::steady_clock::time_point last_trim{};

    // Admin writes: queued here, committed by the writer thread on its own
    // connection.
    std::mutex jobs_mutex;
    std::condition_variable jobs_cv;
    std::deque<WriteJob> jobs;
    std::unique_ptr<Fleet> writer_conn;  // writer thread
    // A commit in flight, and how many ended (under jobs_mutex): the
    // follower waits for one before fetching what it will read anyway.
    std::condition_variable commit_cv;
    bool committing = false;
    std::uint64_t commits_ended = 0;

    // The replica's position as last applied, for waiters.
    std::mutex position_mutex;
    std::condition_variable position_cv;
    std::uint64_t applied_seq = 0;

    // Outage bookkeeping: one line when it starts, one when it ends.
    std::mutex outage_mutex;
    bool outage = false;
    std::chrono::steady_clock::time_point outage_since{};

    std::atomic<bool> stopping{false};
    std::atomic<bool> registrations_waiting{true};
    std::atomic<bool> connected{false};
    std::atomic<std::uint64_t> head_seen{0};
    std::atomic<std::int64_t> lag_ms{0};
    std::atomic<std::uint64_t> queued{0};
    std::atomic<std::uint64_t> resyncs{0};
    std::mutex epoch_mutex;
    std::string epoch;

    std::thread follower_thread;  // spawn_thread: blocks the broker's signals
    std::thread writer_thread;

    void say(FleetLogLevel level, std::string line) const {
        if (log) log(level, std::move(line));
    }

    std::string current_epoch() {
        std::lock_guard lock(epoch_mutex);
        return epoch;
    }

    void set_epoch(const std::string& e) {
        std::lock_guard lock(epoch_mutex);
        epoch = e;
    }

    void mark_reachable() {
        connected.store(true, std::memory_order_relaxed);
        std::lock_guard lock(outage_mutex);
        if (!outage) return;
        outage = false;
        const auto secs =
            std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - outage_since).count();
        say(FleetLogLevel::notice, fmt::format("fleet: the fleet database is reachable again after {} s; catching up "
                                               "from change {}",
                                               secs, applied_position()));
    }

    void mark_unreachable(const Error& e) {
        connected.store(false, std::memory_order_relaxed);
        std::lock_guard lock(outage_mutex);
        if (outage) return;
        outage = true;
        outage_since = std::chrono::steady_clock::now();
        say(FleetLogLevel::error,
            fmt::format("fleet: cannot reach the fleet database ({}): connections are checked against the replica "
                        "as of change {}, writes are refused until it is back",
                        e.message, applied_position()));
    }

    std::uint64_t applied_position() {
        std::lock_guard lock(position_mutex);
        return applied_seq;
    }

    void note_applied(std::uint64_t seq) {
        {
            std::lock_guard lock(position_mutex);
            applied_seq = std::max(applied_seq, seq);
        }
        position_cv.notify_all();
    }

    void refresh_queue_length() {
        if (auto n = replica_queue_length(replica)) queued.store(*n, std::memory_order_relaxed);
    }

    // --- following ------------------------------------------------------

    /// A connection of this node's: its statements give up when it stops.
    Result<std::unique_ptr<Fleet>> connect() const {
        FleetOptions o = options.fleet;
        o.abandon = &stopping;
        return Fleet::connect(o);
    }

    Outcome connect_follower() {
        if (follow) return Ok{};
        auto conn = connect();
        if (!conn) return conn.error();
        if (auto ok = (*conn)->listen(); !ok) return ok;
        follow = std::move(*conn);
        return Ok{};
    }

    Result<FleetHead> resync(const std::string& reason) {
        say(FleetLogLevel::warning, fmt::format("fleet: rebuilding the replica from a snapshot: {}", reason));
        const auto started = std::chrono::steady_clock::now();
        auto head = replica_resync(
            replica, [&](FleetSnapshotSink& sink) { return follow->snapshot(sink); }, estimated_snapshot_bytes());
        if (!head) return head.error();
        resyncs.fetch_add(1, std::memory_order_relaxed);
        set_epoch(head->epoch);
        note_applied(head->last_seq);
        refresh_queue_length();
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                              started)
                            .count();
        say(FleetLogLevel::notice,
            fmt::format("fleet: replica rebuilt at change {} in {} ms", head->last_seq, ms));
        if (on_applied) on_applied();
        return head;
    }

    /// What a snapshot will take in the replica, roughly (records with a
    /// PEM of about 1 KB, and LMDB's overhead), so that the map is grown
    /// once up front rather than by doubling, each doubling starting the
    /// load over. 0 when the counts cannot be read.
    std::uint64_t estimated_snapshot_bytes() {
        std::uint64_t cas = 0;
        std::uint64_t devices = 0;
        const Outcome counted = follow->read([&](ReadView& r) -> Outcome {
            auto c = r.ca_count();
            if (!c) return c.error();
            auto d = r.device_count();
            if (!d) return d.error();
            cas = *c;
            devices = *d;
            return Ok{};
        });
        if (!counted) return 0;
        constexpr std::uint64_t kBytesPerDevice = 2048;
        constexpr std::uint64_t kBytesPerCa = 8192;
        return devices * kBytesPerDevice + cas * kBytesPerCa;
    }

    /// One round: fetch after the position and act on it. Returns true when
    /// more may follow at once (a full batch, a refetch).
    Result<bool> follow_round() {
        auto position = replica_position(replica);
        if (!position) return position.error();
        auto batch = follow->changes_after(position->seq, options.fetch_limit);
        if (!batch) return batch.error();
        head_seen.store(batch->head.last_seq, std::memory_order_relaxed);
        const FollowPlan plan = planner.plan(*position, *batch);
        switch (plan.action) {
            case FollowAction::up_to_date:
                lag_ms.store(0, std::memory_order_relaxed);
                note_applied(position->seq);
                return false;
            case FollowAction::resync: {
                auto head = resync(plan.reason);
                if (!head) return head.error();
                return true;
            }
            case FollowAction::apply:
            case FollowAction::refetch: {
                if (plan.count > 0) {
                    auto applied = apply_planned(position->epoch, *batch, plan);
                    if (!applied) return applied.error();
                }
                const std::size_t next = plan.first + plan.count;
                lag_ms.store(next < batch->changes.size()
                                 ? std::max<std::int64_t>(0, now_ms() - batch->changes[next].entry.time_ms)
                                 : 0,
                             std::memory_order_relaxed);
                if (plan.action == FollowAction::refetch) {
                    say(FleetLogLevel::info, fmt::format("fleet: {}; fetching again", plan.reason));
                    return plan.count > 0;
                }
                return batch->changes.size() >= options.fetch_limit || plan.new_seq < batch->head.last_seq;
            }
        }
        return false;
    }

    /// Sends queued registrations: inserts each device the fleet does not
    /// hold yet. One the fleet holds already (registered by another broker,
    /// or by an operator) is left as the fleet has it: its change reaches
    /// the replica through the log. Either way it leaves the queue.
    Outcome send_registrations() {
        if (!registrations_waiting.exchange(false)) return Ok{};
        for (;;) {
            auto queued_now = replica_queued_registrations(replica, kRegistrationsPerRound);
            if (!queued_now) return queued_now.error();
            if (queued_now->empty()) break;
            std::vector<Fleet::WriteFn> fns;
            fns.reserve(queued_now->size());
            for (const DeviceRecord& rec : *queued_now) {
                fns.push_back([&rec](WriteView& w) -> Outcome {
                    auto existing = w.get_device(rec.ca_sn, rec.device_sn);
                    if (!existing) return existing.error();
                    if (*existing) return Ok{};
                    return w.insert_device(rec, "AutoRegister", "connection");
                });
            }
            std::vector<Outcome> results;
            auto committed = follow->write_batch(fns, results);
            if (!committed) {
                registrations_waiting.store(true);
                return committed.error();
            }
            for (std::size_t i = 0; i < queued_now->size(); ++i) {
                const DeviceRecord& rec = (*queued_now)[i];
                if (!results[i] && results[i].error().code != Errc::not_found) {
                    say(FleetLogLevel::error, fmt::format("fleet: cannot register DeviceSn {} under CaSn {}: {}",
                                                          rec.device_sn, rec.ca_sn, results[i].error().message));
                } else if (!results[i]) {
                    say(FleetLogLevel::warning,
                        fmt::format("fleet: DeviceSn {} was not registered: the fleet no longer holds CaSn {}",
                                    rec.device_sn, rec.ca_sn));
                }
                if (auto ok = replica_drop_registration(replica, rec.ca_sn, rec.device_sn); !ok) return ok;
            }
            if (!committed->empty()) {
                if (auto applied = replica_apply(replica, current_epoch(), *committed); applied) {
                    note_applied(committed->back().entry.seq);
                    if (on_applied) on_applied();
                }
            }
            refresh_queue_length();
            if (queued_now->size() < kRegistrationsPerRound) break;
        }
        return Ok{};
    }

    void maybe_trim() {
        if (options.trim_interval.count() == 0) return;
        const auto now = std::chrono::steady_clock::now();
        if (last_trim != std::chrono::steady_clock::time_point{} && now - last_trim < options.trim_interval) return;
        last_trim = now;
        auto trimmed = follow->trim(options.log_retention);
        if (!trimmed) {
            say(FleetLogLevel::warning, fmt::format("fleet: cannot trim the change log: {}", trimmed.error().message));
        } else if (*trimmed > 0) {
            say(FleetLogLevel::info, fmt::format("fleet: trimmed {} change log entries (keeping the newest {})",
                                                 *trimmed, options.log_retention));
        }
    }

    /// Brings the replica up to date (start-up): rounds until nothing is left.
    Outcome catch_up() {
        for (;;) {
            auto more = follow_round();
            if (!more) return more.error();
            if (!*more) return Ok{};
        }
    }

    void follower_loop() {
        auto pause = options.poll_interval;
        // Whether the notifications last heard name only changes the replica
        // holds already (this broker's own commits, applied by the writer):
        // then the next round is skipped, unless the last one ran longer
        // than a poll interval ago (a round also checks the log's anchor).
        bool heard_applied = false;
        auto last_round = std::chrono::steady_clock::now();
        while (!stopping.load()) {
            Outcome ok = connect_follower();
            bool more = false;
            if (ok) {
                const auto now = std::chrono::steady_clock::now();
                const bool skip = std::exchange(heard_applied, false) && now - last_round < options.poll_interval;
                if (!skip) last_round = now;
                auto round = skip ? Result<bool>(false) : follow_round();
                if (round) {
                    more = *round;
                    if (auto sent = send_registrations(); !sent) ok = sent.error();
                    if (ok) maybe_trim();
                } else {
                    ok = round.error();
                }
            }
            if (!ok) {
                // A statement abandoned because the broker stops is no outage.
                if (stopping.load()) break;
                // A failure of ours (a replica write) and the fleet not
                // answering look alike from here; both are retried.
                follow.reset();
                mark_unreachable(ok.error());
                pause = std::min(kMaxRetryPause, pause * 2);
                sleep_for(pause);
                continue;
            }
            mark_reachable();
            pause = options.poll_interval;
            if (more) continue;
            auto woke = follow->wait_for_commit(options.poll_interval);
            if (!woke) {
                follow.reset();
            } else if (*woke) {
                const auto heard = follow->heard_through();
                if (heard && *heard > applied_position()) await_commit_in_flight();
                heard_applied = heard && *heard <= applied_position();
            }
        }
    }

    /// Waits, at most kAwaitWriter, for the writer's commit in flight to
    /// end, if there is one: it brings the changes committed before its own
    /// into the replica (see apply_own).
    void await_commit_in_flight() {
        std::unique_lock lock(jobs_mutex);
        if (!committing) return;
        const std::uint64_t ended = commits_ended;
        commit_cv.wait_for(lock, kAwaitWriter, [&] { return stopping.load() || commits_ended != ended; });
    }

    void end_commit() {
        {
            std::lock_guard lock(jobs_mutex);
            committing = false;
            ++commits_ended;
        }
        commit_cv.notify_all();
    }

    void sleep_for(std::chrono::milliseconds d) {
        std::unique_lock lock(jobs_mutex);
        jobs_cv.wait_for(lock, d, [&] { return stopping.load(); });
    }

    // --- admin writes -----------------------------------------------------

    void writer_loop() {
        std::size_t last_batch = 0;
        for (;;) {
            std::vector<WriteJob> batch;
            {
                std::unique_lock lock(jobs_mutex);
                jobs_cv.wait(lock, [&] { return stopping.load() || !jobs.empty(); });
                if (jobs.empty()) return;  // stopping, and nothing left
                // A lone caller never waits: its last commit carried one call.
                if (last_batch > 1 && jobs.size() < last_batch) {
                    jobs_cv.wait_for(lock, kBatchLinger,
                                     [&] { return stopping.load() || jobs.size() >= last_batch; });
                }
                while (!jobs.empty() && batch.size() < kMaxJobsPerCommit) {
                    batch.push_back(std::move(jobs.front()));
                    jobs.pop_front();
                }
                committing = true;
            }
            last_batch = batch.size();
            const BatchOutcome done = commit_batch(batch);
            end_commit();
            // The callers read their writes here: the answers wait (bounded)
            // until the replica holds them.
            if (done.wait_for != 0) await_applied(done.wait_for);
            for (std::size_t i = 0; i < batch.size(); ++i) batch[i].done.set_value(done.outcomes[i]);
        }
    }

    struct BatchOutcome {
        std::vector<Outcome> outcomes;  ///< one a job
        std::uint64_t wait_for = 0;     ///< the seq the replica must hold before the answers; 0: none
    };

    /// Commits the batch and applies it, with what came before, to the replica.
    BatchOutcome commit_batch(const std::vector<WriteJob>& batch) {
        auto fail_all = [&](const Error& e) { return BatchOutcome{std::vector<Outcome>(batch.size(), e), 0}; };
        if (!writer_conn) {
            auto conn = connect();
            if (!conn) {
                mark_unreachable(conn.error());
                return fail_all(fatal_for_start(conn.error()) ? conn.error() : unreachable(conn.error()));
            }
            writer_conn = std::move(*conn);
        }
        std::vector<Fleet::WriteFn> fns;
        fns.reserve(batch.size());
        for (auto& job : batch) fns.push_back(job.fn);
        std::vector<Outcome> results;
        // The changes other members committed since the replica's position
        // come with the commit (see apply_own).
        const auto position = replica_position(replica);
        FleetCatchUp catch_up;
        catch_up.after = position ? position->seq : 0;
        catch_up.limit = options.fetch_limit;
        FleetCatchUp* const wanted = position ? &catch_up : nullptr;
        Result<std::vector<FleetChange>> committed = [&]() -> Result<std::vector<FleetChange>> {
            if (fns.size() == 1) {
                auto one = writer_conn->write(fns.front(), wanted);
                results.assign(1, one ? Outcome(Ok{}) : Outcome(one.error()));
                return one;
            }
            return writer_conn->write_batch(fns, results, wanted);
        }();
        if (!committed) {
            if (committed.error().code == Errc::unavailable) {
                writer_conn.reset();
                mark_unreachable(committed.error());
            }
            // write and write_batch fill every slot with the commit's error.
            return {std::move(results), 0};
        }
        mark_reachable();
        if (committed->empty()) return {std::move(results), 0};
        apply_own(*committed, position ? &*position : nullptr, catch_up.batch);
        return {std::move(results), committed->back().entry.seq};
    }

    /// Other members' changes committed just before this member's own (the
    /// head row orders them) are fetched on the writer's connection and
    /// applied with its own, so that the answer need not wait for the
    /// follower to hear of them. Anything unusual (a gap, another epoch, a
    /// failure) is left to the follower, as is checking the log's anchor.
    void fetch_before_own(std::uint64_t last) {
        auto position = replica_position(replica);
        if (!position || position->seq >= last) return;
        auto batch = writer_conn->changes_after(position->seq, options.fetch_limit);
        if (!batch) return;
        const FollowPlan plan = plan_follow(*position, *batch);
        if (plan.action != FollowAction::apply || plan.count == 0) return;
        (void)apply_planned(position->epoch, *batch, plan);  // a failure is left to the follower
    }

    /// Applies the run of `batch` that `plan` chose, and `then` after it (a
    /// write's own changes), in one replica transaction at `at_epoch`, then
    /// tells whoever waits for the position. Something must be applied:
    /// plan.count > 0 or `then` not empty.
    Outcome apply_planned(const std::string& at_epoch, const FleetChangeBatch& batch, const FollowPlan& plan,
                          const std::vector<FleetChange>& then = {}) {
        const auto from = batch.changes.begin() + static_cast<std::ptrdiff_t>(plan.first);
        std::vector<FleetChange> run(from, from + static_cast<std::ptrdiff_t>(plan.count));
        run.insert(run.end(), then.begin(), then.end());
        auto applied = replica_apply(replica, at_epoch, run);
        if (!applied) return applied.error();
        note_applied(then.empty() ? plan.new_seq : then.back().entry.seq);
        refresh_queue_length();  // applied registrations leave the queue
        if (on_applied) on_applied();
        return Ok{};
    }

    /// Applies the changes the write's commit read (`before`: the log up to
    /// the write's first change, read after `position`) and the write's own
    /// in one replica transaction; false when they do not join the replica
    /// (a gap, another epoch, a log trimmed past the position, more than
    /// one read's worth), to be fetched instead.
    bool apply_with_before(const FollowerPosition& position, const FleetChangeBatch& before,
                           const std::vector<FleetChange>& own) {
        if (before.head.last_seq + 1 != own.front().entry.seq) return false;
        const FollowPlan plan = plan_follow(position, before);
        const bool joins = plan.action == FollowAction::up_to_date ||
                           (plan.action == FollowAction::apply && plan.new_seq == before.head.last_seq);
        return joins && apply_planned(position.epoch, before, plan, own).ok();
    }

    /// Applies what this broker committed (not empty) to its replica before
    /// answering, so the caller reads its own write here, with what other
    /// members committed before it (read by the commit, or else fetched).
    /// What the replica still lacks then is the follower's: see await_applied.
    void apply_own(const std::vector<FleetChange>& changes, const FollowerPosition* position,
                   const std::optional<FleetChangeBatch>& before) {
        const std::uint64_t last = changes.back().entry.seq;
        if (applied_position() + 1 < changes.front().entry.seq) {
            if (!(position && before && apply_with_before(*position, *before, changes))) fetch_before_own(last);
        } else if (auto applied = replica_apply(replica, current_epoch(), changes); applied && *applied > 0) {
            note_applied(last);
            if (on_applied) on_applied();
        }
    }

    /// Waits (bounded) until the replica holds `last`: the follower brings
    /// what apply_own could not.
    void await_applied(std::uint64_t last) {
        std::unique_lock lock(position_mutex);
        if (applied_seq < last) {
            registrations_waiting.store(true);  // any reason to run a round soon
            position_cv.wait_for(lock, kReadYourWrites, [&] { return applied_seq >= last || stopping.load(); });
        }
    }
};

FleetNode::FleetNode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FleetNode::~FleetNode() { stop(); }

void FleetNode::stop() {
    Impl& d = *impl_;
    {
        std::lock_guard lock(d.jobs_mutex);
        d.stopping.store(true);
    }
    d.jobs_cv.notify_all();
    d.position_cv.notify_all();
    d.commit_cv.notify_all();
    if (d.writer_thread.joinable()) d.writer_thread.join();
    if (d.follower_thread.joinable()) d.follower_thread.join();
}

Result<std::unique_ptr<FleetNode>> FleetNode::start(Store& replica, const FleetNodeOptions& options,
                                                    std::function<void()> on_applied, FleetLog log) {
    auto impl = std::make_unique<Impl>(replica, options, std::move(on_applied), std::move(log));
    Impl& d = *impl;
    auto position = replica_position(replica);
    if (!position) return position.error();
    d.set_epoch(position->epoch);
    d.note_applied(position->seq);
    d.refresh_queue_length();

    if (auto ok = d.connect_follower(); !ok) {
        if (fatal_for_start(ok.error())) return ok.error();
        if (position->epoch.empty()) {
            return make_error(Errc::unavailable,
                              fmt::format("cannot reach the fleet database and the replica was never loaded from "
                                          "it: {}",
                                          ok.error().message));
        }
        d.mark_unreachable(ok.error());
    } else {
        d.connected.store(true);
        if (auto ok2 = d.catch_up(); !ok2) {
            if (fatal_for_start(ok2.error())) return ok2.error();
            if (replica_position(replica).ok() && replica_position(replica)->epoch.empty()) {
                return make_error(ok2.error().code,
                                  fmt::format("cannot load the replica from the fleet: {}", ok2.error().message));
            }
            d.follow.reset();
            d.mark_unreachable(ok2.error());
        } else {
            const auto now = replica_position(replica);
            d.say(FleetLogLevel::notice,
                  fmt::format("fleet: instance '{}' on {}, replica at change {}", options.fleet.instance_id,
                              d.follow->describe(), now ? now->seq : 0));
        }
    }
    d.follower_thread = spawn_thread([&d] { d.follower_loop(); });
    d.writer_thread = spawn_thread([&d] { d.writer_loop(); });
    return std::unique_ptr<FleetNode>(new FleetNode(std::move(impl)));
}

Outcome FleetNode::read(const ReadFn& fn) { return impl_->replica.read(fn); }

Outcome FleetNode::write(WriteFn fn) {
    Impl& d = *impl_;
    std::future<Outcome> done;
    {
        std::lock_guard lock(d.jobs_mutex);
        if (d.stopping.load()) return make_error(Errc::unavailable, "the broker is shutting down");
        WriteJob job{std::move(fn), {}};
        done = job.done.get_future();
        d.jobs.push_back(std::move(job));
    }
    d.jobs_cv.notify_all();
    return done.get();
}

std::optional<FleetStats> FleetNode::fleet_stats() const {
    Impl& d = *impl_;
    FleetStats s;
    s.connected = d.connected.load(std::memory_order_relaxed);
    s.epoch = d.current_epoch();
    s.position = d.applied_position();
    s.head = std::max(d.head_seen.load(std::memory_order_relaxed), s.position);
    s.lag_ms = d.lag_ms.load(std::memory_order_relaxed);
    s.queued_registrations = d.queued.load(std::memory_order_relaxed);
    s.resyncs = d.resyncs.load(std::memory_order_relaxed);
    return s;
}

void FleetNode::registration_queued() noexcept {
    impl_->queued.fetch_add(1, std::memory_order_relaxed);
    impl_->registrations_waiting.store(true);
}

std::uint64_t FleetNode::queued_registrations() const noexcept {
    return impl_->queued.load(std::memory_order_relaxed);
}

}  // namespace devcert
