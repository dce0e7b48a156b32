// What the plugin does differently per broker version, and the $SYS topics.
// The stub is a 2.0 broker: it exports no mosquitto_plugin_set_info.
#include <catch2/catch.hpp>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "broker_compat.hpp"
#include "glue_fixture.hpp"
#include "instances.hpp"

using glue::Plugin;

TEST_CASE("on a 2.0 broker the plugin asks for its next tick and defers on reload", "[glue][compat]") {
    Plugin plugin;
    CHECK_FALSE(devcert::plugin::broker_is_21());
    plugin.broker().tick();
    // 2.0 ignores the field; the value still says kTickInterval.
    CHECK(plugin.broker().tick_next_ns == std::chrono::nanoseconds(devcert::plugin::kTickInterval).count());
    CHECK(plugin.broker().tick_next_ns <= 100'000'000);
    CHECK(plugin.broker().reload() == MOSQ_ERR_PLUGIN_DEFER);
    CHECK(devcert::plugin::reload_result() == MOSQ_ERR_PLUGIN_DEFER);
    // No timer on 2.0: its loop wakes every 100 ms and ticks every time.
    CHECK_FALSE(plugin.state().tick_timer.running());
}

TEST_CASE("a second instance in one process is refused, naming the options that cause it", "[glue][compat]") {
    REQUIRE(devcert::plugin::claim_instance("/var/lib/first").ok());
    auto second = devcert::plugin::claim_instance("/elsewhere");
    REQUIRE_FALSE(second.ok());
    CHECK_THAT(second.error().message, Catch::Contains("/var/lib/first"));
    CHECK_THAT(second.error().message, Catch::Contains("per_listener_settings true"));
    CHECK_THAT(second.error().message, Catch::Contains("global_plugin"));
    CHECK_THAT(second.error().message, Catch::Contains("/elsewhere"));
    // Cleanup gives the claim back: a broker that unloads and loads the
    // plugin again (or the next test) can start it.
    devcert::plugin::release_instance();
    CHECK(devcert::plugin::claim_instance("/elsewhere").ok());
    devcert::plugin::release_instance();
}

namespace {
const stub::Publish* find(const std::vector<stub::Publish>& all, const std::string& topic) {
    auto it = std::find_if(all.rbegin(), all.rend(), [&](const stub::Publish& p) { return p.topic == topic; });
    return it == all.rend() ? nullptr : &*it;
}
}  // namespace

TEST_CASE("$SYS topics: every counter, retained, on the first tick and then only what changed", "[glue][sys]") {
    Plugin plugin(devcert::OptionList{{"sys_interval", "1"}});
    auto& state = plugin.state();
    state.counters.kicks.fetch_add(3);
    state.counters.admin_call("GetStats", "Success");
    plugin.broker().tick();
    const auto& first = plugin.broker().published;
    REQUIRE(!first.empty());
    // Counters are enumerated, not listed: every snapshot name is there.
    for (const auto& [name, value] : state.counters.snapshot()) {
        std::string topic = "$SYS/broker/devcert/" + name;
        std::replace(topic.begin(), topic.end(), '.', '/');
        const auto* p = find(first, topic);
        REQUIRE(p != nullptr);
        CHECK(p->payload == std::to_string(value));
    }
    for (const auto& p : first) {
        CHECK(p.retain);
        CHECK(p.qos == 0);
    }
    REQUIRE(find(first, "$SYS/broker/devcert/kicks") != nullptr);
    CHECK(find(first, "$SYS/broker/devcert/kicks")->payload == "3");
    CHECK(find(first, "$SYS/broker/devcert/admin_calls/GetStats/Success") != nullptr);
    CHECK(find(first, "$SYS/broker/devcert/store/cas")->payload == "1");
    CHECK(find(first, "$SYS/broker/devcert/store/devices") != nullptr);
    CHECK(find(first, "$SYS/broker/devcert/change_log/position") != nullptr);

    // Within the interval nothing more; after it, only the changed counter.
    const auto count = first.size();
    state.counters.kicks.fetch_add(1);
    plugin.broker().tick();
    CHECK(plugin.broker().published.size() == count);
    REQUIRE(plugin.tick_until([&] { return plugin.broker().published.size() > count; }, std::chrono::seconds(3)));
    const auto& later = plugin.broker().published;
    REQUIRE(later.size() == count + 1);
    CHECK(later.back().topic == "$SYS/broker/devcert/kicks");
    CHECK(later.back().payload == "4");
}

TEST_CASE("$SYS topics are off with sys_interval 0", "[glue][sys]") {
    Plugin plugin(devcert::OptionList{{"sys_interval", "0"}});
    plugin.broker().tick();
    CHECK(plugin.broker().published.empty());
}

namespace {
volatile sig_atomic_t g_timer_signals = 0;
void count_signal(int) { g_timer_signals = g_timer_signals + 1; }
}  // namespace

TEST_CASE("the tick timer signals the thread that started it once, and each push moves it back", "[glue][compat]") {
    struct sigaction action {};
    struct sigaction previous {};
    action.sa_handler = count_signal;
    sigemptyset(&action.sa_mask);
    REQUIRE(sigaction(SIGURG, &action, &previous) == 0);
    g_timer_signals = 0;
    {
        devcert::plugin::TickTimer timer;
        REQUIRE(timer.start(SIGURG).ok());
        REQUIRE(timer.running());
        timer.push_back(100, 0);
        // Pushed back before it fires: nothing yet after 60 + 60 ms.
        std::this_thread::sleep_for(std::chrono::milliseconds(60));
        timer.push_back(100, 0);
        std::this_thread::sleep_for(std::chrono::milliseconds(60));
        CHECK(g_timer_signals == 0);
        // Left alone, it fires once.
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
        while (g_timer_signals == 0 && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        CHECK(g_timer_signals == 1);
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        CHECK(g_timer_signals == 1);
        // A push within the re-arm interval does not re-arm (no system call
        // per tick under load).
        timer.push_back(50, 10'000);
        std::this_thread::sleep_for(std::chrono::milliseconds(150));
        CHECK(g_timer_signals == 1);
        timer.stop();
        CHECK_FALSE(timer.running());
    }
    sigaction(SIGURG, &previous, nullptr);
}

TEST_CASE("with the wake-up signal off there is no timer", "[glue][compat]") {
    devcert::plugin::TickTimer timer;
    REQUIRE(timer.start(0).ok());
    CHECK_FALSE(timer.running());
    timer.push_back(1, 0);  // does nothing
}
