// Certificates minted at test time with fixed serials and long validity, so
// nothing expires and every test knows its serials up front.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "devcert/handles.hpp"

namespace devcert::test {

struct KeyPair {
    EvpPkeyPtr key;  ///< EC P-256
    static KeyPair generate();
};

struct CertSpec {
    std::string serial_hex{};          ///< e.g. "0a1b"; "-05" for a negative serial
    std::string common_name{};
    std::string organization{};        ///< optional O=
    bool is_ca = false;                ///< basicConstraints CA:TRUE (critical)
    bool basic_constraints = true;     ///< false: omit the extension entirely
    bool subject_key_id = true;        ///< add SKI
    bool authority_key_id = true;      ///< add AKI (keyid of the issuer)
    std::int64_t not_before_s = 1'600'000'000;  ///< Unix seconds
    std::int64_t not_after_s = 4'100'000'000;
};

struct Issued {
    X509Ptr cert;
    EvpPkeyPtr key;
    std::string pem() const;           ///< certificate PEM
    std::string key_pem() const;       ///< private key PEM (PKCS#8)
};

/// Self-signed CA (spec.is_ca forced true unless basic_constraints is false).
Issued make_root(const CertSpec& spec);
/// Certificate for spec signed by issuer (a CA or not).
Issued issue(const CertSpec& spec, const Issued& issuer);
/// Like issue(), but with a given key pair (e.g. two CAs with one name and
/// different keys, or a certificate re-issued with the same key).
Issued issue_with_key(const CertSpec& spec, const Issued& issuer, EvpPkeyPtr key);

}  // namespace devcert::test
