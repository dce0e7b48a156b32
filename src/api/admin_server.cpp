// The admin socket's HTTP transport: a UNIX stream socket we bind ourselves,
// served by libmicrohttpd with one thread per connection, turned into
// ApiRequests. Every size is capped before anything is buffered, and every
// refusal goes through the Api's reject() so that it is counted and audited
// like a call.
#include "devcert/admin_server.hpp"

#include <fcntl.h>
#include <microhttpd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <utility>

#include "devcert/api.hpp"
#include "devcert/handles.hpp"
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
// Request parsing

using Params = std::vector<std::pair<std::string, std::string>>;
using ParseOutcome = std::optional<TransportError>;  // nullopt: parsed

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// application/x-www-form-urlencoded decoding, strict: every '%' must start a
// two-digit escape, and no NUL may come out (it would truncate the value
// anywhere a C string is made of it).
bool percent_decode(std::string_view in, std::string& out) {
    out.clear();
    out.reserve(in.size());
    for (std::size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= in.size()) return false;
            const int hi = hex_digit(in[i + 1]);
            const int lo = hex_digit(in[i + 2]);
            if (hi < 0 || lo < 0) return false;
            c = static_cast<char>(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') return false;
        out.push_back(c);
    }
    return true;
}

ParseOutcome add_param(Params& params, std::string name, std::string value) {
    if (name.empty()) return TransportError::malformed_body;
    if (value.size() > kMaxParamValue || name.size() > kMaxParamValue) return TransportError::value_too_large;
    if (params.size() >= kMaxRequestParams) return TransportError::too_many_params;
    params.emplace_back(std::move(name), std::move(value));
    return std::nullopt;
}

ParseOutcome parse_form(std::string_view text, Params& params) {
    std::string name;
    std::string value;
    while (!text.empty()) {
        const std::size_t amp = text.find('&');
        const std::string_view pair = text.substr(0, amp);
        text = amp == std::string_view::npos ? std::string_view{} : text.substr(amp + 1);
        if (pair.empty()) continue;
        const std::size_t eq = pair.find('=');
        const std::string_view raw_name = pair.substr(0, eq);
        const std::string_view raw_value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        if (!percent_decode(raw_name, name) || !percent_decode(raw_value, value)) return TransportError::malformed_body;
        if (auto error = add_param(params, std::move(name), std::move(value))) return error;
    }
    return std::nullopt;
}

// Reads a JSON body event by event rather than into a json value: an object
// would keep only one of two equal keys, and the Api must see both to
// refuse them. Anything but one flat object of strings stops the parse.
class FlatStringObject : public nlohmann::json_sax<nlohmann::json> {
public:
    explicit FlatStringObject(Params& params) : params_(params) {}

    std::optional<TransportError> error;

    bool null() override { return refuse(); }
    bool boolean(bool) override { return refuse(); }
    bool number_integer(number_integer_t) override { return refuse(); }
    bool number_unsigned(number_unsigned_t) override { return refuse(); }
    bool number_float(number_float_t, const string_t&) override { return refuse(); }
    bool binary(binary_t&) override { return refuse(); }
    bool start_array(std::size_t) override { return refuse(); }
    bool end_array() override { return refuse(); }
    bool start_object(std::size_t) override {
        if (depth_ != 0) return refuse();
        depth_ = 1;
        return true;
    }
    bool end_object() override {
        depth_ = 0;
        return true;
    }
    bool key(string_t& name) override {
        key_ = std::move(name);
        return true;
    }
    bool string(string_t& value) override {
        if (depth_ != 1) return refuse();
        if (key_.find('\0') != std::string::npos || value.find('\0') != std::string::npos) return refuse();
        if (auto failed = add_param(params_, std::move(key_), std::move(value))) {
            error = failed;
            return false;
        }
        return true;
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override {
        if (!error) error = TransportError::malformed_body;
        return false;
    }

private:
    bool refuse() {
        if (!error) error = TransportError::malformed_body;
        return false;
    }

    Params& params_;
    std::string key_;
    int depth_ = 0;
};

ParseOutcome parse_json(std::string_view text, Params& params) {
    FlatStringObject reader(params);
    const bool parsed = nlohmann::json::sax_parse(text, &reader, nlohmann::json::input_format_t::json, true);
    if (reader.error) return reader.error;
    if (!parsed) return TransportError::malformed_body;
    return std::nullopt;
}

std::string media_type(const char* content_type) {
    if (content_type == nullptr) return {};
    std::string_view value(content_type);
    value = value.substr(0, value.find(';'));
    std::string type;
    for (char c : value) {
        if (c != ' ' && c != '\t') type.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    return type;
}

// ---------------------------------------------------------------------------
// Connections

// One per connection, created when libmicrohttpd accepts it and destroyed
// when it closes, so that it never outlives or leaks past the connection
// (request-completion notices are not sent for requests cut before their
// headers were complete).
struct Connection {
    int fd = -1;
    std::optional<ucred> peer;
    std::optional<Caller> caller;  // resolved at the first request
    std::string target;            // raw request target of the current request
    std::string body;
    // When the request being received must be complete; unset while one is
    // being answered. Guarded by the RequestDeadlines mutex.
    std::optional<std::chrono::steady_clock::time_point> deadline;
};

// libmicrohttpd's timeout only notices a client that goes quiet; one that
// sends a byte now and then would hold a connection for ever. This cuts any
// connection whose request is not complete in time, by shutting its socket
// down so that libmicrohttpd's own thread sees the end and closes it.
class RequestDeadlines {
public:
    explicit RequestDeadlines(std::chrono::seconds limit) : limit_(limit) {}

    /// A limit of zero watches nothing, as libmicrohttpd's own timeout.
    void start() {
        if (limit_.count() > 0) thread_ = spawn_thread([this] { run(); });
    }
    void stop() {
        {
            std::lock_guard lock(mutex_);
            stopping_ = true;
        }
        wake_.notify_all();
        if (thread_.joinable()) thread_.join();
    }

    void add(Connection* conn) {
        std::lock_guard lock(mutex_);
        if (limit_.count() > 0) conn->deadline = std::chrono::steady_clock::now() + limit_;
        live_.insert(conn);
    }
    // Called by libmicrohttpd before it closes the socket, so the watchdog
    // never touches a descriptor that may have been reused.
    void remove(Connection* conn) {
        std::lock_guard lock(mutex_);
        live_.erase(conn);
    }
    void request_received(Connection* conn) {
        std::lock_guard lock(mutex_);
        conn->deadline.reset();
    }
    void response_sent(Connection* conn) {
        std::lock_guard lock(mutex_);
        if (limit_.count() > 0) conn->deadline = std::chrono::steady_clock::now() + limit_;
    }

private:
    void run() {
        const auto period = std::max<std::chrono::milliseconds>(std::chrono::milliseconds(50), limit_ / 8);
        std::unique_lock lock(mutex_);
        while (!stopping_) {
            wake_.wait_for(lock, period);
            const auto now = std::chrono::steady_clock::now();
            for (Connection* conn : live_) {
                if (conn->deadline && *conn->deadline <= now) {
                    ::shutdown(conn->fd, SHUT_RDWR);
                    conn->deadline.reset();
                }
            }
        }
    }

    const std::chrono::milliseconds limit_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::set<Connection*> live_;
    std::thread thread_;
};

MHD_Result send_response(MHD_Connection* connection, const ApiResponse& response) {
    MHD_Response* reply = MHD_create_response_from_buffer(
        response.body.size(), const_cast<char*>(response.body.data()), MHD_RESPMEM_MUST_COPY);
    if (reply == nullptr) return MHD_NO;
    MHD_add_response_header(reply, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    if (response.retry_after_s) {
        MHD_add_response_header(reply, MHD_HTTP_HEADER_RETRY_AFTER, std::to_string(*response.retry_after_s).c_str());
    }
    const MHD_Result queued = MHD_queue_response(connection, static_cast<unsigned>(response.http_status), reply);
    MHD_destroy_response(reply);
    return queued;
}

Connection* connection_state(MHD_Connection* connection) {
    const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return info == nullptr ? nullptr : static_cast<Connection*>(info->socket_context);
}

}  // namespace

struct HttpTransport::Impl {
    HttpTransportOptions options;
    Handler handle;
    Rejecter reject;
    BoundSocket socket;
    MHD_Daemon* daemon = nullptr;
    std::unique_ptr<RequestDeadlines> deadlines;
    std::mutex stop_mutex;
    bool stopped = false;

    MHD_Result refuse(MHD_Connection* mhd, Connection& conn, TransportError error) {
        deadlines->request_received(&conn);
        return send_response(mhd, reject(*conn.caller, error));
    }

    MHD_Result on_request(MHD_Connection* mhd, const char* method, const char* upload_data,
                          std::size_t* upload_data_size, void** request_context);
    ParseOutcome collect_params(MHD_Connection* mhd, Connection& conn, Params& params);
    void close_socket_file();
};

MHD_Result HttpTransport::Impl::on_request(MHD_Connection* mhd, const char* method, const char* upload_data,
                                           std::size_t* upload_data_size, void** request_context) {
    Connection* conn = connection_state(mhd);
    if (conn == nullptr || !conn->peer) return MHD_NO;  // no peer identity: nobody to answer
    try {
        // A failed lookup is tried again at the next request.
        if (!conn->caller || !conn->caller->lookup_error.empty()) {
            conn->caller = Caller::from_ids(conn->peer->uid, conn->peer->gid);
        }

        if (*request_context == nullptr) {
            // Headers complete: refuse what can be refused before any body is read.
            *request_context = conn;
            conn->body.clear();
            const std::string_view target(conn->target);
            if (target.substr(0, target.find('?')) != "/") return refuse(mhd, *conn, TransportError::not_found);
            const std::string_view verb(method);
            if (verb != MHD_HTTP_METHOD_GET && verb != MHD_HTTP_METHOD_POST) {
                return refuse(mhd, *conn, TransportError::method_not_allowed);
            }
            if (const char* length = MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH)) {
                std::uint64_t declared = 0;
                const std::string_view text(length);
                const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), declared);
                if (ec == std::errc::result_out_of_range || (ec == std::errc{} && declared > kMaxRequestBody)) {
                    return refuse(mhd, *conn, TransportError::body_too_large);
                }
            }
            return MHD_YES;
        }

        if (*upload_data_size != 0) {
            if (conn->body.size() + *upload_data_size > kMaxRequestBody) {
                // A chunked body that grew past the cap: answer if the server
                // still allows it, and close the connection either way, without
                // reading on.
                conn->body.clear();
                conn->body.shrink_to_fit();
                refuse(mhd, *conn, TransportError::body_too_large);
                return MHD_NO;
            }
            conn->body.append(upload_data, *upload_data_size);
            *upload_data_size = 0;
            return MHD_YES;
        }

        // Complete: from here on the time is ours, not the client's.
        deadlines->request_received(conn);
        Params params;
        if (auto error = collect_params(mhd, *conn, params)) return refuse(mhd, *conn, *error);
        ApiRequest request;
        request.params = std::move(params);
        conn->body.clear();
        return send_response(mhd, handle(*conn->caller, request));
    } catch (const std::exception&) {
        // Out of memory or a handler that broke its promise: drop the
        // connection rather than let anything unwind into libmicrohttpd.
        return MHD_NO;
    }
}

ParseOutcome HttpTransport::Impl::collect_params(MHD_Connection* mhd, Connection& conn, Params& params) {
    const std::string_view target(conn.target);
    if (const std::size_t question = target.find('?'); question != std::string_view::npos) {
        std::string_view query = target.substr(question + 1);
        query = query.substr(0, query.find('#'));
        if (auto error = parse_form(query, params)) return error;
    }
    if (conn.body.empty()) return std::nullopt;
    const std::string type = media_type(MHD_lookup_connection_value(mhd, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE));
    if (type == "application/x-www-form-urlencoded") return parse_form(conn.body, params);
    if (type == "application/json") return parse_json(conn.body, params);
    return TransportError::unsupported_media;
}

void HttpTransport::Impl::close_socket_file() {
    // Remove the file only if it is still the one we bound: a broker started
    // after us may have replaced it.
    struct stat st {};
    if (::lstat(options.socket_path.c_str(), &st) == 0 && st.st_dev == socket.device && st.st_ino == socket.inode) {
        ::unlink(options.socket_path.c_str());
    }
}

namespace {

MHD_Result access_callback(void* cls, MHD_Connection* connection, const char* /*url*/, const char* method,
                           const char* /*version*/, const char* upload_data, std::size_t* upload_data_size,
                           void** request_context) {
    return static_cast<HttpTransport::Impl*>(cls)->on_request(connection, method, upload_data, upload_data_size,
                                                             request_context);
}

// libmicrohttpd hands the access callback a path it has already unescaped
// leniently (and its parsed query arguments stop at a NUL); the raw target is
// only seen here, so it is kept for our own strict parsing.
void* uri_callback(void* /*cls*/, const char* uri, MHD_Connection* connection) {
    if (Connection* conn = connection_state(connection)) {
        try {
            conn->target.assign(uri);
        } catch (const std::bad_alloc&) {
            conn->target.clear();
        }
    }
    return nullptr;
}

void connection_callback(void* cls, MHD_Connection* connection, void** socket_context,
                         MHD_ConnectionNotificationCode event) {
    auto* self = static_cast<HttpTransport::Impl*>(cls);
    if (event == MHD_CONNECTION_NOTIFY_STARTED) {
        const MHD_ConnectionInfo* info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info == nullptr) return;  // no state: its requests are dropped unanswered
        auto* conn = new (std::nothrow) Connection;
        if (conn == nullptr) return;
        conn->fd = info->connect_fd;
        ucred peer{};
        socklen_t size = sizeof peer;
        if (::getsockopt(conn->fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) == 0) conn->peer = peer;
        *socket_context = conn;
        try {
            self->deadlines->add(conn);
        } catch (const std::bad_alloc&) {
            ::shutdown(conn->fd, SHUT_RDWR);  // unwatched connections are not served
        }
    } else if (event == MHD_CONNECTION_NOTIFY_CLOSED) {
        auto* conn = static_cast<Connection*>(*socket_context);
        if (conn == nullptr) return;
        self->deadlines->remove(conn);
        delete conn;
        *socket_context = nullptr;
    }
}

void completed_callback(void* cls, MHD_Connection* connection, void** /*request_context*/,
                        MHD_RequestTerminationCode /*why*/) {
    if (Connection* conn = connection_state(connection)) {
        static_cast<HttpTransport::Impl*>(cls)->deadlines->response_sent(conn);
    }
}

}  // namespace

Result<std::unique_ptr<HttpTransport>> HttpTransport::start(const HttpTransportOptions& options, Handler handle,
                                                            Rejecter reject) {
    if (!handle || !reject) return make_error(Errc::invalid_argument, "admin transport needs a handler and a rejecter");
    auto bound = bind_socket(options.socket_path, options.socket_mode);
    if (!bound) return bound.error();

    auto impl = std::make_unique<Impl>();
    impl->options = options;
    impl->handle = std::move(handle);
    impl->reject = std::move(reject);
    impl->socket = std::move(*bound);
    impl->deadlines = std::make_unique<RequestDeadlines>(std::chrono::seconds(options.connection_timeout_s));
    impl->deadlines->start();

    // libmicrohttpd owns the listening descriptor from here on and closes it
    // when stopped.
    const int listen_fd = impl->socket.fd.release();
    const unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC;
    // Its threads inherit the signal mask of the thread that creates them, so
    // they are created from a thread that blocks the broker's signals.
    MHD_Daemon* daemon = nullptr;
    spawn_thread([&] {
        daemon = MHD_start_daemon(flags, 0, nullptr, nullptr, &access_callback, impl.get(),
                                  MHD_OPTION_LISTEN_SOCKET, listen_fd,
                                  MHD_OPTION_CONNECTION_LIMIT, options.connection_limit,
                                  MHD_OPTION_CONNECTION_TIMEOUT, options.connection_timeout_s,
                                  MHD_OPTION_CONNECTION_MEMORY_LIMIT, static_cast<std::size_t>(64 * 1024),
                                  MHD_OPTION_URI_LOG_CALLBACK, &uri_callback, nullptr,
                                  MHD_OPTION_NOTIFY_CONNECTION, &connection_callback, impl.get(),
                                  MHD_OPTION_NOTIFY_COMPLETED, &completed_callback, impl.get(),
                                  MHD_OPTION_END);
    }).join();
    if (daemon == nullptr) {
        impl->deadlines->stop();
        impl->close_socket_file();
        return make_error(Errc::io_error,
                          fmt::format("cannot start serving the admin socket '{}'", options.socket_path));
    }
    impl->daemon = daemon;
    return std::unique_ptr<HttpTransport>(new HttpTransport(std::move(impl)));
}

HttpTransport::HttpTransport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpTransport::~HttpTransport() { stop(); }

void HttpTransport::stop() {
    std::lock_guard lock(impl_->stop_mutex);
    if (impl_->stopped) return;
    impl_->stopped = true;
    // Joins the polling thread and every connection thread; they use the
    // deadlines until the last connection is closed.
    MHD_stop_daemon(impl_->daemon);
    impl_->daemon = nullptr;
    impl_->deadlines->stop();
    impl_->close_socket_file();
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
}

}  // namespace devcert
