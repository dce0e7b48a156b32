// The store's record, paging, change-log and batch cases, run against both
// implementations of WriteView: LMDB (Store) and PostgreSQL (Fleet). What a
// caller can observe must be the same: errors, idempotency, revoked as
// terminal, counts, paging order, the log's entries and their order.
#include <catch2/catch.hpp>

#include "fleet_fixture.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

struct LmdbBackend {
    static constexpr const char* name = "lmdb";
    TempDir dir;
    std::unique_ptr<Store> store = open_store(dir.path());

    Outcome write(const std::function<Outcome(WriteView&)>& fn) { return store->write(fn); }
    Outcome read(const std::function<Outcome(ReadView&)>& fn) { return store->read(fn); }
    Outcome write_batch(const std::vector<std::function<Outcome(WriteView&)>>& fns, std::vector<Outcome>& results) {
        return store->write_batch(fns, results);
    }
};

struct PgBackend {
    static constexpr const char* name = "postgresql";
    FleetDb db;
    std::unique_ptr<Fleet> fleet = db.connect();

    Outcome write(const std::function<Outcome(WriteView&)>& fn) {
        auto r = fleet->write(fn);
        return r ? Outcome(Ok{}) : Outcome(r.error());
    }
    Outcome read(const std::function<Outcome(ReadView&)>& fn) { return fleet->read(fn); }
    Outcome write_batch(const std::vector<std::function<Outcome(WriteView&)>>& fns, std::vector<Outcome>& results) {
        auto r = fleet->write_batch(fns, results);
        return r ? Outcome(Ok{}) : Outcome(r.error());
    }
};

template <class B, class Fn>
void must_write(B& b, Fn&& fn) {
    const Outcome out = b.write([&](WriteView& view) -> Outcome { return fn(view); });
    if (!out) FAIL(out.error().message);
}

template <class B, class Fn>
void must_read(B& b, Fn&& fn) {
    const Outcome out = b.read([&](ReadView& view) -> Outcome {
        fn(view);
        return Ok{};
    });
    if (!out) FAIL(out.error().message);
}

Outcome status_outcome(const Result<CertStatus>& r) { return r ? Outcome(Ok{}) : Outcome(r.error()); }

}  // namespace

#define BACKENDS LmdbBackend, PgBackend

TEMPLATE_TEST_CASE("both stores: a CA and its device round-trip every field", "[fleet][conformance]", BACKENDS) {
    TestType b;
    const CaRecord ca = make_ca("0a1b");
    const DeviceRecord device = make_device("0a1b", "01ff", CertStatus::inactive);
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(ca, "RegisterCaCertificate", "uid=0(root)"); !r) return r;
        return v.insert_device(device, "AutoRegister", "connection");
    });
    must_read(b, [&](ReadView& v) {
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
        CHECK(c.updated_ms == ca.updated_ms);
        CHECK(c.status_changed_ms == ca.status_changed_ms);
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
        CHECK(d.valid_begin_ms == device.valid_begin_ms);
        CHECK(d.valid_end_ms == device.valid_end_ms);
        CHECK(d.created_ms == device.created_ms);
        CHECK(d.registered_by == RegisteredBy::connection);
        CHECK(d.fingerprint == device.fingerprint);

        CHECK(*v.ca_by_subject_key_id("ski-0a1b") == std::optional<std::string>("0a1b"));
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
    });
}

TEMPLATE_TEST_CASE("both stores: binary key ids and fingerprints survive", "[fleet][conformance]", BACKENDS) {
    TestType b;
    CaRecord ca = make_ca("0c");
    ca.subject_key_id = std::string("\x00\xff\x10\x80 \\x'", 9);
    for (std::size_t i = 0; i < ca.fingerprint.size(); ++i) ca.fingerprint[i] = static_cast<std::uint8_t>(255 - i);
    must_write(b, [&](WriteView& v) { return v.insert_ca(ca, "R", "t"); });
    must_read(b, [&](ReadView& v) {
        CHECK((*v.get_ca("0c"))->subject_key_id == ca.subject_key_id);
        CHECK((*v.get_ca("0c"))->fingerprint == ca.fingerprint);
        CHECK(*v.ca_by_subject_key_id(ca.subject_key_id) == std::optional<std::string>("0c"));
    });
}

TEMPLATE_TEST_CASE("both stores: looking up records that do not exist finds nothing without error",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_read(b, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("01")->has_value());
        CHECK_FALSE(v.get_ca("")->has_value());
        CHECK_FALSE(v.get_device("01", "02")->has_value());
        CHECK_FALSE(v.get_device("", "02")->has_value());
        CHECK_FALSE(v.get_device(std::string(200, 'a'), "02")->has_value());
        CHECK_FALSE(v.ca_by_subject_key_id("nothing")->has_value());
        CHECK_FALSE(v.ca_by_subject_key_id("")->has_value());
        CHECK_FALSE(v.meta("instance_id")->has_value());
        CHECK(v.list_devices_by_ca("01", Page{}).error().code == Errc::not_found);
        CHECK(*v.ca_count() == 0);
        CHECK(v.changes_after(0, 10)->empty());
    });
}

TEMPLATE_TEST_CASE("both stores: inserting a taken CA Sn or device key is refused and changes nothing",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "AutoRegister", "t");
    });
    const Outcome dup_ca = b.write([&](WriteView& v) { return v.insert_ca(make_ca("0a"), "Register", "t"); });
    REQUIRE_FALSE(dup_ca.ok());
    CHECK(dup_ca.error().code == Errc::already_exists);
    CHECK(dup_ca.error().message == "ca '0a' is already registered");

    const Outcome dup_device = b.write([&](WriteView& v) {
        return v.insert_device(make_device("0a", "01", CertStatus::revoked), "AutoRegister", "t");
    });
    REQUIRE_FALSE(dup_device.ok());
    CHECK(dup_device.error().code == Errc::already_exists);
    CHECK(dup_device.error().message == "device '01' of ca '0a' is already registered");

    must_read(b, [&](ReadView& v) {
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
        CHECK((*v.get_device("0a", "01"))->status == CertStatus::active);
        CHECK(v.changes_after(0, 100)->size() == 2);
    });
}

TEMPLATE_TEST_CASE("both stores: a device under an unregistered CA is refused", "[fleet][conformance]", BACKENDS) {
    TestType b;
    const Outcome out = b.write([&](WriteView& v) { return v.insert_device(make_device("0b", "01"), "A", "t"); });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().code == Errc::not_found);
    CHECK(out.error().message == "ca '0b' is not registered");
}

TEMPLATE_TEST_CASE("both stores: unusable serials are refused with the reason", "[fleet][conformance]", BACKENDS) {
    TestType b;
    const Outcome empty = b.write([&](WriteView& v) { return v.insert_ca(make_ca(""), "A", "t"); });
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error().code == Errc::invalid_argument);
    const Outcome too_long = b.write([&](WriteView& v) { return v.insert_ca(make_ca(std::string(130, 'a')), "A", "t"); });
    REQUIRE_FALSE(too_long.ok());
    CHECK(too_long.error().code == Errc::invalid_argument);
    const Outcome max_len = b.write([&](WriteView& v) { return v.insert_ca(make_ca(std::string(128, 'a')), "A", "t"); });
    CHECK(max_len.ok());
    const Outcome bad_device = b.write([&](WriteView& v) { return v.insert_device(make_device("0a", ""), "A", "t"); });
    REQUIRE_FALSE(bad_device.ok());
    CHECK(bad_device.error().code == Errc::invalid_argument);
    const Outcome long_ski = b.write([&](WriteView& v) {
        auto ca = make_ca("0d");
        ca.subject_key_id = std::string(256, 'k');
        return v.insert_ca(ca, "A", "t");
    });
    REQUIRE_FALSE(long_ski.ok());
    CHECK(long_ski.error().code == Errc::invalid_argument);
}

TEMPLATE_TEST_CASE("both stores: setting a device status returns the old one and logs old and new",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "AutoRegister", "connection");
    });
    std::optional<CertStatus> old;
    must_write(b, [&](WriteView& v) -> Outcome {
        auto r = v.set_device_status("0a", "01", CertStatus::inactive, "InactivateDeviceCertificate", "uid=1000(ops)");
        if (!r) return r.error();
        old = *r;
        return Ok{};
    });
    CHECK(old == CertStatus::active);
    must_read(b, [&](ReadView& v) {
        const auto d = **v.get_device("0a", "01");
        CHECK(d.status == CertStatus::inactive);
        CHECK(d.status_changed_ms > 1'700'000'000'000);
        CHECK(d.updated_ms == d.status_changed_ms);
        CHECK(d.content_pem == std::string(64, 'p'));
        const auto log = *v.changes_after(2, 10);
        REQUIRE(log.size() == 1);
        CHECK(log[0].seq == 3);
        CHECK(log[0].action == "InactivateDeviceCertificate");
        CHECK(log[0].ca_sn == "0a");
        CHECK(log[0].device_sn == "01");
        CHECK(log[0].old_status == CertStatus::active);
        CHECK(log[0].new_status == CertStatus::inactive);
        CHECK(log[0].caller == "uid=1000(ops)");
        CHECK(log[0].time_ms == d.status_changed_ms);
    });
}

TEMPLATE_TEST_CASE("both stores: setting the status a record already has changes and logs nothing",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        return v.insert_device(make_device("0a", "01"), "A", "t");
    });
    must_write(b, [&](WriteView& v) -> Outcome {
        auto d = v.set_device_status("0a", "01", CertStatus::active, "ActivateDeviceCertificate", "t");
        if (!d) return d.error();
        CHECK(*d == CertStatus::active);
        auto c = v.set_ca_status("0a", CertStatus::active, "ActivateCaCertificate", "t");
        if (!c) return c.error();
        CHECK(*c == CertStatus::active);
        return Ok{};
    });
    must_read(b, [&](ReadView& v) {
        CHECK(v.changes_after(0, 100)->size() == 2);
        CHECK((*v.get_device("0a", "01"))->status_changed_ms == 1'700'000'000'000);
        CHECK((*v.get_ca("0a"))->status_changed_ms == 1'700'000'000'000);
    });
}

TEMPLATE_TEST_CASE("both stores: a revoked device or CA can be revoked again but never leaves revoked",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0a", "01"), "A", "t"); !r) return r;
        if (auto s = v.set_ca_status("0a", CertStatus::revoked, "RevokeCaCertificate", "t"); !s) return s.error();
        return status_outcome(v.set_device_status("0a", "01", CertStatus::revoked, "RevokeDeviceCertificate", "t"));
    });
    for (CertStatus target : {CertStatus::active, CertStatus::inactive}) {
        const Outcome out = b.write([&](WriteView& v) -> Outcome {
            return status_outcome(v.set_device_status("0a", "01", target, "ActivateDeviceCertificate", "t"));
        });
        REQUIRE_FALSE(out.ok());
        CHECK(out.error().code == Errc::revoked);
        CHECK(out.error().message == "device '01' of ca '0a' is revoked; revocation is final");
        const Outcome ca = b.write([&](WriteView& v) -> Outcome {
            return status_outcome(v.set_ca_status("0a", target, "ActivateCaCertificate", "t"));
        });
        REQUIRE_FALSE(ca.ok());
        CHECK(ca.error().code == Errc::revoked);
        CHECK(ca.error().message == "ca '0a' is revoked; revocation is final");
    }
    const Outcome again = b.write([&](WriteView& v) -> Outcome {
        return status_outcome(v.set_device_status("0a", "01", CertStatus::revoked, "RevokeDeviceCertificate", "t"));
    });
    CHECK(again.ok());
    must_read(b, [&](ReadView& v) {
        CHECK((*v.get_device("0a", "01"))->status == CertStatus::revoked);
        CHECK((*v.get_ca("0a"))->status == CertStatus::revoked);
        CHECK(v.changes_after(0, 100)->size() == 4);
    });
}

TEMPLATE_TEST_CASE("both stores: changing or removing a missing record reports not found", "[fleet][conformance]",
                   BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    const Outcome out = b.write([&](WriteView& v) -> Outcome {
        CHECK(v.set_device_status("0a", "77", CertStatus::inactive, "I", "t").error().code == Errc::not_found);
        CHECK(v.set_ca_status("0b", CertStatus::inactive, "I", "t").error().code == Errc::not_found);
        CHECK(v.set_ca_status("", CertStatus::inactive, "I", "t").error().code == Errc::not_found);
        CHECK(v.delete_device("0a", "77", "D", "t").error().code == Errc::not_found);
        CHECK(v.delete_device("0a", "77", "D", "t").error().message == "device '77' of ca '0a' is not registered");
        CHECK(v.delete_ca("0b", "D", "t").error().code == Errc::not_found);
        // The transaction stays usable after refusals.
        return v.insert_device(make_device("0a", "01"), "A", "t");
    });
    CHECK(out.ok());
    must_read(b, [&](ReadView& v) { CHECK(v.changes_after(0, 100)->size() == 2); });
}

TEMPLATE_TEST_CASE("both stores: deleting a device updates the counts and logs the removal", "[fleet][conformance]",
                   BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0a", "01"), "A", "t"); !r) return r;
        return v.insert_device(make_device("0a", "02", CertStatus::inactive), "A", "t");
    });
    must_write(b, [&](WriteView& v) { return v.delete_device("0a", "02", "DeleteDeviceCertificate", "ops"); });
    must_read(b, [&](ReadView& v) {
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

TEMPLATE_TEST_CASE("both stores: deleting a CA removes its devices only and logs each, the CA last",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        for (const char* ca : {"0a", "0b", "0a0"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        for (int i = 5; i >= 1; --i)
            if (auto r = v.insert_device(make_device("0a", serial_for(static_cast<std::uint64_t>(i))), "A", "t"); !r)
                return r;
        if (auto r = v.insert_device(make_device("0a0", serial_for(1)), "A", "t"); !r) return r;
        return v.insert_device(make_device("0b", serial_for(1)), "A", "t");
    });
    std::uint64_t removed = 0;
    must_write(b, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "DeleteCaCertificate", "ops");
        if (!r) return r.error();
        removed = *r;
        return Ok{};
    });
    CHECK(removed == 5);
    must_read(b, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        CHECK_FALSE(v.ca_by_subject_key_id("ski-0a")->has_value());
        CHECK(*v.ca_by_subject_key_id("ski-0b") == std::optional<std::string>("0b"));
        CHECK(*v.ca_count() == 2);
        CHECK(*v.device_count() == 2);
        CHECK(v.get_device("0b", serial_for(1))->has_value());
        CHECK(v.get_device("0a0", serial_for(1))->has_value());
        const auto log = *v.changes_after(10, 100);
        REQUIRE(log.size() == 6);
        for (std::size_t i = 0; i < 5; ++i) {
            CHECK(log[i].seq == 11 + i);
            CHECK(log[i].device_sn == serial_for(i + 1));
            CHECK(log[i].old_status == CertStatus::active);
            CHECK_FALSE(log[i].new_status.has_value());
            CHECK(log[i].time_ms == log[5].time_ms);
        }
        CHECK(log[5].device_sn.empty());
        CHECK(log[5].ca_sn == "0a");
        CHECK(log[5].action == "DeleteCaCertificate");
        CHECK(log[5].old_status == CertStatus::active);
    });
}

TEMPLATE_TEST_CASE("both stores: a CA deleted in batches is inactivated and marked first, then emptied, then removed",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        for (int i = 1; i <= 5; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(static_cast<std::uint64_t>(i))), "A", "t"); !r)
                return r;
        return Ok{};
    });
    must_write(b, [&](WriteView& v) -> Outcome { return v.begin_ca_deletion("0a", "DeleteCaCertificate", "ops"); });
    // Idempotent: a second start changes and logs nothing.
    must_write(b, [&](WriteView& v) -> Outcome { return v.begin_ca_deletion("0a", "DeleteCaCertificate", "ops"); });
    must_write(b, [&](WriteView& v) -> Outcome {
        CHECK(*v.ca_being_deleted("0a"));
        CHECK_FALSE(*v.ca_being_deleted("0b"));
        CHECK((*v.get_ca("0a"))->status == CertStatus::inactive);
        // While it is being deleted it can be neither activated nor given devices.
        CHECK(v.set_ca_status("0a", CertStatus::active, "A", "t").error().code == Errc::not_found);
        CHECK(v.insert_device(make_device("0a", serial_for(9)), "A", "t").error().code == Errc::not_found);
        return Ok{};
    });
    std::vector<std::uint64_t> batches;
    for (int round = 0; round < 4; ++round) {
        must_write(b, [&](WriteView& v) -> Outcome {
            auto r = v.delete_ca_devices("0a", 2, "DeleteCaCertificate", "ops");
            if (!r) return r.error();
            batches.push_back(*r);
            return Ok{};
        });
    }
    CHECK(batches == std::vector<std::uint64_t>{2, 2, 1, 0});
    must_write(b, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "DeleteCaCertificate", "ops");
        if (!r) return r.error();
        CHECK(*r == 0);
        return Ok{};
    });
    must_read(b, [&](ReadView& v) {
        CHECK_FALSE(v.get_ca("0a")->has_value());
        CHECK_FALSE(*v.ca_being_deleted("0a"));
        CHECK(*v.ca_count() == 0);
        CHECK(*v.device_count() == 0);
        const auto log = *v.changes_after(6, 100);
        REQUIRE(log.size() == 7);
        CHECK(log[0].device_sn.empty());
        CHECK(log[0].old_status == CertStatus::active);
        CHECK(log[0].new_status == CertStatus::inactive);
        for (std::size_t i = 1; i <= 5; ++i) {
            CHECK(log[i].device_sn == serial_for(i));
            CHECK_FALSE(log[i].new_status.has_value());
        }
        CHECK(log[6].device_sn.empty());
        CHECK(log[6].old_status == CertStatus::inactive);
        CHECK_FALSE(log[6].new_status.has_value());
        for (std::size_t i = 1; i < log.size(); ++i) CHECK(log[i].seq == log[i - 1].seq + 1);
    });
    must_write(b, [&](WriteView& v) -> Outcome {
        CHECK(v.begin_ca_deletion("0a", "D", "t").error().code == Errc::not_found);
        CHECK(v.delete_ca_devices("0a", 2, "D", "t").error().code == Errc::not_found);
        return Ok{};
    });
}

TEMPLATE_TEST_CASE("both stores: a continuation token the store did not issue is refused", "[fleet][conformance][paging]",
                   BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome { return v.insert_ca(make_ca("0a"), "R", "t"); });
    must_read(b, [&](ReadView& v) {
        Page page(1, 10);
        page.after = "not-a-token";
        CHECK(v.list_cas(page).error().code == Errc::invalid_argument);
        CHECK(v.list_devices(page).error().code == Errc::invalid_argument);
        CHECK(v.list_devices_by_ca("0a", page).error().code == Errc::invalid_argument);
    });
}

TEMPLATE_TEST_CASE("both stores: two CAs sharing a subject key identifier are both indexed", "[fleet][conformance]",
                   BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        auto a = make_ca("0b");
        auto c = make_ca("0a");
        c.subject_key_id = a.subject_key_id;
        if (auto r = v.insert_ca(a, "R", "t"); !r) return r;
        return v.insert_ca(c, "R", "t");
    });
    must_read(b, [&](ReadView& v) { CHECK(*v.ca_by_subject_key_id("ski-0b") == std::optional<std::string>("0a")); });
    must_write(b, [&](WriteView& v) -> Outcome {
        auto r = v.delete_ca("0a", "D", "t");
        return r ? Outcome(Ok{}) : Outcome(r.error());
    });
    must_read(b, [&](ReadView& v) { CHECK(*v.ca_by_subject_key_id("ski-0b") == std::optional<std::string>("0b")); });
}

TEMPLATE_TEST_CASE("both stores: metadata is stored, and the store's own keys are refused", "[fleet][conformance]",
                   BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) { return v.set_meta("instance_id", "broker-1"); });
    must_write(b, [&](WriteView& v) { return v.set_meta("instance_id", "broker-2"); });
    must_read(b, [&](ReadView& v) {
        CHECK(*v.meta("instance_id") == std::optional<std::string>("broker-2"));
        CHECK(*v.meta("schema_version") == std::optional<std::string>("1"));
        CHECK(v.changes_after(0, 10)->empty());
    });
    for (const char* key : {"schema_version", "store.next_seq", ""}) {
        const Outcome out = b.write([&](WriteView& v) { return v.set_meta(key, "7"); });
        REQUIRE_FALSE(out.ok());
        CHECK(out.error().code == Errc::invalid_argument);
    }
}

TEMPLATE_TEST_CASE("both stores: a failing write function leaves nothing behind", "[fleet][conformance]", BACKENDS) {
    TestType b;
    const Outcome out = b.write([&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        return make_error(Errc::invalid_argument, "caller changed its mind");
    });
    REQUIRE_FALSE(out.ok());
    CHECK(out.error().message == "caller changed its mind");
    const Outcome thrown = b.write([&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0b"), "R", "t"); !r) return r;
        throw std::runtime_error("boom");
    });
    REQUIRE_FALSE(thrown.ok());
    CHECK(thrown.error().code == Errc::store_error);
    CHECK(thrown.error().message == "transaction body failed: boom");
    must_read(b, [&](ReadView& v) {
        CHECK(*v.ca_count() == 0);
        CHECK(v.changes_after(0, 10)->empty());
    });
    // Seqs are taken at commit: the aborted transactions used none.
    must_write(b, [&](WriteView& v) { return v.insert_ca(make_ca("0c"), "R", "t"); });
    must_read(b, [&](ReadView& v) { CHECK(v.changes_after(0, 10)->at(0).seq == 1); });
}

TEMPLATE_TEST_CASE("both stores: counts and the log inside a write transaction include its own changes",
                   "[fleet][conformance]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;
        if (auto r = v.insert_device(make_device("0a", "01"), "A", "t"); !r) return r;
        CHECK(*v.ca_count() == 1);
        CHECK(*v.device_count() == 1);
        CHECK(v.list_cas(Page{1, 10})->total == 1);
        CHECK(v.list_devices(Page{1, 10})->items.size() == 1);
        const auto log = *v.changes_after(0, 10);
        REQUIRE(log.size() == 2);
        CHECK(log[1].seq == 2);
        return v.insert_device(make_device("0a", "02"), "A", "t");
    });
    must_read(b, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 10);
        REQUIRE(log.size() == 3);
        CHECK(log[2].seq == 3);
        CHECK(log[2].device_sn == "02");
    });
}

// --- paging -----------------------------------------------------------------

namespace {

template <class B>
void populate(B& b) {
    must_write(b, [&](WriteView& v) -> Outcome {
        for (const char* ca : {"0a", "0b", "0c"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= 3; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i)), "A", "t"); !r) return r;
        for (std::uint64_t i = 250; i >= 1; --i)
            if (auto r = v.insert_device(make_device("0b", serial_for(i)), "A", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= 2; ++i)
            if (auto r = v.insert_device(make_device("0c", serial_for(i)), "A", "t"); !r) return r;
        return Ok{};
    });
}

}  // namespace

TEMPLATE_TEST_CASE("both stores: pages of one CA's devices cover it exactly, in serial order",
                   "[fleet][conformance][paging]", BACKENDS) {
    TestType b;
    populate(b);
    must_read(b, [&](ReadView& v) {
        for (std::uint32_t size : {1u, 7u, 100u}) {
            std::vector<std::string> seen;
            const std::uint32_t pages = (250 + size - 1) / size;
            for (std::uint32_t no = 1; no <= pages; ++no) {
                auto page = v.list_devices_by_ca("0b", Page{no, size});
                REQUIRE(page.ok());
                CHECK(page->total == 250);
                const std::size_t expected = no < pages ? size : 250 - (pages - 1) * size;
                REQUIRE(page->items.size() == expected);
                for (const auto& d : page->items) {
                    CHECK(d.ca_sn == "0b");
                    seen.push_back(d.device_sn);
                }
            }
            REQUIRE(seen.size() == 250);
            for (std::uint64_t i = 0; i < 250; ++i) CHECK(seen[i] == serial_for(i + 1));
        }
    });
}

TEMPLATE_TEST_CASE("both stores: a page past the end is empty but still reports the total",
                   "[fleet][conformance][paging]", BACKENDS) {
    TestType b;
    populate(b);
    must_read(b, [&](ReadView& v) {
        auto past = v.list_devices_by_ca("0b", Page{4, 100});
        REQUIRE(past.ok());
        CHECK(past->items.empty());
        CHECK(past->total == 250);
        auto far = v.list_devices(Page{1'000'000, 100});
        REQUIRE(far.ok());
        CHECK(far->items.empty());
        CHECK(far->total == 255);
        auto last_ca = v.list_devices_by_ca("0c", Page{2, 2});
        REQUIRE(last_ca.ok());
        CHECK(last_ca->items.empty());
        CHECK(last_ca->total == 2);
    });
}

TEMPLATE_TEST_CASE("both stores: page zero and size zero are refused", "[fleet][conformance][paging]", BACKENDS) {
    TestType b;
    populate(b);
    must_read(b, [&](ReadView& v) {
        CHECK(v.list_devices(Page{0, 10}).error().code == Errc::invalid_argument);
        CHECK(v.list_cas(Page{1, 0}).error().code == Errc::invalid_argument);
        CHECK(v.list_devices(Page{0, 10}).error().message == "page 0 of size 10 does not exist (both start at 1)");
    });
}

TEMPLATE_TEST_CASE("both stores: the global device list runs through CAs in (CaSn, DeviceSn) order",
                   "[fleet][conformance][paging]", BACKENDS) {
    TestType b;
    populate(b);
    must_read(b, [&](ReadView& v) {
        auto first = v.list_devices(Page{1, 5});
        REQUIRE(first.ok());
        CHECK(first->total == 255);
        REQUIRE(first->items.size() == 5);
        CHECK(first->items[0].ca_sn == "0a");
        CHECK(first->items[2].ca_sn == "0a");
        CHECK(first->items[3].ca_sn == "0b");
        CHECK(first->items[3].device_sn == serial_for(1));
        CHECK(first->items[3].content_pem == std::string(64, 'p'));
        auto last = v.list_devices(Page{3, 100});
        REQUIRE(last.ok());
        REQUIRE(last->items.size() == 55);
        CHECK(last->items.back().ca_sn == "0c");
        CHECK(last->items.back().device_sn == serial_for(2));
    });
}

TEMPLATE_TEST_CASE("both stores: serials order by bytes, as the store's keys do", "[fleet][conformance][paging]",
                   BACKENDS) {
    TestType b;
    // Upper case before lower case, and a prefix before its extensions: the
    // byte order, whatever the database's locale would say.
    const std::vector<std::string> sns{"0A", "0B", "0a", "0a0", "0a1", "_", "a", "b"};
    must_write(b, [&](WriteView& v) -> Outcome {
        for (auto it = sns.rbegin(); it != sns.rend(); ++it)
            if (auto r = v.insert_ca(make_ca(*it), "R", "t"); !r) return r;
        return Ok{};
    });
    must_read(b, [&](ReadView& v) {
        auto page = v.list_cas(Page{1, 100});
        REQUIRE(page.ok());
        std::vector<std::string> got;
        for (const auto& c : page->items) got.push_back(c.sn);
        CHECK(got == sns);
    });
}

TEMPLATE_TEST_CASE("both stores: CAs list in Sn order with their device counts", "[fleet][conformance][paging]",
                   BACKENDS) {
    TestType b;
    populate(b);
    must_read(b, [&](ReadView& v) {
        auto page = v.list_cas(Page{1, 100});
        REQUIRE(page.ok());
        CHECK(page->total == 3);
        REQUIRE(page->items.size() == 3);
        CHECK(page->items[0].sn == "0a");
        CHECK(page->items[1].device_count == 250);
        CHECK(page->items[2].sn == "0c");
        auto second = v.list_cas(Page{2, 2});
        REQUIRE(second.ok());
        REQUIRE(second->items.size() == 1);
        CHECK(second->items[0].sn == "0c");
    });
}

TEMPLATE_TEST_CASE("both stores: totals stay right after deleting devices and CAs", "[fleet][conformance][paging]",
                   BACKENDS) {
    TestType b;
    populate(b);
    must_write(b, [&](WriteView& v) -> Outcome {
        for (std::uint64_t i = 1; i <= 50; ++i)
            if (auto r = v.delete_device("0b", serial_for(i * 5), "D", "t"); !r) return r;
        auto removed = v.delete_ca("0a", "D", "t");
        return removed ? Outcome(Ok{}) : Outcome(removed.error());
    });
    must_read(b, [&](ReadView& v) {
        auto bb = v.list_devices_by_ca("0b", Page{2, 100});
        REQUIRE(bb.ok());
        CHECK(bb->total == 200);
        CHECK(bb->items.size() == 100);
        CHECK(v.list_devices_by_ca("0b", Page{3, 100})->items.empty());
        auto all = v.list_devices(Page{1, 1});
        CHECK(all->total == 202);
        CHECK(all->items[0].ca_sn == "0b");
        CHECK(*v.device_count() == 202);
        CHECK(v.list_cas(Page{1, 10})->total == 2);
        CHECK(v.list_devices_by_ca("0a", Page{}).error().code == Errc::not_found);
    });
}

// --- change log and batches -------------------------------------------------

TEMPLATE_TEST_CASE("both stores: the change log lists entries in commit order with consecutive seqs",
                   "[fleet][conformance][changes]", BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "RegisterCaCertificate", "ops"); });
    must_write(b, [&](WriteView& v) -> Outcome {
        for (std::uint64_t i = 1; i <= 3; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i)), "AutoRegister", "connection"); !r) return r;
        return Ok{};
    });
    must_write(b, [&](WriteView& v) -> Outcome {
        return status_outcome(
            v.set_device_status("0a", serial_for(2), CertStatus::inactive, "InactivateDeviceCertificate", "ops"));
    });
    must_read(b, [&](ReadView& v) {
        const auto log = *v.changes_after(0, 100);
        REQUIRE(log.size() == 5);
        for (std::size_t i = 0; i < log.size(); ++i) CHECK(log[i].seq == i + 1);
        CHECK(log[0].action == "RegisterCaCertificate");
        CHECK_FALSE(log[0].old_status.has_value());
        CHECK(log[0].new_status == CertStatus::active);
        CHECK(log[0].time_ms == 1'700'000'000'000);
        CHECK(log[3].device_sn == serial_for(3));
        CHECK(log[3].caller == "connection");
        CHECK(log[4].action == "InactivateDeviceCertificate");
        CHECK(log[4].time_ms >= log[3].time_ms);
        const auto tail = *v.changes_after(3, 1);
        REQUIRE(tail.size() == 1);
        CHECK(tail[0].seq == 4);
        CHECK(v.changes_after(5, 10)->empty());
        CHECK(v.changes_after(0, 0)->empty());
        CHECK(v.changes_after(UINT64_MAX, 10)->empty());
    });
}

TEMPLATE_TEST_CASE("both stores: write_batch commits every job but the failing one", "[fleet][conformance][batch]",
                   BACKENDS) {
    TestType b;
    must_write(b, [&](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    auto insert = [](std::uint64_t n) {
        return [n](WriteView& v) { return v.insert_device(make_device("0a", serial_for(n)), "A", "t"); };
    };
    std::vector<std::function<Outcome(WriteView&)>> jobs{
        insert(1),
        [](WriteView& v) -> Outcome {
            if (auto r = v.insert_device(make_device("0a", serial_for(2)), "A", "t"); !r) return r;
            return make_error(Errc::invalid_argument, "second job refuses");
        },
        [](WriteView&) -> Outcome { throw std::runtime_error("third job throws"); },
        insert(1),  // duplicate of the first, which is visible inside the batch
        insert(5),
    };
    std::vector<Outcome> results;
    REQUIRE(b.write_batch(jobs, results).ok());
    REQUIRE(results.size() == 5);
    CHECK(results[0].ok());
    REQUIRE_FALSE(results[1].ok());
    CHECK(results[1].error().message == "second job refuses");
    REQUIRE_FALSE(results[2].ok());
    CHECK(results[2].error().code == Errc::store_error);
    REQUIRE_FALSE(results[3].ok());
    CHECK(results[3].error().code == Errc::already_exists);
    CHECK(results[4].ok());
    must_read(b, [&](ReadView& v) {
        CHECK(v.get_device("0a", serial_for(1))->has_value());
        CHECK_FALSE(v.get_device("0a", serial_for(2))->has_value());
        CHECK(v.get_device("0a", serial_for(5))->has_value());
        CHECK(*v.device_count() == 2);
        CHECK((*v.get_ca("0a"))->device_count == 2);
        const auto log = *v.changes_after(0, 100);
        REQUIRE(log.size() == 3);
        CHECK(log[1].seq == 2);
        CHECK(log[1].device_sn == serial_for(1));
        CHECK(log[2].seq == 3);
        CHECK(log[2].device_sn == serial_for(5));
    });
}
