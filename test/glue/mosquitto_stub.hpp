// A stand-in for the broker side of the plugin API, so the glue can be
// tested without a broker: it records every call, holds the registered
// callbacks, and fires events the way Mosquitto 2.0.11 does (a kick
// re-enters the DISCONNECT callback before returning).
#pragma once

#include <openssl/x509.h>

#include <optional>
#include <string>
#include <thread>
#include <vector>

// clang-format off
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
// clang-format on

/// The broker's per-client context, opaque to the plugin.
struct mosquitto {
    std::string id;
    X509* cert = nullptr;                 ///< owned reference; nullptr = no certificate / offline
    std::optional<std::string> username;
    bool connected = true;
    int protocol_version = 4;             ///< 3, 4 (MQTT 3.1.1) or 5
    bool clean_session = true;            ///< MQTT 3.1.1: the session ends with the connection

    mosquitto(std::string client_id, X509* certificate);
    ~mosquitto();
    mosquitto(const mosquitto&) = delete;
    mosquitto& operator=(const mosquitto&) = delete;
};

/// The plugin identifier the broker hands to init.
struct mosquitto_plugin_id_t {
    int unused = 0;
};

namespace stub {

struct Callback {
    int event;
    MOSQ_FUNC_generic_callback fn;
    void* userdata;
};

struct Publish {
    std::string topic;
    std::string payload;
    int qos;
    bool retain;
};

class Broker {
public:
    /// Forgets everything; the calling thread becomes the broker thread.
    void reset();

    std::vector<std::string> log;            ///< every log line, as formatted
    std::vector<std::string> kicked;         ///< client ids passed to kick_client_by_clientid
    std::vector<std::string> foreign_calls;  ///< broker functions called from another thread
    std::vector<Callback> callbacks;
    std::vector<mosquitto*> sessions;        ///< clients the broker knows (for kicks by id)
    std::vector<Publish> published;          ///< mosquitto_broker_publish_copy calls
    long tick_next_ns = 0;                   ///< next_ns the last TICK callback asked for
    mosquitto_plugin_id_t plugin_id;
    std::thread::id broker_thread;

    bool logged(const std::string& fragment) const;
    std::size_t callbacks_for(int event) const;

    int basic_auth(mosquitto* client);   ///< first non-DEFER result, like the broker
    void tick();
    void disconnect(mosquitto* client);  ///< a client leaving on its own
    int reload();
    /// What a SIGHUP does: RELOAD, BASIC_AUTH for every session the broker
    /// holds (connected or offline), then the TICK of the same iteration.
    void reload_and_recheck();
};

Broker& broker();

}  // namespace stub
