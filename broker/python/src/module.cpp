// colo._colo: the extension module behind the package colo
// (broker/python/colo/__init__.py re-exports it; docs/python.md).
#include <pybind11/pybind11.h>

#include "errors.hpp"
#include "holds.hpp"
#include "objects.hpp"

#ifndef COLO_VERSION
#error "COLO_VERSION must be defined by the build"
#endif

PYBIND11_MODULE(_colo, m) {
  namespace py = pybind11;
  m.doc() =
      "colo: locks, lock tables, topics and queues in shared memory, shared by the Python and C++ processes of a host "
      "(docs/python.md).";
  m.attr("__version__") = COLO_VERSION;
  colo::python::define_exceptions(m);
  colo::python::define_hold_types(m);
  colo::python::bind_node(m);
  colo::python::bind_channel(m);
  colo::python::bind_lock(m);
  colo::python::bind_lock_table(m);
  // Users see them as colo.Node, not colo._colo.Node (the types written
  // against the CPython API are named so already).
  for (const char* name : {"Node", "Topic", "Queue"}) m.attr(name).attr("__module__") = "colo";
}
