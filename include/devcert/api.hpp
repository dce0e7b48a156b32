// The admin API, independent of its transport: a request is a list of
// parameters from an identified caller; a response is an HTTP status and a
// JSON body. The HTTP server (admin_server.hpp) and `devcertctl --db` (which
// works on a store directly, without a broker) both call Api::handle.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "devcert/admin_server.hpp"
#include "devcert/result.hpp"

struct passwd;
struct group;

namespace devcert {

/// The passwd and group database calls that name a caller, with the
/// signatures of the libc functions they default to. Tests replace them to
/// make a lookup fail or answer with an entry of a given size.
struct IdentityDatabase {
    int (*getpwuid_r)(uid_t, passwd*, char*, std::size_t, passwd**);
    int (*getgrgid_r)(gid_t, group*, char*, std::size_t, group**);
    int (*getgrouplist)(const char*, gid_t, gid_t*, int*);
    /// The libc functions (NSS: files, LDAP, sssd, ... as configured).
    static IdentityDatabase system();
};

/// An entry larger than this (a passwd or group line, or the group list) is
/// a lookup error rather than an answer.
inline constexpr std::size_t kMaxIdentityEntry = 4 * 1024 * 1024;

/// Who is calling, from the socket's peer credentials (SO_PEERCRED).
struct Caller {
    uid_t uid = 0;
    gid_t gid = 0;
    std::string user;                 ///< "" when the uid has no passwd entry
    std::vector<std::string> groups;  ///< primary group first, then supplementary
    /// Set when a lookup failed (not "no such user or group", which is an
    /// answer, but an error of the database): names the lookup. The identity
    /// is then incomplete and every call from it is refused, as neither an
    /// Allow nor a Deny can be judged on part of it.
    std::string lookup_error;
    /// "uid=1000(ops)" or "uid=1234" when unnamed: the audit and change-log form.
    std::string describe() const;
    /// Resolves names and groups for a uid/gid pair via the passwd/group
    /// databases, growing its buffers until each entry fits (up to
    /// kMaxIdentityEntry).
    static Caller from_ids(uid_t uid, gid_t gid);
    static Caller from_ids(uid_t uid, gid_t gid, const IdentityDatabase& database);
};

/// Raw request parameters in arrival order; duplicates are kept so that the
/// API can refuse them.
struct ApiRequest {
    std::vector<std::pair<std::string, std::string>> params;
};

struct ApiResponse {
    int http_status = 200;
    std::string body;                         ///< JSON
    std::optional<unsigned> retry_after_s;    ///< set with 429
};

/// Reasons the transport refuses a request before it reaches an operation.
enum class TransportError : std::uint8_t {
    body_too_large,      ///< > 64 KiB
    too_many_params,     ///< > 64
    value_too_large,     ///< a value > 8 KiB
    malformed_body,      ///< bad JSON / form encoding, NUL bytes, non-string JSON values
    unsupported_media,   ///< a body of another content type
    method_not_allowed,  ///< not GET or POST
    not_found,           ///< a path other than "/"
    malformed_request,   ///< not an HTTP/1.x request: request line, header fields, framing, cut short
    unsupported_version, ///< HTTP/x.y other than 1.0 and 1.1
    head_too_large,      ///< request line and headers over 64 KiB, or over 100 header fields
};

/// Refused calls (any error answer) of one uid beyond this many within a
/// second are not audited one by one: they are counted, by code, into one
/// summary line for that uid and second. Successful calls are always
/// audited one by one.
inline constexpr unsigned kRefusedAuditLinesPerSecond = 10;

/// What a host may tune beyond the configuration.
struct ApiOptions {
    /// Time source of the rate limiter; steady_clock::now when empty (tests
    /// inject their own so that they do not depend on timing).
    std::function<std::chrono::steady_clock::time_point()> clock;
};

class Api {
public:
    /// Loads the access policy (config.admin_policy) and sets up the rate
    /// limiter. Errors name the policy file and line. The Api keeps a copy of
    /// `context`; what it points to must outlive the Api. store and config
    /// are required.
    static Result<std::unique_ptr<Api>> create(const AdminContext& context);
    static Result<std::unique_ptr<Api>> create(const AdminContext& context, ApiOptions options);
    ~Api();

    /// Runs one call end to end: rate limit, Action, permission, parameters,
    /// instance id, instance permission, then the store. Never throws.
    ApiResponse handle(const Caller& caller, const ApiRequest& request) noexcept;

    /// The response for a request the transport refused (counted and audited
    /// like any call).
    ApiResponse reject(const Caller& caller, TransportError error) noexcept;

    /// Reads config.admin_policy again and, if it parses, puts it in force
    /// for the calls that start from then on; calls in flight finish under
    /// the policy they started with. On an error (the message names the file
    /// and line) the previous policy stays in force. Returns the number of
    /// statements. Without a policy file there is nothing to re-read: the
    /// built-in policy stays and the result is an invalid_argument error.
    /// Thread-safe.
    Result<std::size_t> reload_policy();

    /// Writes the summary line of every uid whose second of refused calls
    /// has ended (all of them when `all`): see kRefusedAuditLinesPerSecond.
    /// The admin server calls it every second and when it stops.
    void flush_audit(bool all = false) noexcept;

    /// When true, the policy and rate limit are skipped (devcertctl --db:
    /// the file permissions of the store are the policy).
    void set_trust_all(bool trust) noexcept;

private:
    struct Impl;
    explicit Api(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

/// A fresh random RequestId: uppercase hex UUID, 8-4-4-4-12.
std::string new_request_id();

}  // namespace devcert
