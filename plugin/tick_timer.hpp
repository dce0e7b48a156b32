// Keeps TICK coming on a 2.1 broker whose idle loop sleeps until the next
// event it knows of (built without websockets).
//
// 2.1 (src/plugin_tick.c, loop.c, mux_epoll.c) runs a TICK callback only
// once the time it asked for (next_s/next_ms) has come, and only a callback
// that runs lowers the loop's next sleep to what it asks. Asking for 80 ms
// is not enough: when the loop wakes earlier for a packet, the callback is
// not due, nothing lowers the next sleep, and the loop sleeps up to 5 s (the
// keepalive scan) or a day (no clients). And a TICK that is not due also
// ignores the wake-up signal, which would delay every change made through
// the admin socket by up to the interval.
//
// So on 2.1 the plugin asks for next_ms 0 -- TICK on every loop iteration,
// exactly as 2.0 runs it -- and this one-shot POSIX timer, aimed at the
// broker thread with the wake-up signal, ends any sleep within 100 ms, as
// 2.0's loop does by itself. Each TICK pushes the timer back (at most one
// timer_settime per 50 ms), so under load it never fires; idle, the broker
// wakes 10 times a second, like 2.0 and 2.1 with websockets. No thread is
// created.
#pragma once

#include <ctime>

#include "devcert/result.hpp"

namespace devcert::plugin {

class TickTimer {
public:
    TickTimer() = default;
    ~TickTimer() { stop(); }
    TickTimer(const TickTimer&) = delete;
    TickTimer& operator=(const TickTimer&) = delete;

    /// Creates the timer, delivering `signo` to the calling thread (the
    /// broker thread). `signo` 0 leaves the timer off.
    Outcome start(int signo);
    /// Called at every TICK: unless it was armed less than `rearm_after_ms`
    /// ago, (re-)arms the timer to fire once, `fire_after_ms` from now.
    /// Broker thread only; does nothing when the timer is off.
    void push_back(long fire_after_ms, long rearm_after_ms) noexcept;
    /// Deletes the timer (a pending expiry is cancelled).
    void stop() noexcept;

    bool running() const noexcept { return created_; }

private:
    timer_t timer_{};
    bool created_ = false;
    long armed_at_ms_ = -1;
};

}  // namespace devcert::plugin
