#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "../glue/mosquitto_stub.hpp"

mosquitto::mosquitto(std::string client_id, X509* certificate) : id(std::move(client_id)), cert(certificate) {
    if (cert) X509_up_ref(cert);
    stub::broker().sessions.push_back(this);
}

mosquitto::~mosquitto() {
    if (cert) X509_free(cert);
    auto& s = stub::broker().sessions;
    std::erase(s, this);
}

namespace stub {

namespace {
void note_thread(const char* function) {
    Broker& b = broker();
    if (std::this_thread::get_id() != b.broker_thread) b.foreign_calls.emplace_back(function);
}

int fire(int event, void* data) {
    int result = MOSQ_ERR_PLUGIN_DEFER;
    // Copy: a callback may unregister callbacks.
    const auto callbacks = broker().callbacks;
    for (const auto& cb : callbacks) {
        if (cb.event != event) continue;
        const int rc = cb.fn(event, data, cb.userdata);
        if (rc != MOSQ_ERR_PLUGIN_DEFER) return rc;
    }
    return result;
}
}  // namespace

Broker& broker() {
    static Broker b;
    return b;
}

void Broker::reset() {
    log.clear();
    kicked.clear();
    foreign_calls.clear();
    callbacks.clear();
    published.clear();
    tick_next_ns = 0;
    broker_thread = std::this_thread::get_id();
}

bool Broker::logged(const std::string& fragment) const {
    for (const auto& line : log) {
        if (line.find(fragment) != std::string::npos) return true;
    }
    return false;
}

std::size_t Broker::callbacks_for(int event) const {
    std::size_t n = 0;
    for (const auto& cb : callbacks) n += cb.event == event;
    return n;
}

int Broker::basic_auth(mosquitto* client) {
    mosquitto_evt_basic_auth event{};
    event.client = client;
    return fire(MOSQ_EVT_BASIC_AUTH, &event);
}

void Broker::tick() {
    mosquitto_evt_tick event{};
    fire(MOSQ_EVT_TICK, &event);
    tick_next_ns = event.next_ns;
}

void Broker::disconnect(mosquitto* client) {
    client->connected = false;
    mosquitto_evt_disconnect event{};
    event.client = client;
    fire(MOSQ_EVT_DISCONNECT, &event);
}

int Broker::reload() {
    mosquitto_evt_reload event{};
    return fire(MOSQ_EVT_RELOAD, &event);
}

void Broker::reload_and_recheck() {
    reload();
    const auto held = sessions;  // a refusal may end a session
    for (mosquitto* s : held) {
        if (basic_auth(s) != MOSQ_ERR_SUCCESS) disconnect(s);
    }
    tick();
}

}  // namespace stub

extern "C" {

int mosquitto_callback_register(mosquitto_plugin_id_t*, int event, MOSQ_FUNC_generic_callback fn, const void*,
                                void* userdata) {
    stub::note_thread("mosquitto_callback_register");
    if (fn == nullptr) return MOSQ_ERR_INVAL;
    for (const auto& cb : stub::broker().callbacks) {
        if (cb.event == event && cb.fn == fn) return MOSQ_ERR_ALREADY_EXISTS;
    }
    stub::broker().callbacks.push_back({event, fn, userdata});
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_callback_unregister(mosquitto_plugin_id_t*, int event, MOSQ_FUNC_generic_callback fn, const void*) {
    stub::note_thread("mosquitto_callback_unregister");
    auto& cbs = stub::broker().callbacks;
    for (auto it = cbs.begin(); it != cbs.end(); ++it) {
        if (it->event == event && it->fn == fn) {
            cbs.erase(it);
            return MOSQ_ERR_SUCCESS;
        }
    }
    return MOSQ_ERR_NOT_FOUND;
}

void mosquitto_log_printf(int, const char* fmt, ...) {
    stub::note_thread("mosquitto_log_printf");
    char line[4096];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    stub::broker().log.emplace_back(line);
}

const char* mosquitto_client_id(const struct mosquitto* client) {
    stub::note_thread("mosquitto_client_id");
    return client->id.c_str();
}

void* mosquitto_client_certificate(const struct mosquitto* client) {
    stub::note_thread("mosquitto_client_certificate");
    if (client->cert == nullptr || !client->connected) return nullptr;
    X509_up_ref(client->cert);
    return client->cert;
}

int mosquitto_client_protocol_version(const struct mosquitto* client) {
    stub::note_thread("mosquitto_client_protocol_version");
    return client->protocol_version;
}

bool mosquitto_client_clean_session(const struct mosquitto* client) {
    stub::note_thread("mosquitto_client_clean_session");
    return client->clean_session;
}

const char* mosquitto_client_username(const struct mosquitto* client) {
    stub::note_thread("mosquitto_client_username");
    return client->username ? client->username->c_str() : nullptr;
}

int mosquitto_set_username(struct mosquitto* client, const char* username) {
    stub::note_thread("mosquitto_set_username");
    if (username) {
        client->username = username;
    } else {
        client->username.reset();
    }
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_kick_client_by_clientid(const char* clientid, bool) {
    stub::note_thread("mosquitto_kick_client_by_clientid");
    auto& b = stub::broker();
    b.kicked.emplace_back(clientid);
    for (mosquitto* s : b.sessions) {
        if (s->id == clientid && s->connected) {
            b.disconnect(s);  // re-enters the plugin, as the broker does
            return MOSQ_ERR_SUCCESS;
        }
    }
    return MOSQ_ERR_NOT_FOUND;
}

int mosquitto_broker_publish_copy(const char*, const char* topic, int payloadlen, const void* payload, int qos,
                                  bool retain, mosquitto_property*) {
    stub::note_thread("mosquitto_broker_publish_copy");
    stub::broker().published.push_back(
        {topic, std::string(static_cast<const char*>(payload), static_cast<std::size_t>(payloadlen)), qos, retain});
    return MOSQ_ERR_SUCCESS;
}

const char* mosquitto_strerror(int rc) {
    static char text[32];
    std::snprintf(text, sizeof text, "error %d", rc);
    return text;
}

}  // extern "C"
