#include <catch2/catch.hpp>
#include <openssl/bn.h>

#include <string>
#include <vector>

#include "devcert/certificate.hpp"
#include "devcert/serial.hpp"
#include "pki.hpp"

using namespace devcert;
using Catch::Matchers::Contains;

namespace {

std::string parsed(std::string_view text) {
    auto r = parse_serial(text);
    INFO("input: '" << text << "'");
    REQUIRE(r.ok());
    return r.value();
}

std::string rejection(std::string_view text) {
    auto r = parse_serial(text);
    INFO("input: '" << text << "'");
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
    return r.error().message;
}

// An ASN.1 INTEGER from signed hex ("-05", "00ff").
Asn1IntegerPtr asn1_integer(const std::string& hex) {
    BIGNUM* raw = nullptr;
    REQUIRE(BN_hex2bn(&raw, hex.c_str()) == static_cast<int>(hex.size()));
    BignumPtr bn(raw);
    Asn1IntegerPtr integer(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    REQUIRE(integer);
    return integer;
}

// An INTEGER whose stored magnitude keeps leading zero bytes, as a lax
// encoder may produce.
Asn1IntegerPtr asn1_integer_raw(const std::vector<unsigned char>& magnitude) {
    Asn1IntegerPtr integer(ASN1_INTEGER_new());
    REQUIRE(integer);
    REQUIRE(ASN1_STRING_set(integer.get(), magnitude.data(), static_cast<int>(magnitude.size())) == 1);
    return integer;
}

std::string from_asn1(const ASN1_INTEGER* integer) {
    auto r = serial_from_asn1(integer);
    REQUIRE(r.ok());
    return r.value();
}

}  // namespace

TEST_CASE("operator serials are lowercased and keep an even number of digits", "[identity][serial]") {
    CHECK(parsed("0a1b") == "0a1b");
    CHECK(parsed("0A1B") == "0a1b");
    CHECK(parsed("0a1B") == "0a1b");
    CHECK(parsed("7f") == "7f");
    CHECK(parsed("0100") == "0100");
    CHECK(parsed("a1b") == "0a1b");
    CHECK(parsed("1") == "01");
    CHECK(parsed("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF") == "ffffffffffffffffffffffffffffffffffffffff");
}

TEST_CASE("operator serials may carry a 0x prefix", "[identity][serial]") {
    CHECK(parsed("0x0a1b") == "0a1b");
    CHECK(parsed("0X0A1B") == "0a1b");
    CHECK(parsed("0x1") == "01");
}

TEST_CASE("operator serials may separate byte pairs with colons", "[identity][serial]") {
    CHECK(parsed("0a:1b") == "0a1b");
    CHECK(parsed("0A:1B:2C") == "0a1b2c");
    CHECK(parsed("0x0a:1b") == "0a1b");
    CHECK(parsed("7f") == "7f");
}

TEST_CASE("leading zeros in operator serials are dropped down to whole bytes", "[identity][serial]") {
    CHECK(parsed("000a1b") == "0a1b");
    CHECK(parsed("00:00:0a:1b") == "0a1b");
    CHECK(parsed("00ff") == "ff");
    CHECK(parsed("0000000001") == "01");
    CHECK(parsed("0x0000ab") == "ab");
}

TEST_CASE("operator serials of exactly the maximum length are accepted", "[identity][serial]") {
    CHECK(parsed(std::string(kMaxSerialInput, 'f')) == std::string(kMaxSerialInput, 'f'));
    CHECK(parsed("0x" + std::string(kMaxSerialInput - 2, 'a')) == std::string(kMaxSerialInput - 2, 'a'));
}

TEST_CASE("an empty serial is refused", "[identity][serial]") {
    CHECK_THAT(rejection(""), Contains("empty"));
}

TEST_CASE("a serial longer than 128 characters is refused", "[identity][serial]") {
    CHECK_THAT(rejection(std::string(kMaxSerialInput + 1, 'a')), Contains("at most 128"));
    CHECK_THAT(rejection("0x" + std::string(kMaxSerialInput - 1, 'a')), Contains("at most 128"));
}

TEST_CASE("a serial with a non-hexadecimal character is refused and the character named", "[identity][serial]") {
    CHECK_THAT(rejection("0a1g"), Contains("'g' at position 4"));
    CHECK_THAT(rejection(" 0a"), Contains("non-hexadecimal"));
    CHECK_THAT(rejection("0a "), Contains("non-hexadecimal"));
    CHECK_THAT(rejection("-05"), Contains("'-' at position 1"));
    CHECK_THAT(rejection("0x-1"), Contains("non-hexadecimal"));
    CHECK_THAT(rejection("0a-1b"), Contains("'-'"));
    CHECK_THAT(rejection(std::string("0a\0""1b", 5)), Contains("byte 0x00"));
    CHECK_THAT(rejection("0x0x1"), Contains("'x' at position 4"));
}

TEST_CASE("a bare 0x prefix is refused", "[identity][serial]") {
    CHECK_THAT(rejection("0x"), Contains("no digits after '0x'"));
    CHECK_THAT(rejection("0X"), Contains("no digits after '0x'"));
}

TEST_CASE("a serial whose value is zero is refused", "[identity][serial]") {
    CHECK_THAT(rejection("0"), Contains("zero"));
    CHECK_THAT(rejection("00"), Contains("zero"));
    CHECK_THAT(rejection("0x0000"), Contains("zero"));
    CHECK_THAT(rejection("00:00"), Contains("zero"));
}

TEST_CASE("a serial with misplaced colons is refused", "[identity][serial]") {
    CHECK_THAT(rejection(":0a"), Contains("misplaced ':' at position 1"));
    CHECK_THAT(rejection("0a:"), Contains("ends with ':'"));
    CHECK_THAT(rejection("0a::1b"), Contains("misplaced ':' at position 4"));
    CHECK_THAT(rejection("a:1b"), Contains("misplaced ':' at position 2"));
    CHECK_THAT(rejection("0a1b:2c"), Contains("misplaced ':'"));
    CHECK_THAT(rejection("0a:1b2"), Contains("more than two digits"));
    CHECK_THAT(rejection("0a:1"), Contains("last group is not two digits"));
    CHECK_THAT(rejection(":"), Contains("misplaced ':'"));
    CHECK_THAT(rejection("0x:0a"), Contains("misplaced ':' at position 3"));
}

TEST_CASE("certificate serials come out in the canonical form", "[identity][serial]") {
    CHECK(from_asn1(asn1_integer("0a1b").get()) == "0a1b");
    CHECK(from_asn1(asn1_integer("7f").get()) == "7f");
    // 0x80 needs a 00 pad byte in DER; the canonical form drops it.
    CHECK(from_asn1(asn1_integer("80").get()) == "80");
    CHECK(from_asn1(asn1_integer("00ff").get()) == "ff");
    CHECK(from_asn1(asn1_integer("0100").get()) == "0100");
    CHECK(from_asn1(asn1_integer("1").get()) == "01");
}

TEST_CASE("leading zero bytes stored in a certificate serial are dropped", "[identity][serial]") {
    CHECK(from_asn1(asn1_integer_raw({0x00, 0x00, 0x0a, 0x1b}).get()) == "0a1b");
}

TEST_CASE("negative certificate serials are refused with a clear reason", "[identity][serial]") {
    auto r = serial_from_asn1(asn1_integer("-05").get());
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
    CHECK(r.error().message == "negative serial numbers are not supported");
}

TEST_CASE("zero, missing and oversized certificate serials are refused", "[identity][serial]") {
    auto zero = serial_from_asn1(asn1_integer("0").get());
    REQUIRE_FALSE(zero.ok());
    CHECK_THAT(zero.error().message, Contains("zero"));

    auto zero_bytes = serial_from_asn1(asn1_integer_raw({0x00, 0x00}).get());
    REQUIRE_FALSE(zero_bytes.ok());
    CHECK_THAT(zero_bytes.error().message, Contains("zero"));

    auto missing = serial_from_asn1(nullptr);
    REQUIRE_FALSE(missing.ok());
    CHECK_THAT(missing.error().message, Contains("no serial"));

    CHECK(from_asn1(asn1_integer(std::string(kMaxSerialInput, 'a')).get()) == std::string(kMaxSerialInput, 'a'));
    auto oversized = serial_from_asn1(asn1_integer(std::string(kMaxSerialInput + 2, 'a')).get());
    REQUIRE_FALSE(oversized.ok());
    CHECK_THAT(oversized.error().message, Contains("longer than 64 bytes"));
}

TEST_CASE("the allocation-free extraction writes the same canonical form", "[identity][serial]") {
    for (const char* hex : {"0a1b", "7f", "80", "00ff", "0100", "1", "ffffffffffffffffffffffffffffffffffffffff"}) {
        INFO(hex);
        auto integer = asn1_integer(hex);
        char buf[kMaxSerialInput];
        const std::size_t n = serial_from_asn1_into(integer.get(), buf, sizeof buf);
        REQUIRE(n > 0);
        CHECK(std::string(buf, n) == from_asn1(integer.get()));
    }
}

TEST_CASE("the allocation-free extraction returns 0 for refused serials and short buffers", "[identity][serial]") {
    char buf[kMaxSerialInput];
    CHECK(serial_from_asn1_into(asn1_integer("-05").get(), buf, sizeof buf) == 0);
    CHECK(serial_from_asn1_into(asn1_integer("0").get(), buf, sizeof buf) == 0);
    CHECK(serial_from_asn1_into(nullptr, buf, sizeof buf) == 0);
    CHECK(serial_from_asn1_into(asn1_integer("0a1b").get(), buf, 3) == 0);
    CHECK(serial_from_asn1_into(asn1_integer("0a1b").get(), buf, 4) == 4);
    CHECK(serial_from_asn1_into(asn1_integer("0a1b").get(), nullptr, 4) == 0);
}

TEST_CASE("a serial typed by an operator matches the one read from the certificate", "[identity][serial]") {
    // Operators copy serials from `openssl x509 -serial` (upper case, with a
    // 00 pad byte when the high bit is set) or from colon-separated dumps.
    struct Case {
        std::string cert_serial;
        std::string typed;
    };
    const std::vector<Case> cases = {
        {"0a1b", "0A1B"},   {"00ff", "00FF"},     {"80", "0x80"},       {"0100", "01:00"},
        {"7f", "7F"},       {"1", "01"},          {"00c0ffee", "00:C0:FF:EE"},
    };
    auto root = test::make_root({.serial_hex = "01", .common_name = "Serial Root"});
    for (const auto& c : cases) {
        INFO(c.cert_serial << " typed as " << c.typed);
        auto typed = parse_serial(c.typed);
        REQUIRE(typed.ok());
        auto leaf = test::issue({.serial_hex = c.cert_serial, .common_name = "device"}, root);
        auto info = describe_certificate(leaf.cert.get());
        REQUIRE(info.ok());
        CHECK(info->serial == typed.value());
        CHECK(parse_serial(info->serial).value() == info->serial);
    }
}
