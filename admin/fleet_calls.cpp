// devcertctl --fleet: the admin operations, and the fleet's own commands,
// run in this process on a fleet database.
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "calls.hpp"
#include "devcert/api.hpp"
#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/fleet.hpp"
#include "devcert/fleet_records.hpp"
#include "devcert/fleet_tools.hpp"
#include "devcert/store.hpp"

namespace devcertctl {

namespace {

using namespace devcert;

// Fleet errors are already one line and never quote the password (see
// fleet.hpp); an instance the fleet does not hold is a setup error, like a
// --db directory that is not a store, not an answer of the API.
[[noreturn]] void unreachable(const Error& error, const std::string& instance_id) {
    if (error.code == Errc::not_found) {
        throw Unreachable{fmt::format("the fleet database holds no instance '{}' (devcertctl --fleet CONNINFO "
                                      "InitFleet --MqttInstanceId {} creates it)",
                                      instance_id, instance_id)};
    }
    throw Unreachable{error.message};
}

std::unique_ptr<Fleet> connect(const std::string& conninfo, const std::string& instance_id) {
    FleetOptions options;
    options.conninfo = conninfo;
    options.instance_id = instance_id;
    auto fleet = Fleet::connect(options);
    if (!fleet) unreachable(fleet.error(), instance_id);
    return std::move(fleet).value();
}

}  // namespace

Reply call_fleet(const std::string& conninfo, const std::string& action, const Params& params) {
    // Every operation requires MqttInstanceId, and it names the instance:
    // the fleet may hold several, none of them "ours".
    std::string instance_id;
    for (const auto& [name, value] : params) {
        if (name == "MqttInstanceId") instance_id = value;
    }
    if (instance_id.empty()) throw Unreachable{"--fleet needs the call's --MqttInstanceId to name the instance"};
    auto fleet = connect(conninfo, instance_id);

    PluginConfig config;
    config.instance_id = instance_id;
    std::optional<std::string> max_ca;
    const Outcome read = fleet->read([&](ReadView& view) -> Outcome {
        auto limit = view.meta("max_ca");
        if (!limit) return limit.error();
        max_ca = std::move(*limit);
        return Ok{};
    });
    if (!read) unreachable(read.error(), instance_id);
    if (max_ca) {
        const auto limit = recorded_max_ca(*max_ca);
        if (!limit) {
            throw Unreachable{fmt::format("the fleet instance '{}' records an unreadable max_ca '{}'", instance_id,
                                          *max_ca)};
        }
        config.max_ca = *limit;
    }

    FleetRecords records(std::move(fleet));
    AdminContext context;
    context.records = &records;
    context.config = &config;
    return call_in_process(context, action, params);
}

Reply init_fleet(const std::string& conninfo, const std::string& instance_id) {
    FleetOptions options;
    options.conninfo = conninfo;
    options.instance_id = instance_id;
    if (auto created = Fleet::init(options); !created) unreachable(created.error(), instance_id);
    auto fleet = connect(conninfo, instance_id);
    auto head = fleet->head();
    if (!head) unreachable(head.error(), instance_id);
    const nlohmann::ordered_json body = {
        {"InstanceId", instance_id},
        {"SchemaVersion", kFleetSchemaVersion},
        {"Epoch", head->epoch},
        {"LastSeq", head->last_seq},
    };
    return Reply{200, body.dump()};
}

Reply migrate_fleet(const std::string& conninfo, const std::string& db_dir, const std::string& instance_id) {
    auto store = open_existing_store(db_dir);
    connect(conninfo, instance_id);  // the instance must exist: a setup error otherwise
    FleetOptions options;
    options.conninfo = conninfo;
    options.instance_id = instance_id;
    auto report = migrate_to_fleet(*store, options);
    if (!report) {
        const Error& e = report.error();
        if (e.code == Errc::already_exists || e.code == Errc::invalid_argument) {
            const nlohmann::ordered_json body = {{"Code", "MigrationRefused"}, {"Message", e.message}};
            return Reply{409, body.dump()};
        }
        unreachable(e, instance_id);
    }
    return Reply{200, to_json(*report)};
}

Reply check_fleet(const std::string& conninfo, const std::string& db_dir, const std::string& instance_id) {
    auto store = open_existing_store(db_dir);
    auto fleet = connect(conninfo, instance_id);
    auto report = check_replica(*store, *fleet);
    if (!report) unreachable(report.error(), instance_id);
    return Reply{report->consistent() ? 200 : 409, to_json(*report)};
}

}  // namespace devcertctl
