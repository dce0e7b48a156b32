#include "devcert/store.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "page_token.hpp"
#include "record_format.hpp"
#include "store_impl.hpp"

namespace devcert {

namespace fmtx = store_format;

namespace {

// Which remap gates this thread holds shared, and how deeply. A thread
// rarely touches more than one store at a time; a few slots are plenty, and
// holds beyond them simply lock the gate untracked.
struct HeldGate {
    const StoreState* impl = nullptr;
    unsigned depth = 0;
};
thread_local std::array<HeldGate, 4> t_held_gates;

HeldGate* find_held(const StoreState* impl) noexcept {
    for (auto& h : t_held_gates)
        if (h.impl == impl && h.depth > 0) return &h;
    return nullptr;
}

// Doubling stops well before the address space does; a store this large has
// other problems than its map.
constexpr std::uint64_t kMaxMapSize = 1ull << 44;
constexpr int kMaxRemapsPerWrite = 48;

Error write_misuse() {
    return make_error(Errc::store_error,
                      "write attempted while this thread holds a read snapshot of the status store "
                      "(release the StatusReader or finish Store::read first)");
}

Error thrown(std::string_view what) {
    return make_error(Errc::store_error, fmt::format("transaction body failed: {}", what));
}

template <class Fn>
Outcome guarded(Fn&& fn) noexcept {
    try {
        return fn();
    } catch (const std::exception& e) {
        return thrown(e.what());
    } catch (...) {
        return thrown("unknown exception");
    }
}

}  // namespace

SharedHold::SharedHold(StoreState& impl, bool priority) : impl_(impl), tracked_(false), priority_(priority) {
    if (HeldGate* held = find_held(&impl)) {
        ++held->depth;
        tracked_ = true;
        return;
    }
    impl.remap_gate.lock_shared(priority);
    for (auto& h : t_held_gates) {
        if (h.depth == 0) {
            h = HeldGate{&impl, 1};
            tracked_ = true;
            return;
        }
    }
}

SharedHold::~SharedHold() {
    if (!tracked_) {
        impl_.remap_gate.unlock_shared();
        return;
    }
    HeldGate* held = find_held(&impl_);
    if (--held->depth == 0) {
        held->impl = nullptr;
        impl_.remap_gate.unlock_shared();
    }
}

bool SharedHold::held_by_this_thread(const StoreState& impl) noexcept { return find_held(&impl) != nullptr; }

bool SharedHold::only_hold() const noexcept {
    const HeldGate* held = find_held(&impl_);
    return held != nullptr && held->depth == 1;
}

bool SharedHold::let_remap_through() {
    const HeldGate* held = find_held(&impl_);
    if (held == nullptr || held->depth != 1) return false;
    impl_.remap_gate.unlock_shared();
    impl_.remap_gate.lock_shared(priority_);
    return true;
}

Error StoreState::lmdb_error(int rc, std::string_view what) const {
    return make_error(Errc::store_error, fmt::format("status store '{}': {}: {}", options.path, what, mdb_strerror(rc)));
}

Outcome StoreState::remap(std::uint64_t seen_size, bool grow, std::optional<std::chrono::microseconds> wait_limit,
                          std::uint64_t at_least) {
    if (SharedHold::held_by_this_thread(*this))
        return make_error(Errc::store_error,
                          fmt::format("status store '{}' must be remapped, but this thread holds a transaction",
                                      options.path));
    if (!remap_gate.lock(wait_limit))
        return make_error(Errc::store_error,
                          fmt::format("status store '{}' must be remapped, but its transactions did not end in time",
                                      options.path));
    struct Unlock {
        RemapGate& gate;
        ~Unlock() { gate.unlock(); }
    } exclusive{remap_gate};
    const std::uint64_t before = map_size.load();
    if (before != seen_size) return Ok{};  // another thread remapped meanwhile: retry with its map

    // Size 0 adopts the size recorded in the file, which another process may
    // have grown; LMDB rounds it up to what the data needs.
    if (const int rc = mdb_env_set_mapsize(env.get(), 0); rc != 0) return lmdb_error(rc, "adopt map size");
    MDB_envinfo info{};
    mdb_env_info(env.get(), &info);
    std::uint64_t now = info.me_mapsize;
    if (grow && now <= before) {
        if (before >= kMaxMapSize)
            return make_error(Errc::store_error,
                              fmt::format("status store '{}' is full at {} bytes", options.path, before));
        const std::uint64_t target = std::min(std::max(before * 2, at_least), kMaxMapSize);
        if (const int rc = mdb_env_set_mapsize(env.get(), static_cast<std::size_t>(target)); rc != 0)
            return lmdb_error(rc, fmt::format("grow map to {} bytes", target));
        mdb_env_info(env.get(), &info);
        now = info.me_mapsize;
    }
    map_size.store(now);
    return Ok{};
}

Outcome StoreState::run_write(const std::function<Outcome(MDB_txn*, TxnState&)>& body) {
    // Checked before taking the writer lock: a snapshot holder that waited
    // for it would invert the writer -> remap-gate lock order.
    if (SharedHold::held_by_this_thread(*this)) return write_misuse();
    std::lock_guard serial(writer);
    for (int attempt = 0;; ++attempt) {
        if (attempt > kMaxRemapsPerWrite)
            return make_error(Errc::store_error,
                              fmt::format("status store '{}': map kept changing; write abandoned", options.path));
        const std::uint64_t seen = map_size.load();
        bool grow = false;
        {
            SharedHold hold(*this);
            MDB_txn* raw = nullptr;
            const int rc = mdb_txn_begin(env.get(), nullptr, 0, &raw);
            if (rc != 0 && rc != MDB_MAP_RESIZED) return lmdb_error(rc, "begin write transaction");
            if (rc == 0) {
                TxnOwner txn(raw);
                TxnState state;
                Outcome out = body(txn.get(), state);
                if (state.map_full) {
                    grow = true;
                } else if (!out) {
                    return out;
                } else {
                    const int crc = mdb_txn_commit(txn.release());
                    if (crc == 0) return Ok{};
                    if (crc != MDB_MAP_FULL) return lmdb_error(crc, "commit");
                    grow = true;
                }
            }
        }
        if (auto r = remap(seen, grow); !r) return r;
    }
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

const std::string& Store::discarded() const noexcept { return impl_->discarded; }

const std::string& Store::path() const noexcept { return impl_->options.path; }

std::uint64_t Store::map_size() const noexcept { return impl_->map_size.load(); }

std::uint64_t Store::change_log_retention() const noexcept { return impl_->change_log_retention; }

std::uint64_t Store::records_walked() const noexcept { return impl_->records_walked.load(); }

std::uint64_t Store::last_commit_id() const noexcept {
    try {
        // The meta pages live in the map: hold the gate so a remap by this
        // process's writer cannot pull them away mid-read. The broker's tick
        // polls this: it must not queue behind a waiting remap.
        SharedHold hold(*impl_, true);
        MDB_envinfo info{};
        if (mdb_env_info(impl_->env.get(), &info) != 0) return 0;
        return info.me_last_txnid;
    } catch (...) {
        return 0;
    }
}

namespace {

Error open_error(const std::string& path, std::string_view reason) {
    return make_error(Errc::store_error, fmt::format("cannot open status store '{}': {}", path, reason));
}

/// Records the retention an open was given, or adopts the recorded one, so
/// that a process opening the store without configuration of its own
/// (devcertctl --db) trims the change log exactly as the broker does.
Outcome resolve_retention(StoreState& impl, MDB_txn* txn) {
    MDB_val key{std::strlen(fmtx::kRetentionKey), const_cast<char*>(fmtx::kRetentionKey)};
    if (impl.options.change_log_retention) {
        impl.change_log_retention = *impl.options.change_log_retention;
        const std::string text = std::to_string(impl.change_log_retention);
        MDB_val v{text.size(), const_cast<char*>(text.data())};
        if (const int rc = mdb_put(txn, impl.meta, &key, &v, 0); rc != 0)
            return open_error(impl.options.path, fmt::format("record change log retention: {}", mdb_strerror(rc)));
        return Ok{};
    }
    MDB_val v{};
    const int rc = mdb_get(txn, impl.meta, &key, &v);
    if (rc == MDB_NOTFOUND) return Ok{};  // never configured: the default
    if (rc != 0) return open_error(impl.options.path, mdb_strerror(rc));
    const std::string_view text(static_cast<const char*>(v.mv_data), v.mv_size);
    std::uint64_t n = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec != std::errc{} || end != text.data() + text.size() || n < 1)
        return open_error(impl.options.path,
                          fmt::format("recorded change log retention '{}' is not a number", text.substr(0, 32)));
    impl.change_log_retention = n;
    return Ok{};
}

/// Reads the key that seals page tokens, making it on first use: tokens
/// stay valid across restarts and between the broker and devcertctl --db,
/// and mean nothing to another store.
Outcome load_page_token_key(StoreState& impl, MDB_txn* txn) {
    MDB_val key{std::strlen(fmtx::kPageTokenKey), const_cast<char*>(fmtx::kPageTokenKey)};
    MDB_val v{};
    const int rc = mdb_get(txn, impl.meta, &key, &v);
    if (rc == 0 && v.mv_size == page_token::kKeySize) {
        impl.page_token_key.assign(static_cast<const char*>(v.mv_data), v.mv_size);
        return Ok{};
    }
    if (rc != 0 && rc != MDB_NOTFOUND) return open_error(impl.options.path, mdb_strerror(rc));
    std::string secret(page_token::kKeySize, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()), static_cast<int>(secret.size())) != 1)
        return open_error(impl.options.path, "no randomness for the page token key");
    MDB_val fresh{secret.size(), secret.data()};
    if (const int prc = mdb_put(txn, impl.meta, &key, &fresh, 0); prc != 0)
        return open_error(impl.options.path, mdb_strerror(prc));
    impl.page_token_key = std::move(secret);
    return Ok{};
}

/// Checks (or, in a new store, writes) the schema version and opens every
/// named database. Runs once, before the Store is shared.
Outcome initialise(StoreState& impl) {
    const std::string& path = impl.options.path;
    MDB_txn* raw = nullptr;
    if (const int rc = mdb_txn_begin(impl.env.get(), nullptr, 0, &raw); rc != 0)
        return open_error(path, mdb_strerror(rc));
    TxnOwner txn(raw);

    if (const int rc = mdb_dbi_open(txn.get(), fmtx::kMetaDb, MDB_CREATE, &impl.meta); rc != 0)
        return open_error(path, mdb_strerror(rc));
    MDB_val key{std::strlen(fmtx::kSchemaVersionKey), const_cast<char*>(fmtx::kSchemaVersionKey)};
    MDB_val value{};
    const int rc = mdb_get(txn.get(), impl.meta, &key, &value);
    bool fresh = false;
    if (rc == MDB_NOTFOUND) {
        MDB_stat stat{};
        mdb_stat(txn.get(), impl.meta, &stat);
        if (stat.ms_entries != 0)
            return make_error(Errc::schema_mismatch,
                              fmt::format("status store '{}' has no schema version, this build reads {}", path,
                                          fmtx::kSchemaVersion));
        fresh = true;
    } else if (rc != 0) {
        return open_error(path, mdb_strerror(rc));
    } else {
        const std::string_view text(static_cast<const char*>(value.mv_data), value.mv_size);
        unsigned version = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
        if (ec != std::errc{} || end != text.data() + text.size())
            return make_error(Errc::schema_mismatch,
                              fmt::format("status store '{}' has an unreadable schema version '{}', this build reads {}",
                                          path, text.substr(0, 32), fmtx::kSchemaVersion));
        if (version != fmtx::kSchemaVersion)
            return make_error(Errc::schema_mismatch,
                              fmt::format("status store '{}' has schema version {}, this build reads {}", path,
                                          version, fmtx::kSchemaVersion));
    }

    struct Named {
        const char* name;
        unsigned flags;
        MDB_dbi* dbi;
    };
    for (const Named& db : {Named{fmtx::kCaDb, 0, &impl.cas}, Named{fmtx::kDeviceDb, 0, &impl.devices},
                            Named{fmtx::kDevicePemDb, 0, &impl.device_pem},
                            Named{fmtx::kSkiDb, MDB_DUPSORT, &impl.ski}, Named{fmtx::kChangeDb, 0, &impl.changes},
                            Named{fmtx::kQueueDb, 0, &impl.queue}, Named{fmtx::kQueueOrderDb, 0, &impl.queue_order}}) {
        if (const int drc = mdb_dbi_open(txn.get(), db.name, db.flags | MDB_CREATE, db.dbi); drc != 0)
            return open_error(path, fmt::format("database '{}': {}", db.name, mdb_strerror(drc)));
    }
    if (fresh) {
        const std::string version = std::to_string(fmtx::kSchemaVersion);
        MDB_val v{version.size(), const_cast<char*>(version.data())};
        if (const int prc = mdb_put(txn.get(), impl.meta, &key, &v, 0); prc != 0)
            return open_error(path, mdb_strerror(prc));
    }
    if (auto r = resolve_retention(impl, txn.get()); !r) return r;
    if (auto r = load_page_token_key(impl, txn.get()); !r) return r;
    if (const int crc = mdb_txn_commit(txn.release()); crc != 0) return open_error(path, mdb_strerror(crc));
    return Ok{};
}

// --- a replica's unflushed commits (StoreOptions::replica) ----------------

/// The first line of a boot id file or a marker, if it reads as one.
std::optional<std::string> read_boot_id(const std::string& file) {
    std::ifstream in(file);
    std::string id;
    if (!in || !std::getline(in, id)) return std::nullopt;
    while (!id.empty() && (id.back() == '\r' || id.back() == ' ')) id.pop_back();
    constexpr std::size_t kMaxBootId = 64;
    if (id.empty() || id.size() > kMaxBootId) return std::nullopt;
    return id;
}

bool sync_directory(const std::filesystem::path& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

/// Writes the marker whole or not at all (a temporary file, flushed, then
/// renamed), and flushes the directory: it is on disk before any commit
/// that skips the flush.
Outcome write_unflushed_marker(const std::filesystem::path& dir, const std::string& boot) {
    const std::filesystem::path marker = dir / kUnflushedMarker;
    const std::filesystem::path temp = dir / (std::string(kUnflushedMarker) + ".new");
    auto failed = [&](const char* step) {
        const int err = errno;
        ::unlink(temp.c_str());
        return open_error(dir.string(), fmt::format("{} {}: {}", step, marker.string(), std::strerror(err)));
    };
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return failed("cannot create");
    const std::string text = boot + "\n";
    const bool written = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!written) return failed("cannot write");
    if (::rename(temp.c_str(), marker.c_str()) != 0) return failed("cannot rename into");
    if (!sync_directory(dir)) return failed("cannot flush the directory of");
    return Ok{};
}

/// For a replica: decides whether commits may skip the flush, and discards
/// a file that another boot left with unflushed commits. Returns LMDB's
/// sync flag to open with.
Result<unsigned> prepare_replica(StoreState& impl) {
    const std::optional<std::string> boot = read_boot_id(impl.options.boot_id_file);
    const std::filesystem::path dir = impl.options.path;
    const std::filesystem::path marker = dir / kUnflushedMarker;
    std::error_code ec;
    const bool marked = std::filesystem::exists(marker, ec);
    if (ec) return open_error(impl.options.path, fmt::format("cannot read {}: {}", marker.string(), ec.message()));
    const std::optional<std::string> seen = marked ? read_boot_id(marker.string()) : std::nullopt;
    if (marked && (!boot || seen != boot)) {
        // The system went down with commits in its page cache (or this one
        // cannot tell): the file may hold a metadata page that points at
        // pages never written.
        impl.discarded = fmt::format("commits made under boot {} were not flushed to disk, and this is {}",
                                     seen.value_or("(unreadable marker)"),
                                     boot ? "boot " + *boot : "a system whose boot cannot be read");
        for (const char* name : {"data.mdb", "lock.mdb"}) {
            std::filesystem::remove(dir / name, ec);
            if (ec)
                return open_error(impl.options.path, fmt::format("cannot discard {} (not flushed by an earlier boot): {}",
                                                                 (dir / name).string(), ec.message()));
        }
        if (!boot) {
            if (::unlink(marker.c_str()) != 0 || !sync_directory(dir))
                return open_error(impl.options.path,
                                  fmt::format("cannot remove {}: {}", marker.string(), std::strerror(errno)));
        }
    }
    if (!boot) return MDB_NOMETASYNC;  // no boot to tell: only the metadata flush is skipped
    if (seen != boot) {
        if (auto r = write_unflushed_marker(dir, *boot); !r) return r.error();
    }
    impl.unflushed_marker = marker.string();
    return MDB_NOSYNC;
}

}  // namespace

Store::~Store() {
    if (!impl_ || impl_->unflushed_marker.empty()) return;
    // Everything committed reaches the disk before the marker goes; if the
    // flush fails, the marker stays and a later boot discards the file.
    if (mdb_env_sync(impl_->env.get(), 1) != 0) return;
    if (::unlink(impl_->unflushed_marker.c_str()) == 0)
        (void)sync_directory(std::filesystem::path(impl_->unflushed_marker).parent_path());
}

Result<std::unique_ptr<Store>> Store::open(const StoreOptions& options) {
    const std::string& path = options.path;
    if (path.empty()) return make_error(Errc::invalid_argument, "status store path is empty");
    if (options.initial_map_size < (256u << 10))
        return make_error(Errc::invalid_argument, "status store initial map size must be at least 256 KiB");
    if (options.change_log_retention && *options.change_log_retention < 1)
        return make_error(Errc::invalid_argument, "change log retention must keep at least one entry");
    if (options.max_readers < 1) return make_error(Errc::invalid_argument, "status store needs at least one reader");

    if (options.create) {
        std::error_code ec;
        std::filesystem::create_directories(path, ec);
        if (ec) return open_error(path, ec.message());
    }

    auto impl = std::make_unique<Impl>();
    impl->options = options;
    MDB_env* raw = nullptr;
    if (const int rc = mdb_env_create(&raw); rc != 0) return open_error(path, mdb_strerror(rc));
    impl->env.reset(raw);
    MDB_env* env = impl->env.get();
    if (const int rc = mdb_env_set_maxdbs(env, 16); rc != 0) return open_error(path, mdb_strerror(rc));
    if (const int rc = mdb_env_set_maxreaders(env, options.max_readers); rc != 0)
        return open_error(path, mdb_strerror(rc));
    if (const int rc = mdb_env_set_mapsize(env, static_cast<std::size_t>(options.initial_map_size)); rc != 0)
        return open_error(path, mdb_strerror(rc));
    // MDB_NOTLS: read transactions are not tied to a thread's slot, so a
    // reset snapshot can be renewed by another thread and many threads can
    // each hold one. Commits are fully durable, except a replica's (see
    // StoreOptions::replica).
    unsigned sync_flag = 0;
    if (options.replica) {
        auto prepared = prepare_replica(*impl);
        if (!prepared) return prepared.error();
        sync_flag = *prepared;
    }
    const unsigned flags = MDB_NOTLS | sync_flag;
    if (const int rc = mdb_env_open(env, path.c_str(), flags, 0600); rc != 0)
        return open_error(path, mdb_strerror(rc));

    // Reader slots left by crashed processes would pin old pages forever.
    int dead = 0;
    mdb_reader_check(env, &dead);

    // The file may have grown beyond the configured size in an earlier run
    // or in another process: adopt the larger of the two.
    if (const int rc = mdb_env_set_mapsize(env, 0); rc != 0) return open_error(path, mdb_strerror(rc));
    MDB_envinfo info{};
    mdb_env_info(env, &info);
    if (info.me_mapsize < options.initial_map_size) {
        if (const int rc = mdb_env_set_mapsize(env, static_cast<std::size_t>(options.initial_map_size)); rc != 0)
            return open_error(path, mdb_strerror(rc));
        mdb_env_info(env, &info);
    }
    impl->map_size.store(info.me_mapsize);

    if (auto r = initialise(*impl); !r) return r.error();
    return std::unique_ptr<Store>(new Store(std::move(impl)));
}

Outcome Store::read(const std::function<Outcome(ReadView&)>& fn) {
    for (int attempt = 0; attempt <= kMaxRemapsPerWrite; ++attempt) {
        const std::uint64_t seen = impl_->map_size.load();
        {
            SharedHold hold(*impl_);
            MDB_txn* raw = nullptr;
            const int rc = mdb_txn_begin(impl_->env.get(), nullptr, MDB_RDONLY, &raw);
            if (rc == 0) {
                TxnOwner txn(raw);
                TxnState state;
                TxnView view(*impl_, txn.get(), state);
                view.allow_pauses(hold);
                Outcome out = guarded([&] { return fn(view); });
                // A walk that paused for a remap could not resume because
                // another process had grown the map: adopt it, run fn again.
                if (!state.map_resized) return out;
            } else if (rc != MDB_MAP_RESIZED) {
                return impl_->lmdb_error(rc, "begin read transaction");
            }
        }
        if (auto r = impl_->remap(seen, false); !r) return r;
    }
    return make_error(Errc::store_error, fmt::format("status store '{}': map kept changing; read abandoned", path()));
}

Outcome Store::write(const std::function<Outcome(WriteView&)>& fn) {
    return impl_->run_write([&](MDB_txn* txn, TxnState& state) {
        TxnView view(*impl_, txn, state);
        return guarded([&] { return fn(view); });
    });
}

Outcome Store::write_batch(const std::vector<std::function<Outcome(WriteView&)>>& fns,
                           std::vector<Outcome>& results) {
    results.assign(fns.size(), Outcome(Ok{}));
    const Outcome committed = impl_->run_write([&](MDB_txn* parent, TxnState& state) -> Outcome {
        // A rerun after growing the map starts from scratch: every slot is
        // decided again.
        results.assign(fns.size(), Outcome(Ok{}));
        for (std::size_t i = 0; i < fns.size(); ++i) {
            MDB_txn* raw = nullptr;
            if (const int rc = mdb_txn_begin(impl_->env.get(), parent, 0, &raw); rc != 0) {
                if (rc == MDB_MAP_FULL) state.map_full = true;
                return impl_->lmdb_error(rc, "begin nested transaction");
            }
            TxnOwner child(raw);
            TxnView view(*impl_, child.get(), state);
            Outcome out = guarded([&] { return fns[i](view); });
            if (state.map_full) return impl_->lmdb_error(MDB_MAP_FULL, "batched write");
            if (!out) {
                results[i] = std::move(out);
                continue;  // child aborts: this job's changes are undone, the others stand
            }
            if (const int crc = mdb_txn_commit(child.release()); crc != 0) {
                if (crc == MDB_MAP_FULL) {
                    state.map_full = true;
                    return impl_->lmdb_error(crc, "batched write");
                }
                results[i] = impl_->lmdb_error(crc, "commit nested transaction");
            }
        }
        return Ok{};
    });
    if (!committed) results.assign(fns.size(), committed);
    return committed;
}

std::int64_t now_ms() noexcept {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

CaRecord new_ca_record(const CertificateInfo& info, std::string name, RegisteredBy by, std::int64_t now_ms) {
    CaRecord rec;
    rec.sn = info.serial;
    rec.name = std::move(name);
    rec.content_pem = info.pem;
    rec.status = CertStatus::active;
    rec.valid_begin_ms = info.not_before_ms;
    rec.valid_end_ms = info.not_after_ms;
    rec.created_ms = rec.updated_ms = rec.status_changed_ms = now_ms;
    rec.registered_by = by;
    rec.subject_key_id = info.subject_key_id;
    rec.fingerprint = info.fingerprint;
    return rec;
}

DeviceRecord new_device_record(const CertificateInfo& info, std::string ca_sn, CertStatus status, RegisteredBy by,
                               std::int64_t now_ms) {
    DeviceRecord rec;
    rec.ca_sn = std::move(ca_sn);
    rec.device_sn = info.serial;
    rec.device_name = info.common_name;
    rec.content_pem = info.pem;
    rec.status = status;
    rec.valid_begin_ms = info.not_before_ms;
    rec.valid_end_ms = info.not_after_ms;
    rec.created_ms = rec.updated_ms = rec.status_changed_ms = now_ms;
    rec.registered_by = by;
    rec.fingerprint = info.fingerprint;
    return rec;
}

const char* status_string(CertStatus s) noexcept {
    switch (s) {
        case CertStatus::inactive: return "0";
        case CertStatus::active: return "1";
        case CertStatus::revoked: return "2";
    }
    return "?";
}

const char* status_name(CertStatus s) noexcept {
    switch (s) {
        case CertStatus::inactive: return "inactive";
        case CertStatus::active: return "active";
        case CertStatus::revoked: return "revoked";
    }
    return "unknown";
}

const char* registered_by_string(RegisteredBy r) noexcept {
    switch (r) {
        case RegisteredBy::connection: return "connection";
        case RegisteredBy::api: return "api";
        case RegisteredBy::import: return "import";
    }
    return "unknown";
}

}  // namespace devcert
