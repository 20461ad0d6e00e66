// holds.hpp — Message, MessageBatch, Loan and LoanBatch: what a receive or a
// loan returns to Python, with memoryviews into the ring that never outlive
// the memory they view.
//
// The ring memory (a received message or batch, an open loan) is held by
// the handle (handles.hpp: HandleState), which exports it through the
// buffer protocol and counts the buffers alive; `.data` and `batch[i]` are
// memoryviews made from it (read-only for messages, writable for loans).
// The memory is given back (released, and for a queue with acks
// acknowledged; committed or abandoned) only when no Python object can
// reach it any more:
//   - release(), commit(), abandon(), leaving a `with` block, and the
//     handle's next receive or loan first call release() on every
//     memoryview the object handed out: those raise ValueError from then
//     on. If another buffer of it is still alive (a slice of a view,
//     memoryview(msg), a numpy array on it), that call raises BufferError
//     instead and the memory stays held, valid, until it is repeated once
//     they are gone;
//   - an object dropped without any of that ends its hold as soon as the
//     last of it and its buffers goes (reference counting: at once;
//     messages are released, loans abandoned). Until then the handle's next
//     receive or loan raises BufferError.
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
// state is `state`, with no hold in progress) just got; it becomes the
// handle's hold.
py::object hold_message(py::handle handle_object, HandleState& state, Message&& message);
py::object hold_message_batch(py::handle handle_object, HandleState& state, MessageBatch&& batch);
py::object hold_loan(py::handle handle_object, HandleState& state, Loan&& loan);
py::object hold_loan_batch(py::handle handle_object, HandleState& state, LoanBatch&& batch);

// Ends the handle's hold, if any (a message is released, a loan
// abandoned), as libcolo's next receive or loan would; throws
// py::error_already_set (BufferError) if views of it are still in use.
void end_current_hold(HandleState& state);

// The buffer protocol of the handle types (Reader, Publisher): exports the
// message of the hold that a facade asks for; anything else is refused.
int export_hold(PyObject* handle_object, HandleState& state, Py_buffer* view, int flags);
void release_hold_export(HandleState& state);

}  // namespace colo::python
