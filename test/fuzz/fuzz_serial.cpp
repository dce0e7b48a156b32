// Serial canonicalisation, every entry point: operator text (parse_serial),
// a certificate's ASN1_INTEGER (serial_from_asn1, serial_from_asn1_into) and
// DER INTEGERs as a certificate carries them.
//
// Input: byte 0 picks the mode, the rest is the payload.
//   mode % 4 == 0: the payload is serial text
//   mode % 4 == 1: the payload is the magnitude of a positive ASN1_INTEGER
//   mode % 4 == 2: the same, negative
//   mode % 4 == 3: the payload is a DER-encoded INTEGER
// Properties: a parsed serial is canonical (lowercase hex, even length, no
// leading zero byte, at most kMaxSerialInput characters) and parses back to
// itself, with or without "0x" and ':' separators; the ASN.1 paths agree with
// each other, with BIGNUM's view of the number and with parse_serial.
#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "devcert/handles.hpp"
#include "devcert/serial.hpp"
#include "fuzz_check.hpp"

namespace {

using devcert::Asn1IntegerPtr;
using devcert::BignumPtr;

bool is_canonical(const std::string& s) {
    if (s.empty() || s.size() % 2 != 0 || s.size() > devcert::kMaxSerialInput) return false;
    if (s[0] == '0' && s[1] == '0') return false;
    for (const char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return s.find_first_not_of('0') != std::string::npos;
}

std::string with_colons(const std::string& canonical) {
    std::string out;
    for (std::size_t i = 0; i < canonical.size(); i += 2) {
        if (i != 0) out.push_back(':');
        out.append(canonical, i, 2);
    }
    return out;
}

std::string upper(std::string s) {
    for (auto& c : s) {
        if (c >= 'a' && c <= 'f') c = static_cast<char>(c - 'a' + 'A');
    }
    return s;
}

void check_text(std::string_view text) {
    auto parsed = devcert::parse_serial(text);
    if (!parsed) {
        FUZZ_CHECK(!parsed.error().message.empty(), "a refusal names its reason");
        return;
    }
    const std::string& canonical = parsed.value();
    FUZZ_CHECK(is_canonical(canonical), canonical);
    // Idempotent, and every spelling the docs allow comes back the same.
    for (const std::string& spelling : {canonical, "0x" + canonical, upper(canonical), with_colons(canonical),
                                        "0X" + upper(with_colons(canonical))}) {
        if (spelling.size() > devcert::kMaxSerialInput) continue;
        auto again = devcert::parse_serial(spelling);
        FUZZ_CHECK(again && again.value() == canonical, spelling);
    }
    // The same number as a certificate would carry it.
    BignumPtr bn;
    BIGNUM* raw = nullptr;
    FUZZ_CHECK(BN_hex2bn(&raw, canonical.c_str()) > 0, canonical);
    bn.reset(raw);
    Asn1IntegerPtr asn1(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    FUZZ_CHECK(asn1 != nullptr, canonical);
    auto from_asn1 = devcert::serial_from_asn1(asn1.get());
    FUZZ_CHECK(from_asn1 && from_asn1.value() == canonical, canonical);
}

void check_asn1(const ASN1_INTEGER* serial) {
    auto text = devcert::serial_from_asn1(serial);
    char buffer[devcert::kMaxSerialInput];
    const std::size_t written = devcert::serial_from_asn1_into(serial, buffer, sizeof buffer);
    if (!text) {
        FUZZ_CHECK(written == 0, "serial_from_asn1_into accepts what serial_from_asn1 refuses");
        return;
    }
    const std::string& canonical = text.value();
    FUZZ_CHECK(is_canonical(canonical), canonical);
    FUZZ_CHECK(std::string_view(buffer, written) == canonical, "the two ASN.1 entry points disagree");
    // Too small a buffer: nothing written rather than a truncated serial.
    FUZZ_CHECK(devcert::serial_from_asn1_into(serial, buffer, canonical.size() - 1) == 0, canonical);
    auto parsed = devcert::parse_serial(canonical);
    FUZZ_CHECK(parsed && parsed.value() == canonical, canonical);
    // BIGNUM's reading of the same INTEGER agrees (modulo case and padding).
    BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
    FUZZ_CHECK(bn != nullptr && !BN_is_negative(bn.get()) && !BN_is_zero(bn.get()), canonical);
    char* hex = BN_bn2hex(bn.get());
    FUZZ_CHECK(hex != nullptr, canonical);
    auto from_bn = devcert::parse_serial(hex);
    OPENSSL_free(hex);
    FUZZ_CHECK(from_bn && from_bn.value() == canonical, canonical);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::uint8_t mode = data[0];
    const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
    switch (mode % 4) {
        case 0:
            check_text(payload);
            break;
        case 1:
        case 2: {
            const bool negative = mode % 4 == 2;
            Asn1IntegerPtr serial(ASN1_STRING_type_new(negative ? V_ASN1_NEG_INTEGER : V_ASN1_INTEGER));
            if (!serial) return 0;
            if (ASN1_STRING_set(serial.get(), payload.data(), static_cast<int>(payload.size())) != 1) return 0;
            if (negative) {
                FUZZ_CHECK(!devcert::serial_from_asn1(serial.get()), "a negative serial is accepted");
                char buffer[devcert::kMaxSerialInput];
                FUZZ_CHECK(devcert::serial_from_asn1_into(serial.get(), buffer, sizeof buffer) == 0,
                           "a negative serial is accepted on the connection path");
                break;
            }
            check_asn1(serial.get());
            break;
        }
        default: {
            const auto* cursor = reinterpret_cast<const unsigned char*>(payload.data());
            Asn1IntegerPtr serial(d2i_ASN1_INTEGER(nullptr, &cursor, static_cast<long>(payload.size())));
            if (serial) check_asn1(serial.get());
            break;
        }
    }
    check_asn1(nullptr);
    return 0;
}
