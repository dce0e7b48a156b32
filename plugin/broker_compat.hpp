// What differs between the brokers the one module runs on, decided at run
// time: a module built against Debian's 2.0.11 headers is what a packager
// ships, and it must behave on a 2.1 broker exactly as one built against
// 2.1's headers (and the other way round).
//
// The broker is told apart by mosquitto_plugin_set_info, which 2.1 exports
// (it is in 2.1's src/linker.syms) and 2.0 does not have. It is looked up
// with dlsym(RTLD_DEFAULT): the module never references it, so it still
// loads on a 2.0 broker, whose make build exports only its linker.syms.
#pragma once

#include <chrono>

#include "broker.hpp"

namespace devcert::plugin {

/// The longest the plugin lets pass between two TICKs. 2.0 runs TICK on
/// every iteration of its loop, which wakes at least every 100 ms. 2.1 runs
/// a TICK callback only once the time it asked for (next_s/next_ms) has
/// come; built without websockets, its idle loop also sleeps until then.
inline constexpr std::chrono::milliseconds kTickInterval{80};

/// True when the broker is 2.1 or later. Cached after the first call
/// (made from mosquitto_plugin_init).
bool broker_is_21() noexcept;

/// Names the plugin and its version in a 2.1 broker's plugin list; does
/// nothing on 2.0.
void name_plugin(mosquitto_plugin_id_t* identifier) noexcept;

/// Writes "call me again in `ms` milliseconds" into a MOSQ_EVT_TICK event,
/// whichever field the headers call it (2.0: next_ns, which 2.0 brokers do
/// not read; 2.1: next_ms). 0 means "on the next loop iteration".
void request_next_tick(void* tick_event, long ms) noexcept;

/// The result a RELOAD callback gives the broker. 2.0 runs the next
/// plugin's callback only after MOSQ_ERR_PLUGIN_DEFER; 2.1 treats every
/// non-zero result as fatal ("Plugin produced error on reload", exit 17).
int reload_result() noexcept;

}  // namespace devcert::plugin
