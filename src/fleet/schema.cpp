#include "schema.hpp"

#include <fmt/format.h>

#include <array>

#include "devcert/fleet.hpp"

namespace devcert::fleet_detail {

namespace {

/// Key of the advisory lock that serialises schema changes ("devcert").
constexpr const char* kSchemaLockKey = "28548188042298740";

// Version 1. Serials are text in the "C" collation, so that ORDER BY gives
// the byte order of the store's LMDB keys. Every table is keyed by the
// instance's small integer id first. The head counter (instances.last_seq)
// is the only source of change sequence numbers: see fleet.hpp.
constexpr const char* kSchemaV1 = R"sql(
CREATE SCHEMA IF NOT EXISTS devcert;
CREATE TABLE devcert.schema_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version integer NOT NULL,
    upgraded_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE devcert.instances (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id text NOT NULL UNIQUE,
    epoch text NOT NULL,
    last_seq bigint NOT NULL DEFAULT 0 CHECK (last_seq >= 0),
    trimmed_through bigint NOT NULL DEFAULT 0 CHECK (trimmed_through >= 0),
    ca_count bigint NOT NULL DEFAULT 0,
    device_count bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE devcert.meta (
    instance integer NOT NULL REFERENCES devcert.instances (id),
    key text COLLATE "C" NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (instance, key)
);
CREATE TABLE devcert.cas (
    instance integer NOT NULL REFERENCES devcert.instances (id),
    sn text COLLATE "C" NOT NULL,
    name text NOT NULL,
    content_pem text NOT NULL,
    verification_pem text NOT NULL,
    registration_code text NOT NULL,
    status smallint NOT NULL CHECK (status BETWEEN 0 AND 2),
    valid_begin_ms bigint NOT NULL,
    valid_end_ms bigint NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    status_changed_ms bigint NOT NULL,
    registered_by smallint NOT NULL,
    subject_key_id bytea NOT NULL,
    fingerprint bytea NOT NULL,
    device_count bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (instance, sn)
);
CREATE INDEX cas_by_subject_key_id ON devcert.cas (instance, subject_key_id, sn) WHERE subject_key_id <> ''::bytea;
CREATE TABLE devcert.devices (
    instance integer NOT NULL,
    ca_sn text COLLATE "C" NOT NULL,
    device_sn text COLLATE "C" NOT NULL,
    device_name text NOT NULL,
    content_pem text NOT NULL,
    status smallint NOT NULL CHECK (status BETWEEN 0 AND 2),
    valid_begin_ms bigint NOT NULL,
    valid_end_ms bigint NOT NULL,
    created_ms bigint NOT NULL,
    updated_ms bigint NOT NULL,
    status_changed_ms bigint NOT NULL,
    registered_by smallint NOT NULL,
    fingerprint bytea NOT NULL,
    PRIMARY KEY (instance, ca_sn, device_sn)
) WITH (fillfactor = 90);
CREATE TABLE devcert.changes (
    instance integer NOT NULL,
    seq bigint NOT NULL,
    time_ms bigint NOT NULL,
    action text NOT NULL,
    ca_sn text COLLATE "C" NOT NULL,
    device_sn text COLLATE "C" NOT NULL,
    old_status smallint,
    new_status smallint,
    caller text NOT NULL,
    record jsonb,
    PRIMARY KEY (instance, seq)
);
INSERT INTO devcert.schema_version (version) VALUES (1);
)sql";

/// Steps from version i to i + 1 (index i - 1). Version 1 has none yet; a
/// step ends by recording its version.
constexpr std::array<const char*, 0> kUpgrades{};

Error no_schema() {
    return make_error(Errc::schema_mismatch,
                      "the fleet database has no devcert schema (create it with devcertctl --fleet CONNINFO "
                      "InitFleet --MqttInstanceId ID)");
}

Error newer_schema(std::int64_t version) {
    return make_error(Errc::schema_mismatch,
                      fmt::format("the fleet database has schema version {}, this build reads {} (upgrade "
                                  "mosquitto-devcert)",
                                  version, kFleetSchemaVersion));
}

/// Version recorded in the database; 0 without a schema.
Result<std::int64_t> recorded_version(pg::Conn& conn) {
    auto exists = conn.exec("look for the schema", "SELECT to_regclass('devcert.schema_version') IS NOT NULL");
    if (!exists) return exists.error();
    if (exists->text(0, 0) != "t") return std::int64_t{0};
    auto rows = conn.exec("read the schema version", "SELECT version FROM devcert.schema_version");
    if (!rows) return rows.error();
    if (rows->size() != 1)
        return make_error(Errc::schema_mismatch, "the fleet database's devcert schema records no version");
    return rows->i64(0, 0);
}

}  // namespace

Outcome check_instance_id(std::string_view id) {
    if (id.empty()) return make_error(Errc::invalid_argument, "an instance id is required");
    if (id.size() > 64)
        return make_error(Errc::invalid_argument, fmt::format("instance id '{}' is longer than 64 characters", id));
    for (char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                        c == '_' || c == '.';
        if (!ok)
            return make_error(Errc::invalid_argument,
                              fmt::format("instance id '{}' may hold only letters, digits, '-', '_' and '.'", id));
    }
    return Ok{};
}

Outcome create_or_upgrade(pg::Conn& conn, std::string_view instance_id) {
    if (auto ok = check_instance_id(instance_id); !ok) return ok;
    auto run = [&]() -> Outcome {
        // Held until the transaction ends: a second InitFleet waits, then
        // finds the schema in place.
        if (auto r = conn.exec("take the schema lock", "SELECT pg_advisory_xact_lock($1)", {kSchemaLockKey}); !r)
            return r.error();
        auto version = recorded_version(conn);
        if (!version) return version.error();
        if (*version > static_cast<std::int64_t>(kFleetSchemaVersion)) return newer_schema(*version);
        if (*version == 0) {
            if (auto r = conn.exec_script("create the schema", kSchemaV1); !r) return r;
        } else {
            for (std::int64_t v = *version; v < static_cast<std::int64_t>(kFleetSchemaVersion); ++v) {
                if (auto r = conn.exec_script(fmt::format("upgrade the schema to version {}", v + 1),
                                              kUpgrades[static_cast<std::size_t>(v - 1)]);
                    !r)
                    return r;
            }
        }
        // The epoch tells followers which database (and which life of it)
        // their position refers to.
        if (auto r = conn.exec("create the instance",
                               "INSERT INTO devcert.instances (instance_id, epoch) "
                               "VALUES ($1, gen_random_uuid()::text) ON CONFLICT (instance_id) DO NOTHING",
                               {instance_id});
            !r)
            return r.error();
        return Ok{};
    };
    if (auto r = conn.exec("begin", "BEGIN"); !r) return r.error();
    Outcome out = run();
    if (!out) {
        (void)conn.exec("roll back", "ROLLBACK");
        return out;
    }
    if (auto r = conn.exec("commit the schema", "COMMIT"); !r) return r.error();
    return Ok{};
}

Result<InstanceRow> check_schema(pg::Conn& conn, std::string_view instance_id) {
    if (auto ok = check_instance_id(instance_id); !ok) return ok.error();
    auto version = recorded_version(conn);
    if (!version) return version.error();
    if (*version == 0) return no_schema();
    if (*version > static_cast<std::int64_t>(kFleetSchemaVersion)) return newer_schema(*version);
    if (*version < static_cast<std::int64_t>(kFleetSchemaVersion))
        return make_error(Errc::schema_mismatch,
                          fmt::format("the fleet database has schema version {}, this build needs {} (upgrade it "
                                      "with devcertctl --fleet CONNINFO InitFleet --MqttInstanceId ID)",
                                      *version, kFleetSchemaVersion));
    auto rows = conn.exec("find the instance", "SELECT id, epoch FROM devcert.instances WHERE instance_id = $1",
                          {instance_id});
    if (!rows) return rows.error();
    if (rows->size() != 1)
        return make_error(Errc::not_found,
                          fmt::format("instance '{}' is not in the fleet database (add it with devcertctl --fleet "
                                      "CONNINFO InitFleet --MqttInstanceId {})",
                                      instance_id, instance_id));
    return InstanceRow{rows->i64(0, 0), std::string(rows->text(0, 1))};
}

}  // namespace devcert::fleet_detail
