// MOSQ_EVT_RELOAD (SIGHUP). The plugin's options are not re-read (the
// broker passes none); what a reload means here is the re-check the broker
// runs right after it: BASIC_AUTH for every session, in the same loop
// iteration, before the next TICK.
#pragma once

namespace devcert::plugin {

struct PluginState;

/// Marks the start of the re-check; returns MOSQ_ERR_PLUGIN_DEFER, since
/// any other result stops later plugins' reload callbacks in 2.0.x.
int on_reload(PluginState& state) noexcept;

}  // namespace devcert::plugin
