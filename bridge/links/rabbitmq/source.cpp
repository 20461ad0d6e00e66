#include "source.hpp"

#include <charconv>
#include <cstdio>
#include <thread>

#include "colo/internal/federation.hpp"
#include "colo/internal/links.hpp"
#include "colo/metadata.hpp"

namespace colo::bridge::rabbitmq {
namespace {

using namespace std::chrono_literals;
constexpr std::size_t kPublishBatch = 256;  // deliveries published into the ring at once
constexpr int kFramesPerStep = 1024;        // frames read in one step, at most

template <typename T>
std::string decimal(T value) {
  char text[32];
  return std::string(text, std::to_chars(text, text + sizeof text, value).ptr);
}

// An AMQP header value as colo/metadata.hpp documents it: bytes, or
// decimal text, "true"/"false"; nullopt for void; false if it is left out
// (a nested table or array).
bool header_value(const amqp_field_value_t& v, std::string& text, bool& null) {
  null = false;
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES: text.assign(static_cast<const char*>(v.value.bytes.bytes), v.value.bytes.len); return true;
    case AMQP_FIELD_KIND_BOOLEAN: text = v.value.boolean ? "true" : "false"; return true;
    case AMQP_FIELD_KIND_I8: text = decimal(v.value.i8); return true;
    case AMQP_FIELD_KIND_U8: text = decimal(v.value.u8); return true;
    case AMQP_FIELD_KIND_I16: text = decimal(v.value.i16); return true;
    case AMQP_FIELD_KIND_U16: text = decimal(v.value.u16); return true;
    case AMQP_FIELD_KIND_I32: text = decimal(v.value.i32); return true;
    case AMQP_FIELD_KIND_U32: text = decimal(v.value.u32); return true;
    case AMQP_FIELD_KIND_I64: text = decimal(v.value.i64); return true;
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP: text = decimal(v.value.u64); return true;
    case AMQP_FIELD_KIND_F32: text = decimal(v.value.f32); return true;
    case AMQP_FIELD_KIND_F64: text = decimal(v.value.f64); return true;
    case AMQP_FIELD_KIND_DECIMAL: {
      // value x 10^-decimals, as text ("12.50")
      std::string digits = decimal(v.value.decimal.value);
      const unsigned places = v.value.decimal.decimals;
      if (places > 0) {
        if (digits.size() <= places) digits.insert(0, places + 1 - digits.size(), '0');
        digits.insert(digits.size() - places, ".");
      }
      text = digits;
      return true;
    }
    case AMQP_FIELD_KIND_VOID: null = true; return true;
    default: return false;  // table, array
  }
}

}  // namespace

Source::Source(const Config& config, const RabbitmqServerConfig& server, const LinkConfig& link, const Log& log)
    : RabbitmqLink(config, server, link, log),
      origin_(internal::origin_id("rabbitmq/" + server.name + "/" + link.rabbitmq.queue)) {}

// ------------------------------------------------------------------ open

Result<void> Source::open() {
  if (auto opened = open_object(ns_, object_); !opened) return opened;
  auto publisher = publisher_of(object_);
  if (!publisher) return std::move(publisher).error();
  publisher_.emplace(std::move(publisher).value());
  // Origin sequences go on from the newest the ring holds of this queue's.
  const auto high = object_.topic ? internal::relayed_high_water(*object_.topic)
                                  : internal::relayed_high_water(*object_.queue);
  if (auto it = high.find(origin_); it != high.end()) next_origin_seq_ = it->second + 1;
  if (auto ok = connect(); !ok) return ok;
  log_.write(LogLevel::info, "link %s: %s, prefetch %u", config_.name.c_str(), describe().c_str(),
             config_.rabbitmq.prefetch);
  return Ok{};
}

Result<void> Source::set_up(Connection& connection) {
  if (auto ok = connection.qos(static_cast<std::uint16_t>(config_.rabbitmq.prefetch)); !ok) return ok;
  return connection.consume(config_.rabbitmq.queue);
}

// ------------------------------------------------------------------ steps

void Source::step() {
  if (!connection_ && !reconnect()) {
    update_gauges();
    return;
  }
  // Wait for deliveries only when there is nothing else to do.
  read_deliveries(pending_.empty() ? 20ms : 0us);
  if (connection_) publish_pending();
  if (connection_) acknowledge_released();
  update_gauges();
}

// Paused: deliveries are read (and heartbeats answered) but not published;
// RabbitMQ stops sending once `prefetch` wait unacknowledged.
void Source::idle() {
  if (!connection_ && !reconnect()) return;
  if (pending_.size() < config_.rabbitmq.prefetch) read_deliveries(50ms);
  else std::this_thread::sleep_for(50ms);
  if (connection_) acknowledge_released();
  update_gauges();
}

void Source::read_deliveries(std::chrono::microseconds wait) {
  for (int frames = 0; frames < kFramesPerStep && connection_; ++frames) {
    auto in = connection_->next(wait);
    if (!in) {
      lost(in.error().message);
      return;
    }
    if (!*in) return;
    wait = 0us;
    if ((*in)->method == AMQP_BASIC_DELIVER_METHOD) take(**in);
    else if ((*in)->method == AMQP_BASIC_CANCEL_METHOD) {
      // The server cancelled our consumer (the queue was deleted).
      lost("the server cancelled the consumer of queue '" + config_.rabbitmq.queue + "'");
      return;
    }
  }
}

// A delivery's metadata (colo/metadata.hpp), in the documented order, and
// a copy of its body, until the ring has room.
void Source::take(const Incoming& in) {
  const auto& d = *static_cast<const amqp_basic_deliver_t*>(in.decoded);
  const amqp_basic_properties_t& p = *in.properties;
  internal::MetadataWriter meta;
  meta.reserve(128);
  meta.add(MetadataType::system, std::string_view("rabbitmq"));
  meta.add(MetadataType::queue, std::string_view(config_.rabbitmq.queue));
  meta.add(MetadataType::exchange, text_of(d.exchange));
  meta.add(MetadataType::routing_key, text_of(d.routing_key));
  if ((p._flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0) meta.add(MetadataType::message_id, text_of(p.message_id));
  if ((p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG) != 0) meta.add(MetadataType::content_type, text_of(p.content_type));
  if ((p._flags & AMQP_BASIC_TIMESTAMP_FLAG) != 0)
    meta.add_i64(MetadataType::timestamp_ms, static_cast<std::int64_t>(p.timestamp) * 1000);
  if ((p._flags & AMQP_BASIC_HEADERS_FLAG) != 0) {
    std::string value;
    bool null = false;
    for (int i = 0; i < p.headers.num_entries; ++i) {
      const auto& e = p.headers.entries[i];
      if (!header_value(e.value, value, null)) continue;
      if (null) meta.add_header(text_of(e.key), std::nullopt);
      else meta.add_header(text_of(e.key), std::as_bytes(std::span(value.data(), value.size())));
    }
  }
  if (d.redelivered != 0) meta.add_u32(MetadataType::redelivery, 1);
  const auto body = in.body;
  pending_.push_back({d.delivery_tag, meta.take(), std::vector<std::byte>(body.begin(), body.end())});
  if (d.redelivered != 0) add(counters_.redelivered);
}

bool Source::publish_pending() {
  while (!pending_.empty() && connection_) {
    const std::size_t n = std::min(kPublishBatch, pending_.size());
    internal::AnnotatedMessage batch[kPublishBatch];
    std::uint64_t sequences[kPublishBatch];
    for (std::size_t i = 0; i < n; ++i)
      batch[i] = {origin_, next_origin_seq_ + i, pending_[i].metadata, pending_[i].body};
    const std::size_t published =
        internal::publish_annotated(*publisher_, std::span(batch, n), std::chrono::nanoseconds(0), sequences);
    std::uint64_t last_tag = 0;
    for (std::size_t i = 0; i < published; ++i) {
      const std::uint64_t tag = pending_.front().tag;
      if (object_.topic) last_tag = tag;
      else unreleased_.emplace_back(sequences[i] + 1, tag);
      pending_.pop_front();
      ++next_origin_seq_;
      add(counters_.produced);
    }
    if (last_tag != 0) {
      // Topic: in the ring is for good; one ack for the batch.
      if (auto ok = connection_->ack(last_tag, true); !ok) {
        lost(ok.error().message);
        return false;
      }
      add(counters_.acknowledged, published);
    }
    if (published == n) continue;
    if (publisher_->last_status() != SendStatus::too_large) return false;  // no room: the rest waits
    // Larger than the object's max_message with its metadata: rejected
    // (the queue's dead-letter exchange takes it, if it has one), never
    // stalling the queue.
    const Delivery& big = pending_.front();
    add(counters_.skipped);
    report_error("rabbitmq: a message of queue '" + config_.rabbitmq.queue + "' (" + std::to_string(big.body.size()) +
                 " bytes and " + std::to_string(big.metadata.size()) + " of metadata) is larger than " + config_.object +
                 "'s max_message of " + std::to_string(config_.max_message) + ": rejected to its dead-letter handling");
    if (auto ok = connection_->reject(big.tag, /*requeue*/ false); !ok) {
      lost(ok.error().message);
      return false;
    }
    pending_.pop_front();
  }
  return true;
}

// Queue: deliveries every local consumer is done with are acknowledged,
// one ack (multiple) for all of them.
void Source::acknowledge_released() {
  if (!object_.queue || unreleased_.empty()) return;
  const std::uint64_t released = internal::released_below(*object_.queue);
  std::uint64_t last_tag = 0, count = 0;
  while (!unreleased_.empty() && unreleased_.front().first <= released) {
    last_tag = unreleased_.front().second;
    unreleased_.pop_front();
    ++count;
  }
  if (last_tag == 0) return;
  if (auto ok = connection_->ack(last_tag, true); !ok) {
    lost(ok.error().message);
    return;
  }
  add(counters_.acknowledged, count);
}

void Source::update_gauges() {
  set(counters_.in_flight, unreleased_.size());
  set(counters_.lag_messages, pending_.size());
}

// The connection is gone: RabbitMQ delivers again what it has no ack for
// (flagged redelivered). What waits here is dropped (it comes again); what
// is in the ring stays there (so it may be there twice, the copy marked).
void Source::on_lost() {
  pending_.clear();
  unreleased_.clear();
}

// ------------------------------------------------------------------ close

void Source::close() {
  if (connection_) {
    acknowledge_released();
    // What waits unpublished is dropped: without its ack, RabbitMQ delivers
    // it again (redelivered) when the link consumes next.
  }
  disconnect();
  pending_.clear();
  unreleased_.clear();
  publisher_.reset();
  if (stopping()) object_ = LinkObject{};
}

}  // namespace colo::bridge::rabbitmq
