// CheckFleet: a replica's records against the fleet's, merged in key order.
// The fleet streams its snapshot (Fleet::snapshot) while the replica is
// walked page by page inside one read transaction, so neither side is held
// in memory; only the mismatches are, up to a bound.
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "devcert/fleet_tools.hpp"

namespace devcert {

namespace {

constexpr std::uint32_t kPageSize = 1000;
/// Mismatches held until they can be told apart from changes in flight;
/// past this many the rest are differences without a description.
constexpr std::size_t kMaxHeldMismatches = 100'000;
/// Fleet changes read to find the records in flight; a replica further
/// behind than this is reported as behind, its mismatches as differences.
constexpr std::uint64_t kMaxInFlightChanges = 200'000;
constexpr std::size_t kChangesPerRead = 10'000;

using Key = std::pair<std::string, std::string>;  // (CaSn, DeviceSn); DeviceSn "" for a CA

struct Mismatch {
    enum class Kind : std::uint8_t { differs, only_in_replica, only_in_fleet };
    Key key;
    Kind kind = Kind::differs;
    std::string text;
    /// A CA whose device count is all that differs: (replica's, fleet's).
    std::optional<std::pair<std::uint64_t, std::uint64_t>> device_counts;
};

std::string hex(std::string_view raw) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : raw) {
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
    }
    return out;
}

std::string fp(const Sha256& f) { return hex({reinterpret_cast<const char*>(f.data()), f.size()}); }

/// Collects "field (replica X, fleet Y)" for the fields that differ; long
/// values (PEM) are named only.
class FieldDiff {
public:
    template <class T>
    void value(const char* name, const T& replica, const T& fleet) {
        if (replica != fleet) parts_.push_back(fmt::format("{} (replica {}, fleet {})", name, replica, fleet));
    }
    void text(const char* name, const std::string& replica, const std::string& fleet) {
        if (replica != fleet) parts_.push_back(fmt::format("{} differs", name));
    }
    bool empty() const noexcept { return parts_.empty(); }
    std::string joined() const { return fmt::format("{}", fmt::join(parts_, ", ")); }

private:
    std::vector<std::string> parts_;
};

int num(CertStatus s) { return static_cast<int>(s); }
int num(RegisteredBy r) { return static_cast<int>(r); }

/// The fields of a CA that differ; a difference in its device count alone
/// is noted in `m` (a queued registration may explain it).
std::string compare_ca(const CaRecord& r, const CaRecord& f, Mismatch& m) {
    FieldDiff d;
    d.value("status", num(r.status), num(f.status));
    d.text("name", r.name, f.name);
    d.text("content", r.content_pem, f.content_pem);
    d.text("verification content", r.verification_pem, f.verification_pem);
    d.text("registration code", r.registration_code, f.registration_code);
    d.value("valid_begin_ms", r.valid_begin_ms, f.valid_begin_ms);
    d.value("valid_end_ms", r.valid_end_ms, f.valid_end_ms);
    d.value("created_ms", r.created_ms, f.created_ms);
    d.value("updated_ms", r.updated_ms, f.updated_ms);
    d.value("status_changed_ms", r.status_changed_ms, f.status_changed_ms);
    d.value("registered_by", num(r.registered_by), num(f.registered_by));
    d.value("subject_key_id", hex(r.subject_key_id), hex(f.subject_key_id));
    d.value("fingerprint", fp(r.fingerprint), fp(f.fingerprint));
    const bool others_equal = d.empty();
    d.value("device_count", r.device_count, f.device_count);
    if (others_equal && !d.empty()) m.device_counts.emplace(r.device_count, f.device_count);
    return d.empty() ? std::string() : d.joined();
}

std::string compare_device(const DeviceRecord& r, const DeviceRecord& f, Mismatch&) {
    FieldDiff d;
    d.value("status", num(r.status), num(f.status));
    d.text("name", r.device_name, f.device_name);
    d.text("content", r.content_pem, f.content_pem);
    d.value("valid_begin_ms", r.valid_begin_ms, f.valid_begin_ms);
    d.value("valid_end_ms", r.valid_end_ms, f.valid_end_ms);
    d.value("created_ms", r.created_ms, f.created_ms);
    d.value("updated_ms", r.updated_ms, f.updated_ms);
    d.value("status_changed_ms", r.status_changed_ms, f.status_changed_ms);
    d.value("registered_by", num(r.registered_by), num(f.registered_by));
    d.value("fingerprint", fp(r.fingerprint), fp(f.fingerprint));
    return d.empty() ? std::string() : d.joined();
}

std::string describe(const Key& k) {
    return k.second.empty() ? fmt::format("ca {}", k.first) : fmt::format("device {}/{}", k.first, k.second);
}

/// The replica's records of one list, page by page, with a look at the next.
template <class T>
class Pager {
public:
    using List = std::function<Result<PageResult<T>>(Page)>;
    explicit Pager(List list) : list_(std::move(list)) {}

    /// The next record, or nullptr at the end.
    Result<const T*> peek() {
        if (at_ < page_.items.size()) return &page_.items[at_];
        if (done_) return static_cast<const T*>(nullptr);
        Page page(1, kPageSize);
        page.after = std::move(page_.next);
        auto next = list_(page);
        if (!next) return next.error();
        page_ = std::move(*next);
        at_ = 0;
        done_ = page_.next.empty();
        if (page_.items.empty()) return static_cast<const T*>(nullptr);
        return &page_.items[0];
    }
    void advance() noexcept { ++at_; }

private:
    List list_;
    PageResult<T> page_;
    std::size_t at_ = 0;
    bool done_ = false;
};

Key key_of(const CaRecord& r) { return {r.sn, std::string()}; }
Key key_of(const DeviceRecord& r) { return {r.ca_sn, r.device_sn}; }

/// Merges the fleet's snapshot with the replica's walk.
class Comparer final : public FleetSnapshotSink {
public:
    explicit Comparer(ReadView& replica)
        : cas_([&replica](Page p) { return replica.list_cas(p); }),
          devices_([&replica](Page p) { return replica.list_devices(p); }) {}

    Outcome ca(const CaRecord& rec) override {
        return merge(cas_, rec, compared_cas, compare_ca);
    }
    Outcome device(const DeviceRecord& rec) override {
        if (!cas_done_) {
            if (auto r = drain(cas_, compared_cas); !r) return r;
            cas_done_ = true;
        }
        return merge(devices_, rec, compared_devices, compare_device);
    }
    /// The replica's records past the fleet's last.
    Outcome finish() {
        if (auto r = drain(cas_, compared_cas); !r) return r;
        cas_done_ = true;
        return drain(devices_, compared_devices);
    }

    std::uint64_t compared_cas = 0;
    std::uint64_t compared_devices = 0;
    std::vector<Mismatch> mismatches;
    std::uint64_t overflow = 0;  ///< mismatches past kMaxHeldMismatches

private:
    void mismatch(Mismatch m) {
        if (mismatches.size() < kMaxHeldMismatches)
            mismatches.push_back(std::move(m));
        else
            ++overflow;
    }
    void one_sided(Key key, Mismatch::Kind kind) {
        Mismatch m;
        m.text = fmt::format("{}: only in the {}", describe(key),
                             kind == Mismatch::Kind::only_in_replica ? "replica" : "fleet");
        m.key = std::move(key);
        m.kind = kind;
        mismatch(std::move(m));
    }

    template <class T, class Compare>
    Outcome merge(Pager<T>& pager, const T& fleet, std::uint64_t& compared, Compare&& compare) {
        const Key fleet_key = key_of(fleet);
        for (;;) {
            auto next = pager.peek();
            if (!next) return next.error();
            const T* replica = *next;
            if (replica == nullptr) break;
            Key replica_key = key_of(*replica);
            if (replica_key == fleet_key) {
                ++compared;
                Mismatch m;
                if (std::string diff = compare(*replica, fleet, m); !diff.empty()) {
                    m.text = fmt::format("{}: {}", describe(fleet_key), diff);
                    m.key = fleet_key;
                    mismatch(std::move(m));
                }
                pager.advance();
                return Ok{};
            }
            if (fleet_key < replica_key) break;
            ++compared;
            one_sided(std::move(replica_key), Mismatch::Kind::only_in_replica);
            pager.advance();
        }
        ++compared;
        one_sided(fleet_key, Mismatch::Kind::only_in_fleet);
        return Ok{};
    }

    template <class T>
    Outcome drain(Pager<T>& pager, std::uint64_t& compared) {
        for (;;) {
            auto next = pager.peek();
            if (!next) return next.error();
            if (*next == nullptr) return Ok{};
            ++compared;
            one_sided(key_of(**next), Mismatch::Kind::only_in_replica);
            pager.advance();
        }
    }

    Pager<CaRecord> cas_;
    Pager<DeviceRecord> devices_;
    bool cas_done_ = false;
};

/// Records touched by the fleet's changes in (from, to]; nullopt when they
/// cannot all be read (trimmed, or too many).
Result<std::optional<std::set<Key>>> touched_between(Fleet& fleet, std::uint64_t from, std::uint64_t to) {
    std::set<Key> keys;
    if (from >= to) return std::optional<std::set<Key>>(std::move(keys));
    if (to - from > kMaxInFlightChanges) return std::optional<std::set<Key>>();
    std::uint64_t at = from;
    while (at < to) {
        auto batch = fleet.changes_after(at, kChangesPerRead);
        if (!batch) return batch.error();
        if (batch->head.trimmed_through > at) return std::optional<std::set<Key>>();
        if (batch->changes.empty()) break;
        for (const FleetChange& c : batch->changes) {
            if (c.entry.seq > to) break;
            // A device's change moves its CA's device count too.
            keys.emplace(c.entry.ca_sn, std::string());
            if (!c.entry.device_sn.empty()) keys.emplace(c.entry.ca_sn, c.entry.device_sn);
            at = c.entry.seq;
        }
        if (batch->changes.back().entry.seq >= to) break;
    }
    return std::optional<std::set<Key>>(std::move(keys));
}

}  // namespace

Result<ConsistencyReport> check_replica(Store& replica, Fleet& fleet, const ReplicaStateSource& source) {
    std::set<Key> queued;
    auto add_queue = [&]() -> Outcome {
        auto q = source.queued();
        if (!q) return q.error();
        for (const DeviceRecord& d : *q) queued.emplace(d.ca_sn, d.device_sn);
        return Ok{};
    };
    auto before = source.position();
    if (!before) return before.error();
    if (auto r = add_queue(); !r) return r.error();

    std::optional<Comparer> comparer;
    std::optional<FleetHead> head;
    // Store::read may run the body again: each run starts over.
    const Outcome walked = replica.read([&](ReadView& view) -> Outcome {
        comparer.emplace(view);
        auto h = fleet.snapshot(*comparer);
        if (!h) return h.error();
        head = std::move(*h);
        return comparer->finish();
    });
    if (!walked) return walked.error();

    auto after = source.position();
    if (!after) return after.error();
    if (auto r = add_queue(); !r) return r.error();

    ConsistencyReport report;
    report.compared_cas = comparer->compared_cas;
    report.compared_devices = comparer->compared_devices;
    report.replica_epoch = after->epoch;
    report.fleet_epoch = head->epoch;
    report.replica_position = after->seq;
    report.fleet_head = head->last_seq;

    auto differ = [&](std::string text) {
        ++report.difference_count;
        if (report.differences.size() < kMaxReportedDifferences) report.differences.push_back(std::move(text));
    };
    const bool same_epoch = after->epoch == head->epoch && before->epoch == head->epoch;
    if (after->epoch.empty())
        differ("the replica has never been loaded from the fleet");
    else if (!same_epoch && after->epoch == head->epoch)
        differ("the replica was rebuilt from a snapshot during the check (run it again)");
    else if (!same_epoch)
        differ(fmt::format("the replica follows epoch {}, the fleet is at epoch {} (another or a re-created database)",
                           after->epoch, head->epoch));
    else if (report.behind_by() > 0)
        differ(fmt::format("the replica is behind the fleet by {} change{} (at seq {}, the fleet's head is {})",
                           report.behind_by(), report.behind_by() == 1 ? "" : "s", report.replica_position,
                           report.fleet_head));

    // The replica's walk saw it somewhere between `before` and `after`; the
    // fleet's snapshot is at head. A record changed in between may differ
    // on either side without being wrong.
    std::optional<std::set<Key>> in_flight;
    if (same_epoch) {
        const std::uint64_t from = std::min(before->seq, head->last_seq);
        const std::uint64_t to = std::max(after->seq, head->last_seq);
        auto touched = touched_between(fleet, from, to);
        if (!touched) return touched.error();
        in_flight = std::move(*touched);
        if (!in_flight)
            differ(fmt::format("the fleet's changes between seq {} and {} are trimmed or too many to tell records "
                               "in flight from differences",
                               from, to));
    }
    // Queued registrations the fleet does not hold yet, per CA: the replica
    // counts them among the CA's devices already.
    std::map<std::string, std::uint64_t, std::less<>> queued_absent;
    for (const Mismatch& m : comparer->mismatches)
        if (m.kind == Mismatch::Kind::only_in_replica && !m.key.second.empty() && queued.contains(m.key))
            ++queued_absent[m.key.first];
    for (Mismatch& m : comparer->mismatches) {
        const bool device = !m.key.second.empty();
        const auto absent = queued_absent.find(m.key.first);
        const bool count_of_queued = !device && m.device_counts && absent != queued_absent.end() &&
                                     m.device_counts->first == m.device_counts->second + absent->second;
        if (in_flight && in_flight->contains(m.key)) {
            ++report.in_flight;
        } else if ((device && queued.contains(m.key)) || count_of_queued) {
            ++report.queued;
        } else {
            differ(std::move(m.text));
        }
    }
    if (comparer->overflow > 0) {
        report.difference_count += comparer->overflow;
        if (report.differences.size() < kMaxReportedDifferences)
            report.differences.push_back(
                fmt::format("{} more records differ (not described: over {} held)", comparer->overflow,
                            kMaxHeldMismatches));
    }
    return report;
}

}  // namespace devcert
