// Everything the plugin owns, in one struct handed to every callback as
// userdata. Fields marked "broker thread" are touched only from broker
// callbacks; the rest are thread-safe on their own.
#pragma once

#include <pthread.h>

#include <chrono>
#include <cstdint>
#include <memory>

#include "client_table.hpp"
#include "devcert/admin_server.hpp"
#include "devcert/certificate.hpp"
#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/fleet_node.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"
#include "log.hpp"
#include "sys_topics.hpp"
#include "tick_timer.hpp"
#include "wakeup.hpp"

struct mosquitto_plugin_id_t;

namespace devcert::plugin {

/// Notices that TICK never arrives (Mosquitto 2.0.11 with
/// per_listener_settings true), which means no kick can ever happen.
struct TickWatch {
    using Clock = std::chrono::steady_clock;
    std::chrono::milliseconds grace{5000};  ///< how long without a TICK before the error

    Clock::time_point armed_at{};     ///< first connection checked
    bool tick_seen = false;
    bool warned = false;
};

struct PluginState {
    explicit PluginState(PluginConfig cfg);
    /// Stops the admin server and the writer (joining their threads) before
    /// the store closes, then puts back the previous signal handler.
    ~PluginState();
    PluginState(const PluginState&) = delete;
    PluginState& operator=(const PluginState&) = delete;

    const PluginConfig config;
    mosquitto_plugin_id_t* plugin_id = nullptr;

    Counters counters;
    OnlineRegistry online;
    DeferredLog deferred;
    WakeupSignal wakeup;

    std::unique_ptr<Store> store;
    std::unique_ptr<StatusReader> reader;   ///< broker thread
    IssuerIndex issuers;                    ///< broker thread
    std::unique_ptr<StoreWriter> writer;
    /// Fleet mode only: the store above is the fleet's replica.
    std::unique_ptr<FleetNode> fleet;
    std::unique_ptr<AdminServer> admin;

    ClientTable clients{online};            ///< broker thread
    std::uint64_t last_seq = 0;             ///< newest change-log entry applied; broker thread
    std::uint64_t last_commit_read = 0;     ///< store commit id when the log was last read; broker thread
    /// Set by RELOAD, cleared by the TICK of the same loop iteration: the
    /// BASIC_AUTH calls in between are the broker's re-check of every session.
    bool reload_recheck = false;            ///< broker thread
    TickWatch tick_watch;                   ///< broker thread
    TickTimer tick_timer;                   ///< broker thread; 2.1 brokers only
    SysTopics sys_topics;                   ///< broker thread
};

/// Opens the store, imports CAs, builds the issuer index and starts the
/// writer and the admin server. Must run on the broker thread (it becomes
/// the thread the wake-up signal is aimed at). Errors are operator-facing.
Result<std::unique_ptr<PluginState>> start_plugin(PluginConfig config);

/// Loads every registered CA certificate from the store into the index.
Outcome load_issuers(Store& store, IssuerIndex& index);

}  // namespace devcert::plugin
