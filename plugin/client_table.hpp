// Certificate clients this plugin accepted, keyed by the broker's client
// pointer: on a session takeover the broker fires DISCONNECT for the OLD
// pointer after the new client with the same client id was accepted, so a
// client id cannot be the key.
//
// An entry stays after its connection ends, marked offline, while the
// broker may still hold the session (MQTT 5, or MQTT 3.1.1 without a clean
// session): the re-check after a reload asks about offline sessions too,
// and only for the very session the plugin accepted with a certificate does
// it answer yes (see vouches_for_offline()). An entry goes when that
// session cannot exist any more: a clean MQTT 3.1.1 session ends, another
// connection takes its client id or its pointer, a kick, a refusal, or a
// re-check after a reload does not see it. Mosquitto 2.0 tells a plugin
// nothing when an MQTT 5 session ends: such entries stay until their
// pointer is another client's (the allocator soon reuses it) or the next
// reload, so the table holds the sessions the broker holds plus the MQTT 5
// sessions that ended since the last reload at pointers not reused yet.
//
// Broker thread only. Kicks re-enter the DISCONNECT callback, which edits
// the table: kick_clients() never iterates the table while kicking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "devcert/counters.hpp"

struct mosquitto;

namespace devcert::plugin {

struct ClientEntry {
    std::string client_id;
    std::string ca_sn;      ///< "" when accepted on a store error (device unresolved)
    std::string device_sn;
    bool connected = true;
    std::uint64_t seen = 0;  ///< reload generation that last saw this entry
};

struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};

class ClientTable {
public:
    explicit ClientTable(OnlineRegistry& online) : online_(online) {}

    /// Records an accepted client. A pointer already present (the re-check
    /// after a reload) is updated in place, never duplicated. Another
    /// session holding the same client id is forgotten: the broker ends it.
    void accept(const mosquitto* client, std::string_view client_id, std::string_view ca_sn,
                std::string_view device_sn);
    /// DISCONNECT: the client's connection ended. Its entry stays, offline,
    /// if the session may outlive the connection (MQTT 5, or MQTT 3.1.1
    /// without a clean session) and was not taken over; false if not in
    /// the table.
    bool remove(const mosquitto* client);
    /// Forgets the entry of this client, connected or offline.
    void erase(const mosquitto* client) noexcept;
    /// Forgets whichever client holds this id (a kick).
    void remove_id(std::string_view client_id) noexcept;

    const ClientEntry* find(const mosquitto* client) const noexcept;
    /// The connected client with this id, if it is the device given.
    bool connected_as(std::string_view client_id, std::string_view ca_sn, std::string_view device_sn) const noexcept;
    /// Certificate clients connected now.
    std::size_t size() const noexcept { return connected_; }
    /// Every entry, connected or offline.
    std::size_t entries() const noexcept { return by_client_.size(); }
    /// Calls fn(const ClientEntry&) for every connected client, in place.
    /// fn must not kick or otherwise change the table: collect, then act.
    template <class Fn>
    void for_each(Fn&& fn) const {
        for (const auto& [client, e] : by_client_) {
            if (e.connected) fn(e);
        }
    }
    /// The same for the connected clients of one device, or of one CA:
    /// the cost is theirs, not the table's (a change touches only them).
    template <class Fn>
    void for_each_of_device(std::string_view ca_sn, std::string_view device_sn, Fn&& fn) const {
        auto ca = by_device_.find(ca_sn);
        if (ca == by_device_.end()) return;
        auto dev = ca->second.find(device_sn);
        if (dev == ca->second.end()) return;
        for (const mosquitto* client : dev->second) fn(by_client_.at(client));
    }
    template <class Fn>
    void for_each_of_ca(std::string_view ca_sn, Fn&& fn) const {
        auto ca = by_device_.find(ca_sn);
        if (ca == by_device_.end()) return;
        for (const auto& [device, clients] : ca->second) {
            for (const mosquitto* client : clients) fn(by_client_.at(client));
        }
    }

    /// During a re-check, a client without a certificate: true only for the
    /// offline session this plugin accepted with a certificate at this very
    /// pointer, under this client id.
    bool vouches_for_offline(const mosquitto* client, std::string_view client_id) noexcept;
    /// A reload's re-check starts.
    void begin_recheck() noexcept;
    /// After the re-check (at the next connection, or the next reload):
    /// forgets the offline sessions it did not see, which the broker no
    /// longer holds. Cheap when there is nothing to do.
    void end_recheck() noexcept;

private:
    void drop_id(const mosquitto* client, const ClientEntry& e) noexcept;
    /// Keeps by_device_ in step with the connected certificate clients.
    void index_add(const mosquitto* client, const ClientEntry& e);
    void index_remove(const mosquitto* client, const ClientEntry& e) noexcept;

    template <class V>
    using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

    OnlineRegistry& online_;
    std::unordered_map<const mosquitto*, ClientEntry> by_client_;
    std::unordered_map<std::string, const mosquitto*, StringHash, std::equal_to<>> by_id_;
    /// Connected certificate clients by CaSn, then DeviceSn (nearly always
    /// one client per device).
    StringMap<StringMap<std::vector<const mosquitto*>>> by_device_;
    std::size_t connected_ = 0;
    std::uint64_t generation_ = 0;  ///< reloads so far
    bool recheck_pending_ = false;  ///< a re-check happened and end_recheck() has not run
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
