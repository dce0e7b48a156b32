// Operator logs go through the broker's logger, and only from the broker
// thread: mosquitto_log_printf races with the log file being reopened on
// SIGHUP. Other threads queue their lines in a DeferredLog instead.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace devcert::plugin {

enum class LogLevel { info, notice, warning, error };

/// Writes "devcert: <line>" (lines that already start with "devcert:" are
/// written as they are). Broker thread only. Never throws.
void log_line(LogLevel level, std::string_view line) noexcept;

template <class... Args>
void log(LogLevel level, fmt::format_string<Args...> format, Args&&... args) noexcept {
    try {
        log_line(level, fmt::format(format, std::forward<Args>(args)...));
    } catch (...) {
        log_line(level, "a log line could not be formatted");
    }
}

/// Lines produced on other threads (admin audit lines, writer results),
/// written by the broker thread at its next tick.
class DeferredLog {
public:
    void push(LogLevel level, std::string line) noexcept;
    /// Writes every queued line; the lock is not held while writing.
    void drain() noexcept;
    std::size_t pending() const;

private:
    mutable std::mutex mutex_;
    std::vector<std::pair<LogLevel, std::string>> lines_;
    std::atomic<bool> nonempty_{false};  // lets the connection path skip the lock
};

}  // namespace devcert::plugin
