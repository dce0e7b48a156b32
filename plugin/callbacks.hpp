// The C boundary: the functions the broker calls. Each catches everything,
// logs once and maps to a MOSQ_ERR_* code; no exception reaches the broker.
#pragma once

namespace devcert::plugin {

struct PluginState;

/// Registers BASIC_AUTH, TICK, DISCONNECT and RELOAD with `state` as
/// userdata; on failure unregisters what was registered and returns the
/// broker's error code.
int register_callbacks(PluginState& state) noexcept;
void unregister_callbacks(PluginState& state) noexcept;

}  // namespace devcert::plugin
