// Per-uid token buckets for the admin API: `rate` calls per second, with a
// burst of the same size. Thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <unordered_map>

namespace devcert {

using SteadyClock = std::function<std::chrono::steady_clock::time_point()>;

class RateLimiter {
public:
    /// rate 0 disables limiting. `clock` defaults to steady_clock::now (tests
    /// inject their own so they do not depend on timing).
    explicit RateLimiter(unsigned rate, SteadyClock clock = {});

    /// Takes one token for `uid`. nullopt: allowed. Otherwise refused, with
    /// the whole seconds to wait before a token is available (at least 1).
    std::optional<unsigned> acquire(uid_t uid);

    /// Uids with a bucket now (idle ones are forgotten as the table grows).
    std::size_t tracked_uids() const;

private:
    struct Bucket {
        double tokens = 0;
        std::chrono::steady_clock::time_point last;
    };
    void forget_full_buckets(std::chrono::steady_clock::time_point now);

    double rate_;
    SteadyClock clock_;
    mutable std::mutex mutex_;
    std::unordered_map<uid_t, Bucket> buckets_;
};

}  // namespace devcert
