#include "client_table.hpp"

#include "broker.hpp"
#include "log.hpp"
#include "plugin_state.hpp"

namespace devcert::plugin {

void ClientTable::accept(const mosquitto* client, std::string_view client_id, std::string_view ca_sn,
                         std::string_view device_sn) {
    auto [it, added] = by_client_.try_emplace(client);
    ClientEntry& e = it->second;
    if (!added) {
        if (e.client_id == client_id && e.ca_sn == ca_sn && e.device_sn == device_sn) return;
        if (!e.ca_sn.empty()) online_.remove(e.ca_sn, e.device_sn);
        if (auto id = by_id_.find(e.client_id); id != by_id_.end() && id->second == client) by_id_.erase(id);
    }
    e.client_id.assign(client_id);
    e.ca_sn.assign(ca_sn);
    e.device_sn.assign(device_sn);
    if (!e.ca_sn.empty()) online_.add(e.ca_sn, e.device_sn);
    by_id_.insert_or_assign(e.client_id, client);
    if (accepted_ids_.find(client_id) == accepted_ids_.end()) accepted_ids_.emplace(client_id);
}

bool ClientTable::remove(const mosquitto* client) {
    auto it = by_client_.find(client);
    if (it == by_client_.end()) return false;
    const ClientEntry& e = it->second;
    if (!e.ca_sn.empty()) online_.remove(e.ca_sn, e.device_sn);
    // After a takeover the id already belongs to the new client.
    if (auto id = by_id_.find(e.client_id); id != by_id_.end() && id->second == client) by_id_.erase(id);
    by_client_.erase(it);
    return true;
}

void ClientTable::remove_id(std::string_view client_id) {
    if (auto id = by_id_.find(client_id); id != by_id_.end()) remove(id->second);
}

const ClientEntry* ClientTable::find(const mosquitto* client) const noexcept {
    auto it = by_client_.find(client);
    return it == by_client_.end() ? nullptr : &it->second;
}

bool ClientTable::connected_as(std::string_view client_id, std::string_view ca_sn,
                               std::string_view device_sn) const noexcept {
    auto id = by_id_.find(client_id);
    if (id == by_id_.end()) return false;
    const ClientEntry* e = find(id->second);
    return e != nullptr && e->ca_sn == ca_sn && e->device_sn == device_sn;
}

bool ClientTable::accepted_before(std::string_view client_id) const noexcept {
    return accepted_ids_.find(client_id) != accepted_ids_.end();
}

void ClientTable::forget(std::string_view client_id) {
    if (auto it = accepted_ids_.find(client_id); it != accepted_ids_.end()) accepted_ids_.erase(it);
}

std::size_t kick_clients(PluginState& state, const std::vector<KickTarget>& targets) noexcept {
    std::size_t kicked = 0;
    for (const auto& t : targets) {
        // An earlier kick in this loop may have removed it (two targets for
        // one client) or the client may have left since the targets were
        // collected.
        if (!state.clients.connected_as(t.client_id, t.ca_sn, t.device_sn)) continue;
        try {
            state.clients.forget(t.client_id);
        } catch (...) {
        }
        log(LogLevel::notice, "kicked client '{}' (CaSn {}, DeviceSn {}): {}", t.client_id, t.ca_sn, t.device_sn,
            t.reason);
        // Re-enters our DISCONNECT callback, which removes the entry.
        mosquitto_kick_client_by_clientid(t.client_id.c_str(), false);
        if (state.clients.connected_as(t.client_id, t.ca_sn, t.device_sn)) {
            try {
                state.clients.remove_id(t.client_id);
            } catch (...) {
            }
        }
        state.counters.kicks.fetch_add(1, std::memory_order_relaxed);
        ++kicked;
    }
    return kicked;
}

}  // namespace devcert::plugin
