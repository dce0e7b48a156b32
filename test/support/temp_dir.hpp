// A scratch directory for one test, removed with everything in it when the
// object goes.
#pragma once

#include <stdlib.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace devcert::test {

/// Under /tmp with a short name whatever TMPDIR says, so that UNIX socket
/// paths inside stay far below the 107-byte limit.
class TempDir {
public:
    TempDir() {
        std::string pattern = "/tmp/devcert-XXXXXX";
        if (::mkdtemp(pattern.data()) == nullptr) FAIL("mkdtemp failed: " << std::strerror(errno));
        path_ = std::move(pattern);
    }
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::string& path() const noexcept { return path_; }
    /// path()/name; creates nothing.
    std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }
    /// Writes `content` to path()/name and returns that path.
    std::string write(std::string_view name, std::string_view content) const {
        const std::string target = file(name);
        std::ofstream out(target, std::ios::binary | std::ios::trunc);
        out << content;
        out.close();
        if (!out) FAIL("cannot write " << target);
        return target;
    }

private:
    std::string path_;
};

}  // namespace devcert::test
