#include "calls.hpp"

#include <curl/curl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <charconv>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "devcert/api.hpp"
#include "devcert/config.hpp"
#include "devcert/counters.hpp"
#include "devcert/store.hpp"
#include "devcert/store_writer.hpp"

namespace devcertctl {

namespace {

struct CurlDeleter {
    void operator()(CURL* curl) const noexcept { curl_easy_cleanup(curl); }
};
struct CurlCharDeleter {
    void operator()(char* text) const noexcept { curl_free(text); }
};

std::size_t collect(char* data, std::size_t size, std::size_t count, void* out) {
    static_cast<std::string*>(out)->append(data, size * count);
    return size * count;
}

std::string form_escape(CURL* curl, const std::string& text) {
    std::unique_ptr<char, CurlCharDeleter> escaped(curl_easy_escape(curl, text.data(), static_cast<int>(text.size())));
    if (!escaped) throw Unreachable{"out of memory while encoding the request"};
    return escaped.get();
}

}  // namespace

Reply call_socket(const std::string& socket_path, const std::string& action, const Params& params) {
    std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
    if (!curl) throw Unreachable{"cannot initialise libcurl"};
    std::string body = "Action=" + form_escape(curl.get(), action);
    for (const auto& [name, value] : params) {
        body += '&' + form_escape(curl.get(), name) + '=' + form_escape(curl.get(), value);
    }
    Reply reply;
    char error_text[CURL_ERROR_SIZE] = {};
    curl_easy_setopt(curl.get(), CURLOPT_UNIX_SOCKET_PATH, socket_path.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_URL, "http://localhost/");
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, &collect);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &reply.body);
    curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error_text);
    curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
    // The server answers at once; waiting for "100 Continue" would only add
    // a round trip for bodies over curl's threshold.
    curl_slist* headers = curl_slist_append(nullptr, "Expect:");
    curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
    const CURLcode rc = curl_easy_perform(curl.get());
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(curl.get(), CURLINFO_OS_ERRNO, &os_errno);
        const std::string reason = os_errno != 0 ? std::strerror(static_cast<int>(os_errno))
                                   : error_text[0] != '\0' ? std::string(error_text)
                                                            : std::string(curl_easy_strerror(rc));
        throw Unreachable{fmt::format("cannot reach the admin socket '{}': {}", socket_path, reason)};
    }
    long status = 0;
    curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
    reply.http_status = static_cast<int>(status);
    return reply;
}

std::unique_ptr<devcert::Store> open_existing_store(const std::string& db_dir) {
    // The directory must exist: a mistyped path must not quietly become a
    // new, empty store.
    devcert::StoreOptions options;
    options.path = db_dir;
    options.create = false;
    auto store = devcert::Store::open(options);
    if (!store) throw Unreachable{store.error().message};
    return std::move(store).value();
}

Reply call_store(const std::string& db_dir, const std::string& action, const Params& params) {
    using namespace devcert;
    const std::unique_ptr<Store> store = open_existing_store(db_dir);

    PluginConfig config;
    config.db_path = db_dir;
    // What the broker recorded at its last start: its instance id and CA
    // limit (a store no broker has opened keeps the defaults).
    std::optional<std::string> instance;
    std::optional<std::string> max_ca;
    const Outcome read = store->read([&](ReadView& view) -> Outcome {
        auto value = view.meta("instance_id");
        if (!value) return value.error();
        instance = std::move(*value);
        auto limit = view.meta("max_ca");
        if (!limit) return limit.error();
        max_ca = std::move(*limit);
        return Ok{};
    });
    if (!read) throw Unreachable{fmt::format("cannot read status store '{}': {}", db_dir, read.error().message)};
    if (instance && !instance->empty()) config.instance_id = *instance;
    if (max_ca) {
        const auto limit = recorded_max_ca(*max_ca);
        if (!limit) {
            throw Unreachable{fmt::format("status store '{}' records an unreadable max_ca '{}'", db_dir, *max_ca)};
        }
        config.max_ca = *limit;
    }

    StoreWriter writer(*store, [] {});
    AdminContext context;
    context.store = store.get();
    context.writer = &writer;
    context.config = &config;
    Reply reply = call_in_process(context, action, params);
    writer.stop();
    return reply;
}

Reply call_in_process(devcert::AdminContext context, const std::string& action, const Params& params) {
    using namespace devcert;
    Counters counters;
    OnlineRegistry online;
    context.counters = &counters;
    context.online = &online;
    auto api = Api::create(context);
    if (!api) throw Unreachable{api.error().message};
    (*api)->set_trust_all(true);

    ApiRequest request;
    request.params.emplace_back("Action", action);
    request.params.insert(request.params.end(), params.begin(), params.end());
    const ApiResponse response = (*api)->handle(Caller::from_ids(::getuid(), ::getgid()), request);
    return Reply{response.http_status, response.body};
}

std::optional<unsigned> recorded_max_ca(const std::string& text) {
    unsigned limit = 0;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(text.data(), end, limit);
    if (ec != std::errc{} || ptr != end || limit == 0) return std::nullopt;
    return limit;
}

}  // namespace devcertctl
