#include "glue_fixture.hpp"

using devcert::CertStatus;
using glue::kCaSn;
using glue::pki;

TEST_CASE("the re-check after a reload keeps active devices and refuses inactive ones", "[glue][reload]") {
    glue::Plugin plugin;
    auto good = pki().device("d201", "sensor-201", pki().ca);
    auto bad = pki().device("d202", "sensor-202", pki().ca);
    plugin.register_device(good, kCaSn, CertStatus::active);
    plugin.register_device(bad, kCaSn, CertStatus::active);
    mosquitto a("keeps", good.cert.get());
    mosquitto b("drops", bad.cert.get());
    REQUIRE(plugin.broker().basic_auth(&a) == MOSQ_ERR_SUCCESS);
    REQUIRE(plugin.broker().basic_auth(&b) == MOSQ_ERR_SUCCESS);
    plugin.set_device_status(kCaSn, "d202", CertStatus::inactive);

    // RELOAD, then BASIC_AUTH for every session, then TICK, as in one loop iteration.
    CHECK(plugin.broker().reload() == MOSQ_ERR_PLUGIN_DEFER);
    CHECK(plugin.broker().basic_auth(&a) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.broker().basic_auth(&b) == MOSQ_ERR_AUTH);
    plugin.broker().tick();

    CHECK(plugin.state().counters.reload_rechecks == 1);
    CHECK(plugin.state().clients.size() == 1);
    CHECK(plugin.state().clients.find(&a) != nullptr);
    CHECK(plugin.state().online.online(kCaSn, "d201"));
    CHECK_FALSE(plugin.state().online.online(kCaSn, "d202"));
    CHECK(plugin.state().counters.connections_accepted == 2);  // the re-check is not a connection
}

TEST_CASE("the re-check after a reload does not duplicate a connected client", "[glue][reload]") {
    glue::Plugin plugin;
    auto dev = pki().device("d203", "sensor-203", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto c("once", dev.cert.get());
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    plugin.broker().reload();
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    plugin.broker().tick();
    CHECK(plugin.state().clients.size() == 1);
    CHECK(plugin.state().online.connected() == 1);
    plugin.broker().disconnect(&c);
    CHECK_FALSE(plugin.state().online.online(kCaSn, "d203"));
}

TEST_CASE("an offline durable session we accepted survives the re-check after a reload", "[glue][reload]") {
    glue::Plugin plugin;
    auto dev = pki().device("d204", "sensor-204", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto c("durable", dev.cert.get());
    c.protocol_version = 5;
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    plugin.broker().disconnect(&c);  // the session stays, its socket is gone
    mosquitto stranger("never-seen", nullptr);

    plugin.broker().reload();
    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.broker().basic_auth(&stranger) == MOSQ_ERR_PLUGIN_DEFER);
    plugin.broker().tick();

    // Outside the re-check, no certificate means the no_certificate policy.
    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_PLUGIN_DEFER);
}

TEST_CASE("a kicked device's offline session is not kept by a later reload", "[glue][reload]") {
    glue::Plugin plugin(devcert::OptionList{{"no_certificate", "deny"}});
    auto dev = pki().device("d205", "sensor-205", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto c("kicked-durable", dev.cert.get());
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    plugin.set_device_status(kCaSn, "d205", CertStatus::inactive);
    plugin.broker().tick();
    REQUIRE_FALSE(c.connected);

    plugin.broker().reload();
    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
}

TEST_CASE("a client without a certificate that reuses a device's client id follows no_certificate on the re-check",
          "[glue][reload]") {
    const auto policy = GENERATE(std::string("defer"), std::string("deny"));
    const int expected = policy == "deny" ? MOSQ_ERR_AUTH : MOSQ_ERR_PLUGIN_DEFER;
    glue::Plugin plugin(devcert::OptionList{{"no_certificate", policy}});
    auto dev = pki().device("d206", "sensor-206", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    {
        mosquitto device("sensor-1", dev.cert.get());
        REQUIRE(plugin.broker().basic_auth(&device) == MOSQ_ERR_SUCCESS);
        plugin.broker().disconnect(&device);
    }  // the device's session ends with it
    // A password client takes the same client id; the password file decides.
    mosquitto user("sensor-1", nullptr);
    REQUIRE(plugin.broker().basic_auth(&user) == expected);

    plugin.broker().reload();
    CHECK(plugin.broker().basic_auth(&user) == expected);
    plugin.broker().tick();
    CHECK(plugin.broker().basic_auth(&user) == expected);
}

TEST_CASE("the re-check vouches only for the very session the device opened, not for its client id",
          "[glue][reload]") {
    glue::Plugin plugin;
    auto dev = pki().device("d207", "sensor-207", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto device("shared-id", dev.cert.get());
    device.clean_session = false;
    REQUIRE(plugin.broker().basic_auth(&device) == MOSQ_ERR_SUCCESS);
    plugin.broker().disconnect(&device);  // durable: the session stays offline
    // Another context with the same id, as a password client would be
    // (the broker keeps one session per id; the stub does not need to).
    mosquitto user("shared-id", nullptr);
    REQUIRE(plugin.broker().basic_auth(&user) == MOSQ_ERR_PLUGIN_DEFER);

    plugin.broker().reload();
    CHECK(plugin.broker().basic_auth(&device) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.broker().basic_auth(&user) == MOSQ_ERR_PLUGIN_DEFER);
    plugin.broker().tick();
}
TEST_CASE("the re-check after a reload is counted and logged as a re-check, not as connections", "[glue][reload]") {
    glue::Plugin plugin;
    auto good = pki().device("d208", "sensor-208", pki().ca);
    auto bad = pki().device("d209", "sensor-209", pki().ca);
    plugin.register_device(good, kCaSn, CertStatus::active);
    plugin.register_device(bad, kCaSn, CertStatus::active);
    mosquitto a("recheck-keeps", good.cert.get());
    mosquitto b("recheck-drops", bad.cert.get());
    REQUIRE(plugin.broker().basic_auth(&a) == MOSQ_ERR_SUCCESS);
    REQUIRE(plugin.broker().basic_auth(&b) == MOSQ_ERR_SUCCESS);
    plugin.set_device_status(kCaSn, "d209", CertStatus::inactive);

    plugin.broker().reload();
    CHECK(plugin.broker().basic_auth(&a) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.broker().basic_auth(&b) == MOSQ_ERR_AUTH);
    plugin.broker().tick();

    const auto& n = plugin.state().counters;
    CHECK(n.connections_accepted == 2);
    CHECK(n.refused_count(devcert::Refusal::device_inactive) == 0);
    CHECK(n.reload_rechecks == 1);
    CHECK(n.reload_sessions_kept == 1);
    CHECK(n.reload_sessions_refused == 1);
    std::size_t accepted_lines = 0;
    for (const auto& line : plugin.broker().log) accepted_lines += line.find("accepted client") != std::string::npos;
    CHECK(accepted_lines == 2);
    CHECK(plugin.broker().logged("reload re-check: kept client 'recheck-keeps' (CaSn 0c01, DeviceSn d208)"));
    CHECK(plugin.broker().logged(
        "reload re-check: refused client 'recheck-drops' (CaSn 0c01, DeviceSn d209): device inactive"));

    // The next connection of the same device is a connection again.
    mosquitto again("recheck-keeps-2", good.cert.get());
    CHECK(plugin.broker().basic_auth(&again) == MOSQ_ERR_SUCCESS);
    CHECK(n.connections_accepted == 3);
}
