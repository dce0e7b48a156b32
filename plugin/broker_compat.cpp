#include "broker_compat.hpp"

#include <dlfcn.h>

#include <atomic>

#ifndef DEVCERT_VERSION
#define DEVCERT_VERSION "unknown"
#endif

namespace devcert::plugin {

namespace {

using SetInfoFn = int (*)(mosquitto_plugin_id_t*, const char*, const char*);

SetInfoFn find_set_info() noexcept {
    // The broker's own exported functions are in the global scope even
    // when 2.1 loads this module with RTLD_LOCAL.
    void* fn = dlsym(RTLD_DEFAULT, "mosquitto_plugin_set_info");
    return reinterpret_cast<SetInfoFn>(fn);
}

// 0: not looked up yet, 1: 2.0, 2: 2.1 or later. Written only from the
// broker thread; atomic so that tests may ask from anywhere.
std::atomic<int> g_broker{0};

}  // namespace

bool broker_is_21() noexcept {
    int known = g_broker.load(std::memory_order_relaxed);
    if (known == 0) {
        known = find_set_info() != nullptr ? 2 : 1;
        g_broker.store(known, std::memory_order_relaxed);
    }
    return known == 2;
}

void name_plugin(mosquitto_plugin_id_t* identifier) noexcept {
    if (SetInfoFn set_info = find_set_info(); set_info != nullptr && identifier != nullptr) {
        set_info(identifier, "mosquitto-devcert", DEVCERT_VERSION);
    }
}

void request_next_tick(void* tick_event, long ms) noexcept {
    if (tick_event == nullptr) return;
    auto* event = static_cast<mosquitto_evt_tick*>(tick_event);
    // Both layouts share the offset: 2.1 renamed the field, nothing moved.
    event->next_s = 0;
#if DEVCERT_MOSQUITTO_HEADERS >= 21
    event->next_ms = ms;
#else
    // A 2.1 broker reads this field as next_ms.
    event->next_ns = broker_is_21() ? ms : ms * 1'000'000L;
#endif
}

int reload_result() noexcept { return broker_is_21() ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER; }

}  // namespace devcert::plugin
