#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>

#include "devcert/api_errors.hpp"

using namespace devcert;

TEST_CASE("kAllApiErrors lists every error once, in declaration order", "[api][errors]") {
    for (std::size_t i = 0; i < kAllApiErrors.size(); ++i) {
        CHECK(static_cast<std::size_t>(kAllApiErrors[i]) == i);
    }
}

TEST_CASE("every api error maps to a code, an HTTP status and a message", "[api][errors]") {
    const std::set<int> statuses{400, 401, 403, 404, 405, 413, 415, 429, 500, 503};
    std::set<std::pair<std::string, int>> seen;
    for (ApiError e : kAllApiErrors) {
        const ApiErrorInfo info = api_error_info(e);
        INFO("error #" << static_cast<int>(e) << " " << info.code);
        CHECK_FALSE(info.code.empty());
        CHECK_FALSE(info.message.empty());
        CHECK(statuses.count(info.http_status) == 1);
        // Two entries may share a code (ParameterFieldCheckFailed as 400 and
        // 413) but never both code and status: each entry means something.
        CHECK(seen.insert({std::string(info.code), info.http_status}).second);
    }
}

TEST_CASE("the reference's error codes keep its HTTP statuses and messages verbatim", "[api][errors]") {
    struct Expected {
        ApiError error;
        const char* code;
        int status;
        const char* message;
    };
    const Expected expected[] = {
        {ApiError::parameter_invalid, "ParameterFieldCheckFailed", 400,
         "Failed to validate the parameters. The parameters may be missing or invalid."},
        {ApiError::device_not_found, "FindDeviceBySnError", 500,
         "Failed to find the device certificate by the SN. Please check sn is valid"},
        {ApiError::ca_not_found, "FindCaBySnError", 500, "Failed to find the CA by the SN. Please check sn is valid."},
        {ApiError::instance_not_found, "MqttInstanceNotFound", 500, "Specified instance is not found"},
        {ApiError::permission_denied, "PermissionCheckFailed", 403, "Failed to verify API permissions."},
        {ApiError::instance_permission_denied, "MqttOwnerCheckError", 403, "Failed to validate the instance permission"},
        {ApiError::register_code_error, "RegisterCodeError", 400, "Register code error in verification certificate."},
        {ApiError::register_code_used, "RegisterCodeUsed", 401, "Register code has been used."},
        {ApiError::certificate_content_error, "CertificateContentError", 401,
         "Certificate content error, please check ca/verification certificate content. BasicConstraints extension "
         "should be set to true in CA certificate."},
        {ApiError::sn_not_unique, "SnNotUnique", 401, "Sn is not unique in global."},
        {ApiError::ca_num_exceed, "CaNumExceed", 401, "CA certificate num exceed."},
        {ApiError::internal_error, "InternalError", 500,
         "An error occurred while processing your request. Try again later."},
    };
    for (const auto& e : expected) {
        const auto info = api_error_info(e.error);
        CHECK(info.code == e.code);
        CHECK(info.http_status == e.status);
        CHECK(info.message == e.message);
    }
}

TEST_CASE("the codes beyond the reference have the statuses the issues name", "[api][errors]") {
    CHECK(api_error_info(ApiError::action_not_found).code == "InvalidAction.NotFound");
    CHECK(api_error_info(ApiError::action_not_found).http_status == 404);
    CHECK(api_error_info(ApiError::throttled).code == "Throttling.User");
    CHECK(api_error_info(ApiError::throttled).http_status == 429);
    CHECK(api_error_info(ApiError::certificate_revoked).code == "CertificateRevoked");
    CHECK(api_error_info(ApiError::certificate_revoked).http_status == 400);
    CHECK(api_error_info(ApiError::request_too_large).code == "ParameterFieldCheckFailed");
    CHECK(api_error_info(ApiError::request_too_large).http_status == 413);
    CHECK(api_error_info(ApiError::unsupported_media_type).http_status == 415);
    CHECK(api_error_info(ApiError::method_not_allowed).http_status == 405);
    CHECK(api_error_info(ApiError::fleet_unavailable).code == "FleetUnavailable");
    CHECK(api_error_info(ApiError::fleet_unavailable).http_status == 503);
}
