// What a handler gets and gives: the host's context and the validated
// parameters in; the response fields, or one API error, out.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "devcert/api.hpp"
#include "devcert/api_errors.hpp"
#include "devcert/operations.hpp"
#include "params.hpp"

namespace devcert {

struct OperationCall {
    OperationCall(const AdminContext& c, const Params& p, std::string who)
        : context(c), params(p), caller(std::move(who)) {}

    const AdminContext& context;
    const Params& params;
    std::string caller;  ///< change-log form of the caller

    nlohmann::json response = nlohmann::json::object();  ///< fields besides RequestId
    std::optional<ApiError> error;
    std::string detail;       ///< why, for the error body and the audit line
    std::string audit_extra;  ///< e.g. " sn=0a1b" for a record the call created

    void fail(ApiError e, std::string why = {}) {
        error = e;
        detail = std::move(why);
    }
};

/// Runs a mutation: through the host's RecordAccess when it has one (fleet
/// mode), else through the group-commit writer when it has one, otherwise
/// (devcertctl --db) directly on the store. Returns once durable.
Outcome commit(OperationCall& call, std::function<Outcome(WriteView&)> job);

/// Runs a read-only transaction.
Outcome read(OperationCall& call, const std::function<Outcome(ReadView&)>& fn);

/// Sets call's error from a store failure: FleetUnavailable for
/// Errc::unavailable (nothing changed), else InternalError, with the reason.
void fail_store(OperationCall& call, const Error& error);

/// Aborts a job's transaction for an API-level refusal, remembered in
/// `refusal`. Jobs reset `refusal` first: the store may run a job again from
/// scratch after growing its map.
Error refuse(std::optional<ApiError>& refusal, ApiError error);

/// Sets call's error after a commit: the job's refusal, else a store failure.
void finish(OperationCall& call, const Outcome& outcome, const std::optional<ApiError>& refusal);

/// The page asked for: PageSize with either PageNo or NextToken (exactly
/// one; otherwise call fails with ParameterFieldCheckFailed and nullopt).
std::optional<Page> requested_page(OperationCall& call);

/// Sets call's error from a failed list: a refused NextToken is
/// ParameterFieldCheckFailed, anything else a store failure.
void fail_list(OperationCall& call, const Error& error);

/// Data of a list response: the records under `list_field`, then PageNo
/// (when asked by number), PageSize, Total and, when records follow,
/// NextToken.
void respond_page(OperationCall& call, const Page& page, std::string_view list_field, nlohmann::json items,
                  std::uint64_t total, const std::string& next);

// Handlers: one per operation, referenced from the operations table.
void get_register_code(OperationCall& call);
void register_ca_certificate(OperationCall& call);
void active_ca_certificate(OperationCall& call);
void inactivate_ca_certificate(OperationCall& call);
void delete_ca_certificate(OperationCall& call);
void get_ca_certificate(OperationCall& call);
void list_ca_certificate(OperationCall& call);
void active_device_certificate(OperationCall& call);
void inactivate_device_certificate(OperationCall& call);
void delete_device_certificate(OperationCall& call);
void get_device_certificate(OperationCall& call);
void list_device_certificate(OperationCall& call);
void list_device_certificate_by_ca_sn(OperationCall& call);
void register_device_certificate(OperationCall& call);
void revoke_device_certificate(OperationCall& call);
void list_certificate_changes(OperationCall& call);
void get_stats(OperationCall& call);

}  // namespace devcert
