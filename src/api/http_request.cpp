// The admin socket's HTTP/1.1 request reader and the parameters of a
// request. Strict where leniency could let two readers of the same bytes
// disagree (Content-Length with chunked, repeated lengths, folded headers,
// bare CR or LF), and capped everywhere.
#include "devcert/http_request.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace devcert {

namespace {

using Params = std::vector<std::pair<std::string, std::string>>;
using ParseOutcome = std::optional<TransportError>;  // nullopt: parsed

constexpr std::string_view kCrlf = "\r\n";

bool is_tchar(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) != 0 && u < 0x80) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) noexcept { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

// Field values: visible characters, spaces and tabs, and bytes >= 0x80.
bool is_field_value(std::string_view s) noexcept {
    return std::all_of(s.begin(), s.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return c == '\t' || (c >= 0x20 && c != 0x7f);
    });
}

std::string_view trim(std::string_view s) noexcept {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
               return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
           });
}

// Calls `each` with every element of a comma-separated list, trimmed.
template <typename F>
void for_each_element(std::string_view list, F each) {
    while (!list.empty()) {
        const std::size_t comma = list.find(',');
        each(trim(list.substr(0, comma)));
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
}

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

std::string media_type(const std::string* content_type) {
    if (content_type == nullptr) return {};
    std::string_view value(*content_type);
    value = value.substr(0, value.find(';'));
    std::string type;
    for (char c : value) {
        if (c != ' ' && c != '\t') type.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
    return type;
}

const char* reason_phrase(int status) {
    switch (status) {
        case 100: return "Continue";
        case 200: return "OK";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 413: return "Content Too Large";
        case 415: return "Unsupported Media Type";
        case 429: return "Too Many Requests";
        case 500: return "Internal Server Error";
        case 503: return "Service Unavailable";
        default: return "Unknown";
    }
}

}  // namespace

const std::string* HttpRequest::header(std::string_view lower_name) const {
    for (const auto& [name, value] : headers) {
        if (name == lower_name) return &value;
    }
    return nullptr;
}

void HttpRequestReader::append(std::string_view bytes) { buffer_.append(bytes); }

bool HttpRequestReader::partial() const noexcept {
    if (stage_ != Stage::head) return stage_ != Stage::done;
    return buffer_.find_first_not_of(kCrlf) != std::string::npos;
}

void HttpRequestReader::next() {
    buffer_.erase(0, std::min(offset_, buffer_.size()));
    scan_ = 0;
    offset_ = 0;
    body_start_ = 0;
    remaining_ = 0;
    stage_ = Stage::head;
    request_ = HttpRequest{};
}

HttpRequestReader::State HttpRequestReader::fail(TransportError error) {
    stage_ = Stage::failed;
    error_ = error;
    return State::failed;
}

HttpRequestReader::State HttpRequestReader::advance() {
    switch (stage_) {
        case Stage::failed: return State::failed;
        case Stage::done: return State::complete;
        case Stage::head: {
            // Empty lines before a request are skipped (RFC 9112 2.2), so that
            // a client's stray CRLF after a body does not start a bad request.
            std::size_t start = 0;
            while (buffer_.compare(start, 2, kCrlf) == 0) start += 2;
            if (start > 0) {
                buffer_.erase(0, start);
                scan_ = 0;
            }
            const std::size_t from = scan_ >= 3 ? scan_ - 3 : 0;
            const std::size_t end = buffer_.find("\r\n\r\n", from);
            if (end == std::string::npos) {
                scan_ = buffer_.size();
                if (buffer_.size() > kMaxRequestHead) return fail(TransportError::head_too_large);
                return State::need_more;
            }
            if (end + 4 > kMaxRequestHead) return fail(TransportError::head_too_large);
            offset_ = end + 4;
            if (const State state = parse_head(std::string_view(buffer_).substr(0, end + 2));
                state == State::failed) {
                return state;
            }
            body_start_ = offset_;
            return stage_ == Stage::done ? State::complete : State::head_ready;
        }
        case Stage::body_length: {
            const std::size_t available = buffer_.size() - offset_;
            if (available < remaining_) return State::need_more;
            request_.body.assign(buffer_, offset_, static_cast<std::size_t>(remaining_));
            offset_ += static_cast<std::size_t>(remaining_);
            remaining_ = 0;
            stage_ = Stage::done;
            return State::complete;
        }
        case Stage::chunk_size:
        case Stage::chunk_data:
        case Stage::chunk_end:
        case Stage::trailers: return read_chunks();
    }
    return fail(TransportError::malformed_request);
}

// `head` is the request line and every header line, each with its CRLF.
HttpRequestReader::State HttpRequestReader::parse_head(std::string_view head) {
    if (head.find('\0') != std::string_view::npos) return fail(TransportError::malformed_request);
    std::size_t eol = head.find(kCrlf);
    const std::string_view line = head.substr(0, eol);
    head.remove_prefix(eol + 2);
    if (line.find_first_of("\r\n") != std::string_view::npos) return fail(TransportError::malformed_request);

    // method SP request-target SP HTTP-version. A space inside the target
    // is taken as part of it (RFC 9112 3.2 allows the leniency, and it is
    // what callers met before: `Action=X ` is an unknown Action, not a bad
    // request); nothing else outside visible ASCII is.
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = line.rfind(' ');
    if (sp1 == std::string_view::npos || sp2 == sp1) return fail(TransportError::malformed_request);
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (!is_token(method) || method.size() > 32) return fail(TransportError::malformed_request);
    if (target.empty() || target.front() == ' ' || target.back() == ' ' ||
        !std::all_of(target.begin(), target.end(), [](char c) {
            const auto u = static_cast<unsigned char>(c);
            return u >= 0x20 && u < 0x7f;
        })) {
        return fail(TransportError::malformed_request);
    }
    if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' ||
        std::isdigit(static_cast<unsigned char>(version[5])) == 0 ||
        std::isdigit(static_cast<unsigned char>(version[7])) == 0) {
        return fail(TransportError::malformed_request);
    }
    if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) return fail(TransportError::unsupported_version);
    request_.method.assign(method);
    request_.target.assign(target);
    request_.minor_version = version[7] - '0';

    // field-name ":" OWS field-value OWS, one per line, no folding.
    while (!head.empty()) {
        eol = head.find(kCrlf);
        const std::string_view field = head.substr(0, eol);
        head.remove_prefix(eol + 2);
        const std::size_t colon = field.find(':');
        if (colon == std::string_view::npos || !is_token(field.substr(0, colon))) {
            return fail(TransportError::malformed_request);
        }
        const std::string_view value = trim(field.substr(colon + 1));
        if (!is_field_value(value) || field.find_first_of("\r\n") != std::string_view::npos) {
            return fail(TransportError::malformed_request);
        }
        if (request_.headers.size() >= kMaxHeaderFields) return fail(TransportError::head_too_large);
        request_.headers.emplace_back(lower(field.substr(0, colon)), std::string(value));
    }

    // Framing: a Content-Length of digits, or chunked, never both, never
    // twice: a length two readers could read differently is refused.
    const std::string* length = nullptr;
    const std::string* encoding = nullptr;
    bool close = false;
    bool keep_alive = false;
    for (const auto& [name, value] : request_.headers) {
        if (name == "content-length") {
            if (length != nullptr) return fail(TransportError::malformed_request);
            length = &value;
        } else if (name == "transfer-encoding") {
            if (encoding != nullptr) return fail(TransportError::malformed_request);
            encoding = &value;
        } else if (name == "connection") {
            for_each_element(value, [&](std::string_view option) {
                close = close || equals_ignoring_case(option, "close");
                keep_alive = keep_alive || equals_ignoring_case(option, "keep-alive");
            });
        } else if (name == "expect") {
            request_.expect_continue = equals_ignoring_case(value, "100-continue");
        }
    }
    // HTTP/1.1 keeps the connection unless told to close, HTTP/1.0 closes it
    // unless told to keep it; a "close" wins.
    request_.keep_alive = !close && (request_.minor_version == 1 || keep_alive);
    if (length != nullptr && encoding != nullptr) return fail(TransportError::malformed_request);
    if (encoding != nullptr) {
        if (request_.minor_version == 0 || !equals_ignoring_case(*encoding, "chunked")) {
            return fail(TransportError::malformed_request);
        }
        request_.has_body = true;
        stage_ = Stage::chunk_size;
        return State::head_ready;
    }
    if (length != nullptr) {
        if (length->empty() || !std::all_of(length->begin(), length->end(), [](char c) { return c >= '0' && c <= '9'; })) {
            return fail(TransportError::malformed_request);
        }
        std::uint64_t declared = 0;
        const auto [end, ec] = std::from_chars(length->data(), length->data() + length->size(), declared);
        if (ec == std::errc::result_out_of_range || declared > kMaxRequestBody) {
            return fail(TransportError::body_too_large);
        }
        if (ec != std::errc{} || end != length->data() + length->size()) return fail(TransportError::malformed_request);
        request_.has_body = true;
        remaining_ = declared;
        stage_ = Stage::body_length;
        return State::head_ready;
    }
    stage_ = Stage::done;
    return State::complete;
}

HttpRequestReader::State HttpRequestReader::read_chunks() {
    for (;;) {
        if (offset_ - body_start_ > kMaxChunkedWire) return fail(TransportError::body_too_large);
        const std::string_view rest = std::string_view(buffer_).substr(offset_);
        switch (stage_) {
            case Stage::chunk_size: {
                const std::size_t eol = rest.find(kCrlf);
                if (eol == std::string_view::npos) {
                    if (rest.size() > kMaxChunkLine) return fail(TransportError::malformed_request);
                    return State::need_more;
                }
                if (eol > kMaxChunkLine) return fail(TransportError::malformed_request);
                const std::string_view line = rest.substr(0, eol);
                // chunk-size [ chunk-ext ]: the extensions are ignored, but
                // must not hide a line break.
                const std::size_t digits = std::min(line.find_first_not_of("0123456789abcdefABCDEF"), line.size());
                if (digits == 0) return fail(TransportError::malformed_request);
                const std::string_view ext = line.substr(digits);
                if (!ext.empty() && ext.front() != ';' && ext.front() != ' ' && ext.front() != '\t') {
                    return fail(TransportError::malformed_request);
                }
                if (!is_field_value(ext)) return fail(TransportError::malformed_request);
                std::uint64_t size = 0;
                for (char c : line.substr(0, digits)) {
                    size = size * 16 + static_cast<std::uint64_t>(hex_digit(c));
                    if (size > kMaxRequestBody) return fail(TransportError::body_too_large);
                }
                if (request_.body.size() + size > kMaxRequestBody) return fail(TransportError::body_too_large);
                offset_ += eol + 2;
                remaining_ = size;
                stage_ = size == 0 ? Stage::trailers : Stage::chunk_data;
                break;
            }
            case Stage::chunk_data: {
                if (rest.empty()) return State::need_more;
                const std::size_t take = std::min<std::size_t>(rest.size(), static_cast<std::size_t>(remaining_));
                request_.body.append(rest.substr(0, take));
                offset_ += take;
                remaining_ -= take;
                if (remaining_ == 0) stage_ = Stage::chunk_end;
                break;
            }
            case Stage::chunk_end: {
                if (rest.size() < 2) return State::need_more;
                if (rest.substr(0, 2) != kCrlf) return fail(TransportError::malformed_request);
                offset_ += 2;
                stage_ = Stage::chunk_size;
                break;
            }
            case Stage::trailers: {
                // Trailer fields are read and dropped; they end with an empty line.
                const std::size_t eol = rest.find(kCrlf);
                if (eol == std::string_view::npos) {
                    if (rest.size() > kMaxRequestHead) return fail(TransportError::head_too_large);
                    return State::need_more;
                }
                if (eol > kMaxRequestHead) return fail(TransportError::head_too_large);
                const std::string_view field = rest.substr(0, eol);
                offset_ += eol + 2;
                if (field.empty()) {
                    stage_ = Stage::done;
                    return State::complete;
                }
                const std::size_t colon = field.find(':');
                if (colon == std::string_view::npos || !is_token(field.substr(0, colon)) ||
                    !is_field_value(field.substr(colon + 1))) {
                    return fail(TransportError::malformed_request);
                }
                break;
            }
            case Stage::head:
            case Stage::body_length:
            case Stage::done:
            case Stage::failed: return advance();
        }
    }
}

ParsedRequest parse_http_request(std::string_view bytes) {
    HttpRequestReader reader;
    reader.append(bytes);
    ParsedRequest parsed;
    for (;;) {
        switch (reader.advance()) {
            case HttpRequestReader::State::head_ready: continue;
            case HttpRequestReader::State::complete: parsed.request = reader.request(); return parsed;
            case HttpRequestReader::State::failed: parsed.error = reader.error(); return parsed;
            case HttpRequestReader::State::need_more:
                // The connection ended here.
                parsed.error = TransportError::malformed_request;
                return parsed;
        }
    }
}

std::optional<TransportError> refuse_head(const HttpRequest& request) {
    const std::string_view target(request.target);
    if (target.substr(0, target.find('?')) != "/") return TransportError::not_found;
    if (request.method != "GET" && request.method != "POST") return TransportError::method_not_allowed;
    return std::nullopt;
}

std::optional<TransportError> request_params(const HttpRequest& request, Params& params) {
    if (auto refused = refuse_head(request)) return refused;
    const std::string_view target(request.target);
    if (const std::size_t question = target.find('?'); question != std::string_view::npos) {
        std::string_view query = target.substr(question + 1);
        query = query.substr(0, query.find('#'));
        if (auto error = parse_form(query, params)) return error;
    }
    if (request.body.empty()) return std::nullopt;
    const std::string type = media_type(request.header("content-type"));
    if (type == "application/x-www-form-urlencoded") return parse_form(request.body, params);
    if (type == "application/json") return parse_json(request.body, params);
    return TransportError::unsupported_media;
}

std::string format_response(const ApiResponse& response, bool close) {
    std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                                  response.http_status, reason_phrase(response.http_status), response.body.size());
    if (response.retry_after_s) out += fmt::format("Retry-After: {}\r\n", *response.retry_after_s);
    if (close) out += "Connection: close\r\n";
    out += "\r\n";
    out += response.body;
    return out;
}

}  // namespace devcert
