#include <fmt/format.h>

#include <utility>

#include "operation_call.hpp"

namespace devcert {

Outcome commit(OperationCall& call, std::function<Outcome(WriteView&)> job) {
    if (call.context.records != nullptr) return call.context.records->write(std::move(job));
    if (call.context.writer != nullptr) return call.context.writer->submit(std::move(job)).get();
    return call.context.store->write(job);
}

Outcome read(OperationCall& call, const std::function<Outcome(ReadView&)>& fn) {
    if (call.context.records != nullptr) return call.context.records->read(fn);
    return call.context.store->read(fn);
}

void fail_store(OperationCall& call, const Error& error) {
    if (error.code == Errc::unavailable) return call.fail(ApiError::fleet_unavailable, error.message);
    call.fail(ApiError::internal_error, fmt::format("status store: {}", error.message));
}

Error refuse(std::optional<ApiError>& refusal, ApiError error) {
    refusal = error;
    return make_error(Errc::invalid_argument, std::string(api_error_info(error).code));
}

void finish(OperationCall& call, const Outcome& outcome, const std::optional<ApiError>& refusal) {
    if (refusal) {
        call.fail(*refusal);
    } else if (!outcome) {
        fail_store(call, outcome.error());
    }
}

std::optional<Page> requested_page(OperationCall& call) {
    Page page;
    page.page_size = static_cast<std::uint32_t>(call.params.number("PageSize", 10));
    const std::string* page_no = call.params.find("PageNo");
    const std::string* token = call.params.find("NextToken");
    if ((page_no == nullptr) == (token == nullptr)) {
        call.fail(ApiError::parameter_invalid, page_no == nullptr ? "PageNo: missing (or give NextToken)"
                                                                  : "PageNo and NextToken exclude each other");
        return std::nullopt;
    }
    if (token != nullptr) {
        page.after = *token;
    } else {
        page.page_no = static_cast<std::uint32_t>(call.params.number("PageNo", 1));
    }
    return page;
}

void fail_list(OperationCall& call, const Error& error) {
    // The store refuses a token that is not one of this list.
    if (error.code == Errc::invalid_argument) return call.fail(ApiError::parameter_invalid, error.message);
    fail_store(call, error);
}

void respond_page(OperationCall& call, const Page& page, std::string_view list_field, nlohmann::json items,
                  std::uint64_t total, const std::string& next) {
    auto data = nlohmann::json::object();
    data[std::string(list_field)] = std::move(items);
    if (page.after.empty()) data["PageNo"] = page.page_no;
    data["PageSize"] = page.page_size;
    data["Total"] = total;
    if (!next.empty()) data["NextToken"] = next;
    call.response["Data"] = std::move(data);
}

}  // namespace devcert
