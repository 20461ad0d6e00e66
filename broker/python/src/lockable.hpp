// What colo.Lock (lock.cpp) and colo.KeyLock (lock_table.cpp) share: both
// grant a colo.LockGuard, keep it until it is released, wait in slices
// without the GIL, and raise the same errors. lock.cpp implements it.
//
//   colo.Lock ─────┐                      ┌─> Lockable: NamedLock (a colo::Lock)
//                  ├─ LockingBox ─ target ┤
//   colo.KeyLock ──┘     │                └─> Lockable: TableKey (a colo::KeyLock and its table)
//                        └─ current ──> colo.LockGuard (GuardBox: the colo::LockGuard, the target kept alive)
#pragma once

#include <Python.h>

#include <memory>
#include <optional>
#include <string>

#include "colo/lock.hpp"
#include "colo/lock_table.hpp"
#include "cpython.hpp"
#include "errors.hpp"
#include "waiting.hpp"

namespace colo::python {

// A named lock or one key of a lock table, as the Python objects acquire
// it. Shared by the colo.Lock or colo.KeyLock object and every guard it
// granted: the guards keep it (and so its mapping) alive.
class Lockable {
 public:
  virtual ~Lockable() = default;
  // For messages: "lock 'a'", "key 'order:42' of lock table 'orders'".
  virtual std::string quoted() const = 0;
  // Grants at once, or nullopt (held elsewhere); errors as libcolo reports
  // them. Called with the GIL held (no system call when it is free).
  virtual Result<std::optional<LockGuard>> try_acquire() noexcept = 0;
  // Waits for the grant (after a try_acquire that found it held): in slices
  // of at most 50 ms without the GIL, the signal handlers run between them
  // (wait_for_grant below). colo.Timeout at the deadline.
  virtual LockGuard wait_for(const Deadline& deadline) = 0;
  // The holder now (pid 0: none), for a timeout's message.
  virtual LockHolder holder() const noexcept = 0;
};

// The C++ part of colo.Lock and colo.KeyLock: their boxes (LockBox, KeyBox)
// derive from it, and the shared methods (LockingMethods) reach it so.
struct LockingBox {
  std::shared_ptr<Lockable> target;
  PyObject* current = nullptr;  // the colo.LockGuard held through this object (a reference), or nullptr
  ~LockingBox();
};

// Acquire, waiting up to `timeout` seconds (nullopt: for ever): the new
// colo.LockGuard (a new reference), also kept as box.current.
// colo.InvalidArgument if this thread holds it through `box` already.
PyObject* acquire(LockingBox& box, std::optional<double> timeout);
// The guard, or None if held elsewhere (a new reference).
PyObject* try_acquire(LockingBox& box);
// Releases the guard held through `box` (by this thread). Not held:
// RuntimeError if `must_hold`, else nothing.
void release_current(LockingBox& box, bool must_hold);

// The blocking part of acquire() for a libcolo sliced wait
// (internal::LockWait, internal::KeyLockWait): slices without the GIL, the
// signal handlers between them (KeyboardInterrupt leaves nothing held: a
// grant that came in the same slice is given back), colo.Timeout at the
// deadline (counted once, by `wait.timed_out()`).
template <typename SlicedWait>
LockGuard wait_for_grant(SlicedWait& wait, const Lockable& target, const Deadline& deadline) {
  std::optional<LockGuard> got;
  for (;;) {
    auto slice = [&] {
      py::gil_scoped_release released;
      return wait.slice(deadline.slice_end());
    }();
    if (!slice) throw_error(slice.error());
    if (*slice) {
      got = std::move(**slice);
      break;
    }
    check_signals();  // KeyboardInterrupt: nothing is held
    if (deadline.passed()) {
      wait.timed_out();
      const LockHolder holder = target.holder();
      throw_error(Errc::timed_out,
                  target.quoted() + " was not acquired within " +
                      py::str(py::float_(deadline.seconds())).cast<std::string>() + " s" +
                      (holder.pid == 0 ? std::string()
                                       : " (held by pid " + std::to_string(holder.pid) +
                                             (holder.alive ? "" : ", which is dead") + ")"));
    }
  }
  // Ctrl-C during the slice that granted it: interrupted, holding nothing.
  if (PyErr_CheckSignals() != 0) {
    got->unlock();
    throw py::error_already_set();
  }
  return std::move(*got);
}

// The methods colo.Lock and colo.KeyLock share, for their PyMethodDef
// tables. Box (LockBox, KeyBox) derives from LockingBox.
template <typename Box>
struct LockingMethods {
  static LockingBox& box(PyObject* self) { return capi::value_of<Box>(self); }

  static PyObject* acquire(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
    return capi::guarded([&] {
      PyObject* a[1];
      capi::parse_arguments("acquire", args, nargs, kwnames, {"timeout"}, 0, a);
      return python::acquire(box(self), capi::timeout_argument(a[0]));
    });
  }
  static PyObject* try_acquire(PyObject* self, PyObject*) {
    return capi::guarded([&] { return python::try_acquire(box(self)); });
  }
  static PyObject* release(PyObject* self, PyObject*) {
    return capi::guarded([&] {
      release_current(box(self), true);
      return Py_NewRef(Py_None);
    });
  }
  static PyObject* enter(PyObject* self, PyObject*) {
    return capi::guarded([&] { return python::acquire(box(self), std::nullopt); });
  }
  static PyObject* exit(PyObject* self, PyObject* const*, Py_ssize_t) {
    return capi::guarded([&] {
      release_current(box(self), false);
      return Py_NewRef(Py_None);
    });
  }
  static PyObject* guard(PyObject* self, void*) {
    PyObject* current = box(self).current;
    return Py_NewRef(current != nullptr ? current : Py_None);
  }
};

}  // namespace colo::python
