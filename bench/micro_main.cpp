// devcert_micro_bench: Google Benchmark's main plus the fixture's own flags,
// taken out of argv before the library sees them.
//
//   devcert_micro_bench [--records=N] [--pki=DIR] [benchmark flags]
//       a temporary store with N synthetic records (default 10000) and, with
//       --pki, the CA and devices of a bench/pki.sh directory
//   devcert_micro_bench --db=DIR --pki=DIR [benchmark flags]
//       an existing store filled by devcert_fill_store from the same PKI
//       (how the 1M and 10M runs are made: filling takes minutes)
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include "micro_fixture.hpp"
#include "tool_args.hpp"

namespace devcert::bench {

namespace {
MicroFixture* g_fixture = nullptr;

using bench_args::die;

X509Ptr load_cert(const std::string& path) {
    auto info = describe_file(path);
    if (!info) die(info.error().message);
    auto cert = parse_pem_certificate(info->pem);
    if (!cert) die(cert.error().message);
    return std::move(*cert);
}

}  // namespace

MicroFixture* fixture() noexcept { return g_fixture; }

}  // namespace devcert::bench

int main(int argc, char** argv) {
    namespace bench = devcert::bench;
    std::uint64_t records = 10'000;
    std::string db;
    std::string pki;
    std::vector<char*> rest{argv[0]};
    for (int i = 1; i < argc; ++i) {
        const std::string_view a = argv[i];
        if (a.rfind("--records=", 0) == 0) {
            char* end = nullptr;
            const std::string v(a.substr(10));
            records = std::strtoull(v.c_str(), &end, 10);
            if (v.empty() || *end != '\0' || v[0] == '-' || records > 100'000'000)
                bench::die("--records: expected a whole number up to 100000000, got '" + v + "'");
        } else if (a.rfind("--db=", 0) == 0) {
            db = a.substr(5);
        } else if (a.rfind("--pki=", 0) == 0) {
            pki = a.substr(6);
        } else if (a == "--help" || a == "-h") {
            std::puts(
                "devcert_micro_bench [--records=N] [--pki=DIR] [benchmark flags]\n"
                "devcert_micro_bench --db=DIR --pki=DIR [benchmark flags]\n"
                "  --records=N  synthetic records in a temporary store (default 10000)\n"
                "  --db=DIR     use a store filled by devcert_fill_store instead\n"
                "  --pki=DIR    a bench/pki.sh directory: its CA and devices (the connection check needs it)\n"
                "p50/p99 per operation are the p50_ns / p99_ns counters.");
            benchmark::PrintDefaultHelp();
            return 0;
        } else {
            rest.push_back(argv[i]);
        }
    }
    int rest_argc = static_cast<int>(rest.size());
    rest.push_back(nullptr);
    benchmark::Initialize(&rest_argc, rest.data());
    if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 2;

    bench::MicroFixture f;
    devcert::CertificateInfo ca_info;
    std::vector<devcert::CertificateInfo> device_infos;
    if (!pki.empty()) {
        auto ca = bench::describe_file(pki + "/ca.crt");
        if (!ca) bench::die(ca.error().message);
        ca_info = std::move(*ca);
        f.ca_cert = bench::load_cert(pki + "/ca.crt");
        auto files = bench::certificate_files(pki + "/devices");
        if (!files) bench::die(files.error().message);
        for (const auto& path : *files) {
            auto d = bench::describe_file(path);
            if (!d) bench::die(d.error().message);
            device_infos.push_back(std::move(*d));
            f.devices.push_back(bench::load_cert(path));
        }
    } else {
        ca_info.serial = "0ca1";  // a record only: the lookups never read its certificate
        ca_info.common_name = "devcert bench CA";
    }
    f.ca_sn = ca_info.serial;

    devcert::StoreOptions so;
    so.create = db.empty();
    if (db.empty()) {
        char tmpl[] = "/tmp/devcert-micro-XXXXXX";
        if (mkdtemp(tmpl) == nullptr) bench::die(std::string("mkdtemp: ") + std::strerror(errno));
        f.temp_dir = tmpl;
        so.path = f.temp_dir + "/store";
        so.initial_map_size = bench::map_size_for(records, false);
    } else {
        so.path = db;
    }
    auto store = devcert::Store::open(so);
    if (!store) bench::die(store.error().message);
    f.store = std::move(*store);

    if (db.empty()) {
        bench::FillPlan plan;
        plan.count = records;
        auto filled = bench::fill_store(*f.store, ca_info, device_infos, plan, nullptr);
        if (!filled) bench::die(filled.error().message);
        f.synthetic = records;
    } else {
        std::uint64_t devices = 0;
        auto counted = f.store->read([&](devcert::ReadView& r) -> devcert::Outcome {
            auto n = r.device_count();
            if (!n) return n.error();
            devices = *n;
            return devcert::Ok{};
        });
        if (!counted) bench::die(counted.error().message);
        // fill_store numbers synthetic records from 0 after the real ones.
        f.synthetic = devices >= device_infos.size() ? devices - device_infos.size() : 0;
    }
    benchmark::AddCustomContext("records", std::to_string(f.synthetic));
    benchmark::AddCustomContext("store", so.path);

    bench::g_fixture = &f;
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    bench::g_fixture = nullptr;
    f.store.reset();
    if (!f.temp_dir.empty()) {
        std::error_code ec;
        std::filesystem::remove_all(f.temp_dir, ec);
    }
    return 0;
}
