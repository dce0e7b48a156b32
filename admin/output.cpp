#include "output.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <string_view>
#include <vector>

namespace devcertctl {

namespace {

// ordered_json keeps the server's field order, which is the reference's.
using Json = nlohmann::ordered_json;

// PEM blocks would break every row; a table says where they are instead.
bool is_content_field(std::string_view name) {
    return name.size() > 7 && name.substr(name.size() - 7) == "Content";
}

// Length of the well-formed UTF-8 sequence at s[i] (1 to 4), 0 if none.
std::size_t utf8_sequence(std::string_view s, std::size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) return 1;
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
        return 0;
    }
    if (i + len > s.size()) return 0;
    for (std::size_t k = 1; k < len; ++k) {
        const auto cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (cc & 0x3fu);
    }
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

}  // namespace

std::string visible(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size();) {
        const auto c = static_cast<unsigned char>(text[i]);
        const std::size_t len = utf8_sequence(text, i);
        if (len == 0) {
            out += fmt::format("\\x{:02x}", c);  // not UTF-8: the byte itself
            ++i;
            continue;
        }
        if (len == 1) {
            switch (c) {
                case '\\': out += "\\\\"; break;
                case '\n': out += "\\n"; break;
                case '\r': out += "\\r"; break;
                case '\t': out += "\\t"; break;
                default:
                    if (c < 0x20 || c == 0x7f)
                        out += fmt::format("\\x{:02x}", c);
                    else
                        out += static_cast<char>(c);
            }
        } else if (len == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
            // C1 controls (U+0080 to U+009F): CSI among them.
            out += fmt::format("\\u{:04x}", static_cast<unsigned char>(text[i + 1]));
        } else {
            out.append(text.substr(i, len));
        }
        i += len;
    }
    return out;
}

namespace {

// Every value and name in a table passes through visible(): certificates
// carry whatever their issuer wrote, and a terminal obeys what it is sent.
std::string cell(const Json& value) {
    if (value.is_string()) return visible(value.get<std::string>());
    if (value.is_null()) return "";
    return visible(value.dump(-1, ' ', false, Json::error_handler_t::replace));
}

std::string aligned(const std::vector<std::vector<std::string>>& rows) {
    std::vector<std::size_t> widths;
    for (const auto& row : rows) {
        widths.resize(std::max(widths.size(), row.size()));
        for (std::size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
    }
    std::string out;
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t c = 0; c < row.size(); ++c) {
            line += c + 1 == row.size() ? row[c] : fmt::format("{:<{}}  ", row[c], widths[c]);
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + '\n';
    }
    return out;
}

std::string list_table(const Json& items) {
    std::vector<std::string> columns;
    for (const auto& item : items) {
        for (const auto& [key, value] : item.items()) {
            if (is_content_field(key)) continue;
            if (std::find(columns.begin(), columns.end(), key) == columns.end()) columns.push_back(key);
        }
    }
    std::vector<std::vector<std::string>> rows{{}};
    for (const auto& column : columns) rows.front().push_back(visible(column));
    for (const auto& item : items) {
        std::vector<std::string> row;
        for (const auto& column : columns) row.push_back(item.contains(column) ? cell(item[column]) : "");
        rows.push_back(std::move(row));
    }
    return aligned(rows);
}

void flatten(const Json& value, const std::string& prefix, std::vector<std::vector<std::string>>& rows) {
    for (const auto& [key, field] : value.items()) {
        const std::string name = prefix.empty() ? visible(key) : prefix + "." + visible(key);
        if (field.is_object()) {
            flatten(field, name, rows);
        } else if (is_content_field(key) && field.is_string()) {
            rows.push_back({name, fmt::format("({} bytes of PEM; --output json shows it)", field.get<std::string>().size())});
        } else {
            rows.push_back({name, cell(field)});
        }
    }
}

bool is_record_list(const Json& value) {
    return value.is_array() && std::all_of(value.begin(), value.end(), [](const Json& v) { return v.is_object(); });
}

std::string table(const Json& response) {
    // A list result: the array of records in Data, with the rest of Data
    // (PageNo, PageSize, Total, NextSeq) as a footer.
    if (response.contains("Data") && response["Data"].is_object()) {
        const Json& data = response["Data"];
        for (const auto& [key, value] : data.items()) {
            if (!is_record_list(value)) continue;
            std::string out = value.empty() ? "(no records)\n" : list_table(value);
            std::vector<std::string> footer;
            for (const auto& [other, field] : data.items()) {
                if (other != key) footer.push_back(fmt::format("{} {}", visible(other), cell(field)));
            }
            if (!footer.empty()) out += fmt::format("\n{}\n", fmt::join(footer, "  "));
            return out;
        }
    }
    std::vector<std::vector<std::string>> rows;
    flatten(response, "", rows);
    return aligned(rows);
}

/// JSON text as dumped (valid UTF-8, controls below U+0020 escaped) with
/// DEL and the C1 controls escaped too: both are legal raw in a JSON
/// string, and a terminal obeys U+009B (CSI) as it obeys ESC [.
std::string terminal_safe_json(const std::string& dumped) {
    std::string out;
    out.reserve(dumped.size());
    for (std::size_t i = 0; i < dumped.size(); ++i) {
        const auto c = static_cast<unsigned char>(dumped[i]);
        if (c == 0x7f) {
            out += "\\u007f";
        } else if (c == 0xc2 && i + 1 < dumped.size() && static_cast<unsigned char>(dumped[i + 1]) < 0xa0) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned char>(dumped[i + 1]));
            ++i;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

}  // namespace

std::string render(const std::string& body, OutputFormat format) {
    const Json response = Json::parse(body, nullptr, false);
    if (response.is_discarded() || !response.is_object()) {
        // Shown as received; for people, with its control characters escaped.
        std::string text = format == OutputFormat::table ? visible(body) : body;
        return text.empty() || text.back() == '\n' ? text : text + '\n';
    }
    if (format == OutputFormat::table) return table(response);
    return terminal_safe_json(response.dump(2, ' ', false, Json::error_handler_t::replace)) + '\n';
}

}  // namespace devcertctl
