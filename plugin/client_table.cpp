#include "client_table.hpp"

#include "broker.hpp"
#include "log.hpp"
#include "plugin_state.hpp"

namespace devcert::plugin {

namespace {
// MQTT 5 sessions last as long as their expiry interval, which Mosquitto 2.0
// does not tell plugins; an MQTT 3.1.1 session only without a clean session.
bool session_may_persist(const mosquitto* client) noexcept {
    return mosquitto_client_protocol_version(client) == 5 || !mosquitto_client_clean_session(client);
}
}  // namespace

void ClientTable::drop_id(const mosquitto* client, const ClientEntry& e) noexcept {
    // After a takeover the id may already belong to another client.
    if (auto id = by_id_.find(e.client_id); id != by_id_.end() && id->second == client) by_id_.erase(id);
}

void ClientTable::index_add(const mosquitto* client, const ClientEntry& e) {
    if (e.ca_sn.empty()) return;
    auto ca = by_device_.find(e.ca_sn);
    if (ca == by_device_.end()) ca = by_device_.emplace(e.ca_sn, StringMap<std::vector<const mosquitto*>>{}).first;
    auto dev = ca->second.find(e.device_sn);
    if (dev == ca->second.end()) dev = ca->second.emplace(e.device_sn, std::vector<const mosquitto*>{}).first;
    dev->second.push_back(client);
}

void ClientTable::index_remove(const mosquitto* client, const ClientEntry& e) noexcept {
    if (e.ca_sn.empty()) return;
    auto ca = by_device_.find(e.ca_sn);
    if (ca == by_device_.end()) return;
    auto dev = ca->second.find(e.device_sn);
    if (dev == ca->second.end()) return;
    auto& clients = dev->second;
    for (auto it = clients.begin(); it != clients.end(); ++it) {
        if (*it != client) continue;
        *it = clients.back();
        clients.pop_back();
        break;
    }
    if (clients.empty()) ca->second.erase(dev);
    if (ca->second.empty()) by_device_.erase(ca);
}

void ClientTable::accept(const mosquitto* client, std::string_view client_id, std::string_view ca_sn,
                         std::string_view device_sn) {
    // The broker keeps one session per client id: an offline one with this
    // id is taken over (freed) once this client is in.
    if (auto id = by_id_.find(client_id); id != by_id_.end() && id->second != client) {
        auto other = by_client_.find(id->second);
        if (other != by_client_.end() && !other->second.connected) erase(id->second);
    }
    auto [it, added] = by_client_.try_emplace(client);
    ClientEntry& e = it->second;
    if (!added) {
        if (e.connected && e.client_id == client_id && e.ca_sn == ca_sn && e.device_sn == device_sn) {
            e.seen = generation_;
            return;
        }
        if (e.connected) {
            if (!e.ca_sn.empty()) online_.remove(e.ca_sn, e.device_sn);
            index_remove(client, e);
            --connected_;
        }
        drop_id(client, e);
    }
    e.client_id.assign(client_id);
    e.ca_sn.assign(ca_sn);
    e.device_sn.assign(device_sn);
    e.connected = true;
    e.seen = generation_;
    ++connected_;
    if (!e.ca_sn.empty()) online_.add(e.ca_sn, e.device_sn);
    index_add(client, e);
    by_id_.insert_or_assign(e.client_id, client);
}

bool ClientTable::remove(const mosquitto* client) {
    auto it = by_client_.find(client);
    if (it == by_client_.end()) return false;
    ClientEntry& e = it->second;
    if (!e.connected) {
        // A second DISCONNECT for an offline session: the broker ends it
        // (taken over, or refused by a re-check).
        erase(client);
        return true;
    }
    // After a takeover the id already belongs to the new client, and the
    // broker frees this session; a clean MQTT 3.1.1 session ends here.
    auto id = by_id_.find(e.client_id);
    const bool taken_over = id == by_id_.end() || id->second != client;
    if (taken_over || !session_may_persist(client)) {
        erase(client);
        return true;
    }
    if (!e.ca_sn.empty()) online_.remove(e.ca_sn, e.device_sn);
    index_remove(client, e);
    --connected_;
    e.connected = false;
    e.seen = generation_;
    return true;
}

void ClientTable::erase(const mosquitto* client) noexcept {
    auto it = by_client_.find(client);
    if (it == by_client_.end()) return;
    const ClientEntry& e = it->second;
    if (e.connected) {
        if (!e.ca_sn.empty()) online_.remove(e.ca_sn, e.device_sn);
        index_remove(client, e);
        --connected_;
    }
    drop_id(client, e);
    by_client_.erase(it);
}

void ClientTable::remove_id(std::string_view client_id) noexcept {
    if (auto id = by_id_.find(client_id); id != by_id_.end()) erase(id->second);
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
    return e != nullptr && e->connected && e->ca_sn == ca_sn && e->device_sn == device_sn;
}

bool ClientTable::vouches_for_offline(const mosquitto* client, std::string_view client_id) noexcept {
    auto it = by_client_.find(client);
    if (it == by_client_.end()) return false;
    ClientEntry& e = it->second;
    if (e.connected || e.client_id != client_id) return false;
    e.seen = generation_;
    return true;
}

void ClientTable::begin_recheck() noexcept {
    end_recheck();
    ++generation_;
    recheck_pending_ = true;
}

void ClientTable::end_recheck() noexcept {
    if (!recheck_pending_) return;
    recheck_pending_ = false;
    for (auto it = by_client_.begin(); it != by_client_.end();) {
        const ClientEntry& e = it->second;
        if (e.connected || e.seen >= generation_) {
            ++it;
            continue;
        }
        drop_id(it->first, e);
        it = by_client_.erase(it);
    }
}

std::size_t kick_clients(PluginState& state, const std::vector<KickTarget>& targets) noexcept {
    std::size_t kicked = 0;
    for (const auto& t : targets) {
        // An earlier kick in this loop may have removed it (two targets for
        // one client) or the client may have left since the targets were
        // collected.
        if (!state.clients.connected_as(t.client_id, t.ca_sn, t.device_sn)) continue;
        // Forgotten before the kick: the session a kick leaves behind is
        // not one this plugin vouches for any more.
        state.clients.remove_id(t.client_id);
        log(LogLevel::notice, "kicked client '{}' (CaSn {}, DeviceSn {}): {}", t.client_id, t.ca_sn, t.device_sn,
            t.reason);
        // Re-enters our DISCONNECT callback, which finds nothing to do.
        mosquitto_kick_client_by_clientid(t.client_id.c_str(), false);
        state.counters.kicks.fetch_add(1, std::memory_order_relaxed);
        ++kicked;
    }
    return kicked;
}

}  // namespace devcert::plugin
