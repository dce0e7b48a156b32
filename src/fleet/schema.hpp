// The fleet schema: creation, upgrades and the start-up check.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "devcert/result.hpp"
#include "pg.hpp"

namespace devcert::fleet_detail {

/// Instance ids follow plugin_opt_instance_id's rules.
Outcome check_instance_id(std::string_view id);

/// Creates or upgrades the schema and the instance, under an advisory lock.
Outcome create_or_upgrade(pg::Conn& conn, std::string_view instance_id);

struct InstanceRow {
    std::int64_t id = 0;
    std::string epoch;
};
/// Checks the schema version and finds the instance.
Result<InstanceRow> check_schema(pg::Conn& conn, std::string_view instance_id);

}  // namespace devcert::fleet_detail
