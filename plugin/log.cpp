#include "log.hpp"

#include "broker.hpp"

namespace devcert::plugin {

namespace {
int broker_level(LogLevel level) noexcept {
    switch (level) {
        case LogLevel::info: return MOSQ_LOG_INFO;
        case LogLevel::notice: return MOSQ_LOG_NOTICE;
        case LogLevel::warning: return MOSQ_LOG_WARNING;
        case LogLevel::error: return MOSQ_LOG_ERR;
    }
    return MOSQ_LOG_ERR;
}
}  // namespace

void log_line(LogLevel level, std::string_view line) noexcept {
    constexpr std::string_view prefix = "devcert:";
    const int len = line.size() > 65536 ? 65536 : static_cast<int>(line.size());
    if (line.substr(0, prefix.size()) == prefix) {
        mosquitto_log_printf(broker_level(level), "%.*s", len, line.data());
    } else {
        mosquitto_log_printf(broker_level(level), "devcert: %.*s", len, line.data());
    }
}

void DeferredLog::push(LogLevel level, std::string line) noexcept {
    try {
        std::lock_guard lock(mutex_);
        lines_.emplace_back(level, std::move(line));
        nonempty_.store(true, std::memory_order_release);
    } catch (...) {
        // Out of memory while queueing a log line: losing the line is the
        // only option that keeps the admin thread alive.
    }
}

void DeferredLog::drain() noexcept {
    if (!nonempty_.load(std::memory_order_acquire)) return;
    std::vector<std::pair<LogLevel, std::string>> lines;
    {
        std::lock_guard lock(mutex_);
        lines.swap(lines_);
        nonempty_.store(false, std::memory_order_relaxed);
    }
    for (const auto& [level, line] : lines) log_line(level, line);
}

std::size_t DeferredLog::pending() const {
    std::lock_guard lock(mutex_);
    return lines_.size();
}

}  // namespace devcert::plugin
