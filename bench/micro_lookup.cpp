// Status lookups and the whole per-connection check, against the fixture's
// store (1M or 10M records with --db, a small temporary one otherwise).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bench_support.hpp"
#include "devcert/serial.hpp"
#include "micro_fixture.hpp"

namespace devcert::bench {
namespace {

using Clock = LatencySamples::Clock;

// Random synthetic serials, made before timing: the lookups then pay for
// the B-tree walk, not for formatting keys.
std::vector<std::string> random_serials(std::uint64_t count, std::size_t n) {
    std::vector<std::string> out;
    out.reserve(n);
    std::uint64_t x = 0x9e3779b97f4a7c15ull;
    for (std::size_t i = 0; i < n; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_back(synthetic_serial(count ? x % count : 0));
    }
    return out;
}

bool usable(benchmark::State& state, bool needs_devices) {
    MicroFixture* f = fixture();
    if (f == nullptr || !f->store) {
        state.SkipWithError("no store (see devcert_micro_bench --help)");
        return false;
    }
    if (needs_devices && f->devices.empty()) {
        state.SkipWithError("needs the benchmark certificates: --pki=DIR (bench/pki.sh)");
        return false;
    }
    if (!needs_devices && f->synthetic == 0) {
        state.SkipWithError("the store holds no synthetic records");
        return false;
    }
    return true;
}

// One random device record per operation: inside one long snapshot, or with
// a fresh snapshot per lookup (as the broker takes one per connection and
// releases it after), the renewal then inside the timed section.
void device_status_lookups(benchmark::State& state, bool renew_per_lookup) {
    if (!usable(state, false)) return;
    MicroFixture& f = *fixture();
    const auto keys = random_serials(f.synthetic, 1 << 16);
    StatusReader reader(*f.store);
    if (!renew_per_lookup) reader.refresh();
    LatencySamples samples;
    samples.reserve(1 << 20);
    std::size_t i = 0;
    DeviceStatusView view;
    for (auto _ : state) {
        const std::string& key = keys[i++ & 0xffff];
        const auto t0 = Clock::now();
        if (renew_per_lookup) reader.refresh();
        const Lookup r = reader.device_status(f.ca_sn, key, view);
        if (renew_per_lookup) reader.release();
        samples.add(Clock::now() - t0);
        if (r != Lookup::found) {
            state.SkipWithError("a synthetic record was not found");
            break;
        }
        benchmark::DoNotOptimize(view);
    }
    if (!renew_per_lookup) reader.release();
    samples.report(state);
    state.counters["records"] = static_cast<double>(f.synthetic);
}

void BM_DeviceStatus(benchmark::State& state) { device_status_lookups(state, false); }
void BM_DeviceStatusWithRenew(benchmark::State& state) { device_status_lookups(state, true); }

void BM_CaStatus(benchmark::State& state) {
    if (!usable(state, false)) return;
    MicroFixture& f = *fixture();
    StatusReader reader(*f.store);
    reader.refresh();
    CertStatus status = CertStatus::inactive;
    for (auto _ : state) {
        if (reader.ca_status(f.ca_sn, status) != Lookup::found) {
            state.SkipWithError("the CA was not found");
            break;
        }
        benchmark::DoNotOptimize(status);
    }
    reader.release();
}

// The broker thread's work for one certificate, step for step as the
// plugin's connection check does it for a registered device: canonical
// serial, fingerprint, snapshot, issuer candidates, device record, CA
// record, snapshot released. `pollute` random lookups between checks (not
// timed) push the device's pages out of the CPU caches, as the other
// devices connecting in between would at 1M or 10M records.
void connection_check(benchmark::State& state, int pollute) {
    if (!usable(state, true)) return;
    MicroFixture& f = *fixture();
    IssuerIndex issuers;
    issuers.add(f.ca_sn, f.ca_cert.get());
    const auto keys = random_serials(f.synthetic, 1 << 16);
    StatusReader reader(*f.store);
    StatusReader other(*f.store);
    LatencySamples samples;
    samples.reserve(1 << 20);
    std::size_t n = 0;
    std::size_t k = 0;
    for (auto _ : state) {
        X509* cert = f.devices[n++ % f.devices.size()].get();
        if (pollute > 0 && f.synthetic > 0) {
            other.refresh();
            DeviceStatusView junk;
            for (int p = 0; p < pollute; ++p) other.device_status(f.ca_sn, keys[k++ & 0xffff], junk);
            other.release();
        }
        const auto t0 = Clock::now();
        char serial[130];
        const std::size_t len = serial_from_asn1_into(X509_get0_serialNumber(cert), serial, sizeof serial);
        Sha256 fingerprint{};
        const bool have_fp = certificate_fingerprint(cert, fingerprint);
        bool accepted = false;
        if (len > 0 && have_fp && reader.refresh()) {
            const std::string* candidates[8];
            const std::size_t count = issuers.candidates(cert, candidates, 8);
            DeviceStatusView view;
            for (std::size_t i = 0; i < count; ++i) {
                if (reader.device_status(*candidates[i], std::string_view(serial, len), view) != Lookup::found)
                    continue;
                if (view.fingerprint != fingerprint || view.status != CertStatus::active) break;
                CertStatus ca_status = CertStatus::inactive;
                accepted = reader.ca_status(*candidates[i], ca_status) == Lookup::found &&
                           ca_status == CertStatus::active;
                break;
            }
            reader.release();
        }
        samples.add(Clock::now() - t0);
        if (!accepted) {
            state.SkipWithError("a benchmark device was not accepted: is the store filled from the same --pki?");
            break;
        }
    }
    samples.report(state);
    state.counters["records"] = static_cast<double>(f.synthetic + f.devices.size());
}

void BM_ConnectionCheck(benchmark::State& state) { connection_check(state, 0); }
void BM_ConnectionCheck_ColdCaches(benchmark::State& state) { connection_check(state, 16); }

BENCHMARK(BM_DeviceStatus);
BENCHMARK(BM_DeviceStatusWithRenew);
BENCHMARK(BM_CaStatus);
BENCHMARK(BM_ConnectionCheck);
BENCHMARK(BM_ConnectionCheck_ColdCaches);

}  // namespace
}  // namespace devcert::bench
