// The JSON shape of the MigrateToFleet and CheckFleet reports, in one place.
#include <nlohmann/json.hpp>

#include "devcert/fleet_tools.hpp"

namespace devcert {

namespace {
using Json = nlohmann::ordered_json;
std::string dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }
}  // namespace

std::string to_json(const MigrationReport& r) {
    Json j;
    j["Cas"] = r.cas;
    j["Devices"] = r.devices;
    j["Changes"] = r.changes;
    j["CasBeingDeleted"] = r.cas_being_deleted;
    j["FirstSeq"] = r.first_seq;
    j["LastSeq"] = r.last_seq;
    j["Renumbered"] = false;
    j["MetaKeys"] = r.meta_keys;
    return dump(j);
}

std::string to_json(const ConsistencyReport& r) {
    Json j;
    j["Consistent"] = r.consistent();
    j["ComparedCas"] = r.compared_cas;
    j["ComparedDevices"] = r.compared_devices;
    j["ReplicaEpoch"] = r.replica_epoch;
    j["FleetEpoch"] = r.fleet_epoch;
    j["ReplicaPosition"] = r.replica_position;
    j["FleetHead"] = r.fleet_head;
    j["BehindBy"] = r.behind_by();
    j["InFlight"] = r.in_flight;
    j["Queued"] = r.queued;
    j["DifferenceCount"] = r.difference_count;
    j["Differences"] = r.differences;
    return dump(j);
}

}  // namespace devcert
