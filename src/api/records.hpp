// JSON forms of store records, as the reference shapes them (see
// operations.hpp for the conventions).
#pragma once

#include <nlohmann/json.hpp>

#include "devcert/counters.hpp"
#include "devcert/store.hpp"

namespace devcert {

nlohmann::json ca_json(const CaRecord& ca);
nlohmann::json device_json(const DeviceRecord& device, const OnlineRegistry* online);
nlohmann::json change_json(const ChangeEntry& change);

}  // namespace devcert
