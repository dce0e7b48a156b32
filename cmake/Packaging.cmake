# mosquitto-devcert_<version>_<arch>.deb, built from the build tree with
# CPack: `cpack -G DEB` in the build directory (the package test does this).
#
#   /usr/lib/<arch>/mosquitto/mosquitto_devcert.so   the module
#   /usr/bin/devcertctl
#   /usr/share/doc/mosquitto-devcert/                 README, docs, example config
#   /usr/lib/systemd/system/mosquitto.service.d/mosquitto-devcert.conf
#
# Installing changes nothing in a running broker: no configuration file is
# touched and the broker is not restarted.
install(FILES docs/operations.md docs/api.md docs/performance.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} RENAME copyright)
install(FILES packaging/deb/mosquitto-devcert.conf DESTINATION lib/systemd/system/mosquitto.service.d)
# A native package's changelog, compressed the way dh_compress does.
execute_process(COMMAND gzip -9nc "${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/changelog"
  OUTPUT_FILE "${CMAKE_CURRENT_BINARY_DIR}/changelog.gz" RESULT_VARIABLE devcert_gzip_rc)
if(devcert_gzip_rc EQUAL 0)
  install(FILES "${CMAKE_CURRENT_BINARY_DIR}/changelog.gz" DESTINATION ${CMAKE_INSTALL_DOCDIR})
endif()
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/changelog")

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME mosquitto-devcert)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(DEVCERT_PACKAGE_MAINTAINER "mosquitto-devcert maintainers <mosquitto-devcert@example.org>"
  CACHE STRING "Maintainer field of the .deb")
set(CPACK_PACKAGE_CONTACT "${DEVCERT_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "Mosquitto plugin enforcing X.509 device certificate status")
# CPack writes the summary as the Description's first line; this is the rest.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "mosquitto-devcert keeps every device CA and device certificate with its status
 in an embedded LMDB store, refuses devices that are not active and kicks their
 sessions, and serves an admin API on a UNIX socket (devcertctl is its CLI).
 The plugin does nothing until the broker's configuration names it.")
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "mosquitto (>= 2.0.11)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  "${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/postinst;${CMAKE_CURRENT_SOURCE_DIR}/packaging/deb/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# Stripped binaries, as Debian ships them.
set(CPACK_STRIP_FILES ON)
include(CPack)
