// devcertctl's command line: global options, then an operation and its
// parameters in the reference CLI's `--Param value` style. What an operation
// accepts and requires comes from the operations table, as its help does.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "devcert/operations.hpp"

namespace devcertctl {

enum class OutputFormat { json, table };

inline constexpr const char* kDefaultSocket = "/run/mosquitto/devcert.sock";

/// Commands of devcertctl itself on a fleet database: not admin API
/// operations (not in the operations table), so only `--fleet` runs them.
struct FleetCommand {
    std::string_view name;
    std::string_view help;
    /// Also works on a standalone store or replica: needs --db DIR too.
    bool with_store = false;
};
const std::vector<FleetCommand>& fleet_commands();

struct Invocation {
    std::string socket = kDefaultSocket;        ///< --socket, else $DEVCERT_SOCKET, else the default
    std::optional<std::string> db;              ///< --db: work on the store directly
    /// --fleet (else $DEVCERT_FLEET unless --socket or --db is given): work
    /// on the fleet database directly. A connection string; never printed.
    std::optional<std::string> fleet;
    /// Set for a fleet command (then `operation` is null and params holds
    /// only MqttInstanceId).
    const FleetCommand* fleet_command = nullptr;
    OutputFormat output = OutputFormat::json;
    bool all_pages = false;                     ///< --all: follow NextToken to the end of a list
    const devcert::Operation* operation = nullptr;
    /// In the order given, file references (@path) already read.
    std::vector<std::pair<std::string, std::string>> params;
};

/// What the command line asks for: a call, or help text to print.
struct Parsed {
    std::optional<Invocation> call;
    std::string help;  ///< set when --help was asked for
};

/// Thrown for any usage error; the message is one line, without the
/// program name.
struct UsageError {
    std::string message;
};

/// Parses argv (without argv[0]). `env` looks up an environment variable
/// (DEVCERT_SOCKET, DEVCERT_FLEET, DEVCERT_INSTANCE_ID); it returns nullptr
/// when unset.
/// Throws UsageError.
Parsed parse_command_line(const std::vector<std::string>& args, const char* (*env)(const char*));

/// The text of `devcertctl --help`.
std::string general_help();
/// The text of `devcertctl <Operation> --help`.
std::string operation_help(const devcert::Operation& op);
/// The text of `devcertctl InitFleet --help`.
std::string fleet_command_help(const FleetCommand& command);

}  // namespace devcertctl
