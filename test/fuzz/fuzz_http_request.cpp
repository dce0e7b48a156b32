// libFuzzer target: the admin socket's handling of a request up to dispatch.
// The input is what a client sends on one connection: the request line and
// headers, a Content-Length or chunked body, the query string, a form or
// JSON body, then each parameter checked against its operation's spec.
//
// The first byte picks how the bytes arrive (all at once, or in pieces of
// 1..255 bytes), so that the reader's incremental paths are covered; whatever
// the split, the outcome must be the same as reading them all at once.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "devcert/admin_server.hpp"
#include "devcert/api.hpp"
#include "devcert/http_request.hpp"
#include "devcert/operations.hpp"

namespace {

using namespace devcert;

void check(bool condition) {
    if (!condition) std::abort();
}

// Reads the first request from `bytes` in pieces of `piece` bytes.
ParsedRequest read_in_pieces(std::string_view bytes, std::size_t piece) {
    HttpRequestReader reader;
    ParsedRequest parsed;
    for (;;) {
        switch (reader.advance()) {
            case HttpRequestReader::State::head_ready: {
                check(!reader.request().method.empty());
                continue;
            }
            case HttpRequestReader::State::complete: parsed.request = reader.request(); return parsed;
            case HttpRequestReader::State::failed: parsed.error = reader.error(); return parsed;
            case HttpRequestReader::State::need_more:
                if (bytes.empty()) {
                    parsed.error = TransportError::malformed_request;
                    return parsed;
                }
                const std::size_t n = std::min(piece, bytes.size());
                reader.append(bytes.substr(0, n));
                bytes.remove_prefix(n);
                continue;
        }
    }
}

void dispatch(const HttpRequest& request) {
    check(request.body.size() <= kMaxRequestBody);
    std::vector<std::pair<std::string, std::string>> params;
    if (request_params(request, params)) return;
    check(params.size() <= kMaxRequestParams);
    const std::string* action = nullptr;
    for (const auto& [name, value] : params) {
        check(name.size() <= kMaxParamValue && value.size() <= kMaxParamValue);
        check(name.find('\0') == std::string::npos && value.find('\0') == std::string::npos);
        if (name == "Action" && action == nullptr) action = &value;
    }
    if (action == nullptr) return;
    const Operation* op = find_operation(*action);
    if (op == nullptr) return;
    for (const auto& [name, value] : params) {
        if (const ParamSpec* spec = find_param(*op, name)) {
            (void)validate_param(*spec, value);
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::size_t piece = data[0] == 0 ? size : data[0];
    const std::string_view bytes(reinterpret_cast<const char*>(data) + 1, size - 1);

    const ParsedRequest whole = parse_http_request(bytes);
    const ParsedRequest pieces = read_in_pieces(bytes, piece);
    check(whole.request.has_value() != whole.error.has_value());
    check(whole.request.has_value() == pieces.request.has_value());
    if (whole.error) {
        check(*whole.error == *pieces.error);
        return 0;
    }
    check(whole.request->body == pieces.request->body);
    check(whole.request->target == pieces.request->target);
    dispatch(*whole.request);

    // The response to it is one HTTP message whatever the body holds.
    ApiResponse response;
    response.http_status = 400;
    response.body = whole.request->target;
    const std::string out = format_response(response, !whole.request->keep_alive);
    check(out.find("\r\n\r\n") != std::string::npos);
    return 0;
}
