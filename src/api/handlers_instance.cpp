// Instance-wide operations: the change log and the counters.
#include <optional>

#include "operation_call.hpp"
#include "records.hpp"

namespace devcert {

void list_certificate_changes(OperationCall& call) {
    const std::uint64_t since = call.params.number("SinceSeq", 0);
    const std::size_t limit = static_cast<std::size_t>(call.params.number("PageSize", 100));
    std::vector<ChangeEntry> changes;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto listed = view.changes_after(since, limit);
        if (!listed) return listed.error();
        changes = std::move(*listed);
        return Ok{};
    });
    if (!outcome) return fail_store(call, outcome.error());
    auto items = nlohmann::json::array();
    for (const auto& change : changes) items.push_back(change_json(change));
    // NextSeq is what to pass as SinceSeq to continue: unchanged when there
    // was nothing new.
    const std::uint64_t next = changes.empty() ? since : changes.back().seq;
    call.response["Data"] = {{"Changes", std::move(items)}, {"NextSeq", std::to_string(next)}};
}

void get_stats(OperationCall& call) {
    std::uint64_t cas = 0;
    std::uint64_t devices = 0;
    const auto outcome = read(call, [&](ReadView& view) -> Outcome {
        auto ca_count = view.ca_count();
        if (!ca_count) return ca_count.error();
        auto device_count = view.device_count();
        if (!device_count) return device_count.error();
        cas = *ca_count;
        devices = *device_count;
        return Ok{};
    });
    if (!outcome) return fail_store(call, outcome.error());
    auto counters = nlohmann::json::object();
    if (call.context.counters != nullptr) {
        for (const auto& [name, value] : call.context.counters->snapshot()) counters[name] = value;
    }
    const std::uint64_t connected = call.context.online != nullptr ? call.context.online->connected() : 0;
    call.response["Data"] = {
        {"CaCount", cas},
        {"DeviceCount", devices},
        {"ConnectedClients", connected},
        {"Counters", std::move(counters)},
    };
    const auto fleet = call.context.records != nullptr ? call.context.records->fleet_stats() : std::nullopt;
    if (fleet) {
        // Lag in changes: what the fleet was seen to hold beyond what this
        // broker's replica applied (0 when the replica is ahead of a stale
        // head reading).
        const std::uint64_t lag = fleet->head > fleet->position ? fleet->head - fleet->position : 0;
        call.response["Data"]["Fleet"] = {
            {"Connected", fleet->connected},
            {"Epoch", fleet->epoch},
            {"Position", fleet->position},
            {"Head", fleet->head},
            {"Lag", lag},
            {"LagMs", fleet->lag_ms},
            {"QueuedRegistrations", fleet->queued_registrations},
            {"Resyncs", fleet->resyncs},
        };
    }
}

}  // namespace devcert
