#include "devcert/threads.hpp"

#include <pthread.h>
#include <signal.h>

#include <atomic>

namespace devcert {

namespace {
std::atomic<int> g_wakeup_signal{0};
}

void set_wakeup_signal(int signo) noexcept { g_wakeup_signal.store(signo, std::memory_order_relaxed); }
int wakeup_signal() noexcept { return g_wakeup_signal.load(std::memory_order_relaxed); }

std::thread spawn_thread(std::function<void()> body) {
    sigset_t blocked;
    sigemptyset(&blocked);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE}) sigaddset(&blocked, s);
    if (int w = wakeup_signal(); w > 0) sigaddset(&blocked, w);

    // The new thread inherits the mask in force when it is created.
    sigset_t previous;
    pthread_sigmask(SIG_BLOCK, &blocked, &previous);
    struct Restore {
        sigset_t* mask;
        ~Restore() { pthread_sigmask(SIG_SETMASK, mask, nullptr); }
    } restore{&previous};
    return std::thread(std::move(body));
}

}  // namespace devcert
