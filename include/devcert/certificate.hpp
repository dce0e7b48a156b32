// X.509 parsing and device identity: what a certificate is, and which
// registered CA issued it.
#pragma once

#include <openssl/x509.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "devcert/handles.hpp"
#include "devcert/result.hpp"

namespace devcert {

using Sha256 = std::array<std::uint8_t, 32>;

/// What the project records about any certificate (CA or device).
struct CertificateInfo {
    std::string serial;            ///< canonical serial
    std::string common_name;       ///< subject CN ("" if none)
    std::string subject;           ///< subject, RFC 2253
    std::int64_t not_before_ms = 0;  ///< Unix milliseconds
    std::int64_t not_after_ms = 0;
    std::string pem;               ///< PEM re-encoded from the parsed certificate
    Sha256 fingerprint{};          ///< SHA-256 of the DER encoding
    std::string subject_key_id;    ///< raw SKI bytes, "" when absent
    std::string authority_key_id;  ///< raw AKI keyIdentifier bytes, "" when absent
    std::string subject_der;       ///< DER of the subject name
    std::string issuer_der;        ///< DER of the issuer name
    bool is_ca = false;            ///< basicConstraints CA:TRUE present
};

/// Lowercase hex of bytes ("a1b2...").
std::string to_hex(std::string_view bytes);
std::string to_hex(const Sha256& digest);

/// Parses exactly one PEM certificate (trailing whitespace allowed; a second
/// certificate or junk is an error). Errc::invalid_argument with a reason.
Result<X509Ptr> parse_pem_certificate(std::string_view pem);

/// Parses a PEM bundle holding one or more certificates (import_ca files).
Result<std::vector<X509Ptr>> parse_pem_bundle(std::string_view pem);

/// Extracts CertificateInfo; fails for negative/zero serials or unreadable
/// validity times.
Result<CertificateInfo> describe_certificate(X509* cert);

/// SHA-256 of the certificate's DER; false on failure. No heap allocation
/// beyond what OpenSSL does internally. For the connection path.
bool certificate_fingerprint(X509* cert, Sha256& out) noexcept;

/// Why a string cannot be an MQTT UTF-8 string as Mosquitto checks one
/// (mosquitto_validate_utf8, which mosquitto_set_username applies from
/// 2.0.16 on): `none` when it can.
enum class MqttStringProblem : std::uint8_t { none, too_long, nul, malformed, control, noncharacter };
MqttStringProblem mqtt_string_problem(std::string_view s) noexcept;

/// Checks a certificate offered as a CA: parseable, basicConstraints CA:TRUE.
/// Errc::invalid_argument otherwise.
Result<CertificateInfo> validate_ca_certificate(X509* cert);

/// In-memory set of registered CA certificates, used to find the issuer of
/// a device certificate. Rebuilt by its owner when CAs are added or removed;
/// not thread-safe (each thread that resolves issuers owns one).
class IssuerIndex {
public:
    /// Adds a CA certificate under its canonical Sn (takes a reference).
    void add(const std::string& ca_sn, X509* ca_cert);
    void remove(std::string_view ca_sn);
    void clear();
    std::size_t size() const noexcept { return cas_.size(); }
    bool contains(std::string_view ca_sn) const noexcept;

    /// The Sn of the registered CA that issued `leaf`: candidates first by the
    /// leaf's Authority Key Identifier against each CA's Subject Key
    /// Identifier, then by issuer name; a candidate is accepted only if the
    /// leaf's signature verifies with its public key. nullptr: "no registered
    /// issuer". Returns a pointer into the index (valid until it changes).
    const std::string* find_issuer(X509* leaf) const noexcept;

    /// Candidate CAs for a leaf, by AKI against SKI, then by issuer name,
    /// without verifying the signature. Writes up to `cap` pointers to their
    /// Sns into `out` and returns how many. No allocation: connection path
    /// (a registered device whose stored fingerprint matches the leaf under a
    /// candidate CA needs no signature check).
    std::size_t candidates(X509* leaf, const std::string** out, std::size_t cap) const noexcept;

private:
    struct Entry {
        std::string sn;
        X509Ptr cert;
        std::string ski;  // raw SKI bytes, "" when the CA has none
    };
    std::vector<Entry> cas_;  // few (<= max_ca): linear scans beat maps here
};

}  // namespace devcert
