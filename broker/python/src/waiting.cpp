#include "waiting.hpp"

#include <algorithm>
#include <cmath>

#include "colo/internal/clock.hpp"

namespace colo::python {

Deadline Deadline::after(std::optional<double> timeout_s) {
  Deadline d;
  if (!timeout_s) return d;
  const double s = *timeout_s;
  if (std::isnan(s) || s < 0) throw py::value_error("timeout must be None or a number of seconds >= 0");
  d.seconds_ = s;
  // Beyond ~292 years the nanoseconds overflow: that is for ever.
  if (s < 9.0e9) d.at_ = internal::monotonic_ns() + static_cast<std::uint64_t>(s * 1e9);
  return d;
}

bool Deadline::passed() const noexcept { return at_ && internal::monotonic_ns() >= *at_; }

std::uint64_t Deadline::slice_end() const noexcept {
  const std::uint64_t next = internal::monotonic_ns() + kSliceNs;
  return at_ ? std::min(next, *at_) : next;
}

void check_signals() {
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

}  // namespace colo::python
