// The two ways devcertctl reaches the admin API: over the broker's admin
// socket, or directly on a status store while no broker needs to run.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace devcertctl {

struct Reply {
    int http_status = 0;
    std::string body;  ///< JSON
};

/// The call could not be made at all (socket unreachable, store unopenable);
/// the message is one line.
struct Unreachable {
    std::string message;
};

using Params = std::vector<std::pair<std::string, std::string>>;

/// POSTs Action and params, form-encoded, to the admin socket. Throws
/// Unreachable.
Reply call_socket(const std::string& socket_path, const std::string& action, const Params& params);

/// Runs the call in this process on the store in `db_dir`, as the calling
/// user, with the policy and rate limit off. Throws Unreachable.
Reply call_store(const std::string& db_dir, const std::string& action, const Params& params);

}  // namespace devcertctl
