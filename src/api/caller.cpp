#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "devcert/api.hpp"

namespace devcert {

namespace {

std::size_t lookup_buffer_size() {
    const long hint = ::sysconf(_SC_GETPW_R_SIZE_MAX);
    return hint > 0 ? static_cast<std::size_t>(hint) : 16384;
}

std::string group_name(gid_t gid) {
    std::vector<char> buffer(lookup_buffer_size());
    for (int attempt = 0; attempt < 6; ++attempt) {
        struct group entry {};
        struct group* found = nullptr;
        const int rc = ::getgrgid_r(gid, &entry, buffer.data(), buffer.size(), &found);
        if (rc == ERANGE) {
            buffer.resize(buffer.size() * 2);
            continue;
        }
        return (rc == 0 && found != nullptr) ? std::string(found->gr_name) : std::string();
    }
    return {};
}

}  // namespace

std::string Caller::describe() const {
    if (user.empty()) return fmt::format("uid={}", uid);
    return fmt::format("uid={}({})", uid, user);
}

Caller Caller::from_ids(uid_t uid, gid_t gid) {
    Caller caller;
    caller.uid = uid;
    caller.gid = gid;

    std::vector<char> buffer(lookup_buffer_size());
    struct passwd entry {};
    struct passwd* found = nullptr;
    for (int attempt = 0; attempt < 6; ++attempt) {
        const int rc = ::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found);
        if (rc != ERANGE) break;
        buffer.resize(buffer.size() * 2);
        found = nullptr;
    }

    std::vector<gid_t> gids{gid};
    if (found != nullptr) {
        caller.user = found->pw_name;
        int count = 64;
        std::vector<gid_t> list(static_cast<std::size_t>(count));
        if (::getgrouplist(found->pw_name, gid, list.data(), &count) == -1 && count > 0) {
            list.resize(static_cast<std::size_t>(count));
            if (::getgrouplist(found->pw_name, gid, list.data(), &count) == -1) count = 0;
        }
        list.resize(static_cast<std::size_t>(std::max(count, 0)));
        for (gid_t g : list) {
            if (std::find(gids.begin(), gids.end(), g) == gids.end()) gids.push_back(g);
        }
    }
    for (gid_t g : gids) {
        if (auto name = group_name(g); !name.empty()) caller.groups.push_back(std::move(name));
    }
    return caller;
}

}  // namespace devcert
