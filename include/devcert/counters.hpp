// Named counters for every outcome that matters to an operator. Updated from
// the broker thread and the admin threads; read by GetStats and tests.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace devcert {

/// Why a connection was refused (also the log text, see refusal_reason()).
enum class Refusal : std::uint8_t {
    device_inactive,
    device_revoked,
    ca_inactive,
    ca_not_registered,
    not_registered,
    store_error,
    no_certificate,
    bad_certificate,
};
inline constexpr std::size_t kRefusalCount = 8;

/// "device inactive", "device revoked", "ca inactive", "ca not registered",
/// "not registered", "store error", "no certificate", "bad certificate".
const char* refusal_reason(Refusal r) noexcept;
/// Counter-name form: "device_inactive", ...
const char* refusal_key(Refusal r) noexcept;

class Counters {
public:
    std::atomic<std::uint64_t> connections_accepted{0};
    std::atomic<std::uint64_t> connections_allowed_on_store_error{0};
    std::atomic<std::uint64_t> kicks{0};
    std::atomic<std::uint64_t> auto_registrations{0};
    std::atomic<std::uint64_t> store_errors{0};
    std::atomic<std::uint64_t> reload_rechecks{0};          ///< reloads (SIGHUP)
    std::atomic<std::uint64_t> reload_sessions_kept{0};     ///< sessions a reload's re-check kept
    std::atomic<std::uint64_t> reload_sessions_refused{0};  ///< sessions a reload's re-check refused

    void refused(Refusal r) noexcept { refused_[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed); }
    std::uint64_t refused_count(Refusal r) const noexcept {
        return refused_[static_cast<std::size_t>(r)].load(std::memory_order_relaxed);
    }

    /// Admin calls by operation and result code ("Success" or an error Code).
    void admin_call(std::string_view operation, std::string_view result);
    std::uint64_t admin_calls(std::string_view operation, std::string_view result) const;

    /// Every counter as (name, value), names like "connections_accepted",
    /// "connections_refused.device_inactive",
    /// "admin_calls.InactivateDeviceCertificate.Success".
    std::vector<std::pair<std::string, std::uint64_t>> snapshot() const;

private:
    std::atomic<std::uint64_t> refused_[kRefusalCount]{};
    mutable std::mutex admin_mutex_;
    std::map<std::string, std::uint64_t, std::less<>> admin_calls_;
};

/// Devices with a session connected to this broker now, for the "Online"
/// field. Written by the broker thread, read by admin threads.
class OnlineRegistry {
public:
    void add(std::string_view ca_sn, std::string_view device_sn);
    void remove(std::string_view ca_sn, std::string_view device_sn);
    bool online(std::string_view ca_sn, std::string_view device_sn) const;
    std::size_t connected() const;  ///< certificate clients connected

private:
    mutable std::mutex mutex_;
    std::map<std::string, std::uint32_t, std::less<>> sessions_;  // "ca/dev" -> count
    std::size_t total_ = 0;
};

}  // namespace devcert
