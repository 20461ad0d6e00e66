// colo.Publisher and colo.Reader (Subscriber, Consumer), and the methods of
// Topic and Queue that open them. The messages and loans they return are
// holds (holds.hpp).
//
// Every call tries once with the GIL held (no system call when a message
// or space is there), then waits, if it may, in slices without the GIL
// (waiting.hpp).
#include <pybind11/stl.h>

#include <chrono>
#include <span>
#include <vector>

#include "colo/internal/clock.hpp"
#include "errors.hpp"
#include "handles.hpp"
#include "holds.hpp"
#include "objects.hpp"
#include "waiting.hpp"

namespace colo::python {
namespace {

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
  auto& box = self.cast<PublisherBox&>();
  Publisher& publisher = usable(box);
  end_current_hold(box.state);
  const Bytes bytes(data);
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

bool try_publish(PublisherBox& box, py::handle data) {
  Publisher& publisher = usable(box);
  end_current_hold(box.state);
  const Bytes bytes(data);
  const SendStatus status = publisher.try_publish(bytes.span());
  if (status == SendStatus::timed_out) return false;
  if (status != SendStatus::ok) throw_send_failure(box, status, bytes.span().size(), {});
  return true;
}

std::size_t publish_batch(py::handle self, py::handle messages, std::optional<double> timeout) {
  auto& box = self.cast<PublisherBox&>();
  Publisher& publisher = usable(box);
  end_current_hold(box.state);
  py::sequence items = py::reinterpret_borrow<py::sequence>(messages);
  if (!PySequence_Check(messages.ptr()))
    throw py::type_error("publish_batch() takes a sequence of bytes-like objects");
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
  auto& box = self.cast<PublisherBox&>();
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
  auto& box = self.cast<PublisherBox&>();
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

void close_publisher(PublisherBox& box) {
  if (!box.publisher) return;
  usable(box);
  end_current_hold(box.state);
  box.publisher.reset();
}

// ------------------------------------------------------------------- Reader

py::object receive(py::handle self, std::optional<double> timeout) {
  auto& box = self.cast<ReaderBox&>();
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
  auto& box = self.cast<ReaderBox&>();
  Reader& reader = usable(box);
  end_current_hold(box.state);
  std::optional<Message> got = reader.try_receive();
  if (!got) return py::none();
  return hold_message(self, box.state, std::move(*got));
}

py::object receive_batch(py::handle self, std::int64_t max_in, std::optional<double> timeout) {
  auto& box = self.cast<ReaderBox&>();
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

void close_reader(ReaderBox& box) {
  if (!box.reader) return;
  usable(box);
  end_current_hold(box.state);
  box.reader.reset();
}

std::string describe(const std::string& kind, const std::string& name) { return kind + " '" + name + "'"; }

std::uint32_t max_message_of(const ChannelStats& stats) { return stats.max_message; }

Backpressure backpressure_from(std::string_view text) {
  if (text == "block") return Backpressure::block;
  if (text == "lossy") return Backpressure::lossy;
  throw_error(Errc::invalid_argument, "backpressure must be 'block' or 'lossy', not '" + std::string(text) + "'");
}

}  // namespace

void bind_channel(py::module_& m) {
  py::class_<PublisherBox>(m, "Publisher",
                           "Writes to a topic (Topic.publisher()) or a queue (Queue.producer()). One thread at a time; "
                           "a context manager that closes it. timeout: seconds, None to wait for ever; every wait "
                           "releases the GIL and is interrupted by Ctrl-C.")
      .def("publish", &publish, py::arg("data"), py::arg("timeout") = py::none(),
           "Copies `data` (any bytes-like object) into the ring as one message, waiting for space up to "
           "`timeout`. colo.Timeout if there is none by then; colo.InvalidArgument if larger than max_message.")
      .def("try_publish", &try_publish, py::arg("data"),
           "publish() without waiting: False if there is no space now.")
      .def(
          "loan", [](py::handle self, std::int64_t size, std::optional<double> timeout) {
            return loan(self, size, timeout, true);
          },
          py::arg("size"), py::arg("timeout") = py::none(),
          "Space for one message of `size` bytes, to write in place (zero copy): a colo.Loan, committed by "
          "commit() or at the end of a `with` block. colo.Timeout if no space within `timeout`.")
      .def(
          "try_loan", [](py::handle self, std::int64_t size) { return loan(self, size, 0.0, false); },
          py::arg("size"), "loan() without waiting: None if there is no space now.")
      .def(
          "loan_batch",
          [](py::handle self, std::int64_t count, std::int64_t size, std::optional<double> timeout) {
            return loan_batch(self, count, size, timeout, true);
          },
          py::arg("count"), py::arg("size"), py::arg("timeout") = py::none(),
          "Space for up to `count` (1..65536) messages of `size` bytes each: a colo.LoanBatch, published together "
          "by commit(). It may hold fewer than asked (a batch never crosses the ring's end, and takes at most "
          "about half the ring): loan again for the rest.")
      .def(
          "try_loan_batch",
          [](py::handle self, std::int64_t count, std::int64_t size) {
            return loan_batch(self, count, size, 0.0, false);
          },
          py::arg("count"), py::arg("size"), "loan_batch() without waiting: None if there is no space now.")
      .def("publish_batch", &publish_batch, py::arg("messages"), py::arg("timeout") = py::none(),
           "Copies a sequence of bytes-like objects into the ring in order, in as few publications as fit, "
           "waiting for space up to `timeout` in all. Returns how many were published: all of them, or fewer if "
           "the timeout ran out.")
      .def("close", &close_publisher, "Gives the publisher's slot back (an open loan is abandoned).")
      .def_property_readonly("closed", [](PublisherBox& b) { return !b.publisher; })
      .def("__enter__", [](py::handle self) { return py::reinterpret_borrow<py::object>(self); })
      .def("__exit__", [](PublisherBox& b, py::args) { close_publisher(b); })
      .def("__repr__", [](PublisherBox& b) { return "<colo.Publisher of " + b.state.what + ">"; });

  py::class_<ReaderBox>(m, "Reader",
                        "Reads a topic (Topic.subscribe(): a subscriber) or a queue (Queue.consumer(): a consumer). "
                        "One thread at a time; one message or batch held at a time (the next receive releases it); "
                        "iterating it receives for ever; a context manager that closes it. timeout: seconds, None to "
                        "wait for ever; every wait releases the GIL and is interrupted by Ctrl-C.")
      .def("receive", &receive, py::arg("timeout") = py::none(),
           "The next message (a colo.Message), waiting up to `timeout`; None if none came.")
      .def("try_receive", &try_receive, "The next message if one is there now, else None.")
      .def("receive_batch", &receive_batch, py::arg("max") = kDefaultBatch, py::arg("timeout") = py::none(),
           "Every message available, up to `max` (1..65536), waiting up to `timeout` for the first: a "
           "colo.MessageBatch, empty if none came. A queue consumer takes them all in one atomic step.")
      .def(
          "try_receive_batch", [](py::handle self, std::int64_t max) { return receive_batch(self, max, 0.0); },
          py::arg("max") = kDefaultBatch, "receive_batch() without waiting.")
      .def_property_readonly(
          "missed", [](ReaderBox& b) { return usable(b).missed(); },
          "Lossy subscriber: messages overwritten before it could read them.")
      .def("close", &close_reader, "Releases what it holds and gives its slot back.")
      .def_property_readonly("closed", [](ReaderBox& b) { return !b.reader; })
      .def("__enter__", [](py::handle self) { return py::reinterpret_borrow<py::object>(self); })
      .def("__exit__", [](ReaderBox& b, py::args) { close_reader(b); })
      .def("__iter__", [](py::handle self) { return py::reinterpret_borrow<py::object>(self); })
      .def("__next__", [](py::handle self) { return receive(self, std::nullopt); },
           "Receives the next message, waiting for ever.")
      .def("__repr__", [](ReaderBox& b) { return "<colo.Reader of " + b.state.what + ">"; });
  m.attr("Subscriber") = m.attr("Reader");
  m.attr("Consumer") = m.attr("Reader");

  auto topic = py::reinterpret_borrow<py::class_<TopicBox>>(m.attr("Topic"));
  topic
      .def(
          "publisher",
          [](TopicBox& b) {
            auto publisher = value_or_throw(b.topic.publisher());
            return std::unique_ptr<PublisherBox>(new PublisherBox{
                std::move(publisher), {nullptr, false, describe("topic", b.topic.name())},
                max_message_of(b.topic.stats())});
          },
          "A colo.Publisher of this topic (colo.Busy if exclusive_publisher and another one lives).")
      .def(
          "subscribe",
          [](TopicBox& b, std::string_view backpressure, std::optional<std::uint64_t> history,
             std::optional<std::uint64_t> from_sequence) {
            SubscribeOptions options{backpressure_from(backpressure), history, from_sequence};
            auto reader = value_or_throw(b.topic.subscribe(options));
            return std::unique_ptr<ReaderBox>(
                new ReaderBox{std::move(reader), {nullptr, false, describe("topic", b.topic.name())}});
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
            return std::unique_ptr<PublisherBox>(new PublisherBox{
                std::move(publisher), {nullptr, false, describe("queue", b.queue.name())},
                max_message_of(b.queue.stats())});
          },
          "A colo.Publisher of this queue.")
      .def(
          "consumer",
          [](QueueBox& b) {
            auto reader = value_or_throw(b.queue.consumer());
            return std::unique_ptr<ReaderBox>(
                new ReaderBox{std::move(reader), {nullptr, false, describe("queue", b.queue.name())}});
          },
          "A consumer (a colo.Reader): each message goes to one consumer; with acks, releasing a message "
          "acknowledges it.");
}

}  // namespace colo::python
