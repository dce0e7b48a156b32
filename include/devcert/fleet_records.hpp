// The admin operations' records straight from the fleet database, with no
// replica: what `devcertctl --fleet` runs the operations on (and the fleet
// variant of the API tests). Reads and writes are Fleet::read and
// Fleet::write on one connection, one call at a time.
#pragma once

#include <memory>
#include <mutex>

#include "devcert/fleet.hpp"
#include "devcert/record_access.hpp"

namespace devcert {

class FleetRecords final : public RecordAccess {
public:
    explicit FleetRecords(std::unique_ptr<Fleet> fleet);

    /// Fleet::read in one REPEATABLE READ transaction.
    Outcome read(const ReadFn& fn) override;
    /// Fleet::write: returns once PostgreSQL committed (Errc::unavailable
    /// when it could not be reached: nothing changed).
    Outcome write(WriteFn fn) override;

    Fleet& fleet() noexcept { return *fleet_; }

private:
    std::mutex mutex_;  ///< a Fleet is one connection: calls take turns
    std::unique_ptr<Fleet> fleet_;
};

}  // namespace devcert
