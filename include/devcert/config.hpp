// The plugin's configuration: a parsed value built from plugin_opt_* lines.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "devcert/result.hpp"

namespace devcert {

enum class AutoRegister : std::uint8_t { active, inactive, off };
enum class UsernameMode : std::uint8_t { cn, subject, device_sn, keep };
enum class NoCertificate : std::uint8_t { defer, deny };
enum class OnStoreError : std::uint8_t { deny, allow };

struct PluginConfig {
    std::string instance_id = "local";
    std::string db_path = "/var/lib/mosquitto/devcert";
    std::string admin_socket = "/run/mosquitto/devcert.sock";  ///< "" when "off"
    unsigned admin_socket_mode = 0660;
    std::string admin_policy;                                  ///< "" = built-in default policy
    unsigned admin_rate_limit = 500;                           ///< calls/s per uid
    AutoRegister auto_register = AutoRegister::active;
    UsernameMode username = UsernameMode::cn;
    NoCertificate no_certificate = NoCertificate::defer;
    std::vector<std::string> import_ca;                        ///< PEM files (key may repeat)
    OnStoreError on_store_error = OnStoreError::deny;
    int wakeup_signal = 0;                                     ///< 0 when "off"; default SIGURG
    unsigned max_ca = 100;
    std::uint64_t change_log_retention = 1'000'000;
    std::uint64_t map_size = 64ull << 20;                      ///< initial LMDB map size, bytes
    unsigned sys_interval = 10;                                ///< s between $SYS rounds; 0 = off
    /// Fleet mode: the libpq connection string or service name ("" =
    /// standalone). Never logged: it may hold a password.
    std::string fleet;
    unsigned fleet_poll_ms = 500;                              ///< safety-net poll of the fleet's log
    std::uint64_t fleet_queue_max = 100'000;                   ///< registrations waiting for the fleet
    unsigned fleet_trim_interval = 60;                         ///< s between trims of the fleet's log; 0 = never
    unsigned fleet_timeout = 10;                               ///< s a frozen member may hold the fleet; see FleetOptions

    PluginConfig();
};

using OptionList = std::vector<std::pair<std::string, std::string>>;

/// Parses plugin_opt_* pairs (keys without the "plugin_opt_" prefix). Errors
/// name the key and the reason: "plugin_opt_auto_register: 'maybe' is not
/// one of active, inactive, off". Unknown keys are errors. Values are
/// trimmed of surrounding white space (Mosquitto keeps trailing spaces).
Result<PluginConfig> parse_config(const OptionList& options);

}  // namespace devcert
