#include <catch2/catch.hpp>
#include <openssl/err.h>

#include <string>

#include "devcert/certificate.hpp"
#include "devcert/serial.hpp"
#include "pki.hpp"

using namespace devcert;

namespace {

// The issuer's Sn as the index reports it, "" for "no registered issuer".
std::string issuer_of(const IssuerIndex& index, const test::Issued& leaf) {
    const std::string* sn = index.find_issuer(leaf.cert.get());
    return sn ? *sn : std::string();
}

std::string sn_of(const test::Issued& ca) {
    auto info = validate_ca_certificate(ca.cert.get());
    REQUIRE(info.ok());
    return info->serial;
}

void add(IssuerIndex& index, const test::Issued& ca) {
    index.add(sn_of(ca), ca.cert.get());
}

// A certificate that travelled as PEM, as the broker hands it over.
test::Issued reparsed(const test::Issued& issued) {
    auto cert = parse_pem_certificate(issued.pem());
    REQUIRE(cert.ok());
    return test::Issued{std::move(cert.value()), {}};
}

}  // namespace

TEST_CASE("a leaf signed by a registered root resolves to that root", "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "0a01", .common_name = "Issuer Root"});
    auto other = test::make_root({.serial_hex = "0a02", .common_name = "Other Root"});
    auto leaf = test::issue({.serial_hex = "01", .common_name = "device-1"}, root);

    IssuerIndex index;
    add(index, other);
    add(index, root);
    CHECK(issuer_of(index, leaf) == "0a01");
    CHECK(issuer_of(index, reparsed(leaf)) == "0a01");
}

TEST_CASE("a leaf signed by a registered intermediate resolves to the intermediate", "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "0b01", .common_name = "Chain Root"});
    auto inter = test::issue({.serial_hex = "0b02", .common_name = "Chain Intermediate", .is_ca = true}, root);
    auto leaf = test::issue({.serial_hex = "02", .common_name = "device-2"}, inter);

    IssuerIndex index;
    add(index, root);
    add(index, inter);
    CHECK(issuer_of(index, leaf) == "0b02");
    // The intermediate itself resolves to the root.
    CHECK(issuer_of(index, inter) == "0b01");
}

TEST_CASE("a leaf of an intermediate has no registered issuer when only the root is registered",
          "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "0c01", .common_name = "Only Root"});
    auto inter = test::issue({.serial_hex = "0c02", .common_name = "Unregistered Intermediate", .is_ca = true}, root);
    auto leaf = test::issue({.serial_hex = "03", .common_name = "device-3"}, inter);

    IssuerIndex index;
    add(index, root);
    CHECK(index.find_issuer(leaf.cert.get()) == nullptr);
}

TEST_CASE("a leaf without an authority key identifier resolves by issuer name", "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "0d01", .common_name = "Name Root"});
    auto leaf = test::issue({.serial_hex = "04", .common_name = "device-4", .authority_key_id = false}, root);
    REQUIRE(X509_get0_authority_key_id(leaf.cert.get()) == nullptr);

    IssuerIndex index;
    add(index, root);
    CHECK(issuer_of(index, leaf) == "0d01");
}

TEST_CASE("a CA without a subject key identifier is found by name for leaves with or without an AKI",
          "[identity][issuer]") {
    auto root = test::make_root(
        {.serial_hex = "0e01", .common_name = "No SKI Root", .subject_key_id = false, .authority_key_id = false});
    REQUIRE(X509_get0_subject_key_id(root.cert.get()) == nullptr);
    auto with_aki = test::issue({.serial_hex = "05", .common_name = "device-5"}, root);
    auto without_aki = test::issue({.serial_hex = "06", .common_name = "device-6", .authority_key_id = false}, root);
    REQUIRE(X509_get0_authority_key_id(with_aki.cert.get()) != nullptr);

    IssuerIndex index;
    add(index, root);
    CHECK(issuer_of(index, with_aki) == "0e01");
    CHECK(issuer_of(index, without_aki) == "0e01");
}

TEST_CASE("a leaf of an intermediate without key identifiers resolves by name", "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "0f01", .common_name = "Plain Root"});
    auto inter = test::issue({.serial_hex = "0f02",
                              .common_name = "Plain Intermediate",
                              .is_ca = true,
                              .subject_key_id = false,
                              .authority_key_id = false},
                             root);
    auto leaf = test::issue(
        {.serial_hex = "07", .common_name = "device-7", .subject_key_id = false, .authority_key_id = false}, inter);

    IssuerIndex index;
    add(index, root);
    add(index, inter);
    CHECK(issuer_of(index, leaf) == "0f02");
    CHECK(issuer_of(index, inter) == "0f01");
}

TEST_CASE("a leaf signed by an unregistered CA has no registered issuer", "[identity][issuer]") {
    auto registered = test::make_root({.serial_hex = "1001", .common_name = "Registered Root"});
    auto stranger = test::make_root({.serial_hex = "1002", .common_name = "Stranger Root"});
    auto leaf = test::issue({.serial_hex = "08", .common_name = "device-8"}, stranger);

    IssuerIndex index;
    CHECK(index.find_issuer(leaf.cert.get()) == nullptr);
    add(index, registered);
    CHECK(index.find_issuer(leaf.cert.get()) == nullptr);
    const std::string* found[4];
    CHECK(index.candidates(leaf.cert.get(), found, 4) == 0);
}

TEST_CASE("a leaf of a CA with the same name but another key has no registered issuer", "[identity][issuer]") {
    auto genuine = test::make_root({.serial_hex = "1101", .common_name = "Shared Name", .organization = "Acme"});
    auto impostor = test::make_root({.serial_hex = "1102", .common_name = "Shared Name", .organization = "Acme"});
    auto leaf_with_aki = test::issue({.serial_hex = "09", .common_name = "device-9"}, impostor);
    auto leaf_without_aki =
        test::issue({.serial_hex = "0a", .common_name = "device-10", .authority_key_id = false}, impostor);

    IssuerIndex index;
    add(index, genuine);
    CHECK(index.find_issuer(leaf_with_aki.cert.get()) == nullptr);
    CHECK(index.find_issuer(leaf_without_aki.cert.get()) == nullptr);
    CHECK(index.find_issuer(reparsed(leaf_without_aki).cert.get()) == nullptr);

    // The name alone makes the genuine CA a candidate; only the signature
    // check rules it out.
    const std::string* found[4];
    REQUIRE(index.candidates(leaf_without_aki.cert.get(), found, 4) == 1);
    CHECK(*found[0] == "1101");
}

TEST_CASE("of two registered CAs sharing a name, the one whose key signed the leaf is chosen", "[identity][issuer]") {
    auto first = test::make_root({.serial_hex = "1201", .common_name = "Twin"});
    auto second = test::make_root({.serial_hex = "1202", .common_name = "Twin"});
    auto leaf_with_aki = test::issue({.serial_hex = "0b", .common_name = "device-11"}, second);
    auto leaf_without_aki =
        test::issue({.serial_hex = "0c", .common_name = "device-12", .authority_key_id = false}, second);

    IssuerIndex index;
    add(index, first);
    add(index, second);
    CHECK(issuer_of(index, leaf_with_aki) == "1202");
    CHECK(issuer_of(index, leaf_without_aki) == "1202");

    // The key identifier puts the right CA first; by name both follow in
    // registration order.
    const std::string* found[4];
    REQUIRE(index.candidates(leaf_with_aki.cert.get(), found, 4) == 2);
    CHECK(*found[0] == "1202");
    CHECK(*found[1] == "1201");
    REQUIRE(index.candidates(leaf_without_aki.cert.get(), found, 4) == 2);
    CHECK(*found[0] == "1201");
    CHECK(*found[1] == "1202");
}

TEST_CASE("an intermediate re-issued with another key does not vouch for leaves of the old one",
          "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "1301", .common_name = "Rekey Root"});
    auto old_inter = test::issue({.serial_hex = "1302", .common_name = "Rekeyed CA", .is_ca = true}, root);
    auto new_inter = test::issue({.serial_hex = "1303", .common_name = "Rekeyed CA", .is_ca = true}, root);
    auto old_leaf = test::issue({.serial_hex = "0d", .common_name = "device-13"}, old_inter);

    IssuerIndex index;
    add(index, new_inter);
    CHECK(index.find_issuer(old_leaf.cert.get()) == nullptr);

    // A CA re-issued with the same key keeps vouching for its leaves.
    auto same_key = test::issue_with_key({.serial_hex = "1304", .common_name = "Rekeyed CA", .is_ca = true}, root,
                                         EvpPkeyPtr(EVP_PKEY_dup(old_inter.key.get())));
    add(index, same_key);
    CHECK(issuer_of(index, old_leaf) == "1304");
}

TEST_CASE("candidates stop at the caller's capacity", "[identity][issuer]") {
    IssuerIndex index;
    test::Issued twins[3] = {
        test::make_root({.serial_hex = "1401", .common_name = "Crowd"}),
        test::make_root({.serial_hex = "1402", .common_name = "Crowd"}),
        test::make_root({.serial_hex = "1403", .common_name = "Crowd"}),
    };
    for (const auto& ca : twins) add(index, ca);
    auto leaf = test::issue({.serial_hex = "0e", .common_name = "device-14", .authority_key_id = false}, twins[2]);

    const std::string* found[3] = {};
    CHECK(index.candidates(leaf.cert.get(), found, 2) == 2);
    CHECK(found[2] == nullptr);
    CHECK(index.candidates(leaf.cert.get(), found, 0) == 0);
    CHECK(index.candidates(leaf.cert.get(), found, 3) == 3);
    CHECK(issuer_of(index, leaf) == "1403");
}

TEST_CASE("the index can add, replace, remove and clear CAs", "[identity][issuer]") {
    auto a = test::make_root({.serial_hex = "1501", .common_name = "Root A"});
    auto b = test::make_root({.serial_hex = "1502", .common_name = "Root B"});
    auto leaf_a = test::issue({.serial_hex = "0f", .common_name = "device-15"}, a);

    IssuerIndex index;
    CHECK(index.size() == 0);
    add(index, a);
    add(index, b);
    CHECK(index.size() == 2);
    CHECK(index.contains("1501"));
    CHECK(index.contains("1502"));
    CHECK_FALSE(index.contains("1503"));
    CHECK(issuer_of(index, leaf_a) == "1501");

    // Registering another certificate under a taken Sn replaces the entry.
    index.add("1501", b.cert.get());
    CHECK(index.size() == 2);
    CHECK(index.find_issuer(leaf_a.cert.get()) == nullptr);
    index.add("1501", a.cert.get());

    index.remove("1501");
    CHECK(index.size() == 1);
    CHECK_FALSE(index.contains("1501"));
    CHECK(index.find_issuer(leaf_a.cert.get()) == nullptr);
    index.remove("nothing-here");
    CHECK(index.size() == 1);

    index.clear();
    CHECK(index.size() == 0);
    CHECK_FALSE(index.contains("1502"));
}

TEST_CASE("the index keeps its own reference to each CA certificate", "[identity][issuer]") {
    auto leaf_holder = test::make_root({.serial_hex = "1601", .common_name = "Short Lived Root"});
    auto leaf = test::issue({.serial_hex = "10", .common_name = "device-16"}, leaf_holder);
    IssuerIndex index;
    {
        auto parsed = parse_pem_certificate(leaf_holder.pem());
        REQUIRE(parsed.ok());
        index.add("1601", parsed->get());
    }  // the caller's reference is gone here
    CHECK(issuer_of(index, leaf) == "1601");
}

TEST_CASE("failed signature checks leave no errors on the OpenSSL error queue", "[identity][issuer]") {
    auto genuine = test::make_root({.serial_hex = "1701", .common_name = "Quiet"});
    auto impostor = test::make_root({.serial_hex = "1702", .common_name = "Quiet"});
    auto leaf = test::issue({.serial_hex = "11", .common_name = "device-17", .authority_key_id = false}, impostor);

    IssuerIndex index;
    add(index, genuine);
    ERR_clear_error();
    CHECK(index.find_issuer(leaf.cert.get()) == nullptr);
    CHECK(ERR_peek_error() == 0);
}

TEST_CASE("a null leaf has no issuer and no candidates", "[identity][issuer]") {
    auto root = test::make_root({.serial_hex = "1801", .common_name = "Null Root"});
    IssuerIndex index;
    add(index, root);
    CHECK(index.find_issuer(nullptr) == nullptr);
    const std::string* found[1];
    CHECK(index.candidates(nullptr, found, 1) == 0);
}
