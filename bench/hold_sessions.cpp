// devcert_hold_sessions: opens N MQTT-over-TLS sessions to a broker and
// holds them open, for the "many sessions, many changes" benchmark
// (bench/many_sessions.py). Every session is a full TLS 1.3 handshake with a
// client certificate taken round-robin, a CONNECT with a unique client id and
// clean session, and a CONNACK; then it stays, sending PINGREQ at half the
// keep-alive, and notes the moment the broker ends it (a DISCONNECT and its
// reason code, or a bare close), on CLOCK_MONOTONIC, the clock of Python's
// time.monotonic(), so a driver can subtract the moment of an admin call.
//
// Protocol on stdout, one JSON line each:
//   {"event":"ready",...}   once every session was tried (open and failed counts)
//   {"event":"report",...}  on a "report" line on stdin, at EOF on stdin
//                           (then it exits), and when every open session has
//                           ended (then it exits too); "ended" lists
//                           [monotonic seconds, reason] per ended session
//                           (reason -1: closed without a DISCONNECT)
//
// One thread, one epoll loop: the held sessions cost it nothing until the
// broker writes to them. Like devcert_loadgen it needs only OpenSSL.
//
// --source: every held session occupies a local port towards the broker's
// one address and port. A later connect() from the same source address
// (devcert_loadgen's) must find a port whose address pair is still free,
// and Linux tries the ports in order, checking each against the sessions
// established: with 19,000 held, that search took half of the load
// generator's core. Holding the sessions from another loopback address
// (127.0.0.2) leaves the load generator's searches as short as with none.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "mqtt_tls_client.hpp"
#include "tool_args.hpp"

namespace {

using bench_args::die;
using bench_args::parse_number;
using bench_args::parse_seconds;
using namespace bench_client;


struct Options {
    std::uint16_t port = 0;
    std::string ca_file;
    std::vector<std::string> cert_dirs;
    std::string cert_list;
    std::uint64_t sessions = 0;
    unsigned concurrency = 32;
    unsigned keepalive = 65535;
    double connect_timeout_s = 20;
    int mqtt_version = 4;
    std::string client_id_prefix = "hold";
    std::optional<in_addr> source;
};

void usage() {
    std::puts(
        "usage: devcert_hold_sessions --port N (--certs DIR | --cert-list FILE) --sessions N [options]\n"
        "  --port N             TLS listener port on 127.0.0.1\n"
        "  --ca FILE            verify the server certificate against this CA (default: no check)\n"
        "  --certs DIR          client identities: every NAME.crt with a NAME.key beside it (repeatable)\n"
        "  --cert-list FILE     client identities: lines 'CERT KEY'\n"
        "  --sessions N         sessions to open and hold (0 to 1000000)\n"
        "  -c, --concurrency N  handshakes in flight while opening (default 32)\n"
        "  --keepalive S        MQTT keep-alive in seconds, 1 to 65535 (default 65535; PINGREQ at half)\n"
        "  --timeout S          give up on one session's opening after S seconds (default 20)\n"
        "  --mqtt 3|5           MQTT 3.1.1 or 5 (default 3)\n"
        "  --client-id-prefix P client ids are P-<pid>-<n> (default hold)\n"
        "  --source ADDR        connect from this 127.0.0.0/8 address (default: the kernel's choice,\n"
        "                       127.0.0.1); see the source's header\n"
        "stdout: JSON lines, {\"event\":\"ready\"} then {\"event\":\"report\"} (see the source's header)");
}

Options parse_options(int argc, char** argv) {
    Options o;
    bool have_sessions = false;
    for (bench_args::Args args(argc, argv); args.next();) {
        const std::string_view a = args.flag();
        auto value = [&args] { return args.value(); };
        if (args.help()) {
            usage();
            std::exit(0);
        } else if (a == "--port") {
            o.port = static_cast<std::uint16_t>(parse_number(a, value(), 1, 65535));
        } else if (a == "--ca") {
            o.ca_file = value();
        } else if (a == "--certs") {
            o.cert_dirs.emplace_back(value());
        } else if (a == "--cert-list") {
            o.cert_list = value();
        } else if (a == "--sessions") {
            o.sessions = parse_number(a, value(), 0, 1'000'000);
            have_sessions = true;
        } else if (a == "-c" || a == "--concurrency") {
            o.concurrency = static_cast<unsigned>(parse_number(a, value(), 1, 10'000));
        } else if (a == "--keepalive") {
            o.keepalive = static_cast<unsigned>(parse_number(a, value(), 1, 65535));
        } else if (a == "--timeout") {
            o.connect_timeout_s = parse_seconds(a, value());
        } else if (a == "--mqtt") {
            o.mqtt_version = parse_mqtt_version(value());
        } else if (a == "--client-id-prefix") {
            o.client_id_prefix = parse_client_id_prefix(value());
        } else if (a == "--source") {
            const std::string text(value());
            in_addr addr{};
            if (inet_pton(AF_INET, text.c_str(), &addr) != 1 || (ntohl(addr.s_addr) >> 24) != 127)
                die("--source: expected an IPv4 address in 127.0.0.0/8, got '" + text + "'");
            o.source = addr;
        } else {
            die("unknown argument '" + std::string(a) + "' (see --help)");
        }
    }
    if (o.port == 0) die("--port is required");
    if (!have_sessions) die("--sessions is required");
    if (o.cert_dirs.empty() && o.cert_list.empty()) die("no client identities: give --certs DIR or --cert-list FILE");
    return o;
}

double monotonic_now() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

const std::string kPingreq("\xc0\x00", 2);

enum class Phase : std::uint8_t { tcp_connect, handshake, send_connect, read_connack, held, ended };

struct Session {
    UniqueFd fd;
    SslPtr ssl;
    Phase phase = Phase::tcp_connect;
    double started = 0;
    double last_ping = 0;
    std::string out;
    std::size_t out_off = 0;
    std::string in;  // bytes of incomplete packets
    std::uint32_t events = 0;
};

class Holder {
public:
    Holder(const Options& o, SSL_CTX* ctx, const std::vector<Identity>& ids) : o_(o), ctx_(ctx), ids_(ids) {
        epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
        if (!epoll_) die(std::string("epoll_create1: ") + std::strerror(errno));
        addr_.sin_family = AF_INET;
        addr_.sin_port = htons(o.port);
        addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (o.source) {
            source_.sin_family = AF_INET;
            source_.sin_addr = *o.source;
        }
        sessions_.resize(o.sessions);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u64 = kStdin;
        if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, STDIN_FILENO, &ev) != 0) stdin_open_ = false;  // e.g. /dev/null
    }

    void run() {
        const double t0 = monotonic_now();
        epoll_event events[256];
        bool ready_sent = false;
        double last_sweep = t0;
        for (;;) {
            while (opening_ < o_.concurrency && next_ < sessions_.size()) start(next_++);
            if (!ready_sent && next_ == sessions_.size() && opening_ == 0) {
                ready_sent = true;
                std::printf("{\"event\":\"ready\",\"open\":%zu,\"failed\":%zu,\"seconds\":%.3f}\n", held_, failed_,
                            monotonic_now() - t0);
                std::fflush(stdout);
            }
            if (ready_sent && held_ == 0 && !ended_.empty()) return report();  // every held session ended
            if (ready_sent && !stdin_open_) return report();
            const int n = epoll_wait(epoll_.get(), events, 256, 200);
            if (n < 0 && errno != EINTR) die(std::string("epoll_wait: ") + std::strerror(errno));
            // The moment the batch became readable, before this loop spends
            // time on it: a kicked session's end is dated by the broker's
            // write, not by the order in which this thread reads them.
            const double now = monotonic_now();
            for (int i = 0; i < n; ++i) {
                if (events[i].data.u64 == kStdin) {
                    read_stdin();
                } else {
                    advance(events[i].data.u64, now);
                }
            }
            if (now - last_sweep >= 1.0) {
                last_sweep = now;
                sweep(now);
            }
        }
    }

private:
    static constexpr std::uint64_t kStdin = ~std::uint64_t{0};

    void start(std::size_t i) {
        Session& s = sessions_[i];
        s.started = monotonic_now();
        char client_id[64];
        std::snprintf(client_id, sizeof client_id, "%s-%d-%zu", o_.client_id_prefix.c_str(), static_cast<int>(getpid()),
                      i);
        s.out = connect_packet(o_.mqtt_version, o_.keepalive, client_id);
        ++opening_;
        const Started started =
            start_connection(ctx_, ids_[i % ids_.size()], addr_, s.fd, s.ssl, o_.source ? &source_ : nullptr);
        if (started == Started::failed) return fail(i);
        if (started == Started::connected) s.phase = Phase::handshake;
        epoll_event ev{};
        ev.events = EPOLLOUT;
        ev.data.u64 = i;
        s.events = EPOLLOUT;
        if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s.fd.get(), &ev) != 0)
            die(std::string("epoll_ctl: ") + std::strerror(errno));
    }

    void fail(std::size_t i) {
        Session& s = sessions_[i];
        s.ssl.reset();
        s.fd.reset();
        s.phase = Phase::ended;
        --opening_;
        ++failed_;
        ERR_clear_error();
    }

    void end(std::size_t i, double when, int reason) {
        Session& s = sessions_[i];
        s.ssl.reset();
        s.fd.reset();
        s.phase = Phase::ended;
        --held_;
        ended_.emplace_back(when, reason);
        ERR_clear_error();
    }

    void want(std::size_t i, std::uint32_t events) {
        Session& s = sessions_[i];
        if (s.events == events) return;
        epoll_event ev{};
        ev.events = events;
        ev.data.u64 = i;
        s.events = events;
        epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, s.fd.get(), &ev);
    }

    bool wait_for_io(std::size_t i, int ret) {
        const int err = SSL_get_error(sessions_[i].ssl.get(), ret);
        if (err == SSL_ERROR_WANT_READ) {
            want(i, EPOLLIN);
            return true;
        }
        if (err == SSL_ERROR_WANT_WRITE) {
            want(i, EPOLLOUT);
            return true;
        }
        return false;
    }

    // Splits what arrived into MQTT packets. Returns the DISCONNECT's reason
    // code (0 when it has none) once one arrived, -2 while none did, -3 for
    // a packet that is not one a held session may receive.
    static int scan_packets(std::string& in, bool expect_connack) {
        for (;;) {
            if (in.size() < 2) return -2;
            std::size_t len = 0;
            std::size_t pos = 1;
            for (unsigned shift = 0;; shift += 7) {
                if (pos >= in.size()) return -2;
                const auto b = static_cast<unsigned char>(in[pos++]);
                len |= static_cast<std::size_t>(b & 0x7f) << shift;
                if (!(b & 0x80)) break;
                if (shift >= 21) return -3;
            }
            if (in.size() < pos + len) return -2;
            const auto type = static_cast<unsigned char>(in[0]) & 0xf0;
            if (type == 0xe0) return len > 0 ? static_cast<unsigned char>(in[pos]) : 0;
            if (expect_connack) return type == 0x20 && len >= 2 ? 0x100 | static_cast<unsigned char>(in[pos + 1]) : -3;
            if (type != 0xd0) return -3;  // only PINGRESP is expected while held
            in.erase(0, pos + len);
        }
    }

    void advance(std::size_t i, double now) {
        Session& s = sessions_[i];
        if (!s.fd) return;
        for (;;) {
            switch (s.phase) {
                case Phase::tcp_connect: {
                    if (!connect_succeeded(s.fd.get())) return fail(i);
                    s.phase = Phase::handshake;
                    break;
                }
                case Phase::handshake: {
                    const int r = SSL_connect(s.ssl.get());
                    if (r != 1) {
                        if (wait_for_io(i, r)) return;
                        return fail(i);
                    }
                    s.phase = Phase::send_connect;
                    break;
                }
                case Phase::send_connect:
                case Phase::held: {
                    if (s.out_off < s.out.size()) {
                        const int r =
                            SSL_write(s.ssl.get(), s.out.data() + s.out_off, static_cast<int>(s.out.size() - s.out_off));
                        if (r <= 0) {
                            if (wait_for_io(i, r)) return;
                            return s.phase == Phase::held ? end(i, now, -1) : fail(i);
                        }
                        s.out_off += static_cast<std::size_t>(r);
                        if (s.out_off < s.out.size()) break;
                        s.out.clear();
                        s.out_off = 0;
                    }
                    if (s.phase == Phase::send_connect) {
                        s.phase = Phase::read_connack;
                        break;
                    }
                    [[fallthrough]];
                }
                case Phase::read_connack: {
                    char buf[512];
                    const int r = SSL_read(s.ssl.get(), buf, sizeof buf);
                    if (r <= 0) {
                        if (wait_for_io(i, r)) return;
                        return s.phase == Phase::held ? end(i, now, -1) : fail(i);
                    }
                    s.in.append(buf, static_cast<std::size_t>(r));
                    const int got = scan_packets(s.in, s.phase == Phase::read_connack);
                    if (got == -2) break;
                    if (s.phase == Phase::read_connack) {
                        if (got != 0x100) return fail(i);  // refused, or not a CONNACK
                        s.in.clear();
                        s.phase = Phase::held;
                        s.last_ping = now;
                        --opening_;
                        ++held_;
                        want(i, EPOLLIN);
                        break;
                    }
                    return end(i, now, got == -3 ? -1 : got);
                }
                case Phase::ended: return;
            }
        }
    }

    // Gives up on sessions still opening after the timeout; sends PINGREQ
    // on held sessions at half their keep-alive.
    void sweep(double now) {
        const double ping_every = o_.keepalive / 2.0;
        for (std::size_t i = 0; i < next_; ++i) {
            Session& s = sessions_[i];
            if (!s.fd) continue;
            if (s.phase != Phase::held) {
                if (now - s.started > o_.connect_timeout_s) fail(i);
                continue;
            }
            if (now - s.last_ping >= ping_every && s.out.empty()) {
                s.last_ping = now;
                s.out = kPingreq;
                s.out_off = 0;
                advance(i, now);
            }
        }
    }

    void read_stdin() {
        char buf[256];
        const ssize_t r = read(STDIN_FILENO, buf, sizeof buf);
        if (r <= 0) {
            stdin_open_ = false;
            epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, STDIN_FILENO, nullptr);
            return;
        }
        line_.append(buf, static_cast<std::size_t>(r));
        for (std::size_t nl; (nl = line_.find('\n')) != std::string::npos;) {
            if (line_.compare(0, nl, "report") == 0) report();
            line_.erase(0, nl + 1);
        }
    }

    void report() {
        std::string ended;
        ended.reserve(ended_.size() * 24);
        char item[64];
        for (const auto& [t, reason] : ended_) {
            std::snprintf(item, sizeof item, "%s[%.6f,%d]", ended.empty() ? "" : ",", t, reason);
            ended += item;
        }
        std::printf("{\"event\":\"report\",\"held\":%zu,\"failed\":%zu,\"ended\":[%s]}\n", held_, failed_,
                    ended.c_str());
        std::fflush(stdout);
    }

    const Options& o_;
    SSL_CTX* ctx_;
    const std::vector<Identity>& ids_;
    UniqueFd epoll_;
    sockaddr_in addr_{};
    sockaddr_in source_{};
    std::vector<Session> sessions_;
    std::size_t next_ = 0;     // sessions started so far
    std::size_t opening_ = 0;  // started, not yet held or failed
    std::size_t held_ = 0;
    std::size_t failed_ = 0;
    std::vector<std::pair<double, int>> ended_;
    bool stdin_open_ = true;
    std::string line_;
};

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    rlimit nofile{};
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < o.sessions + 16)
        die("--sessions " + std::to_string(o.sessions) + " needs more open files than the limit " +
            std::to_string(nofile.rlim_cur));
    const std::vector<Identity> ids = load_identities(o.cert_dirs, o.cert_list);
    // Tens of thousands of idle sessions: their buffers go back while idle.
    SslCtxPtr ctx = make_client_ctx(o.ca_file, true);
    Holder holder(o, ctx.get(), ids);
    holder.run();
    return 0;
}
