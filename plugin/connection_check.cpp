#include "connection_check.hpp"

#include <openssl/asn1.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/objects.h>

#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "broker.hpp"
#include "devcert/replica.hpp"
#include "devcert/serial.hpp"
#include "plugin_state.hpp"

namespace devcert::plugin {

namespace {

constexpr std::size_t kMaxCandidates = 8;

std::string_view ca_of(const Verdict& v) noexcept { return {v.ca_sn, v.ca_sn_len}; }
std::string_view device_of(const Verdict& v) noexcept { return {v.device_sn, v.device_sn_len}; }

void set_ca(Verdict& v, const std::string& sn) noexcept {
    v.ca_sn = sn.c_str();
    v.ca_sn_len = sn.size();
}

Refusal refusal_for_device(CertStatus s) noexcept {
    return s == CertStatus::revoked ? Refusal::device_revoked : Refusal::device_inactive;
}

// The device record is known: its status decides, then its CA's status.
void judge_registered(StatusReader& reader, CertStatus device_status, Verdict& v) noexcept {
    if (device_status != CertStatus::active) {
        v.kind = Verdict::Kind::refuse;
        v.refusal = refusal_for_device(device_status);
        return;
    }
    CertStatus ca_status = CertStatus::inactive;
    switch (reader.ca_status(ca_of(v), ca_status)) {
        case Lookup::error: v.kind = Verdict::Kind::store_error; return;
        case Lookup::not_found:
            v.kind = Verdict::Kind::refuse;
            v.refusal = Refusal::ca_not_registered;
            return;
        case Lookup::found: break;
    }
    if (ca_status != CertStatus::active) {
        v.kind = Verdict::Kind::refuse;
        v.refusal = Refusal::ca_inactive;
        return;
    }
    v.kind = Verdict::Kind::accept;
}

// Why serial_from_asn1_into() found no canonical form. TLS lets such
// certificates through (OpenSSL verifies a negative serial happily), so the
// operator needs to know which rule refused them.
const char* serial_problem(const ASN1_INTEGER* serial) noexcept {
    if (serial == nullptr) return "no serial number";
    if (ASN1_STRING_type(serial) == V_ASN1_NEG_INTEGER) return "negative serial number";
    const unsigned char* bytes = ASN1_STRING_get0_data(serial);
    const int len = ASN1_STRING_length(serial);
    for (int i = 0; i < len; ++i) {
        if (bytes[i] != 0) return "serial number longer than 64 octets";
    }
    return "serial number zero";
}

}  // namespace

void evaluate_certificate(PluginState& state, X509* cert, Verdict& v) noexcept {
    v.kind = Verdict::Kind::refuse;
    v.refusal = Refusal::bad_certificate;
    v.detail = nullptr;
    const ASN1_INTEGER* serial = X509_get0_serialNumber(cert);
    const std::size_t n = serial_from_asn1_into(serial, v.device_sn, sizeof v.device_sn);
    if (n == 0) {
        v.device_sn[0] = '-';
        v.device_sn_len = 1;
        v.detail = serial_problem(serial);
        return;
    }
    v.device_sn_len = n;
    Sha256 fingerprint{};
    if (!certificate_fingerprint(cert, fingerprint)) {
        v.detail = "cannot compute its fingerprint";
        return;
    }

    StatusReader& reader = *state.reader;
    if (!reader.refresh()) {
        v.kind = Verdict::Kind::store_error;
        return;
    }

    // A device stored with this very certificate under a candidate CA needs
    // no signature check: the fingerprint already proves it is the same one.
    // What each lookup found is kept: the verified issuer is nearly always
    // one of the candidates, and its record needs no second lookup.
    const std::string* candidates[kMaxCandidates];
    const std::size_t count = state.issuers.candidates(cert, candidates, kMaxCandidates);
    Lookup looked_up[kMaxCandidates];
    DeviceStatusView views[kMaxCandidates];
    for (std::size_t i = 0; i < count; ++i) {
        looked_up[i] = reader.device_status(*candidates[i], device_of(v), views[i]);
        switch (looked_up[i]) {
            case Lookup::error: v.kind = Verdict::Kind::store_error; return;
            case Lookup::not_found: continue;
            case Lookup::found: break;
        }
        if (views[i].fingerprint != fingerprint) continue;
        set_ca(v, *candidates[i]);
        judge_registered(reader, views[i].status, v);
        return;
    }

    const std::string* issuer = state.issuers.find_issuer(cert);
    if (issuer == nullptr) {
        v.kind = Verdict::Kind::refuse;
        v.refusal = Refusal::ca_not_registered;
        return;
    }
    set_ca(v, *issuer);
    // Same (CaSn, DeviceSn) with another certificate, signed by that CA: the
    // pair is the identity, as in the reference service, so its record rules.
    DeviceStatusView view;
    Lookup under_issuer = Lookup::error;
    bool known = false;
    for (std::size_t i = 0; i < count && !known; ++i) {
        if (candidates[i] != issuer) continue;  // both point into the index
        under_issuer = looked_up[i];
        view = views[i];
        known = true;
    }
    if (!known) under_issuer = reader.device_status(*issuer, device_of(v), view);
    switch (under_issuer) {
        case Lookup::error: v.kind = Verdict::Kind::store_error; return;
        case Lookup::found: judge_registered(reader, view.status, v); return;
        case Lookup::not_found: break;
    }

    CertStatus ca_status = CertStatus::inactive;
    switch (reader.ca_status(*issuer, ca_status)) {
        case Lookup::error: v.kind = Verdict::Kind::store_error; return;
        case Lookup::not_found:
            v.refusal = Refusal::ca_not_registered;
            return;
        case Lookup::found: break;
    }
    if (ca_status != CertStatus::active) {
        v.refusal = Refusal::ca_inactive;
        return;
    }
    switch (state.config.auto_register) {
        case AutoRegister::active: v.kind = Verdict::Kind::register_then_accept; return;
        case AutoRegister::inactive:
            v.kind = Verdict::Kind::register_then_refuse;
            v.refusal = Refusal::device_inactive;
            return;
        case AutoRegister::off: v.refusal = Refusal::not_registered; return;
    }
}

namespace {

const char* client_id_of(mosquitto* client) noexcept {
    const char* id = mosquitto_client_id(client);
    return id ? id : "";
}

int len_of(std::string_view s) noexcept { return static_cast<int>(s.size()); }

// Hands the registration to the writer thread: the broker thread never
// waits for a disk write. A second connection before the commit submits
// again; the job then finds the record and changes nothing.
void submit_registration(PluginState& state, X509* cert, const Verdict& v) {
    auto info = describe_certificate(cert);
    if (!info) {
        log(LogLevel::warning, "cannot register DeviceSn {} under CaSn {}: {}", device_of(v), ca_of(v),
            info.error().message);
        return;
    }
    DeviceRecord rec = new_device_record(
        *info, std::string(ca_of(v)),
        v.kind == Verdict::Kind::register_then_accept ? CertStatus::active : CertStatus::inactive,
        RegisteredBy::connection, now_ms());

    const char* status = status_name(rec.status);
    auto inserted = std::make_shared<bool>(false);
    PluginState* raw = &state;
    std::string ca(ca_of(v));
    std::string dev(device_of(v));
    // In fleet mode the record goes into the replica at once, without a
    // change-log entry, and waits in the registration queue for the fleet,
    // whose own entry reaches the replica through the log. Either way, a
    // record that appeared since the check (registered by an operator, or
    // by the fleet) came with a log entry the tick has not read yet, so the
    // session accepted meanwhile is re-judged by it: nothing to do here.
    // The writer thread reads neither the state's pointer to the fleet node
    // (the broker thread owns it) nor the node after the writer stopped
    // (PluginState stops the writer first).
    FleetNode* fleet = state.fleet.get();
    const bool queue = fleet != nullptr;
    const std::uint64_t max_queued = state.config.fleet_queue_max;
    state.writer->submit(
        [rec = std::move(rec), inserted, queue, max_queued](WriteView& w) -> Outcome {
            *inserted = false;
            auto existing = w.get_device(rec.ca_sn, rec.device_sn);
            if (!existing) return existing.error();
            if (*existing) return Ok{};
            auto done = queue ? replica_queue_registration(w, rec, max_queued)
                              : w.insert_device(rec, "AutoRegister", "connection");
            if (!done) return done;
            *inserted = true;
            return Ok{};
        },
        [raw, fleet, inserted, ca = std::move(ca), dev = std::move(dev), status](const Outcome& outcome) {
            // Writer thread: no broker call here, the lines wait for the tick.
            if (!outcome) {
                raw->counters.store_errors.fetch_add(1, std::memory_order_relaxed);
                raw->deferred.push(LogLevel::error, fmt::format("cannot register DeviceSn {} under CaSn {}: {}", dev,
                                                                ca, outcome.error().message));
            } else if (*inserted) {
                raw->counters.auto_registrations.fetch_add(1, std::memory_order_relaxed);
                if (fleet) fleet->registration_queued();
                raw->deferred.push(LogLevel::notice, fmt::format("registered DeviceSn {} under CaSn {} as {}{}", dev,
                                                                 ca, status, fleet ? " (queued for the fleet)" : ""));
            }
        });
}

void free_openssl(void* p) noexcept { OPENSSL_free(p); }

// A username held for the broker, which copies it: short ones (nearly all)
// stay on the stack, long ones up to the MQTT limit go to the heap.
class UsernameBuffer {
public:
    UsernameBuffer() = default;
    UsernameBuffer(const UsernameBuffer&) = delete;
    UsernameBuffer& operator=(const UsernameBuffer&) = delete;

    void assign(const char* data, std::size_t n) {
        if (n < sizeof small_) {
            std::memcpy(small_, data, n);
            small_[n] = '\0';
            text_ = small_;
        } else {
            large_.assign(data, n);
            text_ = large_.c_str();
        }
        size_ = n;
    }
    const char* c_str() const noexcept { return text_; }
    std::string_view view() const noexcept { return {text_, size_}; }
    bool empty() const noexcept { return size_ == 0; }

private:
    char small_[256];
    std::string large_;
    const char* text_ = "";
    std::size_t size_ = 0;
};

const char* problem_text(MqttStringProblem p, bool cn) noexcept {
    switch (p) {
        case MqttStringProblem::none: return nullptr;
        case MqttStringProblem::too_long:
            return cn ? "common name longer than 65535 bytes" : "subject longer than 65535 bytes";
        case MqttStringProblem::nul:
            return cn ? "common name contains a NUL character" : "subject contains a NUL character";
        case MqttStringProblem::malformed: return cn ? "common name is not valid UTF-8" : "subject is not valid UTF-8";
        case MqttStringProblem::control:
            return cn ? "common name contains a control character" : "subject contains a control character";
        case MqttStringProblem::noncharacter:
            return cn ? "common name contains a Unicode non-character" : "subject contains a Unicode non-character";
    }
    return "cannot be a username";
}

bool plain_ascii(const ASN1_STRING* s) noexcept {
    const unsigned char* p = ASN1_STRING_get0_data(s);
    const int n = ASN1_STRING_length(s);
    for (int i = 0; i < n; ++i) {
        if (p[i] >= 0x80) return false;
    }
    return true;
}

// The first CN as UTF-8, exactly: UTF8String as it is, ASCII strings as
// they are, every other string type converted by OpenSSL. Empty when there
// is no CN. Returns what is wrong with it, or nullptr.
const char* common_name_of(X509* cert, UsernameBuffer& out) {
    const X509_NAME* name = X509_get_subject_name(cert);
    const int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (index < 0) return nullptr;
    const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
    const int type = ASN1_STRING_type(value);
    if (type == V_ASN1_UTF8STRING ||
        ((type == V_ASN1_PRINTABLESTRING || type == V_ASN1_IA5STRING) && plain_ascii(value))) {
        out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                   static_cast<std::size_t>(ASN1_STRING_length(value)));
    } else {
        unsigned char* raw = nullptr;
        const int len = ASN1_STRING_to_UTF8(&raw, value);
        std::unique_ptr<unsigned char, CDeleter<free_openssl>> utf8(raw);
        if (len < 0) {
            ERR_clear_error();
            return problem_text(MqttStringProblem::malformed, true);
        }
        out.assign(reinterpret_cast<const char*>(utf8.get()), static_cast<std::size_t>(len));
    }
    return problem_text(mqtt_string_problem(out.view()), true);
}

// The subject as RFC 2253 prints it (as mosquitto's use_subject_as_username
// does): control characters and non-ASCII bytes come out escaped.
const char* subject_of(X509* cert, UsernameBuffer& out) {
    BioPtr bio(BIO_new(BIO_s_mem()));
    if (!bio || X509_NAME_print_ex(bio.get(), X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) < 0) {
        ERR_clear_error();
        return "subject cannot be printed";
    }
    char* data = nullptr;
    const long len = BIO_get_mem_data(bio.get(), &data);
    if (len > 0) out.assign(data, static_cast<std::size_t>(len));
    return problem_text(mqtt_string_problem(out.view()), false);
}

// The username the username option gives this certificate, or what makes
// the certificate unfit for one (the device is then refused).
const char* username_for(X509* cert, const Verdict& v, UsernameMode mode, UsernameBuffer& out) {
    switch (mode) {
        case UsernameMode::keep: return nullptr;
        case UsernameMode::cn:
            if (const char* problem = common_name_of(cert, out)) return problem;
            break;
        case UsernameMode::subject:
            if (const char* problem = subject_of(cert, out)) return problem;
            break;
        case UsernameMode::device_sn: break;
    }
    // No CN: the device serial is the next best stable name.
    if (out.empty()) out.assign(v.device_sn, v.device_sn_len);
    return nullptr;
}

// What a BASIC_AUTH call is: a client connecting, or the broker's re-check
// of a session it holds after a reload (which is not a connection: it is
// counted and logged as what it is).
struct Check {
    PluginState& state;
    mosquitto* client;
    const char* id;
    bool recheck;
};

int accept(const Check& c, const Verdict& v, const UsernameBuffer& name, bool device_known) noexcept {
    PluginState& state = c.state;
    if (state.config.username != UsernameMode::keep &&
        mosquitto_set_username(c.client, name.c_str()) != MOSQ_ERR_SUCCESS) {
        log(LogLevel::error, "cannot set the username of client '{}'", c.id);
        return MOSQ_ERR_NOMEM;
    }
    try {
        state.clients.accept(c.client, c.id, device_known ? ca_of(v) : std::string_view{}, device_of(v));
    } catch (...) {
        log(LogLevel::error, "out of memory recording client '{}': it cannot be kicked", c.id);
    }
    if (c.recheck) {
        state.counters.reload_sessions_kept.fetch_add(1, std::memory_order_relaxed);
        mosquitto_log_printf(MOSQ_LOG_DEBUG, "devcert: reload re-check: kept client '%s' (CaSn %.*s, DeviceSn %.*s)",
                             c.id, len_of(ca_of(v)), v.ca_sn, len_of(device_of(v)), v.device_sn);
        return MOSQ_ERR_SUCCESS;
    }
    state.counters.connections_accepted.fetch_add(1, std::memory_order_relaxed);
    mosquitto_log_printf(MOSQ_LOG_INFO, "devcert: accepted client '%s' (CaSn %.*s, DeviceSn %.*s)", c.id,
                         len_of(ca_of(v)), v.ca_sn, len_of(device_of(v)), v.device_sn);
    return MOSQ_ERR_SUCCESS;
}

int refuse(const Check& c, std::string_view ca, std::string_view dev, Refusal why,
           const char* detail = nullptr) noexcept {
    PluginState& state = c.state;
    const char* what = "refused client";
    if (c.recheck) {
        state.counters.reload_sessions_refused.fetch_add(1, std::memory_order_relaxed);
        what = "reload re-check: refused client";
    } else {
        state.counters.refused(why);
    }
    if (detail != nullptr) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "devcert: %s '%s' (CaSn %.*s, DeviceSn %.*s): %s (%s)", what, c.id,
                             len_of(ca), ca.data(), len_of(dev), dev.data(), refusal_reason(why), detail);
    } else {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, "devcert: %s '%s' (CaSn %.*s, DeviceSn %.*s): %s", what, c.id,
                             len_of(ca), ca.data(), len_of(dev), dev.data(), refusal_reason(why));
    }
    // The re-check after a reload refuses clients that are connected (the
    // broker drops them) and offline sessions: neither may stay in the table.
    state.clients.erase(c.client);
    return MOSQ_ERR_AUTH;
}

void register_device(PluginState& state, X509* cert, const Verdict& v) noexcept {
    try {
        submit_registration(state, cert, v);
    } catch (...) {
        log(LogLevel::error, "cannot queue the registration of DeviceSn {} under CaSn {}", device_of(v), ca_of(v));
    }
}

void watch_tick(PluginState& state) noexcept {
    TickWatch& w = state.tick_watch;
    if (w.warned || w.tick_seen) return;
    const auto now = TickWatch::Clock::now();
    if (w.armed_at == TickWatch::Clock::time_point{}) {
        w.armed_at = now;
        return;
    }
    if (now - w.armed_at < w.grace) return;
    w.warned = true;
    log(LogLevel::error,
        "the broker has not delivered MOSQ_EVT_TICK for {} s: connected clients cannot be kicked when a "
        "status changes (mosquitto 2.0.11 never delivers it with per_listener_settings true; set it to false)",
        std::chrono::duration_cast<std::chrono::seconds>(now - w.armed_at).count());
}

}  // namespace

int check_connection(PluginState& state, mosquitto* client) noexcept {
    watch_tick(state);
    // Without ticks (per_listener_settings true on 2.0.11) this is the only
    // place queued lines can reach the log.
    state.deferred.drain();
    if (!state.reload_recheck) state.clients.end_recheck();
    const char* id = client_id_of(client);
    X509Ptr cert(static_cast<X509*>(mosquitto_client_certificate(client)));
    if (!cert) {
        // During the re-check after a reload, the offline session (no
        // socket, so no certificate) of a device this plugin accepted with
        // its certificate stays: refused, Mosquitto 2.0 would add it to its
        // session expiry list a second time. Only that very session, at the
        // same pointer under the same id: the plugin never vouches for a
        // client it did not authenticate by certificate itself.
        if (state.reload_recheck && state.clients.vouches_for_offline(client, id)) {
            state.counters.reload_sessions_kept.fetch_add(1, std::memory_order_relaxed);
            mosquitto_log_printf(MOSQ_LOG_DEBUG, "devcert: reload re-check: kept the offline session of client '%s'",
                                 id);
            return MOSQ_ERR_SUCCESS;
        }
        // Whatever the table held for this pointer was a session the broker
        // has freed since.
        state.clients.erase(client);
        if (state.config.no_certificate == NoCertificate::defer) return MOSQ_ERR_PLUGIN_DEFER;
        return refuse({state, client, id, state.reload_recheck}, "-", "-", Refusal::no_certificate);
    }
    // A connected client already in the table is being re-checked (each
    // connection is checked once; only a reload asks again). At an offline
    // entry for this pointer the broker has freed that session since, and
    // this is a new connection.
    bool recheck = false;
    if (const ClientEntry* known = state.clients.find(client)) {
        recheck = known->connected;
        if (!recheck) state.clients.erase(client);
    }
    const Check check{state, client, id, recheck};

    Verdict v;
    evaluate_certificate(state, cert.get(), v);
    // Holding the snapshot until the next tick would pin old pages; a
    // fresh one costs about a microsecond at the next check.
    state.reader->release();
    if (v.kind == Verdict::Kind::refuse) return refuse(check, ca_of(v), device_of(v), v.refusal, v.detail);
    const bool registers =
        v.kind == Verdict::Kind::register_then_refuse || v.kind == Verdict::Kind::register_then_accept;
    if (registers && state.fleet && state.fleet->queued_registrations() >= state.config.fleet_queue_max) {
        // A first connection is recorded before it is accepted: with the
        // fleet out of reach for this long, there is nowhere to record it.
        return refuse(check, ca_of(v), device_of(v), Refusal::store_error,
                      "the registrations waiting for the fleet reached plugin_opt_fleet_queue_max");
    }
    if (v.kind == Verdict::Kind::register_then_refuse) {
        register_device(state, cert.get(), v);
        return refuse(check, ca_of(v), device_of(v), v.refusal);
    }
    if (v.kind == Verdict::Kind::store_error) {
        state.counters.store_errors.fetch_add(1, std::memory_order_relaxed);
        if (state.config.on_store_error != OnStoreError::allow) {
            return refuse(check, ca_of(v), device_of(v), Refusal::store_error);
        }
    }
    // Accepted: the username must be exactly the certificate's value, or
    // the device is refused (and not registered: it could never log in).
    UsernameBuffer name;
    const char* problem = nullptr;
    try {
        problem = username_for(cert.get(), v, state.config.username, name);
    } catch (...) {
        log(LogLevel::error, "out of memory reading the name of client '{}'", id);
        return MOSQ_ERR_NOMEM;
    }
    if (problem != nullptr) {
        return refuse(check, ca_of(v), device_of(v), Refusal::bad_certificate, problem);
    }
    switch (v.kind) {
        case Verdict::Kind::accept: return accept(check, v, name, true);
        case Verdict::Kind::register_then_accept:
            register_device(state, cert.get(), v);
            return accept(check, v, name, true);
        case Verdict::Kind::store_error:
            state.counters.connections_allowed_on_store_error.fetch_add(1, std::memory_order_relaxed);
            log(LogLevel::error,
                "STORE ERROR: client '{}' (DeviceSn {}) allowed without a status check "
                "because plugin_opt_on_store_error is allow",
                id, device_of(v));
            return accept(check, v, name, false);
        case Verdict::Kind::refuse:
        case Verdict::Kind::register_then_refuse: break;
    }
    return MOSQ_ERR_AUTH;
}

}  // namespace devcert::plugin
