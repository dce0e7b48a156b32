// devcert_fill_store: fills a status store for the benchmarks with one CA,
// the real benchmark devices (active) and N synthetic device records under
// that CA, every tenth of them inactive, written through Store::write in
// large transactions.
//
//   devcert_fill_store --db DIR --ca ca.crt --devices DIR --count N
//
// Each synthetic record carries a real certificate's PEM by default, so
// records have their production size; --small-records leaves it empty.
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "bench_support.hpp"
#include "tool_args.hpp"
#include "devcert/store.hpp"

namespace {

using bench_args::die;
using bench_args::parse_number;

using Clock = std::chrono::steady_clock;

struct Options {
    std::string db;
    std::string ca;
    std::string devices;
    devcert::bench::FillPlan plan;
};

void usage() {
    std::puts(
        "usage: devcert_fill_store --db DIR --ca CA.crt [--devices DIR] --count N [options]\n"
        "  --db DIR            store directory (created; must not hold devices yet)\n"
        "  --ca FILE           the CA of every record, registered active as plugin_opt_import_ca would\n"
        "  --devices DIR       every *.crt in DIR is registered active (the devices that connect)\n"
        "  --count N           synthetic device records to add (0 to 100000000)\n"
        "  --batch N           records per write transaction (default 100000)\n"
        "  --inactive-every K  every K-th synthetic record is inactive (default 10, 0 = none)\n"
        "  --small-records     synthetic records without a certificate PEM");
}

Options parse_options(int argc, char** argv) {
    Options o;
    bool have_count = false;
    for (bench_args::Args args(argc, argv); args.next();) {
        const std::string_view a = args.flag();
        auto value = [&args] { return args.value(); };
        if (args.help()) {
            usage();
            std::exit(0);
        } else if (a == "--db") {
            o.db = value();
        } else if (a == "--ca") {
            o.ca = value();
        } else if (a == "--devices") {
            o.devices = value();
        } else if (a == "--count") {
            o.plan.count = parse_number(a, value(), 0, 100'000'000);
            have_count = true;
        } else if (a == "--batch") {
            o.plan.batch = parse_number(a, value(), 1, 10'000'000);
        } else if (a == "--inactive-every") {
            o.plan.inactive_every = static_cast<unsigned>(parse_number(a, value(), 0, 1'000'000));
        } else if (a == "--small-records") {
            o.plan.small_records = true;
        } else {
            die("unknown argument '" + std::string(a) + "' (see --help)");
        }
    }
    if (o.db.empty() || o.ca.empty() || !have_count) die("--db, --ca and --count are required (see --help)");
    return o;
}

}  // namespace

int main(int argc, char** argv) {
    namespace bench = devcert::bench;
    const Options o = parse_options(argc, argv);
    auto ca = bench::describe_file(o.ca);
    if (!ca) die(ca.error().message);
    if (!ca->is_ca) die("'" + o.ca + "' is not a CA certificate");

    std::vector<devcert::CertificateInfo> devices;
    if (!o.devices.empty()) {
        auto files = bench::certificate_files(o.devices);
        if (!files) die(files.error().message);
        for (const auto& f : *files) {
            auto d = bench::describe_file(f);
            if (!d) die(d.error().message);
            devices.push_back(std::move(*d));
        }
    }

    devcert::StoreOptions so;
    so.path = o.db;
    so.initial_map_size = bench::map_size_for(o.plan.count + devices.size(), o.plan.small_records);
    auto store = devcert::Store::open(so);
    if (!store) die(store.error().message);

    const auto t0 = Clock::now();
    auto filled = bench::fill_store(**store, *ca, devices, o.plan, [&](std::uint64_t done) {
        const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        std::fprintf(stderr, "\rdevcert_fill_store: %" PRIu64 " / %" PRIu64 " records, %.0f/s   ", done, o.plan.count,
                     static_cast<double>(done) / secs);
    });
    if (o.plan.count) std::fputc('\n', stderr);
    if (!filled) die(filled.error().message);
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    std::printf("devcert_fill_store: CaSn %s, %zu real devices, %" PRIu64 " synthetic (%" PRIu64
                " inactive) in %.1f s, map %.0f MB\n",
                ca->serial.c_str(), devices.size(), filled->synthetic, filled->inactive, secs,
                static_cast<double>((*store)->map_size()) / (1 << 20));
    return 0;
}
