#include "devcert/counters.hpp"

#include <string>

namespace devcert {

const char* refusal_reason(Refusal r) noexcept {
    switch (r) {
        case Refusal::device_inactive: return "device inactive";
        case Refusal::device_revoked: return "device revoked";
        case Refusal::ca_inactive: return "ca inactive";
        case Refusal::ca_not_registered: return "ca not registered";
        case Refusal::not_registered: return "not registered";
        case Refusal::store_error: return "store error";
        case Refusal::no_certificate: return "no certificate";
        case Refusal::bad_certificate: return "bad certificate";
    }
    return "unknown";
}

const char* refusal_key(Refusal r) noexcept {
    switch (r) {
        case Refusal::device_inactive: return "device_inactive";
        case Refusal::device_revoked: return "device_revoked";
        case Refusal::ca_inactive: return "ca_inactive";
        case Refusal::ca_not_registered: return "ca_not_registered";
        case Refusal::not_registered: return "not_registered";
        case Refusal::store_error: return "store_error";
        case Refusal::no_certificate: return "no_certificate";
        case Refusal::bad_certificate: return "bad_certificate";
    }
    return "unknown";
}

namespace {
std::string admin_key(std::string_view operation, std::string_view result) {
    std::string key;
    key.reserve(operation.size() + result.size() + 1);
    key.append(operation).push_back('.');
    key.append(result);
    return key;
}
}  // namespace

void Counters::admin_call(std::string_view operation, std::string_view result) {
    auto key = admin_key(operation, result);
    std::lock_guard lock(admin_mutex_);
    ++admin_calls_[key];
}

std::uint64_t Counters::admin_calls(std::string_view operation, std::string_view result) const {
    auto key = admin_key(operation, result);
    std::lock_guard lock(admin_mutex_);
    auto it = admin_calls_.find(key);
    return it == admin_calls_.end() ? 0 : it->second;
}

std::vector<std::pair<std::string, std::uint64_t>> Counters::snapshot() const {
    std::vector<std::pair<std::string, std::uint64_t>> out;
    auto load = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    out.emplace_back("connections_accepted", load(connections_accepted));
    out.emplace_back("connections_allowed_on_store_error", load(connections_allowed_on_store_error));
    for (std::size_t i = 0; i < kRefusalCount; ++i) {
        auto r = static_cast<Refusal>(i);
        out.emplace_back(std::string("connections_refused.") + refusal_key(r), refused_count(r));
    }
    out.emplace_back("kicks", load(kicks));
    out.emplace_back("auto_registrations", load(auto_registrations));
    out.emplace_back("store_errors", load(store_errors));
    out.emplace_back("reload_rechecks", load(reload_rechecks));
    out.emplace_back("reload_sessions_kept", load(reload_sessions_kept));
    out.emplace_back("reload_sessions_refused", load(reload_sessions_refused));
    std::lock_guard lock(admin_mutex_);
    for (const auto& [key, value] : admin_calls_) out.emplace_back("admin_calls." + key, value);
    return out;
}

namespace {
std::string device_key(std::string_view ca_sn, std::string_view device_sn) {
    std::string key;
    key.reserve(ca_sn.size() + device_sn.size() + 1);
    key.append(ca_sn).push_back('/');
    key.append(device_sn);
    return key;
}
}  // namespace

void OnlineRegistry::add(std::string_view ca_sn, std::string_view device_sn) {
    auto key = device_key(ca_sn, device_sn);
    std::lock_guard lock(mutex_);
    ++sessions_[key];
    ++total_;
}

void OnlineRegistry::remove(std::string_view ca_sn, std::string_view device_sn) {
    auto key = device_key(ca_sn, device_sn);
    std::lock_guard lock(mutex_);
    auto it = sessions_.find(key);
    if (it == sessions_.end()) return;
    if (--it->second == 0) sessions_.erase(it);
    --total_;
}

bool OnlineRegistry::online(std::string_view ca_sn, std::string_view device_sn) const {
    auto key = device_key(ca_sn, device_sn);
    std::lock_guard lock(mutex_);
    return sessions_.find(key) != sessions_.end();
}

std::size_t OnlineRegistry::connected() const {
    std::lock_guard lock(mutex_);
    return total_;
}

}  // namespace devcert
