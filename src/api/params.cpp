#include "params.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <variant>

#include "devcert/serial.hpp"

namespace devcert {

namespace {

bool valid_utf8_text(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f) return false;  // control characters, NUL included
            ++i;
            continue;
        }
        std::size_t len = 0;
        std::uint32_t cp = 0;
        if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1fu;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0fu;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (i + len > s.size()) return false;
        for (std::size_t k = 1; k < len; ++k) {
            const auto cc = static_cast<unsigned char>(s[i + k]);
            if ((cc & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (cc & 0x3fu);
        }
        // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp < 0xa0)) {
            return false;
        }
        i += len;
    }
    return true;
}

bool valid_pem_text(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char ch) {
        const auto c = static_cast<unsigned char>(ch);
        return (c >= 0x20 && c < 0x7f) || c == '\n' || c == '\r' || c == '\t';
    });
}

}  // namespace

const std::string* Params::find(std::string_view name) const noexcept {
    for (const auto& [n, v] : values_) {
        if (n == name) return &v;
    }
    return nullptr;
}

const std::string& Params::text(std::string_view name) const {
    if (const auto* v = find(name)) return *v;
    throw std::logic_error(fmt::format("parameter {} was not validated", name));
}

std::uint64_t Params::number(std::string_view name, std::uint64_t fallback) const {
    const auto* v = find(name);
    if (v == nullptr) return fallback;
    std::uint64_t n = 0;
    std::from_chars(v->data(), v->data() + v->size(), n);
    return n;
}

Result<std::string> validate_param(const ParamSpec& spec, std::string_view value) {
    auto refuse = [&](std::string_view why) {
        return make_error(Errc::invalid_argument, fmt::format("{}: {}", spec.name, why));
    };
    if (value.empty()) return refuse("must not be empty");
    if (value.size() > spec.max_size) return refuse(fmt::format("longer than {} bytes", spec.max_size));
    switch (spec.kind) {
        case ParamKind::text:
            if (!valid_utf8_text(value)) return refuse("must be printable UTF-8 text");
            return std::string(value);
        case ParamKind::pem:
            if (!valid_pem_text(value)) return refuse("must be PEM text");
            return std::string(value);
        case ParamKind::serial: {
            auto serial = parse_serial(value);
            if (!serial) return refuse(serial.error().message);
            return std::move(serial).value();
        }
        case ParamKind::integer: {
            if (!std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; })) {
                return refuse("must be a decimal number");
            }
            std::uint64_t n = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
            if (ec != std::errc{} || end != value.data() + value.size() || n < spec.min_value || n > spec.max_value) {
                return refuse(fmt::format("must be between {} and {}", spec.min_value, spec.max_value));
            }
            return std::to_string(n);
        }
        case ParamKind::status:
            if (value != "0" && value != "1") return refuse("must be \"0\" (inactive) or \"1\" (active)");
            return std::string(value);
    }
    return refuse("has an unknown kind");
}

std::variant<Params, ParamFailure> validate_request(const Operation& op, const ApiRequest& request) {
    Params params;
    bool seen_action = false;
    for (const auto& [name, value] : request.params) {
        if (name == "Action") {
            if (seen_action) return ParamFailure{"Action: given more than once"};
            seen_action = true;
            continue;
        }
        const ParamSpec* spec = find_param(op, name);
        if (spec == nullptr) {
            // The name may be anything the client sent: show it only when it
            // is short and plain, so the Detail stays readable.
            const bool plain = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
                return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
            });
            return ParamFailure{plain && !name.empty() ? fmt::format("{}: not a parameter of {}", name, op.name)
                                                       : fmt::format("a parameter not known to {}", op.name)};
        }
        if (params.find(spec->name) != nullptr) return ParamFailure{fmt::format("{}: given more than once", spec->name)};
        auto canonical = validate_param(*spec, value);
        if (!canonical) return ParamFailure{canonical.error().message};
        params.add(spec->name, std::move(canonical).value());
    }
    for (const auto& spec : op.params) {
        if (spec.required && params.find(spec.name) == nullptr) return ParamFailure{fmt::format("{}: missing", spec.name)};
    }
    return params;
}

}  // namespace devcert
