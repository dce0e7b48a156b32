#include "callbacks.hpp"

#include "broker.hpp"
#include "connection_check.hpp"
#include "plugin_state.hpp"
#include "reload.hpp"
#include "tick.hpp"

namespace devcert::plugin {

namespace {

int basic_auth_cb(int, void* event_data, void* userdata) {
    try {
        auto* event = static_cast<mosquitto_evt_basic_auth*>(event_data);
        return check_connection(*static_cast<PluginState*>(userdata), event->client);
    } catch (...) {
        log(LogLevel::error, "connection check failed unexpectedly: client refused");
        return MOSQ_ERR_AUTH;
    }
}

int tick_cb(int, void*, void* userdata) {
    try {
        on_tick(*static_cast<PluginState*>(userdata));
    } catch (...) {
        log(LogLevel::error, "tick failed unexpectedly");
    }
    return MOSQ_ERR_SUCCESS;
}

int disconnect_cb(int, void* event_data, void* userdata) {
    try {
        auto* event = static_cast<mosquitto_evt_disconnect*>(event_data);
        static_cast<PluginState*>(userdata)->clients.remove(event->client);
    } catch (...) {
        log(LogLevel::error, "disconnect handling failed unexpectedly");
    }
    return MOSQ_ERR_SUCCESS;
}

int reload_cb(int, void*, void* userdata) {
    try {
        return on_reload(*static_cast<PluginState*>(userdata));
    } catch (...) {
        log(LogLevel::error, "reload handling failed unexpectedly");
        return MOSQ_ERR_PLUGIN_DEFER;
    }
}

struct Registration {
    int event;
    MOSQ_FUNC_generic_callback fn;
    const char* name;
};

constexpr Registration kCallbacks[] = {
    {MOSQ_EVT_BASIC_AUTH, basic_auth_cb, "BASIC_AUTH"},
    {MOSQ_EVT_TICK, tick_cb, "TICK"},
    {MOSQ_EVT_DISCONNECT, disconnect_cb, "DISCONNECT"},
    {MOSQ_EVT_RELOAD, reload_cb, "RELOAD"},
};

}  // namespace

int register_callbacks(PluginState& state) noexcept {
    std::size_t done = 0;
    for (const auto& r : kCallbacks) {
        const int rc = mosquitto_callback_register(state.plugin_id, r.event, r.fn, nullptr, &state);
        if (rc != MOSQ_ERR_SUCCESS) {
            log(LogLevel::error, "cannot register the {} callback: {}", r.name, mosquitto_strerror(rc));
            for (std::size_t i = 0; i < done; ++i) {
                mosquitto_callback_unregister(state.plugin_id, kCallbacks[i].event, kCallbacks[i].fn, nullptr);
            }
            return rc;
        }
        ++done;
    }
    return MOSQ_ERR_SUCCESS;
}

void unregister_callbacks(PluginState& state) noexcept {
    for (const auto& r : kCallbacks) mosquitto_callback_unregister(state.plugin_id, r.event, r.fn, nullptr);
}

}  // namespace devcert::plugin
