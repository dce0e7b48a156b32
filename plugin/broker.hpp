// The broker's plugin API, from whichever Mosquitto headers the build finds:
// 2.1's include/mosquitto/ (broker.h, broker_plugin.h; the old names still
// exist there but raise a deprecation #warning) or 2.0's flat headers, which
// 2.0.11 needs in this order. DEVCERT_MOSQUITTO_HEADERS says which (20 or
// 21); the module built from either loads on both (see broker_compat.hpp).
#pragma once

// clang-format off
#if __has_include(<mosquitto/broker.h>)
#include <mosquitto.h>
#include <mosquitto/broker.h>
#include <mosquitto/broker_plugin.h>
#define DEVCERT_MOSQUITTO_HEADERS 21
#else
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#define DEVCERT_MOSQUITTO_HEADERS 20
#endif
// clang-format on
