// Fatal errors, number and seconds flags for the bench tools' command lines.
// Header-only and free of project code, so the load generator still shares
// nothing with what it measures.
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace bench_args {

/// Prints "<tool>: message" and exits with status 2 (bad usage or setup).
[[noreturn]] inline void die(const std::string& message) {
    std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, message.c_str());
    std::exit(2);
}

/// A whole number in [min, max] for `flag`, or die naming the flag.
inline std::uint64_t parse_number(std::string_view flag, const char* text, std::uint64_t min, std::uint64_t max) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max)
        die(std::string(flag) + ": expected a whole number from " + std::to_string(min) + " to " +
            std::to_string(max) + ", got '" + text + "'");
    return v;
}

/// Seconds above 0 and up to a day for `flag`, or die naming the flag.
inline double parse_seconds(std::string_view flag, const char* text) {
    char* end = nullptr;
    const double v = std::strtod(text, &end);
    if (end == text || *end != '\0' || !(v > 0) || v > 86400)
        die(std::string(flag) + ": expected seconds above 0, got '" + text + "'");
    return v;
}

/// Walks a command line flag by flag:
///     for (Args args(argc, argv); args.next();) {
///         if (args.help()) ... else if (args.flag() == "--db") db = args.value(); ...
class Args {
public:
    Args(int argc, char** argv) noexcept : argc_(argc), argv_(argv) {}

    /// Moves to the next flag; false after the last.
    bool next() noexcept {
        if (++i_ >= argc_) return false;
        flag_ = argv_[i_];
        return true;
    }
    std::string_view flag() const noexcept { return flag_; }
    bool help() const noexcept { return flag_ == "-h" || flag_ == "--help"; }
    /// The value after the current flag, or die: "--db needs a value".
    const char* value() {
        if (i_ + 1 >= argc_) die(std::string(flag_) + " needs a value");
        return argv_[++i_];
    }

private:
    int argc_;
    char** argv_;
    int i_ = 0;
    std::string_view flag_;
};

}  // namespace bench_args
