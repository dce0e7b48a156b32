// devcert_loadgen: a bounded MQTT-over-TLS connection load generator for the
// benchmarks. Every connection is a full TLS 1.3 handshake (no resumption)
// with a client certificate taken round-robin, an MQTT CONNECT with a unique
// client id and clean session, the CONNACK read and its code counted, a
// DISCONNECT and a close. Traffic goes to loopback only.
//
// One epoll loop per thread drives non-blocking sockets; each loop keeps its
// share of the requested concurrency in flight until the connection budget or
// the time limit is spent.
#include <arpa/inet.h>
#include <csignal>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mqtt_tls_client.hpp"
#include "tool_args.hpp"

namespace {

using bench_args::die;
using bench_args::parse_number;
using bench_args::parse_seconds;
using namespace bench_client;

using Clock = std::chrono::steady_clock;

struct Options {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8883;
    std::string ca_file;                 // verify the server with it when set
    std::vector<std::string> cert_dirs;  // *.crt next to *.key
    std::string cert_list;               // lines "cert.pem key.pem"
    std::uint64_t connections = 1000;
    unsigned concurrency = 16;
    unsigned threads = 1;
    double time_limit_s = 60;
    double connect_timeout_s = 10;
    int mqtt_version = 4;  // 4 = 3.1.1, 5 = 5.0
    std::string client_id_prefix = "lg";
    bool json = false;
};

void usage() {
    std::puts(
        "usage: devcert_loadgen --port N (--certs DIR | --cert-list FILE) [options]\n"
        "  --host ADDR          loopback IPv4 address (default 127.0.0.1; nothing else is allowed)\n"
        "  --port N             TLS listener port\n"
        "  --ca FILE            verify the server certificate against this CA (default: no check)\n"
        "  --certs DIR          client identities: every NAME.crt with a NAME.key beside it (repeatable)\n"
        "  --cert-list FILE     client identities: lines 'CERT KEY'\n"
        "  -n, --connections N  connections to make (default 1000)\n"
        "  -c, --concurrency N  connections in flight (default 16)\n"
        "  --threads N          event loops (default 1)\n"
        "  --time-limit S       stop starting connections after S seconds (default 60; SIGTERM or\n"
        "                       SIGINT stops them too, and the report follows as at the limit)\n"
        "  --timeout S          give up on one connection after S seconds (default 10)\n"
        "  --mqtt 3|5           MQTT 3.1.1 or 5 (default 3)\n"
        "  --client-id-prefix P client ids are P-<pid>-<n> (default lg)\n"
        "  --json               print one JSON line instead of text");
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (bench_args::Args args(argc, argv); args.next();) {
        const std::string_view a = args.flag();
        auto value = [&args] { return args.value(); };
        if (args.help()) {
            usage();
            std::exit(0);
        } else if (a == "--host") {
            o.host = value();
        } else if (a == "--port") {
            o.port = static_cast<std::uint16_t>(parse_number(a, value(), 1, 65535));
        } else if (a == "--ca") {
            o.ca_file = value();
        } else if (a == "--certs") {
            o.cert_dirs.emplace_back(value());
        } else if (a == "--cert-list") {
            o.cert_list = value();
        } else if (a == "-n" || a == "--connections") {
            o.connections = parse_number(a, value(), 1, 1'000'000'000);
        } else if (a == "-c" || a == "--concurrency") {
            o.concurrency = static_cast<unsigned>(parse_number(a, value(), 1, 10'000));
        } else if (a == "--threads") {
            o.threads = static_cast<unsigned>(parse_number(a, value(), 1, 64));
        } else if (a == "--time-limit") {
            o.time_limit_s = parse_seconds(a, value());
        } else if (a == "--timeout") {
            o.connect_timeout_s = parse_seconds(a, value());
        } else if (a == "--mqtt") {
            o.mqtt_version = parse_mqtt_version(value());
        } else if (a == "--client-id-prefix") {
            o.client_id_prefix = parse_client_id_prefix(value());
        } else if (a == "--json") {
            o.json = true;
        } else {
            die("unknown argument '" + std::string(a) + "' (see --help)");
        }
    }
    if (o.cert_dirs.empty() && o.cert_list.empty()) die("no client identities: give --certs DIR or --cert-list FILE");
    if (o.threads > o.concurrency) o.threads = o.concurrency;
    return o;
}

const std::string kDisconnect("\xe0\x00", 2);

// ---------------------------------------------------------------- results

struct Stats {
    std::uint64_t started = 0;
    std::uint64_t accepted = 0;
    std::map<int, std::uint64_t> refused;             // CONNACK code -> count
    std::uint64_t tls_failures = 0;
    std::map<std::string, std::uint64_t> tls_reasons;  // OpenSSL reason -> count
    std::uint64_t tcp_failures = 0;                   // connect refused or reset before TLS
    std::uint64_t closed_before_connack = 0;
    std::uint64_t protocol_errors = 0;                // malformed CONNACK
    std::uint64_t timeouts = 0;
    std::vector<double> latencies_ms;                 // connect start -> CONNACK

    void merge(Stats& o) {
        started += o.started;
        accepted += o.accepted;
        for (auto& [k, v] : o.refused) refused[k] += v;
        tls_failures += o.tls_failures;
        for (auto& [k, v] : o.tls_reasons) tls_reasons[k] += v;
        tcp_failures += o.tcp_failures;
        closed_before_connack += o.closed_before_connack;
        protocol_errors += o.protocol_errors;
        timeouts += o.timeouts;
        latencies_ms.insert(latencies_ms.end(), o.latencies_ms.begin(), o.latencies_ms.end());
    }
    std::uint64_t finished() const {
        std::uint64_t r = 0;
        for (const auto& [k, v] : refused) r += v;
        return accepted + r + tls_failures + tcp_failures + closed_before_connack + protocol_errors + timeouts;
    }
};

// ---------------------------------------------------------------- connections

enum class Phase : std::uint8_t { tcp_connect, handshake, send_connect, read_connack, send_disconnect };

struct Conn {
    UniqueFd fd;
    SslPtr ssl;
    Phase phase = Phase::tcp_connect;
    Clock::time_point started;
    std::string out;        // bytes still to write in the current phase
    std::size_t out_off = 0;
    unsigned char in[64];   // CONNACK bytes read so far
    std::size_t in_len = 0;
    std::uint32_t events = 0;  // current epoll interest
};

// Set by SIGTERM and SIGINT: start no more connections, finish those in
// flight and report, as at the time limit. A benchmark stops a background
// load this way and still gets its counts.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void on_stop_signal(int) { g_stop.store(true, std::memory_order_relaxed); }

class Worker {
public:
    Worker(const Options& o, SSL_CTX* ctx, const std::vector<Identity>& ids, std::atomic<std::uint64_t>& next,
           Clock::time_point deadline, unsigned slots)
        : o_(o), ctx_(ctx), ids_(ids), next_(next), deadline_(deadline), slots_(slots) {
        epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
        if (!epoll_) die(std::string("epoll_create1: ") + std::strerror(errno));
        addr_.sin_family = AF_INET;
        addr_.sin_port = htons(o.port);
        if (inet_pton(AF_INET, o.host.c_str(), &addr_.sin_addr) != 1) die("--host: not an IPv4 address: " + o.host);
        if ((ntohl(addr_.sin_addr.s_addr) >> 24) != 127) die("--host: only loopback (127.0.0.0/8) is allowed");
    }

    void run() {
        conns_.resize(slots_);
        for (std::size_t i = 0; i < conns_.size(); ++i) free_.push_back(i);
        refill();
        epoll_event events[64];
        while (active_ > 0) {
            const int n = epoll_wait(epoll_.get(), events, 64, 50);
            if (n < 0 && errno != EINTR) die(std::string("epoll_wait: ") + std::strerror(errno));
            for (int i = 0; i < n; ++i) advance(events[i].data.u64);
            expire();
            refill();
        }
    }

    Stats stats;

private:
    // Starts connections in free slots until the budget or the time is spent.
    // A loop, not recursion from finish(): a port that refuses at once would
    // otherwise nest one call per connection.
    void refill() {
        while (!free_.empty()) {
            if (Clock::now() >= deadline_ || g_stop.load(std::memory_order_relaxed)) return;
            if (next_.load(std::memory_order_relaxed) >= o_.connections) return;
            const std::size_t slot = free_.back();
            free_.pop_back();
            start(slot);
        }
    }

    void start(std::size_t slot) {
        Conn& c = conns_[slot];
        const std::uint64_t n = next_.fetch_add(1, std::memory_order_relaxed);
        if (n >= o_.connections) return;
        ++stats.started;
        ++active_;
        c = Conn{};
        c.started = Clock::now();
        char client_id[64];
        std::snprintf(client_id, sizeof client_id, "%s-%d-%llu", o_.client_id_prefix.c_str(), static_cast<int>(getpid()),
                      static_cast<unsigned long long>(n));
        c.out = connect_packet(o_.mqtt_version, 60, client_id);
        const Started started = start_connection(ctx_, ids_[n % ids_.size()], addr_, c.fd, c.ssl);
        if (started == Started::failed) {
            finish(slot, Outcome::tcp_failure);
            return;
        }
        if (started == Started::connected) c.phase = Phase::handshake;
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = slot;
        c.events = EPOLLOUT;
        if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.fd.get(), &ev) != 0)
            die(std::string("epoll_ctl: ") + std::strerror(errno));
    }

    enum class Outcome : std::uint8_t { accepted, refused, tls_failure, tcp_failure, closed, protocol_error, timeout };

    void finish(std::size_t slot, Outcome outcome, int code = 0) {
        Conn& c = conns_[slot];
        switch (outcome) {
            case Outcome::accepted: ++stats.accepted; break;
            case Outcome::refused: ++stats.refused[code]; break;
            case Outcome::tls_failure: {
                ++stats.tls_failures;
                const unsigned long e = ERR_peek_last_error();
                const char* reason = e ? ERR_reason_error_string(e) : nullptr;
                ++stats.tls_reasons[reason ? reason : "connection closed during handshake"];
                break;
            }
            case Outcome::tcp_failure: ++stats.tcp_failures; break;
            case Outcome::closed: ++stats.closed_before_connack; break;
            case Outcome::protocol_error: ++stats.protocol_errors; break;
            case Outcome::timeout: ++stats.timeouts; break;
        }
        ERR_clear_error();
        c.ssl.reset();
        c.fd.reset();  // closing removes it from the epoll set
        --active_;
        free_.push_back(slot);
    }

    void want(std::size_t slot, std::uint32_t events) {
        Conn& c = conns_[slot];
        if (c.events == events) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = slot;
        c.events = events;
        epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, c.fd.get(), &ev);
    }

    // Maps an OpenSSL failure: true when the caller should wait for I/O.
    bool wait_for_io(std::size_t slot, int ret) {
        const int err = SSL_get_error(conns_[slot].ssl.get(), ret);
        if (err == SSL_ERROR_WANT_READ) {
            want(slot, EPOLLIN);
            return true;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            want(slot, EPOLLOUT);
            return true;
        }
        return false;
    }

    void advance(std::size_t slot) {
        Conn& c = conns_[slot];
        if (!c.fd) return;
        for (;;) {
            switch (c.phase) {
                case Phase::tcp_connect: {
                    if (!connect_succeeded(c.fd.get())) return finish(slot, Outcome::tcp_failure);
                    c.phase = Phase::handshake;
                    break;
                }
                case Phase::handshake: {
                    const int r = SSL_connect(c.ssl.get());
                    if (r != 1) {
                        if (wait_for_io(slot, r)) return;
                        return finish(slot, Outcome::tls_failure);
                    }
                    c.phase = Phase::send_connect;
                    break;
                }
                case Phase::send_connect:
                case Phase::send_disconnect: {
                    const int r = SSL_write(c.ssl.get(), c.out.data() + c.out_off, static_cast<int>(c.out.size() - c.out_off));
                    if (r <= 0) {
                        if (wait_for_io(slot, r)) return;
                        if (c.phase == Phase::send_disconnect) return finish(slot, Outcome::accepted);
                        return finish(slot, Outcome::tls_failure);
                    }
                    c.out_off += static_cast<std::size_t>(r);
                    if (c.out_off < c.out.size()) break;
                    if (c.phase == Phase::send_disconnect) return finish(slot, Outcome::accepted);
                    c.phase = Phase::read_connack;
                    break;
                }
                case Phase::read_connack: {
                    const int r = SSL_read(c.ssl.get(), c.in + c.in_len, static_cast<int>(sizeof c.in - c.in_len));
                    if (r <= 0) {
                        if (wait_for_io(slot, r)) return;
                        // With TLS 1.3 the server judges the client certificate
                        // after the client's handshake is done: a refusal
                        // arrives here as an alert.
                        const int err = SSL_get_error(c.ssl.get(), r);
                        if (err == SSL_ERROR_SSL && ERR_peek_last_error() != 0)
                            return finish(slot, Outcome::tls_failure);
                        return finish(slot, Outcome::closed);
                    }
                    c.in_len += static_cast<std::size_t>(r);
                    if (c.in_len < 2) break;
                    if (c.in[0] != 0x20) return finish(slot, Outcome::protocol_error);
                    const std::size_t need = 2 + c.in[1];
                    if (c.in[1] < 2 || need > sizeof c.in) return finish(slot, Outcome::protocol_error);
                    if (c.in_len < need) break;
                    const int code = c.in[3];
                    stats.latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - c.started).count());
                    if (code != 0) return finish(slot, Outcome::refused, code);
                    c.phase = Phase::send_disconnect;
                    c.out = kDisconnect;
                    c.out_off = 0;
                    break;
                }
            }
        }
    }

    void expire() {
        const auto now = Clock::now();
        const auto limit = std::chrono::duration<double>(o_.connect_timeout_s);
        for (std::size_t i = 0; i < conns_.size(); ++i)
            if (conns_[i].fd && now - conns_[i].started > limit) finish(i, Outcome::timeout);
    }

    const Options& o_;
    SSL_CTX* ctx_;
    const std::vector<Identity>& ids_;
    std::atomic<std::uint64_t>& next_;
    Clock::time_point deadline_;
    unsigned slots_;
    UniqueFd epoll_;
    sockaddr_in addr_{};
    std::vector<Conn> conns_;
    std::vector<std::size_t> free_;
    std::size_t active_ = 0;
};

double percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    const double rank = p / 100.0 * static_cast<double>(sorted.size() - 1);
    const auto lo = static_cast<std::size_t>(rank);
    const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - static_cast<double>(lo));
}

std::string json_escape(std::string_view s) {
    std::string r;
    for (const char ch : s) {
        if (ch == '"' || ch == '\\') r.push_back('\\');
        if (static_cast<unsigned char>(ch) < 0x20) continue;
        r.push_back(ch);
    }
    return r;
}

void report(const Options& o, Stats& s, double seconds) {
    std::sort(s.latencies_ms.begin(), s.latencies_ms.end());
    const double rate = seconds > 0 ? static_cast<double>(s.finished()) / seconds : 0;
    const double p50 = percentile(s.latencies_ms, 50);
    const double p90 = percentile(s.latencies_ms, 90);
    const double p99 = percentile(s.latencies_ms, 99);
    if (o.json) {
        std::string refused;
        for (const auto& [k, v] : s.refused)
            refused += (refused.empty() ? "" : ",") + ("\"" + std::to_string(k) + "\":" + std::to_string(v));
        std::string reasons;
        for (const auto& [k, v] : s.tls_reasons)
            reasons += (reasons.empty() ? "" : ",") + ("\"" + json_escape(k) + "\":" + std::to_string(v));
        std::printf(
            "{\"connections\":%llu,\"seconds\":%.4f,\"connections_per_s\":%.2f,\"accepted\":%llu,"
            "\"refused\":{%s},\"tls_failures\":%llu,\"tls_failure_reasons\":{%s},\"tcp_failures\":%llu,"
            "\"closed_before_connack\":%llu,\"protocol_errors\":%llu,\"timeouts\":%llu,"
            "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
            "\"concurrency\":%u,\"mqtt\":%d}\n",
            static_cast<unsigned long long>(s.finished()), seconds, rate, static_cast<unsigned long long>(s.accepted),
            refused.c_str(), static_cast<unsigned long long>(s.tls_failures), reasons.c_str(),
            static_cast<unsigned long long>(s.tcp_failures), static_cast<unsigned long long>(s.closed_before_connack),
            static_cast<unsigned long long>(s.protocol_errors), static_cast<unsigned long long>(s.timeouts), p50, p90,
            p99, s.latencies_ms.empty() ? 0.0 : s.latencies_ms.back(), o.concurrency,
            o.mqtt_version == 5 ? 5 : 3);
        return;
    }
    std::printf("connections:       %llu in %.3f s = %.1f/s (concurrency %u, MQTT %s, TLS 1.3)\n",
                static_cast<unsigned long long>(s.finished()), seconds, rate, o.concurrency,
                o.mqtt_version == 5 ? "5" : "3.1.1");
    std::printf("accepted:          %llu\n", static_cast<unsigned long long>(s.accepted));
    for (const auto& [k, v] : s.refused)
        std::printf("refused, code %d:  %llu\n", k, static_cast<unsigned long long>(v));
    std::printf("TLS failures:      %llu\n", static_cast<unsigned long long>(s.tls_failures));
    for (const auto& [k, v] : s.tls_reasons)
        std::printf("  %s: %llu\n", k.c_str(), static_cast<unsigned long long>(v));
    if (s.tcp_failures) std::printf("TCP failures:      %llu\n", static_cast<unsigned long long>(s.tcp_failures));
    if (s.closed_before_connack)
        std::printf("closed, no CONNACK: %llu\n", static_cast<unsigned long long>(s.closed_before_connack));
    if (s.protocol_errors) std::printf("bad CONNACK:       %llu\n", static_cast<unsigned long long>(s.protocol_errors));
    if (s.timeouts) std::printf("timeouts:          %llu\n", static_cast<unsigned long long>(s.timeouts));
    std::printf("connect->CONNACK:  p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n", p50, p90, p99);
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    const std::vector<Identity> ids = load_identities(o.cert_dirs, o.cert_list);
    SslCtxPtr ctx = make_client_ctx(o.ca_file, false);

    std::atomic<std::uint64_t> next{0};
    const auto t0 = Clock::now();
    const auto deadline = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.time_limit_s));
    std::vector<std::unique_ptr<Worker>> workers;
    for (unsigned t = 0; t < o.threads; ++t) {
        const unsigned slots = o.concurrency / o.threads + (t < o.concurrency % o.threads ? 1 : 0);
        workers.push_back(std::make_unique<Worker>(o, ctx.get(), ids, next, deadline, slots));
    }
    std::vector<std::thread> threads;
    for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
    for (auto& t : threads) t.join();
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

    Stats total;
    for (auto& w : workers) total.merge(w->stats);
    report(o, total, seconds);
    // Exit status says whether the run happened, not whether connections were
    // accepted: refusals are a legitimate measurement.
    return total.finished() == 0 ? 1 : 0;
}
