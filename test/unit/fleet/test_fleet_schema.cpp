// Creating, upgrading and checking the fleet schema; connection strings and
// what errors may say.
#include <catch2/catch.hpp>
#include <libpq-fe.h>

#include <fmt/format.h>

#include <atomic>
#include <chrono>
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

TEST_CASE("a session's limits reach the server, and the connection string's own options win", "[fleet][conninfo]") {
    FleetDb db;
    auto show = [](pg::Conn& conn, const char* setting) {
        auto rows = conn.exec("show", fmt::format("SHOW {}", setting).c_str());
        REQUIRE(rows.ok());
        return std::string(rows->text(0, 0));
    };
    pg::SessionLimits limits;
    limits.idle_in_transaction = std::chrono::seconds(2);
    limits.lock_wait = std::chrono::seconds(4);
    auto conn = pg::Conn::open(db.conninfo, 10, limits);
    REQUIRE(conn.ok());
    CHECK(show(*conn, "idle_in_transaction_session_timeout") == "2s");
    CHECK(show(*conn, "lock_timeout") == "4s");

    // A reconnection (the server ended the session) keeps them.
    auto other = pg::Conn::open(db.conninfo, 10);
    REQUIRE(other.ok());
    auto backend = conn->exec("backend", "SELECT pg_backend_pid()");
    REQUIRE(backend.ok());
    REQUIRE(other->exec("end it", fmt::format("SELECT pg_terminate_backend({})", backend->text(0, 0)).c_str()).ok());
    pg::Failure failure = pg::Failure::none;
    CHECK_FALSE(conn->exec("after the end", "SELECT 1", {}, &failure).ok());
    CHECK(failure == pg::Failure::connection);
    REQUIRE(conn->ensure_alive());
    CHECK(show(*conn, "idle_in_transaction_session_timeout") == "2s");
    CHECK(show(*conn, "lock_timeout") == "4s");

    auto theirs = pg::Conn::open(db.conninfo + " options='-c lock_timeout=7s -c work_mem=8MB'", 10, limits);
    REQUIRE(theirs.ok());
    CHECK(show(*theirs, "idle_in_transaction_session_timeout") == "2s");
    CHECK(show(*theirs, "lock_timeout") == "7s");
    CHECK(show(*theirs, "work_mem") == "8MB");

    // Without limits the server's own settings stand.
    auto plain = pg::Conn::open(db.conninfo, 10);
    REQUIRE(plain.ok());
    CHECK(show(*plain, "idle_in_transaction_session_timeout") == "0");
}

TEST_CASE("a statement not answered in time, or abandoned, drops its connection and says why", "[fleet][conninfo]") {
    FleetDb db;
    std::atomic<bool> stopping{false};
    pg::SessionLimits limits;
    limits.answer = std::chrono::milliseconds(300);
    limits.abandon = &stopping;
    auto conn = pg::Conn::open(db.conninfo, 10, limits);
    REQUIRE(conn.ok());
    CHECK(conn->exec("a quick one", "SELECT 1").ok());

    auto started = std::chrono::steady_clock::now();
    pg::Failure failure = pg::Failure::none;
    auto slow = conn->exec("a slow one", "SELECT pg_sleep(5)", {}, &failure);
    REQUIRE_FALSE(slow.ok());
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(3));
    CHECK(slow.error().code == Errc::unavailable);
    CHECK(failure == pg::Failure::connection);
    CHECK(slow.error().message ==
          "fleet database unreachable: a slow one failed: the server did not answer within 300 ms; the connection is "
          "dropped");
    CHECK_FALSE(conn->alive());
    CHECK_FALSE(conn->ensure_alive());

    // No bound on the answer, but the owner stops.
    limits.answer = std::chrono::milliseconds(0);
    auto other = pg::Conn::open(db.conninfo, 10, limits);
    REQUIRE(other.ok());
    std::thread stopper([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        stopping.store(true);
    });
    started = std::chrono::steady_clock::now();
    auto abandoned = other->exec("a slow one", "SELECT pg_sleep(5)");
    stopper.join();
    REQUIRE_FALSE(abandoned.ok());
    CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(3));
    CHECK_THAT(abandoned.error().message, Catch::EndsWith("the broker is stopping; the connection is dropped"));

    // Nor does a connection attempt outlast a stopping owner.
    CHECK_FALSE(pg::Conn::open(db.conninfo, 10, limits).ok());
}

TEST_CASE("a statement waiting for a lock longer than lock_wait fails as busy, nothing changed", "[fleet][conninfo]") {
    FleetDb db;
    auto holder = pg::Conn::open(db.conninfo, 10);
    REQUIRE(holder.ok());
    REQUIRE(holder->exec("begin", "BEGIN").ok());
    REQUIRE(holder->exec("lock", "SELECT 1 FROM devcert.instances FOR UPDATE").ok());

    pg::SessionLimits limits;
    limits.lock_wait = std::chrono::milliseconds(200);
    auto waiter = pg::Conn::open(db.conninfo, 10, limits);
    REQUIRE(waiter.ok());
    pg::Failure failure = pg::Failure::none;
    auto r = waiter->exec("lock the instance's head", "SELECT 1 FROM devcert.instances FOR UPDATE", {}, &failure);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == Errc::unavailable);
    CHECK(failure == pg::Failure::busy);
    CHECK_THAT(r.error().message, Catch::StartsWith("fleet database busy: lock the instance's head failed: "));
    CHECK_THAT(r.error().message, Catch::Contains("(SQLSTATE 55P03)"));
    CHECK(waiter->alive());
    CHECK(holder->exec("commit", "COMMIT").ok());
}

TEST_CASE("deferred statements run in order in the next statement's round trip", "[fleet][conninfo][pipeline]") {
    FleetDb db;
    auto conn = pg::Conn::open(db.conninfo, 10);
    REQUIRE(conn.ok());
    REQUIRE(conn->exec("begin", "BEGIN").ok());
    conn->defer("make a table", "CREATE TEMP TABLE seen (n int, note text)");
    conn->defer("add a row", "INSERT INTO seen VALUES (1, $1)", {std::string("one")});
    conn->defer("add a null", "INSERT INTO seen VALUES (2, $1)", {std::nullopt});
    auto rows = conn->exec("read the rows", "SELECT count(*), string_agg(coalesce(note, '-'), ',' ORDER BY n) FROM seen");
    REQUIRE(rows.ok());
    CHECK_FALSE(conn->deferred_failed());
    CHECK(rows->i64(0, 0) == 2);
    CHECK(rows->text(0, 1) == "one,-");
    CHECK(conn->exec("commit", "COMMIT").ok());

    SECTION("a deferred statement's failure is the next statement's, named by its own what; the rest do not run") {
        REQUIRE(conn->exec("begin", "BEGIN").ok());
        conn->defer("divide by zero", "SELECT 1 / 0");
        conn->defer("add a row", "INSERT INTO seen VALUES (3, 'three')");
        pg::Failure failure = pg::Failure::none;
        auto r = conn->exec("count", "SELECT count(*) FROM seen", {}, &failure);
        REQUIRE_FALSE(r.ok());
        CHECK(conn->deferred_failed());
        CHECK(failure == pg::Failure::other);
        CHECK_THAT(r.error().message, Catch::StartsWith("fleet database: divide by zero failed: division by zero"));
        CHECK(conn->last_sqlstate() == "22012");
        REQUIRE(conn->exec("roll back", "ROLLBACK").ok());
        // Out of the pipeline, the connection serves plain statements again.
        auto after = conn->exec("count", "SELECT count(*) FROM seen WHERE n = 3");
        REQUIRE(after.ok());
        CHECK(after->i64(0, 0) == 0);
        CHECK_FALSE(conn->deferred_failed());
    }
    SECTION("the statement's own failure is not a deferred one's") {
        conn->defer("select one", "SELECT 1");
        auto r = conn->exec("divide by zero", "SELECT 1 / 0");
        REQUIRE_FALSE(r.ok());
        CHECK_FALSE(conn->deferred_failed());
        CHECK_THAT(r.error().message, Catch::StartsWith("fleet database: divide by zero failed: "));
    }
    SECTION("a deferred statement's rows reach its callback, even when a later statement fails") {
        REQUIRE(conn->exec("begin", "BEGIN").ok());
        std::vector<std::string> got;
        conn->defer("add a row", "INSERT INTO seen VALUES (6, 'six') RETURNING n, note", {},
                    [&](pg::Rows answer) { got.push_back(fmt::format("{}:{}", answer.i64(0, 0), answer.text(0, 1))); });
        conn->defer("count", "SELECT count(*) FROM seen", {},
                    [&](pg::Rows answer) { got.push_back(fmt::format("count {}", answer.i64(0, 0))); });
        auto r = conn->exec("divide by zero", "SELECT 1 / 0");
        REQUIRE_FALSE(r.ok());
        CHECK(got == std::vector<std::string>{"6:six", "count 3"});
        REQUIRE(conn->exec("roll back", "ROLLBACK").ok());

        got.clear();
        conn->defer("divide by zero", "SELECT 1 / 0");
        conn->defer("count", "SELECT count(*) FROM seen", {}, [&](pg::Rows) { got.push_back("ran"); });
        CHECK_FALSE(conn->exec("count", "SELECT 1").ok());
        CHECK(got.empty());  // after a failure nothing runs, nothing is called
    }
    SECTION("discarded statements never run") {
        conn->defer("add a row", "INSERT INTO seen VALUES (4, 'four')");
        conn->discard_deferred();
        auto r = conn->exec("count", "SELECT count(*) FROM seen WHERE n = 4");
        REQUIRE(r.ok());
        CHECK(r->i64(0, 0) == 0);
    }
    SECTION("a deferred value holding a NUL byte is refused before anything is sent, naming it") {
        conn->defer("add a row", "INSERT INTO seen VALUES (5, $1)", {std::string("a\0b", 3)});
        auto r = conn->exec("count", "SELECT count(*) FROM seen");
        REQUIRE_FALSE(r.ok());
        CHECK(r.error().code == Errc::invalid_argument);
        CHECK_THAT(r.error().message, Catch::StartsWith("fleet database: add a row failed: a value holds a NUL byte"));
        auto again = conn->exec("count", "SELECT count(*) FROM seen WHERE n = 5");
        REQUIRE(again.ok());
        CHECK(again->i64(0, 0) == 0);
    }
}

TEST_CASE("a statement's text is prepared the first time a session runs it, and again on a new session",
          "[fleet][conninfo][prepared]") {
    FleetDb db;
    auto conn = pg::Conn::open(db.conninfo, 10);
    REQUIRE(conn.ok());
    const char* add = "SELECT $1::int + 1";
    // What the server holds for this session: each text once, and how often
    // it ran without being planned again.
    auto held = [&](const char* text) {
        auto rows = conn->exec("read the prepared statements",
                               "SELECT count(*), coalesce(sum(generic_plans), 0) FROM pg_prepared_statements "
                               "WHERE statement = $1",
                               {std::string_view(text)});
        REQUIRE(rows.ok());
        return std::make_pair(rows->i64(0, 0), rows->i64(0, 1));
    };
    for (int i = 0; i < 10; ++i) {
        auto r = conn->exec("add", add, {std::to_string(i)});
        REQUIRE(r.ok());
        CHECK(r->i64(0, 0) == i + 1);
    }
    const auto [copies, generic] = held(add);
    CHECK(copies == 1);
    CHECK(generic >= 4);  // the server stopped planning it for each run
    const std::size_t prepared = conn->prepared_count();
    CHECK(prepared == 2);  // `add` and the look-up

    SECTION("a text the server cannot parse fails with its message and is not kept") {
        auto bad = conn->exec("a typo", "SELEC 1");
        REQUIRE_FALSE(bad.ok());
        CHECK_THAT(bad.error().message, Catch::StartsWith("fleet database: a typo failed: syntax error"));
        CHECK(conn->prepared_count() == prepared);
        auto again = conn->exec("add", add, {std::string("41")});
        REQUIRE(again.ok());
        CHECK(again->i64(0, 0) == 42);
    }
    SECTION("deferred statements are prepared in the same round trip, and a failure keeps them in order") {
        REQUIRE(conn->exec("begin", "BEGIN").ok());
        const std::size_t before = conn->prepared_count();
        conn->defer("make a table", "CREATE TEMP TABLE seen (n int)");
        conn->defer("add a row", "INSERT INTO seen VALUES ($1)", {std::string("7")});
        conn->defer("a typo", "SELEC 1");
        conn->defer("add another", "INSERT INTO seen VALUES (8)");
        auto r = conn->exec("count", "SELECT count(*) FROM seen");
        REQUIRE_FALSE(r.ok());
        CHECK(conn->deferred_failed());
        CHECK_THAT(r.error().message, Catch::StartsWith("fleet database: a typo failed: syntax error"));
        CHECK(conn->prepared_count() == before + 2);  // the two before the typo
        REQUIRE(conn->exec("roll back", "ROLLBACK").ok());
    }
    SECTION("a text sent twice in one pipeline is prepared once") {
        const char* savepoint = "SAVEPOINT twice";
        REQUIRE(conn->exec("begin", "BEGIN").ok());
        const std::size_t before = conn->prepared_count();
        conn->defer("take a savepoint", savepoint);
        conn->defer("take a savepoint", savepoint);
        REQUIRE(conn->exec("release", "RELEASE SAVEPOINT twice").ok());
        CHECK(conn->prepared_count() == before + 2);  // the savepoint and the release
        CHECK(held(savepoint).first == 1);
        REQUIRE(conn->exec("roll back", "ROLLBACK").ok());
    }
    SECTION("a new session starts with nothing prepared and prepares again") {
        auto pid = conn->exec("read the backend", "SELECT pg_backend_pid()");
        REQUIRE(pid.ok());
        auto other = pg::Conn::open(db.conninfo, 10);
        REQUIRE(other.ok());
        REQUIRE(other->exec("end the session", "SELECT pg_terminate_backend($1::int)", {pid->text(0, 0)}).ok());
        CHECK_FALSE(conn->exec("add", add, {std::string("1")}).ok());
        REQUIRE(conn->ensure_alive());
        CHECK(conn->prepared_count() == 0);
        auto r = conn->exec("add", add, {std::string("1")});
        REQUIRE(r.ok());
        CHECK(r->i64(0, 0) == 2);
        CHECK(held(add).first == 1);
    }
    SECTION("a session prepares at most kMaxPrepared texts; the rest run unprepared") {
        for (std::size_t i = 0; i < pg::Conn::kMaxPrepared + 10; ++i) {
            const std::string text = fmt::format("SELECT {}", i);
            auto r = conn->exec("count", text.c_str());
            REQUIRE(r.ok());
            CHECK(r->i64(0, 0) == static_cast<std::int64_t>(i));
        }
        CHECK(conn->prepared_count() == pg::Conn::kMaxPrepared);
    }
    SECTION("a statement of many parameters runs unprepared") {
        std::string text = "SELECT 0";
        std::vector<pg::Param> params;
        std::vector<std::string> values;
        values.reserve(pg::Conn::kMaxPreparedParams + 1);
        for (std::size_t i = 1; i <= pg::Conn::kMaxPreparedParams + 1; ++i) {
            text += fmt::format(" + ${}::int", i);
            values.push_back("1");
        }
        for (const auto& v : values) params.emplace_back(v);
        auto r = conn->exec("sum", text.c_str(), params);
        REQUIRE(r.ok());
        CHECK(r->i64(0, 0) == static_cast<std::int64_t>(pg::Conn::kMaxPreparedParams + 1));
        CHECK(conn->prepared_count() == prepared);
    }
}
