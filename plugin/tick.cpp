#include "tick.hpp"

#include <set>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "devcert/replica.hpp"
#include "plugin_state.hpp"

namespace devcert::plugin {

namespace {

constexpr std::size_t kChangesPerRead = 1024;

// What one pass over the change log asks of the broker thread.
struct Pending {
    std::set<std::pair<std::string, std::string>> devices_out;  // (ca, dev) no longer active or removed
    std::unordered_set<std::string> cas_out;      // CAs no longer active or removed
    bool cas_changed = false;                     // a CA was added or removed: rebuild the index
    bool trimmed = false;                         // entries we never saw were dropped
};

bool still_active(const std::optional<CertStatus>& s) { return s && *s == CertStatus::active; }

// Reads every entry after state.last_seq. Returns false on a store error
// (last_seq then stays where the error happened; the next tick retries).
bool read_changes(PluginState& state, Pending& p) {
    StatusReader& reader = *state.reader;
    std::uint64_t last = 0;
    if (reader.last_change_seq(last) == Lookup::error) return false;
    if (last < state.last_seq) {
        // The log went back: a fleet replica was rebuilt from a snapshot
        // of a fleet restored to an earlier point.
        p.trimmed = true;
        state.last_seq = last;
        return true;
    }
    if (last == state.last_seq) return true;
    std::uint64_t first = 0;
    if (reader.first_change_seq(first) == Lookup::error) return false;
    if (first > state.last_seq + 1) {
        p.trimmed = true;
        state.last_seq = last;
        return true;
    }
    while (state.last_seq < last) {
        const std::uint64_t before = state.last_seq;
        auto rc = reader.changes_after(state.last_seq, kChangesPerRead, [&](const ChangeEntry& e) {
            state.last_seq = e.seq;
            if (e.action == kResyncAction) {
                // Everything may have changed, and what did is not logged.
                p.trimmed = true;
                return;
            }
            const bool ca_level = e.device_sn.empty();
            if (ca_level && (!e.old_status || !e.new_status)) p.cas_changed = true;
            if (still_active(e.new_status)) return;
            if (ca_level) {
                p.cas_out.insert(e.ca_sn);
            } else if (e.old_status || e.new_status) {
                p.devices_out.emplace(e.ca_sn, e.device_sn);
            }
        });
        if (rc == Lookup::error) return false;
        if (state.last_seq == before) break;  // nothing more readable now
    }
    return true;
}

// Only the clients of the devices and CAs that changed: the work grows with
// the changes, not with the sessions held (the table's index by device).
std::vector<KickTarget> targets_for(const PluginState& state, const Pending& p) {
    std::vector<KickTarget> targets;
    // Collecting reads the table in place: the kicks, which edit it, come after.
    for (const auto& ca : p.cas_out) {
        state.clients.for_each_of_ca(ca, [&](const ClientEntry& e) {
            targets.push_back({e.client_id, e.ca_sn, e.device_sn, "ca no longer active"});
        });
    }
    for (const auto& [ca, dev] : p.devices_out) {
        if (p.cas_out.count(ca)) continue;  // kicked with its CA
        state.clients.for_each_of_device(ca, dev, [&](const ClientEntry& e) {
            targets.push_back({e.client_id, e.ca_sn, e.device_sn, "device no longer active"});
        });
    }
    return targets;
}

}  // namespace

std::size_t recheck_connected(PluginState& state) noexcept {
    std::vector<KickTarget> targets;
    try {
        StatusReader& reader = *state.reader;
        if (!reader.refresh()) return 0;
        state.clients.for_each([&](const ClientEntry& e) {
            if (e.ca_sn.empty()) return;
            DeviceStatusView device;
            CertStatus ca = CertStatus::inactive;
            const Lookup d = reader.device_status(e.ca_sn, e.device_sn, device);
            const Lookup c = reader.ca_status(e.ca_sn, ca);
            if (d == Lookup::error || c == Lookup::error) {
                state.counters.store_errors.fetch_add(1, std::memory_order_relaxed);
                return;  // never kick on a store error
            }
            if (c != Lookup::found || ca != CertStatus::active) {
                targets.push_back({e.client_id, e.ca_sn, e.device_sn, "ca no longer active"});
            } else if (d != Lookup::found || device.status != CertStatus::active) {
                targets.push_back({e.client_id, e.ca_sn, e.device_sn, "device no longer active"});
            }
        });
        reader.release();
    } catch (...) {
        log(LogLevel::error, "out of memory re-checking connected clients");
    }
    return kick_clients(state, targets);
}

std::size_t on_tick(PluginState& state) noexcept {
    state.tick_watch.tick_seen = true;
    // The re-check that follows a reload is over once its TICK arrives.
    state.reload_recheck = false;
    state.deferred.drain();

    // The loop ticks several times per connection under load: when no
    // process has committed since the snapshot last read, there is nothing
    // to tail. LMDB writes the meta page a moment before new snapshots see
    // the commit, so what counts as read is the snapshot's own commit id: a
    // commit the snapshot missed keeps the ids apart until a tick reads it.
    const std::uint64_t commit = state.store->last_commit_id();
    if (commit != 0 && commit == state.last_commit_read) return 0;

    Pending pending;
    std::vector<KickTarget> targets;
    try {
        StatusReader& reader = *state.reader;
        if (!reader.refresh()) {
            state.counters.store_errors.fetch_add(1, std::memory_order_relaxed);
            return 0;
        }
        const bool ok = read_changes(state, pending);
        if (ok) state.last_commit_read = reader.snapshot_commit_id();
        reader.release();
        if (!ok) {
            state.counters.store_errors.fetch_add(1, std::memory_order_relaxed);
            log(LogLevel::error, "cannot read the change log of '{}' after entry {}", state.store->path(),
                state.last_seq);
        }
        if (pending.cas_changed) {
            if (auto loaded = load_issuers(*state.store, state.issuers); !loaded) {
                log(LogLevel::error, "cannot reload the registered CAs: {}", loaded.error().message);
            }
        }
        if (pending.trimmed) {
            log(LogLevel::warning, "the change log was trimmed past entry {}: re-checking every connected client",
                state.last_seq);
            if (auto loaded = load_issuers(*state.store, state.issuers); !loaded) {
                log(LogLevel::error, "cannot reload the registered CAs: {}", loaded.error().message);
            }
            return recheck_connected(state);
        }
        targets = targets_for(state, pending);
    } catch (...) {
        log(LogLevel::error, "out of memory applying store changes: re-checking every connected client");
        return recheck_connected(state);
    }
    return kick_clients(state, targets);
}

}  // namespace devcert::plugin
