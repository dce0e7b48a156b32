#include <catch2/catch.hpp>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "devcert/config.hpp"
#include "temp_dir.hpp"

using namespace devcert;
using devcert::test::TempDir;
namespace fs = std::filesystem;

namespace {

std::string error_of(const OptionList& options) {
    auto r = parse_config(options);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::invalid_argument);
    return r.error().message;
}

PluginConfig parsed(const OptionList& options) {
    auto r = parse_config(options);
    if (!r) FAIL(r.error().message);
    return *r;
}

}  // namespace

TEST_CASE("no options give the documented defaults", "[config]") {
    auto c = parsed({});
    CHECK(c.instance_id == "local");
    CHECK(c.db_path == "/var/lib/mosquitto/devcert");
    CHECK(c.admin_socket == "/run/mosquitto/devcert.sock");
    CHECK(c.admin_socket_mode == 0660);
    CHECK(c.admin_policy.empty());
    CHECK(c.admin_rate_limit == 500);
    CHECK(c.auto_register == AutoRegister::active);
    CHECK(c.username == UsernameMode::cn);
    CHECK(c.no_certificate == NoCertificate::defer);
    CHECK(c.import_ca.empty());
    CHECK(c.on_store_error == OnStoreError::deny);
    CHECK(c.wakeup_signal == SIGURG);
    CHECK(c.max_ca == 100);
    CHECK(c.change_log_retention == 1'000'000);
    CHECK(c.map_size == (64ull << 20));
}

TEST_CASE("every option is parsed into its typed value", "[config]") {
    TempDir dir;
    const auto ca1 = dir.write("ca1.pem", "x");
    const auto ca2 = dir.write("ca2.pem", "x");
    const auto policy = dir.write("policy", "x");
    const auto db = dir.file("db");
    auto c = parsed({{"instance_id", "post-cn-0pp1"},
                     {"db_path", db},
                     {"admin_socket", "/tmp/dc.sock"},
                     {"admin_socket_mode", "0600"},
                     {"admin_policy", policy},
                     {"admin_rate_limit", "20"},
                     {"auto_register", "inactive"},
                     {"username", "device_sn"},
                     {"no_certificate", "deny"},
                     {"import_ca", ca1},
                     {"import_ca", ca2},
                     {"on_store_error", "allow"},
                     {"wakeup_signal", "SIGWINCH"},
                     {"max_ca", "7"},
                     {"change_log_retention", "5000"},
                     {"map_size", "16M"}});
    CHECK(c.instance_id == "post-cn-0pp1");
    CHECK(c.db_path == db);
    CHECK(c.admin_socket == "/tmp/dc.sock");
    CHECK(c.admin_socket_mode == 0600);
    CHECK(c.admin_policy == policy);
    CHECK(c.admin_rate_limit == 20);
    CHECK(c.auto_register == AutoRegister::inactive);
    CHECK(c.username == UsernameMode::device_sn);
    CHECK(c.no_certificate == NoCertificate::deny);
    CHECK(c.import_ca == std::vector<std::string>{ca1, ca2});
    CHECK(c.on_store_error == OnStoreError::allow);
    CHECK(c.wakeup_signal == SIGWINCH);
    CHECK(c.max_ca == 7);
    CHECK(c.change_log_retention == 5000);
    CHECK(c.map_size == (16ull << 20));
}

TEST_CASE("values keep no surrounding white space, as mosquitto keeps trailing spaces", "[config]") {
    auto c = parsed({{"auto_register", "off   "}, {"username", " subject\t"}});
    CHECK(c.auto_register == AutoRegister::off);
    CHECK(c.username == UsernameMode::subject);
}

TEST_CASE("an unknown option is refused with its full name", "[config]") {
    CHECK(error_of({{"auto_registr", "active"}}) == "plugin_opt_auto_registr: unknown option");
}

TEST_CASE("an option given twice is refused, except import_ca", "[config]") {
    CHECK(error_of({{"username", "cn"}, {"username", "keep"}}) == "plugin_opt_username: given more than once");
}

TEST_CASE("a value outside a choice lists the accepted values", "[config]") {
    CHECK(error_of({{"auto_register", "maybe"}}) == "plugin_opt_auto_register: 'maybe' is not one of active, inactive, off");
    CHECK(error_of({{"username", "CN"}}) == "plugin_opt_username: 'CN' is not one of cn, subject, device_sn, keep");
    CHECK(error_of({{"no_certificate", "allow"}}) == "plugin_opt_no_certificate: 'allow' is not one of defer, deny");
    CHECK(error_of({{"on_store_error", ""}}) == "plugin_opt_on_store_error: '' is not one of deny, allow");
}

TEST_CASE("numbers are checked for form and range", "[config]") {
    CHECK(error_of({{"admin_rate_limit", "fast"}}) == "plugin_opt_admin_rate_limit: 'fast' is not a number");
    CHECK(error_of({{"admin_rate_limit", "0"}}) == "plugin_opt_admin_rate_limit: '0' is not between 1 and 1000000");
    CHECK(error_of({{"max_ca", "-1"}}) == "plugin_opt_max_ca: '-1' is not a number");
    CHECK(error_of({{"max_ca", "99999999999999999999999"}}).starts_with("plugin_opt_max_ca: '99999999999999999999999' is not between"));
    CHECK(error_of({{"change_log_retention", "10"}}).starts_with("plugin_opt_change_log_retention: '10' is not between 1000"));
    CHECK(error_of({{"admin_socket_mode", "0680"}}) == "plugin_opt_admin_socket_mode: '0680' is not an octal number");
    CHECK(error_of({{"admin_socket_mode", "1777"}}) == "plugin_opt_admin_socket_mode: '1777' is not between 0 and 777");
}

TEST_CASE("map_size accepts plain bytes and K, M, G suffixes within bounds", "[config]") {
    CHECK(parsed({{"map_size", "1048576"}}).map_size == (1ull << 20));
    CHECK(parsed({{"map_size", "2048k"}}).map_size == (2ull << 20));
    CHECK(parsed({{"map_size", "1G"}}).map_size == (1ull << 30));
    CHECK(error_of({{"map_size", "12T"}}).starts_with("plugin_opt_map_size: '12T' is not a size"));
    CHECK(error_of({{"map_size", "4K"}}).starts_with("plugin_opt_map_size: '4K' is not between"));
    CHECK(error_of({{"map_size", "99999999999G"}}).starts_with("plugin_opt_map_size: '99999999999G' is not between"));
}

TEST_CASE("the instance id must be a short name", "[config]") {
    CHECK(error_of({{"instance_id", ""}}) == "plugin_opt_instance_id: an instance id is required");
    CHECK(error_of({{"instance_id", "a b"}}) == "plugin_opt_instance_id: 'a b' may hold only letters, digits, '-', '_' and '.'");
    CHECK(error_of({{"instance_id", std::string(65, 'a')}}).ends_with("is longer than 64 characters"));
}

TEST_CASE("the wake-up signal takes a name with or without SIG, real-time signals or off", "[config]") {
    CHECK(parsed({{"wakeup_signal", "SIGURG"}}).wakeup_signal == SIGURG);
    CHECK(parsed({{"wakeup_signal", "urg"}}).wakeup_signal == SIGURG);
    CHECK(parsed({{"wakeup_signal", "WINCH"}}).wakeup_signal == SIGWINCH);
    CHECK(parsed({{"wakeup_signal", "SIGRTMIN+2"}}).wakeup_signal == SIGRTMIN + 2);
    CHECK(parsed({{"wakeup_signal", "RTMAX"}}).wakeup_signal == SIGRTMAX);
    CHECK(parsed({{"wakeup_signal", "off"}}).wakeup_signal == 0);
    CHECK(error_of({{"wakeup_signal", "SIGRTMIN+99"}}) == "plugin_opt_wakeup_signal: 'SIGRTMIN+99' is outside SIGRTMIN..SIGRTMAX");
    CHECK(error_of({{"wakeup_signal", "15"}}).starts_with("plugin_opt_wakeup_signal: '15' is not a signal name"));
}

TEST_CASE("the wake-up signal refuses every signal mosquitto uses and those that cannot be caught", "[config]") {
    CHECK(error_of({{"wakeup_signal", "SIGHUP"}}) == "plugin_opt_wakeup_signal: 'SIGHUP' cannot be used: mosquitto uses it to reload");
    for (const char* name : {"SIGINT", "TERM", "USR1", "SIGUSR2", "PIPE", "SIGKILL", "STOP", "SEGV"}) {
        CAPTURE(name);
        CHECK(error_of({{"wakeup_signal", name}}).find("cannot be used") != std::string::npos);
    }
}

TEST_CASE("paths must be absolute and usable", "[config]") {
    TempDir dir;
    const auto plain = dir.write("plain", "x");
    CHECK(error_of({{"db_path", "relative/db"}}) == "plugin_opt_db_path: 'relative/db' is not an absolute path");
    CHECK(error_of({{"db_path", plain}}) == "plugin_opt_db_path: '" + plain + "' exists and is not a directory");
    const auto orphan = dir.file("missing/db");
    CHECK(error_of({{"db_path", orphan}}) ==
          "plugin_opt_db_path: cannot create '" + orphan + "': parent directory '" + dir.file("missing") +
              "' does not exist");
    const auto absent = dir.file("absent.pem");
    CHECK(error_of({{"import_ca", absent}}) ==
          "plugin_opt_import_ca: cannot use '" + absent + "': No such file or directory");
    CHECK(error_of({{"import_ca", dir.path()}}) ==
          "plugin_opt_import_ca: '" + dir.path() + "' is not a regular file");
    CHECK(error_of({{"admin_policy", "policy.txt"}}) == "plugin_opt_admin_policy: 'policy.txt' is not an absolute path");
}

TEST_CASE("the admin socket is off or a path that fits a UNIX socket address", "[config]") {
    CHECK(parsed({{"admin_socket", "off"}}).admin_socket.empty());
    const std::string long_path = "/tmp/" + std::string(120, 's');
    CHECK(error_of({{"admin_socket", long_path}}).ends_with("bytes long, a UNIX socket path holds at most 107"));
    CHECK(error_of({{"admin_socket", ""}}) == "plugin_opt_admin_socket: a path is required");
}

TEST_CASE("sys_interval defaults to the broker's 10 s, 0 turns the $SYS topics off", "[config]") {
    CHECK(parsed({}).sys_interval == 10);
    CHECK(parsed({{"sys_interval", "0"}}).sys_interval == 0);
    CHECK(parsed({{"sys_interval", "1"}}).sys_interval == 1);
    CHECK(error_of({{"sys_interval", "86401"}}).starts_with("plugin_opt_sys_interval: '86401' is not between"));
    CHECK(error_of({{"sys_interval", "-1"}}).starts_with("plugin_opt_sys_interval:"));
}

TEST_CASE("without plugin_opt_fleet the plugin is standalone; the fleet options have checked ranges", "[config]") {
    const PluginConfig standalone = parsed({});
    CHECK(standalone.fleet.empty());
    CHECK(standalone.fleet_poll_ms == 500);
    CHECK(standalone.fleet_queue_max == 100'000);
    CHECK(standalone.fleet_trim_interval == 60);
    CHECK(standalone.fleet_timeout == 10);

    const PluginConfig c = parsed({{"fleet", " host=/run/postgresql dbname=devcert "},
                                   {"fleet_poll_ms", "50"},
                                   {"fleet_queue_max", "10"},
                                   {"fleet_trim_interval", "0"},
                                   {"fleet_timeout", "3600"}});
    CHECK(c.fleet == "host=/run/postgresql dbname=devcert");
    CHECK(c.fleet_poll_ms == 50);
    CHECK(c.fleet_queue_max == 10);
    CHECK(c.fleet_trim_interval == 0);
    CHECK(c.fleet_timeout == 3600);

    CHECK(error_of({{"fleet", "  "}}).starts_with("plugin_opt_fleet: empty"));
    CHECK(error_of({{"fleet_poll_ms", "5"}}).starts_with("plugin_opt_fleet_poll_ms: '5' is not between"));
    CHECK(error_of({{"fleet_queue_max", "0"}}).starts_with("plugin_opt_fleet_queue_max: '0' is not between"));
    CHECK(error_of({{"fleet_trim_interval", "x"}}).starts_with("plugin_opt_fleet_trim_interval: 'x' is not a number"));
    // 0 would let a stopped member hold the fleet's writes for good.
    CHECK(error_of({{"fleet_timeout", "0"}}).starts_with("plugin_opt_fleet_timeout: '0' is not between 1 and 3600"));
    CHECK(error_of({{"fleet_timeout", "3601"}}).starts_with("plugin_opt_fleet_timeout: '3601' is not between"));
    CHECK(error_of({{"fleet_timeout", "10s"}}).starts_with("plugin_opt_fleet_timeout: '10s' is not"));
}
