// append_publish() (bridge/links/rabbitmq/amqp_client.hpp), the frames of a
// basic.publish that a RabbitMQ mirror writes many at a time over plain
// TCP (suite `unit`, no server):
//   sameBytesAs...   byte for byte what rabbitmq-c's amqp_basic_publish
//                    writes on a socket, for the mirror's properties, a
//                    redelivered copy's header table, an empty body and a
//                    body of several frames
//   decodes...       every field read back with rabbitmq-c's decoders, each
//                    frame's envelope (type, channel, size, end octet)
//   aLargeTable...   a header table beyond the first room tried still encodes
//   aRoutingKey...   a field that cannot be encoded: rabbitmq-c's status,
//                    the buffer as it was
// and fence_name() (mirror.hpp): the exclusive queue each mirror connection
// holds first, within AMQP's 255 bytes however long the names
#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <endian.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "links/rabbitmq/amqp_client.hpp"
#include "links/rabbitmq/mirror.hpp"

namespace colo::bridge::rabbitmq {
namespace {

constexpr amqp_channel_t kChannel = 1;

std::span<const std::byte> bytes_of(const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); }

// A message as the mirror publishes it (mirror.cpp): persistent, message
// id, timestamp; `redelivered` adds the header table colo.redelivery = 1.
struct MirrorProperties {
  amqp_table_entry_t redelivery{amqp_cstring_bytes("colo.redelivery"), {}};
  amqp_basic_properties_t p{};
  MirrorProperties(const std::string& id, bool redelivered) {
    p._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
    p.message_id = amqp_text(id);
    p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
    p.timestamp = 1'796'000'000;
    if (redelivered) {
      redelivery.value.kind = AMQP_FIELD_KIND_I64;
      redelivery.value.value.i64 = 1;
      p._flags |= AMQP_BASIC_HEADERS_FLAG;
      p.headers = amqp_table_t{1, &redelivery};
    }
  }
};

// A rabbitmq-c connection over loopback TCP to a socket this test reads:
// what amqp_basic_publish writes, as the server would receive it. No
// handshake: rabbitmq-c writes frames on a socket that is not logged in,
// with its initial frame size.
class RabbitmqcWire {
 public:
  RabbitmqcWire() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listener_, 1) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      return;
    conn_ = amqp_new_connection();
    amqp_socket_t* socket = amqp_tcp_socket_new(conn_);
    if (socket == nullptr || amqp_socket_open(socket, "127.0.0.1", ntohs(a.sin_port)) != AMQP_STATUS_OK) return;
    peer_ = ::accept(listener_, nullptr, nullptr);
  }
  ~RabbitmqcWire() {
    if (conn_ != nullptr) amqp_destroy_connection(conn_);
    if (peer_ >= 0) ::close(peer_);
    if (listener_ >= 0) ::close(listener_);
  }
  bool ready() const { return peer_ >= 0; }
  std::size_t frame_max() const { return static_cast<std::size_t>(amqp_get_frame_max(conn_)); }

  // What amqp_basic_publish wrote: everything the peer receives until
  // nothing more comes for 200 ms.
  std::string publish(const std::string& exchange, const std::string& key, bool mandatory,
                      const amqp_basic_properties_t& p, const std::string& body) {
    const int status = amqp_basic_publish(conn_, kChannel, amqp_text(exchange), amqp_text(key), mandatory ? 1 : 0, 0,
                                          &p, amqp_bytes_t{body.size(), const_cast<char*>(body.data())});
    EXPECT_EQ(status, AMQP_STATUS_OK) << amqp_error_string2(status);
    std::string got;
    char buf[65536];
    for (pollfd pf{peer_, POLLIN, 0}; ::poll(&pf, 1, 200) == 1;) {
      const ssize_t n = ::recv(peer_, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    return got;
  }

 private:
  int listener_ = -1, peer_ = -1;
  amqp_connection_state_t conn_ = nullptr;
};

std::string appended(std::size_t frame_max, const std::string& exchange, const std::string& key, bool mandatory,
                     const amqp_basic_properties_t& p, const std::string& body) {
  std::string out;
  EXPECT_EQ(append_publish(out, kChannel, frame_max, exchange, key, mandatory, p, bytes_of(body)), AMQP_STATUS_OK);
  return out;
}

TEST(AmqpFrames, sameBytesAsAmqpBasicPublishForTheMirrorsMessages) {
  RabbitmqcWire wire;
  ASSERT_TRUE(wire.ready()) << "a loopback TCP connection";
  const std::size_t frame_max = wire.frame_max();
  ASSERT_GT(frame_max, 4096u);
  const std::string id = "alpha:orders:1796000000123456789:42";
  const std::string small(64, 'm');
  std::string large(3 * frame_max + 5, '\0');  // four body frames, the last of 5 + 3 * 8 bytes
  for (std::size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>(i * 7);
  struct Case {
    const char* what;
    std::string exchange, key, body;
    bool mandatory, redelivered;
  };
  const Case cases[] = {
      {"64 B into the default exchange, mandatory", "", "colo.bench.q", small, true, false},
      {"a redelivered copy (header table) through an exchange", "orders-x", "orders.new", small, true, true},
      {"an empty body: no body frame", "orders-x", "orders.new", "", true, false},
      {"a body of four frames, not mandatory", "", "q", large, false, true},
  };
  for (const auto& c : cases) {
    const MirrorProperties props(id, c.redelivered);
    const std::string theirs = wire.publish(c.exchange, c.key, c.mandatory, props.p, c.body);
    const std::string ours = appended(frame_max, c.exchange, c.key, c.mandatory, props.p, c.body);
    EXPECT_EQ(ours.size(), theirs.size()) << c.what;
    EXPECT_TRUE(ours == theirs) << c.what;
  }
}

// One frame of a buffer: its envelope checked, its payload returned.
struct Frame {
  std::uint8_t type = 0;
  std::string payload;
};
std::vector<Frame> split_frames(const std::string& b) {
  std::vector<Frame> frames;
  for (std::size_t at = 0; at < b.size();) {
    EXPECT_GE(b.size() - at, 8u) << "a whole frame's envelope at " << at;
    if (b.size() - at < 8) break;
    std::uint16_t channel;
    std::uint32_t size;
    std::memcpy(&channel, b.data() + at + 1, 2);
    std::memcpy(&size, b.data() + at + 3, 4);
    size = be32toh(size);
    EXPECT_EQ(be16toh(channel), kChannel);
    EXPECT_LE(at + 7 + size + 1, b.size());
    if (at + 7 + size + 1 > b.size()) break;
    EXPECT_EQ(static_cast<unsigned char>(b[at + 7 + size]), AMQP_FRAME_END) << "the end octet at " << at + 7 + size;
    frames.push_back({static_cast<std::uint8_t>(b[at]), b.substr(at + 7, size)});
    at += 7 + size + 1;
  }
  return frames;
}

TEST(AmqpFrames, decodesBackToEveryFieldWithRabbitmqcsDecoders) {
  const std::size_t frame_max = 4096;
  const std::string id = "beta:bench/mirror-64:1796000000123456789:18446744073709551615";
  std::string body(10'000, '\0');
  for (std::size_t i = 0; i < body.size(); ++i) body[i] = static_cast<char>(i % 251);
  const MirrorProperties props(id, true);
  std::string out = "earlier publishes";  // appended after what is there
  ASSERT_EQ(append_publish(out, kChannel, frame_max, "orders-x", "orders.new", true, props.p, bytes_of(body)),
            AMQP_STATUS_OK);
  ASSERT_EQ(out.substr(0, 17), "earlier publishes");
  const auto frames = split_frames(out.substr(17));
  // Method, header, and 10,000 bytes in frames of 4,096 - 8 = 4,088: three.
  ASSERT_EQ(frames.size(), 5u);
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);

  EXPECT_EQ(frames[0].type, AMQP_FRAME_METHOD);
  ASSERT_GE(frames[0].payload.size(), 4u);
  std::uint32_t method_id;
  std::memcpy(&method_id, frames[0].payload.data(), 4);
  EXPECT_EQ(be32toh(method_id), AMQP_BASIC_PUBLISH_METHOD);
  std::string fields = frames[0].payload.substr(4);
  void* decoded = nullptr;
  ASSERT_EQ(amqp_decode_method(AMQP_BASIC_PUBLISH_METHOD, &pool, amqp_bytes_t{fields.size(), fields.data()}, &decoded),
            AMQP_STATUS_OK);
  const auto& m = *static_cast<amqp_basic_publish_t*>(decoded);
  EXPECT_EQ(m.ticket, 0);
  EXPECT_EQ(text_of(m.exchange), "orders-x");
  EXPECT_EQ(text_of(m.routing_key), "orders.new");
  EXPECT_EQ(m.mandatory, 1);
  EXPECT_EQ(m.immediate, 0);

  EXPECT_EQ(frames[1].type, AMQP_FRAME_HEADER);
  ASSERT_GE(frames[1].payload.size(), 12u);
  std::uint16_t class_id, weight;
  std::uint64_t body_size;
  std::memcpy(&class_id, frames[1].payload.data(), 2);
  std::memcpy(&weight, frames[1].payload.data() + 2, 2);
  std::memcpy(&body_size, frames[1].payload.data() + 4, 8);
  EXPECT_EQ(be16toh(class_id), AMQP_BASIC_CLASS);
  EXPECT_EQ(be16toh(weight), 0);
  EXPECT_EQ(be64toh(body_size), 10'000u);
  std::string encoded = frames[1].payload.substr(12);
  ASSERT_EQ(amqp_decode_properties(AMQP_BASIC_CLASS, &pool, amqp_bytes_t{encoded.size(), encoded.data()}, &decoded),
            AMQP_STATUS_OK);
  const auto& p = *static_cast<amqp_basic_properties_t*>(decoded);
  EXPECT_EQ(p._flags, AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG |
                          AMQP_BASIC_HEADERS_FLAG);
  EXPECT_EQ(text_of(p.message_id), id);
  EXPECT_EQ(p.delivery_mode, AMQP_DELIVERY_PERSISTENT);
  EXPECT_EQ(p.timestamp, 1'796'000'000u);
  ASSERT_EQ(p.headers.num_entries, 1);
  EXPECT_EQ(text_of(p.headers.entries[0].key), "colo.redelivery");
  EXPECT_EQ(p.headers.entries[0].value.kind, AMQP_FIELD_KIND_I64);
  EXPECT_EQ(p.headers.entries[0].value.value.i64, 1);

  std::string got;
  for (std::size_t i = 2; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].type, AMQP_FRAME_BODY);
    EXPECT_EQ(frames[i].payload.size(), i < 4 ? 4088u : 10'000u - 2 * 4088u) << "body frame " << i - 2;
    got += frames[i].payload;
  }
  EXPECT_TRUE(got == body);
  empty_amqp_pool(&pool);
}

TEST(AmqpFrames, aLargeTableBeyondTheFirstRoomStillEncodes) {
  const std::string long_value(3000, 'v');
  amqp_table_entry_t entry{amqp_cstring_bytes("note"), {}};
  entry.value.kind = AMQP_FIELD_KIND_UTF8;
  entry.value.value.bytes = amqp_text(long_value);
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
  p.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  p.headers = amqp_table_t{1, &entry};
  const std::string out = appended(131072, "", "q", false, p, "x");
  const auto frames = split_frames(out);
  ASSERT_EQ(frames.size(), 3u);
  std::string encoded = frames[1].payload.substr(12);
  amqp_pool_t pool;
  init_amqp_pool(&pool, 4096);
  void* decoded = nullptr;
  ASSERT_EQ(amqp_decode_properties(AMQP_BASIC_CLASS, &pool, amqp_bytes_t{encoded.size(), encoded.data()}, &decoded),
            AMQP_STATUS_OK);
  const auto& got = *static_cast<amqp_basic_properties_t*>(decoded);
  ASSERT_EQ(got.headers.num_entries, 1);
  EXPECT_EQ(text_of(got.headers.entries[0].value.value.bytes), long_value);
  EXPECT_EQ(frames[2].payload, "x");
  empty_amqp_pool(&pool);
}

TEST(AmqpFrames, aRoutingKeyTooLongForAShortStringIsRefusedAndTheBufferKept) {
  amqp_basic_properties_t p{};
  std::string out = "kept";
  const int status = append_publish(out, kChannel, 131072, "", std::string(256, 'k'), true, p, bytes_of("body"));
  EXPECT_EQ(status, AMQP_STATUS_BAD_AMQP_DATA) << amqp_error_string2(status);
  EXPECT_EQ(out, "kept");
}

TEST(FenceName, isTheNamesJoinedAndOverTwoHundredFiftyFiveBytesAPrefixAndAHashThatTellsThemApart) {
  EXPECT_EQ(fence_name("alpha", "prod", "mirror:prices"), "colo.fence.alpha.prod.mirror:prices");
  const std::string long_link = "mirror:" + std::string(300, 'x');
  const std::string a = fence_name("alpha", "prod", long_link + "a");
  const std::string b = fence_name("alpha", "prod", long_link + "b");
  ASSERT_EQ(a.size(), 200u + 1u + 16u);
  EXPECT_EQ(a.substr(0, 200), ("colo.fence.alpha.prod." + long_link).substr(0, 200));
  EXPECT_EQ(a[200], '~');
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef", 201), std::string::npos) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a, fence_name("alpha", "prod", long_link + "a"));
}

}  // namespace
}  // namespace colo::bridge::rabbitmq
