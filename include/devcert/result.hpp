// Result<T>: a value or an Error, returned by configuration-time and store
// code. The connection path uses plain enums instead (see store.hpp).
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace devcert {

/// Library-wide error kinds. The admin API maps these (with context) to the
/// reference's error codes in api_errors.hpp; nothing else should need to.
enum class Errc {
    invalid_argument,   ///< malformed input (serial, PEM, option value...)
    not_found,          ///< the named record does not exist
    already_exists,     ///< unique key taken (CA Sn, device (CaSn, DeviceSn))
    revoked,            ///< operation not allowed on a revoked certificate
    limit_exceeded,     ///< a configured cap was reached (e.g. max CAs)
    store_error,        ///< LMDB or file-system failure
    schema_mismatch,    ///< store written by an unknown schema version
    io_error,           ///< OS-level failure outside the store
    unavailable,        ///< the fleet database cannot be reached; nothing was changed
};

struct Error {
    Errc code;
    std::string message;  ///< operator-facing, lower-case, no trailing period
};

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
    Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}

    bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & { return std::get<0>(v_); }
    const T& value() const& { return std::get<0>(v_); }
    T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &std::get<0>(v_); }
    const T* operator->() const { return &std::get<0>(v_); }
    T& operator*() & { return std::get<0>(v_); }
    const T& operator*() const& { return std::get<0>(v_); }

    const Error& error() const& { return std::get<1>(v_); }

private:
    std::variant<T, Error> v_;
};

/// Result for operations that produce nothing but may fail.
struct Ok {};
using Outcome = Result<Ok>;

inline Error make_error(Errc code, std::string message) {
    return Error{code, std::move(message)};
}

}  // namespace devcert
