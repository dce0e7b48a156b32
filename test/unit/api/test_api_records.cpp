// The operations on a host's RecordAccess (fleet mode): where they read and
// write, FleetUnavailable when the truth cannot be reached, the fleet
// member's figures in GetStats.
#include <catch2/catch.hpp>

#include <optional>

#include "api_pki.hpp"
#include "devcert/record_access.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

// The host's own records behind a RecordAccess that counts the calls, can be
// made unreachable, and reports fleet figures when given some.
class ProbeRecords final : public RecordAccess {
public:
    explicit ProbeRecords(AdminHost& host) : host_(host) {}
    Outcome read(const ReadFn& fn) override {
        ++reads;
        if (unreachable) return make_error(Errc::unavailable, "fleet database unreachable: test");
        return host_.read_records(fn);
    }
    Outcome write(WriteFn fn) override {
        ++writes;
        if (unreachable) return make_error(Errc::unavailable, "fleet database unreachable: test");
        return host_.write_records(fn);
    }
    std::optional<FleetStats> fleet_stats() const override { return stats; }

    unsigned reads = 0;
    unsigned writes = 0;
    bool unreachable = false;
    std::optional<FleetStats> stats;

private:
    AdminHost& host_;
};

// An Api over ProbeRecords: the fixture's host, its records behind the probe,
// no store and no writer in the context.
struct ProbeFixture : ApiFixture {
    ProbeRecords probe{*this};
    std::unique_ptr<Api> probed;

    ProbeFixture() {
        AdminContext routed = context;
        routed.records = &probe;
        routed.store = nullptr;
        routed.writer = nullptr;
        auto created = Api::create(routed);
        if (!created) FAIL("cannot create api over records: " << created.error().message);
        probed = std::move(created).value();
    }
    Reply via_probe(const Params& params) {
        ApiRequest request;
        request.params = params;
        return to_reply(probed->handle(root_caller(), request));
    }
};

}  // namespace

TEST_CASE("with records and no store the operations read and write through the records", "[api][records]") {
    ProbeFixture f;
    const auto ca = test_ca("0a01", "Root A");
    REQUIRE(register_ca(f, ca).status == 200);
    CHECK(f.via_probe(ca_call("InactivateCaCertificate", "0a01")).status == 200);
    CHECK(f.probe.writes == 1);
    const auto got = f.via_probe(ca_call("GetCaCertificate", "0a01"));
    REQUIRE(got.status == 200);
    CHECK(got.body.at("Data").at("Status") == "0");
    CHECK(f.probe.reads == 1);
    // The write went where the fixture's own Api reads.
    CHECK(f.call(ca_call("GetCaCertificate", "0a01")).body.at("Data").at("Status") == "0");
}

TEST_CASE("an Api needs a store or records, and a configuration", "[api][records]") {
    ApiFixture f;
    AdminContext none = f.context;
    none.store = nullptr;
    none.records = nullptr;
    CHECK_FALSE(Api::create(none).ok());
    ProbeRecords probe{f};
    AdminContext records_only = none;
    records_only.records = &probe;
    CHECK(Api::create(records_only).ok());
    records_only.config = nullptr;
    CHECK_FALSE(Api::create(records_only).ok());
}

TEST_CASE("a fleet that cannot be reached is FleetUnavailable, HTTP 503, counted and audited", "[api][records]") {
    ProbeFixture f;
    REQUIRE(register_ca(f, test_ca("0a01", "Root A")).status == 200);
    f.probe.unreachable = true;
    const auto refused = f.via_probe(ca_call("InactivateCaCertificate", "0a01"));
    CHECK(refused.status == 503);
    CHECK(refused.code() == "FleetUnavailable");
    CHECK(refused.body.value("Message", "") ==
          "The fleet database cannot be reached; nothing was changed. Try again later.");
    CHECK_THAT(refused.body.value("Detail", ""), Catch::StartsWith("fleet database unreachable"));
    const auto read = f.via_probe(ca_call("GetCaCertificate", "0a01"));
    CHECK(read.status == 503);
    CHECK(read.code() == "FleetUnavailable");
    CHECK(f.counters.admin_calls("InactivateCaCertificate", "FleetUnavailable") == 1);
    const auto audit = f.audit();
    CHECK(std::any_of(audit.begin(), audit.end(), [](const std::string& line) {
        return line.find("| InactivateCaCertificate | sn=0a01 | error FleetUnavailable") != std::string::npos;
    }));
    f.probe.unreachable = false;
    CHECK(f.call(ca_call("GetCaCertificate", "0a01")).body.at("Data").at("Status") == "1");
}

TEST_CASE("GetStats shows a fleet member's position, head and lag", "[api][records]") {
    ProbeFixture f;
    const Params stats_call{{"Action", "GetStats"}, {"MqttInstanceId", "local"}};
    const auto plain = f.via_probe(stats_call);
    REQUIRE(plain.status == 200);
    CHECK_FALSE(plain.body.at("Data").contains("Fleet"));

    FleetStats stats;
    stats.connected = true;
    stats.epoch = "3f2a";
    stats.position = 40;
    stats.head = 42;
    stats.lag_ms = 7;
    stats.queued_registrations = 3;
    stats.resyncs = 1;
    f.probe.stats = stats;
    const auto reply = f.via_probe(stats_call);
    REQUIRE(reply.status == 200);
    const auto& fleet = reply.body.at("Data").at("Fleet");
    CHECK(fleet == nlohmann::json{{"Connected", true}, {"Epoch", "3f2a"}, {"Position", 40}, {"Head", 42}, {"Lag", 2},
                                  {"LagMs", 7}, {"QueuedRegistrations", 3}, {"Resyncs", 1}});
    CHECK(fleet.at("Position").is_number_unsigned());

    // A head read before the replica caught up is no negative lag.
    stats.head = 39;
    f.probe.stats = stats;
    CHECK(f.via_probe(stats_call).body.at("Data").at("Fleet").at("Lag") == 0);
}

#ifdef DEVCERT_API_FLEET

TEST_CASE("fleet: a stopped database answers FleetUnavailable at once and changes nothing", "[api][records][outage]") {
    ApiFixture f;
    REQUIRE(register_ca(f, test_ca("0a01", "Root A")).status == 200);
    auto& server = PgServer::shared();
    server.stop();
    const auto refused = f.call(ca_call("InactivateCaCertificate", "0a01"));
    const auto read = f.call(ca_call("GetCaCertificate", "0a01"));
    server.start();
    CHECK(refused.status == 503);
    CHECK(refused.code() == "FleetUnavailable");
    CHECK(read.code() == "FleetUnavailable");
    // The next call reconnects; the refused one changed nothing.
    const auto after = f.call(ca_call("GetCaCertificate", "0a01"));
    REQUIRE(after.status == 200);
    CHECK(after.body.at("Data").at("Status") == "1");
}

TEST_CASE("fleet: NextToken is refused with the documented Detail; PageNo pages", "[api][records][paging]") {
    ApiFixture f;
    REQUIRE(register_ca(f, test_ca("0a01", "Root A")).status == 200);
    const auto reply = f.call({{"Action", "ListCaCertificate"}, {"MqttInstanceId", "local"}, {"NextToken", "x"},
                               {"PageSize", "10"}});
    CHECK(reply.status == 400);
    CHECK(reply.code() == "ParameterFieldCheckFailed");
    CHECK(reply.body.value("Detail", "") == "NextToken is not supported on the fleet store yet; use PageNo");
}

#endif
