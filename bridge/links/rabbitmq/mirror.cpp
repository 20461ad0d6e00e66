#include "mirror.hpp"

#include <algorithm>

#include "colo/internal/clock.hpp"
#include "colo/internal/links.hpp"

namespace colo::bridge::rabbitmq {
namespace {

using namespace std::chrono_literals;
using internal::monotonic_ns;
constexpr std::size_t kReadBatch = 1024;  // messages read from the ring at once
constexpr std::size_t kRetainBatch = 4096;
constexpr std::uint32_t kBusyPolls = 200;  // empty polls 1 ms apart before they go 5 ms apart
constexpr std::uint64_t kCloseWaitNs = 5'000'000'000;  // at close: for outstanding confirms

// colo.* header names, as the Kafka mirror's.
constexpr const char* kOriginHeader = "colo.origin";
constexpr const char* kObjectHeader = "colo.object";
constexpr const char* kSeqHeader = "colo.seq";
constexpr const char* kEpochHeader = "colo.epoch";
constexpr const char* kTimeHeader = "colo.time";
constexpr const char* kRedeliveryHeader = "colo.redelivery";

amqp_table_entry_t text_entry(const char* key, const std::string& value) {
  amqp_table_entry_t e{amqp_cstring_bytes(key), {}};
  e.value.kind = AMQP_FIELD_KIND_UTF8;
  e.value.value.bytes = amqp_text(value);
  return e;
}
amqp_table_entry_t i64_entry(const char* key, std::int64_t value) {
  amqp_table_entry_t e{amqp_cstring_bytes(key), {}};
  e.value.kind = AMQP_FIELD_KIND_I64;
  e.value.value.i64 = value;
  return e;
}

}  // namespace

Mirror::Mirror(const Config& config, const RabbitmqServerConfig& server, const LinkConfig& link, const Log& log)
    : RabbitmqLink(config, server, link, log), lossy_(link.lossy), window_(link.rabbitmq.window) {}

// ------------------------------------------------------------------ open

Result<void> Mirror::open() {
  if (!object_.node) {
    auto object = open_object(ns_);
    if (!object) return std::move(object).error();
    object_ = std::move(object).value();
  }
  if (!checkpoint_) {
    auto checkpoint = Checkpoint::open(ns_, config_.name);
    if (!checkpoint) return std::move(checkpoint).error();
    checkpoint_.emplace(std::move(checkpoint).value());
  }
  // Block mode: hold everything the ring has from now on, before RabbitMQ
  // is even reached (a reopen keeps the retain reader of the last open).
  if (!lossy_ && !retain_) {
    auto retain = object_.topic ? object_.topic->subscribe(SubscribeOptions{Backpressure::block, std::nullopt, 0})
                                : internal::subscribe_tap(*object_.queue, 0);
    if (!retain) return std::move(retain).error();
    retain_.emplace(std::move(retain).value());
    retain_next_ = 0;
  }
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
  auto ahead = object_.queue ? internal::subscribe_tap(*object_.queue, from)
                             : object_.topic->subscribe(SubscribeOptions{
                                   lossy_ ? Backpressure::lossy : Backpressure::block, std::nullopt, from});
  if (!ahead) return std::move(ahead).error();
  ahead_.emplace(std::move(ahead).value());
  handled_through_ = from;
  missed_seen_ = ahead_->missed();
  // What RabbitMQ lacks and the ring no longer has (overwritten while no
  // colod read it). On a first start what came before is history.
  if (restarted && missed_seen_ > 0)
    note_lost(from, from + missed_seen_ - 1, missed_seen_, "overwritten in the ring before colod read them");
  log_.write(LogLevel::info, "link %s: %s; publishing from sequence %llu%s", config_.name.c_str(), describe().c_str(),
             static_cast<unsigned long long>(from + missed_seen_),
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
  if (ahead_batch_.empty()) {
    // Polled, never waited for on the ring (a reader asleep on it would
    // make every local publish pay a futex wake); an empty poll waits for
    // RabbitMQ's frames instead, 1 ms, then 5 ms after 200 empty polls.
    ahead_batch_ = ahead_->try_receive_batch(kReadBatch);
    next_in_batch_ = 0;
    if (ahead_batch_.empty()) {
      idle_polls_ = std::min<std::uint32_t>(idle_polls_ + 1, kBusyPolls + 1);
      read_frames(idle_polls_ > kBusyPolls ? 5ms : 1ms);
    } else {
      idle_polls_ = 0;
    }
    const std::uint64_t missed = ahead_->missed();
    if (missed != missed_seen_ && !ahead_batch_.empty()) {
      // Lossy: lapped; the messages just before this batch are gone.
      const std::uint64_t gone = missed - missed_seen_;
      const std::uint64_t first = ahead_batch_[0].sequence();
      note_lost(first - std::min(gone, first), first - 1, gone, "overwritten in the ring before colod read them");
      missed_seen_ = missed;
    }
  }
  if (connection_ && !ahead_batch_.empty()) {
    if (publish_batch()) ahead_batch_.release();
    else if (connection_) read_frames(5ms);  // the window is full: wait for confirms
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
  for (; next_in_batch_ < ahead_batch_.size(); ++next_in_batch_) {
    const MessageView& m = ahead_batch_[next_in_batch_];
    if (m.origin() == 0) {
      if (pending_ >= window_) return false;
      if (!publish(m)) return false;
    }
    handled_through_ = m.sequence() + 1;
  }
  return true;
}

bool Mirror::publish(const MessageView& m) {
  const std::uint64_t seq = m.sequence();
  const bool again = seq < redeliver_below_;
  amqp_table_entry_t headers[6] = {
      text_entry(kOriginHeader, node_name_),
      text_entry(kObjectHeader, config_.object),
      i64_entry(kSeqHeader, static_cast<std::int64_t>(seq)),
      i64_entry(kEpochHeader, static_cast<std::int64_t>(object_.epoch)),
      i64_entry(kTimeHeader, static_cast<std::int64_t>(internal::realtime_ns())),
      i64_entry(kRedeliveryHeader, 1),
  };
  amqp_basic_properties_t properties{};
  properties._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG | AMQP_BASIC_TIMESTAMP_FLAG;
  properties.delivery_mode = AMQP_DELIVERY_PERSISTENT;
  properties.timestamp = static_cast<std::uint64_t>(headers[4].value.value.i64) / 1'000'000'000;
  properties.headers = amqp_table_t{again ? 6 : 5, headers};
  // Before the publish: a crash right after it must find this message
  // counted as possibly in RabbitMQ (published again, marked).
  published_high_ = std::max(published_high_, seq + 1);
  checkpoint_->set_published(published_high_);
  const auto& r = config_.rabbitmq;
  if (auto sent = connection_->publish(r.exchange, r.routing_key, /*mandatory*/ true, properties, m.data()); !sent) {
    lost(sent.error().message);
    return false;
  }
  in_flight_.push_back({seq, static_cast<std::uint32_t>(m.data().size()), false, false});
  in_flight_bytes_ += m.data().size();
  ++pending_;
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
  const std::uint64_t end_tag = first_tag_ + in_flight_.size();
  if (tag < first_tag_ || tag >= end_tag) return;  // confirmed already (a multiple ack over it)
  if (!ack && !lossy_) {
    // The server could not take them (an internal error): published again,
    // with everything unconfirmed, over a new connection.
    lost("the server refused message " + std::to_string(in_flight_[tag - first_tag_].seq) + " (basic.nack)");
    return;
  }
  for (std::uint64_t t = multiple ? first_tag_ : tag; t <= tag; ++t) {
    InFlight& f = in_flight_[t - first_tag_];
    if (f.done) continue;
    f.done = true;
    --pending_;
    if (!ack) note_lost(f.seq, f.seq, 1, "refused by the server (basic.nack)");
    else if (!f.returned) add(counters_.acknowledged);
  }
  while (!in_flight_.empty() && in_flight_.front().done) {
    in_flight_bytes_ -= in_flight_.front().bytes;
    in_flight_.pop_front();
    ++first_tag_;
  }
  report_up();
}

// An unroutable message (no queue bound for its routing key): RabbitMQ
// sends it back before its ack. Its colo.seq header says which one.
void Mirror::on_return(const Incoming& in) {
  const auto& ret = *static_cast<const amqp_basic_return_t*>(in.decoded);
  std::int64_t seq = -1;
  if (in.properties != nullptr && (in.properties->_flags & AMQP_BASIC_HEADERS_FLAG) != 0)
    for (int i = 0; i < in.properties->headers.num_entries; ++i) {
      const auto& e = in.properties->headers.entries[i];
      if (text_of(e.key) == kSeqHeader && e.value.kind == AMQP_FIELD_KIND_I64) seq = e.value.value.i64;
    }
  const auto it = std::lower_bound(in_flight_.begin(), in_flight_.end(), seq,
                                   [](const InFlight& f, std::int64_t s) { return static_cast<std::int64_t>(f.seq) < s; });
  if (it == in_flight_.end() || static_cast<std::int64_t>(it->seq) != seq || it->returned) return;
  it->returned = true;
  add(lossy_ ? counters_.lost : counters_.skipped);
  report_error("rabbitmq: message " + std::to_string(seq) + " (" + std::to_string(in.body.size()) +
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
    for (const auto& f : in_flight_) count += f.done ? 0 : 1;
    if (count > 0)
      note_lost(in_flight_.front().seq, in_flight_.back().seq, count, "unconfirmed when the connection was lost");
  } else {
    const std::uint64_t from = confirmed_below();
    redeliver_below_ = std::max(redeliver_below_, published_high_);
    ahead_batch_.release();
    ahead_.reset();
    if (auto reopened = open_ahead(from, false); !reopened)
      report_failed(reopened.error().message);  // the link is opened anew
  }
  in_flight_.clear();
  in_flight_bytes_ = 0;
  pending_ = 0;
  first_tag_ = 1;  // a new channel numbers its publishes from 1
}

void Mirror::drop_while_down() {
  if (!ahead_) return;
  if (ahead_batch_.empty()) {
    ahead_batch_ = ahead_->try_receive_batch(kReadBatch);
    next_in_batch_ = 0;
  }
  std::uint64_t count = 0, first = 0, last = 0;
  for (; next_in_batch_ < ahead_batch_.size(); ++next_in_batch_) {
    const MessageView& m = ahead_batch_[next_in_batch_];
    if (m.origin() == 0) {
      if (count++ == 0) first = m.sequence();
      last = m.sequence();
    }
    handled_through_ = m.sequence() + 1;
  }
  ahead_batch_.release();
  if (count > 0) note_lost(first, last, count, "RabbitMQ unreachable");
}

std::uint64_t Mirror::confirmed_below() const noexcept {
  return in_flight_.empty() ? handled_through_ : in_flight_.front().seq;
}

// Moves `retain` (and the checkpoint) up to the oldest message not yet
// confirmed: everything before it is in RabbitMQ, was skipped, or is not ours.
void Mirror::advance_retain() {
  const std::uint64_t target = confirmed_below();
  if (checkpoint_) checkpoint_->set_confirmed(target);
  if (!retain_) return;
  for (int budget = 0; budget < 64; ++budget) {
    if (!retain_batch_.empty()) {
      if (retain_batch_[retain_batch_.size() - 1].sequence() >= target) return;  // still needed
      retain_batch_.release();
    }
    if (retain_next_ >= target) return;
    retain_batch_ = retain_->try_receive_batch(std::min<std::uint64_t>(kRetainBatch, target - retain_next_));
    if (retain_batch_.empty()) return;
    retain_next_ = retain_batch_[retain_batch_.size() - 1].sequence() + 1;
  }
}

void Mirror::note_lost(std::uint64_t first, std::uint64_t last, std::uint64_t count, const char* why) {
  add(counters_.lost, count);
  report_error("rabbitmq: " + std::to_string(count) + " message(s), sequences " + std::to_string(first) + ".." +
               std::to_string(last) + ", lost: " + why);
}

void Mirror::update_gauges() {
  set(counters_.in_flight, pending_);
  // Block: everything retain holds; lossy: unread, and in flight.
  internal::Backlog lag;
  if (retain_) lag = internal::backlog(*retain_);
  else if (ahead_) lag = internal::backlog(*ahead_);
  if (!retain_) {
    lag.messages += pending_;
    lag.bytes += in_flight_bytes_;
  }
  set(counters_.lag_messages, lag.messages);
  set(counters_.lag_bytes, lag.bytes);
}

// ------------------------------------------------------------------ close

void Mirror::close() {
  // What is in flight gets its confirms if they come soon; what does not is
  // published again by the next open (the checkpoint says from where).
  const std::uint64_t deadline = monotonic_ns() + kCloseWaitNs;
  while (connection_ && pending_ > 0 && monotonic_ns() < deadline) read_frames(50ms);
  advance_retain();
  disconnect();
  ahead_batch_.release();
  ahead_.reset();
  in_flight_.clear();
  in_flight_bytes_ = 0;
  pending_ = 0;
  first_tag_ = 1;
  if (stopping()) {
    // The ring no longer holds writers for RabbitMQ; what is published while
    // colod is away stays as long as the ring retains it.
    retain_batch_.release();
    retain_.reset();
    checkpoint_.reset();
    object_ = LinkObject{};
  }
}

}  // namespace colo::bridge::rabbitmq
