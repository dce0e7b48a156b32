// devcert_delete_ca_bench: deletes a CA with many devices through the admin
// API (DeleteCaCertificate, as the broker's admin socket runs it) while
// this thread keeps doing what a busy broker does meanwhile: connection
// checks (a fresh snapshot per check) and admin writes on another CA
// (Inactivate/Activate in turn). Reports how long the deletion took, the
// worst and 99th-percentile check and write latency, and how many of each
// were served during it.
//
//   devcert_delete_ca_bench --db DIR --fill 1000000     # a new store, filled here
//   devcert_fill_store --db DIR --ca ca.crt --count 1000000 && devcert_delete_ca_bench --db DIR
//
// The CA deleted is the first CA of the store (or --sn); a synthetic CA
// with one device is added for the concurrent writes. --fill makes the
// store first: one synthetic CA with N device records of production size
// (a 700-byte PEM each).
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "devcert/api.hpp"
#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"
#include "tool_args.hpp"

namespace {

using bench_args::die;
using Clock = std::chrono::steady_clock;

constexpr const char* kOtherCa = "0b0b0b0b";
constexpr const char* kOtherDevice = "0d0d0d0d";

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Latencies {
    std::vector<double> samples;
    double worst() const { return samples.empty() ? 0 : *std::max_element(samples.begin(), samples.end()); }
    double p99() {
        if (samples.empty()) return 0;
        std::sort(samples.begin(), samples.end());
        return samples[std::min(samples.size() - 1, samples.size() * 99 / 100)];
    }
};

void usage() {
    std::puts(
        "usage: devcert_delete_ca_bench --db DIR [--sn SERIAL | --fill N]\n"
        "  --db DIR     a store filled by devcert_fill_store (the CA is deleted from it)\n"
        "  --sn SERIAL  the CA to delete (default: the first CA of the store)\n"
        "  --fill N     first create DIR with one CA and N device records (1 to 100000000)");
}

}  // namespace

int main(int argc, char** argv) {
    using namespace devcert;
    std::string db;
    std::string sn;
    std::uint64_t fill = 0;
    for (bench_args::Args args(argc, argv); args.next();) {
        if (args.help()) {
            usage();
            return 0;
        } else if (args.flag() == "--db") {
            db = args.value();
        } else if (args.flag() == "--sn") {
            sn = args.value();
        } else if (args.flag() == "--fill") {
            fill = bench_args::parse_number(args.flag(), args.value(), 1, 100'000'000);
        } else {
            die("unknown argument '" + std::string(args.flag()) + "' (see --help)");
        }
    }
    if (db.empty()) die("--db is required (see --help)");

    StoreOptions options;
    options.path = db;
    options.create = fill != 0;
    options.initial_map_size = 64ull << 20;
    auto store = Store::open(options);
    if (!store) die(store.error().message);
    if (fill != 0) {
        const auto t0 = Clock::now();
        const std::string pem(700, 'p');
        constexpr std::uint64_t kPerTxn = 100'000;
        for (std::uint64_t first = 0; first < fill; first += kPerTxn) {
            const Outcome filled = (*store)->write([&](WriteView& view) -> Outcome {
                if (first == 0) {
                    CaRecord ca;
                    ca.sn = "0a0a0a0a";
                    ca.name = "bench";
                    if (auto r = view.insert_ca(ca, "bench", "bench"); !r) return r;
                }
                for (std::uint64_t i = first; i < std::min(fill, first + kPerTxn); ++i) {
                    DeviceRecord d;
                    d.ca_sn = "0a0a0a0a";
                    d.device_sn = fmt::format("5a{:014x}", i);
                    d.content_pem = pem;
                    if (auto r = view.insert_device(d, "AutoRegister", "connection"); !r) return r;
                }
                return Ok{};
            });
            if (!filled) die(filled.error().message);
        }
        std::printf("devcert_delete_ca_bench: filled %" PRIu64 " devices in %.1f s\n", fill, ms(Clock::now() - t0) / 1000);
    }
    std::uint64_t devices = 0;
    const Outcome prepared = (*store)->write([&](WriteView& view) -> Outcome {
        if (sn.empty()) {
            auto cas = view.list_cas(Page{1, 1});
            if (!cas) return cas.error();
            if (cas->items.empty()) return make_error(Errc::not_found, "the store holds no CA");
            sn = cas->items.front().sn;
        }
        auto ca = view.get_ca(sn);
        if (!ca) return ca.error();
        if (!*ca) return make_error(Errc::not_found, "no CA " + sn);
        devices = (*ca)->device_count;
        if (auto other = view.get_ca(kOtherCa); other && !*other) {
            CaRecord rec;
            rec.sn = kOtherCa;
            rec.name = "bench";
            if (auto r = view.insert_ca(rec, "bench", "bench"); !r) return r;
            DeviceRecord d;
            d.ca_sn = kOtherCa;
            d.device_sn = kOtherDevice;
            if (auto r = view.insert_device(d, "bench", "bench"); !r) return r;
        }
        return Ok{};
    });
    if (!prepared) die(prepared.error().message);

    PluginConfig config;
    config.db_path = db;
    Counters counters;
    OnlineRegistry online;
    StoreWriter writer(**store, [] {});
    AdminContext context;
    context.store = store->get();
    context.writer = &writer;
    context.config = &config;
    context.counters = &counters;
    context.online = &online;
    auto api = Api::create(context);
    if (!api) die(api.error().message);
    (*api)->set_trust_all(true);
    const Caller caller = Caller::from_ids(::getuid(), ::getgid());
    auto call = [&](std::vector<std::pair<std::string, std::string>> params) {
        ApiRequest request;
        request.params = std::move(params);
        return (*api)->handle(caller, request);
    };

    std::atomic<bool> done{false};
    int delete_status = 0;
    const auto started = Clock::now();
    std::thread deleter([&] {
        delete_status = call({{"Action", "DeleteCaCertificate"}, {"MqttInstanceId", config.instance_id}, {"Sn", sn}})
                            .http_status;
        done = true;
    });
    StatusReader reader(**store);
    Latencies checks;
    Latencies writes;
    unsigned failed = 0;
    while (!done.load()) {
        const auto c = Clock::now();
        DeviceStatusView view;
        if (!reader.refresh() || reader.device_status(kOtherCa, kOtherDevice, view) != Lookup::found) ++failed;
        reader.release();
        checks.samples.push_back(ms(Clock::now() - c));
        const auto w = Clock::now();
        const char* action = writes.samples.size() % 2 ? "ActiveDeviceCertificate" : "InactivateDeviceCertificate";
        if (call({{"Action", action}, {"MqttInstanceId", config.instance_id}, {"CaSn", kOtherCa},
                  {"DeviceSn", kOtherDevice}})
                .http_status != 200)
            ++failed;
        writes.samples.push_back(ms(Clock::now() - w));
    }
    deleter.join();
    const double total = ms(Clock::now() - started);
    writer.stop();
    std::printf("devcert_delete_ca_bench: CaSn %s, %" PRIu64 " devices deleted in %.1f s (HTTP %d)\n", sn.c_str(),
                devices, total / 1000, delete_status);
    std::printf("  meanwhile: %zu checks (worst %.1f ms, p99 %.2f ms), %zu writes on another CA (worst %.1f ms, "
                "p99 %.1f ms), %u failed\n",
                checks.samples.size(), checks.worst(), checks.p99(), writes.samples.size(), writes.worst(),
                writes.p99(), failed);
    return delete_status == 200 && failed == 0 ? 0 : 1;
}
