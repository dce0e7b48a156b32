#include "devcert/fleet_records.hpp"

#include <utility>

namespace devcert {

FleetRecords::FleetRecords(std::unique_ptr<Fleet> fleet) : fleet_(std::move(fleet)) {}

Outcome FleetRecords::read(const ReadFn& fn) {
    std::lock_guard lock(mutex_);
    return fleet_->read(fn);
}

Outcome FleetRecords::write(WriteFn fn) {
    std::lock_guard lock(mutex_);
    auto committed = fleet_->write(fn);
    if (!committed) return committed.error();
    return Ok{};
}

}  // namespace devcert
