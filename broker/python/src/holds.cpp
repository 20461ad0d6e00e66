// The four facade types, written against the CPython API rather than bound
// with pybind11 (cpython.hpp says why): one is made per message received.
// A facade is small: a reference to its handle, the memoryviews it handed
// out, and what it says of its message after the release (sequence, size).
#include "holds.hpp"

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "cpython.hpp"

namespace colo::python {
namespace {

enum class Kind { message, message_batch, loan, loan_batch };
enum class Ending { release, commit, abandon };

struct Facade {
  Kind kind;
  PyObject* handle_object;  // the Reader or Publisher (a reference)
  HandleState* handle;      // its state, owned by handle_object
  std::uint32_t count;      // messages: 1, or the batch's size
  bool live = true;         // the handle's hold is ours and in progress
  bool committed = false;   // a loan that ended: committed, or abandoned
  // What the message was (kept for after the release).
  std::uint64_t sequence = 0;
  std::uint32_t deliveries = 0, origin = 0, size = 0;
  std::uint64_t origin_sequence = 0;
  // The memoryviews handed out (references; nullptr: none): one for a
  // message or a loan, one per message of a batch.
  PyObject* single_view = nullptr;
  std::unique_ptr<PyObject*[]> batch_views{};

  PyObject*& view_slot(Py_ssize_t i) { return batch_views ? batch_views[i] : single_view; }
  std::uint32_t slots() const noexcept { return batch_views ? count : 1u; }
  bool is_loan() const noexcept { return kind == Kind::loan || kind == Kind::loan_batch; }
  Ending default_ending() const noexcept { return is_loan() ? Ending::abandon : Ending::release; }
};

PyTypeObject* types[4] = {};             // by Kind, created at import
PyObject* memoryview_release = nullptr;  // memoryview.release, looked up once

Facade& facade_of(PyObject* self) { return capi::value_of<Facade>(self); }

// "message 17 of topic 'prices'", "a loan on queue 'jobs'", ...
std::string describe(const Facade& f) {
  switch (f.kind) {
    case Kind::message: return "message " + std::to_string(f.sequence) + " of " + f.handle->what;
    case Kind::message_batch: return "a batch of " + std::to_string(f.count) + " messages of " + f.handle->what;
    case Kind::loan: return "a loan on " + f.handle->what;
    case Kind::loan_batch: return "a loan of " + std::to_string(f.count) + " messages on " + f.handle->what;
  }
  return {};
}

struct Region {
  std::byte* data;
  std::size_t size;
  bool writable;
};

// Message `i` of the handle's hold.
Region region(HandleState& h, Py_ssize_t i) {
  if (auto* m = std::get_if<Message>(&h.hold)) {
    auto d = m->data();
    return {const_cast<std::byte*>(d.data()), d.size(), false};  // exported read-only
  }
  if (auto* b = std::get_if<MessageBatch>(&h.hold)) {
    auto d = (*b)[static_cast<std::size_t>(i)].data();
    return {const_cast<std::byte*>(d.data()), d.size(), false};
  }
  if (auto* l = std::get_if<Loan>(&h.hold)) {
    auto d = l->data();
    return {d.data(), d.size(), true};
  }
  if (auto* lb = std::get_if<LoanBatch>(&h.hold)) {
    auto d = (*lb)[static_cast<std::uint32_t>(i)];
    return {d.data(), d.size(), true};
  }
  return {nullptr, 0, false};
}

// Gives the ring memory back. `commit_count`: a loan batch's messages to
// publish (the rest are given up).
void finish(HandleState& h, Ending ending, std::uint32_t commit_count) noexcept {
  if (auto* m = std::get_if<Message>(&h.hold)) m->release();
  if (auto* b = std::get_if<MessageBatch>(&h.hold)) b->release();
  if (auto* l = std::get_if<Loan>(&h.hold)) {
    if (ending == Ending::commit) l->commit();
    else l->abandon();
  }
  if (auto* lb = std::get_if<LoanBatch>(&h.hold)) {
    if (ending == Ending::commit && commit_count > 0) lb->commit(commit_count);
    lb->abandon();  // what was not published
  }
  h.hold.emplace<std::monostate>();
  h.pending = -1;
  if (h.current != nullptr) {
    Facade& f = facade_of(h.current);
    f.live = false;
    f.committed = ending == Ending::commit;
    h.current = nullptr;
  }
}

void set_still_viewed_error(const Facade& f) {
  PyErr_Format(PyExc_BufferError,
               "%s is still viewed by a buffer made from it (a slice or copy of its memoryview, memoryview(...), "
               "an array on it): release or delete that first; until then it stays held",
               describe(f).c_str());
}

// release() on every memoryview handed out; then no buffer may be left.
// False (BufferError set) if one is.
bool release_views(PyObject* self) {
  Facade& f = facade_of(self);
  for (std::uint32_t i = 0; i < f.slots(); ++i) {
    PyObject*& view = f.view_slot(i);
    if (view == nullptr) continue;
    if (Py_REFCNT(view) == 1) {
      // No one else holds it (an export from it would): dropping it
      // releases it, without the call.
      Py_CLEAR(view);
      continue;
    }
    PyObject* done = PyObject_CallOneArg(memoryview_release, view);
    if (done == nullptr) {
      if (!PyErr_ExceptionMatches(PyExc_BufferError)) return false;
      PyErr_Clear();  // the view itself has exports: say what that means here
      set_still_viewed_error(f);
      return false;
    }
    Py_DECREF(done);
    Py_CLEAR(view);
  }
  if (f.handle->exports > 0) {
    set_still_viewed_error(f);
    return false;
  }
  return true;
}

// Ends the facade's hold if it is in progress; false with BufferError set
// if views of it are still in use.
bool end_hold(PyObject* self, Ending ending, std::uint32_t commit_count = 0) {
  if (!facade_of(self).live) return true;
  if (!release_views(self)) return false;
  finish(*facade_of(self).handle, ending, commit_count);
  return true;
}

PyObject* ended_error(const Facade& f, const char* what) {
  PyErr_Format(PyExc_ValueError, "%s has ended: %s", describe(f).c_str(), what);
  return nullptr;
}

// The memoryview of message `i` (a new reference): the one handed out before
// if it is still usable, else a new one, made from the handle.
PyObject* view_of(PyObject* self, Py_ssize_t i) {
  Facade& f = facade_of(self);
  PyObject*& slot = f.view_slot(i);
  if (slot != nullptr) {
    if (PyObject_Size(slot) >= 0) return Py_NewRef(slot);  // handed out before, not released by its user
    PyErr_Clear();
    Py_CLEAR(slot);
  }
  f.handle->pending = i;
  PyObject* view = PyMemoryView_FromObject(f.handle_object);
  f.handle->pending = -1;
  if (view == nullptr) return nullptr;
  slot = Py_NewRef(view);
  return view;
}

void facade_dealloc(PyObject* self) {
  Facade& f = facade_of(self);
  HandleState& h = *f.handle;
  if (f.live) h.current = nullptr;  // the hold goes on while buffers of it live
  for (std::uint32_t i = 0; i < f.slots(); ++i) Py_CLEAR(f.view_slot(i));
  // Nothing of it left in Python: the memory goes back now. (Otherwise
  // release_hold_export does it when the last buffer goes.)
  if (f.live && h.exports == 0 && h.holding()) finish(h, f.default_ending(), 0);
  PyObject* handle_object = f.handle_object;
  capi::dealloc<Facade>(self);
  Py_DECREF(handle_object);  // last: it may free the Reader or Publisher
}

template <typename Payload>
py::object new_facade(Kind kind, py::handle handle_object, HandleState& state, Payload&& payload,
                      std::uint32_t count) {
  PyObject* self = capi::make<Facade>(types[static_cast<int>(kind)], kind, Py_NewRef(handle_object.ptr()), &state,
                                      count);
  Facade& f = facade_of(self);
  if (kind == Kind::message_batch || kind == Kind::loan_batch) f.batch_views.reset(new PyObject*[count]());
  if (count == 0) {
    f.live = false;  // an empty batch (nothing came) holds nothing
  } else {
    state.hold.template emplace<std::decay_t<Payload>>(std::forward<Payload>(payload));  // Loan: no assignment
    state.current = self;
  }
  return py::reinterpret_steal<py::object>(self);
}

// --------------------------------------------------- the facades as buffers

// A Message or Loan is itself a buffer of its payload: bytes(msg).
int facade_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  Facade& f = facade_of(self);
  view->obj = nullptr;
  if (!f.live) {
    ended_error(f, "its memory is no longer held");
    return -1;
  }
  const Region r = region(*f.handle, 0);
  if (PyBuffer_FillInfo(view, self, r.data, static_cast<Py_ssize_t>(r.size), r.writable ? 0 : 1, flags) < 0)
    return -1;
  ++f.handle->exports;
  return 0;
}

void facade_releasebuffer(PyObject* self, Py_buffer*) { release_hold_export(*facade_of(self).handle); }

// ------------------------------------------------------------ common methods

PyObject* m_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }

PyObject* get_released(PyObject* self, void*) { return PyBool_FromLong(!facade_of(self).live); }

PyObject* m_release(PyObject* self, PyObject*) {
  if (!end_hold(self, Ending::release)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* m_release_exit(PyObject* self, PyObject* const*, Py_ssize_t) {
  if (!end_hold(self, Ending::release)) return nullptr;
  Py_RETURN_FALSE;
}

Py_ssize_t batch_length(PyObject* self) { return facade_of(self).count; }

// batch[i]: the i-th message's memoryview.
PyObject* batch_item(PyObject* self, Py_ssize_t i) {
  Facade& f = facade_of(self);
  if (i < 0 || i >= static_cast<Py_ssize_t>(f.count)) {
    PyErr_SetString(PyExc_IndexError, "batch index out of range");
    return nullptr;
  }
  if (!f.live) return ended_error(f, "its memory is no longer held");
  return view_of(self, i);
}

// ------------------------------------------------------------------ Message

PyObject* message_data(PyObject* self, void*) {
  Facade& f = facade_of(self);
  if (!f.live) return ended_error(f, "it was released, its data is no longer readable");
  return view_of(self, 0);
}
PyObject* message_sequence(PyObject* self, void*) { return PyLong_FromUnsignedLongLong(facade_of(self).sequence); }
PyObject* message_deliveries(PyObject* self, void*) { return PyLong_FromUnsignedLong(facade_of(self).deliveries); }
PyObject* message_origin(PyObject* self, void*) { return PyLong_FromUnsignedLong(facade_of(self).origin); }
PyObject* message_origin_sequence(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(facade_of(self).origin_sequence);
}
PyObject* message_repr(PyObject* self) {
  const Facade& f = facade_of(self);
  return PyUnicode_FromFormat("<colo.Message %llu of %s, %u bytes, deliveries=%u%s>",
                              static_cast<unsigned long long>(f.sequence), f.handle->what.c_str(), f.size,
                              f.deliveries, f.live ? "" : ", released");
}

PyMethodDef message_methods[] = {
    {"release", m_release, METH_NOARGS,
     "Releases the message (for a queue with acks: acknowledges it). Its memoryviews raise ValueError from then "
     "on; BufferError (and the message stays held) if a buffer made from them is still alive. Idempotent."},
    {"__enter__", m_enter, METH_NOARGS, nullptr},
    {"__exit__", capi::as_method(m_release_exit), METH_FASTCALL, "Releases the message, as release()."},
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
    {"released", get_released, nullptr, "True once released.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// -------------------------------------------------------------- MessageBatch

const MessageView* batch_view_at(PyObject* self, PyObject* arg) {
  Facade& f = facade_of(self);
  const Py_ssize_t i = PyLong_AsSsize_t(arg);
  if (i == -1 && PyErr_Occurred()) return nullptr;
  if (i < 0 || i >= static_cast<Py_ssize_t>(f.count)) {
    PyErr_SetString(PyExc_IndexError, "batch index out of range");
    return nullptr;
  }
  if (!f.live) {
    ended_error(f, "it was released");
    return nullptr;
  }
  return &std::get<MessageBatch>(f.handle->hold)[static_cast<std::size_t>(i)];
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
  const Facade& f = facade_of(self);
  return PyUnicode_FromFormat("<colo.MessageBatch of %u messages of %s%s>", f.count, f.handle->what.c_str(),
                              f.live ? "" : ", released");
}

PyMethodDef message_batch_methods[] = {
    {"release", m_release, METH_NOARGS,
     "Releases every message of the batch at once (a queue with acks: acknowledges them). Its memoryviews raise "
     "ValueError from then on; BufferError (and the batch stays held) if a buffer made from them is alive."},
    {"sequence", batch_sequence, METH_O, "sequence(i): the sequence of message i."},
    {"deliveries", batch_deliveries, METH_O, "deliveries(i): how often message i was delivered (queue)."},
    {"origin", batch_origin, METH_O, "origin(i): the host message i was published on (0: this host)."},
    {"origin_sequence", batch_origin_sequence, METH_O, "origin_sequence(i): its sequence there."},
    {"__enter__", m_enter, METH_NOARGS, nullptr},
    {"__exit__", capi::as_method(m_release_exit), METH_FASTCALL, "Releases the batch, as release()."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef message_batch_getset[] = {
    {"released", get_released, nullptr, "True once released.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

// --------------------------------------------------------- Loan, LoanBatch

PyObject* commit(PyObject* self, std::uint32_t count) {
  Facade& f = facade_of(self);
  if (!f.live) {
    if (f.committed) Py_RETURN_NONE;
    PyErr_Format(PyExc_ValueError,
                 "%s was abandoned (by abandon(), or a later loan or publish on its publisher): nothing to commit",
                 describe(f).c_str());
    return nullptr;
  }
  if (!end_hold(self, Ending::commit, count)) return nullptr;
  Py_RETURN_NONE;
}

PyObject* m_loan_commit(PyObject* self, PyObject*) { return commit(self, 1); }

PyObject* m_loan_batch_commit(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[1];
    capi::parse_arguments("commit", args, nargs, kwnames, {"count"}, 0, a);
    const Facade& f = facade_of(self);
    std::uint32_t count = f.count;
    if (a[0] != nullptr && a[0] != Py_None) {
      const std::int64_t n = capi::int_argument(a[0], "count");
      if (n < 0 || n > static_cast<std::int64_t>(f.count))
        throw py::value_error("count must be 0.." + std::to_string(f.count) + " (the batch's size), not " +
                              std::to_string(n));
      count = static_cast<std::uint32_t>(n);
    }
    return commit(self, count);
  });
}

PyObject* m_abandon(PyObject* self, PyObject*) {
  if (!end_hold(self, Ending::abandon)) return nullptr;
  Py_RETURN_NONE;
}

// Leaving `with`: commit, or abandon if the block raised.
PyObject* m_loan_exit(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs > 0 && args[0] != Py_None) {
    if (!end_hold(self, Ending::abandon)) return nullptr;
    Py_RETURN_FALSE;
  }
  PyObject* done = commit(self, facade_of(self).count);
  if (done == nullptr) return nullptr;
  Py_DECREF(done);
  Py_RETURN_FALSE;
}

PyObject* loan_data(PyObject* self, void*) {
  Facade& f = facade_of(self);
  if (!f.live) return ended_error(f, "its memory is no longer writable");
  return view_of(self, 0);
}
PyObject* loan_committed(PyObject* self, void*) {
  const Facade& f = facade_of(self);
  return PyBool_FromLong(!f.live && f.committed);
}
PyObject* loan_batch_message_size(PyObject* self, void*) { return PyLong_FromUnsignedLong(facade_of(self).size); }
PyObject* loan_repr(PyObject* self) {
  const Facade& f = facade_of(self);
  const char* state = f.live ? "open" : f.committed ? "committed" : "abandoned";
  if (f.kind == Kind::loan)
    return PyUnicode_FromFormat("<colo.Loan of %u bytes on %s, %s>", f.size, f.handle->what.c_str(), state);
  return PyUnicode_FromFormat("<colo.LoanBatch of %u x %u bytes on %s, %s>", f.count, f.size, f.handle->what.c_str(),
                              state);
}

PyMethodDef loan_methods[] = {
    {"commit", m_loan_commit, METH_NOARGS,
     "Publishes what was written. The memoryview raises ValueError from then on; BufferError (and the loan stays "
     "open) if a buffer made from it is still alive. Nothing after a commit; ValueError after abandon()."},
    {"abandon", m_abandon, METH_NOARGS, "Gives the space up: nothing is published. Idempotent."},
    {"__enter__", m_enter, METH_NOARGS, nullptr},
    {"__exit__", capi::as_method(m_loan_exit), METH_FASTCALL, "Commits, or abandons if the block raised."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef loan_getset[] = {
    {"data", loan_data, nullptr,
     "The space to write: a writable memoryview into the ring of exactly the loaned size.", nullptr},
    {"committed", loan_committed, nullptr, "True once committed.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef loan_batch_methods[] = {
    {"commit", capi::as_method(m_loan_batch_commit), capi::kFastWithKeywords,
     "commit(count=None): publishes messages 0..count-1 (all by default) in one publication and ends the batch "
     "(the rest are given up). Views as for Loan.commit()."},
    {"abandon", m_abandon, METH_NOARGS, "Gives every message up: nothing is published. Idempotent."},
    {"__enter__", m_enter, METH_NOARGS, nullptr},
    {"__exit__", capi::as_method(m_loan_exit), METH_FASTCALL, "Commits all, or abandons if the block raised."},
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
                        PyGetSetDef* getset, reprfunc repr, bool batch) {
  std::vector<PyType_Slot> slots = {
      {Py_tp_doc, const_cast<char*>(doc)},
      {Py_tp_dealloc, reinterpret_cast<void*>(facade_dealloc)},
      {Py_tp_methods, methods},
      {Py_tp_getset, getset},
      {Py_tp_repr, reinterpret_cast<void*>(repr)},
  };
  if (batch) {
    // A sequence of memoryviews (an empty batch is false).
    slots.push_back({Py_sq_length, reinterpret_cast<void*>(batch_length)});
    slots.push_back({Py_sq_item, reinterpret_cast<void*>(batch_item)});
  } else {
    // A buffer of its payload (and, unlike a batch, true even if empty).
    slots.push_back({Py_bf_getbuffer, reinterpret_cast<void*>(facade_getbuffer)});
    slots.push_back({Py_bf_releasebuffer, reinterpret_cast<void*>(facade_releasebuffer)});
  }
  slots.push_back({0, nullptr});
  // Not instantiable from Python: only receives and loans make them.
  return capi::add_type(module, qualified_name, sizeof(capi::Object<Facade>),
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
  py::object self = new_facade(Kind::message, handle_object, state, std::move(message), 1);
  Facade& f = facade_of(self.ptr());
  const auto& m = std::get<Message>(state.hold);
  f.sequence = m.sequence();
  f.deliveries = m.deliveries();
  f.origin = m.origin();
  f.origin_sequence = m.origin_sequence();
  f.size = static_cast<std::uint32_t>(m.data().size());
  return self;
}

py::object hold_message_batch(py::handle handle_object, HandleState& state, MessageBatch&& batch) {
  const auto count = static_cast<std::uint32_t>(batch.size());
  return new_facade(Kind::message_batch, handle_object, state, std::move(batch), count);
}

py::object hold_loan(py::handle handle_object, HandleState& state, Loan&& loan) {
  const auto size = static_cast<std::uint32_t>(loan.data().size());
  py::object self = new_facade(Kind::loan, handle_object, state, std::move(loan), 1);
  facade_of(self.ptr()).size = size;
  return self;
}

py::object hold_loan_batch(py::handle handle_object, HandleState& state, LoanBatch&& batch) {
  const std::uint32_t count = batch.size();
  const std::uint32_t size = batch.message_size();
  py::object self = new_facade(Kind::loan_batch, handle_object, state, std::move(batch), count);
  facade_of(self.ptr()).size = size;
  return self;
}

void end_current_hold(HandleState& state) {
  if (!state.holding()) return;
  if (state.current == nullptr) {
    // Its facade is gone, buffers made from it are not.
    PyErr_Format(PyExc_BufferError,
                 "the previous message or loan of %s is still viewed by a buffer made from it (its memoryview kept, "
                 "a slice, an array on it): release or delete that first",
                 state.what.c_str());
    throw py::error_already_set();
  }
  // Releasing its views may drop the last reference to it: keep one.
  py::object current = py::reinterpret_borrow<py::object>(state.current);
  if (!end_hold(current.ptr(), facade_of(current.ptr()).default_ending())) throw py::error_already_set();
}

int export_hold(PyObject* handle_object, HandleState& state, Py_buffer* view, int flags) {
  view->obj = nullptr;
  if (!state.holding() || state.pending < 0) {
    PyErr_SetString(PyExc_BufferError,
                    "a Reader or Publisher is not a buffer itself: take msg.data, batch[i] or loan.data");
    return -1;
  }
  const Region r = region(state, state.pending);
  if (PyBuffer_FillInfo(view, handle_object, r.data, static_cast<Py_ssize_t>(r.size), r.writable ? 0 : 1, flags) < 0)
    return -1;
  ++state.exports;
  return 0;
}

void release_hold_export(HandleState& state) {
  // The last buffer of a hold whose facade is gone: the memory goes back.
  if (--state.exports == 0 && state.holding() && state.current == nullptr) {
    const bool loan = std::holds_alternative<Loan>(state.hold) || std::holds_alternative<LoanBatch>(state.hold);
    finish(state, loan ? Ending::abandon : Ending::release, 0);
  }
}

}  // namespace colo::python
