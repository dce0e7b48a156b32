#include "reload.hpp"

#include "broker.hpp"
#include "plugin_state.hpp"

namespace devcert::plugin {

int on_reload(PluginState& state) noexcept {
    state.reload_recheck = true;
    state.counters.reload_rechecks.fetch_add(1, std::memory_order_relaxed);
    log(LogLevel::notice, "reload: re-checking every session ({} certificate client(s) connected)",
        state.clients.size());
    return MOSQ_ERR_PLUGIN_DEFER;
}

}  // namespace devcert::plugin
