// The broker's plugin API. Mosquitto 2.0.11 needs its headers in this order.
#pragma once

// clang-format off
#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
// clang-format on
