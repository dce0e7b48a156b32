// Naming a caller from its uid and gid. Every lookup either answers (an
// entry, or "no such entry") or fails; a failure is kept on the Caller so
// that the call is refused rather than judged on what was found before it.
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <vector>

#include "devcert/api.hpp"

namespace devcert {

namespace {

constexpr std::size_t kFirstBufferSize = 16 * 1024;

std::string error_text(int err) {
    return err == ERANGE ? fmt::format("entry larger than {} bytes", kMaxIdentityEntry) : std::strerror(err);
}

// Runs a getXXX_r lookup with a buffer that doubles on ERANGE. Returns 0
// (found or not, as `found` says) or the error.
template <typename Entry, typename Lookup>
int grow_and_lookup(std::vector<char>& buffer, Entry& entry, Entry*& found, Lookup lookup) {
    buffer.resize(kFirstBufferSize);
    for (;;) {
        found = nullptr;
        const int rc = lookup(&entry, buffer.data(), buffer.size(), &found);
        if (rc != ERANGE) return rc;
        if (buffer.size() >= kMaxIdentityEntry) return ERANGE;
        buffer.resize(std::min(buffer.size() * 2, kMaxIdentityEntry));
    }
}

// The group list of a named user (primary gid included), or the lookup
// error. getgrouplist answers -1 with the count it needs when the list is
// too small; -1 without asking for more is an error.
std::optional<std::string> group_list(const IdentityDatabase& db, const char* user, gid_t gid,
                                      std::vector<gid_t>& out) {
    constexpr int kMaxGroups = static_cast<int>(kMaxIdentityEntry / sizeof(gid_t));
    int capacity = 64;
    for (;;) {
        out.assign(static_cast<std::size_t>(capacity), 0);
        int count = capacity;
        if (db.getgrouplist(user, gid, out.data(), &count) >= 0 && count >= 0 && count <= capacity) {
            out.resize(static_cast<std::size_t>(count));
            return std::nullopt;
        }
        if (count <= capacity) {
            return fmt::format("group list lookup for user '{}' failed", user);
        }
        if (count > kMaxGroups) {
            return fmt::format("group list lookup for user '{}' failed: more than {} groups", user, kMaxGroups);
        }
        capacity = count;
    }
}

}  // namespace

IdentityDatabase IdentityDatabase::system() { return IdentityDatabase{&::getpwuid_r, &::getgrgid_r, &::getgrouplist}; }

std::string Caller::describe() const {
    if (user.empty()) return fmt::format("uid={}", uid);
    return fmt::format("uid={}({})", uid, user);
}

Caller Caller::from_ids(uid_t uid, gid_t gid) { return from_ids(uid, gid, IdentityDatabase::system()); }

Caller Caller::from_ids(uid_t uid, gid_t gid, const IdentityDatabase& db) {
    Caller caller;
    caller.uid = uid;
    caller.gid = gid;

    std::vector<char> buffer;
    passwd user_entry{};
    passwd* user = nullptr;
    const int user_rc = grow_and_lookup(buffer, user_entry, user, [&](passwd* e, char* b, std::size_t n, passwd** r) {
        return db.getpwuid_r(uid, e, b, n, r);
    });
    if (user_rc != 0) {
        caller.lookup_error = fmt::format("user lookup for uid {} failed: {}", uid, error_text(user_rc));
        return caller;
    }

    std::vector<gid_t> gids{gid};
    if (user != nullptr) {  // no passwd entry: no name and no supplementary groups
        caller.user = user->pw_name;
        std::vector<gid_t> listed;
        if (auto failed = group_list(db, user->pw_name, gid, listed)) {
            caller.lookup_error = std::move(*failed);
            return caller;
        }
        for (gid_t g : listed) {
            if (std::find(gids.begin(), gids.end(), g) == gids.end()) gids.push_back(g);
        }
    }
    for (gid_t g : gids) {
        group group_entry{};
        group* found = nullptr;
        const int rc = grow_and_lookup(buffer, group_entry, found, [&](group* e, char* b, std::size_t n, group** r) {
            return db.getgrgid_r(g, e, b, n, r);
        });
        if (rc != 0) {
            caller.lookup_error = fmt::format("group lookup for gid {} failed: {}", g, error_text(rc));
            return caller;
        }
        if (found != nullptr) caller.groups.emplace_back(found->gr_name);
    }
    return caller;
}

}  // namespace devcert
