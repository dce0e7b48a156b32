#include "devcert/operations.hpp"

#include <array>
#include <cstdint>
#include <limits>

#include "devcert/serial.hpp"
#include "operation_call.hpp"

namespace devcert {

namespace {

// Value caps: serials at the reference's 128 bytes; PEM at the transport's
// 8 KiB value cap (a certificate with a 4096-bit RSA key is under 2 KiB).
constexpr std::size_t kMaxPem = 8192;
constexpr std::size_t kMaxName = 128;
// PageNo is capped so that (PageNo - 1) * PageSize stays far inside 32 bits.
constexpr std::uint64_t kMaxPageNo = 10'000'000;

constexpr ParamSpec kInstance{"MqttInstanceId", ParamKind::text, true, kMaxName, 0, 0,
                              "the broker instance (plugin_opt_instance_id)"};
constexpr ParamSpec kSn{"Sn", ParamKind::serial, true, kMaxSerialInput, 0, 0, "serial number of the CA certificate (hex)"};
constexpr ParamSpec kCaSn{"CaSn", ParamKind::serial, true, kMaxSerialInput, 0, 0,
                          "serial number of the issuing CA certificate (hex)"};
constexpr ParamSpec kDeviceSn{"DeviceSn", ParamKind::serial, true, kMaxSerialInput, 0, 0,
                              "serial number of the device certificate (hex)"};
constexpr ParamSpec kPageNo{"PageNo", ParamKind::integer, false, 8, 1, kMaxPageNo,
                            "page number, from 1 (or NextToken); deep pages cost their depth"};
constexpr ParamSpec kPageSize{"PageSize", ParamKind::integer, true, 3, 1, 100, "records per page, 1 to 100"};
// A token is a few hundred characters at most (a sealed store key).
constexpr ParamSpec kNextToken{"NextToken", ParamKind::text, false, 512, 0, 0,
                               "the NextToken of the previous page, instead of PageNo: continues after it"};

constexpr std::array kInstanceOnly{kInstance};
constexpr std::array kCaParams{kInstance, kSn};
constexpr std::array kDeviceParams{kInstance, kCaSn, kDeviceSn};
constexpr std::array kListParams{kInstance, kPageNo, kPageSize, kNextToken};
constexpr std::array kListByCaParams{kInstance, kCaSn, kPageNo, kPageSize, kNextToken};
constexpr std::array kRegisterCaParams{
    kInstance,
    ParamSpec{"CaName", ParamKind::text, true, kMaxName, 0, 0, "a name for the CA"},
    ParamSpec{"CaContent", ParamKind::pem, true, kMaxPem, 0, 0, "the CA certificate, PEM (basicConstraints CA:TRUE)"},
    ParamSpec{"VerificationContent", ParamKind::pem, true, kMaxPem, 0, 0,
              "a certificate signed by the CA whose subject CN is the register code, PEM"},
};
constexpr std::array kRegisterDeviceParams{
    kInstance,
    ParamSpec{"DeviceContent", ParamKind::pem, true, kMaxPem, 0, 0,
              "the device certificate, PEM, issued by a registered CA"},
    ParamSpec{"Status", ParamKind::status, false, 1, 0, 0, "\"1\" active (default) or \"0\" inactive"},
};
constexpr std::array kChangesParams{
    kInstance,
    ParamSpec{"SinceSeq", ParamKind::integer, false, 20, 0, std::numeric_limits<std::uint64_t>::max(),
              "list entries after this sequence number (default 0: from the oldest kept)"},
    ParamSpec{"PageSize", ParamKind::integer, false, 4, 1, 1000, "entries to return, 1 to 1000 (default 100)"},
};

constexpr std::array kOperations{
    Operation{"GetRegisterCode", "mq:GetRegisterCode", Access::read, get_register_code, kInstanceOnly,
              "show the code a CA verification certificate must carry as its Common Name"},
    Operation{"RegisterCaCertificate", "mq:RegisterCa", Access::write, register_ca_certificate, kRegisterCaParams,
              "register a CA certificate, proving possession of its key with a verification certificate"},
    Operation{"ActiveCaCertificate", "mq:ActiveCaCertificate", Access::write, active_ca_certificate, kCaParams,
              "activate a CA certificate: devices it issued may connect again"},
    Operation{"InactivateCaCertificate", "mq:UnregisterCaCertificate", Access::write, inactivate_ca_certificate,
              kCaParams, "inactivate a CA certificate: refuse and disconnect every device it issued"},
    Operation{"DeleteCaCertificate", "mq:DeleteCaCertificate", Access::write, delete_ca_certificate, kCaParams,
              "delete a CA certificate and every device certificate registered under it"},
    Operation{"GetCaCertificate", "mq:GetCaCertificate", Access::read, get_ca_certificate, kCaParams,
              "show one CA certificate"},
    Operation{"ListCaCertificate", "mq:ListCaCertificate", Access::read, list_ca_certificate, kListParams,
              "list CA certificates, one page at a time"},
    Operation{"ActiveDeviceCertificate", "mq:ActiveDeviceCertificate", Access::write, active_device_certificate,
              kDeviceParams, "activate a device certificate (a revoked one stays revoked)"},
    Operation{"InactivateDeviceCertificate", "mq:UnregisterDeviceCertificate", Access::write,
              inactivate_device_certificate, kDeviceParams,
              "inactivate a device certificate: refuse and disconnect its sessions"},
    Operation{"DeleteDeviceCertificate", "mq:DeleteDeviceCertificate", Access::write, delete_device_certificate,
              kDeviceParams,
              "delete a device certificate record (with auto-registration it comes back on its next connection; "
              "inactivate or revoke to block)"},
    Operation{"GetDeviceCertificate", "mq:GetDeviceCertificate", Access::read, get_device_certificate, kDeviceParams,
              "show one device certificate"},
    Operation{"ListDeviceCertificate", "mq:ListDeviceCertificate", Access::read, list_device_certificate, kListParams,
              "list device certificates, one page at a time"},
    Operation{"ListDeviceCertificateByCaSn", "mq:ListDeviceCertificateByCaSn", Access::read,
              list_device_certificate_by_ca_sn, kListByCaParams, "list the device certificates issued by one CA"},
    Operation{"RegisterDeviceCertificate", "mq:RegisterDeviceCertificate", Access::write, register_device_certificate,
              kRegisterDeviceParams, "register a device certificate before it first connects"},
    Operation{"RevokeDeviceCertificate", "mq:RevokeDeviceCertificate", Access::write, revoke_device_certificate,
              kDeviceParams, "revoke a device certificate for good: refused, disconnected, never registered again"},
    Operation{"ListCertificateChanges", "mq:ListCertificateChanges", Access::read, list_certificate_changes,
              kChangesParams, "list the change log: every registration, status change and removal"},
    Operation{"GetStats", "mq:GetStats", Access::read, get_stats, kInstanceOnly,
              "show the plugin's counters and the number of records and connected clients"},
};

}  // namespace

std::span<const Operation> operations() noexcept { return kOperations; }

const Operation* find_operation(std::string_view action) noexcept {
    for (const auto& op : kOperations) {
        if (op.name == action) return &op;
    }
    return nullptr;
}

const ParamSpec* find_param(const Operation& op, std::string_view name) noexcept {
    for (const auto& p : op.params) {
        if (p.name == name) return &p;
    }
    return nullptr;
}

}  // namespace devcert
