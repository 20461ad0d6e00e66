// Objects' state as Python dicts: the same keys and values as
// `colo stat NAME --json` and `colo ls --json` print (tools/cli.cpp,
// to_json); tests/python/test_stats.py compares the two.
#pragma once

#include <pybind11/pybind11.h>

#include "colo/node.hpp"

namespace colo::python {

namespace py = pybind11;

py::dict object_info_dict(const ObjectInfo& info);
// One key of a lock table (KeyLock.stats()): held, fencing_token, holder
// (as a lock's: pid, tid, held_for_ns, held_for_exact, alive; or None),
// waiters. No tool prints it.
py::dict key_stats_dict(const KeyStats& stats);

}  // namespace colo::python
