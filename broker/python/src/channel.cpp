// colo.Publisher and colo.Reader (Subscriber, Consumer), and the methods of
// Topic and Queue that open them. The messages and loans they return are
// holds (holds.hpp). Publisher and Reader are types of the CPython API
// (cpython.hpp says why), their methods METH_FASTCALL.
//
// Every call tries once with the GIL held (no system call when a message
// or space is there), then waits, if it may, in slices without the GIL
// (waiting.hpp).
#include <pybind11/stl.h>

#include <chrono>
#include <span>
#include <vector>

#include "colo/internal/clock.hpp"
#include "cpython.hpp"
#include "errors.hpp"
#include "handles.hpp"
#include "holds.hpp"
#include "objects.hpp"
#include "waiting.hpp"

namespace colo::python {
namespace {

PyTypeObject* publisher_type = nullptr;  // created at import
PyTypeObject* reader_type = nullptr;

PublisherBox& publisher_box(py::handle self) { return capi::value_of<PublisherBox>(self.ptr()); }
ReaderBox& reader_box(py::handle self) { return capi::value_of<ReaderBox>(self.ptr()); }

constexpr std::size_t kDefaultBatch = 256;
constexpr std::size_t kMaxBatch = 65536;  // libcolo's bound on a batch

// From now to a slice's end, for libcolo's timed calls.
std::chrono::nanoseconds until(std::uint64_t end_ns) {
  const std::uint64_t now = internal::monotonic_ns();
  return std::chrono::nanoseconds(end_ns > now ? end_ns - now : 0);
}

// Marks a handle busy while one thread waits in it without the GIL.
class Busy {
 public:
  explicit Busy(HandleState& state) : state_(state) { state_.busy = true; }
  ~Busy() { state_.busy = false; }
  Busy(const Busy&) = delete;
  Busy& operator=(const Busy&) = delete;

 private:
  HandleState& state_;
};

void check_usable(bool open, const HandleState& state, const char* kind) {
  if (!open) throw py::value_error(std::string(kind) + " of " + state.what + " is closed");
  if (state.busy)
    throw std::runtime_error(std::string(kind) + " of " + state.what +
                             " is in use by another thread (a handle belongs to one thread at a time: open one "
                             "per thread)");
}

Publisher& usable(PublisherBox& box) {
  check_usable(box.publisher.has_value(), box.state, "publisher");
  return *box.publisher;
}

Reader& usable(ReaderBox& box) {
  check_usable(box.reader.has_value(), box.state, "reader");
  return *box.reader;
}

// A bytes-like argument (anything with the buffer protocol, read as bytes);
// TypeError otherwise.
class Bytes {
 public:
  explicit Bytes(py::handle object) {
    if (PyObject_GetBuffer(object.ptr(), &view_, PyBUF_SIMPLE) != 0) throw py::error_already_set();
  }
  ~Bytes() { PyBuffer_Release(&view_); }
  Bytes(const Bytes&) = delete;
  Bytes& operator=(const Bytes&) = delete;
  std::span<const std::byte> span() const noexcept {
    return {static_cast<const std::byte*>(view_.buf), static_cast<std::size_t>(view_.len)};
  }

 private:
  Py_buffer view_{};
};

[[noreturn]] void throw_send_failure(const PublisherBox& box, SendStatus status, std::size_t size,
                                     const Deadline& deadline) {
  const std::string& what = box.state.what;
  switch (status) {
    case SendStatus::timed_out:
      throw_error(Errc::timed_out, what + ": no space for " + std::to_string(size) + " bytes within " +
                                       py::str(py::float_(deadline.seconds())).cast<std::string>() +
                                       " s (a blocking subscriber or unacknowledged messages hold the ring)");
    case SendStatus::too_large:
      throw_error(Errc::invalid_argument, what + ": a message of " + std::to_string(size) +
                                              " bytes is larger than its max_message (" +
                                              std::to_string(box.max_message) + " bytes)");
    case SendStatus::corrupt:
    case SendStatus::ok: break;
  }
  throw_error(Errc::corrupt, what + ": the ring's shared state failed validation; remove and recreate it");
}

std::uint32_t size_arg(std::int64_t size, const PublisherBox& box) {
  if (size < 0) throw py::value_error("size must be >= 0, not " + std::to_string(size));
  if (size > static_cast<std::int64_t>(box.max_message)) throw_send_failure(box, SendStatus::too_large, size, {});
  return static_cast<std::uint32_t>(size);
}

std::uint32_t count_arg(std::int64_t count, const char* name, std::int64_t max) {
  if (count < 1 || count > max)
    throw py::value_error(std::string(name) + " must be 1.." + std::to_string(max) + ", not " + std::to_string(count));
  return static_cast<std::uint32_t>(count);
}

// ---------------------------------------------------------------- Publisher

void publish(py::handle self, py::handle data, std::optional<double> timeout) {
  auto& box = publisher_box(self);
  Publisher& publisher = usable(box);
  const Bytes bytes(data);  // TypeError before anything changes
  end_current_hold(box.state);
  SendStatus status = publisher.try_publish(bytes.span());
  const Deadline deadline = Deadline::after(timeout);
  if (status == SendStatus::timed_out && !deadline.passed()) {
    Busy busy(box.state);
    wait_in_slices(deadline, [&](std::uint64_t end) {
      status = publisher.publish(bytes.span(), until(end));
      return status != SendStatus::timed_out;
    });
  }
  if (status != SendStatus::ok) throw_send_failure(box, status, bytes.span().size(), deadline);
}

bool try_publish(py::handle self, py::handle data) {
  auto& box = publisher_box(self);
  Publisher& publisher = usable(box);
  const Bytes bytes(data);
  end_current_hold(box.state);
  const SendStatus status = publisher.try_publish(bytes.span());
  if (status == SendStatus::timed_out) return false;
  if (status != SendStatus::ok) throw_send_failure(box, status, bytes.span().size(), {});
  return true;
}

std::size_t publish_batch(py::handle self, py::handle messages, std::optional<double> timeout) {
  auto& box = publisher_box(self);
  Publisher& publisher = usable(box);
  if (!PySequence_Check(messages.ptr()))
    throw py::type_error("publish_batch() takes a sequence of bytes-like objects");
  py::sequence items = py::reinterpret_borrow<py::sequence>(messages);
  const std::size_t n = items.size();
  std::vector<std::unique_ptr<Bytes>> buffers;
  std::vector<std::span<const std::byte>> spans;
  buffers.reserve(n);
  spans.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    py::object item = items[i];
    buffers.push_back(std::make_unique<Bytes>(item));
    spans.push_back(buffers.back()->span());
    if (spans.back().size() > box.max_message)
      throw_send_failure(box, SendStatus::too_large, spans.back().size(), {});
  }
  end_current_hold(box.state);
  const std::span<const std::span<const std::byte>> all(spans);
  std::size_t done = publisher.publish_batch(all, std::chrono::nanoseconds(0));
  const Deadline deadline = Deadline::after(timeout);
  if (done < n && publisher.last_status() == SendStatus::timed_out && !deadline.passed()) {
    Busy busy(box.state);
    wait_in_slices(deadline, [&](std::uint64_t end) {
      done += publisher.publish_batch(all.subspan(done), until(end));
      return done == n || publisher.last_status() != SendStatus::timed_out;
    });
  }
  if (done < n && publisher.last_status() != SendStatus::timed_out)
    throw_send_failure(box, publisher.last_status(), spans[done].size(), deadline);
  return done;
}

py::object loan(py::handle self, std::int64_t size_in, std::optional<double> timeout, bool raise_on_timeout) {
  auto& box = publisher_box(self);
  Publisher& publisher = usable(box);
  const std::uint32_t size = size_arg(size_in, box);
  end_current_hold(box.state);
  std::optional<Loan> got = publisher.try_loan(size);
  const Deadline deadline = Deadline::after(timeout);
  if (!got && publisher.last_status() == SendStatus::timed_out && !deadline.passed()) {
    Busy busy(box.state);
    wait_in_slices(deadline, [&](std::uint64_t end) {
      if (auto loaned = publisher.loan_for(size, until(end))) got.emplace(std::move(*loaned));  // Loan: no move-assignment
      return got.has_value() || publisher.last_status() != SendStatus::timed_out;
    });
  }
  if (got) return hold_loan(self, box.state, std::move(*got));
  if (!raise_on_timeout && publisher.last_status() == SendStatus::timed_out) return py::none();
  throw_send_failure(box, publisher.last_status(), size, deadline);
}

py::object loan_batch(py::handle self, std::int64_t count_in, std::int64_t size_in, std::optional<double> timeout,
                      bool raise_on_timeout) {
  auto& box = publisher_box(self);
  Publisher& publisher = usable(box);
  const std::uint32_t count = count_arg(count_in, "count", kMaxBatch);
  const std::uint32_t size = size_arg(size_in, box);
  end_current_hold(box.state);
  std::optional<LoanBatch> got = publisher.try_loan_batch(count, size);
  const Deadline deadline = Deadline::after(timeout);
  if (!got && publisher.last_status() == SendStatus::timed_out && !deadline.passed()) {
    Busy busy(box.state);
    wait_in_slices(deadline, [&](std::uint64_t end) {
      if (auto loaned = publisher.loan_batch_for(count, size, until(end))) got.emplace(std::move(*loaned));
      return got.has_value() || publisher.last_status() != SendStatus::timed_out;
    });
  }
  if (got) return hold_loan_batch(self, box.state, std::move(*got));
  if (!raise_on_timeout && publisher.last_status() == SendStatus::timed_out) return py::none();
  throw_send_failure(box, publisher.last_status(), size, deadline);
}

void close_publisher(py::handle self) {
  auto& box = publisher_box(self);
  if (!box.publisher) return;
  usable(box);
  end_current_hold(box.state);
  box.publisher.reset();
}

// ------------------------------------------------------------------- Reader

py::object receive(py::handle self, std::optional<double> timeout) {
  auto& box = reader_box(self);
  Reader& reader = usable(box);
  end_current_hold(box.state);
  std::optional<Message> got = reader.try_receive();
  if (!got) {
    const Deadline deadline = Deadline::after(timeout);
    if (deadline.passed()) return py::none();
    Busy busy(box.state);
    wait_in_slices(deadline, [&](std::uint64_t end) {
      got = reader.receive_for(until(end));
      return got.has_value();
    });
    if (!got) return py::none();
  }
  return hold_message(self, box.state, std::move(*got));
}

py::object try_receive(py::handle self) {
  auto& box = reader_box(self);
  Reader& reader = usable(box);
  end_current_hold(box.state);
  std::optional<Message> got = reader.try_receive();
  if (!got) return py::none();
  return hold_message(self, box.state, std::move(*got));
}

py::object receive_batch(py::handle self, std::int64_t max_in, std::optional<double> timeout) {
  auto& box = reader_box(self);
  Reader& reader = usable(box);
  const std::size_t max = count_arg(max_in, "max", kMaxBatch);
  end_current_hold(box.state);
  MessageBatch got = reader.try_receive_batch(max);
  if (got.empty()) {
    const Deadline deadline = Deadline::after(timeout);
    if (!deadline.passed()) {
      Busy busy(box.state);
      wait_in_slices(deadline, [&](std::uint64_t end) {
        got = reader.receive_batch_for(max, until(end));
        return !got.empty();
      });
    }
  }
  return hold_message_batch(self, box.state, std::move(got));
}

void close_reader(py::handle self) {
  auto& box = reader_box(self);
  if (!box.reader) return;
  usable(box);
  end_current_hold(box.state);
  box.reader.reset();
}

std::string describe(const std::string& kind, const std::string& name) { return kind + " '" + name + "'"; }

Backpressure backpressure_from(std::string_view text) {
  if (text == "block") return Backpressure::block;
  if (text == "lossy") return Backpressure::lossy;
  throw_error(Errc::invalid_argument, "backpressure must be 'block' or 'lossy', not '" + std::string(text) + "'");
}

// ------------------------------------------------------ the methods, in C

PyObject* none() { Py_RETURN_NONE; }

PyObject* m_publish(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[2];
    capi::parse_arguments("publish", args, nargs, kwnames, {"data", "timeout"}, 1, a);
    publish(self, a[0], capi::timeout_argument(a[1]));
    return none();
  });
}
PyObject* m_try_publish(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[1];
    capi::parse_arguments("try_publish", args, nargs, kwnames, {"data"}, 1, a);
    return PyBool_FromLong(try_publish(self, a[0]));
  });
}
PyObject* m_publish_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[2];
    capi::parse_arguments("publish_batch", args, nargs, kwnames, {"messages", "timeout"}, 1, a);
    return PyLong_FromSize_t(publish_batch(self, a[0], capi::timeout_argument(a[1])));
  });
}
PyObject* m_loan(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[2];
    capi::parse_arguments("loan", args, nargs, kwnames, {"size", "timeout"}, 1, a);
    return loan(self, capi::int_argument(a[0], "size"), capi::timeout_argument(a[1]), true).release().ptr();
  });
}
PyObject* m_try_loan(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[1];
    capi::parse_arguments("try_loan", args, nargs, kwnames, {"size"}, 1, a);
    return loan(self, capi::int_argument(a[0], "size"), 0.0, false).release().ptr();
  });
}
PyObject* m_loan_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[3];
    capi::parse_arguments("loan_batch", args, nargs, kwnames, {"count", "size", "timeout"}, 2, a);
    return loan_batch(self, capi::int_argument(a[0], "count"), capi::int_argument(a[1], "size"),
                      capi::timeout_argument(a[2]), true)
        .release()
        .ptr();
  });
}
PyObject* m_try_loan_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[2];
    capi::parse_arguments("try_loan_batch", args, nargs, kwnames, {"count", "size"}, 2, a);
    return loan_batch(self, capi::int_argument(a[0], "count"), capi::int_argument(a[1], "size"), 0.0, false)
        .release()
        .ptr();
  });
}
PyObject* m_close_publisher(PyObject* self, PyObject*) {
  return capi::guarded([&] {
    close_publisher(self);
    return none();
  });
}
PyObject* m_close_reader(PyObject* self, PyObject*) {
  return capi::guarded([&] {
    close_reader(self);
    return none();
  });
}
PyObject* m_enter(PyObject* self, PyObject*) { return Py_NewRef(self); }
PyObject* m_exit_publisher(PyObject* self, PyObject*) { return m_close_publisher(self, nullptr); }
PyObject* m_exit_reader(PyObject* self, PyObject*) { return m_close_reader(self, nullptr); }

PyObject* m_receive(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[1];
    capi::parse_arguments("receive", args, nargs, kwnames, {"timeout"}, 0, a);
    return receive(self, capi::timeout_argument(a[0])).release().ptr();
  });
}
PyObject* m_try_receive(PyObject* self, PyObject*) {
  return capi::guarded([&] { return try_receive(self).release().ptr(); });
}
PyObject* m_receive_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[2];
    capi::parse_arguments("receive_batch", args, nargs, kwnames, {"max", "timeout"}, 0, a);
    const std::int64_t max = a[0] != nullptr ? capi::int_argument(a[0], "max") : kDefaultBatch;
    return receive_batch(self, max, capi::timeout_argument(a[1])).release().ptr();
  });
}
PyObject* m_try_receive_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  return capi::guarded([&] {
    PyObject* a[1];
    capi::parse_arguments("try_receive_batch", args, nargs, kwnames, {"max"}, 0, a);
    const std::int64_t max = a[0] != nullptr ? capi::int_argument(a[0], "max") : kDefaultBatch;
    return receive_batch(self, max, 0.0).release().ptr();
  });
}
PyObject* reader_next(PyObject* self) {
  return capi::guarded([&] { return receive(self, std::nullopt).release().ptr(); });
}
PyObject* reader_missed(PyObject* self, void*) {
  return capi::guarded([&] { return PyLong_FromUnsignedLongLong(usable(reader_box(self)).missed()); });
}
PyObject* publisher_closed(PyObject* self, void*) { return PyBool_FromLong(!publisher_box(self).publisher); }
PyObject* reader_closed(PyObject* self, void*) { return PyBool_FromLong(!reader_box(self).reader); }
PyObject* publisher_repr(PyObject* self) {
  return PyUnicode_FromFormat("<colo.Publisher of %s%s>", publisher_box(self).state.what.c_str(),
                              publisher_box(self).publisher ? "" : ", closed");
}
PyObject* reader_repr(PyObject* self) {
  return PyUnicode_FromFormat("<colo.Reader of %s%s>", reader_box(self).state.what.c_str(),
                              reader_box(self).reader ? "" : ", closed");
}

PyMethodDef publisher_methods[] = {
    {"publish", capi::as_method(m_publish), capi::kFastWithKeywords,
     "publish(data, timeout=None)\n\nCopies `data` (any bytes-like object) into the ring as one message, waiting "
     "for space up to `timeout` seconds (None: for ever). colo.Timeout if there is none by then; "
     "colo.InvalidArgument if larger than max_message."},
    {"try_publish", capi::as_method(m_try_publish), capi::kFastWithKeywords, "try_publish(data)\n\npublish() without waiting: False if there is no "
                                             "space now."},
    {"loan", capi::as_method(m_loan), capi::kFastWithKeywords,
     "loan(size, timeout=None)\n\nSpace for one message of `size` bytes, to write in place (zero copy): a "
     "colo.Loan, committed by commit() or at the end of a `with` block. colo.Timeout if no space within "
     "`timeout`."},
    {"try_loan", capi::as_method(m_try_loan), capi::kFastWithKeywords, "try_loan(size)\n\nloan() without waiting: None if there is no space now."},
    {"loan_batch", capi::as_method(m_loan_batch), capi::kFastWithKeywords,
     "loan_batch(count, size, timeout=None)\n\nSpace for up to `count` (1..65536) messages of `size` bytes each: a "
     "colo.LoanBatch, published together by commit(). It may hold fewer than asked (a batch never crosses the "
     "ring's end, and takes at most about half the ring): loan again for the rest."},
    {"try_loan_batch", capi::as_method(m_try_loan_batch), capi::kFastWithKeywords,
     "try_loan_batch(count, size)\n\nloan_batch() without waiting: None if there is no space now."},
    {"publish_batch", capi::as_method(m_publish_batch), capi::kFastWithKeywords,
     "publish_batch(messages, timeout=None)\n\nCopies a sequence of bytes-like objects into the ring in order, in "
     "as few publications as fit, waiting for space up to `timeout` in all. Returns how many were published: all "
     "of them, or fewer if the timeout ran out."},
    {"close", m_close_publisher, METH_NOARGS, "Gives the publisher's slot back (an open loan is abandoned)."},
    {"__enter__", m_enter, METH_NOARGS, nullptr},
    {"__exit__", m_exit_publisher, METH_VARARGS, "Closes the publisher."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef publisher_getset[] = {
    {"closed", publisher_closed, nullptr, "True once closed.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyMethodDef reader_methods[] = {
    {"receive", capi::as_method(m_receive), capi::kFastWithKeywords,
     "receive(timeout=None)\n\nThe next message (a colo.Message), waiting up to `timeout` seconds (None: for "
     "ever); None if none came. Releases the message this reader held."},
    {"try_receive", m_try_receive, METH_NOARGS, "The next message if one is there now, else None."},
    {"receive_batch", capi::as_method(m_receive_batch), capi::kFastWithKeywords,
     "receive_batch(max=256, timeout=None)\n\nEvery message available, up to `max` (1..65536), waiting up to "
     "`timeout` for the first: a colo.MessageBatch, empty if none came. A queue consumer takes them all in one "
     "atomic step."},
    {"try_receive_batch", capi::as_method(m_try_receive_batch), capi::kFastWithKeywords, "try_receive_batch(max=256)\n\nreceive_batch() without "
                                                         "waiting."},
    {"close", m_close_reader, METH_NOARGS, "Releases what it holds and gives its slot back."},
    {"__enter__", m_enter, METH_NOARGS, nullptr},
    {"__exit__", m_exit_reader, METH_VARARGS, "Closes the reader."},
    {nullptr, nullptr, 0, nullptr},
};
PyGetSetDef reader_getset[] = {
    {"missed", reader_missed, nullptr, "Lossy subscriber: messages overwritten before it could read them.", nullptr},
    {"closed", reader_closed, nullptr, "True once closed.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr},
};

PyObject* new_publisher(Publisher&& publisher, const std::string& what, std::uint32_t max_message) {
  PyObject* self = capi::make<PublisherBox>(publisher_type, std::move(publisher), HandleState{}, max_message);
  publisher_box(self).state.what = what;
  return self;
}

PyObject* new_reader(Reader&& reader, const std::string& what) {
  PyObject* self = capi::make<ReaderBox>(reader_type, std::move(reader), HandleState{});
  reader_box(self).state.what = what;
  return self;
}

// The handles export their hold's memory (holds.hpp).
int publisher_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  return export_hold(self, publisher_box(self).state, view, flags);
}
void publisher_releasebuffer(PyObject* self, Py_buffer*) { release_hold_export(publisher_box(self).state); }
int reader_getbuffer(PyObject* self, Py_buffer* view, int flags) {
  return export_hold(self, reader_box(self).state, view, flags);
}
void reader_releasebuffer(PyObject* self, Py_buffer*) { release_hold_export(reader_box(self).state); }

}  // namespace

void bind_channel(py::module_& m) {
  static PyType_Slot publisher_slots[] = {
      {Py_tp_doc, const_cast<char*>(
                      "Writes to a topic (Topic.publisher()) or a queue (Queue.producer()). One thread at a time; a "
                      "context manager that closes it. Every wait releases the GIL and is interrupted by Ctrl-C.")},
      {Py_tp_dealloc, reinterpret_cast<void*>(capi::dealloc<PublisherBox>)},
      {Py_tp_methods, publisher_methods},
      {Py_tp_getset, publisher_getset},
      {Py_tp_repr, reinterpret_cast<void*>(publisher_repr)},
      {Py_bf_getbuffer, reinterpret_cast<void*>(publisher_getbuffer)},
      {Py_bf_releasebuffer, reinterpret_cast<void*>(publisher_releasebuffer)},
      {0, nullptr},
  };
  static PyType_Slot reader_slots[] = {
      {Py_tp_doc, const_cast<char*>(
                      "Reads a topic (Topic.subscribe(): a subscriber) or a queue (Queue.consumer(): a consumer). "
                      "One thread at a time; one message or batch held at a time (the next receive releases it); "
                      "iterating it receives for ever; a context manager that closes it. Every wait releases the "
                      "GIL and is interrupted by Ctrl-C.")},
      {Py_tp_dealloc, reinterpret_cast<void*>(capi::dealloc<ReaderBox>)},
      {Py_tp_methods, reader_methods},
      {Py_tp_getset, reader_getset},
      {Py_tp_repr, reinterpret_cast<void*>(reader_repr)},
      {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
      {Py_tp_iternext, reinterpret_cast<void*>(reader_next)},
      {Py_bf_getbuffer, reinterpret_cast<void*>(reader_getbuffer)},
      {Py_bf_releasebuffer, reinterpret_cast<void*>(reader_releasebuffer)},
      {0, nullptr},
  };
  constexpr unsigned flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION;
  publisher_type = capi::add_type(m, "colo.Publisher", sizeof(capi::Object<PublisherBox>), flags, publisher_slots);
  reader_type = capi::add_type(m, "colo.Reader", sizeof(capi::Object<ReaderBox>), flags, reader_slots);
  m.attr("Subscriber") = m.attr("Reader");
  m.attr("Consumer") = m.attr("Reader");

  auto topic = py::reinterpret_borrow<py::class_<TopicBox>>(m.attr("Topic"));
  topic
      .def(
          "publisher",
          [](TopicBox& b) {
            auto publisher = value_or_throw(b.topic.publisher());
            return py::reinterpret_steal<py::object>(
                new_publisher(std::move(publisher), describe("topic", b.topic.name()), b.topic.stats().max_message));
          },
          "A colo.Publisher of this topic (colo.Busy if exclusive_publisher and another one lives).")
      .def(
          "subscribe",
          [](TopicBox& b, std::string_view backpressure, std::optional<std::uint64_t> history,
             std::optional<std::uint64_t> from_sequence) {
            SubscribeOptions options{backpressure_from(backpressure), history, from_sequence};
            auto reader = value_or_throw(b.topic.subscribe(options));
            return py::reinterpret_steal<py::object>(new_reader(std::move(reader), describe("topic", b.topic.name())));
          },
          py::kw_only(), py::arg("backpressure") = "block", py::arg("history") = py::none(),
          py::arg("from_sequence") = py::none(),
          "A subscriber (a colo.Reader). backpressure: 'block' (publishers wait for it when it is the slowest) "
          "or 'lossy' (it is lapped instead and counts what it missed). history: start up to this many retained "
          "messages back (None: the topic's history). from_sequence: start at that message instead.");

  auto queue = py::reinterpret_borrow<py::class_<QueueBox>>(m.attr("Queue"));
  queue
      .def(
          "producer",
          [](QueueBox& b) {
            auto publisher = value_or_throw(b.queue.producer());
            return py::reinterpret_steal<py::object>(
                new_publisher(std::move(publisher), describe("queue", b.queue.name()), b.queue.stats().max_message));
          },
          "A colo.Publisher of this queue.")
      .def(
          "consumer",
          [](QueueBox& b) {
            auto reader = value_or_throw(b.queue.consumer());
            return py::reinterpret_steal<py::object>(new_reader(std::move(reader), describe("queue", b.queue.name())));
          },
          "A consumer (a colo.Reader): each message goes to one consumer; with acks, releasing a message "
          "acknowledges it.");
}

}  // namespace colo::python
