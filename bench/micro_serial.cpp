// Canonical serial parsing: what every admin call and every log line pays.
#include <benchmark/benchmark.h>

#include <openssl/bn.h>

#include <string>

#include "devcert/handles.hpp"
#include "devcert/serial.hpp"

namespace {

void parse(benchmark::State& state, const std::string& text) {
    for (auto _ : state) {
        auto r = devcert::parse_serial(text);
        if (!r) state.SkipWithError(r.error().message.c_str());
        benchmark::DoNotOptimize(r);
    }
}

void BM_ParseSerial_Canonical(benchmark::State& state) { parse(state, "0d00002a"); }
void BM_ParseSerial_UpperColons0x(benchmark::State& state) { parse(state, "0x0D:00:00:2A"); }
void BM_ParseSerial_20Bytes(benchmark::State& state) { parse(state, "00:7F:3A:91:0C:55:E2:10:AB:CD:EF:01:23:45:67:89:9A:BC:DE:F0"); }

void BM_ParseSerial_Rejected(benchmark::State& state) {
    for (auto _ : state) {
        auto r = devcert::parse_serial("0x0D:0G");
        benchmark::DoNotOptimize(r);
    }
}

// The connection path's form: ASN.1 integer to canonical text, no allocation.
void BM_SerialFromAsn1Into(benchmark::State& state) {
    devcert::BignumPtr bn;
    BIGNUM* raw = nullptr;
    BN_hex2bn(&raw, "7F3A910C55E210ABCDEF0123456789");
    bn.reset(raw);
    devcert::Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
    char out[130];
    for (auto _ : state) {
        const std::size_t n = devcert::serial_from_asn1_into(serial.get(), out, sizeof out);
        benchmark::DoNotOptimize(n);
        benchmark::DoNotOptimize(out);
    }
}

BENCHMARK(BM_ParseSerial_Canonical);
BENCHMARK(BM_ParseSerial_UpperColons0x);
BENCHMARK(BM_ParseSerial_20Bytes);
BENCHMARK(BM_ParseSerial_Rejected);
BENCHMARK(BM_SerialFromAsn1Into);

}  // namespace
