// Both directions (operator text and certificate ASN.1) end in the same
// canonical spelling, so a serial typed by an operator, one read from a
// certificate on connect and one stored as a key always compare equal as
// plain strings.
#include "devcert/serial.hpp"

#include <fmt/format.h>

#include <cstdint>

namespace devcert {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// A certificate serial's magnitude must fit the canonical text in
// kMaxSerialInput characters, so that every extracted serial can also be
// typed back in.
constexpr std::size_t kMaxSerialBytes = kMaxSerialInput / 2;

int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string printable(char c) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte >= 0x21 && byte < 0x7f) return fmt::format("'{}'", c);
    return fmt::format("byte 0x{:02x}", byte);
}

Error invalid(std::string message) {
    return make_error(Errc::invalid_argument, std::move(message));
}

enum class Asn1SerialProblem { none, missing, negative, zero, too_long };

// The magnitude of an ASN.1 INTEGER without leading zero bytes.
struct Magnitude {
    const unsigned char* data = nullptr;
    std::size_t size = 0;
    Asn1SerialProblem problem = Asn1SerialProblem::none;
};

Magnitude magnitude_of(const ASN1_INTEGER* serial) noexcept {
    Magnitude m;
    if (serial == nullptr) {
        m.problem = Asn1SerialProblem::missing;
        return m;
    }
    // OpenSSL keeps the sign in the type and the magnitude in the data.
    if (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) {
        m.problem = Asn1SerialProblem::negative;
        return m;
    }
    const unsigned char* data = ASN1_STRING_get0_data(serial);
    const int length = ASN1_STRING_length(serial);
    std::size_t size = length > 0 && data != nullptr ? static_cast<std::size_t>(length) : 0;
    while (size > 0 && *data == 0) {
        ++data;
        --size;
    }
    if (size == 0) {
        m.problem = Asn1SerialProblem::zero;
    } else if (size > kMaxSerialBytes) {
        m.problem = Asn1SerialProblem::too_long;
    } else {
        m.data = data;
        m.size = size;
    }
    return m;
}

}  // namespace

Result<std::string> parse_serial(std::string_view text) {
    if (text.empty()) return invalid("serial number is empty");
    if (text.size() > kMaxSerialInput) {
        return invalid(fmt::format("serial number is {} characters long; at most {} are allowed", text.size(),
                                   kMaxSerialInput));
    }

    std::size_t start = 0;
    if (text.size() >= 2 && text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) start = 2;
    if (start == text.size()) return invalid("serial number has no digits after '0x'");

    // Collect the digits while checking the separators: a ':' may only stand
    // between two complete byte pairs ("0a:1b"), never at an end, doubled, or
    // splitting a pair.
    std::string digits;
    digits.reserve(text.size());
    bool has_separator = false;
    std::size_t run = 0;  // digits since the last separator
    for (std::size_t i = start; i < text.size(); ++i) {
        const char c = text[i];
        if (c == ':') {
            if (run != 2) {
                return invalid(fmt::format(
                    "serial number has a misplaced ':' at position {}; separators go between byte pairs, as in 0a:1b",
                    i + 1));
            }
            has_separator = true;
            run = 0;
            continue;
        }
        const int value = hex_value(c);
        if (value < 0) {
            return invalid(
                fmt::format("serial number has a non-hexadecimal character {} at position {}", printable(c), i + 1));
        }
        digits.push_back(kHexDigits[value]);
        ++run;
        if (has_separator && run > 2) {
            return invalid(fmt::format(
                "serial number has a group of more than two digits at position {}; with ':' every byte is two digits",
                i + 1));
        }
    }
    if (run == 0) {
        return invalid("serial number ends with ':'; separators go between byte pairs, as in 0a:1b");
    }
    if (has_separator && run != 2) {
        return invalid("serial number's last group is not two digits; with ':' every byte is two digits");
    }

    const std::size_t first = digits.find_first_not_of('0');
    if (first == std::string::npos) return invalid("serial number is zero; certificate serials are positive");
    digits.erase(0, first);
    if (digits.size() % 2 != 0) digits.insert(digits.begin(), '0');
    return digits;
}

Result<std::string> serial_from_asn1(const ASN1_INTEGER* serial) {
    const Magnitude m = magnitude_of(serial);
    switch (m.problem) {
        case Asn1SerialProblem::none:
            break;
        case Asn1SerialProblem::missing:
            return invalid("certificate has no serial number");
        case Asn1SerialProblem::negative:
            return invalid("negative serial numbers are not supported");
        case Asn1SerialProblem::zero:
            return invalid("serial number is zero; certificate serials are positive");
        case Asn1SerialProblem::too_long:
            return invalid(fmt::format("serial number is longer than {} bytes", kMaxSerialBytes));
    }
    std::string out(m.size * 2, '\0');
    const std::size_t written = serial_from_asn1_into(serial, out.data(), out.size());
    out.resize(written);
    return out;
}

std::size_t serial_from_asn1_into(const ASN1_INTEGER* serial, char* out, std::size_t cap) noexcept {
    const Magnitude m = magnitude_of(serial);
    if (m.problem != Asn1SerialProblem::none || out == nullptr || cap < m.size * 2) return 0;
    for (std::size_t i = 0; i < m.size; ++i) {
        out[2 * i] = kHexDigits[m.data[i] >> 4];
        out[2 * i + 1] = kHexDigits[m.data[i] & 0x0f];
    }
    return m.size * 2;
}

}  // namespace devcert
