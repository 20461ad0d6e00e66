#include "amqp_client.hpp"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <endian.h>
#include <openssl/ssl.h>  // the system's CA store for TLS without tls_ca_file
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace colo::bridge::rabbitmq {
namespace {

constexpr int kFrameMax = 131072;  // rabbitmq-c's default (AMQP_DEFAULT_FRAME_SIZE)
constexpr std::chrono::seconds kContentTimeout{10};  // a content's frames follow its method at once
// Buffered publishes are written once they reach this much: a few hundred
// small messages per send(), and a bounded buffer.
constexpr std::size_t kFlushBytes = 64 * 1024;

// AMQP 0-9-1 framing (section 2.3.5 of the specification): a frame is its
// type, channel and payload size, the payload, and the end octet.
//
//   +------+---------+---------+-------------+------+
//   | type | channel |  size   |   payload   | 0xCE |
//   |  1   |    2    |    4    |    size     |  1   |
//   +------+---------+---------+-------------+------+
//
// A method's payload starts with its class and method ids (4 bytes), a
// content header's with the class id, a weight (0) and the body size
// (2 + 2 + 8 bytes); rabbitmq-c encodes what follows.
constexpr std::size_t kFrameHeader = 7, kFrameEnd = 1;
constexpr std::size_t kMethodPrefix = 4, kContentPrefix = 12;
constexpr unsigned char kFrameEndOctet = AMQP_FRAME_END;
// A basic.publish's fields: ticket, two short strings (a length octet
// each), the bits.
constexpr std::size_t kPublishFieldsFixed = 2 + 1 + 1 + 1;
// Room tried first for the encoded properties (the mirror's take about
// 80 bytes); more if a header table needs it.
constexpr std::size_t kPropertiesRoom = 512, kPropertiesMax = 64 * 1024 + 4096;

void put16(char* at, std::uint16_t v) {
  v = htobe16(v);
  std::memcpy(at, &v, 2);
}
void put32(char* at, std::uint32_t v) {
  v = htobe32(v);
  std::memcpy(at, &v, 4);
}
void put64(char* at, std::uint64_t v) {
  v = htobe64(v);
  std::memcpy(at, &v, 8);
}

// Opens a frame at the end of `out` with `room` bytes for its payload;
// returns the payload's offset. close_frame() sets its size and ends it.
std::size_t open_frame(std::string& out, std::uint8_t type, amqp_channel_t channel, std::size_t room) {
  const std::size_t at = out.size();
  out.resize(at + kFrameHeader + room + kFrameEnd);
  out[at] = static_cast<char>(type);
  put16(out.data() + at + 1, channel);
  return at + kFrameHeader;
}
void close_frame(std::string& out, std::size_t payload_at, std::size_t payload_size) {
  put32(out.data() + payload_at - 4, static_cast<std::uint32_t>(payload_size));
  out[payload_at + payload_size] = static_cast<char>(kFrameEndOctet);
  out.resize(payload_at + payload_size + kFrameEnd);
}

timeval to_timeval(std::chrono::microseconds t) {
  const auto us = std::max<std::int64_t>(0, t.count());
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

// The server's reason, from a connection.close or channel.close.
template <typename Close>
std::string close_reason(const Close& c) {
  return std::to_string(c.reply_code) + " " + std::string(text_of(c.reply_text));
}

// What a server's refusal means, as colo's error codes.
Errc code_of(std::uint16_t reply_code) {
  switch (reply_code) {
    case AMQP_NOT_FOUND: return Errc::not_found;
    case AMQP_ACCESS_REFUSED: return Errc::permission_denied;
    case AMQP_PRECONDITION_FAILED: return Errc::parameter_mismatch;
    case AMQP_RESOURCE_LOCKED: return Errc::busy;
    default: return Errc::system;
  }
}

}  // namespace

std::string status_text(int status) { return amqp_error_string2(status); }

int append_publish(std::string& out, amqp_channel_t channel, std::size_t frame_max, std::string_view exchange,
                   std::string_view routing_key, bool mandatory, const amqp_basic_properties_t& properties,
                   std::span<const std::byte> body) {
  const std::size_t start = out.size();
  auto give_up = [&](int status) {
    out.resize(start);
    return status;
  };
  if (frame_max <= kFrameHeader + kFrameEnd) return AMQP_STATUS_INVALID_PARAMETER;
  // The method frame.
  amqp_basic_publish_t method{};
  method.exchange = amqp_text(exchange);
  method.routing_key = amqp_text(routing_key);
  method.mandatory = mandatory ? 1 : 0;
  const std::size_t fields = kPublishFieldsFixed + exchange.size() + routing_key.size();
  std::size_t at = open_frame(out, AMQP_FRAME_METHOD, channel, kMethodPrefix + fields);
  put32(out.data() + at, AMQP_BASIC_PUBLISH_METHOD);
  int size = amqp_encode_method(AMQP_BASIC_PUBLISH_METHOD, &method, amqp_bytes_t{fields, out.data() + at + kMethodPrefix});
  if (size < 0) return give_up(size);
  close_frame(out, at, kMethodPrefix + static_cast<std::size_t>(size));
  // The content header frame: a header table may need more room than tried first.
  for (std::size_t room = kPropertiesRoom;; room = kPropertiesMax) {
    const std::size_t header_at = out.size();
    at = open_frame(out, AMQP_FRAME_HEADER, channel, kContentPrefix + room);
    put16(out.data() + at, AMQP_BASIC_CLASS);
    put16(out.data() + at + 2, 0);  // weight
    put64(out.data() + at + 4, body.size());
    size = amqp_encode_properties(AMQP_BASIC_CLASS, const_cast<amqp_basic_properties_t*>(&properties),
                                  amqp_bytes_t{room, out.data() + at + kContentPrefix});
    if (size >= 0) break;
    out.resize(header_at);
    if (room == kPropertiesMax) return give_up(size);
  }
  close_frame(out, at, kContentPrefix + static_cast<std::size_t>(size));
  // The body frames.
  const std::size_t per_frame = frame_max - kFrameHeader - kFrameEnd;
  for (std::size_t done = 0; done < body.size();) {
    const std::size_t n = std::min(per_frame, body.size() - done);
    at = open_frame(out, AMQP_FRAME_BODY, channel, n);
    std::memcpy(out.data() + at, body.data() + done, n);
    close_frame(out, at, n);
    done += n;
  }
  return AMQP_STATUS_OK;
}

Result<std::unique_ptr<Connection>> Connection::open(const RabbitmqServerConfig& server,
                                                     std::chrono::milliseconds timeout) {
  std::unique_ptr<Connection> c(new Connection());
  c->where_ = "rabbitmq server " + server.name + " (" + server.host + ":" + std::to_string(server.port) + ")";
  c->conn_ = amqp_new_connection();
  if (c->conn_ == nullptr) return Error{Errc::system, c->where_ + ": out of memory"};
  amqp_socket_t* socket = server.tls ? amqp_ssl_socket_new(c->conn_) : amqp_tcp_socket_new(c->conn_);
  if (socket == nullptr) return Error{Errc::system, c->where_ + ": cannot make a socket"};
  if (server.tls) {
    int status = AMQP_STATUS_OK;
    if (!server.tls_ca_file.empty()) status = amqp_ssl_socket_set_cacert(socket, server.tls_ca_file.c_str());
    else if (SSL_CTX_set_default_verify_paths(static_cast<SSL_CTX*>(amqp_ssl_socket_get_context(socket))) != 1)
      status = AMQP_STATUS_SSL_ERROR;
    if (status != AMQP_STATUS_OK) return c->failed("TLS: loading the CA certificates", status);
    if (!server.tls_cert_file.empty()) {
      status = amqp_ssl_socket_set_key(socket, server.tls_cert_file.c_str(), server.tls_key_file.c_str());
      if (status != AMQP_STATUS_OK) return c->failed("TLS: loading the client certificate and key", status);
    }
    amqp_ssl_socket_set_verify_peer(socket, server.tls_verify ? 1 : 0);
    amqp_ssl_socket_set_verify_hostname(socket, server.tls_verify ? 1 : 0);
  }
  timeval tv = to_timeval(timeout);
  if (const int status = amqp_socket_open_noblock(socket, server.host.c_str(), server.port, &tv);
      status != AMQP_STATUS_OK)
    return c->failed("connect", status);
  (void)amqp_set_handshake_timeout(c->conn_, &tv);
  (void)amqp_set_rpc_timeout(c->conn_, &tv);
  {
    std::lock_guard<std::mutex> lock(c->fd_mutex_);
    c->fd_ = amqp_get_sockfd(c->conn_);
  }
  const amqp_rpc_reply_t login =
      amqp_login(c->conn_, server.vhost.c_str(), 0, kFrameMax, static_cast<int>(server.heartbeat_s),
                 AMQP_SASL_METHOD_PLAIN, server.user.c_str(), server.password.c_str());
  if (login.reply_type != AMQP_RESPONSE_NORMAL)
    return c->failed_rpc("login as " + server.user + " to vhost " + server.vhost + " refused", login);
  amqp_channel_open(c->conn_, kChannel);
  if (amqp_get_rpc_reply(c->conn_).reply_type != AMQP_RESPONSE_NORMAL) return c->failed_rpc("opening a channel");
  c->tls_ = server.tls;
  c->frame_max_ = static_cast<std::size_t>(amqp_get_frame_max(c->conn_));
  c->usable_ = true;
  return c;
}

Connection::~Connection() {
  {
    std::lock_guard<std::mutex> lock(fd_mutex_);
    fd_ = -1;
  }
  if (conn_ == nullptr) return;
  if (usable_) {
    // Bounded by the RPC timeout set at open.
    (void)amqp_channel_close(conn_, kChannel, AMQP_REPLY_SUCCESS);
    (void)amqp_connection_close(conn_, AMQP_REPLY_SUCCESS);
  }
  amqp_destroy_connection(conn_);
}

void Connection::interrupt() noexcept {
  std::lock_guard<std::mutex> lock(fd_mutex_);
  if (fd_ >= 0) ::shutdown(fd_, SHUT_RDWR);
}

Error Connection::failed(const std::string& what, int status) {
  usable_ = false;
  const Errc code = status == AMQP_STATUS_TIMEOUT ? Errc::timed_out : Errc::system;
  return Error{code, where_ + ": " + what + ": " + status_text(status)};
}

// The last RPC's failure. A server's refusal closes the channel or the
// connection: it is answered (close-ok), and the connection is given up.
Error Connection::failed_rpc(const std::string& what) { return failed_rpc(what, amqp_get_rpc_reply(conn_)); }

Error Connection::failed_rpc(const std::string& what, const amqp_rpc_reply_t& r) {
  usable_ = false;
  switch (r.reply_type) {
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
      return Error{r.library_error == AMQP_STATUS_TIMEOUT ? Errc::timed_out : Errc::system,
                   where_ + ": " + what + ": " + status_text(r.library_error)};
    case AMQP_RESPONSE_SERVER_EXCEPTION:
      if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        const auto& close = *static_cast<amqp_connection_close_t*>(r.reply.decoded);
        const std::string reason = close_reason(close);
        amqp_connection_close_ok_t ok{};
        (void)amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return Error{code_of(close.reply_code), where_ + ": " + what + ": the server closed the connection: " + reason};
      }
      if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        const auto& close = *static_cast<amqp_channel_close_t*>(r.reply.decoded);
        const std::string reason = close_reason(close);
        amqp_channel_close_ok_t ok{};
        (void)amqp_send_method(conn_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return Error{code_of(close.reply_code), where_ + ": " + what + ": " + reason};
      }
      return Error{Errc::system, where_ + ": " + what + ": the server answered with " + amqp_method_name(r.reply.id)};
    case AMQP_RESPONSE_NONE:
    case AMQP_RESPONSE_NORMAL: break;
  }
  return Error{Errc::system, where_ + ": " + what + ": no answer"};
}

Result<void> Connection::declare(const RabbitmqLinkConfig& link) {
  const char* how = link.passive ? "checking" : "declaring";
  if (!link.exchange.empty()) {
    amqp_exchange_declare(conn_, kChannel, amqp_text(link.exchange), amqp_text(link.exchange_type), link.passive,
                          /*durable*/ 1, /*auto_delete*/ 0, /*internal*/ 0, amqp_empty_table);
    if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL)
      return failed_rpc(std::string(how) + " exchange '" + link.exchange + "'" +
                        (link.passive ? "" : " (durable, " + link.exchange_type + ")"));
  }
  if (link.queue.empty()) return Ok{};
  amqp_table_entry_t dlx{amqp_text("x-dead-letter-exchange"), {}};
  dlx.value.kind = AMQP_FIELD_KIND_UTF8;
  dlx.value.value.bytes = amqp_text(link.dead_letter_exchange);
  const amqp_table_t arguments =
      link.dead_letter_exchange.empty() ? amqp_empty_table : amqp_table_t{1, &dlx};
  amqp_queue_declare(conn_, kChannel, amqp_text(link.queue), link.passive, /*durable*/ 1, /*exclusive*/ 0,
                     /*auto_delete*/ 0, arguments);
  if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL)
    return failed_rpc(std::string(how) + " queue '" + link.queue + "'" + (link.passive ? "" : " (durable)"));
  if (link.passive || link.exchange.empty()) return Ok{};
  amqp_queue_bind(conn_, kChannel, amqp_text(link.queue), amqp_text(link.exchange), amqp_text(link.routing_key),
                  amqp_empty_table);
  if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL)
    return failed_rpc("binding queue '" + link.queue + "' to exchange '" + link.exchange + "' with key '" +
                      link.routing_key + "'");
  return Ok{};
}

Result<void> Connection::hold_exclusive_queue(const std::string& queue) {
  amqp_queue_declare(conn_, kChannel, amqp_text(queue), /*passive*/ 0, /*durable*/ 0, /*exclusive*/ 1,
                     /*auto_delete*/ 1, amqp_empty_table);
  if (amqp_get_rpc_reply(conn_).reply_type == AMQP_RESPONSE_NORMAL) return Ok{};
  Error refused = failed_rpc("declaring queue '" + queue + "' (exclusive)");
  // A refusal of the queue closes the channel only (answered by failed_rpc):
  // open it again. Anything else (the connection closed) stays an error.
  if (refused.code != Errc::busy && refused.code != Errc::permission_denied) return refused;
  amqp_channel_open(conn_, kChannel);
  if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL) return failed_rpc("opening the channel again");
  usable_ = true;
  return refused;
}

Result<void> Connection::confirm_select() {
  amqp_confirm_select(conn_, kChannel);
  if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL) return failed_rpc("confirm.select");
  return Ok{};
}

Result<void> Connection::qos(std::uint16_t prefetch) {
  amqp_basic_qos(conn_, kChannel, 0, prefetch, 0);
  if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL) return failed_rpc("basic.qos");
  return Ok{};
}

Result<void> Connection::consume(const std::string& queue) {
  amqp_basic_consume(conn_, kChannel, amqp_text(queue), amqp_empty_bytes, /*no_local*/ 0, /*no_ack*/ 0,
                     /*exclusive*/ 0, amqp_empty_table);
  if (amqp_get_rpc_reply(conn_).reply_type != AMQP_RESPONSE_NORMAL)
    return failed_rpc("consuming queue '" + queue + "'");
  return Ok{};
}

Result<std::optional<Incoming>> Connection::next(std::chrono::microseconds timeout) {
  // What is waited for may answer publishes still in the buffer.
  if (!out_.empty())
    if (auto sent = flush(); !sent) return std::move(sent).error();
  amqp_maybe_release_buffers(conn_);  // what the previous Incoming pointed at
  amqp_frame_t frame{};
  timeval tv = to_timeval(timeout);
  const int status = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
  if (status == AMQP_STATUS_TIMEOUT) return std::optional<Incoming>();
  if (status != AMQP_STATUS_OK) return failed("reading", status);
  if (frame.frame_type != AMQP_FRAME_METHOD) {
    usable_ = false;
    return Error{Errc::corrupt, where_ + ": a frame of type " + std::to_string(frame.frame_type) +
                                    " outside a message's content"};
  }
  Incoming in;
  in.method = frame.payload.method.id;
  in.decoded = frame.payload.method.decoded;
  switch (in.method) {
    case AMQP_CONNECTION_CLOSE_METHOD: {
      const auto& close = *static_cast<amqp_connection_close_t*>(in.decoded);
      const std::string reason = close_reason(close);
      amqp_connection_close_ok_t ok{};
      (void)amqp_send_method(conn_, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
      usable_ = false;
      return Error{code_of(close.reply_code), where_ + ": the server closed the connection: " + reason};
    }
    case AMQP_CHANNEL_CLOSE_METHOD: {
      const auto& close = *static_cast<amqp_channel_close_t*>(in.decoded);
      const std::string reason = close_reason(close);
      amqp_channel_close_ok_t ok{};
      (void)amqp_send_method(conn_, kChannel, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
      usable_ = false;
      return Error{code_of(close.reply_code), where_ + ": the server closed the channel: " + reason};
    }
    case AMQP_BASIC_DELIVER_METHOD:
    case AMQP_BASIC_RETURN_METHOD:
      if (auto ok = read_content(in, kContentTimeout); !ok) return std::move(ok).error();
      break;
    default: break;
  }
  return std::optional<Incoming>(in);
}

// A content header frame, then body frames up to its size. One body frame
// (the usual case up to the frame size) is pointed at where rabbitmq-c
// decoded it; several are copied together.
Result<void> Connection::read_content(Incoming& in, std::chrono::microseconds timeout) {
  amqp_frame_t frame{};
  timeval tv = to_timeval(timeout);
  int status = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
  if (status != AMQP_STATUS_OK) return failed("reading a message's header", status);
  if (frame.frame_type != AMQP_FRAME_HEADER) {
    usable_ = false;
    return Error{Errc::corrupt, where_ + ": a message's method without its header frame"};
  }
  in.properties = static_cast<const amqp_basic_properties_t*>(frame.payload.properties.decoded);
  const std::uint64_t size = frame.payload.properties.body_size;
  std::uint64_t got = 0;
  body_.clear();
  while (got < size) {
    tv = to_timeval(timeout);
    status = amqp_simple_wait_frame_noblock(conn_, &frame, &tv);
    if (status != AMQP_STATUS_OK) return failed("reading a message's body", status);
    if (frame.frame_type != AMQP_FRAME_BODY || frame.payload.body_fragment.len > size - got) {
      usable_ = false;
      return Error{Errc::corrupt, where_ + ": a message's body frames do not add up to its header's size"};
    }
    const auto& fragment = frame.payload.body_fragment;
    if (got == 0 && fragment.len == size) {
      in.body = {static_cast<const std::byte*>(fragment.bytes), fragment.len};
      return Ok{};
    }
    body_.append(static_cast<const char*>(fragment.bytes), fragment.len);
    got += fragment.len;
  }
  in.body = std::as_bytes(std::span(body_.data(), body_.size()));
  return Ok{};
}

Result<void> Connection::publish(std::string_view exchange, std::string_view routing_key, bool mandatory,
                                 const amqp_basic_properties_t& properties, std::span<const std::byte> body) {
  if (tls_) {
    const amqp_bytes_t bytes{body.size(), const_cast<std::byte*>(body.data())};
    const int status = amqp_basic_publish(conn_, kChannel, amqp_text(exchange), amqp_text(routing_key),
                                          mandatory ? 1 : 0, 0, &properties, bytes);
    if (status != AMQP_STATUS_OK) return failed("publishing", status);
    return Ok{};
  }
  const int status = append_publish(out_, kChannel, frame_max_, exchange, routing_key, mandatory, properties, body);
  if (status != AMQP_STATUS_OK) return failed("publishing", status);
  if (out_.size() >= kFlushBytes) return flush();
  return Ok{};
}

Result<void> Connection::flush() {
  // rabbitmq-c's socket is non-blocking: a full socket buffer is waited
  // for with poll(), without a deadline, as amqp_basic_publish does.
  // interrupt()'s shutdown() wakes the poll and fails the send.
  const int fd = amqp_get_sockfd(conn_);
  std::size_t sent = 0;
  while (sent < out_.size()) {
    const ssize_t n = ::send(fd, out_.data() + sent, out_.size() - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      pollfd p{fd, POLLOUT, 0};
      if (::poll(&p, 1, -1) >= 0 || errno == EINTR) continue;
    }
    const std::string why = std::strerror(errno);
    out_.clear();
    usable_ = false;
    return Error{Errc::system, where_ + ": publishing: " + why};
  }
  out_.clear();
  return Ok{};
}

Result<void> Connection::ack(std::uint64_t delivery_tag, bool multiple) {
  const int status = amqp_basic_ack(conn_, kChannel, delivery_tag, multiple ? 1 : 0);
  if (status != AMQP_STATUS_OK) return failed("acknowledging", status);
  return Ok{};
}

Result<void> Connection::reject(std::uint64_t delivery_tag, bool requeue) {
  const int status = amqp_basic_reject(conn_, kChannel, delivery_tag, requeue ? 1 : 0);
  if (status != AMQP_STATUS_OK) return failed("rejecting", status);
  return Ok{};
}

}  // namespace colo::bridge::rabbitmq
