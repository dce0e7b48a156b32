// The admin socket: HTTP/1.1 over a UNIX stream socket, served by
// libmicrohttpd on its own thread inside the broker process. Never calls a
// broker function: audit lines go to `audit`, which the plugin drains on the
// broker thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"

namespace devcert {

/// What the operations need from their host process.
struct AdminContext {
    Store* store = nullptr;
    StoreWriter* writer = nullptr;          ///< all mutations go through it
    const PluginConfig* config = nullptr;   ///< instance_id, max_ca, policy, limits
    Counters* counters = nullptr;
    const OnlineRegistry* online = nullptr;
    /// Receives one audit line per call; must be thread-safe and cheap.
    std::function<void(std::string)> audit;
};

class AdminServer {
public:
    /// Binds config.admin_socket (replacing a stale socket file), applies the
    /// mode, loads the policy, and starts serving. Errors name the path or
    /// the policy line.
    static Result<std::unique_ptr<AdminServer>> start(const AdminContext& context);
    /// Stops serving, joins its threads and unlinks the socket.
    ~AdminServer();
    void stop();

private:
    struct Impl;
    explicit AdminServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace devcert
