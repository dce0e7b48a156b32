// The admin socket's HTTP transport: a UNIX stream socket we bind ourselves,
// an accept loop, and one thread per connection reading requests with
// HttpRequestReader and turning them into ApiRequests. Every size is capped
// before anything is buffered, every answer is one whole HTTP response with
// a JSON body, and every refusal goes through the Api's reject() so that it
// is counted and audited like a call.
#include "devcert/admin_server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <map>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "devcert/api.hpp"
#include "devcert/handles.hpp"
#include "devcert/http_request.hpp"
#include "devcert/threads.hpp"

namespace devcert {

static_assert(sizeof(sockaddr_un::sun_path) - 1 == kMaxSocketPath);

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// ---------------------------------------------------------------------------
// The socket file

struct BoundSocket {
    UniqueFd fd;
    dev_t device = 0;
    ino_t inode = 0;
};

Result<sockaddr_un> socket_address(const std::string& path) {
    if (path.empty()) return make_error(Errc::invalid_argument, "admin socket path is empty");
    if (path.size() > kMaxSocketPath) {
        return make_error(Errc::invalid_argument,
                          fmt::format("admin socket path '{}' is {} bytes long, a UNIX socket path may have at most {}",
                                      path, path.size(), kMaxSocketPath));
    }
    if (path.find('\0') != std::string::npos) {
        return make_error(Errc::invalid_argument, "admin socket path contains a NUL byte");
    }
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path.data(), path.size());
    return address;
}

// A socket file nobody listens on is left over from a process that died: it
// may be replaced. One somebody listens on belongs to a running broker, and
// anything else at the path is not ours to remove.
Outcome clear_stale_socket(const std::string& path, const sockaddr_un& address) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return Ok{};
        return make_error(Errc::io_error, fmt::format("cannot inspect admin socket '{}': {}", path, errno_text(errno)));
    }
    if (!S_ISSOCK(st.st_mode)) {
        return make_error(Errc::invalid_argument,
                          fmt::format("admin socket path '{}' exists and is not a socket; refusing to replace it", path));
    }
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!probe) return make_error(Errc::io_error, fmt::format("cannot create a socket: {}", errno_text(errno)));
    if (::connect(probe.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0) {
        return make_error(Errc::already_exists,
                          fmt::format("admin socket '{}' is in use: another process is listening on it", path));
    }
    if (errno != ECONNREFUSED) {
        return make_error(Errc::io_error,
                          fmt::format("cannot check whether admin socket '{}' is in use: {}", path, errno_text(errno)));
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        return make_error(Errc::io_error,
                          fmt::format("cannot remove stale admin socket '{}': {}", path, errno_text(errno)));
    }
    return Ok{};
}

Result<BoundSocket> bind_socket(const std::string& path, unsigned mode) {
    auto address = socket_address(path);
    if (!address) return address.error();
    if (mode > 07777) {
        return make_error(Errc::invalid_argument, fmt::format("admin socket mode {:o} is not a file mode", mode));
    }
    if (auto cleared = clear_stale_socket(path, *address); !cleared) return cleared.error();

    BoundSocket bound;
    bound.fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!bound.fd) return make_error(Errc::io_error, fmt::format("cannot create a socket: {}", errno_text(errno)));

    // The file is created owner-only so that nobody can connect in the window
    // before chmod sets the configured mode. umask is process-wide; the
    // window is a single bind() and it only ever narrows permissions.
    const mode_t previous_umask = ::umask(0177);
    const int bind_rc = ::bind(bound.fd.get(), reinterpret_cast<const sockaddr*>(&*address), sizeof *address);
    const int bind_errno = errno;
    ::umask(previous_umask);
    if (bind_rc != 0) {
        return make_error(Errc::io_error, fmt::format("cannot bind admin socket '{}': {}", path, errno_text(bind_errno)));
    }
    struct stat st {};
    if (::chmod(path.c_str(), static_cast<mode_t>(mode)) != 0 || ::lstat(path.c_str(), &st) != 0) {
        const int err = errno;
        ::unlink(path.c_str());
        return make_error(Errc::io_error,
                          fmt::format("cannot set mode {:o} on admin socket '{}': {}", mode, path, errno_text(err)));
    }
    bound.device = st.st_dev;
    bound.inode = st.st_ino;
    if (::listen(bound.fd.get(), SOMAXCONN) != 0) {
        const int err = errno;
        ::unlink(path.c_str());
        return make_error(Errc::io_error, fmt::format("cannot listen on admin socket '{}': {}", path, errno_text(err)));
    }
    return bound;
}

// ---------------------------------------------------------------------------
// Connections

using Clock = std::chrono::steady_clock;

// Waits until `fd` is ready for `events` or `deadline` passes (no deadline:
// waits as long as it takes). False on timeout or error.
bool wait_ready(int fd, short events, std::optional<Clock::time_point> deadline) {
    for (;;) {
        int timeout_ms = -1;
        if (deadline) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now()).count();
            if (left <= 0) return false;
            timeout_ms = static_cast<int>(std::min<long long>(left, 60'000));
        }
        pollfd p{fd, events, 0};
        const int rc = ::poll(&p, 1, timeout_ms);
        if (rc > 0) return true;
        if (rc < 0 && errno != EINTR) return false;
    }
}

// After an answer that refuses a request the client may still be sending
// (an oversized body, a refused head): closing a UNIX socket with unread
// data makes the client's read fail with ECONNRESET, and the answer is
// lost with it. So stop writing, then read and drop what still comes, for
// a bounded time and amount, until the client closes its end.
void drain_before_close(int fd) {
    constexpr std::size_t kMaxDrained = 1u << 20;
    const auto deadline = Clock::now() + std::chrono::seconds(2);
    ::shutdown(fd, SHUT_WR);
    char sink[16 * 1024];
    for (std::size_t drained = 0; drained < kMaxDrained;) {
        if (!wait_ready(fd, POLLIN, deadline)) return;
        const ssize_t n = ::recv(fd, sink, sizeof sink, 0);
        if (n == 0) return;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return;
        }
        drained += static_cast<std::size_t>(n);
    }
}

// Sends all of `data`, giving up at `deadline` (a client that does not read
// its answer does not keep the thread).
bool send_all(int fd, std::string_view data, Clock::time_point deadline) {
    while (!data.empty()) {
        const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            data.remove_prefix(static_cast<std::size_t>(n));
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (!wait_ready(fd, POLLOUT, deadline)) return false;
        } else {
            return false;
        }
    }
    return true;
}

}  // namespace

struct HttpTransport::Impl {
    HttpTransportOptions options;
    Handler handle;
    Rejecter reject;
    BoundSocket socket;
    UniqueFd listener;
    UniqueFd wake_read;   // the accept loop polls it to notice stop()
    UniqueFd wake_write;
    std::thread acceptor;

    // Served connections, guarded by mutex: descriptor -> peer uid, the
    // count per uid, and how many belong to unprivileged uids.
    std::mutex mutex;
    std::condition_variable all_closed;
    std::map<int, uid_t> live;
    std::unordered_map<uid_t, unsigned> per_uid;
    unsigned unprivileged = 0;
    bool stopping = false;
    // Connection threads, guarded by mutex, and those that have left
    // serve(). Each is joined (by the accept loop once done, by stop() at
    // the latest), never detached: a thread still returning through this
    // module's code when the broker unloads the plugin would crash it.
    std::vector<std::thread> workers;
    std::vector<std::thread::id> finished;

    bool privileged(uid_t uid) const {
        return std::find(options.privileged_uids.begin(), options.privileged_uids.end(), uid) !=
               options.privileged_uids.end();
    }
    // Takes a slot for a connection of `uid`, or refuses it: over the uid's
    // share, over the limit, or into the slots kept for privileged uids.
    bool admit(int fd, uid_t uid);
    void release(int fd);
    // Joins the connection threads that have left serve().
    void join_finished();

    std::mutex stop_mutex;
    bool stopped = false;

    void accept_loop();
    void serve(UniqueFd fd, ucred peer);
    void close_socket_file();
};

bool HttpTransport::Impl::admit(int fd, uid_t uid) {
    const unsigned limit = options.connection_limit;
    const unsigned reserved = std::min(options.reserved_connections, limit);
    const bool is_privileged = privileged(uid);
    auto held = per_uid.find(uid);
    // Shares keep ordinary uids from crowding each other out; the privileged
    // ones (root, the broker's own uid) are trusted with the whole server,
    // and a busy operator's quick succession of calls must not trip over
    // connections whose threads have not finished closing yet.
    if (!is_privileged && held != per_uid.end() && held->second >= options.connections_per_uid) return false;
    if (live.size() >= limit) return false;
    if (!is_privileged && unprivileged >= limit - reserved) return false;
    live.emplace(fd, uid);
    ++per_uid[uid];
    if (!is_privileged) ++unprivileged;
    return true;
}

void HttpTransport::Impl::join_finished() {
    std::vector<std::thread> done;
    {
        std::lock_guard lock(mutex);
        for (const auto id : finished) {
            const auto it =
                std::find_if(workers.begin(), workers.end(), [&](const std::thread& t) { return t.get_id() == id; });
            if (it == workers.end()) continue;
            done.push_back(std::move(*it));
            workers.erase(it);
        }
        finished.clear();
    }
    for (auto& t : done) t.join();  // they are past their last use of the lock
}

void HttpTransport::Impl::release(int fd) {
    const auto it = live.find(fd);
    if (it == live.end()) return;
    const uid_t uid = it->second;
    live.erase(it);
    if (auto held = per_uid.find(uid); held != per_uid.end() && --held->second == 0) per_uid.erase(held);
    if (!privileged(uid)) --unprivileged;
    if (live.empty()) all_closed.notify_all();
}

void HttpTransport::Impl::accept_loop() {
    auto last_tick = Clock::now();
    for (;;) {
        pollfd fds[2] = {{listener.get(), POLLIN, 0}, {wake_read.get(), POLLIN, 0}};
        const int ready = ::poll(fds, 2, 1000);
        if (options.every_second && Clock::now() - last_tick >= std::chrono::seconds(1)) {
            last_tick = Clock::now();
            options.every_second();
        }
        if (ready < 0) {
            if (errno == EINTR) continue;
            return;
        }
        if (ready == 0) continue;
        if ((fds[1].revents & POLLIN) != 0) return;
        UniqueFd fd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!fd) {
            // Out of descriptors or memory: the pending connection stays
            // ready, so wait a little rather than spin on it.
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            }
            continue;  // or the peer went away
        }
        join_finished();
        ucred peer{};
        socklen_t size = sizeof peer;
        if (::getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) continue;  // nobody to answer
        try {
            auto owned = std::make_shared<UniqueFd>(std::move(fd));
            const int raw = owned->get();
            {
                std::lock_guard lock(mutex);
                if (stopping) return;
                workers.reserve(workers.size() + 1);  // the push below cannot throw
                if (!admit(raw, peer.uid)) continue;  // closed at once
            }
            try {
                std::thread worker = spawn_thread([this, owned, peer] { serve(std::move(*owned), peer); });
                std::lock_guard lock(mutex);
                workers.push_back(std::move(worker));
            } catch (const std::exception&) {
                // No thread: the connection is closed unserved.
                std::lock_guard lock(mutex);
                release(raw);
                owned->reset();
            }
        } catch (const std::bad_alloc&) {
            // Closed unserved.
        }
    }
}

// One connection, on its own thread: requests are read under the deadline,
// answered one by one, until the client closes, a refusal ends it, or the
// server stops.
void HttpTransport::Impl::serve(UniqueFd fd, ucred peer) {
    const std::chrono::seconds limit(options.connection_timeout_s);
    auto fresh_deadline = [&]() -> std::optional<Clock::time_point> {
        if (limit.count() == 0) return std::nullopt;
        return Clock::now() + limit;
    };
    try {
        std::optional<Caller> caller;  // resolved at the first request
        auto who = [&]() -> const Caller& {
            // A failed lookup is tried again at the next request.
            if (!caller || !caller->lookup_error.empty()) caller = Caller::from_ids(peer.uid, peer.gid);
            return *caller;
        };
        auto answer = [&](const ApiResponse& response, bool close) {
            const auto deadline = Clock::now() + std::max(limit, std::chrono::seconds(1));
            return send_all(fd.get(), format_response(response, close), deadline);
        };

        HttpRequestReader reader;
        bool refused_midway = false;  // answered while the client may still be sending
        std::optional<Clock::time_point> deadline = fresh_deadline();
        char buffer[16 * 1024];
        for (bool open = true; open;) {
            switch (reader.advance()) {
                case HttpRequestReader::State::need_more: {
                    if (!wait_ready(fd.get(), POLLIN, deadline)) {
                        open = false;  // too slow: cut without an answer
                        break;
                    }
                    const ssize_t n = ::recv(fd.get(), buffer, sizeof buffer, 0);
                    if (n > 0) {
                        reader.append(std::string_view(buffer, static_cast<std::size_t>(n)));
                    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
                        // The client stopped sending: a request it cut short is
                        // answered (its reading half may still be open).
                        if (n == 0 && reader.partial()) {
                            answer(reject(who(), TransportError::malformed_request), true);
                        }
                        open = false;
                    }
                    break;
                }
                case HttpRequestReader::State::head_ready: {
                    const HttpRequest& request = reader.request();
                    if (auto refused = refuse_head(request)) {
                        refused_midway = answer(reject(who(), *refused), true);  // the body is not read
                        open = false;
                    } else if (request.expect_continue && request.minor_version == 1) {
                        open = send_all(fd.get(), "HTTP/1.1 100 Continue\r\n\r\n", Clock::now() + limit);
                    }
                    break;
                }
                case HttpRequestReader::State::failed:
                    refused_midway = answer(reject(who(), reader.error()), true);
                    open = false;
                    break;
                case HttpRequestReader::State::complete: {
                    // From here on the time is ours, not the client's.
                    const HttpRequest& request = reader.request();
                    ApiRequest call;
                    const ApiResponse response = [&] {
                        if (auto refused = request_params(request, call.params)) return reject(who(), *refused);
                        return handle(who(), call);
                    }();
                    {
                        std::lock_guard lock(mutex);
                        if (stopping) open = false;
                    }
                    const bool keep = open && request.keep_alive;
                    open = answer(response, !keep) && keep;
                    reader.next();
                    deadline = fresh_deadline();
                    break;
                }
            }
        }
        if (refused_midway) drain_before_close(fd.get());
    } catch (const std::exception&) {
        // Out of memory or a handler that broke its promise: the connection
        // is dropped, nothing unwinds further.
    }
    // Hand the descriptor back under the lock, so that stop() never shuts
    // down a number that has been reused.
    std::lock_guard lock(mutex);
    release(fd.get());
    fd.reset();
    finished.push_back(std::this_thread::get_id());
}

void HttpTransport::Impl::close_socket_file() {
    // Remove the file only if it is still the one we bound: a broker started
    // after us may have replaced it.
    struct stat st {};
    if (::lstat(options.socket_path.c_str(), &st) == 0 && st.st_dev == socket.device && st.st_ino == socket.inode) {
        ::unlink(options.socket_path.c_str());
    }
}

Result<std::unique_ptr<HttpTransport>> HttpTransport::start(const HttpTransportOptions& options, Handler handle,
                                                            Rejecter reject) {
    if (!handle || !reject) return make_error(Errc::invalid_argument, "admin transport needs a handler and a rejecter");
    auto bound = bind_socket(options.socket_path, options.socket_mode);
    if (!bound) return bound.error();

    auto impl = std::make_unique<Impl>();
    impl->options = options;
    if (impl->options.privileged_uids.empty()) impl->options.privileged_uids = {0, ::geteuid()};
    impl->handle = std::move(handle);
    impl->reject = std::move(reject);
    impl->socket = std::move(*bound);
    impl->listener = std::move(impl->socket.fd);
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC | O_NONBLOCK) != 0) {
        const int err = errno;
        impl->close_socket_file();
        return make_error(Errc::io_error, fmt::format("cannot start serving the admin socket '{}': {}",
                                                      options.socket_path, errno_text(err)));
    }
    impl->wake_read.reset(pipe_fds[0]);
    impl->wake_write.reset(pipe_fds[1]);
    try {
        impl->acceptor = spawn_thread([self = impl.get()] { self->accept_loop(); });
    } catch (const std::exception& e) {
        impl->close_socket_file();
        return make_error(Errc::io_error,
                          fmt::format("cannot start serving the admin socket '{}': {}", options.socket_path, e.what()));
    }
    return std::unique_ptr<HttpTransport>(new HttpTransport(std::move(impl)));
}

HttpTransport::HttpTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpTransport::~HttpTransport() { stop(); }

void HttpTransport::stop() {
    std::lock_guard stop_lock(impl_->stop_mutex);
    if (impl_->stopped) return;
    impl_->stopped = true;
    {
        std::lock_guard lock(impl_->mutex);
        impl_->stopping = true;
    }
    const char byte = 0;
    while (::write(impl_->wake_write.get(), &byte, 1) < 0 && errno == EINTR) {
    }
    if (impl_->acceptor.joinable()) impl_->acceptor.join();
    impl_->listener.reset();
    impl_->close_socket_file();
    // Every connection thread sees its socket end and leaves; a call in
    // progress finishes first.
    std::unique_lock lock(impl_->mutex);
    for (const auto& [fd, uid] : impl_->live) ::shutdown(fd, SHUT_RDWR);
    impl_->all_closed.wait(lock, [&] { return impl_->live.empty(); });
    // Their threads may still be returning: done only once they are gone.
    std::vector<std::thread> workers = std::move(impl_->workers);
    impl_->workers.clear();
    impl_->finished.clear();
    lock.unlock();
    for (auto& t : workers) t.join();
}

// ---------------------------------------------------------------------------
// AdminServer: the transport in front of the Api

struct AdminServer::Impl {
    std::unique_ptr<Api> api;
    std::unique_ptr<HttpTransport> transport;  // declared last: stops before the Api goes
};

Result<std::unique_ptr<AdminServer>> AdminServer::start(const AdminContext& context) {
    if (context.config == nullptr) return make_error(Errc::invalid_argument, "admin server needs a configuration");
    if (context.config->admin_socket.empty()) return make_error(Errc::invalid_argument, "admin socket is off");
    auto api = Api::create(context);
    if (!api) return api.error();

    auto impl = std::make_unique<Impl>();
    impl->api = std::move(*api);
    Api* calls = impl->api.get();
    HttpTransportOptions options;
    options.socket_path = context.config->admin_socket;
    options.socket_mode = context.config->admin_socket_mode;
    options.every_second = [calls] { calls->flush_audit(); };
    auto transport = HttpTransport::start(
        options, [calls](const Caller& caller, const ApiRequest& request) { return calls->handle(caller, request); },
        [calls](const Caller& caller, TransportError error) { return calls->reject(caller, error); });
    if (!transport) return transport.error();
    impl->transport = std::move(*transport);
    return std::unique_ptr<AdminServer>(new AdminServer(std::move(impl)));
}

AdminServer::AdminServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

AdminServer::~AdminServer() { stop(); }

Result<std::size_t> AdminServer::reload_policy() { return impl_->api->reload_policy(); }

void AdminServer::stop() {
    if (impl_->transport) impl_->transport->stop();
    impl_->api->flush_audit(true);
}

}  // namespace devcert
