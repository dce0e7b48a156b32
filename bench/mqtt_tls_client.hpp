// What the MQTT-over-TLS bench clients (devcert_loadgen, which churns
// connections, and devcert_hold_sessions, which holds them) share: client
// identities, the TLS context, the CONNECT packet, the non-blocking start of
// a connection, and their common flags. Header-only; like tool_args.hpp it
// uses nothing of the project but the OpenSSL owners of devcert/handles.hpp,
// so the clients share nothing with what they measure.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "devcert/handles.hpp"
#include "tool_args.hpp"

namespace bench_client {

using bench_args::die;
using devcert::CDeleter;
using devcert::EvpPkeyPtr;
using devcert::UniqueFd;
using devcert::X509Ptr;
using SslCtxPtr = std::unique_ptr<SSL_CTX, CDeleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, CDeleter<SSL_free>>;

// ---------------------------------------------------------------- flags

/// --mqtt: 4 (MQTT 3.1.1) for "3", "3.1.1" or "4"; 5 for "5"; or die.
inline int parse_mqtt_version(std::string_view v) {
    if (v == "3" || v == "3.1.1" || v == "4") return 4;
    if (v == "5") return 5;
    die("--mqtt: expected 3 or 5, got '" + std::string(v) + "'");
}

/// --client-id-prefix: 1 to 40 characters, or die.
inline std::string parse_client_id_prefix(const char* text) {
    std::string prefix(text);
    if (prefix.empty() || prefix.size() > 40) die("--client-id-prefix: expected 1 to 40 characters");
    return prefix;
}

// ---------------------------------------------------------------- identities

struct Identity {
    X509Ptr cert;
    EvpPkeyPtr key;
};

inline Identity load_identity(const std::string& cert_path, const std::string& key_path) {
    devcert::BioPtr cbio(BIO_new_file(cert_path.c_str(), "r"));
    if (!cbio) die("cannot read certificate '" + cert_path + "'");
    X509Ptr cert(PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
    if (!cert) die("'" + cert_path + "' holds no PEM certificate");
    devcert::BioPtr kbio(BIO_new_file(key_path.c_str(), "r"));
    if (!kbio) die("cannot read key '" + key_path + "'");
    EvpPkeyPtr key(PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
    if (!key) die("'" + key_path + "' holds no unencrypted PEM private key");
    if (X509_check_private_key(cert.get(), key.get()) != 1)
        die("key '" + key_path + "' does not match certificate '" + cert_path + "'");
    return {std::move(cert), std::move(key)};
}

/// Every NAME.crt with a NAME.key beside it in `cert_dirs` (each sorted by
/// name), then the 'CERT KEY' lines of `cert_list` (when given); dies when
/// there are none.
inline std::vector<Identity> load_identities(const std::vector<std::string>& cert_dirs, const std::string& cert_list) {
    namespace fs = std::filesystem;
    std::vector<std::pair<std::string, std::string>> pairs;
    for (const auto& dir : cert_dirs) {
        std::error_code ec;
        std::vector<fs::path> certs;
        for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
            if (it->path().extension() == ".crt") certs.push_back(it->path());
        if (ec) die("cannot list '" + dir + "': " + ec.message());
        std::sort(certs.begin(), certs.end());
        for (const auto& c : certs) {
            fs::path k = c;
            k.replace_extension(".key");
            if (fs::exists(k)) pairs.emplace_back(c.string(), k.string());
        }
    }
    if (!cert_list.empty()) {
        std::unique_ptr<FILE, CDeleter<std::fclose>> f(std::fopen(cert_list.c_str(), "r"));
        if (!f) die("cannot read '" + cert_list + "': " + std::strerror(errno));
        char line[8192];
        while (std::fgets(line, sizeof line, f.get())) {
            char cert[4096];
            char key[4096];
            if (line[0] == '#' || line[0] == '\n') continue;
            if (std::sscanf(line, "%4095s %4095s", cert, key) != 2)
                die("'" + cert_list + "': expected lines 'CERT KEY', got '" + line + "'");
            pairs.emplace_back(cert, key);
        }
    }
    if (pairs.empty()) die("no certificate/key pairs found");
    std::vector<Identity> ids;
    ids.reserve(pairs.size());
    for (const auto& [c, k] : pairs) ids.push_back(load_identity(c, k));
    return ids;
}

// ---------------------------------------------------------------- TLS

/// A TLS 1.3 client context in which every connection pays for a full
/// handshake, as a fleet of distinct devices would: no session cache, no
/// tickets. With `ca_file`, the server is verified against it.
/// `release_buffers` gives idle connections' buffers back (for many held
/// sessions).
inline SslCtxPtr make_client_ctx(const std::string& ca_file, bool release_buffers) {
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) die("cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx.get(), TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx.get(), SSL_OP_NO_TICKET);
    if (release_buffers) SSL_CTX_set_mode(ctx.get(), SSL_MODE_RELEASE_BUFFERS);
    if (!ca_file.empty()) {
        if (SSL_CTX_load_verify_locations(ctx.get(), ca_file.c_str(), nullptr) != 1)
            die("cannot load CA file '" + ca_file + "'");
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
    } else {
        SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
    }
    return ctx;
}

enum class Started { connected, in_progress, failed };

/// Opens a non-blocking TCP socket to `addr` (TCP_NODELAY) with a TLS
/// client for `id` on it, and starts connecting, from `source` if given (its
/// port chosen at connect time). Dies when the process is out of
/// descriptors, `source` cannot be bound, or OpenSSL refuses the identity.
inline Started start_connection(SSL_CTX* ctx, const Identity& id, const sockaddr_in& addr, UniqueFd& fd,
                                SslPtr& ssl, const sockaddr_in* source = nullptr) {
    fd.reset(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) die(std::string("socket: ") + std::strerror(errno) + " (raise ulimit -n)");
    const int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (source != nullptr) {
        // The port is left to connect(), which needs only the whole
        // address pair to be unique, not the port alone.
        setsockopt(fd.get(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd.get(), reinterpret_cast<const sockaddr*>(source), sizeof *source) != 0)
            die(std::string("bind to the source address: ") + std::strerror(errno));
    }
    ssl.reset(SSL_new(ctx));
    if (!ssl) die("SSL_new failed");
    if (SSL_use_certificate(ssl.get(), id.cert.get()) != 1 || SSL_use_PrivateKey(ssl.get(), id.key.get()) != 1)
        die("cannot use a client identity");
    SSL_set_fd(ssl.get(), fd.get());
    if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return Started::connected;
    return errno == EINPROGRESS ? Started::in_progress : Started::failed;
}

/// After a non-blocking connect reported writable: whether it succeeded.
inline bool connect_succeeded(int fd) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return err == 0;
}

// ---------------------------------------------------------------- MQTT

inline void put_u16(std::string& b, std::size_t v) {
    b.push_back(static_cast<char>((v >> 8) & 0xff));
    b.push_back(static_cast<char>(v & 0xff));
}

inline void put_varint(std::string& b, std::size_t v) {
    do {
        auto byte = static_cast<unsigned char>(v % 128);
        v /= 128;
        if (v > 0) byte = static_cast<unsigned char>(byte | 0x80);
        b.push_back(static_cast<char>(byte));
    } while (v > 0);
}

/// CONNECT (MQTT 3.1.1 for version 4, 5 for 5) with a clean session, no
/// username or password, and no properties.
inline std::string connect_packet(int version, unsigned keepalive, std::string_view client_id) {
    std::string body;
    put_u16(body, 4);
    body += "MQTT";
    body.push_back(static_cast<char>(version));
    body.push_back(0x02);  // clean session / clean start
    put_u16(body, keepalive);
    if (version == 5) put_varint(body, 0);
    put_u16(body, client_id.size());
    body += client_id;
    std::string packet(1, '\x10');
    put_varint(packet, body.size());
    return packet + body;
}

}  // namespace bench_client
