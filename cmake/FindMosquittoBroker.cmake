# Finds the Mosquitto broker plugin headers and defines the header-only
# imported target Mosquitto::Broker. The plugin links nothing: the broker
# provides the mosquitto_* symbols when it loads the module.
#
# Either layout works: 2.0's flat mosquitto_broker.h (Debian's mosquitto-dev)
# or 2.1's mosquitto/broker.h (plugin/broker.hpp picks with __has_include).
# To build against a 2.1 source tree:
#   -DMosquittoBroker_INCLUDE_DIR=/path/to/mosquitto-2.1.2/include
find_path(MosquittoBroker_INCLUDE_DIR NAMES mosquitto/broker.h mosquitto_broker.h)
find_program(MosquittoBroker_EXECUTABLE NAMES mosquitto PATHS /usr/sbin /usr/local/sbin)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(MosquittoBroker REQUIRED_VARS MosquittoBroker_INCLUDE_DIR)
if(MosquittoBroker_FOUND AND NOT TARGET Mosquitto::Broker)
  add_library(Mosquitto::Broker INTERFACE IMPORTED)
  set_target_properties(Mosquitto::Broker PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${MosquittoBroker_INCLUDE_DIR}")
endif()
mark_as_advanced(MosquittoBroker_INCLUDE_DIR MosquittoBroker_EXECUTABLE)
