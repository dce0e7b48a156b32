// The admin socket: HTTP/1.1 over a UNIX stream socket, served by our own
// threads inside the broker process (HttpRequestReader reads the requests). Never calls a
// broker function: audit lines go to `audit`, which the plugin drains on the
// broker thread.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/record_access.hpp"
#include "devcert/result.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"

namespace devcert {

// Defined in api.hpp, which includes this header.
struct Caller;
struct ApiRequest;
struct ApiResponse;
enum class TransportError : std::uint8_t;

/// What the operations need from their host process.
struct AdminContext {
    Store* store = nullptr;
    StoreWriter* writer = nullptr;          ///< all mutations go through it
    /// When set (fleet mode), reads and writes go through it instead.
    RecordAccess* records = nullptr;
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
    /// Api::reload_policy of the Api behind the socket.
    Result<std::size_t> reload_policy();
    /// Stops serving, joins its threads and unlinks the socket.
    ~AdminServer();
    void stop();

private:
    struct Impl;
    explicit AdminServer(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// Caps of the admin socket's HTTP layer.
inline constexpr std::size_t kMaxRequestBody = 64 * 1024;
inline constexpr std::size_t kMaxRequestParams = 64;
inline constexpr std::size_t kMaxParamValue = 8 * 1024;
/// sizeof(sockaddr_un::sun_path) less the terminating NUL.
inline constexpr std::size_t kMaxSocketPath = 107;

struct HttpTransportOptions {
    std::string socket_path;
    unsigned socket_mode = 0660;
    /// A client that sends nothing for this long is disconnected.
    unsigned connection_timeout_s = 10;
    /// Connections beyond this many are closed as soon as they are accepted.
    unsigned connection_limit = 64;
    /// Connections one ordinary uid may hold at once: one more from it is
    /// closed as soon as it is accepted, while other uids still get in. The
    /// privileged uids are held only by connection_limit.
    unsigned connections_per_uid = 16;
    /// Of connection_limit, slots only privileged uids may take, so that
    /// other uids together cannot lock them out.
    unsigned reserved_connections = 8;
    /// Who the reserved slots are for; empty: root and the process's own
    /// effective uid (the broker's).
    std::vector<uid_t> privileged_uids;
    /// Called about once a second on the server's thread (AdminServer:
    /// Api::flush_audit).
    std::function<void()> every_second;
};

/// The HTTP layer of the admin socket on its own, with the operations behind
/// a function: AdminServer wires it to an Api, tests to a recording handler.
/// Both functions run on the server's connection threads, concurrently.
class HttpTransport {
public:
    using Handler = std::function<ApiResponse(const Caller&, const ApiRequest&)>;
    using Rejecter = std::function<ApiResponse(const Caller&, TransportError)>;

    /// Binds the socket (see AdminServer::start) and starts serving. Errors
    /// name the path.
    static Result<std::unique_ptr<HttpTransport>> start(const HttpTransportOptions& options, Handler handle,
                                                        Rejecter reject);
    /// Stops serving, joins the server's threads and unlinks the socket.
    /// Idempotent.
    ~HttpTransport();
    void stop();

    struct Impl;

private:
    explicit HttpTransport(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

}  // namespace devcert
