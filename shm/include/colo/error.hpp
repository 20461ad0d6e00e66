// colo/error.hpp — the error vocabulary of libcolo.
//
// It lives in shm/, the lowest layer, because shm/'s own set-up calls return
// it too; it is installed with libcolo's public headers and depends on
// nothing but the standard library.
//
// Set-up calls (opening a node, creating or opening an object) return
// `Result<T>`: a value, or an `Error` carrying an `Errc` and a message that
// names the object and the cause and says what to do. Hot paths never use it:
// they are noexcept and return an empty optional for "would block".
#pragma once

#include <cassert>      // value()/error() preconditions
#include <string>       // Error::message
#include <string_view>  // errc_name
#include <utility>      // std::move, std::in_place_index
#include <variant>      // Result storage

namespace colo {

enum class Errc {
  invalid_argument,   // a name, size or option is malformed
  not_found,          // the object or segment does not exist
  already_exists,     // exclusive creation of something that exists
  kind_mismatch,      // exists, but as another kind of object
  parameter_mismatch, // exists with other parameters than asked for
  permission_denied,  // owner, group or mode forbid the access
  corrupt,            // bytes in shared memory fail validation
  not_ready,          // a segment's creator did not finish within the wait
  creator_died,       // a segment's creator died before marking it ready
  timed_out,          // a bounded wait ran out
  capacity,           // a fixed-size table is full
  busy,               // held exclusively by another live process
  not_supported,      // asked for something this build does not do yet
  system,             // an unexpected system call failure (errno in message)
  no_space,           // the file system of the segments (/dev/shm) has no room for a new one
};

constexpr std::string_view errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument: return "invalid argument";
    case Errc::not_found: return "not found";
    case Errc::already_exists: return "already exists";
    case Errc::kind_mismatch: return "kind mismatch";
    case Errc::parameter_mismatch: return "parameter mismatch";
    case Errc::permission_denied: return "permission denied";
    case Errc::corrupt: return "corrupt";
    case Errc::not_ready: return "not ready";
    case Errc::creator_died: return "creator died";
    case Errc::timed_out: return "timed out";
    case Errc::capacity: return "capacity";
    case Errc::busy: return "busy";
    case Errc::not_supported: return "not supported";
    case Errc::system: return "system error";
    case Errc::no_space: return "no space";
  }
  return "unknown";
}

struct Error {
  Errc code;
  std::string message;  // full sentence: object, cause, remedy
};

// A value or an Error. Small on purpose: std::expected is C++23 and GCC 12
// does not ship it; switch to it when the toolchain does.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : storage_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Error error) : storage_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool has_value() const noexcept { return storage_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { assert(has_value()); return std::get<0>(storage_); }
  T&& value() && { assert(has_value()); return std::get<0>(std::move(storage_)); }
  const T& value() const& { assert(has_value()); return std::get<0>(storage_); }
  T* operator->() { return &value(); }
  T& operator*() & { return value(); }

  const Error& error() const& { assert(!has_value()); return std::get<1>(storage_); }
  Error&& error() && { assert(!has_value()); return std::get<1>(std::move(storage_)); }

 private:
  std::variant<T, Error> storage_;
};

// Result<void>: success, or an Error.
struct Ok {};
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Ok) {}  // NOLINT
  Result(Error error) : error_(std::move(error)), failed_(true) {}  // NOLINT
  bool has_value() const noexcept { return !failed_; }
  explicit operator bool() const noexcept { return !failed_; }
  const Error& error() const& { assert(failed_); return error_; }
  Error&& error() && { assert(failed_); return std::move(error_); }

 private:
  Error error_{Errc::system, {}};
  bool failed_ = false;
};

}  // namespace colo
