// Creating, upgrading and checking the fleet schema; connection strings and
// what errors may say.
#include <catch2/catch.hpp>
#include <libpq-fe.h>

#include <atomic>
#include <thread>

#include "fleet_fixture.hpp"
#include "pg.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

/// Runs one statement on a raw connection, failing the test on error.
void sql(const std::string& conninfo, const std::string& statement) {
    PGconn* conn = PQconnectdb(conninfo.c_str());
    REQUIRE(PQstatus(conn) == CONNECTION_OK);
    PGresult* res = PQexec(conn, statement.c_str());
    const auto status = PQresultStatus(res);
    const std::string why = PQerrorMessage(conn);
    PQclear(res);
    PQfinish(conn);
    if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) FAIL(statement << ": " << why);
}

}  // namespace

TEST_CASE("init creates the schema and the instance, and running it again changes nothing", "[fleet][schema]") {
    FleetDb db;  // has run init once
    auto fleet = db.connect();
    const auto first = fleet->head();
    REQUIRE(first.ok());
    CHECK(first->epoch.size() == 36);  // a UUID
    CHECK(first->last_seq == 0);
    CHECK(first->trimmed_through == 0);
    must_commit(*fleet, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });

    REQUIRE(Fleet::init(db.options).ok());
    const auto again = fleet->head();
    REQUIRE(again.ok());
    CHECK(again->epoch == first->epoch);
    CHECK(again->last_seq == 1);
    CHECK(fleet->read([](ReadView& v) -> Outcome {
        CHECK(*v.ca_count() == 1);
        return Ok{};
    }).ok());
}

TEST_CASE("init run by several processes at once creates one schema", "[fleet][schema]") {
    const std::string conninfo = PgServer::shared().create_database();
    std::vector<std::thread> threads;
    std::atomic<int> failures{0};
    std::vector<std::string> errors(8);
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&, i] {
            // Half of them add the same instance, half their own.
            auto options = fleet_options(conninfo, i % 2 == 0 ? "shared" : "own-" + std::to_string(i));
            if (auto r = Fleet::init(options); !r) {
                ++failures;
                errors[static_cast<std::size_t>(i)] = r.error().message;
            }
        });
    }
    for (auto& t : threads) t.join();
    for (const auto& e : errors) CHECK(e == "");
    CHECK(failures == 0);
    auto shared = connect_fleet(fleet_options(conninfo, "shared"));
    auto own = connect_fleet(fleet_options(conninfo, "own-1"));
    CHECK(shared->head()->epoch != own->head()->epoch);
}

TEST_CASE("a broker's check names a missing schema", "[fleet][schema]") {
    const std::string conninfo = PgServer::shared().create_database();
    auto fleet = Fleet::connect(fleet_options(conninfo));
    REQUIRE_FALSE(fleet.ok());
    CHECK(fleet.error().code == Errc::schema_mismatch);
    CHECK_THAT(fleet.error().message, Catch::Contains("no devcert schema") && Catch::Contains("InitFleet"));
}

TEST_CASE("a broker's check names a missing instance", "[fleet][schema]") {
    FleetDb db;
    auto fleet = Fleet::connect(fleet_options(db.conninfo, "other-instance"));
    REQUIRE_FALSE(fleet.ok());
    CHECK(fleet.error().code == Errc::not_found);
    CHECK(fleet.error().message ==
          "instance 'other-instance' is not in the fleet database (add it with devcertctl --fleet CONNINFO "
          "InitFleet --MqttInstanceId other-instance)");
}

TEST_CASE("a schema newer than this build is refused by the check and by init, naming both versions",
          "[fleet][schema]") {
    FleetDb db;
    sql(db.conninfo, "UPDATE devcert.schema_version SET version = 7");
    auto fleet = Fleet::connect(db.options);
    REQUIRE_FALSE(fleet.ok());
    CHECK(fleet.error().code == Errc::schema_mismatch);
    CHECK_THAT(fleet.error().message, Catch::Contains("schema version 7, this build reads 1"));
    const Outcome init = Fleet::init(db.options);
    REQUIRE_FALSE(init.ok());
    CHECK(init.error().code == Errc::schema_mismatch);
}

TEST_CASE("instances in one database are independent", "[fleet][schema]") {
    FleetDb db;
    auto options_b = fleet_options(db.conninfo, "fleet-b");
    REQUIRE(Fleet::init(options_b).ok());
    auto a = db.connect();
    auto b = connect_fleet(options_b);
    must_commit(*a, [](WriteView& v) { return v.insert_ca(make_ca("0a"), "R", "t"); });
    must_commit(*b, [](WriteView& v) -> Outcome {
        if (auto r = v.insert_ca(make_ca("0a"), "R", "t"); !r) return r;  // same Sn, other instance
        return v.set_meta("instance_id", "b");
    });
    must_commit(*b, [](WriteView& v) { return v.insert_ca(make_ca("0b"), "R", "t"); });
    CHECK(a->head()->last_seq == 1);
    CHECK(b->head()->last_seq == 2);
    CHECK(a->read([](ReadView& v) -> Outcome {
        CHECK(*v.ca_count() == 1);
        CHECK_FALSE(v.get_ca("0b")->has_value());
        CHECK_FALSE(v.meta("instance_id")->has_value());
        return Ok{};
    }).ok());
    CHECK(fleet_channel("fleet-test") != fleet_channel("fleet-b"));
}

TEST_CASE("instance ids follow plugin_opt_instance_id's rules", "[fleet][schema]") {
    for (const char* bad : {"", "has space", "semi;colon", "quote'"}) {
        const Outcome out = Fleet::init(fleet_options("host=/nonexistent", bad));
        REQUIRE_FALSE(out.ok());
        CHECK(out.error().code == Errc::invalid_argument);
    }
    CHECK_FALSE(Fleet::init(fleet_options("host=/nonexistent", std::string(65, 'a'))).ok());
}

TEST_CASE("a bare word is a service name; strings and URIs pass as they are", "[fleet][conninfo]") {
    CHECK(*fleet_conninfo("devcert") == "service='devcert'");
    CHECK(*fleet_conninfo("  devcert  ") == "service='devcert'");
    CHECK(*fleet_conninfo("host=db dbname=devcert") == "host=db dbname=devcert");
    CHECK(*fleet_conninfo("postgresql://db/devcert") == "postgresql://db/devcert");
    CHECK(fleet_conninfo("").error().code == Errc::invalid_argument);
    CHECK(fleet_conninfo("host=db nonsense_key=1").error().code == Errc::invalid_argument);
}

TEST_CASE("a malformed connection string's error never quotes it", "[fleet][conninfo][secrets]") {
    // A password with a space, unquoted: libpq's own message quotes the
    // token it stopped at, which is the password's second half.
    const std::string secret = "Secret-half";
    const std::string malformed = "host=db user=ops password=hunter2 " + secret;
    char* raw = nullptr;
    PQconninfoOption* parsed = PQconninfoParse(malformed.c_str(), &raw);
    REQUIRE(parsed == nullptr);
    REQUIRE(raw != nullptr);
    CHECK_THAT(std::string(raw), Catch::Contains(secret));
    PQfreemem(raw);

    const auto ours = fleet_conninfo(malformed);
    REQUIRE_FALSE(ours.ok());
    CHECK_THAT(ours.error().message, !Catch::Contains(secret));
    const Outcome init = Fleet::init(fleet_options(malformed));
    REQUIRE_FALSE(init.ok());
    CHECK_THAT(init.error().message, !Catch::Contains(secret));
    const auto uri = Fleet::connect(fleet_options("postgresql://ops:" + secret + "@db/x?bad%zz"));
    REQUIRE_FALSE(uri.ok());
    CHECK_THAT(uri.error().message, !Catch::Contains(secret));
}

TEST_CASE("errors from the server are scrubbed of the password", "[fleet][conninfo][secrets]") {
    auto& server = PgServer::shared();
    // Contrived so that the server echoes the password: it is also the name
    // of a database that does not exist.
    const std::string secret = "s3cret-Passw0rd";
    const std::string conninfo = server.conninfo(secret) + " password=" + secret;
    const auto fleet = Fleet::connect(fleet_options(conninfo));
    REQUIRE_FALSE(fleet.ok());
    CHECK(fleet.error().code == Errc::unavailable);
    CHECK_THAT(fleet.error().message, Catch::StartsWith("fleet database unreachable: cannot connect: "));
    CHECK_THAT(fleet.error().message, Catch::Contains("database \"***\" does not exist"));
    CHECK_THAT(fleet.error().message, !Catch::Contains(secret));

    FleetDb db;
    auto ok = connect_fleet(fleet_options(db.conninfo + " password=" + secret));
    CHECK_THAT(ok->describe(), Catch::StartsWith("host=" + server.socket_dir()));
    CHECK_THAT(ok->describe(), !Catch::Contains(secret));
}

TEST_CASE("scrubbing replaces every occurrence of every secret", "[fleet][conninfo][secrets]") {
    pg::Secrets secrets;
    secrets.add("pw1");
    secrets.add("");
    secrets.add("other");
    CHECK(secrets.scrub("pw1 and pw1pw1, other") == "*** and ******, ***");
    CHECK(secrets.scrub("nothing here") == "nothing here");
}

TEST_CASE("an unreachable database is unavailable, naming the place", "[fleet][conninfo]") {
    const auto fleet = Fleet::connect(fleet_options("host=/tmp/devcert-no-such-dir port=1 dbname=x connect_timeout=2"));
    REQUIRE_FALSE(fleet.ok());
    CHECK(fleet.error().code == Errc::unavailable);
    CHECK_THAT(fleet.error().message, Catch::Contains("/tmp/devcert-no-such-dir"));
}

TEST_CASE("the notification channel is a safe identifier, one per instance", "[fleet][schema]") {
    const std::string c = fleet_channel("post-cn-0pp1.x_y");
    CHECK(c == fleet_channel("post-cn-0pp1.x_y"));
    CHECK(c.size() <= 63);
    CHECK(c.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string::npos);
    CHECK(c != fleet_channel("post-cn-0pp2.x_y"));
}
