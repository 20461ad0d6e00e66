// colo.LockTable and colo.KeyLock, types of the CPython API: `table.lock(key)`
// runs per key, often per acquire (`with table.lock(order_id):`), so it
// costs an object, not a pybind11 dispatch (cpython.hpp).
//
// A KeyLock is a named Lock's twin (lockable.hpp): it grants colo.LockGuard
// objects and keeps the one it granted until released; only its waits
// differ (internal::KeyLockWait). A key is a str (its UTF-8 bytes) or a
// bytes-like object: "order:42" and b"order:42" are the same key, and the
// same key as a C++ process's "order:42".
#include <memory>
#include <string>

#include "colo/internal/lock_wait.hpp"
#include "cpython.hpp"
#include "errors.hpp"
#include "lockable.hpp"
#include "objects.hpp"
#include "stats.hpp"
#include "waiting.hpp"

namespace colo::python {
namespace {

PyTypeObject* table_type = nullptr;  // created at import
PyTypeObject* key_type = nullptr;

struct TableBox {
  std::shared_ptr<LockTable> table;  // shared with the keys' targets: mapped while any of them lives
  NodeRef node;
};

TableBox& table_box(PyObject* self) { return capi::value_of<TableBox>(self); }

// A key as it reads in messages: text in quotes, other bytes as \xNN.
std::string printable(std::string_view key, bool text) {
  std::string out = "'";
  for (const char c : key) {
    const auto u = static_cast<unsigned char>(c);
    if ((u >= 0x20 && u < 0x7f && c != '\'' && c != '\\') || (text && u >= 0x80)) {
      out += c;
    } else {
      static const char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    }
  }
  return out + "'";
}

// One key of a table (colo.KeyLock's target).
class TableKey final : public Lockable {
 public:
  TableKey(std::shared_ptr<LockTable> table, KeyLock key, bool text)
      : table(std::move(table)), key(std::move(key)), text_(text) {}
  std::string quoted() const override {
    return "key " + printable(key.key(), text_) + " of lock table '" + table->name() + "'";
  }
  Result<std::optional<LockGuard>> try_acquire() noexcept override { return key.try_acquire(); }
  LockGuard wait_for(const Deadline& deadline) override {
    internal::KeyLockWait wait(key);
    return wait_for_grant(wait, *this, deadline);
  }
  LockHolder holder() const noexcept override { return key.stats().holder; }

  std::shared_ptr<LockTable> table;
  KeyLock key;

 private:
  bool text_;  // given as a str: its UTF-8 is shown as text
};

struct KeyBox : LockingBox {
  py::object key;  // as given: a str, or bytes (a copy of another bytes-like object)
  const TableKey& table_key() const { return static_cast<const TableKey&>(*target); }
};

KeyBox& key_box(PyObject* self) { return capi::value_of<KeyBox>(self); }

// table.lock(key): the colo.KeyLock (a new reference).
PyObject* make_key(TableBox& table, PyObject* key) {
  py::object kept;
  std::string_view bytes;
  Py_buffer view{};
  bool text = false;
  if (PyUnicode_Check(key)) {
    Py_ssize_t size = 0;
    const char* utf8 = PyUnicode_AsUTF8AndSize(key, &size);  // cached in the str: no copy
    if (utf8 == nullptr) throw py::error_already_set();     // lone surrogates
    bytes = {utf8, static_cast<std::size_t>(size)};
    kept = py::reinterpret_borrow<py::object>(key);
    text = true;
  } else if (PyBytes_Check(key)) {
    bytes = {PyBytes_AS_STRING(key), static_cast<std::size_t>(PyBytes_GET_SIZE(key))};
    kept = py::reinterpret_borrow<py::object>(key);
  } else if (PyObject_GetBuffer(key, &view, PyBUF_SIMPLE) == 0) {
    // A mutable buffer may change later: the key is what it holds now.
    kept = py::reinterpret_steal<py::object>(
        PyBytes_FromStringAndSize(static_cast<const char*>(view.buf), view.len));
    PyBuffer_Release(&view);
    if (!kept) throw py::error_already_set();
    bytes = {PyBytes_AS_STRING(kept.ptr()), static_cast<std::size_t>(PyBytes_GET_SIZE(kept.ptr()))};
  } else {
    PyErr_Clear();
    throw py::type_error(std::string("a key is a str or a bytes-like object, not '") + Py_TYPE(key)->tp_name + "'");
  }
  KeyLock handle = value_or_throw(table.table->lock(bytes));  // checks the key's length (and cluster charset)
  PyObject* self = capi::make<KeyBox>(key_type);
  KeyBox& box = key_box(self);
  box.target = std::make_shared<TableKey>(table.table, std::move(handle), text);
  box.key = std::move(kept);
  return self;
}

// ------------------------------------------------------ the methods, in C

PyObject* m_lock(PyObject* self, PyObject* key) {
  return capi::guarded([&] { return make_key(table_box(self), key); });
}
PyObject* m_table_stats(PyObject* self, PyObject*) {
  return capi::guarded([&] {
    TableBox& b = table_box(self);
    return b.node.info(b.table->name()).release().ptr();
  });
}
PyObject* table_name(PyObject* self, void*) {
  const std::string& name = table_box(self).table->name();
  return PyUnicode_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
}
PyObject* table_scope(PyObject* self, void*) {
  return PyUnicode_FromString(scope_name(table_box(self).table->scope()));
}
PyObject* table_repr(PyObject* self) {
  const LockTable& table = *table_box(self).table;
  return PyUnicode_FromFormat("<colo.LockTable '%s', %s scope>", table.name().c_str(), scope_name(table.scope()));
}

using KeyMethods = LockingMethods<KeyBox>;

PyObject* m_key_stats(PyObject* self, PyObject*) {
  return capi::guarded([&] {
    const KeyLock& key = key_box(self).table_key().key;
    const KeyStats stats = [&] {
      py::gil_scoped_release released;  // it may wait for the key's bucket lock (100 ms at most)
      return key.stats();
    }();
    return key_stats_dict(stats).release().ptr();
  });
}
PyObject* key_key(PyObject* self, void*) { return Py_NewRef(key_box(self).key.ptr()); }
PyObject* key_table(PyObject* self, void*) {
  const std::string& name = key_box(self).table_key().table->name();
  return PyUnicode_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
}
PyObject* key_repr(PyObject* self) {
  return PyUnicode_FromFormat("<colo.KeyLock %s>", key_box(self).target->quoted().c_str());
}

PyMethodDef table_methods[] = {
    {"lock", m_lock, METH_O,
     "lock(key)\n\nThe colo.KeyLock of `key`: a str (its UTF-8 bytes) or a bytes-like object of 1 to max_key_bytes "
     "bytes (colo.InvalidArgument otherwise). Cheap: make one per use (`with table.lock(key) as guard:`)."},
    {"stats", m_table_stats, METH_NOARGS,
     "The table as `colo stat NAME --json` shows it (a dict; counters, occupancy and the most contended keys under "
     "'lock_table'). Scans every entry: about 1 ms per 100,000."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef table_getset[] = {
    {"name", table_name, nullptr, nullptr, nullptr},
    {"scope", table_scope, nullptr, "'host' or 'cluster'.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef key_methods[] = {
    {"acquire", capi::as_method(KeyMethods::acquire), capi::kFastWithKeywords,
     "acquire(timeout=None)\n\nWaits for the key up to `timeout` seconds (None: for ever) and returns the "
     "colo.LockGuard; colo.Timeout if it was not granted by then. colo.Error (code 'capacity') at once if the "
     "table has no room for the key (it does not wait for room); colo.InvalidArgument if this thread holds the key "
     "already; cluster scope: colo.NotReady if no colod serves the namespace for 5 s."},
    {"try_acquire", KeyMethods::try_acquire, METH_NOARGS,
     "The key's guard if it is free now (or its holder died: then guard.owner_died), else None. A full table "
     "raises colo.Error (code 'capacity'), as acquire()."},
    {"release", KeyMethods::release, METH_NOARGS,
     "Releases the key held through this KeyLock (by this thread). RuntimeError if it is not held."},
    {"stats", m_key_stats, METH_NOARGS,
     "The key now (a dict): held (in the table: held, perhaps by a dead holder), fencing_token (of the current "
     "grant, 0 if not held), holder (pid, tid, held_for_ns, held_for_exact, alive; or None), waiters."},
    {"__enter__", KeyMethods::enter, METH_NOARGS, "Acquires (waiting for ever); returns the colo.LockGuard."},
    {"__exit__", capi::as_method(KeyMethods::exit), METH_FASTCALL, "Releases."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef key_getset[] = {
    {"key", key_key, nullptr, "The key as given (a str or bytes).", nullptr},
    {"table", key_table, nullptr, "The table's name.", nullptr},
    {"guard", KeyMethods::guard, nullptr, "The colo.LockGuard held through this KeyLock, or None.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

}  // namespace

py::object open_lock_table(py::handle node_object, NodeBox& node, std::string_view name, OpenMode mode,
                           const LockTableOptions& options) {
  auto table = value_or_throw(with_node(node, [&](Node& n) { return n.lock_table(name, mode, options); }));
  return py::reinterpret_steal<py::object>(
      capi::make<TableBox>(table_type, std::make_shared<LockTable>(std::move(table)),
                           NodeRef{py::reinterpret_borrow<py::object>(node_object), &node}));
}

void bind_lock_table(py::module_& m) {
  static PyType_Slot table_slots[] = {
      {Py_tp_doc, const_cast<char*>(
                      "A table of locks keyed by byte strings, shared by the processes of this host (or, cluster "
                      "scope, of every host): one object for millions of keys, a key in the table only while "
                      "held. Open it with Node.lock_table(); lock(key) gives a key's colo.KeyLock.")},
      {Py_tp_dealloc, reinterpret_cast<void*>(capi::dealloc<TableBox>)},
      {Py_tp_methods, table_methods},
      {Py_tp_getset, table_getset},
      {Py_tp_repr, reinterpret_cast<void*>(table_repr)},
      {0, nullptr},
  };
  static PyType_Slot key_slots[] = {
      {Py_tp_doc, const_cast<char*>(
                      "One key of a lock table, locked as a named colo.Lock is: robust to holders that die "
                      "(guard.owner_died), fencing tokens strictly increasing per key (across the key leaving the "
                      "table and coming back). Make it with LockTable.lock(key). `with key_lock as guard:` holds it "
                      "for the block. Waits release the GIL and are interrupted by Ctrl-C (which leaves the key "
                      "not held).")},
      {Py_tp_dealloc, reinterpret_cast<void*>(capi::dealloc<KeyBox>)},
      {Py_tp_methods, key_methods},
      {Py_tp_getset, key_getset},
      {Py_tp_repr, reinterpret_cast<void*>(key_repr)},
      {0, nullptr},
  };
  constexpr unsigned flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION;
  table_type = capi::add_type(m, "colo.LockTable", sizeof(capi::Object<TableBox>), flags, table_slots);
  key_type = capi::add_type(m, "colo.KeyLock", sizeof(capi::Object<KeyBox>), flags, key_slots);
}

}  // namespace colo::python
