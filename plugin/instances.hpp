// One plugin instance per broker process.
//
// A broker may initialise the module more than once: with
// `per_listener_settings true` every listener that names the plugin gets its
// own instance (and from 2.0.15 on each one gets TICKs), and 2.1 adds
// `global_plugin`, which may sit next to a listener's `plugin` line. Each
// instance would open the same LMDB environment again -- LMDB forbids two
// environments on one path in one process -- and bind the admin socket a
// second time. So the second instance is refused at start-up, with a
// message naming the options that lead there; broker start-up then stops.
#pragma once

#include <string>

#include "devcert/result.hpp"

namespace devcert::plugin {

/// Claims the process for the instance using `db_path`. Fails, naming the
/// conflicting options, when an instance already runs in this process.
Outcome claim_instance(const std::string& db_path);
/// Gives the claim back (plugin cleanup, or a failed start-up).
void release_instance() noexcept;

}  // namespace devcert::plugin
