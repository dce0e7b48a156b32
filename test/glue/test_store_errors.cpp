// on_store_error, with a store that really cannot answer: the device's
// record is rewritten on disk, while the plugin is stopped, with a layout
// version this build does not read (what a record from a newer build or a
// damaged page looks like to the connection path). The lookup then fails
// the record's header check, exactly as it would in production.
#include <lmdb.h>

#include "glue_fixture.hpp"

using devcert::CertStatus;
using devcert::Refusal;
using glue::kCaSn;
using glue::pki;

namespace {

// Opens the store's LMDB environment directly. Only while the plugin is
// stopped: LMDB's locks are per process, so one process must never have the
// same environment open twice.
void break_device_record(const glue::fs::path& db, const std::string& ca_sn, const std::string& device_sn) {
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    std::unique_ptr<MDB_env, decltype(&mdb_env_close)> owner(env, mdb_env_close);
    REQUIRE(mdb_env_set_maxdbs(env, 8) == 0);
    REQUIRE(mdb_env_open(env, db.c_str(), 0, 0600) == 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi devices = 0;
    int rc = mdb_dbi_open(txn, "devices", 0, &devices);
    std::string key = ca_sn + '\0' + device_sn;
    MDB_val k{key.size(), key.data()};
    MDB_val v{};
    if (rc == 0) rc = mdb_get(txn, devices, &k, &v);
    if (rc != 0) {
        mdb_txn_abort(txn);
        FAIL("cannot find the device record to break: " << mdb_strerror(rc));
    }
    std::string value(static_cast<const char*>(v.mv_data), v.mv_size);
    value[1] = '\x7f';  // byte 1 is the record's layout version
    MDB_val nv{value.size(), value.data()};
    rc = mdb_put(txn, devices, &k, &nv, 0);
    if (rc != 0) {
        mdb_txn_abort(txn);
        FAIL("cannot write the broken record: " << mdb_strerror(rc));
    }
    REQUIRE(mdb_txn_commit(txn) == 0);
}

// A registered active device whose record the store can no longer read,
// and a healthy neighbour under the same CA.
void prepare(glue::Plugin& plugin, const devcert::test::Issued& broken, const devcert::test::Issued& healthy) {
    plugin.register_device(broken, kCaSn, CertStatus::active);
    plugin.register_device(healthy, kCaSn, CertStatus::active);
    plugin.stop();
    break_device_record(plugin.dir() / "db", kCaSn, "d030");
    plugin.start();
}

}  // namespace

TEST_CASE("on_store_error deny refuses a device whose record cannot be read, as store error", "[glue][store_error]") {
    glue::Plugin plugin(devcert::OptionList{{"on_store_error", "deny"}});
    auto broken = pki().device("d030", "sensor-30", pki().ca);
    auto healthy = pki().device("d031", "sensor-31", pki().ca);
    prepare(plugin, broken, healthy);

    mosquitto c("client-30", broken.cert.get());
    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_AUTH);
    CHECK(plugin.broker().logged("refused client 'client-30' (CaSn -, DeviceSn d030): store error"));
    CHECK(plugin.state().counters.refused_count(Refusal::store_error) == 1);
    CHECK(plugin.state().counters.store_errors == 1);
    CHECK(plugin.state().counters.connections_allowed_on_store_error == 0);
    CHECK(plugin.state().counters.connections_accepted == 0);
    CHECK_FALSE(c.username.has_value());
    CHECK(plugin.state().clients.size() == 0);

    // One unreadable record does not take the broker down with it.
    mosquitto d("client-31", healthy.cert.get());
    CHECK(plugin.broker().basic_auth(&d) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.state().counters.connections_accepted == 1);
    CHECK(plugin.state().counters.store_errors == 1);
}

TEST_CASE("on_store_error allow accepts a device whose record cannot be read and says so loudly",
          "[glue][store_error]") {
    glue::Plugin plugin(devcert::OptionList{{"on_store_error", "allow"}});
    auto broken = pki().device("d030", "sensor-30", pki().ca);
    auto healthy = pki().device("d031", "sensor-31", pki().ca);
    prepare(plugin, broken, healthy);

    mosquitto c("client-30", broken.cert.get());
    CHECK(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    CHECK(c.username == "sensor-30");
    CHECK(plugin.broker().logged("STORE ERROR: client 'client-30' (DeviceSn d030) allowed without a status check "
                                 "because plugin_opt_on_store_error is allow"));
    CHECK(plugin.state().counters.store_errors == 1);
    CHECK(plugin.state().counters.connections_allowed_on_store_error == 1);
    CHECK(plugin.state().counters.connections_accepted == 1);
    CHECK(plugin.state().counters.refused_count(Refusal::store_error) == 0);
    // Its device is unknown, so no status change can name it: it is in the
    // table (a reload re-checks it) but not counted online.
    CHECK(plugin.state().clients.size() == 1);
    CHECK_FALSE(plugin.state().online.online(kCaSn, "d030"));

    mosquitto d("client-31", healthy.cert.get());
    CHECK(plugin.broker().basic_auth(&d) == MOSQ_ERR_SUCCESS);
    CHECK(plugin.state().counters.connections_allowed_on_store_error == 1);
    CHECK(plugin.state().counters.connections_accepted == 2);
}
