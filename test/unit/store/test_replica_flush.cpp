// A fleet replica's commits skip the flush to disk (StoreOptions::replica):
// the marker that names the boot they were made under, its removal on a
// clean close, and the file discarded when another boot finds it.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <fstream>

#include "devcert/replica.hpp"
#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

std::function<Outcome(WriteView&)> register_ca(const std::string& sn) {
    return [sn](WriteView& w) { return w.insert_ca(make_ca(sn), "RegisterCaCertificate", "test"); };
}

struct Replica {
    TempDir dir;
    std::string data = dir.path() + "/replica";
    std::string boot_file = dir.write("boot_id", "boot-A\n");

    StoreOptions options(bool replica = true) const {
        StoreOptions o;
        o.path = data;
        o.initial_map_size = 1ull << 20;
        o.replica = replica;
        o.boot_id_file = boot_file;
        return o;
    }
    std::unique_ptr<Store> open(bool replica = true) {
        auto store = Store::open(options(replica));
        if (!store) FAIL(store.error().message);
        return std::move(*store);
    }
    void reboot(const std::string& id) { dir.write("boot_id", id + "\n"); }
    std::string marker_path() const { return data + "/" + kUnflushedMarker; }
    bool marked() const { return std::filesystem::exists(marker_path()); }
    std::string marker() const {
        std::ifstream in(marker_path());
        std::string line;
        std::getline(in, line);
        return line;
    }
    /// Opens the replica in a child process, registers a CA, and ends the
    /// process without closing anything, as kill -9 would.
    void crash_after_a_commit() {
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            auto store = Store::open(options());
            const bool ok = store && (*store)->write(register_ca("0c"));
            ::_exit(ok ? 0 : 1);
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        REQUIRE(WIFEXITED(status));
        REQUIRE(WEXITSTATUS(status) == 0);
    }
};

bool has_ca(Store& store, const std::string& sn) {
    bool found = false;
    must_read(store, [&](ReadView& v) { found = v.get_ca(sn)->has_value(); });
    return found;
}

}  // namespace

TEST_CASE("a replica marks its boot while commits skip the flush, and a close flushes and unmarks", "[store][replica]") {
    Replica r;
    {
        auto store = r.open();
        CHECK(store->discarded().empty());
        CHECK(r.marker() == "boot-A");
        must_write(*store, register_ca("0a"));
        CHECK(r.marked());
    }
    CHECK_FALSE(r.marked());
    r.reboot("boot-B");  // a clean close: any later boot keeps the file
    auto store = r.open();
    CHECK(store->discarded().empty());
    CHECK(has_ca(*store, "0a"));
    CHECK(r.marker() == "boot-B");
}

TEST_CASE("a replica a process left unflushed opens whole in the same boot", "[store][replica]") {
    Replica r;
    { must_write(*r.open(), register_ca("0a")); }
    r.crash_after_a_commit();
    REQUIRE(r.marker() == "boot-A");
    auto store = r.open();
    CHECK(store->discarded().empty());
    CHECK(has_ca(*store, "0a"));
    CHECK(has_ca(*store, "0c"));
}

TEST_CASE("a replica left unflushed by another boot is discarded and starts empty", "[store][replica]") {
    Replica r;
    {
        auto store = r.open();
        must_write(*store, register_ca("0a"));
    }
    r.crash_after_a_commit();
    r.reboot("boot-B");
    auto store = r.open();
    CHECK_THAT(store->discarded(), Catch::Contains("boot-A") && Catch::Contains("boot-B"));
    CHECK_FALSE(has_ca(*store, "0a"));
    CHECK_FALSE(has_ca(*store, "0c"));
    auto position = replica_position(*store);
    REQUIRE(position);
    CHECK(position->epoch.empty());  // never loaded: the member rebuilds it from the fleet
    CHECK(r.marker() == "boot-B");
}

TEST_CASE("an unreadable marker discards the replica", "[store][replica]") {
    Replica r;
    { must_write(*r.open(), register_ca("0a")); }
    std::ofstream(r.marker_path()).close();  // empty: never written whole
    auto store = r.open();
    CHECK_THAT(store->discarded(), Catch::Contains("unreadable marker"));
    CHECK_FALSE(has_ca(*store, "0a"));
}

TEST_CASE("without a boot id a replica flushes its data and a marker it cannot judge discards", "[store][replica]") {
    Replica r;
    r.crash_after_a_commit();
    REQUIRE(r.marked());
    std::filesystem::remove(r.boot_file);
    {
        auto store = r.open();
        CHECK_THAT(store->discarded(), Catch::Contains("cannot be read"));
        CHECK_FALSE(has_ca(*store, "0c"));
        CHECK_FALSE(r.marked());
        must_write(*store, register_ca("0a"));
        CHECK_FALSE(r.marked());  // commits are flushed: nothing to mark
    }
    r.crash_after_a_commit();  // still no boot id: flushed, no marker
    CHECK_FALSE(r.marked());
    auto store = r.open();
    CHECK(store->discarded().empty());
    CHECK(has_ca(*store, "0a"));
    CHECK(has_ca(*store, "0c"));
}

TEST_CASE("an ordinary open of a replica's directory leaves its file and marker alone", "[store][replica]") {
    Replica r;
    r.crash_after_a_commit();
    r.reboot("boot-B");
    {
        auto store = r.open(false);  // devcertctl --db
        CHECK(store->discarded().empty());
        CHECK(has_ca(*store, "0c"));
    }
    CHECK(r.marker() == "boot-A");
}
