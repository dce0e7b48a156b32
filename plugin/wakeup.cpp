#include "wakeup.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace devcert::plugin {

namespace {
// The signal's only job is to interrupt epoll_wait.
extern "C" void ignore_wakeup(int) {}

std::string signal_name(int signo) {
    if (signo >= SIGRTMIN && signo <= SIGRTMAX) return fmt::format("RTMIN+{}", signo - SIGRTMIN);
    const char* name = sigabbrev_np(signo);
    return name ? fmt::format("SIG{}", name) : fmt::format("signal {}", signo);
}
}  // namespace

Outcome WakeupSignal::install(int signo) {
    restore();
    signo_ = signo;
    target_ = pthread_self();
    if (signo == 0) return Ok{};
    // The handler is process-wide: another plugin or library (a Go runtime
    // uses SIGURG) may own this signal, and replacing its handler would
    // break it silently. Only a signal left at its default is taken.
    struct sigaction current {};
    if (sigaction(signo, nullptr, &current) != 0) {
        const int err = errno;
        signo_ = 0;
        return make_error(Errc::io_error, fmt::format("cannot read the handler of signal {}: {}", signal_name(signo),
                                                      std::strerror(err)));
    }
    const bool is_default = (current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL;
    if (!is_default) {
        signo_ = 0;
        const bool ignored = (current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_IGN;
        return make_error(Errc::invalid_argument,
                          fmt::format("{} already has a handler in this process ({}); it is left alone: set "
                                      "plugin_opt_wakeup_signal to a signal nothing else uses (e.g. RTMIN+2) or "
                                      "plugin_opt_wakeup_signal off",
                                      signal_name(signo),
                                      ignored ? "it is ignored" : "another plugin or library installed one"));
    }
    struct sigaction action {};
    action.sa_handler = ignore_wakeup;
    sigemptyset(&action.sa_mask);
    // SA_RESTART spares the broker's other system calls an EINTR; epoll_wait
    // is never restarted after a handler, whatever the flag says (signal(7)),
    // so the wake-up still works.
    action.sa_flags = SA_RESTART;
    if (sigaction(signo, &action, &previous_) != 0) {
        const int err = errno;
        signo_ = 0;
        return make_error(Errc::io_error,
                          fmt::format("cannot install the wake-up signal handler for {}: {}", signal_name(signo),
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
