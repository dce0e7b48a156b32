// How devcertctl prints a response: the JSON itself (for scripts), or, for
// people, list results as aligned columns and single records as fields.
#pragma once

#include <string>

#include "cli.hpp"

namespace devcertctl {

/// The text to print for a successful response body. A body that is not
/// JSON is printed as received.
std::string render(const std::string& body, OutputFormat format);

}  // namespace devcertctl
