// Who may call which admin operation on which instance: a policy in the shape
// of the reference's RAM policies, over the caller's OS identity.
//
//   {"Version": "1",
//    "Statement": [
//      {"Effect": "Allow",
//       "Principal": {"user": ["ops"], "group": ["mqtt-admins"], "uid": [1000]},
//       "Action": ["mq:Get*", "mq:List*"],
//       "Resource": ["local"]},
//      {"Effect": "Deny", "Principal": "*", "Action": "mq:Delete*", "Resource": "*"}]}
//
// Action and Resource take a string or a list; '*' matches any run of
// characters (Action ignores ASCII case, as RAM does; Resource does not).
// Principal is "*" or an object of lists; a statement applies to a caller
// matching any of its entries. An explicit Deny wins over any Allow.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "devcert/result.hpp"

namespace devcert {

struct Caller;

enum class PolicyDecision : std::uint8_t {
    allow,
    deny_permission,  ///< no Allow for the permission, or a Deny on every instance
    deny_instance,    ///< allowed the permission, but not on this instance
};

class AccessPolicy {
public:
    /// Parses policy text; `source` names it in errors:
    /// "admin policy '/etc/p.json' line 4: syntax error ..." or
    /// "admin policy '/etc/p.json': Statement[1].Effect must be "Allow" or "Deny"".
    static Result<AccessPolicy> parse(std::string_view text, std::string_view source);
    /// Reads and parses a file (at most 1 MiB).
    static Result<AccessPolicy> load(const std::string& path);
    /// The policy used without a file: root and `own_uid` may do everything.
    static AccessPolicy builtin(uid_t own_uid);

    /// Whether the caller holds `permission` at all (on some instance, and
    /// not denied on every instance). Checked before the parameters.
    PolicyDecision check_permission(const Caller& caller, std::string_view permission) const;
    /// The full decision for one instance.
    PolicyDecision check(const Caller& caller, std::string_view permission, std::string_view instance) const;

    std::size_t statement_count() const noexcept { return statements_.size(); }

    struct Principal {
        bool anyone = false;
        std::vector<std::string> users;
        std::vector<std::string> groups;
        std::vector<uid_t> uids;
    };
    struct Statement {
        bool allow = true;
        Principal principal;
        std::vector<std::string> actions;
        std::vector<std::string> resources;
    };

private:
    std::vector<Statement> statements_;
};

/// '*' glob match ('*' matches any run, including an empty one).
bool glob_match(std::string_view pattern, std::string_view text, bool ignore_case) noexcept;

}  // namespace devcert
