// Threads the plugin creates inside the broker must not receive the
// broker's process-directed signals, nor the wake-up signal meant for the
// broker thread.
#pragma once

#include <functional>
#include <thread>

namespace devcert {

/// Signal used to wake the broker thread (0 when disabled). Set once by the
/// plugin at initialisation, before any thread is spawned.
void set_wakeup_signal(int signo) noexcept;
int wakeup_signal() noexcept;

/// Starts a std::thread with SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2,
/// SIGPIPE and the wake-up signal blocked; the caller's mask is restored.
std::thread spawn_thread(std::function<void()> body);

}  // namespace devcert
