// A broker's membership of a fleet: keeps the LMDB replica following the
// fleet's change log, sends the registrations made on first connections, and
// carries the admin socket's writes to PostgreSQL. Its threads never call a
// broker function: they commit to the replica and call `on_applied`, and the
// broker thread's tail of the replica's change log does the kicks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "devcert/fleet.hpp"
#include "devcert/record_access.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"

namespace devcert {

struct FleetNodeOptions {
    FleetOptions fleet;
    /// The safety-net poll: how often the follower reads the log when no
    /// notification came.
    std::chrono::milliseconds poll_interval{500};
    /// How often a broker trims the fleet's log to `log_retention` entries
    /// (0 s: never).
    std::chrono::seconds trim_interval{60};
    std::uint64_t log_retention = kDefaultChangeLogRetention;
    /// Changes fetched per round.
    std::size_t fetch_limit = 2'000;
};

enum class FleetLogLevel { info, notice, warning, error };
/// Where the node's lines go. Called from the node's threads (the plugin
/// defers the lines to the broker thread) and from start().
using FleetLog = std::function<void(FleetLogLevel level, std::string line)>;

class FleetNode final : public RecordAccess {
public:
    /// Connects (checking the schema and the instance: a missing or newer
    /// schema, or an unknown instance, is an error naming it), then brings
    /// the replica up to date before returning: applies the changes after
    /// its position, or rebuilds it from a snapshot when it belongs to
    /// another epoch or fell behind the retained log. When the fleet cannot
    /// be reached and the replica was loaded before, it starts from the
    /// replica and keeps trying (logged once); a replica never loaded is an
    /// error. Then starts the follower and writer threads.
    static Result<std::unique_ptr<FleetNode>> start(Store& replica, const FleetNodeOptions& options,
                                                    std::function<void()> on_applied, FleetLog log);
    /// Stops and joins the threads.
    ~FleetNode() override;
    void stop();

    Outcome read(const ReadFn& fn) override;
    Outcome write(WriteFn fn) override;
    std::optional<FleetStats> fleet_stats() const override;

    /// Wakes the sender: a registration was queued in the replica.
    void registration_queued() noexcept;
    /// Registrations waiting for the fleet (kept up to date by the node).
    std::uint64_t queued_registrations() const noexcept;

private:
    struct Impl;
    explicit FleetNode(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace devcert
