#include "colo/channel.hpp"

#include <algorithm>
#include <cstring>

#include "channel_state.hpp"
#include "clock.hpp"
#include "colo/internal/federation.hpp"
#include "process.hpp"

namespace colo {
namespace {

SendStatus to_send_status(shm::ClaimStatus status) noexcept {
  switch (status) {
    case shm::ClaimStatus::ok: return SendStatus::ok;
    case shm::ClaimStatus::full: return SendStatus::timed_out;
    case shm::ClaimStatus::too_large: return SendStatus::too_large;
    case shm::ClaimStatus::corrupt: return SendStatus::corrupt;
  }
  return SendStatus::corrupt;
}

std::uint64_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
  const auto ns = std::max<std::int64_t>(0, timeout.count());
  return shm::monotonic_ns() + static_cast<std::uint64_t>(ns);
}

}  // namespace

struct Reader::Handle {
  shm::ReaderHandle ring;
};

// The handles' insides are the ring's: this is where the ring's results
// become handles, and where colod's operations (colo/internal/federation.hpp)
// reach the ring behind a handle.
struct detail::ChannelAccess {
  static Publisher publisher(std::shared_ptr<ChannelState> state, int slot) noexcept {
    return Publisher(std::move(state), slot);
  }
  static Reader reader(std::shared_ptr<ChannelState> state, const shm::ReaderHandle& handle) {
    return Reader(std::move(state), std::unique_ptr<Reader::Handle>(new Reader::Handle{handle}));
  }
  static const std::shared_ptr<ChannelState>& state(const Topic& topic) noexcept { return topic.state_; }
  static const std::shared_ptr<ChannelState>& state(const Queue& queue) noexcept { return queue.state_; }

  static std::optional<Loan> loan(Publisher& publisher, shm::ClaimStatus status, const shm::Loan& loan) noexcept {
    publisher.last_ = to_send_status(status);
    if (publisher.last_ != SendStatus::ok) return std::nullopt;
    return Loan(publisher.state_.get(), publisher.slot_, loan.data, loan.size, loan.pos, loan.seq, loan.relayed);
  }
  static std::optional<Message> message(Reader& reader, shm::ReadStatus status, const shm::View& view) noexcept {
    if (status != shm::ReadStatus::ok) return std::nullopt;
    return Message(&reader, view.data, view.size, view.seq, view.deliveries, view.pos, view.record_length,
                   view.origin, view.origin_seq);
  }

  static SendStatus publish_relayed(Publisher& publisher, std::uint32_t origin, std::uint64_t origin_seq,
                                    std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                                    std::uint64_t* sequence) noexcept {
    auto& last = publisher.last_;
    if (bytes.size() > UINT32_MAX) return last = SendStatus::too_large;
    if (origin == 0) return last = SendStatus::corrupt;
    const shm::RelayTag tag{origin, origin_seq};
    auto& ring = publisher.state_->ring;
    shm::PublisherHandle handle{publisher.slot_};
    shm::Loan loan;
    const auto size = static_cast<std::uint32_t>(bytes.size());
    auto status = ring.try_claim(handle, size, loan, &tag);
    if (status == shm::ClaimStatus::full) status = ring.claim_until(handle, size, deadline_after(timeout), loan, &tag);
    last = to_send_status(status);
    if (last != SendStatus::ok) return last;
    if (size != 0) std::memcpy(loan.data, bytes.data(), size);
    if (sequence != nullptr) *sequence = loan.seq;
    ring.commit(handle, loan);
    return SendStatus::ok;
  }
  static bool wait_published(Reader& reader, std::uint64_t count, std::chrono::nanoseconds timeout) noexcept {
    return reader.state_->ring.wait_published(reader.handle_->ring, count, deadline_after(timeout));
  }
};

// --------------------------------------------------------------------- Loan

Loan::Loan(Loan&& other) noexcept
    : state_(other.state_), slot_(other.slot_), data_(other.data_), size_(other.size_), pos_(other.pos_),
      seq_(other.seq_), relayed_(other.relayed_) {
  other.state_ = nullptr;
}

void Loan::commit() noexcept {
  if (state_ == nullptr) return;
  shm::PublisherHandle handle{slot_};
  state_->ring.commit(handle, shm::Loan{data_, size_, pos_, seq_, relayed_});
  state_ = nullptr;
}

void Loan::abandon() noexcept {
  if (state_ == nullptr) return;
  shm::PublisherHandle handle{slot_};
  state_->ring.abandon(handle, shm::Loan{data_, size_, pos_, seq_, relayed_});
  state_ = nullptr;
}

// ---------------------------------------------------------------- Publisher

Publisher::Publisher(Publisher&& other) noexcept : state_(std::move(other.state_)), slot_(other.slot_), last_(other.last_) {
  other.slot_ = -1;
}

Publisher::~Publisher() {
  if (state_ != nullptr && slot_ >= 0) {
    shm::PublisherHandle handle{slot_};
    state_->ring.close_publisher(handle);
  }
}

std::optional<Loan> Publisher::try_loan(std::uint32_t size) noexcept {
  shm::PublisherHandle handle{slot_};
  shm::Loan loan;
  const auto status = state_->ring.try_claim(handle, size, loan);
  return detail::ChannelAccess::loan(*this, status, loan);
}

std::optional<Loan> Publisher::loan_for(std::uint32_t size, std::chrono::nanoseconds timeout) noexcept {
  shm::PublisherHandle handle{slot_};
  shm::Loan loan;
  // Try before reading the clock: most calls find space at once.
  auto status = state_->ring.try_claim(handle, size, loan);
  if (status == shm::ClaimStatus::full) status = state_->ring.claim_until(handle, size, deadline_after(timeout), loan);
  return detail::ChannelAccess::loan(*this, status, loan);
}

SendStatus Publisher::try_publish(std::span<const std::byte> bytes) noexcept {
  if (bytes.size() > UINT32_MAX) return last_ = SendStatus::too_large;
  auto loan = try_loan(static_cast<std::uint32_t>(bytes.size()));
  if (!loan) return last_;
  if (!bytes.empty()) std::memcpy(loan->data().data(), bytes.data(), bytes.size());
  loan->commit();
  return SendStatus::ok;
}

SendStatus Publisher::publish(std::span<const std::byte> bytes, std::chrono::nanoseconds timeout) noexcept {
  if (bytes.size() > UINT32_MAX) return last_ = SendStatus::too_large;
  auto loan = loan_for(static_cast<std::uint32_t>(bytes.size()), timeout);
  if (!loan) return last_;
  if (!bytes.empty()) std::memcpy(loan->data().data(), bytes.data(), bytes.size());
  loan->commit();
  return SendStatus::ok;
}

// ------------------------------------------------------------ Reader/Message

Reader::Reader(std::shared_ptr<detail::ChannelState> state, std::unique_ptr<Handle> handle) noexcept
    : state_(std::move(state)), handle_(std::move(handle)) {}

Reader::Reader(Reader&& other) noexcept : state_(std::move(other.state_)), handle_(std::move(other.handle_)) {}

Reader::~Reader() {
  if (state_ != nullptr && handle_ != nullptr) state_->ring.close_reader(handle_->ring);
}

std::uint64_t Reader::missed() const noexcept {
  return state_->ring.control().readers[handle_->ring.slot].missed.load(std::memory_order_relaxed);
}

// A message past its delivery limit goes to NAME.dlq, then is acknowledged
// here. If the dead-letter queue has no room, the message is delivered as is
// (its deliveries() tells) rather than lost.
static bool dead_letter(detail::ChannelState& state, shm::ReaderHandle& handle, const shm::View& view) noexcept {
  if (!view.dead_letter || state.dead_letters == nullptr) return false;
  auto& dlq = state.dead_letters->ring;
  auto publisher = dlq.open_publisher();
  if (!publisher) return false;
  shm::Loan loan;
  const bool moved = dlq.claim_until(*publisher, view.size, shm::monotonic_ns() + 100'000'000, loan) == shm::ClaimStatus::ok;
  if (moved) {
    if (view.size != 0) std::memcpy(loan.data, view.data, view.size);
    dlq.commit(*publisher, loan);
    state.ring.release(handle, view);
  }
  dlq.close_publisher(*publisher);
  return moved;
}

std::optional<Message> Reader::try_receive() noexcept {
  shm::View view;
  for (int i = 0; i < 64; ++i) {
    const auto status = state_->ring.try_read(handle_->ring, view);
    if (status == shm::ReadStatus::ok && dead_letter(*state_, handle_->ring, view)) continue;
    return detail::ChannelAccess::message(*this, status, view);
  }
  return std::nullopt;
}

std::optional<Message> Reader::receive_for(std::chrono::nanoseconds timeout) noexcept {
  shm::View view;
  // Try before reading the clock: a busy reader mostly finds a message.
  for (;;) {
    const auto status = state_->ring.try_read(handle_->ring, view);
    if (status == shm::ReadStatus::empty) break;
    if (status == shm::ReadStatus::ok && dead_letter(*state_, handle_->ring, view)) continue;
    return detail::ChannelAccess::message(*this, status, view);
  }
  const std::uint64_t deadline = deadline_after(timeout);
  for (;;) {
    const auto status = state_->ring.read_until(handle_->ring, deadline, view);
    if (status == shm::ReadStatus::ok && dead_letter(*state_, handle_->ring, view)) continue;
    return detail::ChannelAccess::message(*this, status, view);
  }
}

void Reader::release(const Message& message) noexcept {
  shm::View view;
  view.data = message.data_;
  view.size = message.size_;
  view.seq = message.seq_;
  view.deliveries = message.deliveries_;
  view.pos = message.pos_;
  view.record_length = message.record_length_;
  view.origin = message.origin_;
  view.origin_seq = message.origin_seq_;
  state_->ring.release(handle_->ring, view);
}

Message::Message(Message&& other) noexcept
    : reader_(other.reader_), data_(other.data_), size_(other.size_), seq_(other.seq_),
      deliveries_(other.deliveries_), pos_(other.pos_), record_length_(other.record_length_), origin_(other.origin_),
      origin_seq_(other.origin_seq_) {
  other.reader_ = nullptr;
}

Message& Message::operator=(Message&& other) noexcept {
  if (this != &other) {
    release();
    reader_ = other.reader_;
    data_ = other.data_;
    size_ = other.size_;
    seq_ = other.seq_;
    deliveries_ = other.deliveries_;
    pos_ = other.pos_;
    record_length_ = other.record_length_;
    origin_ = other.origin_;
    origin_seq_ = other.origin_seq_;
    other.reader_ = nullptr;
  }
  return *this;
}

void Message::release() noexcept {
  if (reader_ == nullptr) return;
  reader_->release(*this);
  reader_ = nullptr;
}

// ------------------------------------------------------------ Topic / Queue

Topic::Topic(std::shared_ptr<detail::ChannelState> state) noexcept : state_(std::move(state)) {}
Topic::Topic(Topic&&) noexcept = default;
Topic& Topic::operator=(Topic&&) noexcept = default;
Topic::~Topic() = default;
const std::string& Topic::name() const noexcept { return state_->name; }

Result<Publisher> Topic::publisher() {
  auto handle = state_->ring.open_publisher();
  if (!handle) return Error{handle.error().code, "topic '" + state_->name + "': " + handle.error().message};
  return detail::ChannelAccess::publisher(state_, handle->slot);
}

Result<Subscriber> Topic::subscribe(SubscribeOptions options) {
  shm::ReaderMode mode;
  switch (options.backpressure) {
    case Backpressure::block: mode = shm::ReaderMode::block; break;
    case Backpressure::lossy: mode = shm::ReaderMode::lossy; break;
    default: return Error{Errc::invalid_argument, "topic '" + state_->name + "': unknown backpressure class"};
  }
  auto handle = state_->ring.open_reader(mode, options.history.value_or(state_->ring.config().history),
                                        options.from_sequence);
  if (!handle) return Error{handle.error().code, "topic '" + state_->name + "': " + handle.error().message};
  return detail::ChannelAccess::reader(state_, *handle);
}

ChannelStats Topic::stats() const { return detail::channel_stats(*state_); }
std::uint64_t Topic::published() const noexcept { return state_->ring.tail().second; }

Queue::Queue(std::shared_ptr<detail::ChannelState> state) noexcept : state_(std::move(state)) {}
Queue::Queue(Queue&&) noexcept = default;
Queue& Queue::operator=(Queue&&) noexcept = default;
Queue::~Queue() = default;
const std::string& Queue::name() const noexcept { return state_->name; }

Result<Publisher> Queue::producer() {
  auto handle = state_->ring.open_publisher();
  if (!handle) return Error{handle.error().code, "queue '" + state_->name + "': " + handle.error().message};
  return detail::ChannelAccess::publisher(state_, handle->slot);
}

Result<Consumer> Queue::consumer() {
  auto handle = state_->ring.open_reader(shm::ReaderMode::consumer);
  if (!handle) return Error{handle.error().code, "queue '" + state_->name + "': " + handle.error().message};
  return detail::ChannelAccess::reader(state_, *handle);
}

ChannelStats Queue::stats() const { return detail::channel_stats(*state_); }

const char* to_string(ReaderMode mode) noexcept {
  switch (mode) {
    case ReaderMode::block: return "block";
    case ReaderMode::lossy: return "lossy";
    case ReaderMode::bridge: return "bridge";
    case ReaderMode::consumer: return "consumer";
  }
  return "unknown";
}

ChannelStats detail::channel_stats(const ChannelState& state) {
  constexpr auto relaxed = std::memory_order_relaxed;
  const auto& ring = state.ring;
  const auto& c = ring.control();
  const auto config = ring.config();
  ChannelStats s;
  s.kind = config.kind == shm::RingKind::queue ? ObjectKind::queue : ObjectKind::topic;
  s.capacity = config.capacity;
  s.max_message = config.max_message;
  s.acks = config.acks;
  s.max_deliveries = config.max_deliveries;
  s.history = config.history;
  const auto [tail_pos, tail_seq] = ring.tail();
  const auto [head_pos, head_seq] = ring.head();
  s.published = tail_seq;
  s.retained = tail_seq >= head_seq ? tail_seq - head_seq : 0;
  s.used_bytes = tail_pos >= head_pos ? tail_pos - head_pos : 0;
  if (config.kind == shm::RingKind::queue) {
    const auto take_seq = ring.take_cursor().second;
    s.depth = tail_seq >= take_seq ? tail_seq - take_seq : 0;
  }
  s.dead_claims = c.dead_claims.load(relaxed);
  s.bad_records = c.bad_records.load(relaxed);
  s.dead_readers = c.dead_readers.load(relaxed);
  s.dropped_unacked = c.dropped_unacked.load(relaxed);
  for (const auto& p : c.publishers) {
    const std::uint32_t pid = p.pid.load(relaxed);
    if (pid == 0) continue;
    s.publishers.push_back({pid, shm::liveness({pid, p.start_time.load(relaxed)}) == shm::Liveness::alive,
                            p.published.load(relaxed), p.bytes.load(relaxed), p.waits.load(relaxed),
                            p.abandoned.load(relaxed)});
  }
  for (const auto& r : c.readers) {
    const std::uint32_t pid = r.pid.load(relaxed);
    if (pid == 0) continue;
    ReaderStats rs;
    rs.pid = pid;
    rs.alive = shm::liveness({pid, r.start_time.load(relaxed)}) == shm::Liveness::alive;
    const auto mode = static_cast<shm::ReaderMode>(r.mode.load(relaxed));
    rs.mode = mode == shm::ReaderMode::block    ? ReaderMode::block
              : mode == shm::ReaderMode::lossy  ? ReaderMode::lossy
              : mode == shm::ReaderMode::bridge ? ReaderMode::bridge
                                                : ReaderMode::consumer;
    rs.delivered = r.delivered.load(relaxed);
    rs.bytes = r.bytes.load(relaxed);
    rs.missed = r.missed.load(relaxed);
    rs.skipped_bad = r.skipped_bad.load(relaxed);
    rs.redelivered = r.redelivered.load(relaxed);
    rs.dead_lettered = r.dead_lettered.load(relaxed);
    rs.waits = r.waits.load(relaxed);
    const std::uint64_t cursor_seq = r.cursor_seq.load(relaxed);
    if (mode != shm::ReaderMode::consumer) rs.lag = tail_seq >= cursor_seq ? tail_seq - cursor_seq : 0;
    rs.holding = r.hold_pos.load(relaxed) != shm::kNoPosition;
    s.readers.push_back(std::move(rs));
  }
  return s;
}

// ------------------------------------------ colod's (colo/internal/federation.hpp)

namespace internal {

std::uint32_t origin_id(std::string_view node_name) noexcept {
  std::uint32_t hash = 2166136261u;  // FNV-1a, 32 bits
  for (unsigned char c : node_name) {
    hash ^= c;
    hash *= 16777619u;
  }
  return hash == 0 ? 1 : hash;
}

SendStatus publish_relayed(Publisher& publisher, std::uint32_t origin, std::uint64_t origin_seq,
                           std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                           std::uint64_t* sequence) noexcept {
  return detail::ChannelAccess::publish_relayed(publisher, origin, origin_seq, bytes, timeout, sequence);
}

namespace {
std::map<std::uint32_t, std::uint64_t> relayed_high_water_of(const detail::ChannelState& state) {
  std::map<std::uint32_t, std::uint64_t> high;
  state.ring.for_each_relayed([&](std::uint32_t origin, std::uint64_t origin_seq) {
    auto& h = high[origin];
    h = std::max(h, origin_seq);
  });
  return high;
}
}  // namespace

std::map<std::uint32_t, std::uint64_t> relayed_high_water(const Topic& topic) {
  return relayed_high_water_of(*detail::ChannelAccess::state(topic));
}
std::map<std::uint32_t, std::uint64_t> relayed_high_water(const Queue& queue) {
  return relayed_high_water_of(*detail::ChannelAccess::state(queue));
}

Result<Subscriber> subscribe_bridge(Topic& topic, std::optional<std::uint64_t> from_sequence) {
  const auto& state = detail::ChannelAccess::state(topic);
  auto handle = state->ring.open_reader(shm::ReaderMode::bridge, 0, from_sequence);
  if (!handle) return Error{handle.error().code, "topic '" + state->name + "': " + handle.error().message};
  return detail::ChannelAccess::reader(state, *handle);
}

bool wait_published(Reader& reader, std::uint64_t count, std::chrono::nanoseconds timeout) noexcept {
  return detail::ChannelAccess::wait_published(reader, count, timeout);
}

}  // namespace internal

}  // namespace colo
