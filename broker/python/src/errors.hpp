// Python exceptions for colo's errors.
//
//   colo.Error                      every error of colo; .code is the colo::Errc name ("not found", ...)
//   ├── colo.InvalidArgument        also a ValueError: a malformed name, size or option
//   ├── colo.NotFound               the object does not exist
//   ├── colo.AlreadyExists          exclusive creation of something that exists
//   ├── colo.Mismatch               exists as another kind, or with other parameters
//   ├── colo.PermissionDenied       also a PermissionError: owner, group or mode forbid it
//   ├── colo.Corrupt                bytes in shared memory fail validation
//   ├── colo.NotReady               a segment's creator did not finish (or died); no colod for a cluster lock
//   ├── colo.Busy                   held exclusively by another live process (exclusive publisher)
//   └── colo.Timeout                also a TimeoutError: a bounded wait ran out
// The message is libcolo's own: it names the object, the cause and the remedy.
#pragma once

#include <pybind11/pybind11.h>

#include <string>

#include "colo/error.hpp"

namespace colo::python {

namespace py = pybind11;

// Creates the classes as attributes of the module (once, at import).
void define_exceptions(py::module_& module);

// Sets the Python exception for `error` and throws py::error_already_set
// (pybind11 then hands it to Python).
[[noreturn]] void throw_error(const Error& error);
[[noreturn]] void throw_error(Errc code, const std::string& message);

// The value of a Result, or throw_error() with its error.
template <typename T>
T value_or_throw(Result<T>&& result) {
  if (!result) throw_error(result.error());
  return std::move(result).value();
}
inline void value_or_throw(Result<void>&& result) {
  if (!result) throw_error(result.error());
}

}  // namespace colo::python
