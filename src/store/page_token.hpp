// Continuation tokens of the store's lists: where the last page ended,
// sealed with a key only this store holds, so that a token cannot be forged,
// altered, or used with another store or another list.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace devcert::page_token {

/// Length of the store's sealing key, made at random when the store is created.
inline constexpr std::size_t kKeySize = 32;

/// URL-safe text naming the position after `key` in the list `list`.
std::string seal(std::string_view secret, std::string_view list, std::string_view key);

/// The key a token of `list` continues after; nullopt for anything else
/// (malformed, altered, sealed by another store or for another list).
std::optional<std::string> open(std::string_view secret, std::string_view list, std::string_view token);

}  // namespace devcert::page_token
