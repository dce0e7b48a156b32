// How devcertctl prints a response: the JSON itself (for scripts), or, for
// people, list results as aligned columns and single records as fields.
#pragma once

#include <string>
#include <string_view>

#include "cli.hpp"

namespace devcertctl {

/// The text to print for a successful response body. A body that is not
/// JSON is printed as received.
std::string render(const std::string& body, OutputFormat format);

/// `text` safe to print on a terminal: C0 and C1 controls, DEL and bytes
/// that are not UTF-8 become visible escapes (\n \r \t \x1b \u009b \xff),
/// and a backslash is doubled so that escapes cannot be forged.
std::string visible(std::string_view text);

}  // namespace devcertctl
