// The four hold types, written against the CPython API rather than bound
// with pybind11: they export buffers (pybind11's buffer support cannot count
// exports or refuse them), and one is made per message received, where
// pybind11's per-instance bookkeeping would cost more than the ring does.
#include "holds.hpp"

#include "cpython.hpp"

#include <memory>
#include <new>
#include <string>
#include <variant>

namespace colo::python {
namespace {

enum class Kind { message, message_batch, loan, loan_batch };
enum class Ending { release, commit, abandon };

struct Hold {
  Kind kind;
  PyObject* handle_object;  // the Reader or Publisher (strong reference)
  HandleState* handle;      // its state, owned by handle_object
  std::uint32_t count;      // messages: 1, or the batch's size
  Py_ssize_t exports = 0;   // buffers exported and not yet released
  Py_ssize_t pending = -1;  // batches: the message the next export is of (-1: none)
  bool live = true;         // the ring memory is held
  bool committed = false;   // a loan that ended: committed, or abandoned
  // Weak references to the memoryviews handed out: one for a message or a
  // loan, one per message of a batch (nullptr: none handed out).
  PyObject* single_view = nullptr;
  std::unique_ptr<PyObject*[]> batch_views;
  std::variant<Message, MessageBatch, Loan, LoanBatch> payload;

  PyObject*& view_ref(Py_ssize_t i) { return batch_views ? batch_views[i] : single_view; }
  bool is_loan() const noexcept { return kind == Kind::loan || kind == Kind::loan_batch; }
  bool is_batch() const noexcept { return kind == Kind::message_batch || kind == Kind::loan_batch; }
};

struct HoldObject {
  PyObject_HEAD
  Hold hold;  // constructed in place after tp_alloc, destroyed in dealloc
};

PyTypeObject* types[4] = {};  // by Kind, created at import
PyObject* memoryview_release = nullptr;  // memoryview.release, looked up once

Hold& hold_of(PyObject* self) { return reinterpret_cast<HoldObject*>(self)->hold; }

// "message 17 of topic 'prices'", "a loan on queue 'jobs'", ...
std::string describe(Hold& h) {
  switch (h.kind) {
    case Kind::message:
      return "message " + std::to_string(std::get<Message>(h.payload).sequence()) + " of " + h.handle->what;
    case Kind::message_batch: return "a batch of " + std::to_string(h.count) + " messages of " + h.handle->what;
    case Kind::loan: return "a loan on " + h.handle->what;
    case Kind::loan_batch: return "a loan of " + std::to_string(h.count) + " messages on " + h.handle->what;
  }
  return {};
}

struct Region {
  std::byte* data;
  std::size_t size;
  bool writable;
};

Region region(Hold& h, Py_ssize_t i) {
  switch (h.kind) {
    case Kind::message: {
      auto d = std::get<Message>(h.payload).data();
      return {const_cast<std::byte*>(d.data()), d.size(), false};  // exported read-only
    }
    case Kind::message_batch: {
      auto d = std::get<MessageBatch>(h.payload)[static_cast<std::size_t>(i)].data();
      return {const_cast<std::byte*>(d.data()), d.size(), false};
    }
    case Kind::loan: {
      auto d = std::get<Loan>(h.payload).data();
      return {d.data(), d.size(), true};
    }
    case Kind::loan_batch: {
      auto d = std::get<LoanBatch>(h.payload)[static_cast<std::uint32_t>(i)];
      return {d.data(), d.size(), true};
    }
  }
  return {nullptr, 0, false};
}

// ------------------------------------------------------------ buffer protocol

int hold_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  Hold& h = hold_of(self);
  view->obj = nullptr;
  if (!h.live) {
    PyErr_Format(PyExc_ValueError, "%s has ended: its memory is no longer held", describe(h).c_str());
    return -1;
  }
  Py_ssize_t index = 0;
  if (h.is_batch()) {
    if (h.pending < 0) {
      PyErr_SetString(PyExc_BufferError, "a batch is not a buffer itself: take its messages, batch[i]");
      return -1;
    }
    index = h.pending;
  }
  const Region r = region(h, index);
  if (PyBuffer_FillInfo(view, self, r.data, static_cast<Py_ssize_t>(r.size), r.writable ? 0 : 1, flags) < 0)
    return -1;
  ++h.exports;
  return 0;
}

void hold_releasebuffer(PyObject* self, Py_buffer*) { --hold_of(self).exports; }

// The memoryview of message `i` (new reference): the one handed out before
// if it is still alive and usable, else a new one.
PyObject* view_of(PyObject* self, Py_ssize_t i) {
  Hold& h = hold_of(self);
  PyObject*& ref = h.view_ref(i);
  if (ref != nullptr) {
    PyObject* existing = PyWeakref_GetObject(ref);  // borrowed
    if (existing != Py_None) {
      if (PyObject_Size(existing) >= 0) return Py_NewRef(existing);
      PyErr_Clear();  // its user released it: make another
    }
  }
  h.pending = i;
  PyObject* view = PyMemoryView_FromObject(self);
  h.pending = -1;
  if (view == nullptr) return nullptr;
  PyObject* weak = PyWeakref_NewRef(view, nullptr);
  if (weak == nullptr) {
    Py_DECREF(view);
    return nullptr;
  }
  Py_XSETREF(ref, weak);
  return view;
}

void set_still_viewed_error(Hold& h) {
  PyErr_Format(PyExc_BufferError,
               "%s is still viewed by a buffer made from it (a slice or copy of its memoryview, memoryview(...), "
               "an array on it): release or delete that first; until then it stays held",
               describe(h).c_str());
}

// release() on every memoryview handed out; then no buffer may be left.
// False (BufferError set) if one is.
bool release_views(PyObject* self) {
  Hold& h = hold_of(self);
  for (std::uint32_t i = 0; i < (h.batch_views ? h.count : 1u); ++i) {
    PyObject*& ref = h.view_ref(i);
    if (ref == nullptr) continue;
    PyObject* view = PyWeakref_GetObject(ref);
    if (view != Py_None) {
      Py_INCREF(view);
      PyObject* done = PyObject_CallOneArg(memoryview_release, view);
      Py_DECREF(view);
      if (done == nullptr) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError)) return false;
        PyErr_Clear();  // the view itself has exports: say what that means here
        set_still_viewed_error(h);
        return false;
      }
      Py_DECREF(done);
    }
    Py_CLEAR(ref);
  }
  if (h.exports > 0) {
    set_still_viewed_error(h);
    return false;
  }
  return true;
}

// Gives the ring memory back. `commit_count`: a loan batch's messages to
// publish (the rest are given up).
void finish(PyObject* self, Ending ending, std::uint32_t commit_count = 0) noexcept {
  Hold& h = hold_of(self);
  h.live = false;
  switch (h.kind) {
    case Kind::message: std::get<Message>(h.payload).release(); break;
    case Kind::message_batch: std::get<MessageBatch>(h.payload).release(); break;
    case Kind::loan:
      if (ending == Ending::commit) std::get<Loan>(h.payload).commit();
      else std::get<Loan>(h.payload).abandon();
      break;
    case Kind::loan_batch: {
      auto& batch = std::get<LoanBatch>(h.payload);
      if (ending == Ending::commit && commit_count > 0) batch.commit(commit_count);
      batch.abandon();  // what was not published
      break;
    }
  }
  h.committed = ending == Ending::commit;
  if (h.handle->current == self) h.handle->current = nullptr;
}

// Ends a live hold; false with BufferError set if views are still in use.
bool end_hold(PyObject* self, Ending ending, std::uint32_t commit_count = 0) {
  if (!hold_of(self).live) return true;
  if (!release_views(self)) return false;
  finish(self, ending, commit_count);
  return true;
}

void hold_dealloc(PyObject* self) {
  Hold& h = hold_of(self);
  // A buffer of it would hold a reference: none is alive, nothing can
  // reach the memory any more.
  if (h.live) finish(self, h.is_loan() ? Ending::abandon : Ending::release);
  for (std::uint32_t i = 0; i < (h.batch_views ? h.count : 1u); ++i) Py_XDECREF(h.view_ref(i));
  PyObject* handle_object = h.handle_object;
  h.~Hold();
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);
  Py_DECREF(handle_object);  // last: it may free the Reader or Publisher
}

template <typename Payload>
PyObject* new_hold(Kind kind, py::handle handle_object, HandleState& state, Payload&& payload, std::uint32_t count) {
  PyTypeObject* type = types[static_cast<int>(kind)];
  PyObject* self = type->tp_alloc(type, 0);
  if (self == nullptr) throw py::error_already_set();
  auto* h = new (&reinterpret_cast<HoldObject*>(self)->hold)
      Hold{kind, Py_NewRef(handle_object.ptr()), &state, count, 0, -1, true, false, nullptr, nullptr,
           std::forward<Payload>(payload)};
  if (h->is_batch()) h->batch_views.reset(new PyObject*[count]());
  if (count == 0) {
    h->live = false;  // an empty batch (nothing came) holds nothing
  } else {
    state.current = self;
  }
  return self;
}

// ------------------------------------------------------------ common methods

PyObject* hold_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }

PyObject* hold_released(PyObject* self, void*) { return PyBool_FromLong(!hold_of(self).live); }

PyObject* message_release(PyObject* self, PyObject*) {
  if (!end_hold(self, Ending::release)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* message_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
  if (!end_hold(self, Ending::release)) return nullptr;
  Py_RETURN_FALSE;
}

Py_ssize_t hold_length(PyObject* self) {
  Hold& h = hold_of(self);
  switch (h.kind) {
    case Kind::message: return static_cast<Py_ssize_t>(std::get<Message>(h.payload).data().size());
    case Kind::loan: return static_cast<Py_ssize_t>(std::get<Loan>(h.payload).data().size());
    case Kind::message_batch:
    case Kind::loan_batch: return h.count;
  }
  return 0;
}

// batch[i]: the i-th message's memoryview.
PyObject* batch_item(PyObject* self, Py_ssize_t i) {
  Hold& h = hold_of(self);
  if (i < 0 || i >= static_cast<Py_ssize_t>(h.count)) {
    PyErr_SetString(PyExc_IndexError, "batch index out of range");
    return nullptr;
  }
  if (!h.live) {
    PyErr_Format(PyExc_ValueError, "%s has ended: its memory is no longer held", describe(h).c_str());
    return nullptr;
  }
  return view_of(self, i);
}

// ------------------------------------------------------------------ Message

PyObject* message_data(PyObject* self, void*) {
  Hold& h = hold_of(self);
  if (!h.live) {
    PyErr_Format(PyExc_ValueError, "%s was released: its data is no longer readable", describe(h).c_str());
    return nullptr;
  }
  return view_of(self, 0);
}
PyObject* message_sequence(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(std::get<Message>(hold_of(self).payload).sequence());
}
PyObject* message_deliveries(PyObject* self, void*) {
  return PyLong_FromUnsignedLong(std::get<Message>(hold_of(self).payload).deliveries());
}
PyObject* message_origin(PyObject* self, void*) {
  return PyLong_FromUnsignedLong(std::get<Message>(hold_of(self).payload).origin());
}
PyObject* message_origin_sequence(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(std::get<Message>(hold_of(self).payload).origin_sequence());
}
PyObject* message_repr(PyObject* self) {
  Hold& h = hold_of(self);
  const auto& m = std::get<Message>(h.payload);
  return PyUnicode_FromFormat("<colo.Message %llu of %s, %zd bytes, deliveries=%u%s>",
                              static_cast<unsigned long long>(m.sequence()), h.handle->what.c_str(),
                              static_cast<Py_ssize_t>(m.data().size()), m.deliveries(), h.live ? "" : ", released");
}

PyMethodDef message_methods[] = {
    {"release", message_release, METH_NOARGS,
     "Releases the message (for a queue with acks: acknowledges it). Its memoryviews raise ValueError from then "
     "on; BufferError (and the message stays held) if a buffer made from them is still alive. Idempotent."},
    {"__enter__", hold_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(message_exit)), METH_FASTCALL,
     "Releases the message, as release()."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef message_getset[] = {
    {"data", message_data, nullptr,
     "The payload: a read-only memoryview into the ring (zero copy), valid until the message is released.",
     nullptr},
    {"sequence", message_sequence, nullptr, "Its sequence in the topic or queue (0 for the first message).", nullptr},
    {"deliveries", message_deliveries, nullptr,
     "Queue: 1 the first time it is delivered, 2 after its consumer died holding it, ...", nullptr},
    {"origin", message_origin, nullptr, "Federated topics: the id of the host it was published on (0: this host).",
     nullptr},
    {"origin_sequence", message_origin_sequence, nullptr, "Federated topics: its sequence on its origin host.",
     nullptr},
    {"released", hold_released, nullptr, "True once released.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// -------------------------------------------------------------- MessageBatch

const MessageView* batch_view_at(PyObject* self, PyObject* arg) {
  Hold& h = hold_of(self);
  const Py_ssize_t i = PyLong_AsSsize_t(arg);
  if (i == -1 && PyErr_Occurred()) return nullptr;
  if (i < 0 || i >= static_cast<Py_ssize_t>(h.count)) {
    PyErr_SetString(PyExc_IndexError, "batch index out of range");
    return nullptr;
  }
  if (!h.live) {
    PyErr_Format(PyExc_ValueError, "%s was released", describe(h).c_str());
    return nullptr;
  }
  return &std::get<MessageBatch>(h.payload)[static_cast<std::size_t>(i)];
}
PyObject* batch_sequence(PyObject* self, PyObject* arg) {
  const MessageView* v = batch_view_at(self, arg);
  return v ? PyLong_FromUnsignedLongLong(v->sequence()) : nullptr;
}
PyObject* batch_deliveries(PyObject* self, PyObject* arg) {
  const MessageView* v = batch_view_at(self, arg);
  return v ? PyLong_FromUnsignedLong(v->deliveries()) : nullptr;
}
PyObject* batch_origin(PyObject* self, PyObject* arg) {
  const MessageView* v = batch_view_at(self, arg);
  return v ? PyLong_FromUnsignedLong(v->origin()) : nullptr;
}
PyObject* batch_origin_sequence(PyObject* self, PyObject* arg) {
  const MessageView* v = batch_view_at(self, arg);
  return v ? PyLong_FromUnsignedLongLong(v->origin_sequence()) : nullptr;
}
PyObject* message_batch_repr(PyObject* self) {
  Hold& h = hold_of(self);
  return PyUnicode_FromFormat("<colo.MessageBatch of %u messages of %s%s>", h.count, h.handle->what.c_str(),
                              h.live ? "" : ", released");
}

PyMethodDef message_batch_methods[] = {
    {"release", message_release, METH_NOARGS,
     "Releases every message of the batch at once (a queue with acks: acknowledges them). Its memoryviews raise "
     "ValueError from then on; BufferError (and the batch stays held) if a buffer made from them is alive."},
    {"sequence", batch_sequence, METH_O, "sequence(i): the sequence of message i."},
    {"deliveries", batch_deliveries, METH_O, "deliveries(i): how often message i was delivered (queue)."},
    {"origin", batch_origin, METH_O, "origin(i): the host message i was published on (0: this host)."},
    {"origin_sequence", batch_origin_sequence, METH_O, "origin_sequence(i): its sequence there."},
    {"__enter__", hold_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(message_exit)), METH_FASTCALL,
     "Releases the batch, as release()."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef message_batch_getset[] = {
    {"released", hold_released, nullptr, "True once released.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// --------------------------------------------------------- Loan, LoanBatch

PyObject* loan_commit(PyObject* self, PyObject*) {
  Hold& h = hold_of(self);
  if (!h.live) {
    if (h.committed) Py_RETURN_NONE;
    PyErr_Format(PyExc_ValueError,
                 "%s was abandoned (by abandon(), or a later loan or publish on its publisher): nothing to commit",
                 describe(h).c_str());
    return nullptr;
  }
  if (!end_hold(self, Ending::commit, h.count)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* loan_batch_commit(PyObject* self, PyObject* args, PyObject* kwargs) {
  static const char* keywords[] = {"count", nullptr};
  PyObject* count_arg = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:commit", const_cast<char**>(keywords), &count_arg))
    return nullptr;
  Hold& h = hold_of(self);
  std::uint32_t count = h.count;
  if (count_arg != Py_None) {
    if (!PyLong_Check(count_arg)) {
      PyErr_Format(PyExc_TypeError, "count must be an int or None, not '%s'", Py_TYPE(count_arg)->tp_name);
      return nullptr;
    }
    const long long n = PyLong_AsLongLong(count_arg);
    if (n == -1 && PyErr_Occurred()) return nullptr;
    if (n < 0 || n > static_cast<long long>(h.count)) {
      PyErr_Format(PyExc_ValueError, "count must be 0..%u (the batch's size), not %lld", h.count, n);
      return nullptr;
    }
    count = static_cast<std::uint32_t>(n);
  }
  if (!h.live) return loan_commit(self, nullptr);
  if (!end_hold(self, Ending::commit, count)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* loan_abandon(PyObject* self, PyObject*) {
  if (!end_hold(self, Ending::abandon)) return nullptr;
  Py_RETURN_NONE;
}

// Leaving `with`: commit, or abandon if the block raised.
PyObject* loan_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs > 0 && args[0] != Py_None) {
    if (!end_hold(self, Ending::abandon)) return nullptr;
    Py_RETURN_FALSE;
  }
  PyObject* done = loan_commit(self, nullptr);
  if (done == nullptr) return nullptr;
  Py_DECREF(done);
  Py_RETURN_FALSE;
}

PyObject* loan_data(PyObject* self, void*) {
  Hold& h = hold_of(self);
  if (!h.live) {
    PyErr_Format(PyExc_ValueError, "%s has ended: its memory is no longer writable", describe(h).c_str());
    return nullptr;
  }
  return view_of(self, 0);
}
PyObject* loan_committed(PyObject* self, void*) {
  Hold& h = hold_of(self);
  return PyBool_FromLong(!h.live && h.committed);
}
PyObject* loan_batch_message_size(PyObject* self, void*) {
  return PyLong_FromUnsignedLong(std::get<LoanBatch>(hold_of(self).payload).message_size());
}
PyObject* loan_repr(PyObject* self) {
  Hold& h = hold_of(self);
  const char* state = h.live ? "open" : h.committed ? "committed" : "abandoned";
  if (h.kind == Kind::loan)
    return PyUnicode_FromFormat("<colo.Loan of %zd bytes on %s, %s>", hold_length(self), h.handle->what.c_str(),
                                state);
  return PyUnicode_FromFormat("<colo.LoanBatch of %u x %u bytes on %s, %s>", h.count,
                              std::get<LoanBatch>(h.payload).message_size(), h.handle->what.c_str(), state);
}

PyMethodDef loan_methods[] = {
    {"commit", loan_commit, METH_NOARGS,
     "Publishes what was written. The memoryview raises ValueError from then on; BufferError (and the loan stays "
     "open) if a buffer made from it is still alive. Nothing after a commit; ValueError after abandon()."},
    {"abandon", loan_abandon, METH_NOARGS, "Gives the space up: nothing is published. Idempotent."},
    {"__enter__", hold_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(loan_exit)), METH_FASTCALL,
     "Commits, or abandons if the block raised."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef loan_getset[] = {
    {"data", loan_data, nullptr,
     "The space to write: a writable memoryview into the ring of exactly the loaned size.", nullptr},
    {"committed", loan_committed, nullptr, "True once committed.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef loan_batch_methods[] = {
    {"commit", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(loan_batch_commit)),
     METH_VARARGS | METH_KEYWORDS,
     "commit(count=None): publishes messages 0..count-1 (all by default) in one publication and ends the batch "
     "(the rest are given up). Views as for Loan.commit()."},
    {"abandon", loan_abandon, METH_NOARGS, "Gives every message up: nothing is published. Idempotent."},
    {"__enter__", hold_enter, METH_NOARGS, nullptr},
    {"__exit__", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(loan_exit)), METH_FASTCALL,
     "Commits all, or abandons if the block raised."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef loan_batch_getset[] = {
    {"message_size", loan_batch_message_size, nullptr, "Bytes of each message.", nullptr},
    {"committed", loan_committed, nullptr, "True once committed.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// ------------------------------------------------------------------- types

// `qualified_name` ("colo.Message") must be static: the type keeps it.
PyTypeObject* make_type(py::module_& module, const char* qualified_name, const char* doc, PyMethodDef* methods,
                        PyGetSetDef* getset, reprfunc repr, bool sequence) {
  std::vector<PyType_Slot> slots = {
      {Py_tp_doc, const_cast<char*>(doc)},
      {Py_tp_dealloc, reinterpret_cast<void*>(hold_dealloc)},
      {Py_tp_methods, methods},
      {Py_tp_getset, getset},
      {Py_tp_repr, reinterpret_cast<void*>(repr)},
      {Py_bf_getbuffer, reinterpret_cast<void*>(hold_getbuffer)},
      {Py_bf_releasebuffer, reinterpret_cast<void*>(hold_releasebuffer)},
  };
  // Batches are sequences (an empty one is false). A message or a loan is
  // not: a message with an empty payload must still be true.
  if (sequence) {
    slots.push_back({Py_sq_length, reinterpret_cast<void*>(hold_length)});
    slots.push_back({Py_sq_item, reinterpret_cast<void*>(batch_item)});
  }
  slots.push_back({0, nullptr});
  // Not instantiable from Python: only receives and loans make them.
  return capi::add_type(module, qualified_name, sizeof(HoldObject),
                        Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, slots.data());
}

}  // namespace

void define_hold_types(py::module_& module) {
  memoryview_release = PyObject_GetAttrString(reinterpret_cast<PyObject*>(&PyMemoryView_Type), "release");
  if (memoryview_release == nullptr) throw py::error_already_set();
  types[static_cast<int>(Kind::message)] = make_type(
      module, "colo.Message",
      "A received message: `data` is a read-only memoryview into the ring (zero copy), valid until release(), the "
      "end of a `with` block, or the reader's next receive. For a queue with acks, releasing is the "
      "acknowledgement. Also a buffer itself: bytes(msg) copies the payload.",
      message_methods, message_getset, message_repr, false);
  types[static_cast<int>(Kind::message_batch)] = make_type(
      module, "colo.MessageBatch",
      "Messages received together: batch[i] is a read-only memoryview of message i; all are released together "
      "(release(), the end of a `with` block, or the reader's next receive). Empty if none came.",
      message_batch_methods, message_batch_getset, message_batch_repr, true);
  types[static_cast<int>(Kind::loan)] = make_type(
      module, "colo.Loan",
      "Space in the ring for one message: write `data` (a writable memoryview of exactly the loaned size), then "
      "commit(); a `with` block commits at its end (abandons if it raised). Dropped uncommitted: abandoned.",
      loan_methods, loan_getset, loan_repr, false);
  types[static_cast<int>(Kind::loan_batch)] = make_type(
      module, "colo.LoanBatch",
      "Space for several messages of one size: batch[i] is a writable memoryview of message i; commit() "
      "publishes them in one publication. len(batch) may be less than asked (see Publisher.loan_batch).",
      loan_batch_methods, loan_batch_getset, loan_repr, true);
}

py::object hold_message(py::handle handle_object, HandleState& state, Message&& message) {
  return py::reinterpret_steal<py::object>(new_hold(Kind::message, handle_object, state, std::move(message), 1));
}

py::object hold_message_batch(py::handle handle_object, HandleState& state, MessageBatch&& batch) {
  const auto count = static_cast<std::uint32_t>(batch.size());
  return py::reinterpret_steal<py::object>(
      new_hold(Kind::message_batch, handle_object, state, std::move(batch), count));
}

py::object hold_loan(py::handle handle_object, HandleState& state, Loan&& loan) {
  return py::reinterpret_steal<py::object>(new_hold(Kind::loan, handle_object, state, std::move(loan), 1));
}

py::object hold_loan_batch(py::handle handle_object, HandleState& state, LoanBatch&& batch) {
  const std::uint32_t count = batch.size();
  return py::reinterpret_steal<py::object>(new_hold(Kind::loan_batch, handle_object, state, std::move(batch), count));
}

void end_current_hold(HandleState& state) {
  if (state.current == nullptr) return;
  // Releasing its views may drop the last reference to it: keep one.
  py::object current = py::reinterpret_borrow<py::object>(state.current);
  const Ending ending = hold_of(current.ptr()).is_loan() ? Ending::abandon : Ending::release;
  if (!end_hold(current.ptr(), ending)) throw py::error_already_set();
}

}  // namespace colo::python
