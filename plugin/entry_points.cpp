// The three symbols the broker looks for, and nothing else: initialise,
// parse options, register callbacks. Everything else lives in the glue
// library.
#include <memory>

#include "broker.hpp"
#include "broker_compat.hpp"
#include "callbacks.hpp"
#include "instances.hpp"
#include "plugin_state.hpp"

using devcert::plugin::LogLevel;
using devcert::plugin::PluginState;

extern "C" {

__attribute__((visibility("default"))) int mosquitto_plugin_version(int supported_version_count,
                                                                    const int* supported_versions) {
    for (int i = 0; i < supported_version_count; ++i) {
        if (supported_versions[i] == 5) return 5;
    }
    return -1;
}

__attribute__((visibility("default"))) int mosquitto_plugin_init(mosquitto_plugin_id_t* identifier, void** userdata,
                                                                 struct mosquitto_opt* options, int option_count) {
    bool claimed = false;
    try {
        devcert::OptionList list;
        for (int i = 0; i < option_count; ++i) {
            list.emplace_back(options[i].key ? options[i].key : "", options[i].value ? options[i].value : "");
        }
        auto config = devcert::parse_config(list);
        if (!config) {
            devcert::plugin::log_line(LogLevel::error, config.error().message);
            return MOSQ_ERR_INVAL;
        }
        // Before anything is opened: one store, one admin socket per process.
        if (auto claim = devcert::plugin::claim_instance(config->db_path); !claim) {
            devcert::plugin::log_line(LogLevel::error, claim.error().message);
            return MOSQ_ERR_INVAL;
        }
        claimed = true;
        auto started = devcert::plugin::start_plugin(std::move(*config));
        if (!started) {
            devcert::plugin::release_instance();
            devcert::plugin::log_line(LogLevel::error, started.error().message);
            return MOSQ_ERR_UNKNOWN;
        }
        std::unique_ptr<PluginState> state = std::move(*started);
        state->plugin_id = identifier;
        devcert::plugin::name_plugin(identifier);
        if (const int rc = devcert::plugin::register_callbacks(*state); rc != MOSQ_ERR_SUCCESS) {
            state.reset();
            devcert::plugin::release_instance();
            return rc;
        }
        *userdata = state.release();
        return MOSQ_ERR_SUCCESS;
    } catch (const std::exception& e) {
        devcert::plugin::log(LogLevel::error, "cannot start: {}", e.what());
    } catch (...) {
        devcert::plugin::log_line(LogLevel::error, "cannot start: unexpected error");
    }
    if (claimed) devcert::plugin::release_instance();
    return MOSQ_ERR_UNKNOWN;
}

__attribute__((visibility("default"))) int mosquitto_plugin_cleanup(void* userdata, struct mosquitto_opt*, int) {
    auto* state = static_cast<PluginState*>(userdata);
    if (state == nullptr) return MOSQ_ERR_SUCCESS;
    try {
        devcert::plugin::unregister_callbacks(*state);
        delete state;
        devcert::plugin::release_instance();
    } catch (...) {
        devcert::plugin::log_line(LogLevel::error, "cleanup failed unexpectedly");
    }
    return MOSQ_ERR_SUCCESS;
}

}  // extern "C"
