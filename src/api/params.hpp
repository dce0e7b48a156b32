// Request parameters after validation: each one checked against the
// operation's spec and held in canonical form. Handlers see only these.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "devcert/api.hpp"
#include "devcert/operations.hpp"

namespace devcert {

class Params {
public:
    /// The canonical value, or nullptr when an optional parameter is absent.
    const std::string* find(std::string_view name) const noexcept;
    /// The value of a required parameter (validation guarantees presence).
    const std::string& text(std::string_view name) const;
    /// An integer parameter, or `fallback` when absent.
    std::uint64_t number(std::string_view name, std::uint64_t fallback) const;

    void add(std::string_view name, std::string value) { values_.emplace_back(name, std::move(value)); }
    const std::vector<std::pair<std::string_view, std::string>>& all() const noexcept { return values_; }

private:
    std::vector<std::pair<std::string_view, std::string>> values_;  // names point into the operations table
};

/// A parameter refused, with the reason for the response's Detail.
struct ParamFailure {
    std::string detail;
};

/// Validates every parameter of `request` except Action against `op`:
/// missing, empty, duplicated, malformed, oversized and unknown parameters
/// are refused. Also refuses a duplicated Action.
std::variant<Params, ParamFailure> validate_request(const Operation& op, const ApiRequest& request);

}  // namespace devcert
