// Api::handle: the check order of every call, and the one place where calls
// are counted, audited and turned into HTTP responses.
#include "devcert/api.hpp"

#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <nlohmann/json.hpp>
#include <variant>

#include "devcert/api_errors.hpp"
#include "devcert/operations.hpp"
#include "devcert/policy.hpp"
#include "devcert/rate_limiter.hpp"
#include "operation_call.hpp"
#include "params.hpp"

namespace devcert {

using nlohmann::json;

namespace {

// Counter and audit label for calls whose Action is not an operation.
constexpr std::string_view kUnknownOperation = "unknown";

bool plain_word(std::string_view s) {
    return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0;
    });
}

// Audit lines go to the broker log: nothing a client sent may break the
// line or forge another one.
std::string loggable(std::string_view s, std::size_t cap = 200) {
    std::string out;
    out.reserve(std::min(s.size(), cap));
    for (char ch : s.substr(0, cap)) {
        const auto c = static_cast<unsigned char>(ch);
        out.push_back(c < 0x20 || c == 0x7f || c == '|' ? '?' : ch);
    }
    if (s.size() > cap) out += "...";
    return out;
}

// "CaSn" -> "ca_sn", "PageNo" -> "page_no".
std::string snake_case(std::string_view name) {
    std::string out;
    for (std::size_t i = 0; i < name.size(); ++i) {
        const auto c = static_cast<unsigned char>(name[i]);
        if (std::isupper(c) && i > 0) out.push_back('_');
        out.push_back(static_cast<char>(std::tolower(c)));
    }
    return out;
}

// The validated parameters worth a line in the log: identities and choices,
// not the instance (always this one) nor certificate contents.
std::string audit_params(const Operation& op, const Params& params) {
    std::string out;
    for (const auto& [name, value] : params.all()) {
        const ParamSpec* spec = find_param(op, name);
        if (spec == nullptr || spec->kind == ParamKind::pem || name == "MqttInstanceId") continue;
        if (!out.empty()) out.push_back(' ');
        const bool bare = std::all_of(value.begin(), value.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_' || c == '.';
        });
        out += snake_case(name);
        out.push_back('=');
        out += bare ? value : json(value).dump(-1, ' ', true, json::error_handler_t::replace);
    }
    return out;
}

const char* transport_detail(TransportError error) {
    switch (error) {
        case TransportError::body_too_large: return "request body over 64 KiB";
        case TransportError::too_many_params: return "more than 64 parameters";
        case TransportError::value_too_large: return "a parameter value over 8 KiB";
        case TransportError::malformed_body: return "malformed request body";
        case TransportError::unsupported_media: return "unsupported content type";
        case TransportError::method_not_allowed: return "method not allowed";
        case TransportError::not_found: return "no such path";
        case TransportError::malformed_request: return "malformed HTTP request";
        case TransportError::unsupported_version: return "unsupported HTTP version";
        case TransportError::head_too_large: return "request line and headers over 64 KiB";
    }
    return "refused by the transport";
}

ApiError transport_api_error(TransportError error) {
    switch (error) {
        case TransportError::body_too_large: return ApiError::request_too_large;
        case TransportError::too_many_params: return ApiError::parameter_invalid;
        case TransportError::value_too_large: return ApiError::parameter_invalid;
        case TransportError::malformed_body: return ApiError::parameter_invalid;
        case TransportError::unsupported_media: return ApiError::unsupported_media_type;
        case TransportError::method_not_allowed: return ApiError::method_not_allowed;
        case TransportError::not_found: return ApiError::action_not_found;
        case TransportError::malformed_request: return ApiError::parameter_invalid;
        case TransportError::unsupported_version: return ApiError::parameter_invalid;
        case TransportError::head_too_large: return ApiError::request_too_large;
    }
    return ApiError::parameter_invalid;
}

std::string dump(const json& body) { return body.dump(-1, ' ', false, json::error_handler_t::replace); }

// What one call produced, before it becomes a response.
struct CallRecord {
    std::string request_id = new_request_id();
    std::string_view operation = kUnknownOperation;
    std::string params = "-";
    std::optional<ApiError> error;
    std::string detail;
    std::optional<unsigned> retry_after_s;
    json fields = json::object();
};

// Audit lines of refused calls, per uid and second: the first
// kRefusedAuditLinesPerSecond are written, the rest counted by code into
// one summary line when the second is over, so that a caller refused in a
// loop cannot flood the broker log.
class RefusalAudit {
public:
    using Clock = std::chrono::steady_clock;

    /// Whether the refusal of `caller` with `code` at `now` gets its own
    /// line; `write` receives a summary line due before it.
    template <typename Write>
    bool admit(const Caller& caller, std::string_view code, Clock::time_point now, Write write) {
        std::lock_guard lock(mutex_);
        auto it = windows_.find(caller.uid);
        if (it != windows_.end() && now - it->second.start >= std::chrono::seconds(1)) {
            summarize(caller.uid, it->second, write);
            windows_.erase(it);
            it = windows_.end();
        }
        if (it == windows_.end()) {
            if (windows_.size() >= kMaxTrackedUids) return true;  // never more than this many uids a second
            it = windows_.emplace(caller.uid, Window{now, 0, {}, caller.describe()}).first;
        }
        Window& window = it->second;
        if (window.logged < kRefusedAuditLinesPerSecond) {
            ++window.logged;
            return true;
        }
        ++window.suppressed[std::string(code)];
        return false;
    }

    /// Writes the summaries of the seconds that are over (all when `all`)
    /// and forgets them.
    template <typename Write>
    void flush(Clock::time_point now, bool all, Write write) {
        std::lock_guard lock(mutex_);
        for (auto it = windows_.begin(); it != windows_.end();) {
            if (all || now - it->second.start >= std::chrono::seconds(1)) {
                summarize(it->first, it->second, write);
                it = windows_.erase(it);
            } else {
                ++it;
            }
        }
    }

private:
    static constexpr std::size_t kMaxTrackedUids = 4096;

    struct Window {
        Clock::time_point start;
        unsigned logged = 0;
        std::map<std::string, std::uint64_t, std::less<>> suppressed;  // code -> calls
        std::string who;
    };

    template <typename Write>
    static void summarize(uid_t, const Window& window, Write& write) {
        if (window.suppressed.empty()) return;
        std::uint64_t total = 0;
        std::string counts;
        for (const auto& [code, n] : window.suppressed) {
            total += n;
            counts += fmt::format(" {}={}", code, n);
        }
        write(fmt::format("devcert: admin {} | refused | - | {} more refused within 1 s, not logged one by one:{} | "
                          "request_id=-",
                          loggable(window.who), total, counts));
    }

    std::mutex mutex_;
    std::unordered_map<uid_t, Window> windows_;
};

}  // namespace

struct Api::Impl {
    AdminContext context;
    SteadyClock clock;
    RateLimiter limiter;
    RefusalAudit refusals;
    std::atomic<bool> trust_all{false};

    Impl(const AdminContext& c, AccessPolicy p, unsigned rate, SteadyClock steady)
        : context(c),
          clock(steady ? std::move(steady) : SteadyClock([] { return std::chrono::steady_clock::now(); })),
          limiter(rate, clock),
          policy_(std::make_shared<const AccessPolicy>(std::move(p))) {}

    /// The policy a call runs under from start to end, even if a reload
    /// replaces it meanwhile.
    std::shared_ptr<const AccessPolicy> policy() const {
        std::lock_guard lock(policy_mutex_);
        return policy_;
    }
    void replace_policy(AccessPolicy fresh) {
        auto next = std::make_shared<const AccessPolicy>(std::move(fresh));
        std::lock_guard lock(policy_mutex_);
        policy_.swap(next);
    }

private:
    mutable std::mutex policy_mutex_;
    std::shared_ptr<const AccessPolicy> policy_;  // guarded by policy_mutex_

public:

    void run(const Caller& caller, const ApiRequest& request, CallRecord& call);
    ApiResponse finish(const Caller& caller, CallRecord& call) noexcept;
};

void Api::Impl::run(const Caller& caller, const ApiRequest& request, CallRecord& call) {
    const std::string* action = nullptr;
    for (const auto& [name, value] : request.params) {
        if (name == "Action") {
            action = &value;
            break;
        }
    }
    const Operation* op = action != nullptr ? find_operation(*action) : nullptr;
    if (op != nullptr) call.operation = op->name;
    const bool trusted = trust_all.load(std::memory_order_relaxed);
    const auto policy = this->policy();

    auto fail = [&call](ApiError e, std::string detail = {}) {
        call.error = e;
        call.detail = std::move(detail);
    };

    if (!trusted) {
        if (auto wait = limiter.acquire(caller.uid)) {
            call.retry_after_s = *wait;
            return fail(ApiError::throttled, fmt::format("over {} calls per second", context.config->admin_rate_limit));
        }
    }
    if (!trusted && !caller.lookup_error.empty()) {
        // Part of the identity is missing: a Deny naming the missing part
        // would not apply, so nothing is judged.
        return fail(ApiError::permission_denied, caller.lookup_error);
    }
    if (op == nullptr) {
        if (action == nullptr) return fail(ApiError::action_not_found, "Action: missing");
        if (plain_word(*action)) call.params = fmt::format("action={}", *action);
        return fail(ApiError::action_not_found, "Action: not an operation");
    }
    if (!trusted && policy->check_permission(caller, op->permission) != PolicyDecision::allow) {
        return fail(ApiError::permission_denied, fmt::format("{} lacks {}", caller.describe(), op->permission));
    }
    auto validated = validate_request(*op, request);
    if (auto* refused = std::get_if<ParamFailure>(&validated)) return fail(ApiError::parameter_invalid, refused->detail);
    const Params& params = std::get<Params>(validated);
    if (auto audit = audit_params(*op, params); !audit.empty()) call.params = std::move(audit);

    if (params.text("MqttInstanceId") != context.config->instance_id) {
        return fail(ApiError::instance_not_found, "MqttInstanceId: not this broker's instance");
    }
    if (!trusted && policy->check(caller, op->permission, context.config->instance_id) != PolicyDecision::allow) {
        return fail(ApiError::instance_permission_denied,
                    fmt::format("{} lacks {} on instance {}", caller.describe(), op->permission, context.config->instance_id));
    }

    OperationCall operation(context, params, trusted ? "devcertctl " + caller.describe() : caller.describe());
    op->handler(operation);
    if (operation.error) return fail(*operation.error, std::move(operation.detail));
    call.fields = std::move(operation.response);
    // A call with no loggable parameter (RegisterDeviceCertificate without
    // Status) has only the record it created to show: no "-" in front of it.
    const std::size_t extra = operation.audit_extra.find_first_not_of(' ');
    if (extra == std::string::npos) return;
    if (call.params == "-") {
        call.params = operation.audit_extra.substr(extra);
    } else {
        call.params += operation.audit_extra;
    }
}

ApiResponse Api::Impl::finish(const Caller& caller, CallRecord& call) noexcept {
    ApiResponse response;
    try {
        json body = call.error ? json{{"Code", api_error_info(*call.error).code},
                                      {"Message", api_error_info(*call.error).message}}
                               : std::move(call.fields);
        if (call.error && !call.detail.empty()) body["Detail"] = call.detail;
        body["RequestId"] = call.request_id;
        response.http_status = call.error ? api_error_info(*call.error).http_status : 200;
        response.body = dump(body);
        response.retry_after_s = call.retry_after_s;

        const std::string_view result = call.error ? api_error_info(*call.error).code : std::string_view("Success");
        if (context.counters != nullptr) context.counters->admin_call(call.operation, result);
        if (context.audit && (!call.error || refusals.admit(caller, result, clock(), [this](std::string line) {
                                  context.audit(std::move(line));
                              }))) {
            std::string outcome = call.error ? fmt::format("error {}", result) : std::string("ok");
            if (call.error && !call.detail.empty()) outcome += fmt::format(" ({})", loggable(call.detail));
            context.audit(fmt::format("devcert: admin {} | {} | {} | {} | request_id={}", loggable(caller.describe()),
                                      call.operation, loggable(call.params, 600), outcome, call.request_id));
        }
    } catch (...) {
        // Out of memory while describing the outcome: still answer.
        response.http_status = 500;
        response.body = R"({"Code":"InternalError","Message":"An error occurred while processing your request. Try again later."})";
        response.retry_after_s.reset();
    }
    return response;
}

Result<std::unique_ptr<Api>> Api::create(const AdminContext& context) { return create(context, ApiOptions{}); }

Result<std::unique_ptr<Api>> Api::create(const AdminContext& context, ApiOptions options) {
    if ((context.store == nullptr && context.records == nullptr) || context.config == nullptr) {
        return make_error(Errc::invalid_argument, "admin api needs a status store (or records) and a configuration");
    }
    auto policy = context.config->admin_policy.empty() ? Result<AccessPolicy>(AccessPolicy::builtin(::geteuid()))
                                                       : AccessPolicy::load(context.config->admin_policy);
    if (!policy) return policy.error();
    auto impl = std::make_unique<Impl>(context, std::move(policy).value(), context.config->admin_rate_limit,
                                       std::move(options.clock));
    return std::unique_ptr<Api>(new Api(std::move(impl)));
}

Api::Api(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Api::~Api() = default;

Result<std::size_t> Api::reload_policy() {
    const std::string& path = impl_->context.config->admin_policy;
    if (path.empty()) return make_error(Errc::invalid_argument, "no admin policy file: the built-in policy stays");
    auto fresh = AccessPolicy::load(path);
    if (!fresh) return fresh.error();
    const std::size_t statements = fresh->statement_count();
    impl_->replace_policy(std::move(fresh).value());
    return statements;
}

void Api::flush_audit(bool all) noexcept {
    if (!impl_->context.audit) return;
    try {
        impl_->refusals.flush(impl_->clock(), all, [this](std::string line) { impl_->context.audit(std::move(line)); });
    } catch (...) {
        // Out of memory: the summary is lost, the calls were counted.
    }
}

void Api::set_trust_all(bool trust) noexcept { impl_->trust_all.store(trust, std::memory_order_relaxed); }

ApiResponse Api::handle(const Caller& caller, const ApiRequest& request) noexcept {
    try {
        CallRecord call;
        try {
            impl_->run(caller, request, call);
        } catch (const std::exception& e) {
            call.error = ApiError::internal_error;
            call.detail = loggable(e.what());
            call.fields = json::object();
        } catch (...) {
            call.error = ApiError::internal_error;
            call.fields = json::object();
        }
        return impl_->finish(caller, call);
    } catch (...) {
        ApiResponse response;
        response.http_status = 500;
        response.body = R"({"Code":"InternalError","Message":"An error occurred while processing your request. Try again later."})";
        return response;
    }
}

ApiResponse Api::reject(const Caller& caller, TransportError error) noexcept {
    try {
        CallRecord call;
        call.error = transport_api_error(error);
        call.detail = transport_detail(error);
        return impl_->finish(caller, call);
    } catch (...) {
        ApiResponse response;
        response.http_status = 500;
        response.body = R"({"Code":"InternalError","Message":"An error occurred while processing your request. Try again later."})";
        return response;
    }
}

}  // namespace devcert
