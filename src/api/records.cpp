#include "records.hpp"

#include <string>

namespace devcert {

using nlohmann::json;

json ca_json(const CaRecord& ca) {
    return json{
        {"Sn", ca.sn},
        {"CaName", ca.name},
        {"CaContent", ca.content_pem},
        {"VerificationContent", ca.verification_pem},
        {"RegistrationCode", ca.registration_code},
        {"Status", status_string(ca.status)},
        {"ValidBegin", std::to_string(ca.valid_begin_ms)},
        {"ValidEnd", std::to_string(ca.valid_end_ms)},
        {"Fingerprint", to_hex(ca.fingerprint)},
        {"CreatedTime", std::to_string(ca.created_ms)},
        {"UpdateTime", std::to_string(ca.updated_ms)},
        {"LastStatusChangeTime", std::to_string(ca.status_changed_ms)},
        {"RegisteredBy", registered_by_string(ca.registered_by)},
    };
}

json device_json(const DeviceRecord& device, const OnlineRegistry* online) {
    return json{
        {"CaSn", device.ca_sn},
        {"DeviceSn", device.device_sn},
        {"DeviceName", device.device_name},
        {"DeviceContent", device.content_pem},
        {"Status", status_string(device.status)},
        {"ValidBegin", std::to_string(device.valid_begin_ms)},
        {"ValidEnd", std::to_string(device.valid_end_ms)},
        {"Fingerprint", to_hex(device.fingerprint)},
        {"CreatedTime", std::to_string(device.created_ms)},
        {"UpdateTime", std::to_string(device.updated_ms)},
        {"LastStatusChangeTime", std::to_string(device.status_changed_ms)},
        {"RegisteredBy", registered_by_string(device.registered_by)},
        {"Online", online != nullptr && online->online(device.ca_sn, device.device_sn)},
    };
}

json change_json(const ChangeEntry& change) {
    return json{
        {"Seq", std::to_string(change.seq)},
        {"Time", std::to_string(change.time_ms)},
        {"Action", change.action},
        {"CaSn", change.ca_sn},
        {"DeviceSn", change.device_sn},
        {"OldStatus", change.old_status ? status_string(*change.old_status) : ""},
        {"NewStatus", change.new_status ? status_string(*change.new_status) : ""},
        {"Caller", change.caller},
    };
}

}  // namespace devcert
