#include "colod_client.hpp"

#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstring>
#include <zmq.hpp>

namespace colo::cli {

Result<void> request_colod(const std::string& socket_path, std::chrono::milliseconds timeout,
                           const std::function<void(wire::ControlRequest::Builder)>& fill,
                           const std::function<void(wire::ControlReply::Reader)>& on_reply) {
  zmq::context_t context;
  zmq::socket_t socket(context, zmq::socket_type::req);
  const int linger = 0;  // an unanswered request must not keep the context from closing
  zmq_setsockopt(socket.handle(), ZMQ_LINGER, &linger, sizeof linger);
  const std::int64_t max_reply = 16 << 20;
  zmq_setsockopt(socket.handle(), ZMQ_MAXMSGSIZE, &max_reply, sizeof max_reply);
  try {
    socket.connect("ipc://" + socket_path);
    capnp::MallocMessageBuilder builder;
    fill(builder.initRoot<wire::ControlRequest>());
    const auto words = capnp::messageToFlatArray(builder);
    socket.send(zmq::buffer(words.asBytes().begin(), words.asBytes().size()), zmq::send_flags::none);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, timeout);
    if ((item.revents & ZMQ_POLLIN) == 0)
      return Error{Errc::timed_out, "no answer from colod on " + socket_path + " within " +
                                        std::to_string(timeout.count()) + " ms"};
    zmq::message_t reply;
    (void)socket.recv(reply);
    // Cap'n Proto reads whole words from aligned memory; a ZeroMQ buffer is neither.
    auto aligned = kj::heapArray<capnp::word>(reply.size() / sizeof(capnp::word) + 1);
    std::memcpy(aligned.begin(), reply.data(), reply.size());
    capnp::ReaderOptions options;
    options.traversalLimitInWords = aligned.size() + 16;
    capnp::FlatArrayMessageReader reader(aligned.asPtr().slice(0, reply.size() / sizeof(capnp::word)), options);
    auto root = reader.getRoot<wire::ControlReply>();
    if (!root.getOk()) return Error{Errc::invalid_argument, std::string("colod: ") + root.getError().cStr()};
    on_reply(root);
    return Ok{};
  } catch (const zmq::error_t& e) {
    return Error{Errc::system, "control socket " + socket_path + ": " + e.what()};
  } catch (const kj::Exception& e) {
    return Error{Errc::corrupt, std::string("malformed reply from colod: ") + e.getDescription().cStr()};
  }
}

}  // namespace colo::cli
