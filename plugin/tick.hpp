// MOSQ_EVT_TICK: the broker thread's turn to apply what changed elsewhere.
// Writes the lines other threads queued, then tails the store's change log
// from the last entry seen and kicks every connected client whose device or
// CA is no longer active.
#pragma once

#include <cstddef>

namespace devcert::plugin {

struct PluginState;

/// Runs one tick; returns the number of clients kicked.
std::size_t on_tick(PluginState& state) noexcept;

/// Checks every connected client against the store (after the change log
/// was trimmed past the last entry seen). Returns the number kicked.
std::size_t recheck_connected(PluginState& state) noexcept;

}  // namespace devcert::plugin
