#include "tick_timer.hpp"

#include <fmt/format.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace devcert::plugin {

Outcome TickTimer::start(int signo) {
    stop();
    if (signo == 0) return Ok{};
    struct sigevent event {};
    event.sigev_notify = SIGEV_THREAD_ID;
    event.sigev_signo = signo;
    event._sigev_un._tid = static_cast<pid_t>(syscall(SYS_gettid));
    if (timer_create(CLOCK_MONOTONIC, &event, &timer_) != 0) {
        return make_error(Errc::io_error, fmt::format("cannot create the tick timer: {}", std::strerror(errno)));
    }
    created_ = true;
    return Ok{};
}

void TickTimer::push_back(long fire_after_ms, long rearm_after_ms) noexcept {
    if (!created_) return;
    // The coarse clock is read without a system call (vDSO).
    struct timespec now {};
    clock_gettime(CLOCK_MONOTONIC_COARSE, &now);
    const long now_ms = static_cast<long>(now.tv_sec) * 1000L + now.tv_nsec / 1'000'000L;
    if (armed_at_ms_ >= 0 && now_ms - armed_at_ms_ < rearm_after_ms) return;
    struct itimerspec spec {};
    spec.it_value.tv_sec = fire_after_ms / 1000;
    spec.it_value.tv_nsec = (fire_after_ms % 1000) * 1'000'000L;
    if (timer_settime(timer_, 0, &spec, nullptr) == 0) armed_at_ms_ = now_ms;
}

void TickTimer::stop() noexcept {
    if (!created_) return;
    timer_delete(timer_);
    created_ = false;
    armed_at_ms_ = -1;
}

}  // namespace devcert::plugin
