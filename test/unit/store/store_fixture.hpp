// Shared pieces of the store tests: a private temporary directory per test
// and records filled with recognisable bytes (no certificates needed).
#pragma once

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "devcert/store.hpp"
#include "temp_dir.hpp"

namespace devcert::test {

inline Sha256 filled_fingerprint(std::uint8_t seed) {
    Sha256 f{};
    for (std::size_t i = 0; i < f.size(); ++i) f[i] = static_cast<std::uint8_t>(seed + i);
    return f;
}

inline CaRecord make_ca(const std::string& sn, CertStatus status = CertStatus::active) {
    CaRecord ca;
    ca.sn = sn;
    ca.name = "ca " + sn;
    ca.content_pem = "-----BEGIN CERTIFICATE-----\nca-" + sn + "\n-----END CERTIFICATE-----\n";
    ca.verification_pem = "verification-" + sn;
    ca.registration_code = "code-" + sn;
    ca.status = status;
    ca.valid_begin_ms = 1'600'000'000'000;
    ca.valid_end_ms = 2'600'000'000'000;
    ca.created_ms = ca.updated_ms = ca.status_changed_ms = 1'700'000'000'000;
    ca.registered_by = RegisteredBy::api;
    ca.subject_key_id = "ski-" + sn;
    ca.fingerprint = filled_fingerprint(0x40);
    return ca;
}

inline DeviceRecord make_device(const std::string& ca_sn, const std::string& sn,
                                CertStatus status = CertStatus::active, std::size_t pem_size = 64) {
    DeviceRecord d;
    d.ca_sn = ca_sn;
    d.device_sn = sn;
    d.device_name = "device " + sn;
    d.content_pem = std::string(pem_size, 'p');
    d.status = status;
    d.valid_begin_ms = 1'600'000'000'000;
    d.valid_end_ms = 2'600'000'000'000;
    d.created_ms = d.updated_ms = d.status_changed_ms = 1'700'000'000'000;
    d.registered_by = RegisteredBy::connection;
    d.fingerprint = filled_fingerprint(static_cast<std::uint8_t>(sn.size()));
    return d;
}

/// Serial text for the n-th test device: even-length lowercase hex, sorted
/// like n.
inline std::string serial_for(std::uint64_t n) { return fmt::format("{:08x}", n); }

inline std::unique_ptr<Store> open_store(const std::string& path, std::uint64_t map_size = 8ull << 20,
                                         std::uint64_t retention = 1'000'000) {
    StoreOptions options;
    options.path = path;
    options.initial_map_size = map_size;
    options.change_log_retention = retention;
    auto store = Store::open(options);
    if (!store) FAIL(store.error().message);
    return std::move(*store);
}

/// Runs fn in a write transaction and requires it to commit.
template <class Fn>
void must_write(Store& store, Fn&& fn) {
    const Outcome out = store.write([&](WriteView& view) -> Outcome { return fn(view); });
    if (!out) FAIL(out.error().message);
}

/// Runs fn in a read transaction and requires it to succeed.
template <class Fn>
void must_read(Store& store, Fn&& fn) {
    const Outcome out = store.read([&](ReadView& view) -> Outcome {
        fn(view);
        return Ok{};
    });
    if (!out) FAIL(out.error().message);
}

/// What a reader sees of a store's records (the first 100 CAs and
/// devices): to compare two stores, or a replica with its fleet.
struct Records {
    std::uint64_t ca_count = 0;
    std::uint64_t device_count = 0;
    std::vector<CaRecord> cas;
    std::vector<DeviceRecord> devices;
};

inline Outcome read_records(ReadView& v, Records& out) {
    auto cas = v.ca_count();
    if (!cas) return cas.error();
    out.ca_count = *cas;
    auto devices = v.device_count();
    if (!devices) return devices.error();
    out.device_count = *devices;
    auto ca_list = v.list_cas(Page(1, 100));
    if (!ca_list) return ca_list.error();
    out.cas = ca_list->items;
    auto device_list = v.list_devices(Page(1, 100));
    if (!device_list) return device_list.error();
    out.devices = device_list->items;
    return Ok{};
}

/// The same counts, and the same records in the same order with the same
/// serials, statuses, counts, key ids, PEMs and time stamps of change.
inline void require_same_records(const Records& a, const Records& b) {
    CHECK(a.ca_count == b.ca_count);
    CHECK(a.device_count == b.device_count);
    REQUIRE(a.cas.size() == b.cas.size());
    for (std::size_t i = 0; i < a.cas.size(); ++i) {
        CHECK(a.cas[i].sn == b.cas[i].sn);
        CHECK(a.cas[i].status == b.cas[i].status);
        CHECK(a.cas[i].device_count == b.cas[i].device_count);
        CHECK(a.cas[i].subject_key_id == b.cas[i].subject_key_id);
        CHECK(a.cas[i].updated_ms == b.cas[i].updated_ms);
    }
    REQUIRE(a.devices.size() == b.devices.size());
    for (std::size_t i = 0; i < a.devices.size(); ++i) {
        CHECK(a.devices[i].ca_sn == b.devices[i].ca_sn);
        CHECK(a.devices[i].device_sn == b.devices[i].device_sn);
        CHECK(a.devices[i].status == b.devices[i].status);
        CHECK(a.devices[i].content_pem == b.devices[i].content_pem);
        CHECK(a.devices[i].status_changed_ms == b.devices[i].status_changed_ms);
    }
}

}  // namespace devcert::test
