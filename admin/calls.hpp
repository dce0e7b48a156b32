// The ways devcertctl reaches the admin API: over the broker's admin socket,
// directly on a status store while no broker needs to run, or directly on a
// fleet database (fleet_calls.cpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace devcert {
struct AdminContext;
class Store;
}

namespace devcertctl {

struct Reply {
    int http_status = 0;
    std::string body;  ///< JSON
};

/// The call could not be made at all (socket unreachable, store unopenable);
/// the message is one line.
struct Unreachable {
    std::string message;
};

using Params = std::vector<std::pair<std::string, std::string>>;

/// Runs Action and params through an Api made in this process over
/// `context` (its records or store, and its config; the counters and the
/// online registry are this process's own, empty), trusting the calling
/// user as --db and --fleet do. Throws Unreachable if the Api cannot be made.
Reply call_in_process(devcert::AdminContext context, const std::string& action, const Params& params);

/// Opens the status store in `db_dir`, which must exist (a mistyped path
/// must not quietly become a new, empty store). Throws Unreachable.
std::unique_ptr<devcert::Store> open_existing_store(const std::string& db_dir);

/// A recorded "max_ca" (store or fleet metadata) as a CA limit; nullopt
/// when it is not a whole number from 1 up.
std::optional<unsigned> recorded_max_ca(const std::string& text);

/// POSTs Action and params, form-encoded, to the admin socket. Throws
/// Unreachable.
Reply call_socket(const std::string& socket_path, const std::string& action, const Params& params);

/// Runs the call in this process on the store in `db_dir`, as the calling
/// user, with the policy and rate limit off. Throws Unreachable.
Reply call_store(const std::string& db_dir, const std::string& action, const Params& params);

/// Runs the call in this process on the fleet database of `conninfo`, for
/// the instance the call's MqttInstanceId names, as the calling user, with
/// the policy and rate limit off (like call_store). CaNumExceed applies the
/// fleet's recorded "max_ca" (meta), else the default. Throws Unreachable
/// for a connection string that does not parse, a database that cannot be
/// reached, a schema this build does not read, and an instance the fleet
/// does not hold; the message never holds the password.
Reply call_fleet(const std::string& conninfo, const std::string& action, const Params& params);

/// InitFleet: Fleet::init for `instance_id`, then the instance's head.
/// Returns {"InstanceId", "SchemaVersion", "Epoch", "LastSeq"}. Throws
/// Unreachable as call_fleet.
Reply init_fleet(const std::string& conninfo, const std::string& instance_id);

/// MigrateToFleet: migrate_to_fleet() of the store at `db_dir` into the
/// instance. Returns the report (200), or a refusal (409, {"Code",
/// "Message"}: the instance is not empty, the store is another instance's,
/// a value PostgreSQL cannot hold). Throws Unreachable as call_fleet, and
/// for a directory that is not a store.
Reply migrate_fleet(const std::string& conninfo, const std::string& db_dir, const std::string& instance_id);

/// CheckFleet: check_replica() of the replica at `db_dir`. Returns the
/// report, 200 when consistent and 409 when not. Throws Unreachable as
/// call_fleet.
Reply check_fleet(const std::string& conninfo, const std::string& db_dir, const std::string& instance_id);

}  // namespace devcertctl
