#include "devcert/policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <charconv>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "devcert/api.hpp"

namespace devcert {

using nlohmann::json;

namespace {

constexpr std::size_t kMaxPolicyBytes = 1 << 20;

// Records where a parse failed: nlohmann's non-throwing parse() says only
// that it failed, its SAX interface also says where.
struct ErrorPositionSax : nlohmann::json_sax<json> {
    std::size_t position = 0;
    std::string reason;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t pos, const std::string& last_token, const nlohmann::detail::exception& ex) override {
        position = pos;
        reason = ex.what();
        // The library's text starts with "[json.exception.parse_error.101] parse error at line 1, column 2: ".
        if (auto colon = reason.find(": "); colon != std::string::npos) reason.erase(0, colon + 2);
        (void)last_token;
        return false;
    }
};

std::size_t line_of(std::string_view text, std::size_t position) {
    // position counts the characters read, the offending one included.
    const std::size_t end = std::min(text.size(), position == 0 ? 0 : position - 1);
    return 1 + static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(end), '\n'));
}

struct ShapeError {
    std::string what;
};

std::string quoted(const json& value) {
    std::string dumped = value.dump(-1, ' ', false, json::error_handler_t::replace);
    if (dumped.size() > 40) dumped = dumped.substr(0, 37) + "...";
    return dumped;
}

// A string or a non-empty list of non-empty strings.
std::vector<std::string> string_list(const json& value, const std::string& where) {
    std::vector<std::string> out;
    if (value.is_string()) {
        out.push_back(value.get<std::string>());
    } else if (value.is_array()) {
        for (std::size_t i = 0; i < value.size(); ++i) {
            if (!value[i].is_string()) throw ShapeError{fmt::format("{}[{}] must be a string, not {}", where, i, quoted(value[i]))};
            out.push_back(value[i].get<std::string>());
        }
    } else {
        throw ShapeError{fmt::format("{} must be a string or a list of strings", where)};
    }
    if (out.empty()) throw ShapeError{fmt::format("{} must not be empty", where)};
    for (const auto& s : out) {
        if (s.empty()) throw ShapeError{fmt::format("{} must not hold an empty string", where)};
    }
    return out;
}

uid_t uid_value(const json& value, const std::string& where) {
    if (value.is_number_unsigned()) {
        const auto n = value.get<std::uint64_t>();
        if (n <= std::numeric_limits<uid_t>::max()) return static_cast<uid_t>(n);
    } else if (value.is_string()) {
        const auto s = value.get<std::string>();
        uid_t n = 0;
        auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
        if (!s.empty() && ec == std::errc{} && end == s.data() + s.size()) return n;
    }
    throw ShapeError{fmt::format("{} must be a uid (a non-negative integer), not {}", where, quoted(value))};
}

AccessPolicy::Principal principal_of(const json& value, const std::string& where) {
    AccessPolicy::Principal principal;
    if (value.is_string() && value.get<std::string>() == "*") {
        principal.anyone = true;
        return principal;
    }
    if (!value.is_object()) throw ShapeError{fmt::format("{} must be \"*\" or an object with user, group, uid lists", where)};
    for (const auto& [key, entry] : value.items()) {
        const std::string at = where + "." + key;
        if (key == "user") {
            principal.users = string_list(entry, at);
        } else if (key == "group") {
            principal.groups = string_list(entry, at);
        } else if (key == "uid") {
            if (entry.is_array()) {
                if (entry.empty()) throw ShapeError{fmt::format("{} must not be empty", at)};
                for (std::size_t i = 0; i < entry.size(); ++i) principal.uids.push_back(uid_value(entry[i], fmt::format("{}[{}]", at, i)));
            } else {
                principal.uids.push_back(uid_value(entry, at));
            }
        } else {
            throw ShapeError{fmt::format("{} has an unknown key \"{}\" (expected user, group, uid)", where, key)};
        }
    }
    if (principal.users.empty() && principal.groups.empty() && principal.uids.empty()) {
        throw ShapeError{fmt::format("{} names nobody", where)};
    }
    return principal;
}

AccessPolicy::Statement statement_of(const json& value, const std::string& where) {
    if (!value.is_object()) throw ShapeError{fmt::format("{} must be an object", where)};
    AccessPolicy::Statement st;
    bool has_effect = false, has_principal = false, has_action = false, has_resource = false;
    for (const auto& [key, entry] : value.items()) {
        const std::string at = where + "." + key;
        if (key == "Effect") {
            has_effect = true;
            if (entry == "Allow") {
                st.allow = true;
            } else if (entry == "Deny") {
                st.allow = false;
            } else {
                throw ShapeError{fmt::format("{} must be \"Allow\" or \"Deny\", not {}", at, quoted(entry))};
            }
        } else if (key == "Principal") {
            has_principal = true;
            st.principal = principal_of(entry, at);
        } else if (key == "Action") {
            has_action = true;
            st.actions = string_list(entry, at);
        } else if (key == "Resource") {
            has_resource = true;
            st.resources = string_list(entry, at);
        } else if (key == "Sid") {
            // A label for people; no meaning here.
        } else {
            throw ShapeError{fmt::format("{} has an unknown key \"{}\" (expected Effect, Principal, Action, Resource, Sid)",
                                         where, key)};
        }
    }
    if (!has_effect) throw ShapeError{fmt::format("{} has no Effect", where)};
    if (!has_principal) throw ShapeError{fmt::format("{} has no Principal", where)};
    if (!has_action) throw ShapeError{fmt::format("{} has no Action", where)};
    if (!has_resource) throw ShapeError{fmt::format("{} has no Resource", where)};
    return st;
}

bool principal_matches(const AccessPolicy::Principal& p, const Caller& caller) {
    if (p.anyone) return true;
    if (std::find(p.uids.begin(), p.uids.end(), caller.uid) != p.uids.end()) return true;
    if (!caller.user.empty() && std::find(p.users.begin(), p.users.end(), caller.user) != p.users.end()) return true;
    for (const auto& g : caller.groups) {
        if (std::find(p.groups.begin(), p.groups.end(), g) != p.groups.end()) return true;
    }
    return false;
}

bool any_matches(const std::vector<std::string>& patterns, std::string_view text, bool ignore_case) {
    return std::any_of(patterns.begin(), patterns.end(),
                       [&](const std::string& p) { return glob_match(p, text, ignore_case); });
}

bool covers_every_instance(const std::vector<std::string>& patterns) {
    return std::any_of(patterns.begin(), patterns.end(), [](const std::string& p) {
        return !p.empty() && std::all_of(p.begin(), p.end(), [](char c) { return c == '*'; });
    });
}

}  // namespace

bool glob_match(std::string_view pattern, std::string_view text, bool ignore_case) noexcept {
    auto same = [ignore_case](char a, char b) {
        if (!ignore_case) return a == b;
        return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
    };
    // Iterative matcher with one backtrack point: linear-ish, no recursion.
    std::size_t p = 0, t = 0, star = std::string_view::npos, resume = 0;
    while (t < text.size()) {
        if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            resume = t;
        } else if (p < pattern.size() && same(pattern[p], text[t])) {
            ++p;
            ++t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++resume;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}

Result<AccessPolicy> AccessPolicy::parse(std::string_view text, std::string_view source) {
    const json doc = json::parse(text.begin(), text.end(), nullptr, false);
    if (doc.is_discarded()) {
        ErrorPositionSax sax;
        json::sax_parse(text.begin(), text.end(), &sax, nlohmann::detail::input_format_t::json, true);
        return make_error(Errc::invalid_argument, fmt::format("admin policy '{}' line {}: {}", source,
                                                              line_of(text, sax.position), sax.reason));
    }
    try {
        if (!doc.is_object()) throw ShapeError{"the policy must be a JSON object with a Statement list"};
        AccessPolicy policy;
        bool has_statement = false;
        for (const auto& [key, entry] : doc.items()) {
            if (key == "Version") {
                if (!entry.is_string()) throw ShapeError{"Version must be a string"};
            } else if (key == "Statement") {
                has_statement = true;
                if (!entry.is_array()) throw ShapeError{"Statement must be a list"};
                for (std::size_t i = 0; i < entry.size(); ++i) {
                    policy.statements_.push_back(statement_of(entry[i], fmt::format("Statement[{}]", i)));
                }
            } else {
                throw ShapeError{fmt::format("unknown key \"{}\" (expected Version, Statement)", key)};
            }
        }
        if (!has_statement) throw ShapeError{"the policy has no Statement list"};
        return policy;
    } catch (const ShapeError& e) {
        return make_error(Errc::invalid_argument, fmt::format("admin policy '{}': {}", source, e.what));
    }
}

Result<AccessPolicy> AccessPolicy::load(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        return make_error(Errc::io_error, fmt::format("cannot read admin policy '{}': {}", path, std::strerror(errno)));
    }
    std::string text(kMaxPolicyBytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    if (in.bad()) return make_error(Errc::io_error, fmt::format("cannot read admin policy '{}'", path));
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMaxPolicyBytes) {
        return make_error(Errc::invalid_argument, fmt::format("admin policy '{}' is larger than 1 MiB", path));
    }
    return parse(text, path);
}

AccessPolicy AccessPolicy::builtin(uid_t own_uid) {
    AccessPolicy policy;
    Statement st;
    st.allow = true;
    st.principal.uids = {0};
    if (own_uid != 0) st.principal.uids.push_back(own_uid);
    st.actions = {"*"};
    st.resources = {"*"};
    policy.statements_.push_back(std::move(st));
    return policy;
}

PolicyDecision AccessPolicy::check_permission(const Caller& caller, std::string_view permission) const {
    bool allowed = false;
    for (const auto& st : statements_) {
        if (!principal_matches(st.principal, caller) || !any_matches(st.actions, permission, true)) continue;
        if (!st.allow && covers_every_instance(st.resources)) return PolicyDecision::deny_permission;
        if (st.allow) allowed = true;
    }
    return allowed ? PolicyDecision::allow : PolicyDecision::deny_permission;
}

PolicyDecision AccessPolicy::check(const Caller& caller, std::string_view permission, std::string_view instance) const {
    if (auto d = check_permission(caller, permission); d != PolicyDecision::allow) return d;
    bool allowed_here = false;
    for (const auto& st : statements_) {
        if (!principal_matches(st.principal, caller) || !any_matches(st.actions, permission, true)) continue;
        if (!any_matches(st.resources, instance, false)) continue;
        if (!st.allow) return PolicyDecision::deny_instance;
        allowed_here = true;
    }
    return allowed_here ? PolicyDecision::allow : PolicyDecision::deny_instance;
}

}  // namespace devcert
