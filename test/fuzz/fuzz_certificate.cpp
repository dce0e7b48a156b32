// PEM parsing and certificate description: parse_pem_certificate,
// parse_pem_bundle, describe_certificate, certificate_fingerprint,
// validate_ca_certificate, the SKI/AKI extraction and IssuerIndex's
// candidates and find_issuer.
//
// Input: PEM text (one certificate, or a bundle: the first certificate is the
// leaf, the others are put in an IssuerIndex as registered CAs), or, when it
// starts with 0x30 (a DER SEQUENCE), one DER certificate that is wrapped in
// PEM here so that mutations reach the ASN.1 rather than the base64.
// Properties: parsing one certificate and parsing it as a bundle agree; a
// described certificate re-parses from its own PEM to the same description;
// the fingerprint is the SHA-256 of the DER; the serial is canonical; a CA
// accepted by validate_ca_certificate is_ca; find_issuer returns one of the
// candidates, and candidates honours its cap.
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "devcert/certificate.hpp"
#include "devcert/handles.hpp"
#include "devcert/serial.hpp"
#include "fuzz_check.hpp"

namespace {

std::string der_as_pem(std::string_view der) {
    std::string b64(4 * ((der.size() + 2) / 3) + 1, '\0');
    const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64.data()),
                                  reinterpret_cast<const unsigned char*>(der.data()), static_cast<int>(der.size()));
    b64.resize(static_cast<std::size_t>(n));
    std::string pem = "-----BEGIN CERTIFICATE-----\n";
    for (std::size_t i = 0; i < b64.size(); i += 64) {
        pem.append(b64, i, 64);
        pem.push_back('\n');
    }
    pem += "-----END CERTIFICATE-----\n";
    return pem;
}

std::string der_of(X509* cert) {
    unsigned char* der = nullptr;
    const int len = i2d_X509(cert, &der);
    FUZZ_CHECK(len > 0, "a parsed certificate cannot be encoded");
    std::string out(reinterpret_cast<const char*>(der), static_cast<std::size_t>(len));
    OPENSSL_free(der);
    return out;
}

std::string octets(const ASN1_OCTET_STRING* s) {
    if (s == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
}

void check_description(X509* cert) {
    devcert::Sha256 fingerprint{};
    const bool hashed = devcert::certificate_fingerprint(cert, fingerprint);
    if (hashed) {
        const std::string der = der_of(cert);
        devcert::Sha256 expected{};
        unsigned int len = 0;
        FUZZ_CHECK(EVP_Digest(der.data(), der.size(), expected.data(), &len, EVP_sha256(), nullptr) == 1, "sha256");
        FUZZ_CHECK(fingerprint == expected, "the fingerprint is not the SHA-256 of the DER");
        FUZZ_CHECK(devcert::to_hex(fingerprint).size() == 64, "fingerprint hex");
    }

    auto info = devcert::describe_certificate(cert);
    auto ca = devcert::validate_ca_certificate(cert);
    if (ca) {
        FUZZ_CHECK(info.ok(), "a CA is valid but cannot be described");
        FUZZ_CHECK(ca->is_ca, "a valid CA is not is_ca");
    }
    if (!info) {
        FUZZ_CHECK(!info.error().message.empty(), "a refusal names its reason");
        return;
    }
    FUZZ_CHECK(hashed && info->fingerprint == fingerprint, "describe and certificate_fingerprint disagree");
    auto serial = devcert::parse_serial(info->serial);
    FUZZ_CHECK(serial && serial.value() == info->serial, info->serial);
    FUZZ_CHECK(info->subject_key_id == octets(X509_get0_subject_key_id(cert)), "SKI");
    FUZZ_CHECK(info->authority_key_id == octets(X509_get0_authority_key_id(cert)), "AKI");

    // The PEM we store re-parses to the same certificate and description.
    auto again = devcert::parse_pem_certificate(info->pem);
    FUZZ_CHECK(again.ok(), "the stored PEM does not parse again");
    auto info2 = devcert::describe_certificate(again->get());
    FUZZ_CHECK(info2.ok(), "the stored PEM does not describe again");
    FUZZ_CHECK(info2->serial == info->serial && info2->common_name == info->common_name &&
                   info2->subject == info->subject && info2->not_before_ms == info->not_before_ms &&
                   info2->not_after_ms == info->not_after_ms && info2->pem == info->pem &&
                   info2->subject_key_id == info->subject_key_id &&
                   info2->authority_key_id == info->authority_key_id && info2->subject_der == info->subject_der &&
                   info2->issuer_der == info->issuer_der && info2->is_ca == info->is_ca,
               "the description changed after a PEM round trip");
    // The fingerprint may differ only if the DER was not canonical (OpenSSL
    // re-encodes what it parsed); a canonical input keeps it.
}

void check_issuers(X509* leaf, const std::vector<devcert::X509Ptr>& cas) {
    devcert::IssuerIndex index;
    for (std::size_t i = 0; i < cas.size(); ++i) index.add("ca" + std::to_string(i), cas[i].get());
    index.add("self", leaf);  // a self-signed leaf is its own candidate
    std::array<const std::string*, 16> all{};
    const std::size_t n = index.candidates(leaf, all.data(), all.size());
    FUZZ_CHECK(n <= index.size(), "more candidates than CAs");
    if (n > 0) {
        const std::string* first = nullptr;
        FUZZ_CHECK(index.candidates(leaf, &first, 1) == 1 && first == all[0], "candidates ignores its cap");
    }
    const std::string* issuer = index.find_issuer(leaf);
    if (issuer != nullptr) {
        bool listed = false;
        for (std::size_t i = 0; i < n; ++i) listed = listed || all[i] == issuer;
        FUZZ_CHECK(listed || n == all.size(), "find_issuer returned a CA that is not a candidate");
    }
    index.remove("self");
    FUZZ_CHECK(!index.contains("self"), "remove");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    const std::string pem = size > 0 && data[0] == 0x30 ? der_as_pem(input) : std::string(input);

    auto one = devcert::parse_pem_certificate(pem);
    auto bundle = devcert::parse_pem_bundle(pem);
    if (one) {
        FUZZ_CHECK(bundle.ok() && bundle->size() == 1, "one certificate is not a bundle of one");
        FUZZ_CHECK(der_of(one->get()) == der_of(bundle->front().get()), "the two parsers disagree");
    } else {
        FUZZ_CHECK(!one.error().message.empty(), "a refusal names its reason");
    }
    if (!bundle) return 0;
    FUZZ_CHECK(!bundle->empty(), "an empty bundle was accepted");

    X509* leaf = bundle->front().get();
    check_description(leaf);
    std::vector<devcert::X509Ptr> cas;
    for (std::size_t i = 1; i < bundle->size(); ++i) cas.push_back(std::move((*bundle)[i]));
    for (const auto& ca : cas) check_description(ca.get());
    check_issuers(leaf, cas);
    return 0;
}
