// The username the plugin gives a device is exactly its certificate's
// value, or the device is refused: a common name with a NUL must not log in
// as the name before the NUL, a long name must not be cut, and what reaches
// the broker is valid UTF-8 (Mosquitto 2.0.16+ refuses anything else).
#include <openssl/evp.h>

#include "glue_fixture.hpp"

using devcert::Refusal;
using glue::pki;

namespace {

// A device certificate of the registered CA whose subject is `CN=<bytes>`
// stored as the ASN.1 string type given (no length limit, no conversion),
// plus `extra` O= entries to make long subjects.
devcert::test::Issued device_named(const std::string& serial, int asn1_type, const std::string& cn_bytes,
                                   int extra_orgs = 0) {
    auto dev = pki().device(serial, "placeholder", pki().ca);
    devcert::X509NamePtr name(X509_NAME_new());
    REQUIRE(name);
    REQUIRE(X509_NAME_add_entry_by_NID(name.get(), NID_commonName, asn1_type,
                                       reinterpret_cast<const unsigned char*>(cn_bytes.data()),
                                       static_cast<int>(cn_bytes.size()), -1, 0) == 1);
    for (int i = 0; i < extra_orgs; ++i) {
        const std::string org = "organisation-unit-number-" + std::to_string(i) + "-of-a-very-long-subject";
        REQUIRE(X509_NAME_add_entry_by_NID(name.get(), NID_organizationName, MBSTRING_UTF8,
                                           reinterpret_cast<const unsigned char*>(org.data()), -1, -1, 0) == 1);
    }
    REQUIRE(X509_set_subject_name(dev.cert.get(), name.get()) == 1);
    REQUIRE(X509_sign(dev.cert.get(), pki().ca.key.get(), EVP_sha256()) > 0);
    return dev;
}

struct Attempt {
    int rc;
    std::optional<std::string> username;
};

Attempt connect(glue::Plugin& plugin, const devcert::test::Issued& dev, const std::string& id) {
    mosquitto c(id, dev.cert.get());
    const int rc = plugin.broker().basic_auth(&c);
    return {rc, c.username};
}

void check_refused(glue::Plugin& plugin, const Attempt& a, const std::string& detail) {
    CHECK(a.rc == MOSQ_ERR_AUTH);
    CHECK_FALSE(a.username.has_value());
    CHECK(plugin.state().counters.refused_count(Refusal::bad_certificate) == 1);
    CHECK(plugin.state().counters.connections_accepted == 0);
    CHECK(plugin.broker().logged("bad certificate (" + detail + ")"));
    CHECK(plugin.state().clients.size() == 0);
}

}  // namespace

TEST_CASE("a common name with an embedded NUL is refused as a bad certificate, never cut at the NUL",
          "[glue][auth][username]") {
    glue::Plugin plugin;
    const auto dev = device_named("d301", V_ASN1_UTF8STRING, std::string("victim-sensor\0suffix", 20));
    const auto a = connect(plugin, dev, "nul-cn");
    check_refused(plugin, a, "common name contains a NUL character");
    CHECK(plugin.broker().logged("refused client 'nul-cn' (CaSn 0c01, DeviceSn d301): bad certificate"));
}

TEST_CASE("a common name with a control character is refused as a bad certificate", "[glue][auth][username]") {
    // Mosquitto 2.0.16+ refuses such a username; the plugin says why first.
    // (Invalid UTF-8 in a UTF8String, or an unpaired surrogate in a
    // BMPString, cannot reach the plugin: OpenSSL refuses to decode such a
    // name, so the TLS handshake fails. mqtt_string_problem() is checked on
    // those bytes below.)
    glue::Plugin plugin;
    const auto a = connect(plugin, device_named("d304", V_ASN1_UTF8STRING, "sensor\x1b[2J"), "escape");
    check_refused(plugin, a, "common name contains a control character");
}

TEST_CASE("mqtt_string_problem applies the rules of mosquitto_validate_utf8", "[glue][auth][username]") {
    using devcert::MqttStringProblem;
    using devcert::mqtt_string_problem;
    CHECK(mqtt_string_problem("sensor-1") == MqttStringProblem::none);
    CHECK(mqtt_string_problem("capteur-\xc3\xa9t\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") == MqttStringProblem::none);
    CHECK(mqtt_string_problem(std::string("a\0b", 3)) == MqttStringProblem::nul);
    CHECK(mqtt_string_problem("a\x1f") == MqttStringProblem::control);
    CHECK(mqtt_string_problem("a\x7f") == MqttStringProblem::control);
    CHECK(mqtt_string_problem("a\xc2\x85") == MqttStringProblem::control);  // U+0085
    CHECK(mqtt_string_problem("\xff") == MqttStringProblem::malformed);
    CHECK(mqtt_string_problem("\x80") == MqttStringProblem::malformed);           // lone continuation
    CHECK(mqtt_string_problem("\xc0\xaf") == MqttStringProblem::malformed);      // overlong '/'
    CHECK(mqtt_string_problem("\xe0\x80\xaf") == MqttStringProblem::malformed);  // overlong '/'
    CHECK(mqtt_string_problem("\xed\xa0\x80") == MqttStringProblem::malformed);  // U+D800
    CHECK(mqtt_string_problem("\xf4\x90\x80\x80") == MqttStringProblem::malformed);  // > U+10FFFF
    CHECK(mqtt_string_problem("\xe2\x82") == MqttStringProblem::malformed);      // cut short
    CHECK(mqtt_string_problem("\xef\xbf\xbe") == MqttStringProblem::noncharacter);  // U+FFFE
    CHECK(mqtt_string_problem("\xef\xb7\x90") == MqttStringProblem::noncharacter);  // U+FDD0
    CHECK(mqtt_string_problem(std::string(65535, 'x')) == MqttStringProblem::none);
    CHECK(mqtt_string_problem(std::string(65536, 'x')) == MqttStringProblem::too_long);
}

TEST_CASE("common names in other string types become their UTF-8 text", "[glue][auth][username]") {
    glue::Plugin plugin;
    SECTION("BMPString") {
        // "sensor-é" in UCS-2, big-endian.
        const std::string ucs2("\0s\0e\0n\0s\0o\0r\0-\0\xe9", 16);
        const auto a = connect(plugin, device_named("d305", V_ASN1_BMPSTRING, ucs2), "bmp");
        CHECK(a.rc == MOSQ_ERR_SUCCESS);
        CHECK(a.username == "sensor-\xc3\xa9");
    }
    SECTION("T61String (Latin-1 as OpenSSL reads it)") {
        const auto a = connect(plugin, device_named("d306", V_ASN1_T61STRING, "sensor-\xe9"), "t61");
        CHECK(a.rc == MOSQ_ERR_SUCCESS);
        CHECK(a.username == "sensor-\xc3\xa9");
    }
    SECTION("UTF8String with non-ASCII text") {
        const auto a = connect(plugin, device_named("d307", V_ASN1_UTF8STRING, "capteur-\xc3\xa9t\xc3\xa9"), "utf8");
        CHECK(a.rc == MOSQ_ERR_SUCCESS);
        CHECK(a.username == "capteur-\xc3\xa9t\xc3\xa9");
    }
}

TEST_CASE("long common names and subjects are kept whole, so two long names never collide",
          "[glue][auth][username]") {
    const std::string prefix(300, 'n');
    SECTION("cn") {
        glue::Plugin plugin;
        const auto a = connect(plugin, device_named("d308", V_ASN1_UTF8STRING, prefix + "-one"), "long-1");
        const auto b = connect(plugin, device_named("d309", V_ASN1_UTF8STRING, prefix + "-two"), "long-2");
        CHECK(a.rc == MOSQ_ERR_SUCCESS);
        CHECK(b.rc == MOSQ_ERR_SUCCESS);
        CHECK(a.username == prefix + "-one");
        CHECK(b.username == prefix + "-two");
    }
    SECTION("subject") {
        glue::Plugin plugin(devcert::OptionList{{"username", "subject"}});
        const auto a = connect(plugin, device_named("d310", V_ASN1_UTF8STRING, "sensor-310", 8), "long-subject");
        REQUIRE(a.rc == MOSQ_ERR_SUCCESS);
        REQUIRE(a.username.has_value());
        CHECK(a.username->size() > 400);
        CHECK(a.username->starts_with("O=organisation-unit-number-7-of-a-very-long-subject,"));
        CHECK(a.username->ends_with(",CN=sensor-310"));
    }
    SECTION("a common name longer than an MQTT string is refused") {
        glue::Plugin plugin;
        const auto a = connect(plugin, device_named("d311", V_ASN1_UTF8STRING, std::string(70000, 'x')), "huge");
        check_refused(plugin, a, "common name longer than 65535 bytes");
    }
}

TEST_CASE("in subject mode a NUL or a control character is escaped, as RFC 2253 prints it",
          "[glue][auth][username]") {
    glue::Plugin plugin(devcert::OptionList{{"username", "subject"}});
    const auto a =
        connect(plugin, device_named("d312", V_ASN1_UTF8STRING, std::string("victim\0x\x1b", 9)), "subject-nul");
    CHECK(a.rc == MOSQ_ERR_SUCCESS);
    CHECK(a.username == "CN=victim\\00x\\1B");
}
