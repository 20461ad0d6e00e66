#include "errors.hpp"

namespace colo::python {
namespace {

struct ExceptionClasses {
  PyObject* error = nullptr;
  PyObject* invalid_argument = nullptr;
  PyObject* not_found = nullptr;
  PyObject* already_exists = nullptr;
  PyObject* mismatch = nullptr;
  PyObject* permission_denied = nullptr;
  PyObject* corrupt = nullptr;
  PyObject* not_ready = nullptr;
  PyObject* busy = nullptr;
  PyObject* timeout = nullptr;
};
// Created once at import and kept for the life of the process (the module
// holds them too), like the interpreter's own exception classes.
ExceptionClasses classes;

PyObject* class_for(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument: return classes.invalid_argument;
    case Errc::not_found: return classes.not_found;
    case Errc::already_exists: return classes.already_exists;
    case Errc::kind_mismatch:
    case Errc::parameter_mismatch: return classes.mismatch;
    case Errc::permission_denied: return classes.permission_denied;
    case Errc::corrupt: return classes.corrupt;
    case Errc::not_ready:
    case Errc::creator_died: return classes.not_ready;
    case Errc::busy: return classes.busy;
    case Errc::timed_out: return classes.timeout;
    case Errc::capacity:
    case Errc::not_supported:
    case Errc::system:
    case Errc::no_space: break;
  }
  return classes.error;
}

PyObject* define(py::module_& module, const char* name, const char* doc, py::tuple bases) {
  const std::string qualified = std::string("colo.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (type == nullptr) throw py::error_already_set();
  module.add_object(name, py::handle(type));  // the module takes a reference; ours is kept
  return type;
}

}  // namespace

void define_exceptions(py::module_& module) {
  auto builtin = [](PyObject* type) { return py::reinterpret_borrow<py::object>(type); };
  classes.error = define(module, "Error",
                         "Every error of colo. `code` names the kind (colo::Errc: 'not found', 'timed out', ...); "
                         "the message names the object, the cause and the remedy.",
                         py::make_tuple(builtin(PyExc_Exception)));
  auto base = builtin(classes.error);
  classes.invalid_argument = define(module, "InvalidArgument", "A malformed name, size or option (also a ValueError).",
                                    py::make_tuple(base, builtin(PyExc_ValueError)));
  classes.not_found = define(module, "NotFound", "The object or segment does not exist.", py::make_tuple(base));
  classes.already_exists =
      define(module, "AlreadyExists", "Exclusive creation of something that exists.", py::make_tuple(base));
  classes.mismatch = define(module, "Mismatch", "The object exists as another kind, or with other parameters.",
                            py::make_tuple(base));
  classes.permission_denied =
      define(module, "PermissionDenied", "Owner, group or mode forbid the access (also a PermissionError).",
             py::make_tuple(base, builtin(PyExc_PermissionError)));
  classes.corrupt = define(module, "Corrupt", "Bytes in shared memory fail validation.", py::make_tuple(base));
  classes.not_ready = define(module, "NotReady",
                             "A segment's creator did not finish in time or died; or no colod serves a cluster lock.",
                             py::make_tuple(base));
  classes.busy = define(module, "Busy", "Held exclusively by another live process (an exclusive publisher).",
                        py::make_tuple(base));
  classes.timeout = define(module, "Timeout", "A bounded wait ran out (also a TimeoutError).",
                           py::make_tuple(base, builtin(PyExc_TimeoutError)));
}

void throw_error(Errc code, const std::string& message) {
  PyObject* type = class_for(code);
  py::object exception = py::reinterpret_steal<py::object>(PyObject_CallOneArg(type, py::str(message).ptr()));
  if (!exception) throw py::error_already_set();
  exception.attr("code") = py::str(std::string(errc_name(code)));
  PyErr_SetObject(type, exception.ptr());
  throw py::error_already_set();
}

void throw_error(const Error& error) { throw_error(error.code, error.message); }

}  // namespace colo::python
