#include <fmt/format.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>

#include "devcert/replica.hpp"
#include "glue_fixture.hpp"
#include "tick.hpp"
#include "wakeup.hpp"

using devcert::CertStatus;
using glue::kCaSn;
using glue::kOtherCaSn;
using glue::pki;

TEST_CASE("a device inactivated in the store while connected is kicked at the next tick", "[glue][kick]") {
    glue::Plugin plugin;
    auto dev = pki().device("d101", "sensor-101", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto c("kick-me", dev.cert.get());
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);

    plugin.broker().tick();
    CHECK(plugin.broker().kicked.empty());

    plugin.set_device_status(kCaSn, "d101", CertStatus::inactive);
    plugin.broker().tick();
    CHECK(plugin.broker().kicked == std::vector<std::string>{"kick-me"});
    CHECK_FALSE(c.connected);
    CHECK(plugin.state().counters.kicks == 1);
    CHECK(plugin.state().clients.size() == 0);
    CHECK_FALSE(plugin.state().online.online(kCaSn, "d101"));
    CHECK(plugin.broker().logged("kicked client 'kick-me' (CaSn 0c01, DeviceSn d101): device no longer active"));

    // Nothing is applied twice.
    plugin.broker().tick();
    CHECK(plugin.state().counters.kicks == 1);
}

TEST_CASE("a change that leaves a device active kicks nobody", "[glue][kick]") {
    glue::Plugin plugin;
    auto a = pki().device("d102", "sensor-102", pki().ca);
    auto b = pki().device("d103", "sensor-103", pki().ca);
    plugin.register_device(a, kCaSn, CertStatus::active);
    plugin.register_device(b, kCaSn, CertStatus::inactive);
    mosquitto c("stays", a.cert.get());
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    plugin.set_device_status(kCaSn, "d103", CertStatus::active);
    plugin.broker().tick();
    CHECK(plugin.broker().kicked.empty());
    CHECK(c.connected);
}

TEST_CASE("a CA inactivated while its devices are connected kicks all of them and only them", "[glue][kick]") {
    glue::Plugin plugin({}, true);
    auto d1 = pki().device("d111", "sensor-111", pki().ca);
    auto d2 = pki().device("d112", "sensor-112", pki().ca);
    auto d3 = pki().device("d113", "sensor-113", pki().other_ca);
    mosquitto c1("ca-a-1", d1.cert.get());
    mosquitto c2("ca-a-2", d2.cert.get());
    mosquitto c3("ca-b-1", d3.cert.get());
    for (auto* c : {&c1, &c2, &c3}) REQUIRE(plugin.broker().basic_auth(c) == MOSQ_ERR_SUCCESS);
    REQUIRE(plugin.tick_until([&] { return plugin.state().counters.auto_registrations == 3; }));

    plugin.set_ca_status(kCaSn, CertStatus::inactive);
    plugin.broker().tick();
    CHECK(plugin.state().counters.kicks == 2);
    CHECK_FALSE(c1.connected);
    CHECK_FALSE(c2.connected);
    CHECK(c3.connected);
    CHECK(plugin.state().clients.size() == 1);
    CHECK(plugin.state().online.online(kOtherCaSn, "d113"));
}

TEST_CASE("a session takeover leaves the new client in the table when the old one disconnects", "[glue][kick]") {
    glue::Plugin plugin;
    auto dev = pki().device("d120", "sensor-120", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto old_client("same-id", dev.cert.get());
    REQUIRE(plugin.broker().basic_auth(&old_client) == MOSQ_ERR_SUCCESS);
    mosquitto new_client("same-id", dev.cert.get());
    REQUIRE(plugin.broker().basic_auth(&new_client) == MOSQ_ERR_SUCCESS);
    // Mosquitto fires DISCONNECT for the old context after the new one was accepted.
    plugin.broker().disconnect(&old_client);

    CHECK(plugin.state().clients.size() == 1);
    CHECK(plugin.state().clients.find(&new_client) != nullptr);
    CHECK(plugin.state().online.online(kCaSn, "d120"));

    plugin.set_device_status(kCaSn, "d120", CertStatus::inactive);
    plugin.broker().tick();
    CHECK_FALSE(new_client.connected);
    CHECK(plugin.state().counters.kicks == 1);
    CHECK(plugin.state().clients.size() == 0);
    CHECK_FALSE(plugin.state().online.online(kCaSn, "d120"));
}

TEST_CASE("a client that disconnected is not kicked for a later change", "[glue][kick]") {
    glue::Plugin plugin;
    auto dev = pki().device("d121", "sensor-121", pki().ca);
    plugin.register_device(dev, kCaSn, CertStatus::active);
    mosquitto c("gone", dev.cert.get());
    REQUIRE(plugin.broker().basic_auth(&c) == MOSQ_ERR_SUCCESS);
    plugin.broker().disconnect(&c);
    plugin.set_device_status(kCaSn, "d121", CertStatus::revoked);
    plugin.broker().tick();
    CHECK(plugin.broker().kicked.empty());
    CHECK(plugin.state().counters.kicks == 0);
}

TEST_CASE("a full re-check kicks exactly the connected clients that are no longer active", "[glue][kick]") {
    glue::Plugin plugin;
    auto good = pki().device("d130", "sensor-130", pki().ca);
    auto bad = pki().device("d131", "sensor-131", pki().ca);
    plugin.register_device(good, kCaSn, CertStatus::active);
    plugin.register_device(bad, kCaSn, CertStatus::active);
    mosquitto a("good", good.cert.get());
    mosquitto b("bad", bad.cert.get());
    REQUIRE(plugin.broker().basic_auth(&a) == MOSQ_ERR_SUCCESS);
    REQUIRE(plugin.broker().basic_auth(&b) == MOSQ_ERR_SUCCESS);
    plugin.set_device_status(kCaSn, "d131", CertStatus::inactive);

    CHECK(devcert::plugin::recheck_connected(plugin.state()) == 1);
    CHECK(a.connected);
    CHECK_FALSE(b.connected);
}

TEST_CASE("audit lines queued by other threads are logged by the tick on the broker thread", "[glue][tick]") {
    glue::Plugin plugin;
    std::thread admin([&] {
        plugin.state().deferred.push(devcert::plugin::LogLevel::notice,
                                     "devcert: admin/uid=0(root) | InactivateDeviceCertificate | CaSn=0c01");
    });
    admin.join();
    CHECK_FALSE(plugin.broker().logged("InactivateDeviceCertificate"));
    plugin.broker().tick();
    CHECK(plugin.broker().logged("devcert: admin/uid=0(root) | InactivateDeviceCertificate | CaSn=0c01"));
    CHECK(plugin.broker().foreign_calls.empty());
}

TEST_CASE("the wake-up signal interrupts the broker thread's epoll_wait at once", "[glue][wakeup]") {
    devcert::plugin::WakeupSignal wakeup;
    REQUIRE(wakeup.install(SIGURG).ok());
    devcert::UniqueFd ep(epoll_create1(0));
    REQUIRE(ep);
    std::thread writer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        wakeup.wake();
    });
    epoll_event events[1];
    const auto start = std::chrono::steady_clock::now();
    const int rc = epoll_wait(ep.get(), events, 1, 5000);
    const int err = errno;
    const auto waited = std::chrono::steady_clock::now() - start;
    writer.join();
    CHECK(rc == -1);
    CHECK(err == EINTR);
    CHECK(waited < std::chrono::seconds(2));
    wakeup.restore();
    struct sigaction now {};
    sigaction(SIGURG, nullptr, &now);
    CHECK(now.sa_handler == SIG_DFL);
}

TEST_CASE("a change kicks exactly the clients of its device among a thousand, through the table's index",
          "[glue][kick]") {
    glue::Plugin plugin({}, true);
    std::vector<devcert::test::Issued> devices;
    for (int d = 0; d < 20; ++d) {
        const std::string sn = fmt::format("e{:03x}", d);
        devices.push_back(pki().device(sn, "idx-" + sn, d < 15 ? pki().ca : pki().other_ca));
    }
    // 50 clients per device (distinct client ids, one certificate).
    std::vector<std::unique_ptr<mosquitto>> clients;
    for (int d = 0; d < 20; ++d) {
        for (int i = 0; i < 50; ++i) {
            clients.push_back(std::make_unique<mosquitto>(fmt::format("idx-{}-{}", d, i), devices[d].cert.get()));
            REQUIRE(plugin.broker().basic_auth(clients.back().get()) == MOSQ_ERR_SUCCESS);
        }
    }
    // A takeover moves one id of device 3 to a new session: the index must
    // follow the new pointer, and forget the old one.
    mosquitto takeover("idx-3-0", devices[3].cert.get());
    REQUIRE(plugin.broker().basic_auth(&takeover) == MOSQ_ERR_SUCCESS);
    plugin.broker().disconnect(clients[3 * 50].get());
    // A client of device 4 left: a change of device 4 must not reach it.
    plugin.broker().disconnect(clients[4 * 50 + 7].get());
    REQUIRE(plugin.state().clients.size() == 1000 - 1);

    plugin.set_device_status(kCaSn, "e003", CertStatus::inactive);
    plugin.set_device_status(kCaSn, "e004", CertStatus::revoked);
    plugin.broker().tick();
    CHECK(plugin.broker().kicked.size() == 50 + 49);
    CHECK_FALSE(takeover.connected);
    for (int d = 0; d < 20; ++d) {
        for (int i = 0; i < 50; ++i) {
            const mosquitto& c = *clients[static_cast<std::size_t>(d * 50 + i)];
            if (d == 3 || d == 4) {
                CHECK_FALSE(c.connected);
            } else {
                CHECK(c.connected);
            }
        }
    }

    // The other CA's five devices, 250 clients, and nobody else.
    plugin.broker().kicked.clear();
    plugin.set_ca_status(kOtherCaSn, CertStatus::inactive);
    plugin.broker().tick();
    CHECK(plugin.broker().kicked.size() == 250);
    CHECK(plugin.state().clients.size() == 1000 - 1 - 99 - 250);
    for (std::size_t i = 0; i < 15 * 50; ++i) {
        if (i / 50 != 3 && i / 50 != 4) CHECK(clients[i]->connected);
    }
}

namespace {

// Rebuilds the plugin's store as a fleet replica would (replica_resync)
// from its own records, with `changed` set to `status` and the snapshot
// read at `head_seq`: what the tick sees after a rebuild.
void rebuild_as_replica(glue::Plugin& plugin, const std::string& changed, CertStatus status,
                        std::uint64_t head_seq) {
    std::vector<devcert::CaRecord> cas;
    std::vector<devcert::DeviceRecord> devices;
    REQUIRE(plugin.store().read([&](devcert::ReadView& r) -> devcert::Outcome {
        auto c = r.list_cas(devcert::Page{1, 100});
        if (!c) return c.error();
        cas = c->items;
        auto d = r.list_devices(devcert::Page{1, 100});
        if (!d) return d.error();
        devices = d->items;
        return devcert::Ok{};
    }));
    for (auto& d : devices) {
        if (d.device_sn == changed) d.status = status;
    }
    struct Sink {
        static devcert::Result<devcert::FleetHead> stream(devcert::FleetSnapshotSink& sink,
                                                          const std::vector<devcert::CaRecord>& cas,
                                                          const std::vector<devcert::DeviceRecord>& devices,
                                                          std::uint64_t seq) {
            for (const auto& c : cas) {
                if (auto ok = sink.ca(c); !ok) return ok.error();
            }
            for (const auto& d : devices) {
                if (auto ok = sink.device(d); !ok) return ok.error();
            }
            return devcert::FleetHead{"epoch-glue", seq, 0};
        }
    };
    auto head = devcert::replica_resync(
        plugin.store(), [&](devcert::FleetSnapshotSink& sink) { return Sink::stream(sink, cas, devices, head_seq); });
    REQUIRE(head.ok());
}

}  // namespace

TEST_CASE("after a replica rebuild the tick re-checks every connected client, whether the log moved on or back",
          "[glue][kick][fleet]") {
    // The rebuilt log's one entry: right after the last entry read (the
    // tick reads it as an entry), further on (entries in between are gone),
    // or below it (the fleet was restored to an earlier point).
    enum class Head { next, beyond, back };
    for (const Head where : {Head::next, Head::beyond, Head::back}) {
        DYNAMIC_SECTION("rebuilt log " << (where == Head::next ? "right after" : where == Head::beyond ? "beyond" : "below")
                                       << " the last entry read") {
            glue::Plugin plugin;
            auto keep = pki().device("d131", "sensor-131", pki().ca);
            auto drop = pki().device("d132", "sensor-132", pki().ca);
            plugin.register_device(keep, kCaSn, CertStatus::active);
            plugin.register_device(drop, kCaSn, CertStatus::active);
            mosquitto stays("rebuild-keep", keep.cert.get());
            mosquitto goes("rebuild-drop", drop.cert.get());
            REQUIRE(plugin.broker().basic_auth(&stays) == MOSQ_ERR_SUCCESS);
            REQUIRE(plugin.broker().basic_auth(&goes) == MOSQ_ERR_SUCCESS);
            plugin.broker().tick();
            const std::uint64_t read = plugin.state().last_seq;
            REQUIRE(read >= 3);

            // No change entry names the device: only a full re-check finds it.
            const std::uint64_t head = where == Head::next ? read + 1 : where == Head::beyond ? read + 10 : 1;
            rebuild_as_replica(plugin, "d132", CertStatus::inactive, head);
            plugin.broker().tick();
            CHECK(plugin.broker().kicked == std::vector<std::string>{"rebuild-drop"});
            CHECK(stays.connected);
            CHECK_FALSE(goes.connected);
            CHECK(plugin.state().last_seq == head);
        }
    }
}
