#include "page_token.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <array>
#include <cstdint>

namespace devcert::page_token {

namespace {

constexpr char kVersion = 1;
// 128 bits of HMAC-SHA256: plenty against guessing, and keeps tokens short.
constexpr std::size_t kMacSize = 16;
constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::array<unsigned char, kMacSize> mac(std::string_view secret, std::string_view list, std::string_view payload) {
    // The list's name is sealed with the position: a token of one list is
    // no token of another.
    std::string message;
    message.reserve(list.size() + 1 + payload.size());
    message.append(list).push_back('\0');
    message.append(payload);
    unsigned char full[EVP_MAX_MD_SIZE];
    unsigned int length = 0;
    HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
         reinterpret_cast<const unsigned char*>(message.data()), message.size(), full, &length);
    std::array<unsigned char, kMacSize> out{};
    std::copy(full, full + kMacSize, out.begin());
    return out;
}

std::string base64url(std::string_view bytes) {
    std::string out;
    out.reserve((bytes.size() * 4 + 2) / 3);
    std::uint32_t buffer = 0;
    int bits = 0;
    for (const char c : bytes) {
        buffer = (buffer << 8) | static_cast<unsigned char>(c);
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(kAlphabet[(buffer >> bits) & 0x3f]);
        }
    }
    if (bits > 0) out.push_back(kAlphabet[(buffer << (6 - bits)) & 0x3f]);
    return out;
}

std::optional<std::string> from_base64url(std::string_view text) {
    std::string out;
    out.reserve(text.size() * 3 / 4);
    std::uint32_t buffer = 0;
    int bits = 0;
    for (const char c : text) {
        const auto at = kAlphabet.find(c);
        if (at == std::string_view::npos) return std::nullopt;
        buffer = (buffer << 6) | static_cast<std::uint32_t>(at);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((buffer >> bits) & 0xff));
        }
    }
    // Only the zero padding bits of a canonical encoding may be left over.
    if (bits >= 6 || (buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
    return out;
}

}  // namespace

std::string seal(std::string_view secret, std::string_view list, std::string_view key) {
    std::string payload(1, kVersion);
    payload.append(key);
    const auto tag = mac(secret, list, payload);
    payload.append(reinterpret_cast<const char*>(tag.data()), tag.size());
    return base64url(payload);
}

std::optional<std::string> open(std::string_view secret, std::string_view list, std::string_view token) {
    auto raw = from_base64url(token);
    if (!raw || raw->size() < 1 + kMacSize || (*raw)[0] != kVersion) return std::nullopt;
    const std::string_view payload(raw->data(), raw->size() - kMacSize);
    const auto expected = mac(secret, list, payload);
    if (CRYPTO_memcmp(expected.data(), raw->data() + payload.size(), kMacSize) != 0) return std::nullopt;
    return std::string(payload.substr(1));
}

}  // namespace devcert::page_token
