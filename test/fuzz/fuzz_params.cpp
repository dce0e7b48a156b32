// Parameter validation of the admin operations: a request's parameter map
// becomes typed, canonical values (validate_request over the one operations
// table), or a refusal with a reason.
//
// Input, one parameter per line, "Name=Value"; the first line names the
// Action (an unknown Action picks an operation by its length, so every
// operation is reached). In values, "\n" stands for a line break and "\xHH"
// for any byte, so PEM and control characters can be expressed.
// Properties: an accepted request has every required parameter, no unknown
// or repeated one, and each value is canonical (validating it again gives it
// back unchanged: serials in canonical form, integers in range and without
// leading zeros, statuses "0"/"1").
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "devcert/api.hpp"
#include "devcert/operations.hpp"
#include "devcert/serial.hpp"
#include "fuzz_check.hpp"
#include "params.hpp"

namespace {

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string unescape(std::string_view in) {
    std::string out;
    for (std::size_t i = 0; i < in.size(); ++i) {
        if (in[i] == '\\' && i + 1 < in.size() && in[i + 1] == 'n') {
            out.push_back('\n');
            ++i;
        } else if (in[i] == '\\' && i + 3 < in.size() && in[i + 1] == 'x' && hex_digit(in[i + 2]) >= 0 &&
                   hex_digit(in[i + 3]) >= 0) {
            out.push_back(static_cast<char>(hex_digit(in[i + 2]) * 16 + hex_digit(in[i + 3])));
            i += 3;
        } else {
            out.push_back(in[i]);
        }
    }
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    devcert::ApiRequest request;
    std::size_t pos = 0;
    while (pos < input.size()) {
        std::size_t end = input.find('\n', pos);
        if (end == std::string_view::npos) end = input.size();
        const std::string_view line = input.substr(pos, end - pos);
        pos = end + 1;
        const std::size_t eq = line.find('=');
        if (eq == std::string_view::npos) {
            request.params.emplace_back(unescape(line), "");
        } else {
            request.params.emplace_back(unescape(line.substr(0, eq)), unescape(line.substr(eq + 1)));
        }
    }

    const auto ops = devcert::operations();
    const devcert::Operation* op = nullptr;
    if (!request.params.empty() && request.params.front().first == "Action") {
        op = devcert::find_operation(request.params.front().second);
        if (op == nullptr) op = &ops[request.params.front().second.size() % ops.size()];
    } else {
        op = &ops[size % ops.size()];
    }

    auto outcome = devcert::validate_request(*op, request);
    if (const auto* failure = std::get_if<devcert::ParamFailure>(&outcome)) {
        FUZZ_CHECK(!failure->detail.empty(), "a refusal names its reason");
        return 0;
    }
    const auto& params = std::get<devcert::Params>(outcome);
    for (const auto& spec : op->params) {
        const std::string* value = params.find(spec.name);
        if (spec.required) FUZZ_CHECK(value != nullptr, spec.name);
        if (value == nullptr) continue;
        auto again = devcert::validate_param(spec, *value);
        FUZZ_CHECK(again && again.value() == *value, "a validated value is not canonical");
        switch (spec.kind) {
            case devcert::ParamKind::serial: {
                auto serial = devcert::parse_serial(*value);
                FUZZ_CHECK(serial && serial.value() == *value, *value);
                break;
            }
            case devcert::ParamKind::integer: {
                const std::uint64_t n = params.number(spec.name, 0);
                FUZZ_CHECK(n >= spec.min_value && n <= spec.max_value, *value);
                FUZZ_CHECK(std::to_string(n) == *value, *value);
                break;
            }
            case devcert::ParamKind::status:
                FUZZ_CHECK(*value == "0" || *value == "1", *value);
                break;
            case devcert::ParamKind::text:
            case devcert::ParamKind::pem:
                FUZZ_CHECK(!value->empty() && value->size() <= spec.max_size, spec.name);
                FUZZ_CHECK(value->find('\0') == std::string::npos, "a NUL byte passed validation");
                break;
        }
    }
    // Nothing accepted that the operation does not declare, nothing twice.
    std::size_t given = 0;
    for (const auto& [name, value] : request.params) {
        if (name == "Action") continue;
        ++given;
        FUZZ_CHECK(devcert::find_param(*op, name) != nullptr, name);
    }
    FUZZ_CHECK(params.all().size() == given, "a parameter was dropped or repeated");
    return 0;
}
