// bridge/links/rabbitmq/amqp_client.hpp — what colod's RabbitMQ links need
// of rabbitmq-c (Debian's librabbitmq-dev, 0.11, its C API), made safe to
// hold: one connection with one channel that closes itself, the
// declarations a [link.rabbitmq] table asks for, frames read with a
// timeout (a method with its content, assembled), and rabbitmq-c's and the
// server's errors as text.
//
// rabbitmq-c 0.11 has no helper that waits for publisher confirms or reads
// a delivery without blocking: the links read the frames themselves
// (next()) and act on basic.ack / basic.nack / basic.return /
// basic.deliver. Heartbeats are answered inside rabbitmq-c's frame reads
// and publishes: a link reads frames at least every heartbeat_s / 2.
//
// PUBLISHES, COALESCED. rabbitmq-c writes each frame with its own send()
// (amqp_basic_publish: three per message, the method, the content header
// and the body), and has no call that queues frames for one write; at
// 64 B that was most of a mirror's CPU (perf: 61% of colod's time in
// send()). Over plain TCP, publish() therefore appends the message's frames
// to a buffer (append_publish(): the fields encoded by rabbitmq-c's own
// amqp_encode_method / amqp_encode_properties, only the frames' envelopes
// here) and flush() writes the buffer in one send(). Over TLS the bytes
// must go through rabbitmq-c's OpenSSL session, which it does not expose:
// publish() sends at once, as amqp_basic_publish. flush() writes whole
// frames only (or fails, leaving the connection unusable), so rabbitmq-c's
// own writes (a heartbeat it sends from a frame read, not knowing of ours;
// an ack; the closing handshake) always start at a frame boundary.
//
// THREADS: a Connection is used by its link's thread only, except
// interrupt(), which any thread may call.
#pragma once

#include <amqp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "../../config.hpp"
#include "colo/error.hpp"

namespace colo::bridge::rabbitmq {

// A method frame read by next(); for basic.deliver and basic.return, with
// its content (properties and body). Views point into the connection's
// buffers: valid until the next call to next() or ack()/publish().
struct Incoming {
  amqp_method_number_t method = 0;  // AMQP_BASIC_ACK_METHOD, AMQP_BASIC_DELIVER_METHOD, ...
  void* decoded = nullptr;          // the method's fields (amqp_basic_ack_t* ...)
  const amqp_basic_properties_t* properties = nullptr;  // content only
  std::span<const std::byte> body;                      // content only
};

// Appends to `out` the frames of a basic.publish on `channel`, byte for byte
// as rabbitmq-c's amqp_basic_publish writes them: the method frame, the
// content header frame (class basic, `properties`), and the body in frames
// of at most frame_max - 8 bytes (none for an empty body). AMQP_STATUS_OK,
// or rabbitmq-c's status when a field does not encode (a routing key
// longer than 255 bytes, a header table over 64 KiB): `out` is then as it
// was.
int append_publish(std::string& out, amqp_channel_t channel, std::size_t frame_max, std::string_view exchange,
                   std::string_view routing_key, bool mandatory, const amqp_basic_properties_t& properties,
                   std::span<const std::byte> body);

// AMQP's text for a short string (exchange, queue, routing key).
inline amqp_bytes_t amqp_text(std::string_view s) noexcept {
  return amqp_bytes_t{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view text_of(amqp_bytes_t b) noexcept { return {static_cast<const char*>(b.bytes), b.len}; }

class Connection {
 public:
  static constexpr amqp_channel_t kChannel = 1;

  // Connects (TCP, or TLS with the server's settings), logs in with the
  // user and password, opens channel 1. `timeout` bounds the connect, the
  // handshake and each later RPC. Errors name the server and what refused:
  // "rabbitmq server local (127.0.0.1:5672): login refused: ...".
  static Result<std::unique_ptr<Connection>> open(const RabbitmqServerConfig& server, std::chrono::milliseconds timeout);
  ~Connection();  // closes the channel and the connection politely if it is usable, then frees everything
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // The declarations of `link` (config.hpp): the exchange (if any) and the
  // queue (if any), durable, declared or (passive) only checked; the queue
  // bound to the exchange with the routing key unless passive. A refusal
  // ("NOT_FOUND - no queue 'q' in vhost '/'", "PRECONDITION_FAILED -
  // inequivalent arg 'durable' ...") is the error; the connection is then
  // unusable.
  Result<void> declare(const RabbitmqLinkConfig& link);
  // Declares `queue` exclusive and auto-delete (not durable): only this
  // connection can use it, and RabbitMQ deletes it once the connection is
  // gone. Errc::busy while another connection holds it (RESOURCE_LOCKED),
  // Errc::permission_denied when the user may not declare it; after either
  // refusal channel 1 is opened again and the connection stays usable.
  Result<void> hold_exclusive_queue(const std::string& queue);
  Result<void> confirm_select();            // publisher confirms on channel 1
  Result<void> qos(std::uint16_t prefetch);  // deliveries unacknowledged at most
  Result<void> consume(const std::string& queue);  // manual acks

  // The next method frame, waiting up to `timeout`: nullopt if none came.
  // An error when the connection is gone (the socket closed, a missed
  // heartbeat, or the server closed the channel or the connection: its
  // reply code and text); the connection is then unusable.
  Result<std::optional<Incoming>> next(std::chrono::microseconds timeout);

  // basic.publish on channel 1 (no wait). Over plain TCP the frames may
  // wait in the connection's buffer until flush() (or a publish that fills
  // it, or next()); over TLS they are sent at once. An error: the
  // connection is gone.
  Result<void> publish(std::string_view exchange, std::string_view routing_key, bool mandatory,
                       const amqp_basic_properties_t& properties, std::span<const std::byte> body);
  // Writes the publishes buffered so far, in one send() if the socket takes
  // them (else waiting for it, as rabbitmq-c's own publish does: with no
  // deadline; interrupt() ends the wait). An error: the connection is gone.
  Result<void> flush();
  Result<void> ack(std::uint64_t delivery_tag, bool multiple);
  Result<void> reject(std::uint64_t delivery_tag, bool requeue);

  bool usable() const noexcept { return usable_; }
  // From another thread: breaks the link's thread out of a send or read
  // that waits on the socket (colod stopping while the server stopped
  // reading). The connection is unusable after.
  void interrupt() noexcept;
  const std::string& where() const noexcept { return where_; }  // "rabbitmq server NAME (HOST:PORT)"

 private:
  Connection() = default;
  Error failed(const std::string& what, int status);     // a rabbitmq-c status
  Error failed_rpc(const std::string& what);             // amqp_get_rpc_reply
  Error failed_rpc(const std::string& what, const amqp_rpc_reply_t& r);
  Result<void> read_content(Incoming& in, std::chrono::microseconds timeout);

  amqp_connection_state_t conn_ = nullptr;
  bool usable_ = false;
  std::string where_;
  std::string body_;  // a content's body that came in several frames
  bool tls_ = false;
  std::size_t frame_max_ = 0;  // as negotiated at login
  std::string out_;            // publishes not yet written (plain TCP)
  mutable std::mutex fd_mutex_;  // interrupt() against the end of the connection
  int fd_ = -1;
};

// rabbitmq-c's text for a status ("a socket error occurred", ...).
std::string status_text(int status);

}  // namespace colo::bridge::rabbitmq
