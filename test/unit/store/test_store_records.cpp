#include <catch2/catch.hpp>

#include "pki.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

TEST_CASE("a CA and its device round-trip every field", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    const CaRecord ca = make_ca("0a1b");
    const DeviceRecord device = make_device("0a1b", "01ff", CertStatus::inactive);
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(ca, "RegisterCaCertificate", "uid=0(root)"); !r) return r;
        return v.insert_device(device, "AutoRegister", "connection");
    });

    must_read(*store, [&](ReadView& v) {
        auto got_ca = v.get_ca("0a1b");
        REQUIRE(got_ca.ok());
        REQUIRE(got_ca->has_value());
        const CaRecord& c = **got_ca;
        CHECK(c.sn == ca.sn);
        CHECK(c.name == ca.name);
        CHECK(c.content_pem == ca.content_pem);
        CHECK(c.verification_pem == ca.verification_pem);
        CHECK(c.registration_code == ca.registration_code);
        CHECK(c.status == CertStatus::active);
        CHECK(c.valid_begin_ms == ca.valid_begin_ms);
        CHECK(c.valid_end_ms == ca.valid_end_ms);
        CHECK(c.created_ms == ca.created_ms);
        CHECK(c.registered_by == RegisteredBy::api);
        CHECK(c.subject_key_id == ca.subject_key_id);
        CHECK(c.fingerprint == ca.fingerprint);
        CHECK(c.device_count == 1);

        auto got = v.get_device("0a1b", "01ff");
        REQUIRE(got.ok());
        REQUIRE(got->has_value());
        const DeviceRecord& d = **got;
        CHECK(d.ca_sn == "0a1b");
        CHECK(d.device_sn == "01ff");
        CHECK(d.device_name == device.device_name);
        CHECK(d.content_pem == device.content_pem);
        CHECK(d.status == CertStatus::inactive);
        CHECK(d.valid_end_ms == device.valid_end_ms);
        CHECK(d.registered_by == RegisteredBy::connection);
        CHECK(d.fingerprint == device.fingerprint);

        auto by_ski = v.ca_by_subject_key_id("ski-0a1b");
        REQUIRE(by_ski.ok());
        CHECK(*by_ski == std::optional<std::string>("0a1b"));
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
    });
}

TEST_CASE("looking up records that do not exist finds nothing without error", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_read(*store, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("01")->has_value());
        CHECK_FALSE(v.get_device("01", "02")->has_value());
        CHECK_FALSE(v.get_device("", "02")->has_value());
        CHECK_FALSE(v.get_device(std::string(200, 'a'), "02")->has_value());
        CHECK_FALSE(v.ca_by_subject_key_id("nothing")->has_value());
        CHECK_FALSE(v.meta("instance_id")->has_value());
        CHECK(v.list_devices_by_ca("01", Page{}).error().code == Errc::not_found);
    });
}

TEST_CASE("inserting a taken CA Sn or device key is refused and changes nothing", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "AutoRegister", "t");
    });

    const Outcome dup_ca = store->write([&](WriteView& v) { return v.insert_ca(make_ca("0a"), "Register", "t"); });
    REQUIRE_FALSE(dup_ca.ok());
    CHECK(dup_ca.error().code == Errc::already_exists);
    CHECK(dup_ca.error().message == "ca '0a' is already registered");

    const Outcome dup_device = store->write([&](WriteView& v) {
        return v.insert_device(make_device("0a", "01", CertStatus::revoked), "AutoRegister", "t");
    });
    REQUIRE_FALSE(dup_device.ok());
    CHECK(dup_device.error().code == Errc::already_exists);

    must_read(*store, [&](ReadView& v) {
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
        CHECK((*v.get_device("0a", "01"))->status == CertStatus::active);
        CHECK(v.changes_after(0, 100)->size() == 2);
    });
}

TEST_CASE("a device under an unregistered CA is refused", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    const Outcome out = store->write([&](WriteView& v) { return v.insert_device(make_device("0b", "01"), "A", "t"); });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().code == Errc::not_found);
}

TEST_CASE("unusable serials are refused with the reason", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    const Outcome empty = store->write([&](WriteView& v) { return v.insert_ca(make_ca(""), "A", "t"); });
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error().code == Errc::invalid_argument);
    const Outcome too_long =
        store->write([&](WriteView& v) { return v.insert_ca(make_ca(std::string(130, 'a')), "A", "t"); });
    REQUIRE_FALSE(too_long.ok());
    CHECK(too_long.error().code == Errc::invalid_argument);
    const Outcome max_len =
        store->write([&](WriteView& v) { return v.insert_ca(make_ca(std::string(128, 'a')), "A", "t"); });
    CHECK(max_len.ok());
}

TEST_CASE("setting a device status returns the old one and logs old and new", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "AutoRegister", "connection");
    });

    std::optional<CertStatus> old;
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto r = v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "uid=1000(ops)");
        if (!r) return r.error();
        old = *r;
        return Ok{};
    });
    CHECK(old == CertStatus::active);

    must_read(*store, [&](ReadView& v) {
        const auto d = **v.get_device("0a", "01");
        CHECK(d.status == CertStatus::inactive);
        CHECK(d.status_changed_ms > 1'700'000'000'000);
        CHECK(d.updated_ms == d.status_changed_ms);
        CHECK(d.content_pem == std::string(64, 'p'));  // the rest of the record is untouched
        const auto log = *v.changes_after(2, 10);
        REQUIRE(log.size() == 1);
        CHECK(log[0].action == "InactivateDeviceCertificate");
        CHECK(log[0].ca_sn == "0a");
        CHECK(log[0].device_sn == "01");
        CHECK(log[0].old_status == CertStatus::active);
        CHECK(log[0].new_status == CertStatus::inactive);
        CHECK(log[0].caller == "uid=1000(ops)");
    });
}

TEST_CASE("setting the status a record already has changes and logs nothing", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "A", "t");
    });
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto d = v.set_device_status("0a", "01", CertStatus::active, "ActivateDeviceCertificate", "t");
        if (!d) return d.error();
        CHECK(*d == CertStatus::active);
        auto c = v.set_ca_status("0a", CertStatus::active, "ActivateCaCertificate", "t");
        if (!c) return c.error();
        CHECK(*c == CertStatus::active);
        return Ok{};
    });
    must_read(*store, [&](ReadView& v) {
        CHECK(v.changes_after(0, 100)->size() == 2);
        CHECK((*v.get_device("0a", "01"))->status_changed_ms == 1'700'000'000'000);
    });
}

TEST_CASE("a revoked device can be revoked again but never leaves revoked", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0a", "01"), "A", "t"); !r) return r;
        auto s = v.set_device_status("0a", "01", CertStatus::revoked, "RevokeDeviceCertificate", "t");
        return s ? Outcome(Ok{}) : Outcome(s.error());
    });
    for (CertStatus target : {CertStatus::active, CertStatus::inactive}) {
        const Outcome out = store->write([&](WriteView& v) -> Outcome {
            auto r = v.set_device_status("0a", "01", target, "ActivateDeviceCertificate", "t");
            return r ? Outcome(Ok{}) : Outcome(r.error());
        });
        REQUIRE_FALSE(out.ok());
        CHECK(out.error().code == Errc::revoked);
    }
    const Outcome again = store->write([&](WriteView& v) -> Outcome {
        auto r = v.set_device_status("0a", "01", CertStatus::revoked, "RevokeDeviceCertificate", "t");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    CHECK(again.ok());
    must_read(*store, [&](ReadView& v) {
        CHECK((*v.get_device("0a", "01"))->status == CertStatus::revoked);
        CHECK(v.changes_after(0, 100)->size() == 3);
    });
}

TEST_CASE("changing or removing a missing record reports not found", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    const Outcome out = store->write([&](WriteView& v) -> Outcome {
        CHECK(v.set_device_status("0a", "77", CertStatus::inactive, "I", "t").error().code == Errc::not_found);
        CHECK(v.set_ca_status("0b", CertStatus::inactive, "I", "t").error().code == Errc::not_found);
        CHECK(v.delete_device("0a", "77", "D", "t").error().code == Errc::not_found);
        CHECK(v.delete_ca("0b", "D", "t").error().code == Errc::not_found);
        return Ok{};
    });
    CHECK(out.ok());
}

TEST_CASE("deleting a device updates the counts and logs the removal", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0a", "01"), "A", "t"); !r) return r;
        return v.insert_device(make_device("0a", "02", CertStatus::inactive), "A", "t");
    });
    must_write(*store, [&](WriteView& v) { return v.delete_device("0a", "02", "DeleteDeviceCertificate", "ops"); });
    must_read(*store, [&](ReadView& v) {
        CHECK_FALSE(v.get_device("0a", "02")->has_value());
        CHECK(*v.device_count() == 1);
        CHECK((*v.get_ca("0a"))->device_count == 1);
        const auto log = *v.changes_after(3, 10);
        REQUIRE(log.size() == 1);
        CHECK(log[0].action == "DeleteDeviceCertificate");
        CHECK(log[0].old_status == CertStatus::inactive);
        CHECK_FALSE(log[0].new_status.has_value());
    });
}

TEST_CASE("deleting a CA removes its devices only and logs each, the CA last", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        for (const char* ca : {"0a", "0b"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        for (int i = 1; i <= 5; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i)), "A", "t"); !r) return r;
        return v.insert_device(make_device("0b", serial_for(1)), "A", "t");
    });
    std::uint64_t removed = 0;
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "DeleteCaCertificate", "ops");
        if (!r) return r.error();
        removed = *r;
        return Ok{};
    });
    CHECK(removed == 5);
    must_read(*store, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        CHECK_FALSE(v.ca_by_subject_key_id("ski-0a")->has_value());
        CHECK(*v.ca_by_subject_key_id("ski-0b") == std::optional<std::string>("0b"));
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
        CHECK(v.get_device("0b", serial_for(1))->has_value());
        const auto log = *v.changes_after(8, 100);
        REQUIRE(log.size() == 6);
        for (int i = 0; i < 5; ++i) {
            CHECK(log[i].device_sn == serial_for(static_cast<std::uint64_t>(i + 1)));
            CHECK(log[i].old_status == CertStatus::active);
            CHECK_FALSE(log[i].new_status.has_value());
        }
        CHECK(log[5].device_sn.empty());
        CHECK(log[5].ca_sn == "0a");
        CHECK(log[5].action == "DeleteCaCertificate");
    });
}

TEST_CASE("two CAs sharing a subject key identifier are both indexed", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto a = make_ca("0a");
        auto b = make_ca("0b");
        b.subject_key_id = a.subject_key_id;
        if (auto r = v.insert_ca(a, "R", "t"); !r) return r;
        return v.insert_ca(b, "R", "t");
    });
    must_write(*store, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "D", "t");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    must_read(*store, [&](ReadView& v) { CHECK(*v.ca_by_subject_key_id("ski-0a") == std::optional<std::string>("0b")); });
}

TEST_CASE("metadata is stored, and the store's own keys are refused", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    must_write(*store, [&](WriteView& v) { return v.set_meta("instance_id", "broker-1"); });
    must_read(*store, [&](ReadView& v) {
        CHECK(*v.meta("instance_id") == std::optional<std::string>("broker-1"));
        CHECK(*v.meta("schema_version") == std::optional<std::string>("1"));
    });
    for (const char* key : {"schema_version", "store.next_seq", ""}) {
        const Outcome out = store->write([&](WriteView& v) { return v.set_meta(key, "7"); });
        REQUIRE_FALSE(out.ok());
        CHECK(out.error().code == Errc::invalid_argument);
    }
}

TEST_CASE("a failing write function leaves nothing behind", "[store]") {
    TempDir dir;
    auto store = open_store(dir.path());
    const Outcome out = store->write([&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        return make_error(Errc::invalid_argument, "caller changed its mind");
    });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().message == "caller changed its mind");
    const Outcome thrown = store->write([&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0b"), "R", "t"); !r) return r;
        throw std::runtime_error("boom");
    });
    REQUIRE_FALSE(thrown.ok());
    CHECK(thrown.error().code == Errc::store_error);
    must_read(*store, [&](ReadView& v) {
        CHECK(*v.ca_count() == 0);
        CHECK(v.changes_after(0, 10)->empty());
    });
}

TEST_CASE("status names speak the API's and the logs' words", "[store]") {
    CHECK(std::string(status_string(CertStatus::inactive)) == "0");
    CHECK(std::string(status_string(CertStatus::active)) == "1");
    CHECK(std::string(status_string(CertStatus::revoked)) == "2");
    CHECK(std::string(status_name(CertStatus::revoked)) == "revoked");
    CHECK(std::string(registered_by_string(RegisteredBy::import)) == "import");
    CHECK(now_ms() > 1'700'000'000'000);
}

TEST_CASE("new records take serial, content, validity and fingerprint from the certificate", "[store][records]") {
    auto root = test::make_root({.serial_hex = "0a77", .common_name = "Records Root"});
    auto leaf = test::issue({.serial_hex = "0d77", .common_name = "sensor-77", .not_before_s = 1'700'000'000,
                             .not_after_s = 1'800'000'000},
                            root);
    auto ca_info = validate_ca_certificate(root.cert.get());
    auto dev_info = describe_certificate(leaf.cert.get());
    REQUIRE(ca_info.ok());
    REQUIRE(dev_info.ok());

    const CaRecord ca = new_ca_record(*ca_info, "Fleet", RegisteredBy::api, 1234);
    CHECK(ca.sn == "0a77");
    CHECK(ca.name == "Fleet");
    CHECK(ca.content_pem == ca_info->pem);
    CHECK(ca.verification_pem.empty());
    CHECK(ca.registration_code.empty());
    CHECK(ca.status == CertStatus::active);
    CHECK(ca.valid_begin_ms == ca_info->not_before_ms);
    CHECK(ca.valid_end_ms == ca_info->not_after_ms);
    CHECK((ca.created_ms == 1234 && ca.updated_ms == 1234 && ca.status_changed_ms == 1234));
    CHECK(ca.registered_by == RegisteredBy::api);
    CHECK(ca.subject_key_id == ca_info->subject_key_id);
    CHECK(ca.fingerprint == ca_info->fingerprint);
    CHECK(ca.device_count == 0);

    const DeviceRecord dev = new_device_record(*dev_info, "0a77", CertStatus::inactive, RegisteredBy::connection, 99);
    CHECK(dev.ca_sn == "0a77");
    CHECK(dev.device_sn == "0d77");
    CHECK(dev.device_name == "sensor-77");
    CHECK(dev.content_pem == dev_info->pem);
    CHECK(dev.status == CertStatus::inactive);
    CHECK(dev.valid_begin_ms == 1'700'000'000'000);
    CHECK(dev.valid_end_ms == 1'800'000'000'000);
    CHECK((dev.created_ms == 99 && dev.updated_ms == 99 && dev.status_changed_ms == 99));
    CHECK(dev.registered_by == RegisteredBy::connection);
    CHECK(dev.fingerprint == dev_info->fingerprint);
}
