// Device operations. Revoked is terminal: a revoked record can be neither
// activated nor deleted (deleting it would let the certificate register
// itself again on its next connection).
#include <fmt/format.h>

#include <optional>

#include "devcert/certificate.hpp"
#include "operation_call.hpp"
#include "records.hpp"

namespace devcert {

namespace {

struct DeviceKey {
    const std::string& ca_sn;
    const std::string& device_sn;
};

DeviceKey device_key(const OperationCall& call) {
    return {call.params.text("CaSn"), call.params.text("DeviceSn")};
}

// Mutations that first look at the record: `change` decides what to do with
// the current record and returns the outcome of doing it.
template <class Change>
void change_device(OperationCall& call, Change change) {
    const DeviceKey key = device_key(call);
    std::optional<ApiError> refusal;
    const auto outcome = commit(call, [&](WriteView& view) -> Outcome {
        refusal.reset();
        auto current = view.get_device(key.ca_sn, key.device_sn);
        if (!current) return current.error();
        if (!*current) return refuse(refusal, ApiError::device_not_found);
        return change(view, **current, refusal);
    });
    finish(call, outcome, refusal);
    if (!call.error) call.response["DeviceSn"] = key.device_sn;
}

Outcome set_status(WriteView& view, const DeviceRecord& record, CertStatus status, std::string_view action,
                   const std::string& caller, std::optional<ApiError>& refusal) {
    auto previous = view.set_device_status(record.ca_sn, record.device_sn, status, action, caller);
    if (previous) return Ok{};
    if (previous.error().code == Errc::revoked) return refuse(refusal, ApiError::certificate_revoked);
    if (previous.error().code == Errc::not_found) return refuse(refusal, ApiError::device_not_found);
    return previous.error();
}

// Every registered CA, for finding a certificate's issuer.
Result<IssuerIndex> registered_cas(OperationCall& call) {
    IssuerIndex index;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        index.clear();
        Page page{1, 100};
        for (;;) {
            auto listed = view.list_cas(page);
            if (!listed) return listed.error();
            for (const auto& ca : listed->items) {
                // A stored CA that no longer parses cannot issue anything.
                if (auto cert = parse_pem_certificate(ca.content_pem)) index.add(ca.sn, cert->get());
            }
            if (listed->next.empty()) return Ok{};
            page.after = std::move(listed->next);  // continue, not walk again from the start
        }
    });
    if (!outcome) return outcome.error();
    return index;
}

}  // namespace

void active_device_certificate(OperationCall& call) {
    change_device(call, [&](WriteView& view, const DeviceRecord& record, std::optional<ApiError>& refusal) {
        return set_status(view, record, CertStatus::active, "ActiveDeviceCertificate", call.caller, refusal);
    });
}

void inactivate_device_certificate(OperationCall& call) {
    change_device(call, [&](WriteView& view, const DeviceRecord& record, std::optional<ApiError>& refusal) -> Outcome {
        // Inactivating a revoked certificate succeeds and leaves it revoked:
        // the caller's intent (it must not connect) already holds.
        if (record.status == CertStatus::revoked) return Ok{};
        return set_status(view, record, CertStatus::inactive, "InactivateDeviceCertificate", call.caller, refusal);
    });
}

void revoke_device_certificate(OperationCall& call) {
    change_device(call, [&](WriteView& view, const DeviceRecord& record, std::optional<ApiError>& refusal) {
        return set_status(view, record, CertStatus::revoked, "RevokeDeviceCertificate", call.caller, refusal);
    });
}

void delete_device_certificate(OperationCall& call) {
    change_device(call, [&](WriteView& view, const DeviceRecord& record, std::optional<ApiError>& refusal) -> Outcome {
        if (record.status == CertStatus::revoked) return refuse(refusal, ApiError::certificate_revoked);
        auto removed = view.delete_device(record.ca_sn, record.device_sn, "DeleteDeviceCertificate", call.caller);
        if (!removed && removed.error().code == Errc::not_found) return refuse(refusal, ApiError::device_not_found);
        return removed;
    });
}

void get_device_certificate(OperationCall& call) {
    const DeviceKey key = device_key(call);
    std::optional<DeviceRecord> record;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto found = view.get_device(key.ca_sn, key.device_sn);
        if (!found) return found.error();
        record = std::move(*found);
        return Ok{};
    });
    if (!outcome) return fail_store(call, outcome.error());
    if (!record) return call.fail(ApiError::device_not_found);
    call.response["Data"] = device_json(*record, call.context.online);
}

namespace {

void respond_device_page(OperationCall& call, const Page& page, const PageResult<DeviceRecord>& result) {
    auto items = nlohmann::json::array();
    for (const auto& device : result.items) items.push_back(device_json(device, call.context.online));
    respond_page(call, page, "DeviceCertificateVOS", std::move(items), result.total, result.next);
}

}  // namespace

void list_device_certificate(OperationCall& call) {
    const auto page = requested_page(call);
    if (!page) return;
    PageResult<DeviceRecord> result;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto listed = view.list_devices(*page);
        if (!listed) return listed.error();
        result = std::move(*listed);
        return Ok{};
    });
    if (!outcome) return fail_list(call, outcome.error());
    respond_device_page(call, *page, result);
}

void list_device_certificate_by_ca_sn(OperationCall& call) {
    const auto page = requested_page(call);
    if (!page) return;
    const std::string& ca_sn = call.params.text("CaSn");
    PageResult<DeviceRecord> result;
    bool ca_missing = false;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto listed = view.list_devices_by_ca(ca_sn, *page);
        if (!listed) {
            if (listed.error().code != Errc::not_found) return listed.error();
            ca_missing = true;
            return Ok{};
        }
        result = std::move(*listed);
        return Ok{};
    });
    if (!outcome) return fail_list(call, outcome.error());
    if (ca_missing) return call.fail(ApiError::ca_not_found);
    respond_device_page(call, *page, result);
}

void register_device_certificate(OperationCall& call) {
    auto cert = parse_pem_certificate(call.params.text("DeviceContent"));
    if (!cert) return call.fail(ApiError::certificate_content_error, "DeviceContent: " + cert.error().message);
    auto info = describe_certificate(cert->get());
    if (!info) return call.fail(ApiError::certificate_content_error, "DeviceContent: " + info.error().message);
    if (info->is_ca) {
        return call.fail(ApiError::certificate_content_error, "DeviceContent: a CA certificate is not a device certificate");
    }
    auto index = registered_cas(call);
    if (!index) return fail_store(call, index.error());
    const std::string* issuer = index->find_issuer(cert->get());
    if (issuer == nullptr) return call.fail(ApiError::ca_not_found, "DeviceContent: no registered CA issued it");

    const auto* status = call.params.find("Status");
    const DeviceRecord record =
        new_device_record(*info, *issuer, (status != nullptr && *status == "0") ? CertStatus::inactive : CertStatus::active,
                          RegisteredBy::api, now_ms());

    std::optional<ApiError> refusal;
    const auto outcome = commit(call, [&](WriteView& view) -> Outcome {
        refusal.reset();
        auto inserted = view.insert_device(record, "RegisterDeviceCertificate", call.caller);
        if (inserted) return Ok{};
        if (inserted.error().code == Errc::already_exists) return refuse(refusal, ApiError::sn_not_unique);
        if (inserted.error().code == Errc::not_found) return refuse(refusal, ApiError::ca_not_found);
        return inserted;
    });
    finish(call, outcome, refusal);
    if (call.error) return;
    call.response["CaSn"] = record.ca_sn;
    call.response["DeviceSn"] = record.device_sn;
    call.audit_extra = fmt::format(" ca_sn={} device_sn={}", record.ca_sn, record.device_sn);
}

}  // namespace devcert
