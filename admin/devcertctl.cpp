// devcertctl: the command-line client of the mosquitto-devcert admin API.
// Exit status: 0 success, 1 the API refused the call (its error JSON is
// printed), 2 a usage error or no way to reach the API.
#include <curl/curl.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "calls.hpp"
#include "cli.hpp"
#include "output.hpp"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitApiError = 1;
constexpr int kExitUsage = 2;

const char* environment(const char* name) { return std::getenv(name); }

int fail(const std::string& message) {
    std::fprintf(stderr, "devcertctl: %s\n", message.c_str());
    return kExitUsage;
}

devcertctl::Reply call_once(const devcertctl::Invocation& call, const std::string& action,
                            const devcertctl::Params& params) {
    using namespace devcertctl;
    if (call.db) return call_store(*call.db, action, params);
    if (call.fleet) return call_fleet(*call.fleet, action, params);
    return call_socket(call.socket, action, params);
}

// --all: calls page after page, following NextToken, and answers as if
// one call had returned every record (Data holds the list and Total). An
// error on any page is that page's error. A store that gives no NextToken
// (the fleet's pages by number only) is walked by PageNo until Total.
devcertctl::Reply call_all_pages(const devcertctl::Invocation& call, const std::string& action) {
    using namespace devcertctl;
    using Json = nlohmann::ordered_json;
    Params params = call.params;
    params.emplace_back("PageNo", "1");
    Json records = Json::array();
    std::string list_field;
    Json total;
    std::string request_id;
    for (std::uint64_t page_no = 1;; ++page_no) {
        Reply reply = call_once(call, action, params);
        if (reply.http_status != 200) return reply;
        Json page = Json::parse(reply.body, nullptr, false);
        if (page.is_discarded() || !page.contains("Data") || !page["Data"].is_object()) return reply;
        const Json& data = page["Data"];
        std::size_t served = 0;
        for (const auto& [key, value] : data.items()) {
            if (!value.is_array()) continue;
            list_field = key;
            served += value.size();
            for (const auto& record : value) records.push_back(record);
        }
        total = data.value("Total", Json());
        request_id = page.value("RequestId", "");
        if (data.contains("NextToken") && data["NextToken"].is_string()) {
            params.back() = {"NextToken", data["NextToken"].get<std::string>()};
            continue;
        }
        const bool by_number = params.back().first == "PageNo";
        if (!by_number || served == 0 || !total.is_number_unsigned() || records.size() >= total.get<std::uint64_t>())
            break;
        params.back() = {"PageNo", std::to_string(page_no + 1)};
    }
    Json combined = {{"RequestId", request_id}, {"Data", {{list_field, std::move(records)}, {"Total", total}}}};
    return Reply{200, combined.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

int run(const std::vector<std::string>& args) {
    using namespace devcertctl;
    Parsed parsed;
    try {
        parsed = parse_command_line(args, &environment);
    } catch (const UsageError& error) {
        return fail(error.message);
    }
    if (!parsed.call) {
        std::fputs(parsed.help.c_str(), stdout);
        return kExitOk;
    }
    const Invocation& call = *parsed.call;
    Reply reply;
    try {
        if (call.fleet_command != nullptr) {
            const std::string& instance = call.params.at(0).second;
            if (call.fleet_command->name == "MigrateToFleet") {
                reply = migrate_fleet(*call.fleet, *call.db, instance);
            } else if (call.fleet_command->name == "CheckFleet") {
                reply = check_fleet(*call.fleet, *call.db, instance);
            } else {
                reply = init_fleet(*call.fleet, instance);
            }
        } else if (call.all_pages) {
            reply = call_all_pages(call, std::string(call.operation->name));
        } else {
            reply = call_once(call, std::string(call.operation->name), call.params);
        }
    } catch (const Unreachable& error) {
        return fail(error.message);
    }
    const bool success = reply.http_status == 200;
    // Errors stay JSON in every format: scripts and people read the Code.
    const std::string text = render(reply.body, success ? call.output : OutputFormat::json);
    std::fputs(text.c_str(), stdout);
    return success ? kExitOk : kExitApiError;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        const int status = run(std::vector<std::string>(argv + 1, argv + argc));
        curl_global_cleanup();
        return std::fflush(stdout) == 0 ? status : kExitUsage;
    } catch (const std::exception& error) {
        return fail(error.what());
    }
}
