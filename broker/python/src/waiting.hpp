// Blocking calls from Python: how they wait.
//
// Every call that may block releases the GIL while it waits (other Python
// threads run) and waits in slices of at most 50 ms; between slices it
// takes the GIL back and runs Python's signal handlers, so that Ctrl-C
// (SIGINT) raises KeyboardInterrupt within about 50 ms. libcolo's waits are
// futex sleeps that a signal does not end, hence the slices; a slice ends
// early whenever what was waited for arrives, so they cost nothing then.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>

namespace colo::python {

namespace py = pybind11;

inline constexpr std::uint64_t kSliceNs = 50'000'000;

// A deadline on colo's monotonic clock (colo::internal::monotonic_ns), or
// none: wait for ever.
class Deadline {
 public:
  // From a timeout in seconds as Python passes it (None: for ever).
  // Negative or NaN: ValueError.
  static Deadline after(std::optional<double> timeout_s);
  bool passed() const noexcept;
  // The end of the next slice: 50 ms from now, or the deadline if sooner.
  std::uint64_t slice_end() const noexcept;
  // Seconds asked for, for messages ("within 1.5 s").
  double seconds() const noexcept { return seconds_; }
  bool forever() const noexcept { return !at_; }

 private:
  std::optional<std::uint64_t> at_;
  double seconds_ = 0;
};

// Runs the pending signal handlers (the GIL must be held); an exception one
// raises (KeyboardInterrupt) is thrown as py::error_already_set.
void check_signals();

// Calls `attempt(slice_end_ns)` without the GIL, slice after slice, until it
// returns true (then true) or the deadline passes (then false); runs the
// signal handlers between slices (which may throw). `attempt` must not
// touch Python objects.
template <typename Attempt>
bool wait_in_slices(const Deadline& deadline, Attempt&& attempt) {
  for (;;) {
    bool done;
    {
      py::gil_scoped_release released;
      done = attempt(deadline.slice_end());
    }
    if (done) return true;
    check_signals();
    if (deadline.passed()) return false;
  }
}

}  // namespace colo::python
