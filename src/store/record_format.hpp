// On-disk layout of the store's values. Every record value starts with a
// fixed header whose first two bytes are a magic and a layout version, so
// the connection path reads a status (and a device's fingerprint) at fixed
// offsets without decoding the rest, and a future layout can be told apart.
//
//   device: 'D' ver status registered_by reserved[4] fingerprint[32] | body
//           (the PEM lives in its own database under the same key, so the
//           tree the connection path walks stays small and dense)
//   ca:     'C' ver status registered_by reserved[4] device_count:u64 fingerprint[32] | body
//   change: 'L' ver old_status new_status reserved[4] time_ms:i64 | body
//
// Integers are little-endian; the body is a sequence of i64 times and
// u32-length-prefixed strings. Status bytes 0xff in a change entry mean
// "no record" (inserted / removed). Change-log keys are big-endian u64 so
// LMDB's byte order is numeric order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "devcert/certificate.hpp"
#include "devcert/store.hpp"

namespace devcert::store_format {

/// Schema of the environment as a whole (named databases and their keys);
/// stored as decimal text under kSchemaVersionKey in the metadata database.
inline constexpr unsigned kSchemaVersion = 1;
inline constexpr const char* kSchemaVersionKey = "schema_version";

inline constexpr const char* kCaDb = "cas";
inline constexpr const char* kDeviceDb = "devices";
inline constexpr const char* kDevicePemDb = "device_pem";
inline constexpr const char* kSkiDb = "ca_by_ski";
inline constexpr const char* kChangeDb = "changes";
inline constexpr const char* kMetaDb = "meta";
/// A fleet replica's registration queue (created by every open, empty
/// unless the store is a replica): device key -> order:u64be + record, and
/// order:u64be -> device key.
inline constexpr const char* kQueueDb = "fleet_queue";
inline constexpr const char* kQueueOrderDb = "fleet_queue_order";

/// Metadata keys under this prefix belong to the store (counts, next seq).
inline constexpr std::string_view kReservedMetaPrefix = "store.";
inline constexpr const char* kNextSeqKey = "store.next_seq";
/// The random key that seals the lists' continuation tokens (raw bytes).
inline constexpr const char* kPageTokenKey = "store.page_token_key";
/// Prefix of the marker of a CA whose deletion began (key + CA serial).
inline constexpr std::string_view kDeletingCaPrefix = "store.deleting_ca.";
/// The change-log retention the store was last opened with (decimal).
inline constexpr const char* kRetentionKey = "store.change_log_retention";
inline constexpr const char* kCaCountKey = "store.ca_count";
inline constexpr const char* kDeviceCountKey = "store.device_count";
/// A fleet replica's position: epoch (text), seq and digest (decimal).
inline constexpr const char* kFleetEpochKey = "store.fleet.epoch";
inline constexpr const char* kFleetSeqKey = "store.fleet.seq";
inline constexpr const char* kFleetDigestKey = "store.fleet.digest";
/// The next order number of the registration queue (decimal).
inline constexpr const char* kQueueNextKey = "store.fleet.queue_next";

inline constexpr std::uint8_t kLayoutVersion = 1;
inline constexpr std::uint8_t kDeviceMagic = 'D';
inline constexpr std::uint8_t kCaMagic = 'C';
inline constexpr std::uint8_t kChangeMagic = 'L';
inline constexpr std::uint8_t kNoStatus = 0xff;

inline constexpr std::size_t kStatusOffset = 2;
inline constexpr std::size_t kRegisteredByOffset = 3;
inline constexpr std::size_t kDeviceFingerprintOffset = 8;
inline constexpr std::size_t kDeviceHeaderSize = 8 + 32;
inline constexpr std::size_t kCaDeviceCountOffset = 8;
inline constexpr std::size_t kCaFingerprintOffset = 16;
inline constexpr std::size_t kCaHeaderSize = 16 + 32;
inline constexpr std::size_t kChangeHeaderSize = 16;
/// Offsets of updated_ms and status_changed_ms after a record's header (the
/// body starts valid_begin, valid_end, created, updated, status_changed), so
/// a status change patches bytes instead of re-encoding the record.
inline constexpr std::size_t kBodyUpdatedOffset = 24;
inline constexpr std::size_t kBodyStatusChangedOffset = 32;

/// Longest serial the store keys on (the API's input cap).
inline constexpr std::size_t kMaxSerial = 128;
/// Device key: ca_sn '\0' device_sn; a CA's devices are contiguous and ordered.
inline constexpr std::size_t kMaxDeviceKey = kMaxSerial + 1 + kMaxSerial;

/// Index keys must fit LMDB's key limit (511 bytes); real SKIs are 20 bytes.
inline constexpr std::size_t kMaxSubjectKeyId = 255;
inline constexpr std::size_t kMaxMetaKey = 255;

inline bool valid_status_byte(std::uint8_t b) noexcept { return b <= 2; }

inline bool has_header(const void* data, std::size_t size, std::uint8_t magic, std::size_t header_size) noexcept {
    if (size < header_size) return false;
    const auto* p = static_cast<const std::uint8_t*>(data);
    return p[0] == magic && p[1] == kLayoutVersion && valid_status_byte(p[kStatusOffset]);
}

inline void put_u64(std::uint8_t* p, std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
inline std::uint64_t get_u64(const std::uint8_t* p) noexcept {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

/// Change-log key for a sequence number.
inline void seq_key(std::uint64_t seq, std::uint8_t (&out)[8]) noexcept {
    for (int i = 0; i < 8; ++i) out[i] = static_cast<std::uint8_t>(seq >> (8 * (7 - i)));
}
inline std::uint64_t seq_from_key(const void* data, std::size_t size) noexcept {
    if (size != 8) return 0;
    const auto* p = static_cast<const std::uint8_t*>(data);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
    return v;
}

/// Checks a serial used as a key part: 1..kMaxSerial bytes, no NUL (which
/// separates the parts of a device key).
inline bool valid_key_serial(std::string_view sn) noexcept {
    return !sn.empty() && sn.size() <= kMaxSerial && sn.find('\0') == std::string_view::npos;
}

/// Builds a device key into `out`; returns its length, 0 if a serial is
/// not a valid key part. No allocation: used on the connection path.
inline std::size_t device_key(std::string_view ca_sn, std::string_view device_sn, char (&out)[kMaxDeviceKey]) noexcept {
    if (!valid_key_serial(ca_sn) || !valid_key_serial(device_sn)) return 0;
    std::memcpy(out, ca_sn.data(), ca_sn.size());
    out[ca_sn.size()] = '\0';
    std::memcpy(out + ca_sn.size() + 1, device_sn.data(), device_sn.size());
    return ca_sn.size() + 1 + device_sn.size();
}

/// Encodes everything but content_pem (stored apart, see above).
std::string encode_device(const DeviceRecord& rec);
/// Decodes a device value (key parts supplied by the caller; content_pem is
/// left alone); false if the value is truncated or of another layout.
bool decode_device(std::string_view value, std::string_view ca_sn, std::string_view device_sn, DeviceRecord& out);

std::string encode_ca(const CaRecord& rec);
bool decode_ca(std::string_view value, std::string_view sn, CaRecord& out);

std::string encode_change(const ChangeEntry& entry);
bool decode_change(std::string_view value, std::uint64_t seq, ChangeEntry& out);

}  // namespace devcert::store_format
