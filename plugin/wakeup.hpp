// Waking the broker thread out of epoll_wait after a commit made inside the
// broker process. Mosquitto 2.0.11 treats EINTR as an ordinary wake-up, so a
// no-op handler and a pthread_kill aimed at the broker thread bring the next
// TICK forward from up to 100 ms to well under a millisecond. The handler
// has SA_RESTART, for the broker's other system calls: epoll_wait is never
// restarted after a handler (signal(7)). A signal that already has a handler
// (or is ignored) belongs to someone else and is refused.
#pragma once

#include <pthread.h>
#include <signal.h>

#include "devcert/result.hpp"

namespace devcert::plugin {

class WakeupSignal {
public:
    WakeupSignal() = default;
    ~WakeupSignal() { restore(); }
    WakeupSignal(const WakeupSignal&) = delete;
    WakeupSignal& operator=(const WakeupSignal&) = delete;

    /// Installs the no-op handler for `signo` (0: disabled, wake() does
    /// nothing) and remembers the calling thread as the one to wake. Fails,
    /// changing nothing, if the signal's disposition is not SIG_DFL.
    Outcome install(int signo);
    /// Puts back the handler that was there before install().
    void restore() noexcept;
    /// Async-signal-safe; callable from any thread.
    void wake() const noexcept;

    int signo() const noexcept { return signo_; }

private:
    int signo_ = 0;
    pthread_t target_{};
    struct sigaction previous_ {};
    bool installed_ = false;
};

}  // namespace devcert::plugin
