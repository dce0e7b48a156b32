#include <catch2/catch.hpp>

#include "store_fixture.hpp"

using namespace devcert;
using namespace devcert::test;

namespace {

// Three CAs; "0b" holds 250 devices, the others a few, so per-CA pages must
// not bleed into neighbouring CAs.
void populate(Store& store) {
    must_write(store, [&](WriteView& v) -> Outcome {
        for (const char* ca : {"0a", "0b", "0c"})
            if (auto r = v.insert_ca(make_ca(ca), "R", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= 3; ++i)
            if (auto r = v.insert_device(make_device("0a", serial_for(i)), "A", "t"); !r) return r;
        // Inserted out of order: listing order comes from the keys.
        for (std::uint64_t i = 250; i >= 1; --i)
            if (auto r = v.insert_device(make_device("0b", serial_for(i)), "A", "t"); !r) return r;
        for (std::uint64_t i = 1; i <= 2; ++i)
            if (auto r = v.insert_device(make_device("0c", serial_for(i)), "A", "t"); !r) return r;
        return Ok{};
    });
}

std::vector<std::string> device_sns(const PageResult<DeviceRecord>& page) {
    std::vector<std::string> out;
    for (const auto& d : page.items) out.push_back(d.device_sn);
    return out;
}

}  // namespace

TEST_CASE("pages of one CA's devices cover it exactly, in serial order", "[store][paging]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    must_read(*store, [&](ReadView& v) {
        for (std::uint32_t size : {1u, 7u, 100u}) {
            std::vector<std::string> seen;
            const std::uint32_t pages = (250 + size - 1) / size;
            for (std::uint32_t no = 1; no <= pages; ++no) {
                auto page = v.list_devices_by_ca("0b", Page{no, size});
                REQUIRE(page.ok());
                CHECK(page->total == 250);
                const std::size_t expected = no < pages ? size : 250 - (pages - 1) * size;
                REQUIRE(page->items.size() == expected);
                for (const auto& d : page->items) {
                    CHECK(d.ca_sn == "0b");
                    seen.push_back(d.device_sn);
                }
            }
            REQUIRE(seen.size() == 250);
            for (std::uint64_t i = 0; i < 250; ++i) CHECK(seen[i] == serial_for(i + 1));
        }
    });
}

TEST_CASE("a page past the end is empty but still reports the total", "[store][paging]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    must_read(*store, [&](ReadView& v) {
        auto past = v.list_devices_by_ca("0b", Page{4, 100});
        REQUIRE(past.ok());
        CHECK(past->items.empty());
        CHECK(past->total == 250);
        auto far = v.list_devices(Page{1'000'000, 100});
        REQUIRE(far.ok());
        CHECK(far->items.empty());
        CHECK(far->total == 255);
        auto last_ca = v.list_devices_by_ca("0c", Page{2, 2});
        REQUIRE(last_ca.ok());
        CHECK(last_ca->items.empty());
        CHECK(last_ca->total == 2);
    });
}

TEST_CASE("page zero and size zero are refused", "[store][paging]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    must_read(*store, [&](ReadView& v) {
        CHECK(v.list_devices(Page{0, 10}).error().code == Errc::invalid_argument);
        CHECK(v.list_cas(Page{1, 0}).error().code == Errc::invalid_argument);
    });
}

TEST_CASE("the global device list runs through CAs in (CaSn, DeviceSn) order", "[store][paging]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    must_read(*store, [&](ReadView& v) {
        auto first = v.list_devices(Page{1, 5});
        REQUIRE(first.ok());
        CHECK(first->total == 255);
        REQUIRE(first->items.size() == 5);
        CHECK(first->items[0].ca_sn == "0a");
        CHECK(first->items[2].ca_sn == "0a");
        CHECK(first->items[3].ca_sn == "0b");
        CHECK(first->items[3].device_sn == serial_for(1));
        auto last = v.list_devices(Page{3, 100});
        REQUIRE(last.ok());
        REQUIRE(last->items.size() == 55);
        CHECK(last->items.back().ca_sn == "0c");
        CHECK(device_sns(*last).back() == serial_for(2));
    });
}

TEST_CASE("CAs list in Sn order with their device counts", "[store][paging]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    must_read(*store, [&](ReadView& v) {
        auto page = v.list_cas(Page{1, 100});
        REQUIRE(page.ok());
        CHECK(page->total == 3);
        REQUIRE(page->items.size() == 3);
        CHECK(page->items[0].sn == "0a");
        CHECK(page->items[1].device_count == 250);
        CHECK(page->items[2].sn == "0c");
        auto second = v.list_cas(Page{2, 2});
        REQUIRE(second.ok());
        REQUIRE(second->items.size() == 1);
        CHECK(second->items[0].sn == "0c");
    });
}

TEST_CASE("totals stay right after deleting devices and CAs", "[store][paging]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    must_write(*store, [&](WriteView& v) -> Outcome {
        for (std::uint64_t i = 1; i <= 50; ++i)
            if (auto r = v.delete_device("0b", serial_for(i * 5), "D", "t"); !r) return r;
        auto removed = v.delete_ca("0a", "D", "t");
        return removed ? Outcome(Ok{}) : Outcome(removed.error());
    });
    must_read(*store, [&](ReadView& v) {
        auto b = v.list_devices_by_ca("0b", Page{2, 100});
        REQUIRE(b.ok());
        CHECK(b->total == 200);
        CHECK(b->items.size() == 100);
        auto b_last = v.list_devices_by_ca("0b", Page{3, 100});
        CHECK(b_last->items.empty());
        auto all = v.list_devices(Page{1, 1});
        CHECK(all->total == 202);
        CHECK(all->items[0].ca_sn == "0b");
        CHECK(*v.device_count() == 202);
        CHECK(v.list_cas(Page{1, 10})->total == 2);
        CHECK(v.list_devices_by_ca("0a", Page{}).error().code == Errc::not_found);
    });
}

namespace {

// Walks a list to its end; returns the serials and the steps it cost.
template <class List>
std::pair<std::vector<std::string>, std::uint64_t> walk_all(Store& store, std::uint32_t size, List&& list, bool by_token) {
    std::vector<std::string> seen;
    const std::uint64_t before = store.records_walked();
    Page page{1, size};
    for (;;) {
        PageResult<DeviceRecord> result;
        must_read(store, [&](ReadView& v) { result = *list(v, page); });
        for (const auto& d : result.items) seen.push_back(d.ca_sn + "/" + d.device_sn);
        if (by_token) {
            if (result.next.empty()) break;
            page.after = result.next;
        } else {
            if (result.items.size() < size) break;
            ++page.page_no;
        }
    }
    return {seen, store.records_walked() - before};
}

}  // namespace

TEST_CASE("walking a whole list with tokens costs O(N) steps, with page numbers O(N^2)", "[store][paging][token]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    auto by_ca = [](ReadView& v, const Page& p) { return v.list_devices_by_ca("0b", p); };
    auto all = [](ReadView& v, const Page& p) { return v.list_devices(p); };

    const auto [numbered, numbered_cost] = walk_all(*store, 5, by_ca, false);
    const auto [tokens, token_cost] = walk_all(*store, 5, by_ca, true);
    CHECK(tokens == numbered);
    REQUIRE(tokens.size() == 250);
    // Each page: one seek, its records, one look past the end.
    CHECK(token_cost <= 250 + 2 * 50);
    CHECK(numbered_cost > 250 * 50 / 2);

    const auto [everything, cost] = walk_all(*store, 100, all, true);
    CHECK(everything.size() == 255);
    CHECK(cost <= 255 + 2 * 3);
}

TEST_CASE("a token is refused by another list, another CA's list and when altered", "[store][paging][token]") {
    TempDir dir;
    auto store = open_store(dir.path());
    populate(*store);
    std::string token;
    must_read(*store, [&](ReadView& v) { token = v.list_devices_by_ca("0b", Page{1, 10})->next; });
    REQUIRE_FALSE(token.empty());
    must_read(*store, [&](ReadView& v) {
        Page page{1, 10};
        page.after = token;
        CHECK(v.list_devices_by_ca("0b", page).ok());
        CHECK(v.list_devices_by_ca("0a", page).error().code == Errc::invalid_argument);
        CHECK(v.list_devices(page).error().code == Errc::invalid_argument);
        CHECK(v.list_cas(page).error().code == Errc::invalid_argument);
        page.after = token.substr(1);
        CHECK(v.list_devices_by_ca("0b", page).error().code == Errc::invalid_argument);
        page.after = token + "A";
        CHECK(v.list_devices_by_ca("0b", page).error().code == Errc::invalid_argument);
    });
    // Tokens survive reopening (the key is the store's, not the process's).
    store.reset();
    store = open_store(dir.path());
    must_read(*store, [&](ReadView& v) {
        Page page{1, 10};
        page.after = token;
        auto next = v.list_devices_by_ca("0b", page);
        REQUIRE(next.ok());
        CHECK(next->items.front().device_sn == serial_for(11));
    });
}
