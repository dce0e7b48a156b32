#include "devcert/config.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>
#include <tuple>

namespace devcert {

PluginConfig::PluginConfig() : wakeup_signal(SIGURG) {}

namespace {

constexpr std::string_view kPrefix = "plugin_opt_";

Error bad(std::string_view key, std::string_view reason) {
    return make_error(Errc::invalid_argument, fmt::format("{}{}: {}", kPrefix, key, reason));
}

std::string_view trim(std::string_view s) {
    constexpr std::string_view ws = " \t\r\n\v\f";
    const auto b = s.find_first_not_of(ws);
    if (b == std::string_view::npos) return {};
    const auto e = s.find_last_not_of(ws);
    return s.substr(b, e - b + 1);
}

template <class Enum, std::size_t N>
Result<Enum> parse_choice(std::string_view key, std::string_view value,
                          const std::array<std::pair<std::string_view, Enum>, N>& choices) {
    for (const auto& [name, e] : choices) {
        if (value == name) return e;
    }
    std::string names;
    for (const auto& [name, e] : choices) {
        if (!names.empty()) names += ", ";
        names += name;
    }
    return bad(key, fmt::format("'{}' is not one of {}", value, names));
}

Result<std::uint64_t> parse_unsigned(std::string_view key, std::string_view value, std::uint64_t min,
                                     std::uint64_t max, int base = 10) {
    std::uint64_t v = 0;
    const char* first = value.data();
    const char* last = value.data() + value.size();
    auto [ptr, ec] = std::from_chars(first, last, v, base);
    if (value.empty() || ec == std::errc::invalid_argument || ptr != last) {
        return bad(key, fmt::format("'{}' is not a{} number", value, base == 8 ? "n octal" : ""));
    }
    if (ec == std::errc::result_out_of_range || v < min || v > max) {
        if (base == 8) return bad(key, fmt::format("'{}' is not between {:o} and {:o}", value, min, max));
        return bad(key, fmt::format("'{}' is not between {} and {}", value, min, max));
    }
    return v;
}

// Sizes may carry a binary suffix ("64M"), the way operators write map sizes.
Result<std::uint64_t> parse_size(std::string_view key, std::string_view value, std::uint64_t min,
                                 std::uint64_t max) {
    std::uint64_t scale = 1;
    std::string_view digits = value;
    if (!value.empty()) {
        switch (value.back()) {
            case 'k': case 'K': scale = 1ull << 10; break;
            case 'm': case 'M': scale = 1ull << 20; break;
            case 'g': case 'G': scale = 1ull << 30; break;
            default: break;
        }
        if (scale != 1) digits.remove_suffix(1);
    }
    std::uint64_t v = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), v);
    if (digits.empty() || ec == std::errc::invalid_argument || ptr != digits.data() + digits.size()) {
        return bad(key, fmt::format("'{}' is not a size (bytes, or a number with K, M or G)", value));
    }
    if (ec == std::errc::result_out_of_range || v > max / scale || v * scale < min || v * scale > max) {
        return bad(key, fmt::format("'{}' is not between {} and {} bytes", value, min, max));
    }
    return v * scale;
}

Outcome check_absolute(std::string_view key, std::string_view value) {
    if (value.empty()) return bad(key, "a path is required");
    if (value.front() != '/') return bad(key, fmt::format("'{}' is not an absolute path", value));
    return Ok{};
}

Outcome check_readable_file(std::string_view key, const std::string& path) {
    if (auto ok = check_absolute(key, path); !ok) return ok;
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        return bad(key, fmt::format("cannot use '{}': {}", path, std::strerror(errno)));
    }
    if (!S_ISREG(st.st_mode)) return bad(key, fmt::format("'{}' is not a regular file", path));
    if (::access(path.c_str(), R_OK) != 0) {
        return bad(key, fmt::format("cannot read '{}': {}", path, std::strerror(errno)));
    }
    return Ok{};
}

// The store creates its directory, but only one level: the parent must be
// there already, and anything existing at the path must be a directory.
Outcome check_db_path(std::string_view key, const std::string& path) {
    if (auto ok = check_absolute(key, path); !ok) return ok;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return bad(key, fmt::format("'{}' exists and is not a directory", path));
        return Ok{};
    }
    if (errno != ENOENT) return bad(key, fmt::format("cannot use '{}': {}", path, std::strerror(errno)));
    std::string_view trimmed = path;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.remove_suffix(1);
    const auto slash = trimmed.find_last_of('/');
    const std::string parent(slash == 0 ? std::string_view("/") : trimmed.substr(0, slash));
    if (::stat(parent.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        return bad(key, fmt::format("cannot create '{}': parent directory '{}' does not exist", path, parent));
    }
    return Ok{};
}

Outcome check_socket_path(std::string_view key, const std::string& path) {
    if (auto ok = check_absolute(key, path); !ok) return ok;
    constexpr std::size_t cap = sizeof(sockaddr_un{}.sun_path) - 1;
    if (path.size() > cap) {
        return bad(key, fmt::format("'{}' is {} bytes long, a UNIX socket path holds at most {}", path,
                                    path.size(), cap));
    }
    return Ok{};
}

struct SignalName {
    std::string_view name;
    int signo;
    bool usable;
    std::string_view why;  // for the unusable ones
};

// Mosquitto handles INT, TERM, HUP, USR1, USR2 and ignores PIPE; KILL and
// STOP cannot be caught; the synchronous fault signals must keep their
// default action. Everything else that nobody in the broker uses will do.
const SignalName kSignals[] = {
    {"URG", SIGURG, true, ""},
    {"WINCH", SIGWINCH, true, ""},
    {"IO", SIGIO, true, ""},
    {"POLL", SIGPOLL, true, ""},
    {"PWR", SIGPWR, true, ""},
    {"VTALRM", SIGVTALRM, true, ""},
    {"PROF", SIGPROF, true, ""},
    {"XCPU", SIGXCPU, true, ""},
    {"XFSZ", SIGXFSZ, true, ""},
    {"ALRM", SIGALRM, true, ""},
    {"STKFLT", SIGSTKFLT, true, ""},
    {"TTIN", SIGTTIN, true, ""},
    {"TTOU", SIGTTOU, true, ""},
    {"INT", SIGINT, false, "mosquitto uses it to shut down"},
    {"TERM", SIGTERM, false, "mosquitto uses it to shut down"},
    {"HUP", SIGHUP, false, "mosquitto uses it to reload"},
    {"USR1", SIGUSR1, false, "mosquitto uses it to write its persistence file"},
    {"USR2", SIGUSR2, false, "mosquitto uses it to print its subscription tree"},
    {"PIPE", SIGPIPE, false, "mosquitto ignores it for broken connections"},
    {"KILL", SIGKILL, false, "it cannot be caught"},
    {"STOP", SIGSTOP, false, "it cannot be caught"},
    {"CHLD", SIGCHLD, false, "child process handling depends on it"},
    {"CONT", SIGCONT, false, "job control depends on it"},
    {"TSTP", SIGTSTP, false, "job control depends on it"},
    {"SEGV", SIGSEGV, false, "it reports a program fault"},
    {"BUS", SIGBUS, false, "it reports a program fault"},
    {"FPE", SIGFPE, false, "it reports a program fault"},
    {"ILL", SIGILL, false, "it reports a program fault"},
    {"ABRT", SIGABRT, false, "it reports a program fault"},
    {"TRAP", SIGTRAP, false, "debuggers use it"},
    {"SYS", SIGSYS, false, "seccomp uses it"},
    {"QUIT", SIGQUIT, false, "it is meant to stop the process"},
};

Result<int> parse_signal(std::string_view key, std::string_view value) {
    if (value == "off") return 0;
    std::string upper;
    for (char c : value) upper.push_back(static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c));
    std::string_view name = upper;
    if (name.substr(0, 3) == "SIG") name.remove_prefix(3);

    // Real-time signals: RTMIN+n, RTMAX-n.
    for (auto [base_name, base, sign] : {std::tuple{std::string_view("RTMIN"), SIGRTMIN, 1},
                                         std::tuple{std::string_view("RTMAX"), SIGRTMAX, -1}}) {
        if (name.substr(0, base_name.size()) != base_name) continue;
        std::string_view rest = name.substr(base_name.size());
        int offset = 0;
        if (!rest.empty()) {
            if (rest.front() != (sign > 0 ? '+' : '-')) break;
            rest.remove_prefix(1);
            auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), offset);
            if (rest.empty() || ec != std::errc{} || ptr != rest.data() + rest.size()) break;
        }
        const int signo = base + sign * offset;
        if (signo < SIGRTMIN || signo > SIGRTMAX) {
            return bad(key, fmt::format("'{}' is outside SIGRTMIN..SIGRTMAX", value));
        }
        return signo;
    }

    for (const auto& s : kSignals) {
        if (name != s.name) continue;
        if (!s.usable) return bad(key, fmt::format("'{}' cannot be used: {}", value, s.why));
        return s.signo;
    }
    return bad(key, fmt::format("'{}' is not a signal name (e.g. SIGURG, WINCH, RTMIN+2) or off", value));
}

Outcome check_instance_id(std::string_view key, std::string_view value) {
    if (value.empty()) return bad(key, "an instance id is required");
    if (value.size() > 64) return bad(key, fmt::format("'{}' is longer than 64 characters", value));
    for (char c : value) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.';
        if (!ok) return bad(key, fmt::format("'{}' may hold only letters, digits, '-', '_' and '.'", value));
    }
    return Ok{};
}

}  // namespace

Result<PluginConfig> parse_config(const OptionList& options) {
    PluginConfig c;
    std::set<std::string, std::less<>> seen;

    for (const auto& [raw_key, raw_value] : options) {
        const std::string_view key = trim(raw_key);
        const std::string value(trim(raw_value));

        if (key != "import_ca" && !seen.emplace(key).second) return bad(key, "given more than once");

        if (key == "instance_id") {
            if (auto ok = check_instance_id(key, value); !ok) return ok.error();
            c.instance_id = value;
        } else if (key == "db_path") {
            if (auto ok = check_db_path(key, value); !ok) return ok.error();
            c.db_path = value;
        } else if (key == "admin_socket") {
            if (value == "off") {
                c.admin_socket.clear();
            } else {
                if (auto ok = check_socket_path(key, value); !ok) return ok.error();
                c.admin_socket = value;
            }
        } else if (key == "admin_socket_mode") {
            auto v = parse_unsigned(key, value, 0, 0777, 8);
            if (!v) return v.error();
            c.admin_socket_mode = static_cast<unsigned>(*v);
        } else if (key == "admin_policy") {
            if (auto ok = check_readable_file(key, value); !ok) return ok.error();
            c.admin_policy = value;
        } else if (key == "admin_rate_limit") {
            auto v = parse_unsigned(key, value, 1, 1'000'000);
            if (!v) return v.error();
            c.admin_rate_limit = static_cast<unsigned>(*v);
        } else if (key == "auto_register") {
            static constexpr std::array<std::pair<std::string_view, AutoRegister>, 3> choices{
                {{"active", AutoRegister::active}, {"inactive", AutoRegister::inactive}, {"off", AutoRegister::off}}};
            auto v = parse_choice(key, value, choices);
            if (!v) return v.error();
            c.auto_register = *v;
        } else if (key == "username") {
            static constexpr std::array<std::pair<std::string_view, UsernameMode>, 4> choices{
                {{"cn", UsernameMode::cn},
                 {"subject", UsernameMode::subject},
                 {"device_sn", UsernameMode::device_sn},
                 {"keep", UsernameMode::keep}}};
            auto v = parse_choice(key, value, choices);
            if (!v) return v.error();
            c.username = *v;
        } else if (key == "no_certificate") {
            static constexpr std::array<std::pair<std::string_view, NoCertificate>, 2> choices{
                {{"defer", NoCertificate::defer}, {"deny", NoCertificate::deny}}};
            auto v = parse_choice(key, value, choices);
            if (!v) return v.error();
            c.no_certificate = *v;
        } else if (key == "import_ca") {
            if (auto ok = check_readable_file(key, value); !ok) return ok.error();
            c.import_ca.push_back(value);
        } else if (key == "on_store_error") {
            static constexpr std::array<std::pair<std::string_view, OnStoreError>, 2> choices{
                {{"deny", OnStoreError::deny}, {"allow", OnStoreError::allow}}};
            auto v = parse_choice(key, value, choices);
            if (!v) return v.error();
            c.on_store_error = *v;
        } else if (key == "wakeup_signal") {
            auto v = parse_signal(key, value);
            if (!v) return v.error();
            c.wakeup_signal = *v;
        } else if (key == "max_ca") {
            auto v = parse_unsigned(key, value, 1, 100'000);
            if (!v) return v.error();
            c.max_ca = static_cast<unsigned>(*v);
        } else if (key == "change_log_retention") {
            auto v = parse_unsigned(key, value, 1'000, std::numeric_limits<std::uint32_t>::max());
            if (!v) return v.error();
            c.change_log_retention = *v;
        } else if (key == "map_size") {
            auto v = parse_size(key, value, 1ull << 20, 1ull << 40);
            if (!v) return v.error();
            c.map_size = *v;
        } else if (key == "sys_interval") {
            // The broker's own sys_interval is not visible to plugins: the
            // operator sets the same value here (both default to 10 s).
            auto v = parse_unsigned(key, value, 0, 86'400);
            if (!v) return v.error();
            c.sys_interval = static_cast<unsigned>(*v);
        } else if (key == "fleet") {
            // Checked as a connection string when the plugin starts (by
            // libpq's own parser); never quoted in a message.
            if (value.empty()) return bad(key, "empty: give a libpq connection string or service name");
            c.fleet = value;
        } else if (key == "fleet_poll_ms") {
            auto v = parse_unsigned(key, value, 10, 60'000);
            if (!v) return v.error();
            c.fleet_poll_ms = static_cast<unsigned>(*v);
        } else if (key == "fleet_queue_max") {
            auto v = parse_unsigned(key, value, 1, 10'000'000);
            if (!v) return v.error();
            c.fleet_queue_max = *v;
        } else if (key == "fleet_timeout") {
            auto v = parse_unsigned(key, value, 1, 3'600);
            if (!v) return v.error();
            c.fleet_timeout = static_cast<unsigned>(*v);
        } else if (key == "fleet_trim_interval") {
            auto v = parse_unsigned(key, value, 0, 86'400);
            if (!v) return v.error();
            c.fleet_trim_interval = static_cast<unsigned>(*v);
        } else {
            return bad(key, "unknown option");
        }
    }
    return c;
}

}  // namespace devcert
