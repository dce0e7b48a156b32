// A strict HTTP/1.1 request reader for the admin socket: bytes in, a request
// or a typed refusal out, with every size capped. It does no I/O, so the
// server drives it from its connections and the fuzzer from a buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "devcert/api.hpp"

namespace devcert {

/// Request line and headers together (also the cap of a chunked body's
/// trailer section).
inline constexpr std::size_t kMaxRequestHead = 64 * 1024;
inline constexpr std::size_t kMaxHeaderFields = 100;
/// A chunk-size line, extensions included.
inline constexpr std::size_t kMaxChunkLine = 256;
/// A chunked body as sent, framing included.
inline constexpr std::size_t kMaxChunkedWire = 4 * kMaxRequestBody;

struct HttpRequest {
    std::string method;
    std::string target;  ///< as sent: path and query
    int minor_version = 1;  ///< HTTP/1.<minor_version>
    std::vector<std::pair<std::string, std::string>> headers;  ///< names in lower case
    std::string body;       ///< decoded (chunked framing removed)
    bool has_body = false;  ///< Content-Length or chunked framing was sent
    bool keep_alive = true;
    bool expect_continue = false;

    /// The value of the one field named `lower_name`, if sent.
    const std::string* header(std::string_view lower_name) const;
};

/// Reads one request after the other from the bytes of a connection.
class HttpRequestReader {
public:
    enum class State : std::uint8_t {
        need_more,   ///< append more bytes, then advance again
        head_ready,  ///< request line and headers parsed, a body follows (reported once per request)
        complete,    ///< request() is whole; next() moves on to the following request
        failed,      ///< error() says why; the connection cannot be read further
    };

    void append(std::string_view bytes);
    /// Parses as far as the bytes received allow.
    State advance();
    /// Whether a request has begun but is not complete (bytes beyond empty
    /// lines received): a peer that ends the connection here cut a request.
    bool partial() const noexcept;

    const HttpRequest& request() const noexcept { return request_; }
    TransportError error() const noexcept { return error_; }
    /// Drops the completed request, keeping any bytes of the next one.
    void next();

private:
    enum class Stage : std::uint8_t { head, body_length, chunk_size, chunk_data, chunk_end, trailers, done, failed };

    State fail(TransportError error);
    State parse_head(std::string_view head);
    State read_chunks();

    std::string buffer_;
    std::size_t scan_ = 0;    // where the search for the end of the head resumes
    std::size_t offset_ = 0;  // first byte of the buffer not yet consumed (body stages)
    std::size_t body_start_ = 0;
    std::uint64_t remaining_ = 0;  // of the Content-Length body or the current chunk
    Stage stage_ = Stage::head;
    HttpRequest request_;
    TransportError error_ = TransportError::malformed_request;
};

/// Reads one request from `bytes` as if they were all a connection sent
/// before closing it: the request, or why it is refused.
struct ParsedRequest {
    std::optional<HttpRequest> request;
    std::optional<TransportError> error;  ///< set when request is not
};
ParsedRequest parse_http_request(std::string_view bytes);

/// Turns a request that reached the end of its body into the Api's
/// parameters: the query string, then a form or JSON body. Refusals are
/// typed as the transport's (path, method, sizes, encoding, media type).
std::optional<TransportError> request_params(const HttpRequest& request,
                                             std::vector<std::pair<std::string, std::string>>& params);

/// The refusal due as soon as the head is read (path, method), if any.
std::optional<TransportError> refuse_head(const HttpRequest& request);

/// One whole HTTP/1.1 response with a JSON body.
std::string format_response(const ApiResponse& response, bool close);

}  // namespace devcert
