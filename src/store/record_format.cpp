#include "record_format.hpp"

namespace devcert::store_format {

namespace {

class Writer {
public:
    explicit Writer(std::size_t header_size) : out_(header_size, '\0') {}

    std::uint8_t* header() noexcept { return reinterpret_cast<std::uint8_t*>(out_.data()); }

    void i64(std::int64_t v) {
        std::uint8_t b[8];
        put_u64(b, static_cast<std::uint64_t>(v));
        out_.append(reinterpret_cast<const char*>(b), 8);
    }
    void str(std::string_view s) {
        // Fields are bounded far below 4 GiB by the API's input caps.
        const auto n = static_cast<std::uint32_t>(s.size());
        for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>(n >> (8 * i)));
        out_.append(s);
    }
    std::string take() && { return std::move(out_); }

private:
    std::string out_;
};

class Reader {
public:
    Reader(std::string_view data, std::size_t offset) : data_(data), pos_(offset) {}

    bool i64(std::int64_t& v) noexcept {
        if (data_.size() - pos_ < 8) return false;
        v = static_cast<std::int64_t>(get_u64(bytes() + pos_));
        pos_ += 8;
        return true;
    }
    bool str(std::string& s) {
        if (data_.size() - pos_ < 4) return false;
        std::uint32_t n = 0;
        for (int i = 3; i >= 0; --i) n = (n << 8) | bytes()[pos_ + static_cast<std::size_t>(i)];
        pos_ += 4;
        if (data_.size() - pos_ < n) return false;
        s.assign(data_.substr(pos_, n));
        pos_ += n;
        return true;
    }
    bool at_end() const noexcept { return pos_ == data_.size(); }

private:
    const std::uint8_t* bytes() const noexcept { return reinterpret_cast<const std::uint8_t*>(data_.data()); }
    std::string_view data_;
    std::size_t pos_;
};

std::uint8_t status_byte(std::optional<CertStatus> s) noexcept {
    return s ? static_cast<std::uint8_t>(*s) : kNoStatus;
}

bool status_from_byte(std::uint8_t b, std::optional<CertStatus>& out) noexcept {
    if (b == kNoStatus) {
        out.reset();
        return true;
    }
    if (!valid_status_byte(b)) return false;
    out = static_cast<CertStatus>(b);
    return true;
}

bool registered_by_from_byte(std::uint8_t b, RegisteredBy& out) noexcept {
    if (b > static_cast<std::uint8_t>(RegisteredBy::import)) return false;
    out = static_cast<RegisteredBy>(b);
    return true;
}

}  // namespace

std::string encode_device(const DeviceRecord& rec) {
    Writer w(kDeviceHeaderSize);
    auto* h = w.header();
    h[0] = kDeviceMagic;
    h[1] = kLayoutVersion;
    h[kStatusOffset] = static_cast<std::uint8_t>(rec.status);
    h[kRegisteredByOffset] = static_cast<std::uint8_t>(rec.registered_by);
    std::memcpy(h + kDeviceFingerprintOffset, rec.fingerprint.data(), rec.fingerprint.size());
    w.i64(rec.valid_begin_ms);
    w.i64(rec.valid_end_ms);
    w.i64(rec.created_ms);
    w.i64(rec.updated_ms);
    w.i64(rec.status_changed_ms);
    w.str(rec.device_name);
    return std::move(w).take();
}

bool decode_device(std::string_view value, std::string_view ca_sn, std::string_view device_sn, DeviceRecord& out) {
    if (!has_header(value.data(), value.size(), kDeviceMagic, kDeviceHeaderSize)) return false;
    const auto* h = reinterpret_cast<const std::uint8_t*>(value.data());
    out.ca_sn.assign(ca_sn);
    out.device_sn.assign(device_sn);
    out.status = static_cast<CertStatus>(h[kStatusOffset]);
    if (!registered_by_from_byte(h[kRegisteredByOffset], out.registered_by)) return false;
    std::memcpy(out.fingerprint.data(), h + kDeviceFingerprintOffset, out.fingerprint.size());
    Reader r(value, kDeviceHeaderSize);
    return r.i64(out.valid_begin_ms) && r.i64(out.valid_end_ms) && r.i64(out.created_ms) && r.i64(out.updated_ms) &&
           r.i64(out.status_changed_ms) && r.str(out.device_name) && r.at_end();
}

std::string encode_ca(const CaRecord& rec) {
    Writer w(kCaHeaderSize);
    auto* h = w.header();
    h[0] = kCaMagic;
    h[1] = kLayoutVersion;
    h[kStatusOffset] = static_cast<std::uint8_t>(rec.status);
    h[kRegisteredByOffset] = static_cast<std::uint8_t>(rec.registered_by);
    put_u64(h + kCaDeviceCountOffset, rec.device_count);
    std::memcpy(h + kCaFingerprintOffset, rec.fingerprint.data(), rec.fingerprint.size());
    w.i64(rec.valid_begin_ms);
    w.i64(rec.valid_end_ms);
    w.i64(rec.created_ms);
    w.i64(rec.updated_ms);
    w.i64(rec.status_changed_ms);
    w.str(rec.name);
    w.str(rec.content_pem);
    w.str(rec.verification_pem);
    w.str(rec.registration_code);
    w.str(rec.subject_key_id);
    return std::move(w).take();
}

bool decode_ca(std::string_view value, std::string_view sn, CaRecord& out) {
    if (!has_header(value.data(), value.size(), kCaMagic, kCaHeaderSize)) return false;
    const auto* h = reinterpret_cast<const std::uint8_t*>(value.data());
    out.sn.assign(sn);
    out.status = static_cast<CertStatus>(h[kStatusOffset]);
    if (!registered_by_from_byte(h[kRegisteredByOffset], out.registered_by)) return false;
    out.device_count = get_u64(h + kCaDeviceCountOffset);
    std::memcpy(out.fingerprint.data(), h + kCaFingerprintOffset, out.fingerprint.size());
    Reader r(value, kCaHeaderSize);
    return r.i64(out.valid_begin_ms) && r.i64(out.valid_end_ms) && r.i64(out.created_ms) && r.i64(out.updated_ms) &&
           r.i64(out.status_changed_ms) && r.str(out.name) && r.str(out.content_pem) && r.str(out.verification_pem) &&
           r.str(out.registration_code) && r.str(out.subject_key_id) && r.at_end();
}

std::string encode_change(const ChangeEntry& entry) {
    Writer w(kChangeHeaderSize);
    auto* h = w.header();
    h[0] = kChangeMagic;
    h[1] = kLayoutVersion;
    h[2] = status_byte(entry.old_status);
    h[3] = status_byte(entry.new_status);
    put_u64(h + 8, static_cast<std::uint64_t>(entry.time_ms));
    w.str(entry.action);
    w.str(entry.ca_sn);
    w.str(entry.device_sn);
    w.str(entry.caller);
    return std::move(w).take();
}

bool decode_change(std::string_view value, std::uint64_t seq, ChangeEntry& out) {
    if (value.size() < kChangeHeaderSize) return false;
    const auto* h = reinterpret_cast<const std::uint8_t*>(value.data());
    if (h[0] != kChangeMagic || h[1] != kLayoutVersion) return false;
    if (!status_from_byte(h[2], out.old_status) || !status_from_byte(h[3], out.new_status)) return false;
    out.seq = seq;
    out.time_ms = static_cast<std::int64_t>(get_u64(h + 8));
    Reader r(value, kChangeHeaderSize);
    return r.str(out.action) && r.str(out.ca_sn) && r.str(out.device_sn) && r.str(out.caller) && r.at_end();
}

}  // namespace devcert::store_format
