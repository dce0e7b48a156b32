// What the admin socket tests share: a short temporary directory for the
// socket, a libcurl client speaking HTTP over it, raw socket connections for
// the clients libcurl will not imitate, and a recording stand-in for the Api.
#pragma once

#include <curl/curl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "devcert/admin_server.hpp"
#include "devcert/api.hpp"
#include "devcert/handles.hpp"
#include "temp_dir.hpp"

namespace devcert::test {

struct HttpReply {
    CURLcode error = CURLE_OK;
    long status = 0;
    std::string body;
    std::string content_type;
    std::optional<std::string> retry_after;
};

struct HttpCall {
    std::string method = "GET";
    std::string target = "/";
    std::optional<std::string> body;          ///< sent with Content-Length
    std::optional<std::string> content_type;  ///< "" removes the header
    bool chunked = false;                     ///< send the body chunked instead
};

inline std::size_t collect_body(char* data, std::size_t size, std::size_t count, void* out) {
    static_cast<std::string*>(out)->append(data, size * count);
    return size * count;
}

inline std::size_t collect_header(char* data, std::size_t size, std::size_t count, void* out) {
    auto* reply = static_cast<HttpReply*>(out);
    std::string line(data, size * count);
    while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
    const auto colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        if (name == "content-type") reply->content_type = value;
        if (name == "retry-after") reply->retry_after = value;
    }
    return size * count;
}

struct ChunkSource {
    const std::string* data;
    std::size_t offset = 0;
};

inline std::size_t read_chunk(char* buffer, std::size_t size, std::size_t count, void* in) {
    auto* source = static_cast<ChunkSource*>(in);
    const std::size_t n = std::min(size * count, std::min<std::size_t>(4096, source->data->size() - source->offset));
    std::memcpy(buffer, source->data->data() + source->offset, n);
    source->offset += n;
    return n;
}

/// One request over the UNIX socket, on a fresh connection.
inline HttpReply http(const std::string& socket_path, const HttpCall& call) {
    HttpReply reply;
    // No Catch2 assertions here: clients run on several threads at once.
    CURL* curl = curl_easy_init();
    if (curl == nullptr) {
        reply.error = CURLE_FAILED_INIT;
        return reply;
    }
    const std::string url = "http://localhost" + call.target;
    curl_slist* headers = nullptr;
    ChunkSource source{call.body ? &*call.body : nullptr};
    curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, socket_path.c_str());
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, call.method.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, &collect_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, &collect_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &reply);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 20000L);
    headers = curl_slist_append(headers, "Expect:");
    if (call.content_type) headers = curl_slist_append(headers, ("Content-Type: " + *call.content_type).c_str());
    if (call.body && call.chunked) {
        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
        curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, &read_chunk);
        curl_easy_setopt(curl, CURLOPT_READDATA, &source);
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, call.method.c_str());
    } else if (call.body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(call.body->size()));
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call.body->data());
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    reply.error = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &reply.status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    return reply;
}

inline HttpReply http_get(const std::string& socket_path, const std::string& target) {
    HttpCall call;
    call.target = target;
    return http(socket_path, call);
}

inline HttpReply http_post(const std::string& socket_path, std::string body, std::string content_type,
                           std::string target = "/") {
    HttpCall call;
    call.method = "POST";
    call.target = std::move(target);
    call.body = std::move(body);
    call.content_type = std::move(content_type);
    return http(socket_path, call);
}

/// A plain connected socket, for clients that stall or hold connections.
inline UniqueFd raw_connect(const std::string& socket_path) {
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(fd);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
    REQUIRE(::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) == 0);
    return fd;
}

/// True once the server has closed the connection (read returns end of file
/// or a reset) within `limit`; data the server sends first is skipped.
inline bool closed_by_server_within(int fd, std::chrono::milliseconds limit) {
    timeval tv{0, 100'000};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const auto deadline = std::chrono::steady_clock::now() + limit;
    char buffer[4096];
    while (std::chrono::steady_clock::now() < deadline) {
        const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n == 0) return true;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return true;
    }
    return false;
}

inline const char* transport_error_name(TransportError error) {
    switch (error) {
        case TransportError::body_too_large: return "body_too_large";
        case TransportError::too_many_params: return "too_many_params";
        case TransportError::value_too_large: return "value_too_large";
        case TransportError::malformed_body: return "malformed_body";
        case TransportError::unsupported_media: return "unsupported_media";
        case TransportError::method_not_allowed: return "method_not_allowed";
        case TransportError::not_found: return "not_found";
        case TransportError::malformed_request: return "malformed_request";
        case TransportError::unsupported_version: return "unsupported_version";
        case TransportError::head_too_large: return "head_too_large";
    }
    return "?";
}

/// Stands in for the Api: records every call and refusal, answers 200 with
/// the parameter count, or 400 naming the refusal.
class Recorder {
public:
    struct Call {
        uid_t uid;
        gid_t gid;
        std::vector<std::pair<std::string, std::string>> params;
    };

    HttpTransport::Handler handler() {
        return [this](const Caller& caller, const ApiRequest& request) {
            std::lock_guard lock(mutex_);
            calls_.push_back(Call{caller.uid, caller.gid, request.params});
            ApiResponse response;
            response.http_status = next_status_;
            response.retry_after_s = next_retry_after_;
            response.body = "{\"Params\":\"" + std::to_string(request.params.size()) + "\"}";
            return response;
        };
    }
    HttpTransport::Rejecter rejecter() {
        return [this](const Caller&, TransportError error) {
            std::lock_guard lock(mutex_);
            rejections_.push_back(error);
            ApiResponse response;
            response.http_status = 400;
            response.body = std::string("{\"Code\":\"") + transport_error_name(error) + "\"}";
            return response;
        };
    }
    void answer_with(int status, std::optional<unsigned> retry_after) {
        std::lock_guard lock(mutex_);
        next_status_ = status;
        next_retry_after_ = retry_after;
    }
    std::vector<Call> calls() const {
        std::lock_guard lock(mutex_);
        return calls_;
    }
    std::vector<TransportError> rejections() const {
        std::lock_guard lock(mutex_);
        return rejections_;
    }

private:
    mutable std::mutex mutex_;
    std::vector<Call> calls_;
    std::vector<TransportError> rejections_;
    int next_status_ = 200;
    std::optional<unsigned> next_retry_after_;
};

/// A transport on a fresh socket in a fresh directory, wired to a Recorder.
struct RecordingServer {
    TempDir dir;
    std::string socket_path = dir.file("admin.sock");
    Recorder recorder;
    std::unique_ptr<HttpTransport> transport;

    explicit RecordingServer(HttpTransportOptions options = {}) {
        options.socket_path = socket_path;
        auto started = HttpTransport::start(options, recorder.handler(), recorder.rejecter());
        if (!started) FAIL("transport did not start: " << started.error().message);
        transport = std::move(*started);
    }
};

}  // namespace devcert::test
