// tests/fuzz/fuzz_support.hpp — what the fuzz targets share.
//
// Each target defines LLVMFuzzerTestOneInput. Built with -Dfuzz=enabled
// (clang), it is linked with libFuzzer; in every build it is also linked
// with replay_main.cpp into a replay program that feeds it each file of its
// corpus (tests/fuzz/corpus/<target>/): the corpus, and every crash found
// and kept there, are regression tests of the normal gcc build too.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>

namespace colo::fuzz {

// A directory of this process's own under /dev/shm (a tmpfs, mode 0700),
// removed at exit. COLO_SHM_DIR points at it, so every namespace a target
// opens has its segments there, never in /dev/shm itself.
inline const std::string& private_dir() {
  // A plain array: the exit handler runs after static strings are destroyed.
  static char path[] = "/dev/shm/colo-fuzz-XXXXXX";
  static const std::string dir = [] {
    if (::mkdtemp(path) == nullptr) {
      std::perror("colo fuzz: mkdtemp /dev/shm/colo-fuzz-XXXXXX");
      std::abort();
    }
    ::setenv("COLO_SHM_DIR", path, 1);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    });
    return std::string(path);
  }();
  return dir;
}

// Writes `bytes` as the whole content of `path`, mode 0600 (as colo's own
// segments: no bits for others); aborts on failure (the harness failed, not
// the code under test).
inline void write_file(const std::string& path, std::span<const std::uint8_t> bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && ::fchmod(fd, 0600) == 0;
  for (std::size_t done = 0; ok && done < bytes.size();) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    ok = n > 0;
    done += ok ? static_cast<std::size_t>(n) : 0;
  }
  if (fd >= 0 && ::close(fd) != 0) ok = false;
  if (!ok) {
    std::perror(("colo fuzz: cannot write " + path).c_str());
    std::abort();
  }
}

// The input of the image targets (registry, ring) is a list of patches that
// scribble over a healthy image, as a hostile or broken process would:
//
//   +----------------+--------+-----------------+
//   | offset (u32 LE)| length | length bytes    |  ... repeated to the end
//   +----------------+--------+-----------------+
//
// offset is taken modulo the image's size; a patch stops at the image's end
// and at the input's end. Bytes in [keep_from, keep_to) are left as they are
// (see each target for why).
inline void apply_patches(std::span<const std::uint8_t> input, std::span<std::byte> image, std::size_t keep_from = 0,
                          std::size_t keep_to = 0) {
  std::size_t at = 0;
  while (at + 5 <= input.size() && !image.empty()) {
    std::uint32_t offset = 0;
    std::memcpy(&offset, input.data() + at, 4);
    std::size_t length = input[at + 4];
    at += 5;
    std::size_t pos = offset % image.size();
    for (std::size_t i = 0; i < length && at < input.size() && pos < image.size(); ++i, ++at, ++pos)
      if (pos < keep_from || pos >= keep_to) image[pos] = static_cast<std::byte>(input[at]);
  }
}

// Reads every byte of a view the code under test handed out: AddressSanitizer
// then catches a view that points outside the memory it may read.
inline std::uint64_t touch(const std::byte* data, std::size_t size) {
  std::uint64_t sum = 0;
  for (std::size_t i = 0; i < size; ++i) sum += static_cast<std::uint8_t>(data[i]);
  return sum;
}

}  // namespace colo::fuzz
