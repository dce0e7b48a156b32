// The test PKI builds every extension by hand rather than through the
// X509V3 config-string machinery: tests need certificates that a normal CA
// would refuse to produce (no SKI, an AKI without a matching SKI, no
// basicConstraints, negative serials), and hand-built extensions make each of
// those a plain flag.
#include "pki.hpp"

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <stdexcept>
#include <string>

namespace devcert::test {
namespace {

[[noreturn]] void fail(const std::string& what) {
    std::string detail;
    if (const unsigned long code = ERR_get_error(); code != 0) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof buf);
        detail = std::string(": ") + buf;
    }
    ERR_clear_error();
    throw std::runtime_error("test pki: " + what + detail);
}

void check(int rc, const std::string& what) {
    if (rc != 1) fail(what);
}

std::string bio_contents(BIO* bio) {
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(len));
}

// RFC 5280 4.2.1.2 method (1): SHA-1 of the subjectPublicKey bit string.
Asn1OctetStringPtr key_identifier(EVP_PKEY* key) {
    X509_PUBKEY* pub_raw = nullptr;
    check(X509_PUBKEY_set(&pub_raw, key), "cannot encode public key");
    std::unique_ptr<X509_PUBKEY, CDeleter<X509_PUBKEY_free>> pub(pub_raw);
    const unsigned char* bits = nullptr;
    int bits_len = 0;
    check(X509_PUBKEY_get0_param(nullptr, &bits, &bits_len, nullptr, pub.get()),
          "cannot read public key bits");
    unsigned char digest[SHA_DIGEST_LENGTH];
    SHA1(bits, static_cast<std::size_t>(bits_len), digest);
    Asn1OctetStringPtr id(ASN1_OCTET_STRING_new());
    if (!id || ASN1_OCTET_STRING_set(id.get(), digest, SHA_DIGEST_LENGTH) != 1)
        fail("cannot build key identifier");
    return id;
}

void set_serial(X509* cert, const std::string& serial_hex) {
    BIGNUM* bn_raw = nullptr;
    if (serial_hex.empty() || BN_hex2bn(&bn_raw, serial_hex.c_str()) != static_cast<int>(serial_hex.size()))
        fail("bad serial '" + serial_hex + "'");
    BignumPtr bn(bn_raw);
    Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    if (!serial) fail("cannot encode serial '" + serial_hex + "'");
    check(X509_set_serialNumber(cert, serial.get()), "cannot set serial");
}

void set_time(ASN1_TIME* field, std::int64_t unix_seconds) {
    if (ASN1_TIME_set(field, static_cast<time_t>(unix_seconds)) == nullptr) fail("cannot set validity");
}

X509NamePtr make_name(const CertSpec& spec) {
    X509NamePtr name(X509_NAME_new());
    if (!name) fail("cannot allocate name");
    auto add = [&](const char* field, const std::string& value) {
        check(X509_NAME_add_entry_by_txt(name.get(), field, MBSTRING_UTF8,
                                         reinterpret_cast<const unsigned char*>(value.c_str()),
                                         static_cast<int>(value.size()), -1, 0),
              std::string("cannot add ") + field);
    };
    if (!spec.organization.empty()) add("O", spec.organization);
    if (!spec.common_name.empty()) add("CN", spec.common_name);
    return name;
}

void add_basic_constraints(X509* cert, bool is_ca) {
    BasicConstraintsPtr bc(BASIC_CONSTRAINTS_new());
    if (!bc) fail("cannot allocate basicConstraints");
    bc->ca = is_ca ? 0xFF : 0;
    check(X509_add1_ext_i2d(cert, NID_basic_constraints, bc.get(), 1, X509V3_ADD_DEFAULT),
          "cannot add basicConstraints");
}

// The AKI names the issuer's SKI when it has one; an issuer without SKI still
// gets the identifier its key would have, which is what a careless CA emits.
void add_authority_key_id(X509* cert, const X509* issuer_cert, EVP_PKEY* issuer_key) {
    AuthorityKeyIdPtr aki(AUTHORITY_KEYID_new());
    if (!aki) fail("cannot allocate authorityKeyIdentifier");
    const ASN1_OCTET_STRING* issuer_ski = issuer_cert ? X509_get0_subject_key_id(const_cast<X509*>(issuer_cert)) : nullptr;
    if (issuer_ski) {
        aki->keyid = ASN1_OCTET_STRING_dup(issuer_ski);
        if (!aki->keyid) fail("cannot copy issuer key identifier");
    } else {
        aki->keyid = key_identifier(issuer_key).release();
    }
    check(X509_add1_ext_i2d(cert, NID_authority_key_identifier, aki.get(), 0, X509V3_ADD_DEFAULT),
          "cannot add authorityKeyIdentifier");
}

// issuer_cert == nullptr: self-signed with subject_key.
Issued build(const CertSpec& spec, const X509* issuer_cert, EVP_PKEY* issuer_key, EvpPkeyPtr subject_key) {
    X509Ptr cert(X509_new());
    if (!cert) fail("cannot allocate certificate");
    check(X509_set_version(cert.get(), X509_VERSION_3), "cannot set version");
    set_serial(cert.get(), spec.serial_hex);

    X509NamePtr subject = make_name(spec);
    check(X509_set_subject_name(cert.get(), subject.get()), "cannot set subject");
    check(X509_set_issuer_name(cert.get(), issuer_cert ? X509_get_subject_name(issuer_cert) : subject.get()),
          "cannot set issuer");
    set_time(X509_getm_notBefore(cert.get()), spec.not_before_s);
    set_time(X509_getm_notAfter(cert.get()), spec.not_after_s);
    check(X509_set_pubkey(cert.get(), subject_key.get()), "cannot set public key");

    if (spec.basic_constraints) add_basic_constraints(cert.get(), spec.is_ca);
    if (spec.subject_key_id) {
        Asn1OctetStringPtr ski = key_identifier(subject_key.get());
        check(X509_add1_ext_i2d(cert.get(), NID_subject_key_identifier, ski.get(), 0, X509V3_ADD_DEFAULT),
              "cannot add subjectKeyIdentifier");
    }
    if (spec.authority_key_id) {
        if (issuer_cert) {
            add_authority_key_id(cert.get(), issuer_cert, issuer_key);
        } else {
            add_authority_key_id(cert.get(), nullptr, subject_key.get());
        }
    }

    EVP_PKEY* signer = issuer_cert ? issuer_key : subject_key.get();
    if (X509_sign(cert.get(), signer, EVP_sha256()) <= 0) fail("cannot sign certificate");
    return Issued{std::move(cert), std::move(subject_key)};
}

}  // namespace

KeyPair KeyPair::generate() {
    EvpPkeyPtr key(EVP_EC_gen("P-256"));
    if (!key) fail("cannot generate P-256 key");
    return KeyPair{std::move(key)};
}

std::string Issued::pem() const {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert.get()) != 1) fail("cannot write certificate PEM");
    return bio_contents(bio.get());
}

std::string Issued::key_pem() const {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
        fail("cannot write key PEM");
    return bio_contents(bio.get());
}

Issued make_root(const CertSpec& spec) {
    CertSpec root = spec;
    if (root.basic_constraints) root.is_ca = true;
    return build(root, nullptr, nullptr, KeyPair::generate().key);
}

Issued issue(const CertSpec& spec, const Issued& issuer) {
    return issue_with_key(spec, issuer, KeyPair::generate().key);
}

Issued issue_with_key(const CertSpec& spec, const Issued& issuer, EvpPkeyPtr key) {
    if (!issuer.cert || !issuer.key) fail("issuer has no certificate or key");
    if (!key) fail("no subject key given");
    return build(spec, issuer.cert.get(), issuer.key.get(), std::move(key));
}

}  // namespace devcert::test
