#include "instances.hpp"

#include <fmt/format.h>

#include <mutex>
#include <optional>

namespace devcert::plugin {

namespace {

// The module is loaded once per process whatever the number of `plugin`
// lines (dlopen of one path returns one handle), so this is process-wide.
std::mutex g_mutex;
std::optional<std::string> g_running;  // store path of the running instance

}  // namespace

Outcome claim_instance(const std::string& db_path) {
    std::lock_guard lock(g_mutex);
    if (g_running) {
        return make_error(
            Errc::already_exists,
            fmt::format("the plugin is already loaded in this broker (store '{}'); a second instance (store '{}') is "
                        "refused: it would open an LMDB store twice in one process and bind a second admin socket. "
                        "This happens with 'per_listener_settings true' and the plugin named under several "
                        "listeners, or with a 'global_plugin' line and a listener's 'plugin' line for it (2.1). "
                        "Name it once: under the device listener, as one global_plugin, or with 'plugin_load' "
                        "once and 'plugin_use' on each listener (2.1)",
                        *g_running, db_path));
    }
    g_running = db_path;
    return Ok{};
}

void release_instance() noexcept {
    std::lock_guard lock(g_mutex);
    g_running.reset();
}

}  // namespace devcert::plugin
