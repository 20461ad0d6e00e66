#include "colod_client.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstring>
#include <functional>
#include <zmq.hpp>

#include "colo/internal/trusted_dir.hpp"  // check_trusted_directory
#include "colo/names.hpp"  // default_control_socket
#include "format.hpp"          // seconds_text
#include "control.capnp.h"

namespace colo::cli {
namespace {

std::string text(capnp::Text::Reader t) { return std::string(t.cStr(), t.size()); }

// One request over the control socket; `on_reply` reads the reply while it is valid.
Result<void> ask(const std::string& ns, const std::string& socket_path, double timeout_s,
                 const std::function<void(wire::ControlRequest::Builder)>& fill,
                 const std::function<void(wire::ControlReply::Reader)>& on_reply) {
  const std::string path = socket_path.empty() ? default_control_socket(ns) : socket_path;
  // A socket in a directory another user may change could be theirs,
  // answering in colod's name (or taking what `colo federate` says).
  const std::string dir = path.rfind('/') == 0 ? "/" : path.substr(0, path.rfind('/'));
  if (auto trusted = internal::check_trusted_directory(dir, internal::DirectoryRule::owner_or_group,
                                                       "colod's control socket directory");
      !trusted && trusted.error().code != Errc::not_found)
    return Error{trusted.error().code, trusted.error().message + "; not asking colod there"};
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::req);
  const int linger = 0;
  zmq_setsockopt(socket.handle(), ZMQ_LINGER, &linger, sizeof linger);
  const std::int64_t max_reply = 16 << 20;
  zmq_setsockopt(socket.handle(), ZMQ_MAXMSGSIZE, &max_reply, sizeof max_reply);
  try {
    socket.connect("ipc://" + path);
    capnp::MallocMessageBuilder builder;
    fill(builder.initRoot<wire::ControlRequest>());
    const auto words = capnp::messageToFlatArray(builder);
    socket.send(zmq::buffer(words.asBytes().begin(), words.asBytes().size()), zmq::send_flags::none);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(static_cast<long>(timeout_s * 1000)));
    if ((item.revents & ZMQ_POLLIN) == 0)
      return Error{Errc::timed_out, "no answer from colod on " + path + " within " + seconds_text(timeout_s) +
                                        ": is colod running for namespace '" + ns +
                                        "'? (start it with colod --config FILE)"};
    zmq::message_t reply;
    (void)socket.recv(reply);
    auto aligned = kj::heapArray<capnp::word>(reply.size() / sizeof(capnp::word) + 1);
    std::memcpy(aligned.begin(), reply.data(), reply.size());
    capnp::ReaderOptions options;
    options.traversalLimitInWords = aligned.size() + 16;
    capnp::FlatArrayMessageReader reader(aligned.asPtr().slice(0, reply.size() / sizeof(capnp::word)), options);
    auto root = reader.getRoot<wire::ControlReply>();
    if (!root.getOk()) return Error{Errc::invalid_argument, "colod: " + text(root.getError())};
    on_reply(root);
    return Ok{};
  } catch (const zmq::error_t& e) {
    return Error{Errc::system, "control socket " + path + ": " + e.what()};
  } catch (const kj::Exception& e) {
    return Error{Errc::corrupt, std::string("malformed reply from colod: ") + e.getDescription().cStr()};
  }
}

}  // namespace

nlohmann::json object_json(const ColodObject& o) {
  return {{"name", o.name},          {"kind", o.kind},           {"home", o.home},
          {"messages_in", o.messages_in}, {"messages_out", o.messages_out}, {"bytes_in", o.bytes_in},
          {"bytes_out", o.bytes_out}, {"lost", o.lost},           {"duplicates", o.duplicates},
          {"in_flight", o.in_flight}};
}

nlohmann::json link_json(const ColodLink& l) {
  return {{"name", l.name},
          {"system", l.system},
          {"mode", l.mode},
          {"object", l.object},
          {"object_kind", l.object_kind},
          {"remote", l.remote},
          {"state", l.state},
          {"state_ms", l.state_ms},
          {"last_error", l.last_error},
          {"last_error_ms", l.last_error_ms},
          {"produced", l.produced},
          {"acknowledged", l.acknowledged},
          {"returned", l.returned},
          {"in_flight", l.in_flight},
          {"lag_messages", l.lag_messages},
          {"lag_bytes", l.lag_bytes},
          {"errors", l.errors},
          {"lost", l.lost},
          {"skipped", l.skipped},
          {"duplicates", l.duplicates},
          {"redelivered", l.redelivered},
          {"outages", l.outages}};
}

Result<ColodStatus> colod_status(const std::string& ns, const std::string& socket_path, double timeout_s) {
  ColodStatus out;
  auto asked = ask(
      ns, socket_path, timeout_s, [](wire::ControlRequest::Builder request) { request.setStatus(); },
      [&](wire::ControlReply::Reader root) {
        auto s = root.getStatus();
        out.node = text(s.getNode());
        out.ns = text(s.getNamespace());
        out.uptime_ms = s.getUptimeMs();
        out.bad_frames = s.getBadFrames();
        out.rejected_peers = s.getRejectedPeers();
        out.failed_handshakes = s.getFailedHandshakes();
        out.dropped_connections = s.getDroppedConnections();
        out.early_frames = s.getEarlyFrames();
        out.refused_sessions = s.getRefusedSessions();
        out.ring_wait = text(s.getRingWait());
        out.ring_wakes = s.getRingWakes();
        for (auto p : s.getPeers())
          out.peers.push_back({text(p.getName()), text(p.getEndpoint()), p.getConnected(), p.getSinceMs(),
                               p.getMessagesIn(), p.getMessagesOut(), p.getBytesIn(), p.getBytesOut(),
                               p.getGapsFilled(), p.getLost(), p.getDuplicates(), p.getOverCredit(),
                               p.getRewinds()});
        for (auto t : s.getTopics()) out.topics.push_back(text(t));
        for (auto o : s.getObjects())
          out.objects.push_back({text(o.getName()), text(o.getKind()), text(o.getHome()), o.getMessagesIn(),
                                 o.getMessagesOut(), o.getBytesIn(), o.getBytesOut(), o.getLost(), o.getDuplicates(),
                                 o.getInFlight()});
        for (auto l : s.getLinks()) {
          ColodLink link;
          link.name = text(l.getName());
          link.system = text(l.getSystem());
          link.mode = text(l.getMode());
          link.object = text(l.getObject());
          link.object_kind = text(l.getObjectKind());
          link.remote = text(l.getRemote());
          link.state = text(l.getState());
          link.state_ms = l.getStateMs();
          link.last_error = text(l.getLastError());
          link.last_error_ms = l.getLastErrorMs();
          link.produced = l.getProduced();
          link.acknowledged = l.getAcknowledged();
          link.returned = l.getReturned();
          link.in_flight = l.getInFlight();
          link.lag_messages = l.getLagMessages();
          link.lag_bytes = l.getLagBytes();
          link.errors = l.getErrors();
          link.lost = l.getLost();
          link.skipped = l.getSkipped();
          link.duplicates = l.getDuplicates();
          link.redelivered = l.getRedelivered();
          link.outages = l.getOutages();
          out.links.push_back(std::move(link));
        }
      });
  if (!asked) return std::move(asked).error();
  return out;
}

Result<void> colod_declare_topic(const std::string& ns, const std::string& socket_path, double timeout_s,
                                 const std::string& topic) {
  return ask(
      ns, socket_path, timeout_s, [&](wire::ControlRequest::Builder request) { request.setDeclareTopic(topic); },
      [](wire::ControlReply::Reader) {});
}

Result<void> colod_pause_link(const std::string& ns, const std::string& socket_path, double timeout_s,
                              const std::string& link, bool pause) {
  return ask(
      ns, socket_path, timeout_s,
      [&](wire::ControlRequest::Builder request) {
        if (pause) request.setPauseLink(link);
        else request.setResumeLink(link);
      },
      [](wire::ControlReply::Reader) {});
}

}  // namespace colo::cli
