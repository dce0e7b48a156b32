#include "reload.hpp"

#include <exception>

#include "broker.hpp"
#include "plugin_state.hpp"

namespace devcert::plugin {

int on_reload(PluginState& state) noexcept {
    state.reload_recheck = true;
    state.clients.begin_recheck();
    state.counters.reload_rechecks.fetch_add(1, std::memory_order_relaxed);
    log(LogLevel::notice, "reload: re-checking every session ({} certificate client(s) connected)",
        state.clients.size());
    // Other plugin options are not re-read (mosquitto 2.0 keeps the ones it
    // started with); the policy file is, so access can change without a
    // restart. A file that no longer parses leaves the policy in force.
    if (state.admin && !state.config.admin_policy.empty()) {
        try {
            if (auto statements = state.admin->reload_policy()) {
                log(LogLevel::notice, "reload: admin policy '{}' re-read: {} statement(s)",
                    state.config.admin_policy, *statements);
            } else {
                log(LogLevel::error, "reload: {}; the previous admin policy stays in force",
                    statements.error().message);
            }
        } catch (const std::exception& e) {
            log(LogLevel::error, "reload: admin policy '{}' not re-read ({}); the previous policy stays in force",
                state.config.admin_policy, e.what());
        }
    }
    return MOSQ_ERR_PLUGIN_DEFER;
}

}  // namespace devcert::plugin
