// Shared pieces of the fleet tests: a fresh database on this executable's
// PostgreSQL with the schema and one instance, and a Fleet connected to it.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "devcert/fleet.hpp"
#include "pg_server.hpp"

namespace devcert::test {

inline FleetOptions fleet_options(const std::string& conninfo, const std::string& instance = "fleet-test") {
    FleetOptions options;
    options.conninfo = conninfo;
    options.instance_id = instance;
    return options;
}

inline std::unique_ptr<Fleet> connect_fleet(const FleetOptions& options) {
    auto fleet = Fleet::connect(options);
    if (!fleet) FAIL(fleet.error().message);
    return std::move(*fleet);
}

/// A fresh database holding the schema and the instance "fleet-test".
struct FleetDb {
    std::string conninfo = PgServer::shared().create_database();
    FleetOptions options = fleet_options(conninfo);

    FleetDb() {
        if (auto r = Fleet::init(options); !r) FAIL(r.error().message);
    }
    std::unique_ptr<Fleet> connect() const { return connect_fleet(options); }
};

/// Requires fn to commit through fleet.write and returns the changes.
template <class Fn>
std::vector<FleetChange> must_commit(Fleet& fleet, Fn&& fn) {
    auto out = fleet.write([&](WriteView& view) -> Outcome { return fn(view); });
    if (!out) FAIL(out.error().message);
    return std::move(*out);
}

}  // namespace devcert::test
