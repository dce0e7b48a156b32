// The check made at every connection (MOSQ_EVT_BASIC_AUTH), in the
// reference service's order: no certificate -> no_certificate policy;
// registered device -> its status and its CA's status; unregistered device
// -> its issuer must be a registered, active CA, then auto_register.
#pragma once

#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>

#include "devcert/counters.hpp"

struct mosquitto;

namespace devcert::plugin {

struct PluginState;

/// Longest canonical serial the connection path handles (64 octets).
inline constexpr std::size_t kSerialCapacity = 130;

/// What the store says about a certificate, before any policy on the
/// outcome (username, logging, counters) is applied.
struct Verdict {
    enum class Kind : std::uint8_t { accept, refuse, store_error, register_then_accept, register_then_refuse };
    Kind kind = Kind::refuse;
    Refusal refusal = Refusal::bad_certificate;
    const char* ca_sn = "-";   ///< points into the issuer index (valid until it changes)
    std::size_t ca_sn_len = 1;
    char device_sn[kSerialCapacity] = {'-'};
    std::size_t device_sn_len = 1;
    /// What is wrong with a bad certificate, for the refusal line (static text).
    const char* detail = nullptr;
};

/// Resolves a device certificate against the store and the issuer index.
/// Never throws; allocates nothing of its own.
void evaluate_certificate(PluginState& state, X509* cert, Verdict& verdict) noexcept;

/// The whole BASIC_AUTH decision for one client; returns a MOSQ_ERR_* code.
int check_connection(PluginState& state, mosquitto* client) noexcept;

}  // namespace devcert::plugin
