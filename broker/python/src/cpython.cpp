#include "cpython.hpp"

#include <string>

namespace colo::python::capi {

void parse_arguments(const char* function, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames,
                     std::initializer_list<const char*> names, std::size_t required, PyObject** out) {
  const std::size_t count = names.size();
  for (std::size_t i = 0; i < count; ++i) out[i] = nullptr;
  if (static_cast<std::size_t>(nargs) > count)
    throw py::type_error(std::string(function) + "() takes at most " + std::to_string(count) + " arguments (" +
                         std::to_string(nargs) + " given)");
  for (Py_ssize_t i = 0; i < nargs; ++i) out[i] = args[i];
  const Py_ssize_t keywords = kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0;
  for (Py_ssize_t k = 0; k < keywords; ++k) {
    PyObject* key = PyTuple_GET_ITEM(kwnames, k);
    std::size_t i = 0;
    for (const char* name : names) {
      if (PyUnicode_CompareWithASCIIString(key, name) == 0) break;
      ++i;
    }
    if (i == count)
      throw py::type_error(std::string(function) + "() got an unexpected keyword argument '" +
                           PyUnicode_AsUTF8(key) + "'");
    if (out[i] != nullptr)
      throw py::type_error(std::string(function) + "() got multiple values for argument '" + names.begin()[i] + "'");
    out[i] = args[nargs + k];
  }
  for (std::size_t i = 0; i < required; ++i)
    if (out[i] == nullptr)
      throw py::type_error(std::string(function) + "() missing required argument '" + names.begin()[i] + "'");
}

std::optional<double> timeout_argument(PyObject* value) {
  if (value == nullptr || value == Py_None) return std::nullopt;
  double s;
  if (PyFloat_Check(value)) {
    s = PyFloat_AsDouble(value);
  } else if (PyLong_Check(value) && !PyBool_Check(value)) {
    s = PyLong_AsDouble(value);
    if (s == -1.0 && PyErr_Occurred()) throw py::error_already_set();
  } else {
    throw py::type_error(std::string("timeout must be None or a number of seconds, not '") +
                         Py_TYPE(value)->tp_name + "'");
  }
  // Checked here, before anything happens (a receive that finds a message
  // at once never looks at its timeout).
  if (!(s >= 0)) throw py::value_error("timeout must be None or a number of seconds >= 0");
  return s;
}

std::int64_t int_argument(PyObject* value, const char* name) {
  if (!PyLong_Check(value) || PyBool_Check(value))
    throw py::type_error(std::string(name) + " must be an int, not '" + Py_TYPE(value)->tp_name + "'");
  const long long n = PyLong_AsLongLong(value);
  if (n == -1 && PyErr_Occurred()) throw py::error_already_set();  // OverflowError
  return n;
}

PyTypeObject* add_type(py::module_& module, const char* qualified_name, int basic_size, unsigned flags,
                       PyType_Slot* slots) {
  PyType_Spec spec{qualified_name, basic_size, 0, flags, slots};
  PyObject* type = PyType_FromSpec(&spec);
  if (type == nullptr) throw py::error_already_set();
  const std::string full(qualified_name);
  module.add_object(full.substr(full.rfind('.') + 1).c_str(), py::handle(type));
  return reinterpret_cast<PyTypeObject*>(type);
}

}  // namespace colo::python::capi
