// The digest of a change-log entry: how a fleet replica recognises the
// change it applied at a seq (see fleet_follower.hpp). In the store library
// because the replica records it with its position.
#include <cstdint>
#include <optional>
#include <string_view>

#include "devcert/store.hpp"

namespace devcert {

namespace {

// FNV-1a, 64-bit: stable across builds and platforms, which is all a
// "same change?" check needs (this is not a defence against an attacker
// who can write to the database).
class Fnv {
public:
    void bytes(std::string_view s) noexcept {
        u64(s.size());
        for (unsigned char c : s) mix(c);
    }
    void u64(std::uint64_t v) noexcept {
        for (int i = 0; i < 8; ++i) mix(static_cast<unsigned char>(v >> (8 * i)));
    }
    void status(const std::optional<CertStatus>& s) noexcept { mix(s ? static_cast<unsigned char>(*s) : 0xffu); }
    std::uint64_t value() const noexcept { return h_; }

private:
    void mix(unsigned char c) noexcept {
        h_ ^= c;
        h_ *= 0x100000001b3ull;
    }
    std::uint64_t h_ = 0xcbf29ce484222325ull;
};

}  // namespace

std::uint64_t change_digest(const ChangeEntry& e) noexcept {
    Fnv f;
    f.u64(e.seq);
    f.u64(static_cast<std::uint64_t>(e.time_ms));
    f.bytes(e.action);
    f.bytes(e.ca_sn);
    f.bytes(e.device_sn);
    f.status(e.old_status);
    f.status(e.new_status);
    f.bytes(e.caller);
    return f.value();
}

}  // namespace devcert
