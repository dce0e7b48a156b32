// Owners for every C handle the project touches, defined once. Each handle
// gets its owner the moment it is created.
#pragma once

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <memory>
#include <utility>

namespace devcert {

template <auto Fn>
struct CDeleter {
    template <class T>
    void operator()(T* p) const noexcept {
        if (p) Fn(p);
    }
};

using X509Ptr = std::unique_ptr<X509, CDeleter<X509_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, CDeleter<X509_NAME_free>>;
using BioPtr = std::unique_ptr<BIO, CDeleter<BIO_free_all>>;
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, CDeleter<EVP_PKEY_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, CDeleter<BN_free>>;
using Asn1IntegerPtr = std::unique_ptr<ASN1_INTEGER, CDeleter<ASN1_INTEGER_free>>;
using AuthorityKeyIdPtr = std::unique_ptr<AUTHORITY_KEYID, CDeleter<AUTHORITY_KEYID_free>>;
using Asn1OctetStringPtr = std::unique_ptr<ASN1_OCTET_STRING, CDeleter<ASN1_OCTET_STRING_free>>;
using BasicConstraintsPtr = std::unique_ptr<BASIC_CONSTRAINTS, CDeleter<BASIC_CONSTRAINTS_free>>;
using EvpMdCtxPtr = std::unique_ptr<EVP_MD_CTX, CDeleter<EVP_MD_CTX_free>>;

/// Move-only owner of a POSIX file descriptor.
class UniqueFd {
public:
    UniqueFd() noexcept = default;
    explicit UniqueFd(int fd) noexcept : fd_(fd) {}
    UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& o) noexcept {
        if (this != &o) reset(std::exchange(o.fd_, -1));
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const noexcept { return fd_; }
    explicit operator bool() const noexcept { return fd_ >= 0; }
    int release() noexcept { return std::exchange(fd_, -1); }
    void reset(int fd = -1) noexcept {
        if (fd_ >= 0) ::close(fd_);
        fd_ = fd;
    }

private:
    int fd_ = -1;
};

}  // namespace devcert
