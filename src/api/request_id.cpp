#include <openssl/rand.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <random>

#include "devcert/api.hpp"

namespace devcert {

std::string new_request_id() {
    std::array<unsigned char, 16> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        // The DRBG failing is near impossible once seeded; a RequestId only
        // needs to be unique, so fall back rather than fail the call.
        static thread_local std::mt19937_64 fallback{std::random_device{}() ^
                                                     static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
        for (auto& b : bytes) b = static_cast<unsigned char>(fallback());
    }
    bytes[6] = static_cast<unsigned char>((bytes[6] & 0x0f) | 0x40);  // version 4
    bytes[8] = static_cast<unsigned char>((bytes[8] & 0x3f) | 0x80);  // RFC 4122 variant
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string id;
    id.reserve(36);
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) id.push_back('-');
        id.push_back(kHex[bytes[i] >> 4]);
        id.push_back(kHex[bytes[i] & 0x0f]);
    }
    return id;
}

}  // namespace devcert
