#include "callbacks.hpp"

#include "broker.hpp"
#include "broker_compat.hpp"
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

// How late the 2.1 timer fires after the last TICK, at most, and how often
// a TICK pushes it back at most (see tick_timer.hpp).
constexpr long kTimerFireMs = 100;
constexpr long kTimerRearmMs = 50;

int tick_cb(int, void* event_data, void* userdata) {
    auto& state = *static_cast<PluginState*>(userdata);
    try {
        on_tick(state);
        state.sys_topics.on_tick(state, SysTopics::Clock::now());
    } catch (...) {
        log(LogLevel::error, "tick failed unexpectedly");
    }
    // Changes made by another process are applied (and kicked) at the next
    // TICK, so TICKs must keep coming when the broker is idle. 2.0 ticks on
    // every loop iteration and wakes every 100 ms. On 2.1, with the timer,
    // the plugin asks for every iteration too (next_ms 0) and the timer
    // bounds the sleep; without it (plugin_opt_wakeup_signal off) it asks
    // for kTickInterval, which 2.1 honours unless a packet wakes it early.
    if (state.tick_timer.running()) {
        request_next_tick(event_data, 0);
        state.tick_timer.push_back(kTimerFireMs, kTimerRearmMs);
    } else {
        request_next_tick(event_data, static_cast<long>(kTickInterval.count()));
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

// on_reload answers in 2.0's terms (MOSQ_ERR_PLUGIN_DEFER, so that later
// plugins' reload callbacks still run); a 2.1 broker stops on any non-zero
// result ("Plugin produced error on reload", exit 17), so it gets success.
// Decided here, by the broker found at run time, not by the headers.
int reload_cb(int, void*, void* userdata) {
    try {
        const int rc = on_reload(*static_cast<PluginState*>(userdata));
        return rc == MOSQ_ERR_PLUGIN_DEFER ? reload_result() : rc;
    } catch (...) {
        log(LogLevel::error, "reload handling failed unexpectedly");
        return reload_result();
    }
}

// mosquitto_strerror is not among the functions a make-built broker exports
// (src/linker.syms), so the plugin names the codes it can meet itself.
const char* broker_error_name(int rc) noexcept {
    switch (rc) {
        case MOSQ_ERR_SUCCESS: return "success";
        case MOSQ_ERR_NOMEM: return "out of memory";
        case MOSQ_ERR_INVAL: return "invalid arguments";
        case MOSQ_ERR_NOT_SUPPORTED: return "not supported by this broker";
        case MOSQ_ERR_ALREADY_EXISTS: return "already registered";
        case MOSQ_ERR_NOT_FOUND: return "not found";
        default: return "unknown error";
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
    // On the broker thread (plugin init): the timer aims its signal here.
    // 2.0 brokers run TICK on every loop iteration and wake at least every
    // 100 ms; only 2.1 needs the timer.
    if (broker_is_21()) {
        if (auto ok = state.tick_timer.start(state.wakeup.signo()); !ok) {
            log(LogLevel::warning, "{}: kicks after changes made by another process may wait for the broker's "
                "next wake-up", ok.error().message);
        }
    }
    std::size_t done = 0;
    for (const auto& r : kCallbacks) {
        const int rc = mosquitto_callback_register(state.plugin_id, r.event, r.fn, nullptr, &state);
        if (rc != MOSQ_ERR_SUCCESS) {
            log(LogLevel::error, "cannot register the {} callback: {} ({})", r.name, broker_error_name(rc), rc);
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
    state.tick_timer.stop();
    for (const auto& r : kCallbacks) mosquitto_callback_unregister(state.plugin_id, r.event, r.fn, nullptr);
}

}  // namespace devcert::plugin
