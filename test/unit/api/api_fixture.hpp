// A real Store in a temporary directory, a real StoreWriter, and an Api over
// them with a hand-driven clock, so calls run end to end without a socket.
//
// Compiled with DEVCERT_API_FLEET (devcert_unit_api_fleet), the records are
// a FleetRecords on a fresh database of the executable's own PostgreSQL
// instead: the same tests then prove every answer is the same in fleet mode.
// A test inherently about the LMDB store carries DEVCERT_LMDB_ONLY in its
// tags (hidden in the fleet variant) and a comment saying why.
#pragma once

#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "devcert/api.hpp"
#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"
#include "temp_dir.hpp"
#ifdef DEVCERT_API_FLEET
#include "devcert/fleet.hpp"
#include "devcert/fleet_records.hpp"
#include "pg_server.hpp"
#define DEVCERT_LMDB_ONLY "[.][lmdb-only]"
#else
#define DEVCERT_LMDB_ONLY "[lmdb-only]"
#endif

namespace devcert::test {

using Params = std::vector<std::pair<std::string, std::string>>;

inline Caller root_caller() {
    Caller c;
    c.uid = 0;
    c.gid = 0;
    c.user = "root";
    c.groups = {"root"};
    return c;
}

inline Caller named_caller(uid_t uid, std::string user, std::vector<std::string> groups) {
    Caller c;
    c.uid = uid;
    c.gid = uid;
    c.user = std::move(user);
    c.groups = std::move(groups);
    return c;
}

struct Reply {
    int status = 0;
    nlohmann::json body;
    std::optional<unsigned> retry_after_s;
    std::string code() const { return body.value("Code", std::string()); }
};

/// What an Api or an AdminServer needs from its host process: a store in a
/// private directory with its writer (or, in the fleet variant, a fleet
/// database), the configuration ("local"), counters, the online registry,
/// and an audit trail recorded in memory.
struct AdminHost {
    AdminHost() {
        config.instance_id = "local";
#ifdef DEVCERT_API_FLEET
        FleetOptions options;
        options.conninfo = PgServer::shared().create_database();
        options.instance_id = config.instance_id;
        if (auto created = Fleet::init(options); !created) FAIL("cannot create fleet: " << created.error().message);
        auto fleet = Fleet::connect(options);
        if (!fleet) FAIL("cannot connect to fleet: " << fleet.error().message);
        fleet_conninfo = options.conninfo;
        records = std::make_unique<FleetRecords>(std::move(fleet).value());
        context.records = records.get();
#else
        StoreOptions options;
        options.path = dir.file("store");
        auto opened = Store::open(options);
        if (!opened) FAIL("cannot open store: " << opened.error().message);
        store = std::move(opened).value();
        writer = std::make_unique<StoreWriter>(*store, [] {});
        context.store = store.get();
        context.writer = writer.get();
#endif
        context.config = &config;
        context.counters = &counters;
        context.online = &online;
        context.audit = [this](std::string line) {
            std::lock_guard lock(audit_mutex);
            audit_lines.push_back(std::move(line));
        };
    }
    ~AdminHost() {
        if (writer) writer->stop();
    }
    AdminHost(const AdminHost&) = delete;
    AdminHost& operator=(const AdminHost&) = delete;

    /// Straight into the records, past the API: for tests that need many
    /// records, or records the API cannot make.
    Outcome write_records(const std::function<Outcome(WriteView&)>& fn) {
        if (records) return records->write(fn);
        return store->write(fn);
    }
    Outcome read_records(const std::function<Outcome(ReadView&)>& fn) {
        if (records) return records->read(fn);
        return store->read(fn);
    }

    std::vector<std::string> audit() {
        std::lock_guard lock(audit_mutex);
        return audit_lines;
    }

    TempDir dir;
    PluginConfig config;
    Counters counters;
    OnlineRegistry online;
    std::unique_ptr<Store> store;
    std::unique_ptr<StoreWriter> writer;
    std::unique_ptr<RecordAccess> records;  ///< the fleet variant's, else null
    std::string fleet_conninfo;             ///< the fleet variant's database
    AdminContext context;
    std::mutex audit_mutex;
    std::vector<std::string> audit_lines;
};

class ApiFixture : public AdminHost {
public:
    /// `policy_text` empty: the built-in policy (root and our own uid).
    explicit ApiFixture(std::string policy_text = {}, unsigned rate_limit = 500) {
        config.admin_rate_limit = rate_limit;
        config.max_ca = 5;
        if (!policy_text.empty()) config.admin_policy = dir.write("policy.json", policy_text);
        ApiOptions api_options;
        api_options.clock = [this] { return now; };
        auto created = Api::create(context, api_options);
        if (!created) FAIL("cannot create api: " << created.error().message);
        api = std::move(created).value();
    }

    ~ApiFixture() { api.reset(); }

    Reply call(const Params& params, const Caller& caller = root_caller()) {
        ApiRequest request;
        request.params = params;
        return to_reply(api->handle(caller, request));
    }

    static Reply to_reply(const ApiResponse& response) {
        Reply reply;
        reply.status = response.http_status;
        reply.body = nlohmann::json::parse(response.body, nullptr, false);
        REQUIRE_FALSE(reply.body.is_discarded());
        reply.retry_after_s = response.retry_after_s;
        return reply;
    }

    /// Every record and change-log entry, to compare before and after.
    std::string snapshot() {
        std::string out;
        auto outcome = read_records([&](ReadView& view) -> Outcome {
            auto cas = view.list_cas(Page{1, 100});
            if (!cas) return cas.error();
            for (const auto& ca : cas->items) out += ca.sn + ":" + status_string(ca.status) + ";";
            for (std::uint32_t page = 1;; ++page) {
                auto devices = view.list_devices(Page{page, 100});
                if (!devices) return devices.error();
                for (const auto& d : devices->items) out += d.ca_sn + "/" + d.device_sn + ":" + status_string(d.status) + ";";
                if (devices->items.size() < 100) break;
            }
            auto changes = view.changes_after(0, 100000);
            if (!changes) return changes.error();
            out += "changes=" + std::to_string(changes->size());
            auto code = view.meta("register_code");
            if (!code) return code.error();
            out += ";code=" + code->value_or("");
            return Ok{};
        });
        REQUIRE(outcome.ok());
        return out;
    }

    std::chrono::steady_clock::time_point now{std::chrono::hours(1)};
    std::unique_ptr<Api> api;
};

}  // namespace devcert::test
