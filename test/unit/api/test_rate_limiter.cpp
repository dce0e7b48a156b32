#include <catch2/catch.hpp>

#include "devcert/rate_limiter.hpp"

using namespace devcert;
using namespace std::chrono_literals;

namespace {
struct ManualClock {
    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    SteadyClock fn() {
        return [this] { return now; };
    }
};
}  // namespace

TEST_CASE("a uid may make a full burst of calls, and the next one is refused", "[api][rate]") {
    ManualClock clock;
    RateLimiter limiter(500, clock.fn());
    for (int i = 0; i < 500; ++i) REQUIRE_FALSE(limiter.acquire(1000).has_value());
    const auto refused = limiter.acquire(1000);
    REQUIRE(refused.has_value());
    CHECK(*refused == 1);
}

TEST_CASE("one uid's exhausted bucket does not affect another uid", "[api][rate]") {
    ManualClock clock;
    RateLimiter limiter(3, clock.fn());
    for (int i = 0; i < 3; ++i) REQUIRE_FALSE(limiter.acquire(1000).has_value());
    CHECK(limiter.acquire(1000).has_value());
    CHECK_FALSE(limiter.acquire(1001).has_value());
}

TEST_CASE("tokens come back at the configured rate", "[api][rate]") {
    ManualClock clock;
    RateLimiter limiter(10, clock.fn());
    for (int i = 0; i < 10; ++i) REQUIRE_FALSE(limiter.acquire(5).has_value());
    REQUIRE(limiter.acquire(5).has_value());
    clock.now += 100ms;  // one token at 10/s
    CHECK_FALSE(limiter.acquire(5).has_value());
    CHECK(limiter.acquire(5).has_value());
    clock.now += 10s;  // refills only up to the burst
    for (int i = 0; i < 10; ++i) REQUIRE_FALSE(limiter.acquire(5).has_value());
    CHECK(limiter.acquire(5).has_value());
}

TEST_CASE("Retry-After is the whole seconds until the next token, at least one", "[api][rate]") {
    ManualClock clock;
    RateLimiter slow(1, clock.fn());
    REQUIRE_FALSE(slow.acquire(7).has_value());
    CHECK(slow.acquire(7) == std::optional<unsigned>(1));
    clock.now += 500ms;
    CHECK(slow.acquire(7) == std::optional<unsigned>(1));
}

TEST_CASE("a rate of zero turns limiting off", "[api][rate]") {
    ManualClock clock;
    RateLimiter off(0, clock.fn());
    for (int i = 0; i < 10000; ++i) REQUIRE_FALSE(off.acquire(1).has_value());
}

TEST_CASE("many distinct uids do not grow the limiter without bound and busy uids keep their limits", "[api][rate]") {
    ManualClock clock;
    RateLimiter limiter(2, clock.fn());
    for (uid_t uid = 0; uid < 10000; ++uid) {
        REQUIRE_FALSE(limiter.acquire(uid).has_value());
        clock.now += 1ms;  // a bucket is full again 500 uids later
    }
    CHECK(limiter.tracked_uids() <= 4096);
    REQUIRE_FALSE(limiter.acquire(9999).has_value());
    CHECK(limiter.acquire(9999).has_value());
}
