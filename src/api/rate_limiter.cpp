#include "devcert/rate_limiter.hpp"

#include <algorithm>
#include <cmath>
#include <utility>

namespace devcert {

namespace {
// Buckets of idle callers are dropped once the table grows past this, so a
// stream of distinct uids cannot grow it without bound.
constexpr std::size_t kMaxBuckets = 4096;
}  // namespace

RateLimiter::RateLimiter(unsigned rate, SteadyClock clock)
    : rate_(static_cast<double>(rate)), clock_(std::move(clock)) {
    if (!clock_) clock_ = [] { return std::chrono::steady_clock::now(); };
}

std::optional<unsigned> RateLimiter::acquire(uid_t uid) {
    if (rate_ <= 0) return std::nullopt;
    const auto now = clock_();
    std::lock_guard lock(mutex_);
    auto it = buckets_.find(uid);
    if (it == buckets_.end()) {
        if (buckets_.size() >= kMaxBuckets) forget_full_buckets(now);
        it = buckets_.emplace(uid, Bucket{rate_, now}).first;
    }
    Bucket& bucket = it->second;
    const std::chrono::duration<double> elapsed = now - bucket.last;
    if (elapsed.count() > 0) {
        bucket.tokens = std::min(rate_, bucket.tokens + elapsed.count() * rate_);
        bucket.last = now;
    }
    if (bucket.tokens >= 1.0) {
        bucket.tokens -= 1.0;
        return std::nullopt;
    }
    const double wait_s = (1.0 - bucket.tokens) / rate_;
    return static_cast<unsigned>(std::max(1.0, std::ceil(wait_s)));
}

std::size_t RateLimiter::tracked_uids() const {
    std::lock_guard lock(mutex_);
    return buckets_.size();
}

void RateLimiter::forget_full_buckets(std::chrono::steady_clock::time_point now) {
    for (auto it = buckets_.begin(); it != buckets_.end();) {
        const std::chrono::duration<double> idle = now - it->second.last;
        if (it->second.tokens + idle.count() * rate_ >= rate_) {
            it = buckets_.erase(it);
        } else {
            ++it;
        }
    }
}

}  // namespace devcert
