// Certificate clients this plugin accepted and that are connected now,
// keyed by the broker's client pointer: on a session takeover the broker
// fires DISCONNECT for the OLD pointer after the new client with the same
// client id was accepted, so a client id cannot be the key.
//
// Broker thread only. Kicks re-enter the DISCONNECT callback, which edits
// the table: kick_clients() never iterates the table while kicking.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "devcert/counters.hpp"

struct mosquitto;

namespace devcert::plugin {

struct ClientEntry {
    std::string client_id;
    std::string ca_sn;      ///< "" when accepted on a store error (device unresolved)
    std::string device_sn;
};

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class ClientTable {
public:
    explicit ClientTable(OnlineRegistry& online) : online_(online) {}

    /// Records an accepted client. A pointer already present (the re-check
    /// after a reload) is updated in place, never duplicated.
    void accept(const mosquitto* client, std::string_view client_id, std::string_view ca_sn,
                std::string_view device_sn);
    /// Forgets a client that disconnected; false if it was not in the table.
    bool remove(const mosquitto* client);

    /// Forgets whichever client holds this id (a kick that did not come
    /// back through DISCONNECT must not leave a stale pointer behind).
    void remove_id(std::string_view client_id);

    const ClientEntry* find(const mosquitto* client) const noexcept;
    /// The connected client with this id, if it is the device given.
    bool connected_as(std::string_view client_id, std::string_view ca_sn, std::string_view device_sn) const noexcept;
    std::size_t size() const noexcept { return by_client_.size(); }
    /// Calls fn(const ClientEntry&) for every entry, in place. fn must not
    /// kick or otherwise change the table: collect, then act.
    template <class Fn>
    void for_each(Fn&& fn) const {
        for (const auto& [client, e] : by_client_) fn(e);
    }

    /// Client ids accepted since start-up and not refused or kicked since.
    /// After a reload the broker re-checks offline durable sessions with no
    /// certificate; those ids are the ones this plugin must not disconnect.
    bool accepted_before(std::string_view client_id) const noexcept;
    void forget(std::string_view client_id);

private:
    OnlineRegistry& online_;
    std::unordered_map<const mosquitto*, ClientEntry> by_client_;
    std::unordered_map<std::string, const mosquitto*, StringHash, std::equal_to<>> by_id_;
    std::unordered_set<std::string, StringHash, std::equal_to<>> accepted_ids_;
};

/// A connected client to disconnect, and why (for the log line).
struct KickTarget {
    std::string client_id;
    std::string ca_sn;
    std::string device_sn;
    const char* reason = "";
};

struct PluginState;

/// Kicks each target still connected as the same device, one at a time,
/// with no lock held. Returns the number of clients kicked.
std::size_t kick_clients(PluginState& state, const std::vector<KickTarget>& targets) noexcept;

}  // namespace devcert::plugin
