// Tools for the types written against the CPython API rather than bound
// with pybind11: the ones on the hot path of every message and every lock
// grant (holds.cpp, channel.cpp, lock.cpp). A pybind11 call costs a few
// hundred nanoseconds of dispatch and instance bookkeeping, as much as a
// whole colo lock pair; a METH_FASTCALL method on a plain type costs tens.
// pybind11 keeps the rest (Node, Topic, Queue, stats, exceptions).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <new>
#include <optional>
#include <stdexcept>
#include <utility>

namespace colo::python::capi {

namespace py = pybind11;

// A C++ value inside a Python object: constructed in place after tp_alloc,
// destroyed by dealloc<T>.
template <typename T>
struct Object {
  PyObject_HEAD
  T value;
};

template <typename T>
T& value_of(PyObject* self) {
  return reinterpret_cast<Object<T>*>(self)->value;
}

// A new object of `type` holding T(args...) (a new reference; throws
// py::error_already_set if Python cannot allocate).
template <typename T, typename... Args>
PyObject* make(PyTypeObject* type, Args&&... args) {
  PyObject* self = type->tp_alloc(type, 0);
  if (self == nullptr) throw py::error_already_set();
  new (&reinterpret_cast<Object<T>*>(self)->value) T{std::forward<Args>(args)...};
  return self;
}

template <typename T>
void dealloc(PyObject* self) {
  value_of<T>(self).~T();
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);  // instances of heap types hold their type
}

// Runs `body` (returning a new reference, or nullptr with an error set) and
// turns the bindings' C++ exceptions into Python errors: py::error_already_set
// is restored, pybind11's value_error & co. set theirs, any other
// std::exception becomes RuntimeError.
template <typename Body>
PyObject* guarded(Body&& body) noexcept {
  try {
    return body();
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  }
  return nullptr;
}

// A METH_FASTCALL method (flags METH_FASTCALL) or a METH_FASTCALL |
// METH_KEYWORDS one, as PyMethodDef stores it.
using FastMethod = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t);
using FastMethodWithKeywords = PyObject* (*)(PyObject*, PyObject* const*, Py_ssize_t, PyObject*);
inline PyCFunction as_method(FastMethod f) { return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f)); }
inline PyCFunction as_method(FastMethodWithKeywords f) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}
inline constexpr int kFastWithKeywords = METH_FASTCALL | METH_KEYWORDS;

// The arguments of a METH_FASTCALL | METH_KEYWORDS method: `names` given by
// position or keyword, the first `required` of them mandatory. out[i] is a
// borrowed reference, or nullptr if not given. Throws py::type_error as
// Python words it.
void parse_arguments(const char* function, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                     std::initializer_list<const char*> names, std::size_t required, PyObject** out);

// A timeout argument: absent or None -> nullopt (wait for ever); an int or
// a float >= 0 -> seconds; negative or NaN -> ValueError; anything else ->
// TypeError.
std::optional<double> timeout_argument(PyObject* value);
// An int argument (TypeError for anything else, a bool included).
std::int64_t int_argument(PyObject* value, const char* name);

// PyType_FromSpec, and the type added to `module` under the name after
// "colo." in `qualified_name` (which must be static: the type keeps it).
PyTypeObject* add_type(py::module_& module, const char* qualified_name, int basic_size, unsigned flags,
                       PyType_Slot* slots);

}  // namespace colo::python::capi
