#include "wakeup.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

namespace devcert::plugin {

namespace {
// The signal's only job is to interrupt epoll_wait.
extern "C" void ignore_wakeup(int) {}
}  // namespace

Outcome WakeupSignal::install(int signo) {
    restore();
    signo_ = signo;
    target_ = pthread_self();
    if (signo == 0) return Ok{};
    struct sigaction action {};
    action.sa_handler = ignore_wakeup;
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: the interrupted epoll_wait must return
    if (sigaction(signo, &action, &previous_) != 0) {
        const int err = errno;
        signo_ = 0;
        return make_error(Errc::io_error,
                          fmt::format("cannot install the wake-up signal handler for signal {}: {}", signo,
                                      std::strerror(err)));
    }
    installed_ = true;
    return Ok{};
}

void WakeupSignal::restore() noexcept {
    if (!installed_) return;
    sigaction(signo_, &previous_, nullptr);
    installed_ = false;
    signo_ = 0;
}

void WakeupSignal::wake() const noexcept {
    if (installed_) pthread_kill(target_, signo_);
}

}  // namespace devcert::plugin
