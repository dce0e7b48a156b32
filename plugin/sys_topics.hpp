// $SYS/broker/devcert/...: the plugin's counters published like the broker's
// own $SYS tree -- retained, every sys_interval seconds, from the broker
// thread (TICK), and only the values that changed since the last round (the
// first round publishes them all).
//
// Counters are taken from Counters::snapshot(), the same enumeration GetStats
// uses, so a counter added there appears here without an edit: its name's
// dots become topic levels ("connections_refused.device_inactive" ->
// $SYS/broker/devcert/connections_refused/device_inactive). Besides them:
// store/cas, store/devices (store size), clients/connected,
// change_log/position (the newest change-log entry this broker applied) and
// version.
//
// The broker does not tell plugins its sys_interval, so the plugin has its
// own, plugin_opt_sys_interval, defaulting to 10 s like the broker's; 0 turns
// the topics off.
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace devcert::plugin {

struct PluginState;

class SysTopics {
public:
    using Clock = std::chrono::steady_clock;

    /// Publishes when an interval has passed since the last round (the first
    /// TICK publishes at once). Broker thread only; never throws.
    void on_tick(PluginState& state, Clock::time_point now) noexcept;

    /// Every topic and value of one round, in topic order (exposed for tests).
    static std::vector<std::pair<std::string, std::string>> collect(PluginState& state);

    /// Publishes what changed since the last round; returns how many topics.
    std::size_t publish(PluginState& state);

private:
    Clock::time_point next_{};
    bool started_ = false;
    std::map<std::string, std::string, std::less<>> last_;
};

}  // namespace devcert::plugin
