// Where the admin operations read and write records. Standalone, that is the
// LMDB store (through the group-commit writer in a broker); in fleet mode a
// broker writes to PostgreSQL and reads its replica, and `devcertctl
// --fleet` reads and writes PostgreSQL directly. The operations do not know
// which: every answer is the same in every mode.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "devcert/result.hpp"
#include "devcert/store.hpp"

namespace devcert {

/// Where a fleet member stands, for GetStats.
struct FleetStats {
    bool connected = false;             ///< the fleet database answered the last attempt
    std::string epoch;                  ///< of the fleet the replica follows
    std::uint64_t position = 0;         ///< newest seq the replica applied
    std::uint64_t head = 0;             ///< newest seq the fleet was seen to hold
    std::int64_t lag_ms = 0;            ///< age of the oldest change seen but not applied yet (0: none)
    std::uint64_t queued_registrations = 0;
    std::uint64_t resyncs = 0;          ///< rebuilds from a snapshot since start
};

class RecordAccess {
public:
    using ReadFn = std::function<Outcome(ReadView&)>;
    using WriteFn = std::function<Outcome(WriteView&)>;

    virtual ~RecordAccess() = default;
    /// Runs fn in a read-only transaction.
    virtual Outcome read(const ReadFn& fn) = 0;
    /// Runs a mutation and returns once it is durable where the truth is
    /// (and, in a fleet member, applied to its replica). fn may run more
    /// than once (from scratch), so it acts only through the view.
    /// Errc::unavailable when the truth cannot be reached: nothing changed.
    virtual Outcome write(WriteFn fn) = 0;
    /// Fleet members only.
    virtual std::optional<FleetStats> fleet_stats() const { return std::nullopt; }
};

}  // namespace devcert
