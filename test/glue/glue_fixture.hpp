// A plugin started against the broker stub, with a store in its own
// temporary directory and a small PKI: a device CA (registered by
// import_ca), devices with fixed serials, and a CA nobody registered.
#pragma once

#include <catch2/catch.hpp>
#include <stdlib.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "callbacks.hpp"
#include "devcert/config.hpp"
#include "mosquitto_stub.hpp"
#include "pki.hpp"
#include "plugin_state.hpp"
#include "temp_dir.hpp"

namespace glue {

namespace fs = std::filesystem;

inline constexpr const char* kCaSn = "0c01";
inline constexpr const char* kOtherCaSn = "0c02";

struct Pki {
    devcert::test::Issued root = devcert::test::make_root({.serial_hex = "01", .common_name = "glue root"});
    devcert::test::Issued ca =
        devcert::test::issue({.serial_hex = kCaSn, .common_name = "glue device ca", .is_ca = true}, root);
    devcert::test::Issued other_ca =
        devcert::test::issue({.serial_hex = kOtherCaSn, .common_name = "glue second ca", .is_ca = true}, root);
    devcert::test::Issued stranger_ca =
        devcert::test::make_root({.serial_hex = "0e01", .common_name = "unregistered ca"});

    devcert::test::Issued device(const std::string& serial, const std::string& cn,
                                 const devcert::test::Issued& issuer) const {
        return devcert::test::issue({.serial_hex = serial, .common_name = cn, .organization = "glue devices"},
                                    issuer);
    }
};

inline const Pki& pki() {
    static const Pki p;
    return p;
}

class Plugin {
public:
    explicit Plugin(devcert::OptionList extra = {}, bool import_second_ca = false) {
        const auto ca_file =
            dir_.write("ca.pem", pki().ca.pem() + (import_second_ca ? pki().other_ca.pem() : std::string()));
        options_ = {{"db_path", dir_.file("db")}, {"admin_socket", "off"}, {"import_ca", ca_file}};
        for (auto& o : extra) options_.push_back(std::move(o));
        start();
    }

    ~Plugin() {
        stop();
    }

    void start() {
        stub::broker().reset();
        auto config = devcert::parse_config(options_);
        if (!config) FAIL(config.error().message);
        auto started = devcert::plugin::start_plugin(std::move(*config));
        if (!started) FAIL(started.error().message);
        state_ = std::move(*started);
        state_->plugin_id = &stub::broker().plugin_id;
        REQUIRE(devcert::plugin::register_callbacks(*state_) == MOSQ_ERR_SUCCESS);
    }

    void stop() {
        if (!state_) return;
        devcert::plugin::unregister_callbacks(*state_);
        state_.reset();
    }

    void restart() {
        stop();
        start();
    }

    devcert::plugin::PluginState& state() { return *state_; }
    devcert::Store& store() { return *state_->store; }
    stub::Broker& broker() { return stub::broker(); }

    /// Waits (ticking, as an idle broker does) until `done` holds.
    bool tick_until(const std::function<bool()>& done, std::chrono::milliseconds limit = std::chrono::seconds(5)) {
        const auto end = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < end) {
            broker().tick();
            if (done()) return true;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        return false;
    }

    std::optional<devcert::DeviceRecord> device(const std::string& ca, const std::string& dev) {
        std::optional<devcert::DeviceRecord> out;
        auto ok = store().read([&](devcert::ReadView& r) -> devcert::Outcome {
            auto d = r.get_device(ca, dev);
            if (!d) return d.error();
            out = *d;
            return devcert::Ok{};
        });
        REQUIRE(ok.ok());
        return out;
    }

    /// Registers a device directly in the store, as another process would.
    void register_device(const devcert::test::Issued& cert, const std::string& ca_sn, devcert::CertStatus status) {
        auto info = devcert::describe_certificate(cert.cert.get());
        REQUIRE(info.ok());
        devcert::DeviceRecord rec;
        rec.ca_sn = ca_sn;
        rec.device_sn = info->serial;
        rec.device_name = info->common_name;
        rec.content_pem = info->pem;
        rec.status = status;
        rec.fingerprint = info->fingerprint;
        rec.registered_by = devcert::RegisteredBy::api;
        auto ok = store().write([&](devcert::WriteView& w) { return w.insert_device(rec, "test", "glue test"); });
        if (!ok) FAIL(ok.error().message);
    }

    void set_device_status(const std::string& ca, const std::string& dev, devcert::CertStatus status) {
        auto ok = store().write([&](devcert::WriteView& w) -> devcert::Outcome {
            auto r = w.set_device_status(ca, dev, status, "test", "glue test");
            if (!r) return r.error();
            return devcert::Ok{};
        });
        if (!ok) FAIL(ok.error().message);
    }

    void set_ca_status(const std::string& ca, devcert::CertStatus status) {
        auto ok = store().write([&](devcert::WriteView& w) -> devcert::Outcome {
            auto r = w.set_ca_status(ca, status, "test", "glue test");
            if (!r) return r.error();
            return devcert::Ok{};
        });
        if (!ok) FAIL(ok.error().message);
    }

    fs::path dir() const { return dir_.path(); }

private:
    devcert::test::TempDir dir_;
    devcert::OptionList options_;
    std::unique_ptr<devcert::plugin::PluginState> state_;
};

}  // namespace glue
