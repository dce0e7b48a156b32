#include "output.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
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

std::string cell(const Json& value) {
    if (value.is_string()) return value.get<std::string>();
    if (value.is_null()) return "";
    return value.dump(-1, ' ', false, Json::error_handler_t::replace);
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
    std::vector<std::vector<std::string>> rows{columns};
    for (const auto& item : items) {
        std::vector<std::string> row;
        for (const auto& column : columns) row.push_back(item.contains(column) ? cell(item[column]) : "");
        rows.push_back(std::move(row));
    }
    return aligned(rows);
}

void flatten(const Json& value, const std::string& prefix, std::vector<std::vector<std::string>>& rows) {
    for (const auto& [key, field] : value.items()) {
        const std::string name = prefix.empty() ? key : prefix + "." + key;
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
                if (other != key) footer.push_back(fmt::format("{} {}", other, cell(field)));
            }
            if (!footer.empty()) out += fmt::format("\n{}\n", fmt::join(footer, "  "));
            return out;
        }
    }
    std::vector<std::vector<std::string>> rows;
    flatten(response, "", rows);
    return aligned(rows);
}

}  // namespace

std::string render(const std::string& body, OutputFormat format) {
    const Json response = Json::parse(body, nullptr, false);
    if (response.is_discarded() || !response.is_object()) return body.empty() || body.back() == '\n' ? body : body + '\n';
    if (format == OutputFormat::table) return table(response);
    return response.dump(2, ' ', false, Json::error_handler_t::replace) + '\n';
}

}  // namespace devcertctl
