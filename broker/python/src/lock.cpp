// colo.Lock and colo.LockGuard.
//
// A Lock keeps the guard it granted until it is released (lock.release(),
// guard.release(), the end of a `with` block), as threading.Lock stays held
// until released; dropping the Lock releases it. Only the thread that
// acquired it may release it (it is a mutex; libcolo's rule too).
#include <pybind11/stl.h>

#include <memory>
#include <thread>

#include "colo/internal/lock_wait.hpp"
#include "errors.hpp"
#include "objects.hpp"
#include "waiting.hpp"

namespace colo::python {
namespace {

struct LockBox;

struct GuardBox {
  std::optional<LockGuard> guard;  // empty once released
  std::shared_ptr<Lock> lock;      // keeps the lock mapped while the guard lives
  std::thread::id holder;          // the thread that acquired it
  std::uint64_t token = 0;         // kept for after the release
  bool owner_died = false;
  py::object on_lost;              // the callback given to on_lease_lost(), kept alive
  LockBox* owner = nullptr;        // the colo.Lock it was granted through, while held

  ~GuardBox();
};

struct LockBox {
  std::shared_ptr<Lock> lock;
  NodeRef node;
  py::object current = py::none();  // the colo.LockGuard held through this Lock

  GuardBox* current_guard() const { return current.is_none() ? nullptr : &current.cast<GuardBox&>(); }
  ~LockBox() {
    if (GuardBox* g = current_guard()) g->owner = nullptr;  // `current` goes next, and may outlive us
  }
};

std::string quoted(const Lock& lock) { return "lock '" + lock.name() + "'"; }

// Unlocks (the GIL held). Without the GIL if a lease-loss callback may be
// running: unlock() joins its thread, which may be waiting for the GIL.
void unlock(GuardBox& g) {
  if (!g.on_lost.is_none()) {
    py::gil_scoped_release released;
    g.guard->unlock();
  } else {
    g.guard->unlock();
  }
  g.guard.reset();
  g.on_lost = py::none();
  if (LockBox* owner = g.owner) {
    g.owner = nullptr;
    owner->current = py::none();  // the caller holds a reference to this guard's object
  }
}

GuardBox::~GuardBox() {
  if (!guard) return;
  if (std::this_thread::get_id() == holder) {
    unlock(*this);
    return;
  }
  // Dropped by another thread than its holder: a mutex cannot be released
  // from there. It stays held (the lock mapped) until the holder's process
  // ends; then the next acquirer is told owner_died.
  PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                   "%s was dropped by another thread than the one that holds it: it stays held until that "
                   "process exits; release locks in the thread that acquired them",
                   quoted(*lock).c_str());
  if (PyErr_Occurred()) PyErr_WriteUnraisable(nullptr);
  new LockGuard(std::move(*guard));        // never unlocked here
  new std::shared_ptr<Lock>(std::move(lock));  // the record it points into stays mapped
  guard.reset();
}

void release(GuardBox& g) {
  if (!g.guard) return;
  if (std::this_thread::get_id() != g.holder)
    throw std::runtime_error(quoted(*g.lock) +
                             " is held by another thread: only the thread that acquired a lock may release it");
  unlock(g);
}

void refuse_if_held_here(LockBox& box) {
  GuardBox* g = box.current_guard();
  if (g != nullptr && g->holder == std::this_thread::get_id())
    throw_error(Errc::invalid_argument, quoted(*box.lock) + " is already held by this thread");
}

py::object wrap(LockBox& box, LockGuard&& guard) {
  auto g = std::make_unique<GuardBox>();
  g->token = guard.fencing_token();
  g->owner_died = guard.owner_died();
  g->guard.emplace(std::move(guard));
  g->lock = box.lock;
  g->holder = std::this_thread::get_id();
  g->owner = &box;
  box.current = py::cast(std::move(g));
  return box.current;
}

std::string holder_text(const Lock& lock) {
  const LockHolder holder = lock.stats().holder;
  if (holder.pid == 0) return "";
  return " (held by pid " + std::to_string(holder.pid) + (holder.alive ? "" : ", which is dead") + ")";
}

py::object acquire(LockBox& box, std::optional<double> timeout) {
  refuse_if_held_here(box);
  Lock& lock = *box.lock;
  const Deadline deadline = Deadline::after(timeout);
  std::optional<LockGuard> got = lock.try_acquire();
  if (!got) {
    internal::LockWait wait(lock);
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
        throw_error(Errc::timed_out, quoted(lock) + " was not acquired within " +
                                         py::str(py::float_(deadline.seconds())).cast<std::string>() + " s" +
                                         holder_text(lock));
      }
    }
    // Ctrl-C during the slice that granted it: interrupted, holding nothing.
    if (PyErr_CheckSignals() != 0) {
      got->unlock();
      throw py::error_already_set();
    }
  }
  return wrap(box, std::move(*got));
}

py::object open_lock_box(py::handle node_object, NodeBox& node, std::string_view name, Scope scope, OpenMode mode) {
  LockOptions options;
  options.scope = scope;
  auto lock = value_or_throw(with_node(node, [&](Node& n) { return n.lock(name, mode, options); }));
  auto box = std::unique_ptr<LockBox>(new LockBox{std::make_shared<Lock>(std::move(lock)),
                                                  NodeRef{py::reinterpret_borrow<py::object>(node_object), &node}});
  return py::cast(std::move(box));
}

}  // namespace

py::object open_lock(py::handle node_object, NodeBox& node, std::string_view name, std::string_view scope,
                     std::string_view mode) {
  Scope s;
  if (scope == "host") {
    s = Scope::host;
  } else if (scope == "cluster") {
    s = Scope::cluster;
  } else {
    throw_error(Errc::invalid_argument, "scope must be 'host' or 'cluster', not '" + std::string(scope) + "'");
  }
  return open_lock_box(node_object, node, name, s, open_mode_from(mode));
}

void bind_lock(py::module_& m) {
  py::class_<GuardBox>(m, "LockGuard",
                       "Holding a lock: what Lock.acquire() returns. Released by release(), at the end of a `with` "
                       "block, or by Lock.release(); only by the thread that acquired it.")
      .def_property_readonly(
          "fencing_token", [](GuardBox& g) { return g.token; },
          "Strictly greater than the token of every earlier grant of this lock (cluster scope: across hosts). "
          "Send it with every write to what the lock protects, and have that refuse a token lower than the "
          "highest it has seen.")
      .def_property_readonly(
          "owner_died", [](GuardBox& g) { return g.owner_died; },
          "True if the previous holder died holding the lock: what it protects may be half-updated.")
      .def_property_readonly(
          "lease_lost", [](GuardBox& g) { return g.guard && g.guard->lease_lost(); },
          "Cluster scope: True once this host no longer holds the cluster lock for this grant (another host may "
          "hold it now: stop writing). No system call. Always False for host scope.")
      .def(
          "on_lease_lost",
          [](GuardBox& g, py::object callback) {
            if (!PyCallable_Check(callback.ptr())) throw py::type_error("on_lease_lost() takes a callable");
            if (!g.guard) throw py::value_error(quoted(*g.lock) + " is no longer held by this guard");
            PyObject* function = callback.ptr();  // kept alive by g.on_lost
            {
              // Replacing a callback joins the earlier one's thread, which
              // may be waiting for the GIL.
              py::gil_scoped_release released;
              g.guard->on_lease_lost([function] {
                const PyGILState_STATE gil = PyGILState_Ensure();
                PyObject* result = PyObject_CallNoArgs(function);
                if (result == nullptr) PyErr_WriteUnraisable(function);
                Py_XDECREF(result);
                PyGILState_Release(gil);
              });
            }
            g.on_lost = std::move(callback);
          },
          py::arg("callback"),
          "Cluster scope: calls `callback()` once, from a thread of its own, as soon as lease_lost turns True "
          "while this guard holds the lock. Replaces an earlier callback. Host scope: never called.")
      .def_property_readonly(
          "held", [](GuardBox& g) { return g.guard.has_value(); }, "True until released.")
      .def("release", &release, "Releases the lock (only from the thread that acquired it). Idempotent.")
      .def("__enter__", [](py::handle self) { return py::reinterpret_borrow<py::object>(self); })
      .def("__exit__", [](GuardBox& g, py::args) { release(g); })
      .def("__repr__", [](GuardBox& g) {
        return "<colo.LockGuard of " + quoted(*g.lock) + ", token " + std::to_string(g.token) +
               (g.guard ? "" : ", released") + ">";
      });

  py::class_<LockBox>(m, "Lock",
                      "A named lock shared by the processes of this host (or, cluster scope, of every host), robust "
                      "to holders that die, with fencing tokens. Open it with Node.lock(). `with lock as guard:` "
                      "holds it for the block. Waits release the GIL and are interrupted by Ctrl-C (which leaves "
                      "the lock not held).")
      .def_property_readonly("name", [](LockBox& b) { return b.lock->name(); })
      .def_property_readonly("scope", [](LockBox& b) { return std::string(scope_name(b.lock->scope())); },
                             "'host' or 'cluster'.")
      .def("acquire", &acquire, py::arg("timeout") = py::none(),
           "Waits for the lock up to `timeout` seconds (None: for ever) and returns the colo.LockGuard; "
           "colo.Timeout if it was not granted by then. colo.InvalidArgument if this thread holds it already; "
           "cluster scope: colo.NotReady if no colod serves the namespace for 5 s.")
      .def(
          "try_acquire",
          [](LockBox& b) -> py::object {
            refuse_if_held_here(b);
            std::optional<LockGuard> got = b.lock->try_acquire();
            if (!got) return py::none();
            return wrap(b, std::move(*got));
          },
          "The lock's guard if it is free now, else None. Cluster scope: granted only if this host holds the "
          "cluster lock already (otherwise colod is asked for it, and a later try may succeed).")
      .def(
          "release",
          [](LockBox& b) {
            GuardBox* g = b.current_guard();
            if (g == nullptr) throw std::runtime_error(quoted(*b.lock) + " is not held through this Lock");
            py::object keep = b.current;  // release() drops the Lock's reference
            release(*g);
          },
          "Releases the lock held through this Lock (by this thread). RuntimeError if it is not held.")
      .def_property_readonly("guard", [](LockBox& b) { return b.current; },
                             "The colo.LockGuard held through this Lock, or None.")
      .def(
          "stats", [](LockBox& b) { return b.node.info(b.lock->name()); },
          "The lock as `colo stat NAME --json` shows it (a dict; counters under 'lock').")
      .def("__enter__", [](LockBox& b) { return acquire(b, std::nullopt); })
      .def("__exit__",
           [](LockBox& b, py::args) {
             if (GuardBox* g = b.current_guard()) {
               py::object keep = b.current;
               release(*g);
             }
           })
      .def("__repr__", [](LockBox& b) {
        return "<colo.Lock '" + b.lock->name() + "', " + scope_name(b.lock->scope()) + " scope>";
      });
}

}  // namespace colo::python
