// devcertctl: the command-line client of the mosquitto-devcert admin API.
// Exit status: 0 success, 1 the API refused the call (its error JSON is
// printed), 2 a usage error or no way to reach the API.
#include <curl/curl.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

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
    const std::string action(call.operation->name);
    Reply reply;
    try {
        reply = call.db ? call_store(*call.db, action, call.params) : call_socket(call.socket, action, call.params);
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
