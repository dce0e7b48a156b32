#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "devcert/certificate.hpp"
#include "pki.hpp"
#include "temp_dir.hpp"

using namespace devcert;
using devcert::test::TempDir;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

// What `openssl x509 -fingerprint -sha256` prints, as lowercase hex without
// colons, computed by the openssl command itself.
std::string openssl_cli_fingerprint(const std::string& pem) {
    TempDir dir;
    const fs::path file = dir.file("cert.pem");
    std::ofstream(file) << pem;
    const std::string command = "openssl x509 -noout -fingerprint -sha256 -in '" + file.string() + "'";
    FILE* pipe = ::popen(command.c_str(), "r");
    REQUIRE(pipe != nullptr);
    std::string output;
    char buf[256];
    while (std::fgets(buf, sizeof buf, pipe) != nullptr) output += buf;
    REQUIRE(::pclose(pipe) == 0);
    const auto eq = output.find('=');
    REQUIRE(eq != std::string::npos);
    std::string hex;
    for (const char c : output.substr(eq + 1)) {
        if (std::isxdigit(static_cast<unsigned char>(c))) hex.push_back(static_cast<char>(std::tolower(c)));
    }
    return hex;
}

std::string der_sha256_hex(X509* cert) {
    unsigned char* der = nullptr;
    const int len = i2d_X509(cert, &der);
    REQUIRE(len > 0);
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    const int rc = EVP_Digest(der, static_cast<std::size_t>(len), digest, &digest_len, EVP_sha256(), nullptr);
    OPENSSL_free(der);
    REQUIRE(rc == 1);
    return to_hex(std::string_view(reinterpret_cast<const char*>(digest), digest_len));
}

CertificateInfo described(X509* cert) {
    auto info = describe_certificate(cert);
    if (!info) FAIL(info.error().message);
    return std::move(info.value());
}

std::string parse_error(std::string_view pem) {
    auto r = parse_pem_certificate(pem);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
    return r.error().message;
}

std::string ca_error(X509* cert) {
    auto r = validate_ca_certificate(cert);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
    return r.error().message;
}

}  // namespace

TEST_CASE("to_hex spells bytes as lowercase pairs", "[identity][certificate]") {
    CHECK(to_hex(std::string_view("\x00\x0a\xff\x7f", 4)) == "000aff7f");
    CHECK(to_hex(std::string_view()).empty());
    Sha256 digest{};
    digest[0] = 0xab;
    digest[31] = 0x01;
    const std::string hex = to_hex(digest);
    CHECK(hex.size() == 64);
    CHECK(hex.substr(0, 2) == "ab");
    CHECK(hex.substr(62) == "01");
}

TEST_CASE("a device certificate is described with its serial, names and validity", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "01", .common_name = "Describe Root", .organization = "Acme"});
    auto leaf = test::issue({.serial_hex = "00c0ffee",
                             .common_name = "sensor-17",
                             .organization = "Acme",
                             .not_before_s = 1'650'000'000,
                             .not_after_s = 4'000'000'123},
                            root);
    const CertificateInfo info = described(leaf.cert.get());
    CHECK(info.serial == "c0ffee");
    CHECK(info.common_name == "sensor-17");
    CHECK(info.subject == "CN=sensor-17,O=Acme");
    CHECK(info.not_before_ms == 1'650'000'000'000);
    CHECK(info.not_after_ms == 4'000'000'123'000);
    CHECK_FALSE(info.is_ca);

    const CertificateInfo root_info = described(root.cert.get());
    CHECK(root_info.is_ca);
    CHECK(info.issuer_der == root_info.subject_der);
    CHECK(info.issuer_der != info.subject_der);
    CHECK(info.subject_key_id.size() == 20);
    CHECK(info.authority_key_id == root_info.subject_key_id);
    CHECK(info.subject_key_id != root_info.subject_key_id);
}

TEST_CASE("a certificate without key identifiers or common name is described with those fields empty",
          "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "02", .common_name = "Bare Root"});
    auto leaf = test::issue(
        {.serial_hex = "03", .organization = "No CN Inc", .subject_key_id = false, .authority_key_id = false}, root);
    const CertificateInfo info = described(leaf.cert.get());
    CHECK(info.common_name.empty());
    CHECK(info.subject == "O=No CN Inc");
    CHECK(info.subject_key_id.empty());
    CHECK(info.authority_key_id.empty());
}

TEST_CASE("the fingerprint is what openssl x509 -fingerprint -sha256 prints", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "04", .common_name = "Fingerprint Root"});
    auto leaf = test::issue({.serial_hex = "05", .common_name = "fp-device"}, root);
    const CertificateInfo info = described(leaf.cert.get());
    const std::string ours = to_hex(info.fingerprint);
    CHECK(ours == der_sha256_hex(leaf.cert.get()));
    CHECK(ours == openssl_cli_fingerprint(leaf.pem()));

    Sha256 direct{};
    REQUIRE(certificate_fingerprint(leaf.cert.get(), direct));
    CHECK(direct == info.fingerprint);
    CHECK_FALSE(certificate_fingerprint(nullptr, direct));

    const CertificateInfo root_info = described(root.cert.get());
    CHECK(root_info.fingerprint != info.fingerprint);
}

TEST_CASE("a described certificate's PEM parses back to the same certificate", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "06", .common_name = "Round Trip Root"});
    auto leaf = test::issue({.serial_hex = "0a1b", .common_name = "round-trip"}, root);
    const CertificateInfo info = described(leaf.cert.get());
    CHECK(info.pem == leaf.pem());

    auto reparsed = parse_pem_certificate(info.pem);
    REQUIRE(reparsed.ok());
    CHECK(X509_cmp(reparsed->get(), leaf.cert.get()) == 0);
    const CertificateInfo again = described(reparsed->get());
    CHECK(again.pem == info.pem);
    CHECK(again.fingerprint == info.fingerprint);
    CHECK(again.serial == info.serial);
    CHECK(again.not_before_ms == info.not_before_ms);
    CHECK(again.not_after_ms == info.not_after_ms);
    CHECK(again.authority_key_id == info.authority_key_id);
}

TEST_CASE("a certificate with a negative serial cannot be described", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "07", .common_name = "Negative Root"});
    auto leaf = test::issue({.serial_hex = "-05", .common_name = "negative"}, root);
    auto info = describe_certificate(leaf.cert.get());
    REQUIRE_FALSE(info.ok());
    CHECK_THAT(info.error().message, Contains("negative serial numbers are not supported"));
    CHECK_FALSE(describe_certificate(nullptr).ok());
}

TEST_CASE("a PEM certificate with surrounding whitespace or CRLF line ends is accepted", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "08", .common_name = "Whitespace Root"});
    const std::string pem = root.pem();
    REQUIRE(parse_pem_certificate("\n  " + pem + "\n\n\t ").ok());

    std::string crlf;
    for (const char c : pem) {
        if (c == '\n') crlf += '\r';
        crlf += c;
    }
    auto parsed = parse_pem_certificate(crlf);
    REQUIRE(parsed.ok());
    CHECK(X509_cmp(parsed->get(), root.cert.get()) == 0);
}

TEST_CASE("garbage offered as a PEM certificate is refused", "[identity][certificate]") {
    CHECK_THAT(parse_error(""), Contains("no PEM certificate found"));
    CHECK_THAT(parse_error("   \n"), Contains("no PEM certificate found"));
    CHECK_THAT(parse_error("hello world"), Contains("no PEM certificate found"));
    CHECK_THAT(parse_error("-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n"),
               Contains("cannot be decoded"));
    // Valid base64 that is not a certificate.
    CHECK_THAT(parse_error("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
               Contains("certificate cannot be parsed"));
    CHECK_THAT(parse_error("-----BEGIN CERTIFICATE-----\nAAAA\n"), Contains("no END line"));
    CHECK_THAT(parse_error("-----BEGIN CERTIFICATE"), Contains("malformed PEM BEGIN line"));
}

TEST_CASE("a truncated or corrupted certificate is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "09", .common_name = "Corrupt Root"});
    std::string pem = root.pem();
    // Drop one line of the body: base64 stays valid, the DER does not.
    const auto second_line = pem.find('\n') + 1;
    const auto third_line = pem.find('\n', second_line) + 1;
    std::string truncated = pem;
    truncated.erase(second_line, third_line - second_line);
    CHECK_THAT(parse_error(truncated), Contains("certificate cannot be parsed"));
}

TEST_CASE("a PEM key or junk next to the certificate is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "0a", .common_name = "Junk Root"});
    CHECK_THAT(parse_error(root.key_pem()), Contains("unexpected PEM block 'PRIVATE KEY'"));
    CHECK_THAT(parse_error(root.key_pem() + root.pem()), Contains("more than one"));
    CHECK_THAT(parse_error("subject=CN = Junk Root\n" + root.pem()), Contains("no PEM certificate found"));
    CHECK_THAT(parse_error(root.pem() + "trailing text\n"), Contains("unexpected text after"));
}

TEST_CASE("a PEM certificate with headers or trailing DER bytes is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "16", .common_name = "Padded Root"});
    unsigned char* der_raw = nullptr;
    const int der_len = i2d_X509(root.cert.get(), &der_raw);
    REQUIRE(der_len > 0);
    std::string der(reinterpret_cast<const char*>(der_raw), static_cast<std::size_t>(der_len));
    OPENSSL_free(der_raw);

    auto pem_of = [](const std::string& bytes, const char* headers) {
        BioPtr bio(BIO_new(BIO_s_mem()));
        REQUIRE(PEM_write_bio(bio.get(), "CERTIFICATE", headers, reinterpret_cast<const unsigned char*>(bytes.data()),
                              static_cast<long>(bytes.size())) > 0);
        char* data = nullptr;
        const long len = BIO_get_mem_data(bio.get(), &data);
        return std::string(data, static_cast<std::size_t>(len));
    };
    REQUIRE(parse_pem_certificate(pem_of(der, "")).ok());
    CHECK_THAT(parse_error(pem_of(der + std::string("\0\0", 2), "")), Contains("trailing bytes"));
    CHECK_THAT(parse_error(pem_of(der, "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n")),
               Contains("has headers"));
}

TEST_CASE("an unreadable PEM label is masked in the refusal", "[identity][certificate]") {
    const std::string label = "BAD\x01LABEL" + std::string(100, 'X');
    const std::string message =
        parse_error("-----BEGIN " + label + "-----\nAAAA\n-----END " + label + "-----\n");
    CHECK_THAT(message, Contains("'BAD?LABELXXX"));
    CHECK_THAT(message, Contains("...'"));
    CHECK(message.find('\x01') == std::string::npos);
}

TEST_CASE("two certificates in one PEM are refused where exactly one is expected", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "0b", .common_name = "Two Root"});
    auto leaf = test::issue({.serial_hex = "0c", .common_name = "two"}, root);
    CHECK_THAT(parse_error(leaf.pem() + root.pem()), Contains("exactly one certificate"));
    CHECK_THAT(parse_error(leaf.pem() + root.pem() + leaf.pem()), Contains("exactly one certificate"));
}

TEST_CASE("a PEM bundle yields its certificates in order", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "0d", .common_name = "Bundle Root"});
    auto inter = test::issue({.serial_hex = "0e", .common_name = "Bundle Intermediate", .is_ca = true}, root);
    auto leaf = test::issue({.serial_hex = "0f", .common_name = "bundle-leaf"}, inter);

    auto one = parse_pem_bundle(root.pem());
    REQUIRE(one.ok());
    REQUIRE(one->size() == 1);
    CHECK(X509_cmp((*one)[0].get(), root.cert.get()) == 0);

    auto three = parse_pem_bundle(leaf.pem() + "\n" + inter.pem() + root.pem());
    REQUIRE(three.ok());
    REQUIRE(three->size() == 3);
    CHECK(X509_cmp((*three)[0].get(), leaf.cert.get()) == 0);
    CHECK(X509_cmp((*three)[1].get(), inter.cert.get()) == 0);
    CHECK(X509_cmp((*three)[2].get(), root.cert.get()) == 0);
}

TEST_CASE("a PEM bundle with a bad member or nothing in it is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "10", .common_name = "Bad Bundle Root"});
    auto empty = parse_pem_bundle("");
    REQUIRE_FALSE(empty.ok());
    CHECK_THAT(empty.error().message, Contains("no PEM certificate found"));

    auto with_key = parse_pem_bundle(root.pem() + root.key_pem());
    REQUIRE_FALSE(with_key.ok());
    CHECK_THAT(with_key.error().message, Contains("certificate 2 of the bundle"));
    CHECK_THAT(with_key.error().message, Contains("PRIVATE KEY"));

    auto with_junk = parse_pem_bundle(root.pem() + "junk");
    REQUIRE_FALSE(with_junk.ok());
    CHECK_THAT(with_junk.error().message, Contains("unexpected text"));
}

TEST_CASE("a CA certificate with basicConstraints CA:TRUE is accepted", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "00ab", .common_name = "Valid Root"});
    auto info = validate_ca_certificate(root.cert.get());
    REQUIRE(info.ok());
    CHECK(info->is_ca);
    CHECK(info->serial == "ab");
    CHECK(info->common_name == "Valid Root");

    auto inter = test::issue({.serial_hex = "ac", .common_name = "Valid Intermediate", .is_ca = true}, root);
    REQUIRE(validate_ca_certificate(inter.cert.get()).ok());
}

TEST_CASE("a CA certificate with CA:FALSE is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "11", .common_name = "CA False Root"});
    auto leaf = test::issue({.serial_hex = "12", .common_name = "not-a-ca"}, root);
    CHECK_THAT(ca_error(leaf.cert.get()), Contains("CA:FALSE") && Contains("must be CA:TRUE"));
}

TEST_CASE("a CA certificate without basicConstraints is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "13", .common_name = "No BC Root", .basic_constraints = false});
    CHECK_THAT(ca_error(root.cert.get()), Contains("no basicConstraints extension"));
    CHECK_FALSE(described(root.cert.get()).is_ca);
}

TEST_CASE("a CA certificate with a negative serial is refused", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "-05", .common_name = "Negative CA"});
    CHECK_THAT(ca_error(root.cert.get()), Contains("negative serial numbers are not supported"));
    CHECK_THAT(ca_error(nullptr), Contains("no CA certificate"));
}

TEST_CASE("a parsed PEM CA is validated like one built in memory", "[identity][certificate]") {
    auto root = test::make_root({.serial_hex = "14", .common_name = "Parsed Root"});
    auto parsed = parse_pem_certificate(root.pem());
    REQUIRE(parsed.ok());
    auto info = validate_ca_certificate(parsed->get());
    REQUIRE(info.ok());
    CHECK(info->serial == "14");

    auto no_bc = test::make_root({.serial_hex = "15", .common_name = "Parsed No BC", .basic_constraints = false});
    auto parsed_no_bc = parse_pem_certificate(no_bc.pem());
    REQUIRE(parsed_no_bc.ok());
    CHECK_THAT(ca_error(parsed_no_bc->get()), Contains("no basicConstraints"));
}
