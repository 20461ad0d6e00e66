// The C++ side of the Python objects that hold a Publisher or a Reader
// (channel.cpp binds them), and what the holds (holds.hpp) need of them.
#pragma once

#include <Python.h>

#include <cstdint>
#include <optional>
#include <string>

#include "colo/channel.hpp"

namespace colo::python {

// What a Publisher or Reader object knows of its hold and its threads.
// Only touched with the GIL held.
struct HandleState {
  // The hold in progress (a Loan or LoanBatch; a Message or MessageBatch),
  // borrowed: the hold clears it when it ends or is freed. libcolo allows
  // one per handle: the next loan or receive ends it first.
  PyObject* current = nullptr;
  // A thread waits in this handle with the GIL released; every other call
  // on it is refused meanwhile (a libcolo handle belongs to one thread at a
  // time).
  bool busy = false;
  // "topic 'prices'", "queue 'jobs'": for messages.
  std::string what;
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
