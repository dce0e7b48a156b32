// What the store filler and the microbenchmarks share: the benchmark
// certificates read from a pki.sh directory, and the synthetic device
// records written in large transactions.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "devcert/certificate.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"

namespace devcert::bench {

/// Reads one PEM certificate file and describes it; Errc::invalid_argument
/// or Errc::io_error naming the file.
Result<CertificateInfo> describe_file(const std::string& path);

/// Every NAME.crt in `dir`, sorted by name.
Result<std::vector<std::string>> certificate_files(const std::string& dir);

/// Serial of synthetic device i: 0x5a || i (7 big-endian bytes), always 16
/// hex digits, so key order is insertion order. pki.sh devices use 0x0d......
/// and the CRLs 0x7b..., so the ranges never meet.
std::string synthetic_serial(std::uint64_t i);

struct FillPlan {
    std::uint64_t count = 0;          ///< synthetic records
    std::uint64_t batch = 100'000;    ///< records per write transaction
    unsigned inactive_every = 10;     ///< every K-th synthetic record inactive (0: none)
    bool small_records = false;       ///< synthetic records without a PEM
};

struct FillResult {
    std::uint64_t synthetic = 0;
    std::uint64_t inactive = 0;
};

/// Registers `ca` active (unless stored already), every device in `devices`
/// active, then plan.count synthetic records under the CA. Refuses a store
/// that already holds devices. `progress(done)` runs after each batch.
Result<FillResult> fill_store(Store& store, const CertificateInfo& ca, const std::vector<CertificateInfo>& devices,
                              const FillPlan& plan, const std::function<void(std::uint64_t)>& progress);

/// Map size that holds `records` without growing (a growth reruns a batch).
std::uint64_t map_size_for(std::uint64_t records, bool small_records);

}  // namespace devcert::bench
