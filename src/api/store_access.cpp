#include <fmt/format.h>

#include <utility>

#include "operation_call.hpp"

namespace devcert {

Outcome commit(OperationCall& call, std::function<Outcome(WriteView&)> job) {
    if (call.context.writer != nullptr) return call.context.writer->submit(std::move(job)).get();
    return call.context.store->write(job);
}

Outcome read(OperationCall& call, const std::function<Outcome(ReadView&)>& fn) {
    return call.context.store->read(fn);
}

void fail_store(OperationCall& call, const Error& error) {
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

Page requested_page(const OperationCall& call) {
    Page page;
    page.page_no = static_cast<std::uint32_t>(call.params.number("PageNo", 1));
    page.page_size = static_cast<std::uint32_t>(call.params.number("PageSize", 10));
    return page;
}

}  // namespace devcert
