// The admin API's errors: one enum, one table mapping each to the reference's
// Code, HTTP status and Message (verbatim where the reference defines them).
//
// Codes beyond the reference, and why:
//   InvalidAction.NotFound (404)  unknown or missing Action, or a path other than "/"
//   Throttling.User (429)         over the per-uid rate limit; sent with Retry-After
//   CertificateRevoked (400)      activating or deleting a revoked device certificate
//   UnsupportedMediaType (415)    a body that is neither form-encoded nor JSON
//   MethodNotAllowed (405)        an HTTP method other than GET or POST
//   FleetUnavailable (503)        fleet mode: the fleet database cannot be reached, nothing changed
// Transport refusals that concern the parameters themselves (too many, a value
// too large, a malformed body) are ParameterFieldCheckFailed, 400, like any
// other bad parameter; a body over the size cap is ParameterFieldCheckFailed
// with HTTP 413 so that generic HTTP clients see what happened.
// SystemOverFlow is the hosted service's own overload signal; this project
// never sends it (throttling is Throttling.User), so it is not in the enum.
//
// Error bodies are {"RequestId","Code","Message"} as the reference, plus
// "Detail" (naming the parameter or reason) when there is one: an addition in
// the spirit of the hosted service's own extra "HostId".
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace devcert {

enum class ApiError : std::uint8_t {
    parameter_invalid,
    request_too_large,
    device_not_found,
    ca_not_found,
    instance_not_found,
    permission_denied,
    instance_permission_denied,
    register_code_error,
    register_code_used,
    certificate_content_error,
    sn_not_unique,
    ca_num_exceed,
    internal_error,
    action_not_found,
    throttled,
    certificate_revoked,
    unsupported_media_type,
    method_not_allowed,
    fleet_unavailable,
};

/// Every ApiError, in declaration order (tests walk it; the static_assert in
/// api_errors.cpp keeps it complete).
inline constexpr std::array<ApiError, 19> kAllApiErrors = {
    ApiError::parameter_invalid,  ApiError::request_too_large,          ApiError::device_not_found,
    ApiError::ca_not_found,       ApiError::instance_not_found,         ApiError::permission_denied,
    ApiError::instance_permission_denied, ApiError::register_code_error, ApiError::register_code_used,
    ApiError::certificate_content_error,  ApiError::sn_not_unique,      ApiError::ca_num_exceed,
    ApiError::internal_error,     ApiError::action_not_found,           ApiError::throttled,
    ApiError::certificate_revoked, ApiError::unsupported_media_type,    ApiError::method_not_allowed,
    ApiError::fleet_unavailable,
};

struct ApiErrorInfo {
    std::string_view code;     ///< e.g. "FindDeviceBySnError"
    int http_status = 500;
    std::string_view message;  ///< the reference's text
};

/// The one table. A switch without default: an unmapped value does not compile
/// warning-free.
ApiErrorInfo api_error_info(ApiError error) noexcept;

}  // namespace devcert
