// colo.Node, colo.Topic and colo.Queue (the handles they open: channel.cpp).
#include <pybind11/stl.h>

#include "errors.hpp"
#include "objects.hpp"
#include "stats.hpp"

namespace colo::python {

py::dict NodeRef::info(const std::string& name) const {
  return object_info_dict(value_or_throw(with_node(*box, [&](Node& n) { return n.info(name); })));
}

OpenMode open_mode_from(std::string_view text) {
  if (text == "create_or_open") return OpenMode::create_or_open;
  if (text == "open") return OpenMode::open;
  if (text == "create") return OpenMode::create;
  throw_error(Errc::invalid_argument,
              "mode must be 'create_or_open', 'open' or 'create', not '" + std::string(text) + "'");
}

Scope scope_from(std::string_view text) {
  if (text == "host") return Scope::host;
  if (text == "cluster") return Scope::cluster;
  throw_error(Errc::invalid_argument, "scope must be 'host' or 'cluster', not '" + std::string(text) + "'");
}

namespace {

std::unique_ptr<NodeBox> open_node(std::optional<std::string> ns, std::optional<gid_t> group,
                                   double ready_timeout_s) {
  NodeOptions options;
  if (ns) options.ns = *ns;
  options.group = group;
  if (!(ready_timeout_s >= 0)) throw py::value_error("ready_timeout must be a number of seconds >= 0");
  options.ready_timeout = std::chrono::milliseconds(static_cast<std::int64_t>(ready_timeout_s * 1000));
  auto node = [&] {
    py::gil_scoped_release released;
    return Node::open(options);
  }();
  return std::unique_ptr<NodeBox>(new NodeBox{value_or_throw(std::move(node)), {}});
}

NodeRef node_ref(py::handle self) { return NodeRef{py::reinterpret_borrow<py::object>(self), &self.cast<NodeBox&>()}; }

}  // namespace

void bind_node(py::module_& m) {
  py::class_<NodeBox>(m, "Node",
                      "A namespace on this host: opens (or creates) its registry, and the locks, topics and queues "
                      "of the namespace.")
      .def(py::init(&open_node), py::arg("namespace") = py::none(), py::kw_only(), py::arg("group") = py::none(),
           py::arg("ready_timeout") = 2.0,
           "Node(namespace=None, *, group=None, ready_timeout=2.0)\n\n"
           "namespace: 1-32 bytes of A-Z a-z 0-9 _ - (None: $COLO_NS, or 'default'). group: a group id to share "
           "the segments with (mode 0660). ready_timeout: seconds to wait for an object another process is "
           "creating.")
      .def_property_readonly("namespace", [](NodeBox& b) { return b.node.ns(); })
      .def(
          "lock",
          [](py::handle self, std::string_view name, std::string_view scope, std::string_view mode) {
            return open_lock(self, self.cast<NodeBox&>(), name, scope, mode);
          },
          py::arg("name"), py::kw_only(), py::arg("scope") = "host", py::arg("mode") = "create_or_open",
          "The lock NAME (a colo.Lock). scope: 'host' (the processes of this host) or 'cluster' (every host, "
          "through the namespace's colod). mode: 'create_or_open', 'open' (must exist) or 'create' (must not).")
      .def(
          "lock_table",
          [](py::handle self, std::string_view name, std::string_view scope, std::string_view mode,
             std::uint64_t capacity, std::uint32_t max_key_bytes) {
            LockTableOptions options;
            options.scope = scope_from(scope);
            options.capacity = capacity;
            options.max_key_bytes = max_key_bytes;
            return open_lock_table(self, self.cast<NodeBox&>(), name, open_mode_from(mode), options);
          },
          py::arg("name"), py::kw_only(), py::arg("scope") = "host", py::arg("mode") = "create_or_open",
          py::arg("capacity") = LockTableOptions{}.capacity, py::arg("max_key_bytes") = LockTableOptions{}.max_key_bytes,
          "The lock table NAME (a colo.LockTable): one object holding a lock per key, a key in the table only "
          "while held. capacity: keys held at once (1 to 2**26); max_key_bytes: longest key (1 to 256). scope, "
          "mode: as for lock(). create_or_open checks scope, capacity and max_key_bytes against the table that "
          "exists (colo.Mismatch); mode='open' takes it as it is.")
      .def(
          "topic",
          [](py::handle self, std::string_view name, std::string_view mode, std::uint64_t capacity,
             std::uint32_t max_message, std::uint32_t history, bool exclusive_publisher) {
            auto& box = self.cast<NodeBox&>();
            const TopicOptions options{capacity, max_message, history, exclusive_publisher};
            const OpenMode open_mode = open_mode_from(mode);  // may raise: not inside with_node (no GIL there)
            auto topic = value_or_throw(with_node(box, [&](Node& n) { return n.topic(name, open_mode, options); }));
            return std::unique_ptr<TopicBox>(new TopicBox{std::move(topic), node_ref(self)});
          },
          py::arg("name"), py::kw_only(), py::arg("mode") = "create_or_open",
          py::arg("capacity") = TopicOptions{}.capacity, py::arg("max_message") = TopicOptions{}.max_message,
          py::arg("history") = TopicOptions{}.history,
          py::arg("exclusive_publisher") = TopicOptions{}.exclusive_publisher,
          "The topic NAME (a colo.Topic): every subscriber gets every message published after it subscribed. "
          "capacity: ring bytes, a power of two from 4 KiB to 16 GiB; max_message: largest payload; history: "
          "newest messages kept for new subscribers; exclusive_publisher: one publisher at a time. Parameters "
          "must match if it exists.")
      .def(
          "queue",
          [](py::handle self, std::string_view name, std::string_view mode, std::uint64_t capacity,
             std::uint32_t max_message, bool acks, std::uint32_t max_deliveries, bool exclusive_publisher) {
            auto& box = self.cast<NodeBox&>();
            const QueueOptions options{capacity, max_message, acks, max_deliveries, exclusive_publisher};
            const OpenMode open_mode = open_mode_from(mode);
            auto queue = value_or_throw(with_node(box, [&](Node& n) { return n.queue(name, open_mode, options); }));
            return std::unique_ptr<QueueBox>(new QueueBox{std::move(queue), node_ref(self)});
          },
          py::arg("name"), py::kw_only(), py::arg("mode") = "create_or_open",
          py::arg("capacity") = QueueOptions{}.capacity, py::arg("max_message") = QueueOptions{}.max_message,
          py::arg("acks") = QueueOptions{}.acks, py::arg("max_deliveries") = QueueOptions{}.max_deliveries,
          py::arg("exclusive_publisher") = QueueOptions{}.exclusive_publisher,
          "The queue NAME (a colo.Queue): each message goes to one consumer. acks: a message whose consumer dies "
          "before releasing it is delivered again, and after max_deliveries moves to NAME.dlq (created too). "
          "Other parameters as for topic().")
      .def(
          "list",
          [](NodeBox& box) {
            auto objects = value_or_throw(with_node(box, [](Node& n) { return n.list(); }));
            py::list out;
            for (const auto& o : objects) out.append(object_info_dict(o));
            return out;
          },
          "Every object of the namespace, as `colo ls --json` lists them (a list of dicts).")
      .def(
          "info", [](NodeBox& box, const std::string& name) { return NodeRef{py::none(), &box}.info(name); },
          py::arg("name"), "The object NAME as `colo stat NAME --json` shows it (a dict).")
      .def(
          "remove",
          [](NodeBox& box, const std::string& name) {
            value_or_throw(with_node(box, [&](Node& n) { return n.remove(name); }));
          },
          py::arg("name"),
          "Removes the object's segment and registry entry; processes that have it open keep using it.")
      .def(
          "gc",
          [](NodeBox& box, bool dry_run) {
            auto report = value_or_throw(with_node(box, [&](Node& n) { return n.gc(dry_run); }));
            py::dict d;
            d["removed_segments"] = report.removed_segments;
            d["removed_registry_entries"] = report.removed_registry_entries;
            return d;
          },
          py::kw_only(), py::arg("dry_run") = false,
          "Removes segments whose creator died before they were ready, and registry entries whose segment is "
          "gone (as `colo gc`); returns what it removed (or would).")
      .def_property_readonly(
          "generation", [](NodeBox& b) { return b.node.generation(); },
          "Changes whenever an object of the namespace is created or removed.")
      .def(
          "shm_name_of", [](NodeBox& b, std::string_view name) { return b.node.shm_name_of(name); }, py::arg("name"),
          "The segment name of object NAME (in /dev/shm, without the leading '/').")
      .def("__repr__", [](NodeBox& b) { return "<colo.Node namespace '" + b.node.ns() + "'>"; });

  py::class_<TopicBox>(m, "Topic", "A topic: publish/subscribe. Open it with Node.topic().")
      .def_property_readonly("name", [](TopicBox& b) { return b.topic.name(); })
      .def_property_readonly(
          "published", [](TopicBox& b) { return b.topic.published(); },
          "Messages published so far (the next message's sequence).")
      .def(
          "stats", [](TopicBox& b) { return b.node.info(b.topic.name()); },
          "The topic as `colo stat NAME --json` shows it (a dict; counters under 'topic').")
      .def("__repr__", [](TopicBox& b) { return "<colo.Topic '" + b.topic.name() + "'>"; });

  py::class_<QueueBox>(m, "Queue", "A queue: competing consumers. Open it with Node.queue().")
      .def_property_readonly("name", [](QueueBox& b) { return b.queue.name(); })
      .def(
          "stats", [](QueueBox& b) { return b.node.info(b.queue.name()); },
          "The queue as `colo stat NAME --json` shows it (a dict; counters under 'queue').")
      .def("__repr__", [](QueueBox& b) { return "<colo.Queue '" + b.queue.name() + "'>"; });
}

}  // namespace colo::python
