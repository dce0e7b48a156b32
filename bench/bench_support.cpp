#include "bench_support.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace devcert::bench {

namespace {

constexpr const char* kCaller = "devcert_fill_store";
constexpr const char* kAction = "BenchFill";

}  // namespace

Result<CertificateInfo> describe_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(Errc::io_error, "cannot read '" + path + "'");
    const std::string pem{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    auto cert = parse_pem_certificate(pem);
    if (!cert) return make_error(Errc::invalid_argument, "'" + path + "': " + cert.error().message);
    auto info = describe_certificate(cert->get());
    if (!info) return make_error(Errc::invalid_argument, "'" + path + "': " + info.error().message);
    return std::move(*info);
}

Result<std::vector<std::string>> certificate_files(const std::string& dir) {
    std::error_code ec;
    std::vector<std::string> paths;
    for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().extension() == ".crt") paths.push_back(it->path().string());
    if (ec) return make_error(Errc::io_error, "cannot list '" + dir + "': " + ec.message());
    std::sort(paths.begin(), paths.end());
    return paths;
}

std::string synthetic_serial(std::uint64_t i) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "5a%014" PRIx64, static_cast<std::uint64_t>(i & 0x00ff'ffff'ffff'ffffu));
    return std::string(buf, 16);
}

std::uint64_t map_size_for(std::uint64_t records, bool small_records) {
    // A record with a PEM takes about 1 KB on disk (10M records: 9.8 GB,
    // change log included); twice that leaves room for LMDB's copy-on-write
    // pages. The map is address space, not memory.
    const std::uint64_t per_record = small_records ? 600 : 2400;
    return std::max<std::uint64_t>(64ull << 20, records * per_record);
}

Result<FillResult> fill_store(Store& store, const CertificateInfo& ca, const std::vector<CertificateInfo>& devices,
                              const FillPlan& plan, const std::function<void(std::uint64_t)>& progress) {
    const std::int64_t now = now_ms();
    auto prep = store.write([&](WriteView& w) -> Outcome {
        auto count = w.device_count();
        if (!count) return count.error();
        if (*count != 0)
            return make_error(Errc::already_exists,
                              "store '" + store.path() + "' already holds " + std::to_string(*count) + " devices");
        auto existing = w.get_ca(ca.serial);
        if (!existing) return existing.error();
        if (!*existing)
            if (auto ok = w.insert_ca(new_ca_record(ca, ca.common_name, RegisteredBy::import, now), "ImportCa", kCaller); !ok) return ok;
        for (const auto& d : devices)
            if (auto ok = w.insert_device(new_device_record(d, ca.serial, CertStatus::active, RegisteredBy::import, now), kAction, kCaller); !ok) return ok;
        return Ok{};
    });
    if (!prep) return prep.error();

    DeviceRecord rec = devices.empty() ? DeviceRecord{} : new_device_record(devices.front(), ca.serial, CertStatus::active, RegisteredBy::import, now);
    rec.ca_sn = ca.serial;
    rec.registered_by = RegisteredBy::import;
    if (plan.small_records) rec.content_pem.clear();
    FillResult result;
    for (std::uint64_t first = 0; first < plan.count; first += plan.batch) {
        const std::uint64_t last = std::min(plan.count, first + plan.batch);
        std::uint64_t batch_inactive = 0;
        auto ok = store.write([&](WriteView& w) -> Outcome {
            batch_inactive = 0;  // the store reruns the whole batch after growing the map
            for (std::uint64_t i = first; i < last; ++i) {
                rec.device_sn = synthetic_serial(i);
                rec.device_name = "synthetic-" + std::to_string(i);
                const bool off = plan.inactive_every != 0 && i % plan.inactive_every == 0;
                rec.status = off ? CertStatus::inactive : CertStatus::active;
                batch_inactive += off ? 1 : 0;
                rec.fingerprint.fill(0);
                std::memcpy(rec.fingerprint.data(), &i, sizeof i);  // distinct, never a real certificate's
                if (auto r = w.insert_device(rec, kAction, kCaller); !r) return r;
            }
            return Ok{};
        });
        if (!ok) return make_error(ok.error().code, "at record " + std::to_string(first) + ": " + ok.error().message);
        result.inactive += batch_inactive;
        result.synthetic = last;
        if (progress) progress(last);
    }
    return result;
}

}  // namespace devcert::bench
