#include "sys_topics.hpp"

#include <algorithm>

#include "broker.hpp"
#include "plugin_state.hpp"

#ifndef DEVCERT_VERSION
#define DEVCERT_VERSION "unknown"
#endif

namespace devcert::plugin {

namespace {

constexpr std::string_view kRoot = "$SYS/broker/devcert/";

std::string topic_for(std::string_view counter) {
    std::string topic(kRoot);
    topic.append(counter);
    std::replace(topic.begin() + static_cast<std::ptrdiff_t>(kRoot.size()), topic.end(), '.', '/');
    // A counter name could carry characters a topic may not (admin call
    // names come from our own operations table, but be safe).
    std::replace_if(topic.begin() + static_cast<std::ptrdiff_t>(kRoot.size()), topic.end(),
                    [](char c) { return c == '+' || c == '#' || c == '\0'; }, '_');
    return topic;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> SysTopics::collect(PluginState& state) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [name, value] : state.counters.snapshot()) out.emplace_back(topic_for(name), std::to_string(value));

    std::uint64_t cas = 0;
    std::uint64_t devices = 0;
    const auto counted = state.store->read([&](ReadView& view) -> Outcome {
        auto c = view.ca_count();
        if (!c) return c.error();
        auto d = view.device_count();
        if (!d) return d.error();
        cas = *c;
        devices = *d;
        return Ok{};
    });
    if (counted) {
        out.emplace_back(std::string(kRoot) + "store/cas", std::to_string(cas));
        out.emplace_back(std::string(kRoot) + "store/devices", std::to_string(devices));
    }
    out.emplace_back(std::string(kRoot) + "clients/connected", std::to_string(state.online.connected()));
    out.emplace_back(std::string(kRoot) + "change_log/position", std::to_string(state.last_seq));
    out.emplace_back(std::string(kRoot) + "version", DEVCERT_VERSION);
    std::sort(out.begin(), out.end());
    return out;
}

std::size_t SysTopics::publish(PluginState& state) {
    std::size_t published = 0;
    for (auto& [topic, value] : collect(state)) {
        auto it = last_.find(topic);
        if (it != last_.end() && it->second == value) continue;
        // Retained and QoS 0, like the broker's own $SYS topics. The broker
        // copies topic and payload.
        const int rc = mosquitto_broker_publish_copy(nullptr, topic.c_str(), static_cast<int>(value.size()),
                                                     value.data(), 0, true, nullptr);
        if (rc != MOSQ_ERR_SUCCESS) continue;  // tried again next round
        if (it == last_.end()) {
            last_.emplace(topic, std::move(value));
        } else {
            it->second = std::move(value);
        }
        ++published;
    }
    return published;
}

void SysTopics::on_tick(PluginState& state, Clock::time_point now) noexcept {
    const auto interval = std::chrono::seconds(state.config.sys_interval);
    if (interval.count() == 0) return;
    if (started_ && now < next_) return;
    started_ = true;
    next_ = now + interval;
    try {
        publish(state);
    } catch (...) {
        log(LogLevel::error, "cannot publish the $SYS topics: out of memory");
    }
}

}  // namespace devcert::plugin
