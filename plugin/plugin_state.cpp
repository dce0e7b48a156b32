#include "plugin_state.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "devcert/policy.hpp"
#include "devcert/threads.hpp"

namespace devcert::plugin {

PluginState::PluginState(PluginConfig cfg) : config(std::move(cfg)) {}

PluginState::~PluginState() {
    // The admin server submits to the fleet node and the writer, which wake
    // the broker thread; the writer's registrations tell the fleet node
    // about themselves: stop them in that order, before what they point to.
    if (admin) admin->stop();
    admin.reset();
    if (writer) writer->stop();
    writer.reset();
    if (fleet) fleet->stop();
    fleet.reset();
    reader.reset();
    store.reset();
    wakeup.restore();
}

namespace {

constexpr std::string_view kImportCaller = "plugin_opt_import_ca";

Result<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return make_error(Errc::io_error,
                          fmt::format("{}: cannot read '{}': {}", kImportCaller, path, std::strerror(errno)));
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

using Writer = std::function<Outcome(const std::function<Outcome(WriteView&)>&)>;

// Imports the CAs of one file through `write`: the store, or in fleet mode
// the fleet (which applies the change to the replica). Several brokers of a
// fleet may import the same CA at once: the one that loses the race finds
// the record when it runs again.
Outcome import_ca_file(Store& store, const Writer& write, const std::string& path, unsigned max_ca) {
    auto text = read_file(path);
    if (!text) return text.error();
    auto certs = parse_pem_bundle(*text);
    if (!certs) {
        return make_error(Errc::invalid_argument,
                          fmt::format("{}: '{}': {}", kImportCaller, path, certs.error().message));
    }
    for (const auto& cert : *certs) {
        auto info = validate_ca_certificate(cert.get());
        if (!info) {
            return make_error(Errc::invalid_argument,
                              fmt::format("{}: '{}': {}", kImportCaller, path, info.error().message));
        }
        bool already = false;
        CertStatus kept = CertStatus::active;
        // Known to this store (the replica, in fleet mode) with the same
        // certificate: nothing to write, so a broker starts while the fleet
        // is unreachable.
        auto local = store.read([&](ReadView& r) -> Outcome {
            auto existing = r.get_ca(info->serial);
            if (!existing) return existing.error();
            if (*existing && (*existing)->fingerprint == info->fingerprint) {
                already = true;
                kept = (*existing)->status;
            }
            return Ok{};
        });
        if (local && already) {
            log(LogLevel::info, "CA {} from '{}' is already registered; its status ({}) is kept", info->serial, path,
                status_name(kept));
            continue;
        }
        const auto job = [&](WriteView& w) -> Outcome {
            already = false;
            auto existing = w.get_ca(info->serial);
            if (!existing) return existing.error();
            if (*existing) {
                if ((*existing)->fingerprint != info->fingerprint) {
                    return make_error(Errc::already_exists,
                                      fmt::format("CA {} is already registered with a different certificate",
                                                  info->serial));
                }
                already = true;
                kept = (*existing)->status;
                return Ok{};
            }
            auto count = w.ca_count();
            if (!count) return count.error();
            if (*count >= max_ca) {
                return make_error(Errc::limit_exceeded,
                                  fmt::format("CA {} would exceed plugin_opt_max_ca ({})", info->serial, max_ca));
            }
            return w.insert_ca(new_ca_record(*info, info->common_name, RegisteredBy::import, now_ms()),
                               "ImportCaCertificate", kImportCaller);
        };
        auto written = write(job);
        if (!written && written.error().code == Errc::already_exists && !already) written = write(job);
        if (!written) {
            return make_error(written.error().code,
                              fmt::format("{}: '{}': {}", kImportCaller, path, written.error().message));
        }
        if (already) {
            log(LogLevel::info, "CA {} from '{}' is already registered; its status ({}) is kept", info->serial, path,
                status_name(kept));
        } else {
            log(LogLevel::notice, "imported CA {} ({}) from '{}' as active", info->serial, info->subject, path);
        }
    }
    return Ok{};
}

LogLevel log_level(FleetLogLevel level) {
    switch (level) {
        case FleetLogLevel::info: return LogLevel::info;
        case FleetLogLevel::notice: return LogLevel::notice;
        case FleetLogLevel::warning: return LogLevel::warning;
        case FleetLogLevel::error: return LogLevel::error;
    }
    return LogLevel::error;
}

// Fleet mode: connects, brings the replica up to date (or starts from it
// when the fleet cannot be reached) and starts following.
Outcome join_fleet(PluginState& state) {
    const PluginConfig& c = state.config;
    auto conninfo = fleet_conninfo(c.fleet);
    if (!conninfo) return make_error(conninfo.error().code, fmt::format("plugin_opt_fleet: {}", conninfo.error().message));
    FleetNodeOptions options;
    options.fleet.conninfo = std::move(*conninfo);
    options.fleet.instance_id = c.instance_id;
    options.poll_interval = std::chrono::milliseconds(c.fleet_poll_ms);
    options.trim_interval = std::chrono::seconds(c.fleet_trim_interval);
    options.fleet.timeout_s = c.fleet_timeout;
    options.log_retention = c.change_log_retention;
    PluginState* raw = &state;
    auto node = FleetNode::start(
        *state.store, options, [raw] { raw->wakeup.wake(); },
        [raw](FleetLogLevel level, std::string line) {
            raw->deferred.push(log_level(level), std::move(line));
            raw->wakeup.wake();
        });
    if (!node) return make_error(node.error().code, fmt::format("plugin_opt_fleet: {}", node.error().message));
    state.fleet = std::move(*node);
    // The lines of the start-up itself, now rather than at the first tick.
    state.deferred.drain();
    return Ok{};
}

const char* signal_label(int signo) {
    if (signo == 0) return "off";
    const char* name = sigabbrev_np(signo);
    return name ? name : "real-time";
}

}  // namespace

Outcome load_issuers(Store& store, IssuerIndex& index) {
    IssuerIndex fresh;
    auto read = store.read([&](ReadView& r) -> Outcome {
        fresh.clear();
        for (std::uint32_t page = 1;; ++page) {
            auto cas = r.list_cas(Page{page, 100});
            if (!cas) return cas.error();
            for (const auto& rec : cas->items) {
                auto cert = parse_pem_certificate(rec.content_pem);
                if (!cert) {
                    return make_error(Errc::store_error, fmt::format("stored CA {} cannot be read: {}", rec.sn,
                                                                     cert.error().message));
                }
                fresh.add(rec.sn, cert->get());
            }
            if (cas->items.size() < 100 || static_cast<std::uint64_t>(page) * 100 >= cas->total) break;
        }
        return Ok{};
    });
    if (!read) return read;
    index = std::move(fresh);
    return Ok{};
}

Result<std::unique_ptr<PluginState>> start_plugin(PluginConfig config) {
    // The policy is checked before anything is written (imports commit at
    // once), and whether or not the socket is on: a broken file is a broken
    // option either way. The admin server reads it again when it starts.
    if (!config.admin_policy.empty()) {
        if (auto policy = AccessPolicy::load(config.admin_policy); !policy) {
            return make_error(policy.error().code, fmt::format("plugin_opt_admin_policy: {}", policy.error().message));
        }
    }

    auto state = std::make_unique<PluginState>(std::move(config));
    const PluginConfig& c = state->config;

    // Before any thread exists, so that every thread we start blocks it.
    set_wakeup_signal(c.wakeup_signal);
    if (auto ok = state->wakeup.install(c.wakeup_signal); !ok) {
        return make_error(ok.error().code, fmt::format("plugin_opt_wakeup_signal: {}", ok.error().message));
    }

    StoreOptions options;
    options.path = c.db_path;
    options.initial_map_size = c.map_size;
    options.change_log_retention = c.change_log_retention;
    options.create = true;
    options.replica = !c.fleet.empty();
    auto opened = Store::open(options);
    if (!opened) {
        return make_error(opened.error().code, fmt::format("plugin_opt_db_path: {}", opened.error().message));
    }
    state->store = std::move(*opened);
    Store& store = *state->store;
    if (!store.discarded().empty()) {
        log(LogLevel::warning, "fleet: the replica in '{}' was discarded ({}); it is rebuilt from the fleet",
            store.path(), store.discarded());
    }

    // Recorded so that devcertctl --db, working on the store without the
    // broker, answers for the same instance and applies the same CA limit.
    auto recorded = store.write([&](WriteView& w) -> Outcome {
        if (auto ok = w.set_meta("instance_id", c.instance_id); !ok) return ok;
        return w.set_meta("max_ca", std::to_string(c.max_ca));
    });
    if (!recorded) {
        return make_error(recorded.error().code, fmt::format("cannot record the instance id and CA limit in '{}': {}", store.path(),
                                                             recorded.error().message));
    }
    if (!c.fleet.empty()) {
        if (auto ok = join_fleet(*state); !ok) return ok.error();
    }
    const Writer write = [&state, &store](const std::function<Outcome(WriteView&)>& job) -> Outcome {
        if (state->fleet) return state->fleet->write(job);
        return store.write(job);
    };
    for (const auto& path : c.import_ca) {
        if (auto ok = import_ca_file(store, write, path, c.max_ca); !ok) return ok.error();
    }
    if (auto ok = load_issuers(store, state->issuers); !ok) {
        return make_error(ok.error().code,
                          fmt::format("cannot load CAs from '{}': {}", store.path(), ok.error().message));
    }

    state->reader = std::make_unique<StatusReader>(store);
    // Changes made before start-up are already reflected in the statuses
    // every connection reads: the tick only needs what comes after.
    if (!state->reader->refresh() || state->reader->last_change_seq(state->last_seq) == Lookup::error) {
        return make_error(Errc::store_error, fmt::format("cannot read the change log of '{}'", store.path()));
    }
    state->reader->release();

    PluginState* raw = state.get();
    state->writer = std::make_unique<StoreWriter>(store, [raw] { raw->wakeup.wake(); });

    if (!c.admin_socket.empty()) {
        AdminContext context;
        context.store = &store;
        context.writer = state->writer.get();
        context.records = state->fleet.get();
        context.config = &state->config;
        context.counters = &state->counters;
        context.online = &state->online;
        context.audit = [raw](std::string line) {
            raw->deferred.push(LogLevel::notice, std::move(line));
            raw->wakeup.wake();
        };
        auto admin = AdminServer::start(context);
        if (!admin) {
            // The policy already loaded above: what fails here is the socket.
            return make_error(admin.error().code, fmt::format("plugin_opt_admin_socket: {}", admin.error().message));
        }
        state->admin = std::move(*admin);
    }

    log(LogLevel::notice, "instance '{}', {} '{}', {} CA(s) registered, admin socket {}, wake-up signal {}",
        c.instance_id, state->fleet ? "fleet replica" : "store", store.path(), state->issuers.size(), c.admin_socket.empty() ? "off" : "'" + c.admin_socket + "'",
        signal_label(c.wakeup_signal));
    return state;
}

}  // namespace devcert::plugin
