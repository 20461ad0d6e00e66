// The C++ side of colo.Node, colo.Topic, colo.Queue, and how the bindings
// (node.cpp, channel.cpp, lock.cpp, lock_table.cpp) reach each other's.
#pragma once

#include <pybind11/pybind11.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "colo/node.hpp"

namespace colo::python {

namespace py = pybind11;

struct NodeBox {
  Node node;
  // The node's calls run without the GIL (opening an object may wait for
  // its creator); one at a time.
  std::mutex mutex;
};

// Runs `call(node)` with the GIL released and the node's mutex held: it
// must not touch Python (nor raise through it), and what it returns must
// hold no Python object.
template <typename Call>
auto with_node(NodeBox& box, Call&& call) {
  py::gil_scoped_release released;
  std::lock_guard hold(box.mutex);
  return call(box.node);
}

// What the objects opened through a node keep of it: `stats()` asks it.
struct NodeRef {
  py::object object;  // the colo.Node (keeps box alive)
  NodeBox* box;
  // As `colo stat NAME --json` prints it.
  py::dict info(const std::string& name) const;
};

struct TopicBox {
  Topic topic;
  NodeRef node;
};

struct QueueBox {
  Queue queue;
  NodeRef node;
};

// One option from its Python spelling: "open", "create", "create_or_open";
// colo.InvalidArgument otherwise.
OpenMode open_mode_from(std::string_view text);
// "host" or "cluster"; colo.InvalidArgument otherwise.
Scope scope_from(std::string_view text);

void bind_node(py::module_& module);
void bind_channel(py::module_& module);
void bind_lock(py::module_& module);
void bind_lock_table(py::module_& module);

// Node.lock(): opens the lock and wraps it (lock.cpp).
py::object open_lock(py::handle node_object, NodeBox& node, std::string_view name, std::string_view scope,
                     std::string_view mode);
// Node.lock_table(): opens the table and wraps it (lock_table.cpp).
py::object open_lock_table(py::handle node_object, NodeBox& node, std::string_view name, OpenMode mode,
                           const LockTableOptions& options);

}  // namespace colo::python
