// holds.hpp — Message, MessageBatch, Loan and LoanBatch: Python objects that
// hold ring memory (a received message or batch, an open loan) and hand out
// memoryviews into it that never outlive it.
//
// Each object exports its bytes through the buffer protocol, counting the
// buffers it exports; `.data` and `batch[i]` are memoryviews made from it
// (read-only for messages, writable for loans). The ring memory is given
// back (released, and for a queue with acks acknowledged; committed or
// abandoned) only when no Python object can reach it any more:
//   - release(), commit(), abandon(), leaving a `with` block, and the
//     handle's next receive or loan (libcolo: one hold per handle) first
//     call release() on every memoryview the object handed out: those raise
//     ValueError from then on. If another buffer of it is still alive (a
//     slice of a view, memoryview(msg), a numpy array on it), that call
//     raises BufferError instead and the memory stays held, valid, until
//     it is repeated once they are gone;
//   - an object dropped without any of that ends its hold as soon as the
//     last of it and its buffers goes (reference counting: at once;
//     messages are released, loans abandoned).
// So Python never reads or writes ring memory that was given back, and a
// loan cannot be written past its size (a memoryview's bounds).
#pragma once

#include <pybind11/pybind11.h>

#include "colo/channel.hpp"
#include "handles.hpp"

namespace colo::python {

namespace py = pybind11;

// Creates the four classes (colo.Message, colo.MessageBatch, colo.Loan,
// colo.LoanBatch) as attributes of the module.
void define_hold_types(py::module_& module);

// Wrap what the handle behind `handle_object` (a Reader or Publisher, whose
// state is `state`) just got; it becomes the handle's current hold. The
// object keeps `handle_object` alive.
py::object hold_message(py::handle handle_object, HandleState& state, Message&& message);
py::object hold_message_batch(py::handle handle_object, HandleState& state, MessageBatch&& batch);
py::object hold_loan(py::handle handle_object, HandleState& state, Loan&& loan);
py::object hold_loan_batch(py::handle handle_object, HandleState& state, LoanBatch&& batch);

// Ends the handle's current hold, if any (a message is released, a loan
// abandoned), as libcolo's next receive or loan would; throws
// py::error_already_set (BufferError) if views of it are still in use.
void end_current_hold(HandleState& state);

}  // namespace colo::python
