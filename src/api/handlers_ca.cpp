// CA operations: register (with proof of key possession), status changes,
// removal, lookups.
#include <openssl/rand.h>
#include <openssl/x509.h>

#include <fmt/format.h>

#include <array>
#include <optional>

#include "devcert/certificate.hpp"
#include "operation_call.hpp"
#include "records.hpp"

namespace devcert {

namespace {

constexpr std::string_view kRegisterCodeKey = "register_code";

// Codes consumed by a registration are remembered under their own key, so
// that presenting one again is told apart from a wrong code.
std::string used_code_key(std::string_view code) { return fmt::format("register_code.used.{}", code); }

std::optional<std::string> fresh_register_code() {
    std::array<unsigned char, 16> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) return std::nullopt;
    return to_hex(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

void set_ca_status(OperationCall& call, CertStatus status, std::string_view action) {
    const std::string& sn = call.params.text("Sn");
    std::optional<ApiError> refusal;
    const auto outcome = commit(call, [&](WriteView& view) -> Outcome {
        refusal.reset();
        auto previous = view.set_ca_status(sn, status, action, call.caller);
        if (previous) return Ok{};
        if (previous.error().code == Errc::not_found) return refuse(refusal, ApiError::ca_not_found);
        if (previous.error().code == Errc::revoked) return refuse(refusal, ApiError::certificate_revoked);
        return previous.error();
    });
    finish(call, outcome, refusal);
    if (!call.error) call.response["Sn"] = sn;
}

}  // namespace

void get_register_code(OperationCall& call) {
    std::optional<std::string> code;
    auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto current = view.meta(kRegisterCodeKey);
        if (!current) return current.error();
        code = *current;
        return Ok{};
    });
    if (!outcome) return fail_store(call, outcome.error());
    if (!code) {
        // First use: create the code, unless a concurrent call just did.
        const auto candidate = fresh_register_code();
        if (!candidate) return call.fail(ApiError::internal_error, "no random bytes for a register code");
        outcome = commit(call, [&](WriteView& view) -> Outcome {
            auto current = view.meta(kRegisterCodeKey);
            if (!current) return current.error();
            if (*current) {
                code = *current;
                return Ok{};
            }
            code = *candidate;
            return view.set_meta(kRegisterCodeKey, *candidate);
        });
        if (!outcome) return fail_store(call, outcome.error());
    }
    call.response["RegisterCode"] = *code;
}

void register_ca_certificate(OperationCall& call) {
    auto ca_cert = parse_pem_certificate(call.params.text("CaContent"));
    if (!ca_cert) return call.fail(ApiError::certificate_content_error, "CaContent: " + ca_cert.error().message);
    auto ca = validate_ca_certificate(ca_cert->get());
    if (!ca) return call.fail(ApiError::certificate_content_error, "CaContent: " + ca.error().message);
    auto verification_cert = parse_pem_certificate(call.params.text("VerificationContent"));
    if (!verification_cert) {
        return call.fail(ApiError::certificate_content_error, "VerificationContent: " + verification_cert.error().message);
    }
    auto verification = describe_certificate(verification_cert->get());
    if (!verification) {
        return call.fail(ApiError::certificate_content_error, "VerificationContent: " + verification.error().message);
    }
    EVP_PKEY* ca_key = X509_get0_pubkey(ca_cert->get());
    if (ca_key == nullptr || X509_verify(verification_cert->get(), ca_key) != 1) {
        return call.fail(ApiError::register_code_error, "VerificationContent is not signed by the CA");
    }
    const std::string code = verification->common_name;
    // Issued codes are 32 characters; anything much longer cannot be one and
    // would not fit a metadata key.
    if (code.empty() || code.size() > 128) {
        return call.fail(ApiError::register_code_error, "VerificationContent: its Common Name is not a register code");
    }
    const auto next_code = fresh_register_code();
    if (!next_code) return call.fail(ApiError::internal_error, "no random bytes for a register code");

    CaRecord record = new_ca_record(*ca, call.params.text("CaName"), RegisteredBy::api, now_ms());
    record.verification_pem = verification->pem;
    record.registration_code = code;

    const unsigned max_ca = call.context.config->max_ca;
    std::optional<ApiError> refusal;
    const auto outcome = commit(call, [&](WriteView& view) -> Outcome {
        refusal.reset();
        auto current = view.meta(kRegisterCodeKey);
        if (!current) return current.error();
        if (!*current || **current != code) {
            auto used = view.meta(used_code_key(code));
            if (!used) return used.error();
            return refuse(refusal, *used ? ApiError::register_code_used : ApiError::register_code_error);
        }
        auto existing = view.get_ca(record.sn);
        if (!existing) return existing.error();
        if (*existing) return refuse(refusal, ApiError::sn_not_unique);
        auto count = view.ca_count();
        if (!count) return count.error();
        if (*count >= max_ca) return refuse(refusal, ApiError::ca_num_exceed);
        if (auto inserted = view.insert_ca(record, "RegisterCaCertificate", call.caller); !inserted) {
            if (inserted.error().code == Errc::already_exists) return refuse(refusal, ApiError::sn_not_unique);
            if (inserted.error().code == Errc::limit_exceeded) return refuse(refusal, ApiError::ca_num_exceed);
            return inserted.error();
        }
        if (auto marked = view.set_meta(used_code_key(code), record.sn); !marked) return marked.error();
        return view.set_meta(kRegisterCodeKey, *next_code);
    });
    finish(call, outcome, refusal);
    if (call.error) {
        if (*call.error == ApiError::ca_num_exceed) call.detail = fmt::format("plugin_opt_max_ca is {}", max_ca);
        return;
    }
    call.response["Sn"] = record.sn;
    call.audit_extra = fmt::format(" sn={}", record.sn);
}

void active_ca_certificate(OperationCall& call) { set_ca_status(call, CertStatus::active, "ActiveCaCertificate"); }

void inactivate_ca_certificate(OperationCall& call) {
    set_ca_status(call, CertStatus::inactive, "InactivateCaCertificate");
}

namespace {

// Devices go in commits of this many: each commit stays short (tens of
// milliseconds), so the writes queued meanwhile (inactivations,
// registrations) are committed in between, and no transaction grows with
// the CA (LMDB caps what one transaction may dirty: MDB_TXN_FULL).
constexpr std::uint64_t kDevicesPerCommit = 2'000;

}  // namespace

// The CA is marked and inactivated in the first commit: its devices are
// refused from then on. A deletion cut short (crash, restart) leaves the CA
// inactive and marked with some of its devices; calling again finishes it.
void delete_ca_certificate(OperationCall& call) {
    const std::string& sn = call.params.text("Sn");
    constexpr std::string_view action = "DeleteCaCertificate";
    std::optional<ApiError> refusal;
    auto step = [&](auto&& job) {
        const auto outcome = commit(call, [&](WriteView& view) -> Outcome {
            refusal.reset();
            Outcome out = job(view);
            if (!out && out.error().code == Errc::not_found) return refuse(refusal, ApiError::ca_not_found);
            return out;
        });
        finish(call, outcome, refusal);
        return !call.error;
    };
    if (!step([&](WriteView& view) { return view.begin_ca_deletion(sn, action, call.caller); })) return;
    std::uint64_t devices_removed = 0;
    for (std::uint64_t removed = kDevicesPerCommit; removed == kDevicesPerCommit;) {
        const bool ok = step([&](WriteView& view) -> Outcome {
            auto batch = view.delete_ca_devices(sn, kDevicesPerCommit, action, call.caller);
            if (!batch) return batch.error();
            removed = *batch;
            return Ok{};
        });
        if (!ok) return;
        devices_removed += removed;
    }
    // Nothing can have joined the CA meanwhile (it is marked), but delete_ca
    // would take any stragglers along in its own commit.
    std::uint64_t stragglers = 0;
    const bool removed_ca = step([&](WriteView& view) -> Outcome {
        auto last = view.delete_ca(sn, action, call.caller);
        if (!last) return last.error();
        stragglers = *last;
        return Ok{};
    });
    if (!removed_ca) return;
    devices_removed += stragglers;
    call.response["Sn"] = sn;
    call.audit_extra = fmt::format(" devices_removed={}", devices_removed);
}

void get_ca_certificate(OperationCall& call) {
    const std::string& sn = call.params.text("Sn");
    std::optional<CaRecord> record;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto found = view.get_ca(sn);
        if (!found) return found.error();
        record = std::move(*found);
        return Ok{};
    });
    if (!outcome) return fail_store(call, outcome.error());
    if (!record) return call.fail(ApiError::ca_not_found);
    call.response["Data"] = ca_json(*record);
}

void list_ca_certificate(OperationCall& call) {
    const auto page = requested_page(call);
    if (!page) return;
    PageResult<CaRecord> result;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto listed = view.list_cas(*page);
        if (!listed) return listed.error();
        result = std::move(*listed);
        return Ok{};
    });
    if (!outcome) return fail_list(call, outcome.error());
    auto items = nlohmann::json::array();
    for (const auto& ca : result.items) items.push_back(ca_json(ca));
    respond_page(call, *page, "CaCertificateVOS", std::move(items), result.total, result.next);
}

}  // namespace devcert
