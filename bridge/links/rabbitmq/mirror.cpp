#include "mirror.hpp"

#include <algorithm>
#include <cstdio>
#include <thread>

#define XXH_INLINE_ALL  // header only, as libcolo uses it (broker/meson.build)
#include <xxhash.h>

#include "colo/internal/clock.hpp"
#include "colo/internal/links.hpp"

namespace colo::bridge::rabbitmq {
namespace {

using namespace std::chrono_literals;
using internal::monotonic_ns;
constexpr std::uint64_t kCloseWaitNs = 5'000'000'000;  // at close: for outstanding confirms

// The header of a copy that may be in RabbitMQ already.
constexpr const char* kRedeliveryHeader = "colo.redelivery";

constexpr std::uint64_t kFencePollNs = 20'000'000;       // between declares of a held fence
constexpr std::uint64_t kFenceWaitNoHeartbeatNs = 30'000'000'000;  // heartbeat_s = 0: nothing bounds it
constexpr std::size_t kMaxShortString = 255;            // AMQP's queue names

}  // namespace

std::string fence_name(const std::string& node, const std::string& ns, const std::string& link) {
  std::string name = "colo.fence." + node + "." + ns + "." + link;
  if (name.size() <= kMaxShortString) return name;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(XXH3_64bits(name.data(), name.size())));
  return name.substr(0, 200) + "~" + hex;
}

Mirror::Mirror(const Config& config, const RabbitmqServerConfig& server, const LinkConfig& link, const Log& log)
    : RabbitmqLink(config, server, link, log),
      lossy_(link.lossy),
      window_(link.rabbitmq.window),
      fence_(fence_name(config.node_name, config.ns, link.name)),
      ring_(link.lossy) {}

// ------------------------------------------------------------------ the fence

Result<void> Mirror::set_up(Connection& connection) {
  if (auto held = hold_fence(connection); !held) return held;
  return connection.confirm_select();
}

Result<void> Mirror::hold_fence(Connection& connection) {
  const std::uint64_t start = monotonic_ns();
  const std::uint64_t limit =
      server_.heartbeat_s == 0 ? kFenceWaitNoHeartbeatNs : 3ull * server_.heartbeat_s * 1'000'000'000ull;
  bool waited = false;
  for (;;) {
    auto held = connection.hold_exclusive_queue(fence_);
    const double seconds = static_cast<double>(monotonic_ns() - start) / 1e9;
    if (held) {
      if (waited)
        log_.write(LogLevel::info, "link %s: RabbitMQ closed the previous connection after %.2f s", config_.name.c_str(),
                   seconds);
      return Ok{};
    }
    if (held.error().code == Errc::permission_denied && connection.usable()) {
      report_error("rabbitmq: may not declare the fence queue '" + fence_ + "' (" + held.error().message +
                   "): publishing without it; after a crash an unmarked copy may come after its marked one");
      return Ok{};
    }
    if (held.error().code != Errc::busy || !connection.usable()) return held;
    if (!waited)
      log_.write(LogLevel::info,
                 "link %s: waiting for RabbitMQ to close this link's previous connection (it holds queue '%s')",
                 config_.name.c_str(), fence_.c_str());
    waited = true;
    if (stopping() || monotonic_ns() - start >= limit)
      return Error{Errc::busy, "rabbitmq: the link's previous connection still holds queue '" + fence_ + "' after " +
                                   std::to_string(static_cast<int>(seconds)) +
                                   " s (RabbitMQ drops a silent connection after its heartbeats; "
                                   "rabbitmqctl close_connection drops it now)"};
    std::this_thread::sleep_for(std::chrono::nanoseconds(kFencePollNs));
  }
}

// ------------------------------------------------------------------ open

Result<void> Mirror::open() {
  if (auto opened = open_object(ns_, object_); !opened) return opened;
  id_ = MessageId(node_name_, config_.object, object_.epoch);
  if (!checkpoint_) {
    auto checkpoint = Checkpoint::open(ns_, config_.name);
    if (!checkpoint) return std::move(checkpoint).error();
    checkpoint_.emplace(std::move(checkpoint).value());
  }
  // Block mode: hold everything the ring has from now on, before RabbitMQ
  // is even reached (a reopen keeps the retain reader of the last open).
  if (auto held = ring_.hold(object_); !held) return held;
  if (auto ok = connect(); !ok) return ok;
  // Where to resume: after what RabbitMQ confirmed, by the checkpoint of
  // this object's epoch; else (a first start, or the object made again)
  // at the oldest message the ring retains.
  const auto at = checkpoint_->read();
  const bool restarted = at && at->epoch == object_.epoch;
  if (!restarted) checkpoint_->start(object_.epoch, 0);
  redeliver_below_ = restarted ? at->published_below : 0;
  published_high_ = redeliver_below_;
  return open_ahead(restarted ? at->confirmed_below : 0, restarted);
}

Result<void> Mirror::open_ahead(std::uint64_t from, bool restarted) {
  auto missed = ring_.open_ahead(object_, from);
  if (!missed) return std::move(missed).error();
  const std::uint64_t gone = *missed;
  // What RabbitMQ lacks and the ring no longer has (overwritten while no
  // colod read it). On a first start what came before is history.
  if (restarted && gone > 0) report_lost(from, from + gone - 1, gone, "overwritten in the ring before colod read them");
  log_.write(LogLevel::info, "link %s: %s; publishing from sequence %llu%s", config_.name.c_str(), describe().c_str(),
             static_cast<unsigned long long>(from + gone),
             restarted ? " (after the last confirmed, by its checkpoint)" : " (no checkpoint of this object yet)");
  return Ok{};
}

// ------------------------------------------------------------------ steps

void Mirror::step() {
  if (!connection_) {
    if (lossy_) drop_while_down();
    advance_retain();
    update_gauges();
    if (!reconnect()) return;
  }
  read_frames(0us);
  if (!connection_) return;
  MirrorRing::Lapped lapped;
  if (ring_.read(lapped)) {
    if (lapped.count > 0)
      report_lost(lapped.first, lapped.first + lapped.count - 1, lapped.count, "overwritten in the ring before colod read them");
    if (read_at_s_ == 0) read_at_s_ = internal::realtime_ns() / 1'000'000'000;  // once per batch read
    if (publish_batch()) read_at_s_ = 0;
    else if (connection_) read_frames(5ms);  // the window is full: wait for confirms
  } else {
    read_frames(ring_.idle_wait());  // nothing new: RabbitMQ's frames meanwhile
  }
  advance_retain();
  update_gauges();
}

void Mirror::idle() {
  if (connection_) read_frames(50ms);
  else if (lossy_) drop_while_down();
  else reconnect();
  advance_retain();
  update_gauges();
}

bool Mirror::publish_batch() {
  bool all = true;
  for (const MessageView* m; (m = ring_.current()) != nullptr; ring_.advance()) {
    if (m->origin() != 0) continue;  // relayed: its origin host mirrors it
    if (ring_.pending() >= window_) {
      all = false;
      break;
    }
    if (!publish(*m)) return false;
  }
  // The run of publishes in one write (plain TCP; amqp_client.hpp).
  if (auto sent = connection_->flush(); !sent) {
    lost(sent.error().message);
    return false;
  }
  return all;
}

bool Mirror::publish(const MessageView& m) {
  const std::uint64_t seq = m.sequence();
  const bool again = seq < redeliver_below_;
  amqp_table_entry_t redelivery{amqp_cstring_bytes(kRedeliveryHeader), {}};
  redelivery.value.kind = AMQP_FIELD_KIND_I64;
  redelivery.value.value.i64 = 1;
  amqp_basic_properties_t properties{};
  properties._flags = AMQP_BASIC_MESSAGE_ID_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
  properties.message_id = amqp_text(id_.of(seq));
  properties.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  properties.timestamp = read_at_s_;
  if (again) {
    properties._flags |= AMQP_BASIC_HEADERS_FLAG;
    properties.headers = amqp_table_t{1, &redelivery};
  }
  // Before the publish: a crash right after it must find this message
  // counted as possibly in RabbitMQ (published again, marked).
  published_high_ = std::max(published_high_, seq + 1);
  checkpoint_->set_published(published_high_);
  const auto& r = config_.rabbitmq;
  if (auto sent = connection_->publish(r.exchange, r.routing_key, /*mandatory*/ true, properties, m.data()); !sent) {
    lost(sent.error().message);
    return false;
  }
  ring_.sent(seq, static_cast<std::uint32_t>(m.data().size()));
  add(counters_.produced);
  if (again) add(counters_.redelivered);
  return true;
}

void Mirror::read_frames(std::chrono::microseconds wait) {
  for (int frames = 0; frames < 4096 && connection_; ++frames) {
    auto in = connection_->next(wait);
    if (!in) {
      lost(in.error().message);
      return;
    }
    if (!*in) return;
    wait = 0us;
    switch ((*in)->method) {
      case AMQP_BASIC_ACK_METHOD: {
        const auto& ack = *static_cast<const amqp_basic_ack_t*>((*in)->decoded);
        on_confirm(ack.delivery_tag, ack.multiple != 0, true);
        break;
      }
      case AMQP_BASIC_NACK_METHOD: {
        const auto& nack = *static_cast<const amqp_basic_nack_t*>((*in)->decoded);
        on_confirm(nack.delivery_tag, nack.multiple != 0, false);
        break;
      }
      case AMQP_BASIC_RETURN_METHOD: on_return(**in); break;
      default: break;
    }
  }
}

void Mirror::on_confirm(std::uint64_t tag, bool multiple, bool ack) {
  const std::uint64_t end_tag = first_tag_ + ring_.window_size();
  if (tag < first_tag_ || tag >= end_tag) return;  // confirmed already (a multiple ack over it)
  if (!ack && !lossy_) {
    // The server could not take them (an internal error): published again,
    // with everything unconfirmed, over a new connection.
    lost("the server refused message " + std::to_string(ring_.in_flight(tag - first_tag_).seq) + " (basic.nack)");
    return;
  }
  // From the newest down: done() lets the front leave (renumbering the
  // entries) only when the front itself is done, the last of these.
  const std::uint64_t oldest = multiple ? first_tag_ : tag;
  for (std::uint64_t t = tag + 1; t-- > oldest;) {
    const std::size_t index = t - first_tag_;
    const MirrorRing::InFlight& f = ring_.in_flight(index);
    if (f.done) continue;
    if (!ack) report_lost(f.seq, f.seq, 1, "refused by the server (basic.nack)");
    else if (!f.returned) add(counters_.acknowledged);
    first_tag_ += ring_.done(index);
  }
  report_up();
}

// An unroutable message (no queue bound for its routing key): RabbitMQ
// sends it back before its ack. Its message id says which one.
void Mirror::on_return(const Incoming& in) {
  const auto& ret = *static_cast<const amqp_basic_return_t*>(in.decoded);
  std::optional<MessageId::Parts> id;
  if (in.properties != nullptr && (in.properties->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0)
    id = MessageId::parse(text_of(in.properties->message_id));
  const auto index = id ? ring_.find(id->seq) : std::nullopt;
  if (!index || ring_.in_flight(*index).returned) return;
  ring_.in_flight(*index).returned = true;
  add(lossy_ ? counters_.lost : counters_.skipped);
  report_error("rabbitmq: message " + std::to_string(id->seq) + " (" + std::to_string(in.body.size()) +
               " bytes) returned unroutable: " + std::to_string(ret.reply_code) + " " +
               std::string(text_of(ret.reply_text)) + " (exchange '" + std::string(text_of(ret.exchange)) +
               "', routing key '" + std::string(text_of(ret.routing_key)) + "'): " + (lossy_ ? "lost" : "skipped"));
}

// The connection is gone. Block: everything unconfirmed is published again
// (marked) from the oldest unconfirmed message, which retain still holds.
// Lossy: what was unconfirmed is lost; reading goes on where it was.
void Mirror::on_lost() {
  if (lossy_) {
    std::uint64_t count = 0;
    for (std::size_t i = 0; i < ring_.window_size(); ++i) count += ring_.in_flight(i).done ? 0 : 1;
    if (count > 0)
      report_lost(ring_.in_flight(0).seq, ring_.in_flight(ring_.window_size() - 1).seq, count,
                "unconfirmed when the connection was lost");
    ring_.forget_window();
  } else {
    const std::uint64_t from = ring_.confirmed_below();
    redeliver_below_ = std::max(redeliver_below_, published_high_);
    ring_.close_ahead();
    read_at_s_ = 0;
    if (auto reopened = open_ahead(from, false); !reopened)
      report_failed(reopened.error().message);  // the link is opened anew
  }
  first_tag_ = 1;  // a new channel numbers its publishes from 1
}

void Mirror::drop_while_down() {
  MirrorRing::Lapped lapped;
  if (!ring_.reading() || !ring_.read(lapped)) return;
  if (lapped.count > 0)
    report_lost(lapped.first, lapped.first + lapped.count - 1, lapped.count, "overwritten in the ring before colod read them");
  std::uint64_t count = 0, first = 0, last = 0;
  for (const MessageView* m; (m = ring_.current()) != nullptr; ring_.advance()) {
    if (m->origin() != 0) continue;
    if (count++ == 0) first = m->sequence();
    last = m->sequence();
  }
  read_at_s_ = 0;
  if (count > 0) report_lost(first, last, count, "RabbitMQ unreachable");
}

// Moves `retain` (and the checkpoint) up to the oldest message not yet
// confirmed: everything before it is in RabbitMQ, was skipped, or is not ours.
void Mirror::advance_retain() {
  if (checkpoint_) checkpoint_->set_confirmed(ring_.confirmed_below());
  ring_.advance_retain();
}

void Mirror::update_gauges() {
  const internal::Backlog lag = ring_.lag();
  set_gauges(ring_.pending(), lag.messages, lag.bytes);
}

// ------------------------------------------------------------------ close

void Mirror::close() {
  // What is in flight gets its confirms if they come soon; what does not is
  // published again by the next open (the checkpoint says from where).
  const std::uint64_t deadline = monotonic_ns() + kCloseWaitNs;
  while (connection_ && ring_.pending() > 0 && monotonic_ns() < deadline) read_frames(50ms);
  advance_retain();
  disconnect();
  ring_.close_ahead();
  read_at_s_ = 0;
  first_tag_ = 1;
  if (stopping()) {
    // The ring no longer holds writers for RabbitMQ; what is published while
    // colod is away stays as long as the ring retains it.
    ring_.close();
    checkpoint_.reset();
    object_ = LinkObject{};
  }
}

}  // namespace colo::bridge::rabbitmq
