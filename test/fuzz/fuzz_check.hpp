// What the fuzz targets share: a property check that stops the run with a
// readable message (libFuzzer then keeps the input as a crash file).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string_view>

#define FUZZ_CHECK(condition, what)                                                              \
    do {                                                                                          \
        if (!(condition)) ::devcert_fuzz::violated(#condition, what, __FILE__, __LINE__);         \
    } while (false)

namespace devcert_fuzz {

[[noreturn]] inline void violated(const char* condition, std::string_view what, const char* file, int line) {
    std::fprintf(stderr, "%s:%d: property violated: %.*s (%s)\n", file, line, static_cast<int>(what.size()),
                 what.data(), condition);
    std::abort();
}

}  // namespace devcert_fuzz
