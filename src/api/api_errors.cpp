#include "devcert/api_errors.hpp"

namespace devcert {

static_assert(static_cast<std::size_t>(ApiError::fleet_unavailable) + 1 == kAllApiErrors.size(),
              "kAllApiErrors must list every ApiError");

ApiErrorInfo api_error_info(ApiError error) noexcept {
    switch (error) {
        case ApiError::parameter_invalid:
            return {"ParameterFieldCheckFailed", 400,
                    "Failed to validate the parameters. The parameters may be missing or invalid."};
        case ApiError::request_too_large:
            return {"ParameterFieldCheckFailed", 413,
                    "Failed to validate the parameters. The parameters may be missing or invalid."};
        case ApiError::device_not_found:
            return {"FindDeviceBySnError", 500, "Failed to find the device certificate by the SN. Please check sn is valid"};
        case ApiError::ca_not_found:
            return {"FindCaBySnError", 500, "Failed to find the CA by the SN. Please check sn is valid."};
        case ApiError::instance_not_found:
            return {"MqttInstanceNotFound", 500, "Specified instance is not found"};
        case ApiError::permission_denied:
            return {"PermissionCheckFailed", 403, "Failed to verify API permissions."};
        case ApiError::instance_permission_denied:
            return {"MqttOwnerCheckError", 403, "Failed to validate the instance permission"};
        case ApiError::register_code_error:
            return {"RegisterCodeError", 400, "Register code error in verification certificate."};
        case ApiError::register_code_used:
            return {"RegisterCodeUsed", 401, "Register code has been used."};
        case ApiError::certificate_content_error:
            return {"CertificateContentError", 401,
                    "Certificate content error, please check ca/verification certificate content. BasicConstraints "
                    "extension should be set to true in CA certificate."};
        case ApiError::sn_not_unique:
            return {"SnNotUnique", 401, "Sn is not unique in global."};
        case ApiError::ca_num_exceed:
            return {"CaNumExceed", 401, "CA certificate num exceed."};
        case ApiError::internal_error:
            return {"InternalError", 500, "An error occurred while processing your request. Try again later."};
        case ApiError::action_not_found:
            return {"InvalidAction.NotFound", 404, "Specified api is not found, please check your url and method."};
        case ApiError::throttled:
            return {"Throttling.User", 429, "Request was denied due to user flow control."};
        case ApiError::certificate_revoked:
            return {"CertificateRevoked", 400, "The certificate is revoked; its status can no longer be changed."};
        case ApiError::unsupported_media_type:
            return {"UnsupportedMediaType", 415,
                    "The request body must be application/x-www-form-urlencoded or application/json."};
        case ApiError::method_not_allowed:
            return {"MethodNotAllowed", 405, "Only GET and POST are supported."};
        case ApiError::fleet_unavailable:
            return {"FleetUnavailable", 503,
                    "The fleet database cannot be reached; nothing was changed. Try again later."};
    }
    return {"InternalError", 500, "An error occurred while processing your request. Try again later."};
}

}  // namespace devcert
