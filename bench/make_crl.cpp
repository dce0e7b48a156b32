// devcert_make_crl: writes a PEM CRL signed by a CA, listing N synthetic
// revoked serials, for the crlfile configurations of the connection
// benchmark. `openssl ca` keeps its database in a text file and rewrites it
// per revocation, which takes hours at a million entries; building the CRL
// in memory takes seconds.
//
//   devcert_make_crl --ca ca.crt --key ca.key --count N --out crl.pem
//
// Serial i (0 <= i < N) is 0x7b followed by i as 7 big-endian bytes: a range
// no benchmark device certificate uses (pki.sh gives them 0x0d......).
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "devcert/handles.hpp"
#include "tool_args.hpp"

namespace {

using devcert::Asn1IntegerPtr;
using devcert::BioPtr;
using devcert::CDeleter;
using devcert::EvpPkeyPtr;
using devcert::X509Ptr;
using CrlPtr = std::unique_ptr<X509_CRL, CDeleter<X509_CRL_free>>;
using RevokedPtr = std::unique_ptr<X509_REVOKED, CDeleter<X509_REVOKED_free>>;
using Asn1TimePtr = std::unique_ptr<ASN1_TIME, CDeleter<ASN1_TIME_free>>;

[[noreturn]] void die(const std::string& message) {
    const unsigned long e = ERR_peek_last_error();
    std::fprintf(stderr, "devcert_make_crl: %s%s%s\n", message.c_str(), e ? ": " : "",
                 e ? ERR_reason_error_string(e) : "");
    std::exit(2);
}

void usage() {
    std::puts(
        "usage: devcert_make_crl --ca CA.crt --key CA.key --count N --out CRL.pem\n"
        "  --count N   revoked serials to list (0 to 100000000)\n"
        "  --days D    nextUpdate D days ahead (default 3650)");
}

// Serials the benchmarks revoke: 0x7b || i (7 bytes, big-endian).
void revoked_serial(std::uint64_t i, unsigned char (&out)[8]) {
    out[0] = 0x7b;
    for (int b = 7; b >= 1; --b) {
        out[b] = static_cast<unsigned char>(i & 0xff);
        i >>= 8;
    }
}

}  // namespace

int main(int argc, char** argv) {
    std::string ca_path;
    std::string key_path;
    std::string out_path;
    long long count = -1;
    long long days = 3650;
    for (bench_args::Args args(argc, argv); args.next();) {
        const std::string_view a = args.flag();
        auto value = [&args] { return args.value(); };
        if (args.help()) {
            usage();
            return 0;
        } else if (a == "--ca") {
            ca_path = value();
        } else if (a == "--key") {
            key_path = value();
        } else if (a == "--out") {
            out_path = value();
        } else if (a == "--count" || a == "--days") {
            const bool is_count = a == "--count";
            (is_count ? count : days) =
                static_cast<long long>(bench_args::parse_number(a, value(), is_count ? 0 : 1, is_count ? 100'000'000 : 36500));
        } else {
            die("unknown argument '" + std::string(a) + "' (see --help)");
        }
    }
    if (ca_path.empty() || key_path.empty() || out_path.empty() || count < 0)
        die("--ca, --key, --count and --out are all required");

    BioPtr ca_bio(BIO_new_file(ca_path.c_str(), "r"));
    if (!ca_bio) die("cannot read '" + ca_path + "'");
    X509Ptr ca(PEM_read_bio_X509(ca_bio.get(), nullptr, nullptr, nullptr));
    if (!ca) die("'" + ca_path + "' holds no PEM certificate");
    BioPtr key_bio(BIO_new_file(key_path.c_str(), "r"));
    if (!key_bio) die("cannot read '" + key_path + "'");
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!key) die("'" + key_path + "' holds no unencrypted PEM private key");
    if (X509_check_private_key(ca.get(), key.get()) != 1) die("the key does not match the CA certificate");

    CrlPtr crl(X509_CRL_new());
    if (!crl || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.get())) != 1)
        die("cannot start the CRL");
    Asn1TimePtr this_update(X509_gmtime_adj(nullptr, 0));
    Asn1TimePtr next_update(X509_time_adj_ex(nullptr, static_cast<int>(days), 0, nullptr));
    if (!this_update || !next_update || X509_CRL_set1_lastUpdate(crl.get(), this_update.get()) != 1 ||
        X509_CRL_set1_nextUpdate(crl.get(), next_update.get()) != 1)
        die("cannot set the CRL times");

    // Authority key identifier and CRL number: what `openssl ca` writes too.
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca.get(), nullptr, nullptr, crl.get(), 0);
    std::unique_ptr<X509_EXTENSION, CDeleter<X509_EXTENSION_free>> aki(
        X509V3_EXT_conf_nid(nullptr, &ctx, NID_authority_key_identifier, "keyid:always"));
    if (!aki || X509_CRL_add_ext(crl.get(), aki.get(), -1) != 1) die("cannot add the authority key identifier");
    Asn1IntegerPtr crl_number(ASN1_INTEGER_new());
    if (!crl_number || ASN1_INTEGER_set(crl_number.get(), 1) != 1 ||
        X509_CRL_add1_ext_i2d(crl.get(), NID_crl_number, crl_number.get(), 0, 0) != 1)
        die("cannot add the CRL number");

    for (long long i = 0; i < count; ++i) {
        unsigned char bytes[8];
        revoked_serial(static_cast<std::uint64_t>(i), bytes);
        devcert::BignumPtr bn(BN_bin2bn(bytes, sizeof bytes, nullptr));
        Asn1IntegerPtr serial(bn ? BN_to_ASN1_INTEGER(bn.get(), nullptr) : nullptr);
        RevokedPtr entry(X509_REVOKED_new());
        if (!serial || !entry || X509_REVOKED_set_serialNumber(entry.get(), serial.get()) != 1 ||
            X509_REVOKED_set_revocationDate(entry.get(), this_update.get()) != 1)
            die("cannot build revoked entry " + std::to_string(i));
        if (X509_CRL_add0_revoked(crl.get(), entry.get()) != 1) die("cannot add revoked entry " + std::to_string(i));
        (void)entry.release();  // the CRL owns it now
    }
    if (X509_CRL_sort(crl.get()) != 1) die("cannot sort the CRL");
    if (X509_CRL_sign(crl.get(), key.get(), EVP_sha256()) <= 0) die("cannot sign the CRL");

    BioPtr out(BIO_new_file(out_path.c_str(), "w"));
    if (!out) die("cannot write '" + out_path + "'");
    if (PEM_write_bio_X509_CRL(out.get(), crl.get()) != 1 || BIO_flush(out.get()) != 1)
        die("cannot write '" + out_path + "'");
    std::printf("devcert_make_crl: %lld revoked serials in %s\n", count, out_path.c_str());
    return 0;
}
