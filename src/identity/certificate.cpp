// Certificate parsing and description. PEM text is split into blocks here
// rather than handed to PEM_read_bio_X509 whole, because OpenSSL silently
// skips text and non-certificate blocks before a certificate; an operator who
// pasted a key and a certificate, or two certificates, must be told so.
#include "devcert/certificate.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <fmt/format.h>

#include <cctype>
#include <ctime>

#include "devcert/serial.hpp"

namespace devcert {
namespace {

// Real certificates are a few kilobytes; the caps keep a hostile upload from
// costing more than a bounded parse.
constexpr std::size_t kMaxCertificatePem = 256 * 1024;
constexpr std::size_t kMaxBundlePem = 4 * 1024 * 1024;
constexpr std::size_t kMaxBundleCertificates = 1000;

constexpr std::string_view kBegin = "-----BEGIN ";
constexpr std::string_view kDashes = "-----";

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

void openssl_free(void* p) noexcept {
    OPENSSL_free(p);
}
template <class T>
using OpensslBuffer = std::unique_ptr<T, CDeleter<openssl_free>>;

// The newest OpenSSL error as an operator-facing reason; clears the queue so
// that later callers on this thread do not inherit it.
std::string openssl_reason(std::string_view fallback) {
    const unsigned long code = ERR_peek_last_error();
    std::string reason;
    if (code != 0) {
        if (const char* text = ERR_reason_error_string(code)) reason = text;
    }
    ERR_clear_error();
    return reason.empty() ? std::string(fallback) : reason;
}

std::size_t skip_whitespace(std::string_view s, std::size_t pos) noexcept {
    while (pos < s.size() && std::isspace(static_cast<unsigned char>(s[pos]))) ++pos;
    return pos;
}

// A PEM label as it may appear in a message: the text is untrusted, so
// control characters are masked and the length is capped.
std::string printable_label(std::string_view label) {
    constexpr std::size_t kMaxShown = 40;
    std::string out;
    for (const char c : label.substr(0, kMaxShown)) {
        const auto byte = static_cast<unsigned char>(c);
        out.push_back(byte >= 0x20 && byte < 0x7f ? c : '?');
    }
    if (label.size() > kMaxShown) out += "...";
    return out;
}

struct PemBlock {
    std::string_view label;
    std::string_view text;  // from "-----BEGIN" through the END line
};

struct PemBlocks {
    std::vector<PemBlock> blocks;
    bool more = false;  // text continues past max_blocks blocks
};

// Splits PEM text into at most max_blocks blocks; anything between blocks
// other than whitespace is an error, as is a block without its END line.
Result<PemBlocks> split_pem(std::string_view pem, std::size_t max_blocks) {
    std::vector<PemBlock> blocks;
    std::size_t pos = skip_whitespace(pem, 0);
    while (pos < pem.size()) {
        if (pem.substr(pos, kBegin.size()) != kBegin) {
            return invalid(blocks.empty() ? "no PEM certificate found (expected a line '-----BEGIN CERTIFICATE-----')"
                                          : "unexpected text after the last PEM block");
        }
        if (blocks.size() == max_blocks) return PemBlocks{std::move(blocks), true};
        const std::size_t label_start = pos + kBegin.size();
        const std::size_t label_end = pem.find(kDashes, label_start);
        const std::size_t line_end = pem.find('\n', label_start);
        if (label_end == std::string_view::npos || (line_end != std::string_view::npos && label_end > line_end)) {
            return invalid("malformed PEM BEGIN line");
        }
        const std::string_view label = pem.substr(label_start, label_end - label_start);
        const std::string end_line = fmt::format("-----END {}-----", label);
        const std::size_t end_pos = pem.find(end_line, label_end);
        if (end_pos == std::string_view::npos) {
            return invalid(fmt::format("PEM block '{}' has no END line", printable_label(label)));
        }
        const std::size_t block_end = end_pos + end_line.size();
        blocks.push_back(PemBlock{label, pem.substr(pos, block_end - pos)});
        pos = skip_whitespace(pem, block_end);
    }
    if (blocks.empty()) return invalid("no PEM certificate found (the text is empty)");
    return PemBlocks{std::move(blocks), false};
}

Result<X509Ptr> decode_certificate_block(const PemBlock& block) {
    if (block.label != "CERTIFICATE") {
        return invalid(
            fmt::format("unexpected PEM block '{}' (expected CERTIFICATE)", printable_label(block.label)));
    }
    BioPtr bio(BIO_new_mem_buf(block.text.data(), static_cast<int>(block.text.size())));
    if (!bio) return make_error(Errc::io_error, "out of memory reading PEM");

    char* name_raw = nullptr;
    char* header_raw = nullptr;
    unsigned char* data_raw = nullptr;
    long length = 0;
    const int read = PEM_read_bio(bio.get(), &name_raw, &header_raw, &data_raw, &length);
    // PEM_read_bio hands out three OpenSSL allocations; own them at once.
    OpensslBuffer<char> name(name_raw);
    OpensslBuffer<char> header(header_raw);
    OpensslBuffer<unsigned char> data(data_raw);
    if (read != 1) {
        return invalid(fmt::format("PEM certificate cannot be decoded: {}", openssl_reason("bad base64 data")));
    }
    if (header && header.get()[0] != '\0') {
        return invalid("PEM certificate has headers; encrypted or annotated certificates are not accepted");
    }

    const unsigned char* cursor = data.get();
    X509Ptr cert(d2i_X509(nullptr, &cursor, length));
    if (!cert) {
        return invalid(fmt::format("certificate cannot be parsed: {}", openssl_reason("not an X.509 certificate")));
    }
    if (cursor != data.get() + length) {
        return invalid("certificate DER has trailing bytes after the certificate");
    }
    return cert;
}

Result<std::string> name_to_text(const X509_NAME* name) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) {
        ERR_clear_error();
        return invalid("certificate subject cannot be printed");
    }
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

Result<std::string> name_to_der(const X509_NAME* name) {
    const unsigned char* der = nullptr;
    std::size_t len = 0;
    if (X509_NAME_get0_der(const_cast<X509_NAME*>(name), &der, &len) != 1) {
        ERR_clear_error();
        return invalid("certificate name cannot be encoded");
    }
    return std::string(reinterpret_cast<const char*>(der), len);
}

// The first CN, as mosquitto's use_identity_as_username reads it.
Result<std::string> common_name(const X509_NAME* name) {
    const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) return std::string();
    const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    unsigned char* utf8_raw = nullptr;
    const int len = ASN1_STRING_to_UTF8(&utf8_raw, value);
    OpensslBuffer<unsigned char> utf8(utf8_raw);
    if (len < 0) {
        ERR_clear_error();
        return invalid("certificate common name is not valid text");
    }
    return std::string(reinterpret_cast<const char*>(utf8.get()), static_cast<std::size_t>(len));
}

Result<std::int64_t> time_to_unix_ms(const ASN1_TIME* time, std::string_view which) {
    std::tm tm{};
    if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
        ERR_clear_error();
        return invalid(fmt::format("certificate {} time cannot be read", which));
    }
    const std::time_t seconds = timegm(&tm);
    return static_cast<std::int64_t>(seconds) * 1000;
}

Result<std::string> certificate_pem(X509* cert) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
        ERR_clear_error();
        return invalid("certificate cannot be encoded as PEM");
    }
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(len));
}

std::string octets(const ASN1_OCTET_STRING* s) {
    if (s == nullptr) return {};
    return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<std::size_t>(ASN1_STRING_length(s)));
}

enum class CaFlag { absent, ca_false, ca_true, duplicated, malformed };

CaFlag basic_constraints_of(const X509* cert) {
    int critical = -1;
    BasicConstraintsPtr bc(
        static_cast<BASIC_CONSTRAINTS*>(X509_get_ext_d2i(cert, NID_basic_constraints, &critical, nullptr)));
    if (!bc) {
        ERR_clear_error();
        // -1: not present; -2: present more than once; >= 0: present but undecodable.
        if (critical == -1) return CaFlag::absent;
        if (critical == -2) return CaFlag::duplicated;
        return CaFlag::malformed;
    }
    return bc->ca ? CaFlag::ca_true : CaFlag::ca_false;
}

bool same_bytes(const ASN1_OCTET_STRING* a, const std::string& b) noexcept {
    if (a == nullptr || b.empty()) return false;
    const int len = ASN1_STRING_length(a);
    return len >= 0 && static_cast<std::size_t>(len) == b.size() &&
           b.compare(0, b.size(), reinterpret_cast<const char*>(ASN1_STRING_get0_data(a)), b.size()) == 0;
}

// Calls visit(entry) for each CA that may have issued leaf: those whose SKI
// equals the leaf's AKI first (key identifiers tell apart CAs that share a
// name), then the others whose subject equals the leaf's issuer. Stops when
// visit returns true. Allocates nothing: X509_NAME_cmp compares the cached
// canonical encodings, which also lets names that differ only in case or
// string type match.
template <class Entries, class Visit>
void visit_candidates(const Entries& cas, X509* leaf, Visit&& visit) noexcept {
    const ASN1_OCTET_STRING* aki = X509_get0_authority_key_id(leaf);
    if (aki != nullptr) {
        for (const auto& e : cas) {
            if (same_bytes(aki, e.ski) && visit(e)) return;
        }
    }
    const X509_NAME* issuer = X509_get_issuer_name(leaf);
    for (const auto& e : cas) {
        if (same_bytes(aki, e.ski)) continue;  // visited above
        if (X509_NAME_cmp(issuer, X509_get_subject_name(e.cert.get())) == 0 && visit(e)) return;
    }
}

}  // namespace

std::string to_hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0x0f]);
    }
    return out;
}

std::string to_hex(const Sha256& digest) {
    return to_hex(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

Result<X509Ptr> parse_pem_certificate(std::string_view pem) {
    if (pem.size() > kMaxCertificatePem) {
        return invalid(fmt::format("certificate PEM is {} bytes; at most {} are accepted", pem.size(),
                                   kMaxCertificatePem));
    }
    auto split = split_pem(pem, 1);
    if (!split) return split.error();
    if (split->more) return invalid("the PEM text holds more than one block; exactly one certificate is expected");
    return decode_certificate_block(split->blocks.front());
}

Result<std::vector<X509Ptr>> parse_pem_bundle(std::string_view pem) {
    if (pem.size() > kMaxBundlePem) {
        return invalid(
            fmt::format("certificate bundle is {} bytes; at most {} are accepted", pem.size(), kMaxBundlePem));
    }
    auto split = split_pem(pem, kMaxBundleCertificates);
    if (!split) return split.error();
    if (split->more) return invalid(fmt::format("the bundle holds more than {} certificates", kMaxBundleCertificates));
    const auto& blocks = split->blocks;
    std::vector<X509Ptr> certs;
    certs.reserve(blocks.size());
    for (std::size_t i = 0; i < blocks.size(); ++i) {
        auto cert = decode_certificate_block(blocks[i]);
        if (!cert) return invalid(fmt::format("certificate {} of the bundle: {}", i + 1, cert.error().message));
        certs.push_back(std::move(cert.value()));
    }
    return certs;
}

bool certificate_fingerprint(X509* cert, Sha256& out) noexcept {
    if (cert == nullptr) return false;
    unsigned int len = 0;
    if (X509_digest(cert, EVP_sha256(), out.data(), &len) != 1 || len != out.size()) {
        ERR_clear_error();
        return false;
    }
    return true;
}

Result<CertificateInfo> describe_certificate(X509* cert) {
    if (cert == nullptr) return invalid("no certificate given");
    CertificateInfo info;

    auto serial = serial_from_asn1(X509_get0_serialNumber(cert));
    if (!serial) return invalid(fmt::format("certificate serial: {}", serial.error().message));
    info.serial = std::move(serial.value());

    const X509_NAME* subject = X509_get_subject_name(cert);
    const X509_NAME* issuer = X509_get_issuer_name(cert);
    auto cn = common_name(subject);
    if (!cn) return cn.error();
    info.common_name = std::move(cn.value());
    auto subject_text = name_to_text(subject);
    if (!subject_text) return subject_text.error();
    info.subject = std::move(subject_text.value());
    auto subject_der = name_to_der(subject);
    if (!subject_der) return subject_der.error();
    info.subject_der = std::move(subject_der.value());
    auto issuer_der = name_to_der(issuer);
    if (!issuer_der) return issuer_der.error();
    info.issuer_der = std::move(issuer_der.value());

    auto not_before = time_to_unix_ms(X509_get0_notBefore(cert), "notBefore");
    if (!not_before) return not_before.error();
    auto not_after = time_to_unix_ms(X509_get0_notAfter(cert), "notAfter");
    if (!not_after) return not_after.error();
    info.not_before_ms = not_before.value();
    info.not_after_ms = not_after.value();

    auto pem = certificate_pem(cert);
    if (!pem) return pem.error();
    info.pem = std::move(pem.value());
    if (!certificate_fingerprint(cert, info.fingerprint)) return invalid("certificate cannot be hashed");

    info.subject_key_id = octets(X509_get0_subject_key_id(cert));
    info.authority_key_id = octets(X509_get0_authority_key_id(cert));
    info.is_ca = basic_constraints_of(cert) == CaFlag::ca_true;
    ERR_clear_error();
    return info;
}

MqttStringProblem mqtt_string_problem(std::string_view s) noexcept {
    if (s.size() > 65535) return MqttStringProblem::too_long;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    for (std::size_t i = 0; i < n;) {
        const unsigned char lead = p[i];
        std::uint32_t cp = 0;
        std::size_t len = 0;
        if (lead == 0) return MqttStringProblem::nul;
        if (lead < 0x80) {
            cp = lead;
            len = 1;
        } else if (lead >= 0xC2 && lead <= 0xDF) {
            cp = lead & 0x1Fu;
            len = 2;
        } else if ((lead & 0xF0) == 0xE0) {
            cp = lead & 0x0Fu;
            len = 3;
        } else if (lead >= 0xF0 && lead <= 0xF4) {
            cp = lead & 0x07u;
            len = 4;
        } else {
            return MqttStringProblem::malformed;  // continuation byte, C0/C1, or beyond U+10FFFF
        }
        if (n - i < len) return MqttStringProblem::malformed;
        for (std::size_t k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return MqttStringProblem::malformed;
            cp = (cp << 6) | (p[i + k] & 0x3Fu);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
            return MqttStringProblem::malformed;  // overlong or out of range
        }
        if (cp >= 0xD800 && cp <= 0xDFFF) return MqttStringProblem::malformed;  // surrogate
        if (cp <= 0x1F || (cp >= 0x7F && cp <= 0x9F)) return MqttStringProblem::control;
        if ((cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE) return MqttStringProblem::noncharacter;
        i += len;
    }
    return MqttStringProblem::none;
}

Result<CertificateInfo> validate_ca_certificate(X509* cert) {
    if (cert == nullptr) return invalid("no CA certificate given");
    switch (basic_constraints_of(cert)) {
        case CaFlag::ca_true:
            break;
        case CaFlag::absent:
            return invalid("the CA certificate has no basicConstraints extension; it must have CA:TRUE");
        case CaFlag::ca_false:
            return invalid("the CA certificate's basicConstraints is CA:FALSE; it must be CA:TRUE");
        case CaFlag::duplicated:
            return invalid("the CA certificate has more than one basicConstraints extension");
        case CaFlag::malformed:
            return invalid("the CA certificate's basicConstraints extension cannot be decoded");
    }
    auto info = describe_certificate(cert);
    if (!info) return invalid(fmt::format("CA {}", info.error().message));
    return info;
}

void IssuerIndex::add(const std::string& ca_sn, X509* ca_cert) {
    if (ca_cert == nullptr) return;
    X509_up_ref(ca_cert);
    X509Ptr owned(ca_cert);
    Entry entry{ca_sn, std::move(owned), octets(X509_get0_subject_key_id(ca_cert))};
    for (auto& existing : cas_) {
        if (existing.sn == ca_sn) {
            existing = std::move(entry);
            return;
        }
    }
    cas_.push_back(std::move(entry));
}

void IssuerIndex::remove(std::string_view ca_sn) {
    std::erase_if(cas_, [&](const Entry& e) { return e.sn == ca_sn; });
}

void IssuerIndex::clear() {
    cas_.clear();
}

bool IssuerIndex::contains(std::string_view ca_sn) const noexcept {
    for (const auto& e : cas_) {
        if (e.sn == ca_sn) return true;
    }
    return false;
}

std::size_t IssuerIndex::candidates(X509* leaf, const std::string** out, std::size_t cap) const noexcept {
    if (leaf == nullptr || out == nullptr || cap == 0) return 0;
    std::size_t n = 0;
    visit_candidates(cas_, leaf, [&](const auto& entry) {
        out[n++] = &entry.sn;
        return n == cap;
    });
    return n;
}

const std::string* IssuerIndex::find_issuer(X509* leaf) const noexcept {
    if (leaf == nullptr) return nullptr;
    // Failed verifications leave errors on this thread's queue, which the
    // broker's own TLS code reads; put the queue back as it was.
    ERR_set_mark();
    const std::string* found = nullptr;
    visit_candidates(cas_, leaf, [&](const auto& entry) {
        EVP_PKEY* key = X509_get0_pubkey(entry.cert.get());
        if (key != nullptr && X509_verify(leaf, key) == 1) found = &entry.sn;
        return found != nullptr;
    });
    ERR_pop_to_mark();
    return found;
}

}  // namespace devcert
