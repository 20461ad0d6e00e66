// The C++ side of the Python objects that hold a Publisher or a Reader
// (channel.cpp binds them), and what the holds (holds.hpp) keep in them.
#pragma once

#include <Python.h>

#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include "colo/channel.hpp"

namespace colo::python {

// A handle's hold in progress and its buffers. Only touched with the GIL.
//
// The handle object (Reader or Publisher) is the exporter of its hold's
// memory: every memoryview into the ring is made from it, and counted here.
// The Python object the user holds (a Message, MessageBatch, Loan or
// LoanBatch, "the facade") keeps strong references to the memoryviews it
// handed out, so that it can release them; the views keep the handle
// alive, not the facade, so nothing refers back to the facade (no cycle:
// dropping it frees it at once).
struct HandleState {
  // The ring memory held: libcolo allows one hold per handle (the next
  // loan or receive ends it first). monostate: none.
  std::variant<std::monostate, Message, MessageBatch, Loan, LoanBatch> hold;
  // The facade of that hold, borrowed: it clears this when it ends the hold
  // or is freed. nullptr while a hold is in progress: the facade is gone but
  // buffers of it live on; the hold ends when the last goes.
  PyObject* current = nullptr;
  Py_ssize_t exports = 0;   // buffers of the hold alive (memoryviews made from the handle or the facade)
  Py_ssize_t pending = -1;  // which message the next export from the handle is of (-1: none)
  // A thread waits in this handle with the GIL released; every other call
  // on it is refused meanwhile (a libcolo handle belongs to one thread at a
  // time).
  bool busy = false;
  std::string what;  // "topic 'prices'", "queue 'jobs'": for messages

  bool holding() const noexcept { return !std::holds_alternative<std::monostate>(hold); }
};

struct PublisherBox {
  std::optional<Publisher> publisher;  // empty once closed
  HandleState state;
  std::uint32_t max_message = 0;       // of the topic or queue
};

struct ReaderBox {
  std::optional<Reader> reader;  // empty once closed
  HandleState state;
};

}  // namespace colo::python
