// tests/lock_table/table_state_file.hpp — the test's side of table_state.hpp:
// creates, maps and removes the state file; finds the worker program.
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "table_state.hpp"

namespace colo::test {

// colo-test-table-worker, as meson passes it.
inline std::string table_worker() {
  const char* path = std::getenv("COLO_TEST_TABLE_WORKER");
  return path != nullptr ? path : "colo-test-table-worker";
}

// The table-state file of a test (table_state.hpp).
class TableStateFile {
 public:
  TableStateFile(const std::string& ns, std::uint64_t keys)
      : path_(table_state_path(ns)), size_(table_state_bytes(keys)) {
    const int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(size_)) != 0) {
      ADD_FAILURE() << "creating " << path_;
      if (fd >= 0) ::close(fd);
      return;
    }
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) {
      ADD_FAILURE() << "mapping " << path_;
      return;
    }
    state_ = static_cast<TableState*>(p);
    state_->keys = keys;
  }
  ~TableStateFile() {
    if (state_ != nullptr) ::munmap(state_, size_);
    ::unlink(path_.c_str());
  }
  TableState* operator->() const noexcept { return state_; }
  KeyCell& cell(std::uint64_t key) const noexcept { return cells(state_)[key]; }
  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
  std::size_t size_;
  TableState* state_ = nullptr;
};

}  // namespace colo::test
