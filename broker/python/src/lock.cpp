// colo.Lock and colo.LockGuard, types of the CPython API (cpython.hpp says
// why: a `with lock:` costs about two multiprocessing.Lock pairs), and the
// acquire and release that colo.Lock and colo.KeyLock (lock_table.cpp)
// share (lockable.hpp).
//
// A Lock (or KeyLock) keeps the guard it granted until it is released
// (lock.release(), guard.release(), the end of a `with` block), as
// threading.Lock stays held until released; dropping the Lock releases it.
// Only the thread that acquired it may release it (it is a mutex; libcolo's
// rule too).
#include <memory>
#include <thread>

#include "colo/internal/lock_wait.hpp"
#include "cpython.hpp"
#include "errors.hpp"
#include "lockable.hpp"
#include "objects.hpp"
#include "waiting.hpp"

namespace colo::python {
namespace {

PyTypeObject* lock_type = nullptr;  // created at import
PyTypeObject* guard_type = nullptr;

struct GuardBox {
  std::optional<LockGuard> guard;      // empty once released
  std::shared_ptr<Lockable> target;    // keeps the lock (or table) mapped while the guard lives
  std::thread::id holder;              // the thread that acquired it
  std::uint64_t token = 0;             // kept for after the release
  bool owner_died = false;
  py::object on_lost;                  // the callback given to on_lease_lost(), kept alive
  LockingBox* owner = nullptr;         // the colo.Lock or colo.KeyLock it was granted through, while held

  ~GuardBox();
};

GuardBox& guard_box(PyObject* self) { return capi::value_of<GuardBox>(self); }

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
  if (LockingBox* owner = g.owner) {
    g.owner = nullptr;
    Py_CLEAR(owner->current);  // the caller holds a reference to this guard's object
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
  PyObject *type, *value, *traceback;  // an exception on its way (dealloc during unwinding) is kept
  PyErr_Fetch(&type, &value, &traceback);
  if (PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                       "%s was dropped by another thread than the one that holds it: it stays held until that "
                       "process exits; release locks in the thread that acquired them",
                       target->quoted().c_str()) != 0)
    PyErr_WriteUnraisable(nullptr);
  PyErr_Restore(type, value, traceback);
  new LockGuard(std::move(*guard));                   // never unlocked here
  new std::shared_ptr<Lockable>(std::move(target));  // the record it points into stays mapped
  guard.reset();
}

void release(GuardBox& g) {
  if (!g.guard) return;
  if (std::this_thread::get_id() != g.holder)
    throw std::runtime_error(g.target->quoted() +
                             " is held by another thread: only the thread that acquired a lock may release it");
  unlock(g);
}

void refuse_if_held_here(LockingBox& box) {
  if (box.current == nullptr) return;
  if (guard_box(box.current).holder == std::this_thread::get_id())
    throw_error(Errc::invalid_argument, box.target->quoted() + " is already held by this thread");
}

// The guard object for a grant through `box` (a new reference).
PyObject* wrap(LockingBox& box, LockGuard&& guard) {
  const std::uint64_t token = guard.fencing_token();
  const bool owner_died = guard.owner_died();
  PyObject* self = capi::make<GuardBox>(guard_type, std::move(guard), box.target, std::this_thread::get_id(), token,
                                        owner_died, py::none(), &box);
  box.current = Py_NewRef(self);
  return self;
}

// A named lock (colo.Lock's target).
class NamedLock final : public Lockable {
 public:
  explicit NamedLock(Lock lock) : lock(std::move(lock)) {}
  std::string quoted() const override { return "lock '" + lock.name() + "'"; }
  Result<std::optional<LockGuard>> try_acquire() noexcept override { return lock.try_acquire(); }
  LockGuard wait_for(const Deadline& deadline) override {
    internal::LockWait wait(lock);
    return wait_for_grant(wait, *this, deadline);
  }
  LockHolder holder() const noexcept override { return lock.stats().holder; }

  Lock lock;
};

struct LockBox : LockingBox {
  NodeRef node;
  Lock& lock() const { return static_cast<NamedLock&>(*target).lock; }
};

LockBox& lock_box(PyObject* self) { return capi::value_of<LockBox>(self); }

py::object open_lock_box(py::handle node_object, NodeBox& node, std::string_view name, Scope scope, OpenMode mode) {
  LockOptions options;
  options.scope = scope;
  auto lock = value_or_throw(with_node(node, [&](Node& n) { return n.lock(name, mode, options); }));
  PyObject* self = capi::make<LockBox>(lock_type);
  LockBox& box = lock_box(self);
  box.target = std::make_shared<NamedLock>(std::move(lock));
  box.node = NodeRef{py::reinterpret_borrow<py::object>(node_object), &node};
  return py::reinterpret_steal<py::object>(self);
}

}  // namespace

// ------------------------------------------ shared with colo.KeyLock (lockable.hpp)

LockingBox::~LockingBox() {
  if (current == nullptr) return;
  guard_box(current).owner = nullptr;  // the guard may outlive us (if its holder kept it)
  Py_CLEAR(current);
}

PyObject* acquire(LockingBox& box, std::optional<double> timeout) {
  refuse_if_held_here(box);
  const Deadline deadline = Deadline::after(timeout);
  auto got = box.target->try_acquire();
  if (!got) throw_error(got.error());
  if (*got) return wrap(box, std::move(**got));
  return wrap(box, box.target->wait_for(deadline));
}

PyObject* try_acquire(LockingBox& box) {
  refuse_if_held_here(box);
  auto got = box.target->try_acquire();
  if (!got) throw_error(got.error());
  if (!*got) return Py_NewRef(Py_None);
  return wrap(box, std::move(**got));
}

void release_current(LockingBox& box, bool must_hold) {
  if (box.current == nullptr) {
    if (must_hold) throw std::runtime_error(box.target->quoted() + " is not held through this handle");
    return;
  }
  py::object keep = py::reinterpret_borrow<py::object>(box.current);  // release() drops the box's reference
  release(guard_box(keep.ptr()));
}

namespace {

// ------------------------------------------------------ the methods, in C

using LockMethods = LockingMethods<LockBox>;

PyObject* none() { Py_RETURN_NONE; }

PyObject* m_stats(PyObject* self, PyObject*) {
  return capi::guarded([&] { return lock_box(self).node.info(lock_box(self).lock().name()).release().ptr(); });
}
PyObject* lock_name(PyObject* self, void*) {
  const std::string& name = lock_box(self).lock().name();
  return PyUnicode_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
}
PyObject* lock_scope(PyObject* self, void*) { return PyUnicode_FromString(scope_name(lock_box(self).lock().scope())); }
PyObject* lock_repr(PyObject* self) {
  const Lock& lock = lock_box(self).lock();
  return PyUnicode_FromFormat("<colo.Lock '%s', %s scope>", lock.name().c_str(), scope_name(lock.scope()));
}

PyObject* guard_token(PyObject* self, void*) { return PyLong_FromUnsignedLongLong(guard_box(self).token); }
PyObject* guard_owner_died(PyObject* self, void*) { return PyBool_FromLong(guard_box(self).owner_died); }
PyObject* guard_lease_lost(PyObject* self, void*) {
  const GuardBox& g = guard_box(self);
  return PyBool_FromLong(g.guard && g.guard->lease_lost());
}
PyObject* guard_held(PyObject* self, void*) { return PyBool_FromLong(guard_box(self).guard.has_value()); }
PyObject* m_on_lease_lost(PyObject* self, PyObject* callback) {
  return capi::guarded([&] {
    GuardBox& g = guard_box(self);
    if (!PyCallable_Check(callback)) throw py::type_error("on_lease_lost() takes a callable");
    if (!g.guard) throw py::value_error(g.target->quoted() + " is no longer held by this guard");
    // The GIL is let go below: only the holder may touch its guard then.
    if (std::this_thread::get_id() != g.holder)
      throw std::runtime_error(g.target->quoted() + ": on_lease_lost() is for the thread that holds the lock");
    {
      // Replacing a callback joins the earlier one's thread, which may be
      // waiting for the GIL.
      py::gil_scoped_release released;
      g.guard->on_lease_lost([callback] {  // kept alive by g.on_lost
        const PyGILState_STATE gil = PyGILState_Ensure();
        PyObject* result = PyObject_CallNoArgs(callback);
        if (result == nullptr) PyErr_WriteUnraisable(callback);
        Py_XDECREF(result);
        PyGILState_Release(gil);
      });
    }
    g.on_lost = py::reinterpret_borrow<py::object>(callback);
    return none();
  });
}
PyObject* m_release_guard(PyObject* self, PyObject*) {
  return capi::guarded([&] {
    release(guard_box(self));
    return none();
  });
}
PyObject* m_guard_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* m_guard_exit(PyObject* self, PyObject* const*, Py_ssize_t) { return m_release_guard(self, nullptr); }
PyObject* guard_repr(PyObject* self) {
  const GuardBox& g = guard_box(self);
  return PyUnicode_FromFormat("<colo.LockGuard of %s, token %llu%s>", g.target->quoted().c_str(),
                              static_cast<unsigned long long>(g.token), g.guard ? "" : ", released");
}


PyMethodDef lock_methods[] = {
    {"acquire", capi::as_method(LockMethods::acquire), capi::kFastWithKeywords,
     "acquire(timeout=None)\n\nWaits for the lock up to `timeout` seconds (None: for ever) and returns the "
     "colo.LockGuard; colo.Timeout if it was not granted by then. colo.InvalidArgument if this thread holds it "
     "already; cluster scope: colo.NotReady if no colod serves the namespace for 5 s."},
    {"try_acquire", LockMethods::try_acquire, METH_NOARGS,
     "The lock's guard if it is free now, else None. Cluster scope: granted only if this host holds the cluster "
     "lock already (otherwise colod is asked for it, and a later try may succeed)."},
    {"release", LockMethods::release, METH_NOARGS,
     "Releases the lock held through this Lock (by this thread). RuntimeError if it is not held."},
    {"stats", m_stats, METH_NOARGS, "The lock as `colo stat NAME --json` shows it (a dict; counters under 'lock')."},
    {"__enter__", LockMethods::enter, METH_NOARGS, "Acquires (waiting for ever); returns the colo.LockGuard."},
    {"__exit__", capi::as_method(LockMethods::exit), METH_FASTCALL, "Releases."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef lock_getset[] = {
    {"name", lock_name, nullptr, nullptr, nullptr},
    {"scope", lock_scope, nullptr, "'host' or 'cluster'.", nullptr},
    {"guard", LockMethods::guard, nullptr, "The colo.LockGuard held through this Lock, or None.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef guard_methods[] = {
    {"on_lease_lost", m_on_lease_lost, METH_O,
     "on_lease_lost(callback)\n\nCluster scope: calls `callback()` once, from a thread of its own, as soon as "
     "lease_lost turns True while this guard holds the lock. Replaces an earlier callback. Called by the thread "
     "that holds the lock. Host scope: never called."},
    {"release", m_release_guard, METH_NOARGS, "Releases the lock (only from the thread that acquired it). Idempotent."},
    {"__enter__", m_guard_enter, METH_NOARGS, nullptr},
    {"__exit__", capi::as_method(m_guard_exit), METH_FASTCALL, "Releases."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef guard_getset[] = {
    {"fencing_token", guard_token, nullptr,
     "Strictly greater than the token of every earlier grant of this lock (cluster scope: across hosts). Send it "
     "with every write to what the lock protects, and have that refuse a token lower than the highest it has seen.",
     nullptr},
    {"owner_died", guard_owner_died, nullptr,
     "True if the previous holder died holding the lock: what it protects may be half-updated.", nullptr},
    {"lease_lost", guard_lease_lost, nullptr,
     "Cluster scope: True once this host no longer holds the cluster lock for this grant (another host may hold it "
     "now: stop writing). No system call. Always False for host scope.",
     nullptr},
    {"held", guard_held, nullptr, "True until released.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

py::object open_lock(py::handle node_object, NodeBox& node, std::string_view name, std::string_view scope,
                     std::string_view mode) {
  return open_lock_box(node_object, node, name, scope_from(scope), open_mode_from(mode));
}

void bind_lock(py::module_& m) {
  static PyType_Slot lock_slots[] = {
      {Py_tp_doc, const_cast<char*>(
                      "A named lock shared by the processes of this host (or, cluster scope, of every host), robust "
                      "to holders that die, with fencing tokens. Open it with Node.lock(). `with lock as guard:` "
                      "holds it for the block. Waits release the GIL and are interrupted by Ctrl-C (which leaves the "
                      "lock not held).")},
      {Py_tp_dealloc, reinterpret_cast<void*>(capi::dealloc<LockBox>)},
      {Py_tp_methods, lock_methods},
      {Py_tp_getset, lock_getset},
      {Py_tp_repr, reinterpret_cast<void*>(lock_repr)},
      {0, nullptr},
  };
  static PyType_Slot guard_slots[] = {
      {Py_tp_doc, const_cast<char*>(
                      "Holding a lock, or a key of a lock table: what Lock.acquire() and KeyLock.acquire() return. "
                      "Released by release(), at the end of a `with` block, or by the Lock's (KeyLock's) release(); "
                      "only by the thread that acquired it.")},
      {Py_tp_dealloc, reinterpret_cast<void*>(capi::dealloc<GuardBox>)},
      {Py_tp_methods, guard_methods},
      {Py_tp_getset, guard_getset},
      {Py_tp_repr, reinterpret_cast<void*>(guard_repr)},
      {0, nullptr},
  };
  constexpr unsigned flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION;
  lock_type = capi::add_type(m, "colo.Lock", sizeof(capi::Object<LockBox>), flags, lock_slots);
  guard_type = capi::add_type(m, "colo.LockGuard", sizeof(capi::Object<GuardBox>), flags, guard_slots);
}

}  // namespace colo::python
