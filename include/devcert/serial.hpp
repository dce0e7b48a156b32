// The one canonical serial-number form: lowercase hex of the magnitude,
// leading zero bytes removed, an even number of digits ("0a1b", "7f", "0100").
// Used for store keys, API input and output, logs and certificate extraction.
#pragma once

#include <openssl/asn1.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "devcert/result.hpp"

namespace devcert {

/// Longest serial text accepted on input (the reference's 128-byte cap).
inline constexpr std::size_t kMaxSerialInput = 128;

/// Parses operator / API input: upper or lower case, optional "0x" prefix,
/// optional ':' between bytes ("0A:1B"), leading zeros. Rejects empty input,
/// non-hex characters, misplaced separators, more than kMaxSerialInput
/// characters and the value zero, each with a reason naming the problem.
Result<std::string> parse_serial(std::string_view text);

/// Canonical form of a certificate's serial. Negative serials are refused
/// ("negative serial numbers are not supported"), as is zero.
Result<std::string> serial_from_asn1(const ASN1_INTEGER* serial);

/// Writes the canonical form of a certificate serial into `out` (capacity
/// `cap`, no terminator) without allocating; returns the length or 0 when the
/// serial is negative, zero or does not fit. For the connection path.
std::size_t serial_from_asn1_into(const ASN1_INTEGER* serial, char* out, std::size_t cap) noexcept;

}  // namespace devcert
