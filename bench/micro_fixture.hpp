// The store and certificates the microbenchmarks share, set up once per
// process from devcert_micro_bench's own flags (see micro_main.cpp).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "devcert/certificate.hpp"
#include "devcert/handles.hpp"
#include "devcert/store.hpp"

namespace devcert::bench {

struct MicroFixture {
    std::unique_ptr<Store> store;
    std::uint64_t synthetic = 0;        ///< synthetic records under the CA (serials 0..synthetic-1)
    std::string ca_sn;
    X509Ptr ca_cert;
    std::vector<X509Ptr> devices;       ///< real certificates stored active
    std::string temp_dir;               ///< removed at exit when we made it
};

/// Null until micro_main.cpp has set it up; lookups skip without it.
MicroFixture* fixture() noexcept;

/// Per-operation latencies for the p50/p99 counters: one clock read per
/// operation is ~20 ns, small against the microsecond operations it times.
class LatencySamples {
public:
    using Clock = std::chrono::steady_clock;
    void reserve(std::size_t n) { ns_.reserve(n); }
    void add(Clock::duration d) { ns_.push_back(static_cast<double>(std::chrono::nanoseconds(d).count())); }
    void report(benchmark::State& state) {
        if (ns_.empty()) return;
        std::sort(ns_.begin(), ns_.end());
        auto at = [&](double p) { return ns_[static_cast<std::size_t>(p * static_cast<double>(ns_.size() - 1))]; };
        state.counters["p50_ns"] = at(0.50);
        state.counters["p99_ns"] = at(0.99);
        state.counters["max_ns"] = ns_.back();
    }

private:
    std::vector<double> ns_;
};

}  // namespace devcert::bench
