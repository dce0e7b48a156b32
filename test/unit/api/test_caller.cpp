// Caller::from_ids against a scripted passwd/group database: entries of any
// size are read whole, "no such entry" is an answer, and every other failure
// is kept on the Caller instead of leaving a partial identity.
#include <grp.h>
#include <pwd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "devcert/api.hpp"

using namespace devcert;

namespace {

// The database the fake functions answer from; one test at a time.
struct FakeDatabase {
    std::map<uid_t, std::string> users;                  // uid -> name
    std::map<gid_t, std::string> groups;                 // gid -> name
    std::map<gid_t, std::size_t> group_sizes;            // gid -> bytes its entry needs
    std::vector<gid_t> supplementary;                    // for every user
    int user_error = 0;                                  // returned by getpwuid_r when set
    std::map<gid_t, int> group_errors;                   // returned by getgrgid_r
    bool group_list_fails = false;                       // getgrouplist: -1 without asking for more
    std::size_t largest_group_buffer = 0;
};

FakeDatabase fake;

// Copies `text` into the caller's buffer as getXXX_r do: ERANGE when the
// buffer cannot hold `needed` bytes.
int place(const std::string& text, std::size_t needed, char* buffer, std::size_t size, char** out) {
    if (size < std::max(needed, text.size() + 1)) return ERANGE;
    std::memcpy(buffer, text.c_str(), text.size() + 1);
    *out = buffer;
    return 0;
}

int fake_getpwuid_r(uid_t uid, passwd* entry, char* buffer, std::size_t size, passwd** result) {
    *result = nullptr;
    if (fake.user_error != 0) return fake.user_error;
    const auto it = fake.users.find(uid);
    if (it == fake.users.end()) return 0;
    if (const int rc = place(it->second, 0, buffer, size, &entry->pw_name); rc != 0) return rc;
    entry->pw_uid = uid;
    *result = entry;
    return 0;
}

int fake_getgrgid_r(gid_t gid, group* entry, char* buffer, std::size_t size, group** result) {
    *result = nullptr;
    fake.largest_group_buffer = std::max(fake.largest_group_buffer, size);
    if (const auto error = fake.group_errors.find(gid); error != fake.group_errors.end()) return error->second;
    const auto it = fake.groups.find(gid);
    if (it == fake.groups.end()) return 0;
    const auto needed = fake.group_sizes.count(gid) != 0 ? fake.group_sizes.at(gid) : 0;
    if (const int rc = place(it->second, needed, buffer, size, &entry->gr_name); rc != 0) return rc;
    entry->gr_gid = gid;
    *result = entry;
    return 0;
}

int fake_getgrouplist(const char*, gid_t gid, gid_t* list, int* count) {
    if (fake.group_list_fails) return -1;
    std::vector<gid_t> all{gid};
    all.insert(all.end(), fake.supplementary.begin(), fake.supplementary.end());
    const int needed = static_cast<int>(all.size());
    if (*count < needed) {
        *count = needed;
        return -1;
    }
    std::copy(all.begin(), all.end(), list);
    *count = needed;
    return needed;
}

const IdentityDatabase kFake{&fake_getpwuid_r, &fake_getgrgid_r, &fake_getgrouplist};

struct FreshDatabase {
    FreshDatabase() {
        fake = FakeDatabase{};
        fake.users = {{1000, "ops"}};
        fake.groups = {{1000, "ops"}, {2000, "bigops"}, {3000, "viewers"}};
        fake.supplementary = {2000, 3000};
    }
};

}  // namespace

TEST_CASE("a caller is named with its primary and supplementary groups", "[api][caller]") {
    FreshDatabase db;
    const Caller caller = Caller::from_ids(1000, 1000, kFake);
    CHECK(caller.lookup_error.empty());
    CHECK(caller.user == "ops");
    CHECK(caller.groups == std::vector<std::string>{"ops", "bigops", "viewers"});
}

TEST_CASE("a group entry far larger than 32 KiB is read whole", "[api][caller]") {
    FreshDatabase db;
    fake.group_sizes[2000] = 300 * 1024;
    const Caller caller = Caller::from_ids(1000, 1000, kFake);
    CHECK(caller.lookup_error.empty());
    CHECK(caller.groups == std::vector<std::string>{"ops", "bigops", "viewers"});
    CHECK(fake.largest_group_buffer >= 300 * 1024);
}

TEST_CASE("a group list longer than the first guess is read whole", "[api][caller]") {
    FreshDatabase db;
    for (gid_t g = 5000; g < 5500; ++g) {
        fake.groups[g] = "g" + std::to_string(g);
        fake.supplementary.push_back(g);
    }
    const Caller caller = Caller::from_ids(1000, 1000, kFake);
    CHECK(caller.lookup_error.empty());
    CHECK(caller.groups.size() == 503);
    CHECK(caller.groups.back() == "g5499");
}

TEST_CASE("a uid or gid without an entry is an answer, not an error", "[api][caller]") {
    FreshDatabase db;
    SECTION("no passwd entry: no name, only the primary group") {
        const Caller caller = Caller::from_ids(4242, 3000, kFake);
        CHECK(caller.lookup_error.empty());
        CHECK(caller.user.empty());
        CHECK(caller.groups == std::vector<std::string>{"viewers"});
    }
    SECTION("a group without an entry is left out") {
        fake.supplementary.push_back(7777);
        const Caller caller = Caller::from_ids(1000, 1000, kFake);
        CHECK(caller.lookup_error.empty());
        CHECK(caller.groups == std::vector<std::string>{"ops", "bigops", "viewers"});
    }
}

TEST_CASE("a failed lookup is kept on the caller, naming the lookup, and no partial identity is left",
          "[api][caller]") {
    FreshDatabase db;
    SECTION("the passwd lookup") {
        fake.user_error = EIO;
        const Caller caller = Caller::from_ids(1000, 1000, kFake);
        CHECK(caller.lookup_error == std::string("user lookup for uid 1000 failed: ") + std::strerror(EIO));
    }
    SECTION("a group lookup") {
        fake.group_errors[2000] = EAGAIN;
        const Caller caller = Caller::from_ids(1000, 1000, kFake);
        CHECK(caller.lookup_error == std::string("group lookup for gid 2000 failed: ") + std::strerror(EAGAIN));
    }
    SECTION("the group list") {
        fake.group_list_fails = true;
        const Caller caller = Caller::from_ids(1000, 1000, kFake);
        CHECK(caller.lookup_error == "group list lookup for user 'ops' failed");
    }
    SECTION("a group entry over the cap") {
        fake.group_sizes[2000] = kMaxIdentityEntry + 1;
        const Caller caller = Caller::from_ids(1000, 1000, kFake);
        CHECK(caller.lookup_error == "group lookup for gid 2000 failed: entry larger than 4194304 bytes");
    }
}
