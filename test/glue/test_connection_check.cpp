#include "glue_fixture.hpp"

using devcert::CertStatus;
using devcert::Refusal;
using glue::kCaSn;
using glue::pki;

namespace {
mosquitto client_with(const std::string& id, const devcert::test::Issued& cert) {
    return mosquitto(id, cert.cert.get());
}
}  // namespace

TEST_CASE("a registered active device is accepted with its common name as username", "[glue][auth]") {
    glue::Plugin plugin;
    auto dev = pki().device("d001", "sensor-1", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    auto c = client_with("client-1", dev);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    CHECK(c.username == "sensor-1");
    CHECK(plugin.state().counters.connections_accepted == 1);
    CHECK(plugin.state().online.online(kCaSn, "d001"));
    CHECK(plugin.state().clients.size() == 1);
    CHECK(plugin.broker().foreign_calls.empty());
}

TEST_CASE("an inactive or revoked device is refused with one line naming client, CaSn, DeviceSn and reason",
          "[glue][auth]") {
    glue::Plugin plugin;
    auto inactive = pki().device("d002", "sensor-2", pki().ca);
    auto revoked = pki().device("d003", "sensor-3", pki().ca);
    plugin.register_device(inactive, kCaSn, CertStatus::inactive);
    plugin.register_device(revoked, kCaSn, CertStatus::revoked);
    auto a = client_with("client-2", inactive);
    auto b = client_with("client-3", revoked);

    CHECK(plugin.broker().basic_auth(&a) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().basic_auth(&b) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().logged("refused client 'client-2' (CaSn 0c01, DeviceSn d002): device inactive"));
    CHECK(plugin.broker().logged("refused client 'client-3' (CaSn 0c01, DeviceSn d003): device revoked"));
    CHECK(plugin.state().counters.refused_count(Refusal::device_inactive) == 1);
    CHECK(plugin.state().counters.refused_count(Refusal::device_revoked) == 1);
    CHECK(plugin.state().clients.size() == 0);
    CHECK_FALSE(a.username.has_value());
}

TEST_CASE("an inactive CA refuses its devices, registered or not", "[glue][auth]") {
    glue::Plugin plugin;
    auto registered = pki().device("d004", "sensor-4", pki().ca);
    auto unregistered = pki().device("d005", "sensor-5", pki().ca);
    plugin.register_device(registered, kCaSn, CertStatus::active);
    plugin.set_ca_status(kCaSn, CertStatus::inactive);
    auto a = client_with("client-4", registered);
    auto b = client_with("client-5", unregistered);

    CHECK(plugin.broker().basic_auth(&a) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().basic_auth(&b) == MOSQ_ERR_AUTH);
    CHECK(plugin.state().counters.refused_count(Refusal::ca_inactive) == 2);
    CHECK_FALSE(plugin.device(kCaSn, "d005").has_value());
}

TEST_CASE("a device from a CA nobody registered is refused as ca not registered", "[glue][auth]") {
    glue::Plugin plugin;
    auto dev = pki().device("d006", "sensor-6", pki().stranger_ca);
    auto c = client_with("client-6", dev);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().logged("refused client 'client-6' (CaSn -, DeviceSn d006): ca not registered"));
    CHECK(plugin.state().counters.refused_count(Refusal::ca_not_registered) == 1);
}

TEST_CASE("a certificate that only claims a registered CA as issuer is refused", "[glue][auth]") {
    // Same issuer name and key id as the registered CA, signed by another key.
    glue::Plugin plugin;
    auto forger = devcert::test::issue_with_key({.serial_hex = kCaSn, .common_name = "glue device ca", .is_ca = true},
                                                pki().root, devcert::test::KeyPair::generate().key);
    auto dev = pki().device("d007", "sensor-7", forger);
    auto c = client_with("client-7", dev);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
    CHECK(plugin.state().counters.refused_count(Refusal::ca_not_registered) == 1);
    CHECK_FALSE(plugin.device(kCaSn, "d007").has_value());
}

TEST_CASE("auto_register active accepts a new device and registers it active from the writer thread",
          "[glue][auth][auto_register]") {
    glue::Plugin plugin(devcert::OptionList{{"auto_register", "active"}});
    auto dev = pki().device("d010", "sensor-10", pki().ca);
    auto c = client_with("client-10", dev);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    REQUIRE(plugin.tick_until([&] { return plugin.state().counters.auto_registrations == 1; }));
    auto rec = plugin.device(kCaSn, "d010");
    REQUIRE(rec.has_value());
    CHECK(rec->status == CertStatus::active);
    CHECK(rec->registered_by == devcert::RegisteredBy::connection);
    CHECK(rec->device_name == "sensor-10");
    CHECK(plugin.broker().logged("registered DeviceSn d010 under CaSn 0c01 as active"));
    CHECK(plugin.broker().foreign_calls.empty());

    // The second connection finds the record: nothing registered twice.
    auto again = client_with("client-10b", dev);
    CHECK(plugin.broker().basic_auth(&again) == MOSQ_ERR_SUCCESS);
    plugin.state().writer->stop();
    CHECK(plugin.state().counters.auto_registrations == 1);
}

TEST_CASE("auto_register inactive registers a new device inactive and refuses it", "[glue][auth][auto_register]") {
    glue::Plugin plugin(devcert::OptionList{{"auto_register", "inactive"}});
    auto dev = pki().device("d011", "sensor-11", pki().ca);
    auto c = client_with("client-11", dev);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
    CHECK(plugin.state().counters.refused_count(Refusal::device_inactive) == 1);
    REQUIRE(plugin.tick_until([&] { return plugin.state().counters.auto_registrations == 1; }));
    auto rec = plugin.device(kCaSn, "d011");
    REQUIRE(rec.has_value());
    CHECK(rec->status == CertStatus::inactive);

    plugin.set_device_status(kCaSn, "d011", CertStatus::active);
    auto again = client_with("client-11", dev);
    CHECK(plugin.broker().basic_auth(&again) == MOSQ_ERR_SUCCESS);
}

TEST_CASE("auto_register off refuses a new device and registers nothing", "[glue][auth][auto_register]") {
    glue::Plugin plugin(devcert::OptionList{{"auto_register", "off"}});
    auto dev = pki().device("d012", "sensor-12", pki().ca);
    auto c = client_with("client-12", dev);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().logged("(CaSn 0c01, DeviceSn d012): not registered"));
    plugin.state().writer->stop();
    CHECK(plugin.state().counters.auto_registrations == 0);
    CHECK_FALSE(plugin.device(kCaSn, "d012").has_value());
}

TEST_CASE("the username follows the username option", "[glue][auth][username]") {
    auto dev = pki().device("d013", "sensor-13", pki().ca);
    SECTION("subject gives the RFC 2253 subject") {
        glue::Plugin plugin(devcert::OptionList{{"username", "subject"}});
        auto c = client_with("client-13", dev);
        REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
        CHECK(c.username == "CN=sensor-13,O=glue devices");
    }
    SECTION("device_sn gives the canonical serial") {
        glue::Plugin plugin(devcert::OptionList{{"username", "device_sn"}});
        auto c = client_with("client-13", dev);
        REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
        CHECK(c.username == "d013");
    }
    SECTION("keep leaves the CONNECT username alone") {
        glue::Plugin plugin(devcert::OptionList{{"username", "keep"}});
        auto c = client_with("client-13", dev);
        c.username = "from-connect";
        REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
        CHECK(c.username == "from-connect");
    }
}

TEST_CASE("a client without a certificate is deferred or denied per no_certificate", "[glue][auth]") {
    SECTION("defer") {
        glue::Plugin plugin;
        mosquitto c("plain-client", nullptr);
        CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_PLUGIN_DEFER);
        CHECK(plugin.state().counters.refused_count(Refusal::no_certificate) == 0);
    }
    SECTION("deny") {
        glue::Plugin plugin(devcert::OptionList{{"no_certificate", "deny"}});
        mosquitto c("plain-client", nullptr);
        CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
        CHECK(plugin.state().counters.refused_count(Refusal::no_certificate) == 1);
    }
}

TEST_CASE("imported CAs are registered active once and a later start never changes their status", "[glue][import]") {
    glue::Plugin plugin;
    CHECK(plugin.state().issuers.contains(kCaSn));
    plugin.set_ca_status(kCaSn, CertStatus::inactive);
    plugin.restart();
    CertStatus status = CertStatus::active;
    REQUIRE(plugin.state().reader->refresh());
    REQUIRE(plugin.state().reader->ca_status(kCaSn, status) == devcert::Lookup::found);
    plugin.state().reader->release();
    CHECK(status == CertStatus::inactive);
    CHECK(plugin.broker().logged("CA 0c01 from"));
}

TEST_CASE("a missing tick is reported once as an error naming per_listener_settings", "[glue][tick]") {
    glue::Plugin plugin;
    plugin.state().tick_watch.grace = std::chrono::milliseconds(20);
    auto dev = pki().device("d014", "sensor-14", pki().ca);
    auto a = client_with("client-14", dev);
    auto b = client_with("client-14b", dev);
    auto c = client_with("client-14c", dev);
    plugin.broker().basic_auth(&a);
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    plugin.broker().basic_auth(&b);
    plugin.broker().basic_auth(&c);
    std::size_t lines = 0;
    for (const auto& l : plugin.broker().log) lines += l.find("per_listener_settings") != std::string::npos;
    CHECK(lines == 1);
    CHECK(plugin.broker().logged("cannot be kicked"));
}

TEST_CASE("ticks arriving keep the tick watchdog quiet", "[glue][tick]") {
    glue::Plugin plugin;
    plugin.state().tick_watch.grace = std::chrono::milliseconds(20);
    auto dev = pki().device("d015", "sensor-15", pki().ca);
    auto a = client_with("client-15", dev);
    plugin.broker().basic_auth(&a);
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
    plugin.broker().tick();
    plugin.broker().basic_auth(&a);
    CHECK_FALSE(plugin.broker().logged("per_listener_settings"));
}

TEST_CASE("callbacks are registered for the four events and all removed again", "[glue]") {
    glue::Plugin plugin;
    for (int event : {MOSQ_EVT_BASIC_AUTH, MOSQ_EVT_TICK, MOSQ_EVT_DISCONNECT, MOSQ_EVT_RELOAD}) {
        CHECK(plugin.broker().callbacks_for(event) == 1);
    }
    plugin.stop();
    CHECK(plugin.broker().callbacks.empty());
}

TEST_CASE("a device certificate with a negative or zero serial is refused as a bad certificate and the next device is "
          "still served",
          "[glue][auth][bad_certificate]") {
    glue::Plugin plugin;
    auto negative = pki().device("-05", "sensor-negative", pki().ca);
    auto zero = pki().device("00", "sensor-zero", pki().ca);
    auto good = pki().device("d016", "sensor-16", pki().ca);
    auto a = client_with("client-negative", negative);
    auto b = client_with("client-zero", zero);
    auto c = client_with("client-16", good);

    CHECK(plugin.broker().basic_auth(&a) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().basic_auth(&b) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().logged(
        "refused client 'client-negative' (CaSn -, DeviceSn -): bad certificate (negative serial number)"));
    CHECK(plugin.broker().logged("refused client 'client-zero' (CaSn -, DeviceSn -): bad certificate (serial number zero)"));
    CHECK(plugin.state().counters.refused_count(Refusal::bad_certificate) == 2);
    CHECK_FALSE(a.username.has_value());
    CHECK(plugin.state().clients.size() == 0);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.state().counters.connections_accepted == 1);
    // Nothing was queued for registration on behalf of the bad certificates.
    REQUIRE(plugin.tick_until([&] { return plugin.state().counters.auto_registrations == 1; }));
    plugin.state().writer->stop();
    CHECK(plugin.state().counters.auto_registrations == 1);
}

TEST_CASE("a re-issued certificate with a registered CaSn and DeviceSn follows that record's status",
          "[glue][auth]") {
    glue::Plugin plugin;
    auto original = pki().device("d017", "sensor-17", pki().ca);
    auto reissued = pki().device("d017", "sensor-17", pki().ca);  // same serial, new key
    plugin.register_device(original, kCaSn, CertStatus::inactive);
    auto c = client_with("client-17", reissued);

    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().logged("refused client 'client-17' (CaSn 0c01, DeviceSn d017): device inactive"));
    plugin.set_device_status(kCaSn, "d017", CertStatus::active);
    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.state().online.online(kCaSn, "d017"));
    // The stored record stays the original's: nothing is registered for the new one.
    plugin.state().writer->stop();
    CHECK(plugin.state().counters.auto_registrations == 0);
    auto info = devcert::describe_certificate(original.cert.get());
    REQUIRE(info.ok());
    CHECK(plugin.device(kCaSn, "d017")->fingerprint == info->fingerprint);
}
