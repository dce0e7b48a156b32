// The wake-up signal handler is the plugin's only process-wide side effect:
// it must never replace a handler someone else installed.
#include <signal.h>

#include "glue_fixture.hpp"

namespace {

extern "C" void someone_elses_handler(int) {}


// Restores the process's handler for SIGURG whatever the test does.
struct SavedHandler {
    struct sigaction saved {};
    SavedHandler() { sigaction(SIGURG, nullptr, &saved); }
    ~SavedHandler() { sigaction(SIGURG, &saved, nullptr); }
};

}  // namespace

TEST_CASE("start-up is refused when another handler already owns the wake-up signal", "[glue][wakeup]") {
    SavedHandler keep;
    struct sigaction other {};
    other.sa_handler = someone_elses_handler;
    sigemptyset(&other.sa_mask);
    REQUIRE(sigaction(SIGURG, &other, nullptr) == 0);

    devcert::test::TempDir dir;
    auto config = devcert::parse_config({{"db_path", dir.file("db")}, {"admin_socket", "off"}});
    REQUIRE(config.ok());
    auto started = devcert::plugin::start_plugin(std::move(*config));
    REQUIRE_FALSE(started.ok());
    const std::string& message = started.error().message;
    CHECK(message.starts_with("plugin_opt_wakeup_signal: "));
    CHECK(message.find("SIGURG") != std::string::npos);
    CHECK(message.find("already has a handler") != std::string::npos);
    CHECK(message.find("plugin_opt_wakeup_signal off") != std::string::npos);

    // The other handler is still there.
    struct sigaction now {};
    REQUIRE(sigaction(SIGURG, nullptr, &now) == 0);
    CHECK(now.sa_handler == someone_elses_handler);
}

TEST_CASE("an ignored wake-up signal is another owner's choice too", "[glue][wakeup]") {
    SavedHandler keep;
    REQUIRE(signal(SIGURG, SIG_IGN) != SIG_ERR);
    devcert::plugin::WakeupSignal w;
    CHECK_FALSE(w.install(SIGURG).ok());
    CHECK(signal(SIGURG, SIG_DFL) == SIG_IGN);
}

TEST_CASE("the wake-up handler restarts interrupted system calls and goes away at stop", "[glue][wakeup]") {
    SavedHandler keep;
    REQUIRE(signal(SIGURG, SIG_DFL) != SIG_ERR);
    {
        devcert::plugin::WakeupSignal w;
        REQUIRE(w.install(SIGURG).ok());
        struct sigaction now {};
        REQUIRE(sigaction(SIGURG, nullptr, &now) == 0);
        CHECK((now.sa_flags & SA_RESTART) != 0);
        CHECK(now.sa_handler != SIG_DFL);
    }
    struct sigaction after {};
    REQUIRE(sigaction(SIGURG, nullptr, &after) == 0);
    CHECK(after.sa_handler == SIG_DFL);
}
