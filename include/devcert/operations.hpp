// The one table of admin operations: name, permission, read/write, handler,
// parameters and help. The API dispatches through it; devcertctl builds its
// --help and its argument checks from it.
//
// Response conventions (the reference's, kept throughout):
// - every field of a certificate record is a string: Status "0"/"1"/"2",
//   ValidBegin/ValidEnd/CreatedTime/UpdateTime/LastStatusChangeTime as Unix
//   milliseconds; beyond the reference, devices carry "Online" as a JSON
//   boolean (a string "false" would read as true in most languages);
// - paging positions and counts in Data (PageNo, PageSize, Total) are JSON
//   numbers, as in the reference's SDK responses; parameters are strings;
// - ListCertificateChanges entries are records too (Seq, Time, OldStatus,
//   NewStatus are strings; a status is "" when the record did not exist or
//   was removed); NextSeq is a string because it is fed back as SinceSeq;
// - GetStats values are numbers.
// Parameters not listed for an operation are refused
// (ParameterFieldCheckFailed), so a misspelt name never silently falls back
// to a default.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "devcert/result.hpp"

namespace devcert {

enum class ParamKind : std::uint8_t {
    text,     ///< printable UTF-8, no control characters
    serial,   ///< anything parse_serial() accepts; canonical form afterwards
    pem,      ///< PEM text (printable ASCII and line breaks)
    integer,  ///< decimal digits within [min_value, max_value]
    status,   ///< "0" (inactive) or "1" (active)
};

struct ParamSpec {
    std::string_view name;
    ParamKind kind = ParamKind::text;
    bool required = true;
    std::size_t max_size = 128;     ///< bytes of the raw value
    std::uint64_t min_value = 0;    ///< integer only
    std::uint64_t max_value = 0;    ///< integer only
    std::string_view help;
};

enum class Access : std::uint8_t { read, write };

struct OperationCall;  // defined by the API implementation
using OperationHandler = void (*)(OperationCall&);

struct Operation {
    std::string_view name;        ///< the Action
    std::string_view permission;  ///< policy action, e.g. "mq:UnregisterDeviceCertificate"
    Access access = Access::read;
    OperationHandler handler = nullptr;
    std::span<const ParamSpec> params;
    std::string_view help;
};

/// Every operation, in a stable order (the reference's, then the additions).
std::span<const Operation> operations() noexcept;

/// The operation named exactly `action`, or nullptr.
const Operation* find_operation(std::string_view action) noexcept;

/// The parameter of `op` named exactly `name`, or nullptr.
const ParamSpec* find_param(const Operation& op, std::string_view name) noexcept;

/// Checks one value against its spec and returns its canonical text (the
/// canonical serial, the integer without leading zeros, other kinds as
/// given). Errc::invalid_argument with a reason naming the parameter.
Result<std::string> validate_param(const ParamSpec& spec, std::string_view value);

}  // namespace devcert
