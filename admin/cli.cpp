#include "cli.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>

#include "devcert/admin_server.hpp"

namespace devcertctl {

namespace {

using devcert::Operation;
using devcert::ParamKind;
using devcert::ParamSpec;

// A file bigger than the transport accepts for any value is refused here,
// before it is read into memory.
constexpr std::size_t kMaxFileValue = devcert::kMaxParamValue;

std::string_view kind_placeholder(ParamKind kind) {
    switch (kind) {
        case ParamKind::text: return "<text>";
        case ParamKind::serial: return "<serial>";
        case ParamKind::pem: return "<pem|@file>";
        case ParamKind::integer: return "<number>";
        case ParamKind::status: return "<0|1>";
    }
    return "<value>";
}

std::string read_value_file(const std::string& param, const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw UsageError{fmt::format("--{}: cannot read '{}': {}", param, path, std::strerror(errno))};
    }
    std::string content;
    char buffer[4096];
    while (in.read(buffer, sizeof buffer) || in.gcount() > 0) {
        content.append(buffer, static_cast<std::size_t>(in.gcount()));
        if (content.size() > kMaxFileValue) {
            throw UsageError{fmt::format("--{}: '{}' is larger than {} bytes", param, path, kMaxFileValue)};
        }
    }
    if (in.bad()) throw UsageError{fmt::format("--{}: cannot read '{}'", param, path)};
    return content;
}

// "--name value" or "--name=value"; returns the name and the value, taking
// the next argument when needed.
std::pair<std::string, std::string> option_with_value(const std::vector<std::string>& args, std::size_t& i) {
    const std::string& arg = args[i];
    const std::size_t eq = arg.find('=');
    if (eq != std::string::npos) return {arg.substr(2, eq - 2), arg.substr(eq + 1)};
    std::string name = arg.substr(2);
    if (i + 1 >= args.size()) throw UsageError{fmt::format("--{} needs a value", name)};
    return {std::move(name), args[++i]};
}

bool is_help(const std::string& arg) { return arg == "--help" || arg == "-h"; }

// Options of devcertctl itself; lower-case, so no operation parameter can
// take their names, and they may come before or after the operation.
struct Given {
    bool socket = false;
    bool fleet = false;
};

bool apply_global_option(const std::string& name, std::string value, Invocation& call, Given& given) {
    if (name == "socket") {
        if (value.empty()) throw UsageError{"--socket needs a path"};
        call.socket = std::move(value);
        given.socket = true;
    } else if (name == "db") {
        if (value.empty()) throw UsageError{"--db needs a directory"};
        call.db = std::move(value);
    } else if (name == "fleet") {
        if (value.empty()) throw UsageError{"--fleet needs a connection string"};
        call.fleet = std::move(value);
        given.fleet = true;
    } else if (name == "output") {
        if (value == "json") {
            call.output = OutputFormat::json;
        } else if (value == "table") {
            call.output = OutputFormat::table;
        } else {
            throw UsageError{fmt::format("--output '{}' is not one of json, table", value)};
        }
    } else {
        return false;
    }
    return true;
}

const FleetCommand* find_fleet_command(std::string_view name) {
    for (const FleetCommand& command : fleet_commands()) {
        if (command.name == name) return &command;
    }
    return nullptr;
}

// The parameters of a fleet command: MqttInstanceId only (or
// $DEVCERT_INSTANCE_ID), and global options.
Parsed parse_fleet_command(const std::vector<std::string>& args, std::size_t i, Invocation call, Given given,
                           const char* (*env)(const char*)) {
    Parsed parsed;
    const FleetCommand& command = *call.fleet_command;
    for (; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (is_help(arg)) {
            parsed.help = fleet_command_help(command);
            return parsed;
        }
        if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
            throw UsageError{fmt::format("unexpected argument '{}': parameters are given as --Name value", arg)};
        }
        auto [name, value] = option_with_value(args, i);
        if (apply_global_option(name, value, call, given)) continue;
        if (name != "MqttInstanceId") {
            throw UsageError{fmt::format("{} has no parameter --{} (devcertctl {} --help)", command.name, name,
                                         command.name)};
        }
        if (!call.params.empty()) throw UsageError{"--MqttInstanceId is given twice"};
        call.params.emplace_back(std::move(name), std::move(value));
    }
    if (!given.fleet && given.socket) call.fleet.reset();
    if (!call.fleet) throw UsageError{fmt::format("{} works on a fleet database: give --fleet CONNINFO", command.name)};
    if (command.with_store) {
        if (given.socket) throw UsageError{fmt::format("{} takes --db and --fleet, not --socket", command.name)};
        if (!call.db) throw UsageError{fmt::format("{} works on a store and a fleet: give --db DIR", command.name)};
    } else if (given.socket || call.db) {
        throw UsageError{fmt::format("{} takes --fleet only, not --socket or --db", command.name)};
    }
    if (call.all_pages) throw UsageError{fmt::format("--all walks lists; {} is not one", command.name)};
    if (call.params.empty()) {
        if (const char* instance = env("DEVCERT_INSTANCE_ID"); instance != nullptr && *instance != '\0') {
            call.params.emplace_back("MqttInstanceId", instance);
        } else {
            throw UsageError{fmt::format("{} needs --MqttInstanceId (devcertctl {} --help)", command.name, command.name)};
        }
    }
    parsed.call = std::move(call);
    return parsed;
}

}  // namespace

const std::vector<FleetCommand>& fleet_commands() {
    static const std::vector<FleetCommand> commands{
        {"InitFleet", "create the fleet schema (or upgrade it to this version) and the instance; idempotent"},
        {"MigrateToFleet", "move the standalone store at --db into the empty fleet instance, with its history", true},
        {"CheckFleet", "compare the replica at --db with the fleet; exit 1 when they differ", true},
    };
    return commands;
}

Parsed parse_command_line(const std::vector<std::string>& args, const char* (*env)(const char*)) {
    Parsed parsed;
    Invocation call;
    if (const char* socket = env("DEVCERT_SOCKET"); socket != nullptr && *socket != '\0') call.socket = socket;
    if (const char* fleet = env("DEVCERT_FLEET"); fleet != nullptr && *fleet != '\0') call.fleet = fleet;
    Given options_given;

    std::size_t i = 0;
    for (; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (is_help(arg)) {
            parsed.help = general_help();
            return parsed;
        }
        if (arg.rfind("--", 0) != 0) break;
        if (arg == "--all") {
            call.all_pages = true;
            continue;
        }
        auto [name, value] = option_with_value(args, i);
        if (!apply_global_option(name, std::move(value), call, options_given)) {
            throw UsageError{fmt::format("unknown option --{} (devcertctl --help lists them)", name)};
        }
    }
    if (i == args.size()) throw UsageError{"no operation given (devcertctl --help lists them)"};

    const std::string& action = args[i++];
    call.fleet_command = find_fleet_command(action);
    if (call.fleet_command != nullptr) return parse_fleet_command(args, i, std::move(call), options_given, env);
    call.operation = devcert::find_operation(action);
    if (call.operation == nullptr) {
        throw UsageError{fmt::format("unknown operation '{}' (devcertctl --help lists them)", action)};
    }
    const Operation& op = *call.operation;

    for (; i < args.size(); ++i) {
        const std::string& arg = args[i];
        if (is_help(arg)) {
            parsed.help = operation_help(op);
            return parsed;
        }
        if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
            throw UsageError{fmt::format("unexpected argument '{}': parameters are given as --Name value", arg)};
        }
        if (arg == "--all") {
            call.all_pages = true;
            continue;
        }
        auto [name, value] = option_with_value(args, i);
        if (apply_global_option(name, value, call, options_given)) continue;
        const ParamSpec* spec = devcert::find_param(op, name);
        if (spec == nullptr) {
            throw UsageError{fmt::format("{} has no parameter --{} (devcertctl {} --help lists them)", op.name, name,
                                         op.name)};
        }
        const bool repeated = std::any_of(call.params.begin(), call.params.end(),
                                          [&option = name](const auto& p) { return p.first == option; });
        if (repeated) throw UsageError{fmt::format("--{} is given twice", name)};
        if (spec->kind == ParamKind::pem && value.size() > 1 && value.front() == '@') {
            value = read_value_file(name, value.substr(1));
        }
        call.params.emplace_back(std::move(name), std::move(value));
    }

    // $DEVCERT_FLEET is a default like $DEVCERT_SOCKET: --socket or --db
    // on the command line wins over it.
    if (!options_given.fleet && (options_given.socket || call.db)) call.fleet.reset();
    if (options_given.socket + call.db.has_value() + call.fleet.has_value() > 1)
        throw UsageError{"--socket, --db and --fleet exclude each other"};
    if (call.all_pages) {
        if (devcert::find_param(op, "NextToken") == nullptr)
            throw UsageError{fmt::format("--all walks lists; {} is not one", op.name)};
        for (const char* own : {"PageNo", "NextToken"}) {
            const bool given = std::any_of(call.params.begin(), call.params.end(),
                                           [&](const auto& p) { return p.first == own; });
            if (given) throw UsageError{fmt::format("--all starts at the first page: leave out --{}", own)};
        }
        const bool sized = std::any_of(call.params.begin(), call.params.end(),
                                       [](const auto& p) { return p.first == "PageSize"; });
        if (!sized) call.params.emplace_back("PageSize", "100");
    }

    std::vector<std::string> missing;
    for (const ParamSpec& spec : op.params) {
        const bool given = std::any_of(call.params.begin(), call.params.end(),
                                       [&](const auto& p) { return p.first == spec.name; });
        if (given) continue;
        if (spec.name == "MqttInstanceId") {
            if (const char* instance = env("DEVCERT_INSTANCE_ID"); instance != nullptr && *instance != '\0') {
                call.params.emplace_back(std::string(spec.name), instance);
                continue;
            }
        }
        if (spec.required) missing.push_back(fmt::format("--{}", spec.name));
    }
    if (!missing.empty()) {
        throw UsageError{fmt::format("{} needs {} (devcertctl {} --help)", op.name, fmt::join(missing, ", "), op.name)};
    }
    parsed.call = std::move(call);
    return parsed;
}

std::string general_help() {
    std::string text = fmt::format(
        "usage: devcertctl [--socket PATH | --db DIR | --fleet CONNINFO] [--output json|table] [--all]\n"
        "                  <Operation> [--<Param> <value>]...\n"
        "       devcertctl --fleet CONNINFO InitFleet --MqttInstanceId ID\n"
        "       devcertctl --db DIR --fleet CONNINFO MigrateToFleet|CheckFleet --MqttInstanceId ID\n"
        "\n"
        "Calls an operation of the mosquitto-devcert admin API and prints its JSON response.\n"
        "Exit status: 0 success, 1 the API refused the call (its error is printed), 2 usage\n"
        "error, or the admin socket, store or fleet database cannot be reached.\n"
        "\n"
        "options:\n"
        "  --socket PATH    the broker's admin socket (default {}, or $DEVCERT_SOCKET)\n"
        "  --db DIR         work on the status store in DIR directly, without a broker; the\n"
        "                   store's file permissions decide who may\n"
        "  --fleet CONNINFO work on the fleet database directly, without a broker (default\n"
        "                   $DEVCERT_FLEET); a libpq connection string, postgresql:// URI or\n"
        "                   service name; PostgreSQL's privileges decide who may. The\n"
        "                   instance is the call's MqttInstanceId\n"
        "  --output FORMAT  json (default) or table (lists as aligned columns, for people)\n"
        "  --all            for a list: every page (following NextToken), as one list\n"
        "  -h, --help       this help; after an operation, that operation's parameters\n"
        "\n"
        "MqttInstanceId may be set with $DEVCERT_INSTANCE_ID. CaContent, VerificationContent\n"
        "and DeviceContent take @path to read a PEM file.\n"
        "\n"
        "operations:\n",
        kDefaultSocket);
    std::size_t width = 0;
    for (const Operation& op : devcert::operations()) width = std::max(width, op.name.size());
    for (const FleetCommand& command : fleet_commands()) width = std::max(width, command.name.size());
    for (const Operation& op : devcert::operations()) {
        text += fmt::format("  {:<{}}  {}\n", op.name, width, op.help);
    }
    text += "\nfleet commands (with --fleet):\n";
    for (const FleetCommand& command : fleet_commands()) {
        text += fmt::format("  {:<{}}  {}\n", command.name, width, command.help);
    }
    return text;
}

std::string fleet_command_help(const FleetCommand& command) {
    std::string details;
    if (command.name == "InitFleet") {
        details =
            "Run it as a role that may create the schema; safe to run from several places at once.\n"
            "Prints {\"InstanceId\", \"SchemaVersion\", \"Epoch\", \"LastSeq\"} of the instance.\n";
    } else if (command.name == "MigrateToFleet") {
        details =
            "The instance must exist (InitFleet) and be empty; stop the brokers using the store first.\n"
            "Moves every record and the retained change log in one transaction and prints what it\n"
            "moved. A refusal (instance not empty, store of another instance) exits 1.\n";
    } else {
        details =
            "Compares every record of the replica (a fleet broker's plugin_opt_db_path; the broker may\n"
            "run) with the fleet, and prints a JSON report. Exit 0 consistent, 1 differences.\n";
    }
    const std::string usage = command.with_store
                                  ? fmt::format("devcertctl --db DIR --fleet CONNINFO {}", command.name)
                                  : fmt::format("devcertctl --fleet CONNINFO {}", command.name);
    return fmt::format(
        "usage: {} --MqttInstanceId <text>\n\n{}.\n{}\n"
        "parameters:\n"
        "  --MqttInstanceId <text>  the instance (plugin_opt_instance_id of the fleet's brokers); required,\n"
        "                           default $DEVCERT_INSTANCE_ID\n",
        usage, command.help, details);
}

std::string operation_help(const Operation& op) {
    std::string usage = fmt::format("usage: devcertctl [options] {}", op.name);
    std::vector<std::string> shapes;
    std::size_t width = 0;
    for (const ParamSpec& spec : op.params) {
        std::string shape = fmt::format("--{} {}", spec.name, kind_placeholder(spec.kind));
        usage += spec.required ? " " + shape : " [" + shape + "]";
        width = std::max(width, shape.size());
        shapes.push_back(std::move(shape));
    }
    std::string text = fmt::format("{}\n\n{}\npermission: {} ({})\n\nparameters:\n", usage, op.help, op.permission,
                                   op.access == devcert::Access::write ? "changes the store" : "read only");
    for (std::size_t k = 0; k < op.params.size(); ++k) {
        const ParamSpec& spec = op.params[k];
        std::string note = spec.required ? "required" : "optional";
        if (spec.name == "MqttInstanceId") note += ", default $DEVCERT_INSTANCE_ID";
        text += fmt::format("  {:<{}}  {}; {}\n", shapes[k], width, spec.help, note);
    }
    return text;
}

}  // namespace devcertctl
