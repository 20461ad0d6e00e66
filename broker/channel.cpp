#include "colo/channel.hpp"

#include <algorithm>
#include <cstring>

#include "channel_state.hpp"
#include "clock.hpp"
#include "colo/internal/federation.hpp"
#include "colo/internal/links.hpp"
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

MessageView to_message_view(const shm::View& view) noexcept {
  return MessageView{view.data,   view.size,       view.seq,     view.deliveries,
                     view.origin, view.origin_seq, view.metadata, view.metadata_size};
}

}  // namespace

// Process-local halves of the handles; the shared halves are their slots.
struct Publisher::Handle {
  shm::PublisherHandle ring;
  shm::Claim claim;       // the loan in progress (one at a time)
  std::uint64_t claim_id = 0;  // bumped per claim: a Loan or LoanBatch of an earlier one is stale
};

struct Reader::Handle {
  shm::ReaderHandle ring;
  std::vector<shm::View> views;      // what the ring returned for the batch held
  std::vector<MessageView> messages; // the same, as the batch shows them
};

// The handles' insides are the ring's: this is where the ring's results
// become handles, and where colod's operations (colo/internal/federation.hpp)
// reach the ring behind a handle.
struct detail::ChannelAccess {
  static Publisher publisher(std::shared_ptr<ChannelState> state, const shm::PublisherHandle& handle) {
    return Publisher(std::move(state), std::unique_ptr<Publisher::Handle>(new Publisher::Handle{handle, {}, 0}));
  }
  static Reader reader(std::shared_ptr<ChannelState> state, const shm::ReaderHandle& handle) {
    return Reader(std::move(state), std::unique_ptr<Reader::Handle>(new Reader::Handle{handle, {}, {}}));
  }
  static const std::shared_ptr<ChannelState>& state(const Topic& topic) noexcept { return topic.state_; }
  static const std::shared_ptr<ChannelState>& state(const Queue& queue) noexcept { return queue.state_; }

  // Claims `count` records (sizes[i], or `size` each) and waits for space
  // up to the deadline; sets last_status().
  static bool claim(Publisher& publisher, std::uint32_t count, std::uint32_t size, const std::uint32_t* sizes,
                    bool tagged, std::optional<std::uint64_t> deadline) noexcept {
    auto& ring = publisher.state_->ring;
    auto& h = *publisher.handle_;
    ring.finish(h.ring, h.claim);  // a loan still open is given up (one at a time)
    ++h.claim_id;
    auto status = ring.try_claim(h.ring, count, size, h.claim, sizes, tagged);
    if (status == shm::ClaimStatus::full && deadline)
      status = ring.claim_until(h.ring, count, size, *deadline, h.claim, sizes, tagged);
    publisher.last_ = to_send_status(status);
    return status == shm::ClaimStatus::ok;
  }
  static std::optional<Loan> loan(Publisher& publisher, std::uint32_t size, std::optional<std::uint64_t> deadline) noexcept {
    if (!claim(publisher, 1, size, nullptr, false, deadline)) return std::nullopt;
    auto& h = *publisher.handle_;
    return Loan(&publisher, publisher.state_->ring.next_record(h.claim, size), size, h.claim_id);
  }
  static std::optional<LoanBatch> loan_batch(Publisher& publisher, std::uint32_t count, std::uint32_t size,
                                             std::optional<std::uint64_t> deadline) noexcept {
    if (!claim(publisher, count, size, nullptr, false, deadline)) return std::nullopt;
    return LoanBatch(&publisher, publisher.handle_->claim.count, size, publisher.handle_->claim_id);
  }
  static bool current(const Publisher* publisher, std::uint64_t claim) noexcept {
    return publisher != nullptr && publisher->handle_ != nullptr && publisher->handle_->claim_id == claim;
  }
  static bool current(const Loan& loan) noexcept { return current(loan.publisher_, loan.claim_); }
  static bool current(const LoanBatch& batch) noexcept { return current(batch.publisher_, batch.claim_); }
  static std::byte* batch_data(const LoanBatch& batch, std::uint32_t i) noexcept {
    auto& h = *batch.publisher_->handle_;
    return batch.publisher_->state_->ring.payload_at(h.claim, i, batch.message_size_);
  }
  static void commit(Publisher& publisher, std::uint32_t upto, std::uint32_t size) noexcept {
    auto& ring = publisher.state_->ring;
    auto& h = *publisher.handle_;
    while (h.claim.filled < upto && ring.next_record(h.claim, size) != nullptr) {
    }
    ring.commit(h.ring, h.claim);
    if (h.claim.published == h.claim.count) ring.finish(h.ring, h.claim);
  }
  static void finish(Publisher& publisher) noexcept {
    publisher.state_->ring.finish(publisher.handle_->ring, publisher.handle_->claim);
  }

  // Reads up to `max` messages; a queue's messages past their delivery
  // limit go to NAME.dlq first and are not returned.
  static MessageBatch receive(Reader& reader, std::size_t max, std::optional<std::uint64_t> deadline) noexcept;

  static SendStatus publish_relayed(Publisher& publisher, std::uint32_t origin, std::uint64_t origin_seq,
                                    std::span<const std::byte> bytes, std::chrono::nanoseconds timeout,
                                    std::uint64_t* sequence) noexcept {
    auto& last = publisher.last_;
    if (bytes.size() > UINT32_MAX) return last = SendStatus::too_large;
    if (origin == 0) return last = SendStatus::corrupt;
    const auto size = static_cast<std::uint32_t>(bytes.size());
    if (!claim(publisher, 1, size, nullptr, true, deadline_after(timeout))) return last;
    auto& ring = publisher.state_->ring;
    auto& h = *publisher.handle_;
    const shm::OriginRef tag{origin, origin_seq};
    std::byte* data = ring.next_record(h.claim, size, &tag);
    if (size != 0) std::memcpy(data, bytes.data(), size);
    if (sequence != nullptr) *sequence = h.claim.seq;
    ring.commit(h.ring, h.claim);
    ring.finish(h.ring, h.claim);
    return SendStatus::ok;
  }
  // colo/internal/links.hpp: runs of messages of one kind (tagged or not)
  // in one claim each, of up to 64 messages (their sizes on the stack).
  static std::size_t publish_annotated(Publisher& publisher, std::span<const internal::AnnotatedMessage> messages,
                                       std::chrono::nanoseconds timeout, std::uint64_t* sequences) noexcept {
    constexpr std::size_t kChunk = 64;
    auto& ring = publisher.state_->ring;
    auto& h = *publisher.handle_;
    const std::uint64_t max_message = ring.config().max_message;
    std::optional<std::uint64_t> deadline;
    std::size_t done = 0;
    publisher.last_ = SendStatus::ok;
    while (done < messages.size()) {
      std::uint32_t sizes[kChunk];
      const bool tagged = messages[done].origin != 0;
      std::size_t n = 0;
      while (n < kChunk && done + n < messages.size() && (messages[done + n].origin != 0) == tagged) {
        const auto& m = messages[done + n];
        const std::uint64_t size = internal::annotated_size(m.metadata.size(), m.payload.size());
        if (size > max_message) break;
        sizes[n++] = static_cast<std::uint32_t>(size);
      }
      if (n == 0) return (publisher.last_ = SendStatus::too_large, done);
      bool claimed = claim(publisher, static_cast<std::uint32_t>(n), 0, sizes, tagged, std::nullopt);
      if (!claimed && publisher.last_ == SendStatus::timed_out) {
        if (!deadline) deadline = deadline_after(timeout);
        claimed = claim(publisher, static_cast<std::uint32_t>(n), 0, sizes, tagged, deadline);
      }
      if (!claimed) return done;
      for (std::uint32_t i = 0; i < h.claim.count; ++i) {
        const auto& m = messages[done + i];
        const shm::OriginRef tag{m.origin, m.origin_seq};
        std::byte* data = ring.next_record(h.claim, sizes[i], tagged ? &tag : nullptr, m.metadata);
        if (!m.payload.empty()) std::memcpy(data, m.payload.data(), m.payload.size());
        if (sequences != nullptr) sequences[done + i] = h.claim.seq + i;
      }
      ring.commit(h.ring, h.claim);
      done += h.claim.count;
      ring.finish(h.ring, h.claim);
    }
    return done;
  }
  static internal::Backlog backlog(const Reader& reader) noexcept {
    const auto [tail_pos, tail_seq] = reader.state_->ring.tail();
    const auto& h = reader.handle_->ring;
    return {tail_seq > h.seq ? tail_seq - h.seq : 0, tail_pos > h.pos ? tail_pos - h.pos : 0};
  }
  static bool wait_published(Reader& reader, std::uint64_t count, std::chrono::nanoseconds timeout) noexcept {
    return reader.state_->ring.wait_published(reader.handle_->ring, count, deadline_after(timeout));
  }
  static std::optional<internal::PublishWait> arm_publish_wait(Reader& reader, std::uint64_t count) noexcept {
    const auto sleep = reader.state_->ring.arm_publish_wait(reader.handle_->ring, count);
    if (!sleep) return std::nullopt;
    return internal::PublishWait{sleep->word, sleep->value};
  }
  static void end_publish_wait(Reader& reader) noexcept { reader.state_->ring.end_publish_wait(reader.handle_->ring); }
};

// --------------------------------------------------------------------- Loan

// A Loan or LoanBatch acts only while its claim is the publisher's current
// one: a stale one (the publisher loaned again since) does nothing.
void Loan::commit() noexcept {
  if (detail::ChannelAccess::current(*this)) detail::ChannelAccess::commit(*publisher_, 1, size_);
  publisher_ = nullptr;
}

void Loan::abandon() noexcept {
  if (detail::ChannelAccess::current(*this)) detail::ChannelAccess::finish(*publisher_);
  publisher_ = nullptr;
}

std::span<std::byte> LoanBatch::operator[](std::uint32_t i) const noexcept {
  if (i >= count_ || !detail::ChannelAccess::current(*this)) return {};
  return {detail::ChannelAccess::batch_data(*this, i), message_size_};
}

void LoanBatch::commit(std::uint32_t count) noexcept {
  if (count <= published_ || !detail::ChannelAccess::current(*this)) return;
  count = std::min(count, count_);
  detail::ChannelAccess::commit(*publisher_, count, message_size_);
  published_ = count;
  if (published_ == count_) publisher_ = nullptr;  // the claim is finished
}

void LoanBatch::abandon() noexcept {
  if (detail::ChannelAccess::current(*this)) detail::ChannelAccess::finish(*publisher_);
  publisher_ = nullptr;
}

// ---------------------------------------------------------------- Publisher

Publisher::Publisher(std::shared_ptr<detail::ChannelState> state, std::unique_ptr<Handle> handle) noexcept
    : state_(std::move(state)), handle_(std::move(handle)) {}

Publisher::Publisher(Publisher&& other) noexcept
    : state_(std::move(other.state_)), handle_(std::move(other.handle_)), last_(other.last_) {}

Publisher::~Publisher() {
  if (state_ != nullptr && handle_ != nullptr) {
    state_->ring.finish(handle_->ring, handle_->claim);
    state_->ring.close_publisher(handle_->ring);
  }
}

std::optional<Loan> Publisher::try_loan(std::uint32_t size) noexcept {
  return detail::ChannelAccess::loan(*this, size, std::nullopt);
}

std::optional<Loan> Publisher::loan_for(std::uint32_t size, std::chrono::nanoseconds timeout) noexcept {
  // The clock is read only if there is no space at once.
  auto loan = detail::ChannelAccess::loan(*this, size, std::nullopt);
  if (loan || last_ != SendStatus::timed_out) return loan;
  return detail::ChannelAccess::loan(*this, size, deadline_after(timeout));
}

std::optional<LoanBatch> Publisher::try_loan_batch(std::uint32_t count, std::uint32_t size) noexcept {
  return detail::ChannelAccess::loan_batch(*this, count, size, std::nullopt);
}

std::optional<LoanBatch> Publisher::loan_batch_for(std::uint32_t count, std::uint32_t size,
                                                   std::chrono::nanoseconds timeout) noexcept {
  auto batch = detail::ChannelAccess::loan_batch(*this, count, size, std::nullopt);
  if (batch || last_ != SendStatus::timed_out) return batch;
  return detail::ChannelAccess::loan_batch(*this, count, size, deadline_after(timeout));
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

std::size_t Publisher::publish_batch(std::span<const std::span<const std::byte>> messages,
                                     std::chrono::nanoseconds timeout) noexcept {
  // Claims of up to 64 messages (the sizes go on the stack): one atomic step
  // per 64 at most.
  constexpr std::size_t kChunk = 64;
  std::optional<std::uint64_t> deadline;
  std::size_t done = 0;
  auto& ring = state_->ring;
  auto& h = *handle_;
  last_ = SendStatus::ok;
  while (done < messages.size()) {
    std::uint32_t sizes[kChunk];
    const std::size_t n = std::min(kChunk, messages.size() - done);
    for (std::size_t i = 0; i < n; ++i) {
      if (messages[done + i].size() > UINT32_MAX) {
        last_ = SendStatus::too_large;
        return done;
      }
      sizes[i] = static_cast<std::uint32_t>(messages[done + i].size());
    }
    if (!detail::ChannelAccess::claim(*this, static_cast<std::uint32_t>(n), 0, sizes, false, std::nullopt)) {
      if (last_ != SendStatus::timed_out) return done;
      if (!deadline) deadline = deadline_after(timeout);
      if (!detail::ChannelAccess::claim(*this, static_cast<std::uint32_t>(n), 0, sizes, false, deadline)) return done;
    }
    for (std::uint32_t i = 0; i < h.claim.count; ++i) {
      const auto& m = messages[done + i];
      std::byte* data = ring.next_record(h.claim, sizes[i]);
      if (!m.empty()) std::memcpy(data, m.data(), m.size());
    }
    ring.commit(h.ring, h.claim);
    done += h.claim.count;
    ring.finish(h.ring, h.claim);
  }
  return done;
}

// ------------------------------------------------------------ Reader/Message

Reader::Reader(std::shared_ptr<detail::ChannelState> state, std::unique_ptr<Handle> handle) noexcept
    : state_(std::move(state)), handle_(std::move(handle)) {}

Reader::Reader(Reader&& other) noexcept : state_(std::move(other.state_)), handle_(std::move(other.handle_)) {}

Reader::~Reader() {
  if (state_ != nullptr && handle_ != nullptr) {
    state_->ring.release(handle_->ring);
    state_->ring.close_reader(handle_->ring);
  }
}

std::uint64_t Reader::missed() const noexcept {
  return state_->ring.control().readers[handle_->ring.slot].missed.load(std::memory_order_relaxed);
}

void Reader::release() noexcept { state_->ring.release(handle_->ring); }

// A message past its delivery limit goes to NAME.dlq (copied there, then
// acknowledged with its batch). If the dead-letter queue has no room, the
// message is delivered as is (its deliveries() tells) rather than lost.
static bool dead_letter(detail::ChannelState& state, const shm::View& view) noexcept {
  if (!view.dead_letter || state.dead_letters == nullptr) return false;
  auto& dlq = state.dead_letters->ring;
  auto publisher = dlq.open_publisher();
  if (!publisher) return false;
  shm::Claim claim;
  const bool moved = dlq.claim_until(*publisher, 1, view.size, shm::monotonic_ns() + 100'000'000, claim) ==
                     shm::ClaimStatus::ok;
  if (moved) {
    std::byte* data = dlq.next_record(claim, view.size);
    if (view.size != 0) std::memcpy(data, view.data, view.size);
    dlq.commit(*publisher, claim);
    dlq.finish(*publisher, claim);
  }
  dlq.close_publisher(*publisher);
  return moved;
}

MessageBatch detail::ChannelAccess::receive(Reader& reader, std::size_t max, std::optional<std::uint64_t> deadline) noexcept {
  auto& ring = reader.state_->ring;
  auto& h = *reader.handle_;
  ring.release(h.ring);  // a batch still held is released (one at a time)
  max = std::clamp<std::size_t>(max, 1, shm::kMaxBatch);
  if (h.views.size() < max) {
    h.views.resize(max);
    h.messages.resize(max);
  }
  const bool acks = reader.state_->dead_letters != nullptr;
  for (int attempt = 0; attempt < 64; ++attempt) {
    shm::ReadStatus status;
    const auto want = static_cast<std::uint32_t>(max);
    const std::uint32_t n = deadline ? ring.read_until(h.ring, *deadline, h.views.data(), want, status)
                                     : ring.try_read(h.ring, h.views.data(), want, status);
    if (n == 0) return MessageBatch();
    std::size_t kept = 0;
    for (std::uint32_t i = 0; i < n; ++i) {
      if (acks && h.views[i].dead_letter && dead_letter(*reader.state_, h.views[i])) {
        reader.state_->ring.control().readers[h.ring.slot].dead_lettered.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      h.messages[kept++] = to_message_view(h.views[i]);
    }
    if (kept > 0) return MessageBatch(&reader, h.messages.data(), kept);
    ring.release(h.ring);  // all of them went to NAME.dlq: acknowledged; read again
  }
  return MessageBatch();
}

std::optional<Message> Reader::try_receive() noexcept {
  auto batch = detail::ChannelAccess::receive(*this, 1, std::nullopt);
  if (batch.empty()) return std::nullopt;
  Message message(this, batch[0]);
  batch.reader_ = nullptr;  // the hold passes to the Message
  return message;
}

std::optional<Message> Reader::receive_for(std::chrono::nanoseconds timeout) noexcept {
  // The clock is read only if nothing is there at once.
  auto batch = detail::ChannelAccess::receive(*this, 1, std::nullopt);
  if (batch.empty()) batch = detail::ChannelAccess::receive(*this, 1, deadline_after(timeout));
  if (batch.empty()) return std::nullopt;
  Message message(this, batch[0]);
  batch.reader_ = nullptr;
  return message;
}

MessageBatch Reader::try_receive_batch(std::size_t max) noexcept {
  return detail::ChannelAccess::receive(*this, max, std::nullopt);
}

MessageBatch Reader::receive_batch_for(std::size_t max, std::chrono::nanoseconds timeout) noexcept {
  auto batch = detail::ChannelAccess::receive(*this, max, std::nullopt);
  if (!batch.empty()) return batch;
  return detail::ChannelAccess::receive(*this, max, deadline_after(timeout));
}

void MessageBatch::release() noexcept {
  if (reader_ == nullptr) return;
  reader_->release();
  reader_ = nullptr;
  count_ = 0;
}

MessageBatch& MessageBatch::operator=(MessageBatch&& other) noexcept {
  if (this != &other) {
    release();
    reader_ = other.reader_;
    views_ = other.views_;
    count_ = other.count_;
    other.reader_ = nullptr;
    other.count_ = 0;
  }
  return *this;
}

Message::Message(Message&& other) noexcept
    : reader_(other.reader_), data_(other.data_), size_(other.size_), seq_(other.seq_),
      deliveries_(other.deliveries_), origin_(other.origin_), origin_seq_(other.origin_seq_), meta_(other.meta_),
      meta_size_(other.meta_size_) {
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
    origin_ = other.origin_;
    origin_seq_ = other.origin_seq_;
    meta_ = other.meta_;
    meta_size_ = other.meta_size_;
    other.reader_ = nullptr;
  }
  return *this;
}

void Message::release() noexcept {
  if (reader_ == nullptr) return;
  reader_->release();
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
  return detail::ChannelAccess::publisher(state_, *handle);
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
  return detail::ChannelAccess::publisher(state_, *handle);
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
    case ReaderMode::tap: return "tap";
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
  s.exclusive_publisher = config.exclusive;
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
  s.fenced_commits = c.fenced_commits.load(relaxed) != 0;
  // Shared memory is untrusted: a slot is shown only if its words are possible.
  constexpr std::uint32_t kMaxPid = 4'194'304;  // PID_MAX_LIMIT on 64-bit Linux
  for (const auto& p : c.publishers) {
    const std::uint32_t pid = p.pid.load(relaxed);
    if (pid == 0) continue;
    if (pid > kMaxPid) {
      ++s.damaged_slots;
      continue;
    }
    s.publishers.push_back({pid, shm::liveness({pid, p.start_time.load(relaxed)}) == shm::Liveness::alive,
                            p.published.load(relaxed), p.bytes.load(relaxed), p.waits.load(relaxed),
                            p.abandoned.load(relaxed), p.batches.load(relaxed)});
  }
  for (const auto& r : c.readers) {
    const std::uint32_t pid = r.pid.load(relaxed);
    if (pid == 0) continue;
    const std::uint32_t mode_word = r.mode.load(relaxed);
    const std::uint64_t cursor_seq = r.cursor_seq.load(relaxed);
    const bool cursor_reader = mode_word != static_cast<std::uint32_t>(shm::ReaderMode::consumer);
    if (pid > kMaxPid || mode_word < static_cast<std::uint32_t>(shm::ReaderMode::block) ||
        mode_word > static_cast<std::uint32_t>(shm::ReaderMode::block_untagged) ||
        (cursor_reader && cursor_seq > tail_seq)) {
      ++s.damaged_slots;
      continue;
    }
    ReaderStats rs;
    rs.pid = pid;
    rs.alive = shm::liveness({pid, r.start_time.load(relaxed)}) == shm::Liveness::alive;
    const auto mode = static_cast<shm::ReaderMode>(mode_word);
    const bool queue = config.kind == shm::RingKind::queue;  // a cursor reader of a queue is a tap
    rs.mode = mode == shm::ReaderMode::block            ? (queue ? ReaderMode::tap : ReaderMode::block)
              : mode == shm::ReaderMode::lossy          ? ReaderMode::lossy
              : mode == shm::ReaderMode::block_untagged ? ReaderMode::bridge
                                                        : ReaderMode::consumer;
    rs.delivered = r.delivered.load(relaxed);
    rs.bytes = r.bytes.load(relaxed);
    rs.missed = r.missed.load(relaxed);
    rs.skipped_bad = r.skipped_bad.load(relaxed);
    rs.redelivered = r.redelivered.load(relaxed);
    rs.dead_lettered = r.dead_lettered.load(relaxed);
    rs.waits = r.waits.load(relaxed);
    rs.batches = r.batches.load(relaxed);
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
  state.ring.for_each_tagged([&](std::uint32_t origin, std::uint64_t origin_seq) {
    auto& h = high[origin];
    h = std::max(h, origin_seq);
  });
  return high;
}
std::uint64_t relayed_high_water_of(const detail::ChannelState& state, std::uint32_t origin, std::uint64_t at_most) {
  std::uint64_t high = 0;
  state.ring.for_each_tagged([&](std::uint32_t o, std::uint64_t origin_seq) {
    if (o == origin && origin_seq <= at_most) high = std::max(high, origin_seq);
  });
  return high;
}
}  // namespace

std::uint64_t relayed_high_water(const Topic& topic, std::uint32_t origin, std::uint64_t at_most) {
  return relayed_high_water_of(*detail::ChannelAccess::state(topic), origin, at_most);
}
std::uint64_t relayed_high_water(const Queue& queue, std::uint32_t origin, std::uint64_t at_most) {
  return relayed_high_water_of(*detail::ChannelAccess::state(queue), origin, at_most);
}
std::map<std::uint32_t, std::uint64_t> relayed_high_water(const Topic& topic) {
  return relayed_high_water_of(*detail::ChannelAccess::state(topic));
}
std::map<std::uint32_t, std::uint64_t> relayed_high_water(const Queue& queue) {
  return relayed_high_water_of(*detail::ChannelAccess::state(queue));
}

Result<Subscriber> subscribe_bridge(Topic& topic, std::optional<std::uint64_t> from_sequence) {
  const auto& state = detail::ChannelAccess::state(topic);
  auto handle = state->ring.open_reader(shm::ReaderMode::block_untagged, 0, from_sequence);
  if (!handle) return Error{handle.error().code, "topic '" + state->name + "': " + handle.error().message};
  return detail::ChannelAccess::reader(state, *handle);
}

bool wait_published(Reader& reader, std::uint64_t count, std::chrono::nanoseconds timeout) noexcept {
  return detail::ChannelAccess::wait_published(reader, count, timeout);
}

std::optional<PublishWait> arm_publish_wait(Reader& reader, std::uint64_t count) noexcept {
  return detail::ChannelAccess::arm_publish_wait(reader, count);
}

void end_publish_wait(Reader& reader) noexcept { detail::ChannelAccess::end_publish_wait(reader); }

// ------------------------------------------------ links (colo/internal/links.hpp)

Result<Reader> subscribe_tap(Queue& queue, std::optional<std::uint64_t> from_sequence) {
  const auto& state = detail::ChannelAccess::state(queue);
  auto handle = state->ring.open_reader(shm::ReaderMode::block, 0, from_sequence);
  if (!handle) return Error{handle.error().code, "queue '" + state->name + "': " + handle.error().message};
  return detail::ChannelAccess::reader(state, *handle);
}

std::uint64_t annotated_size(std::size_t metadata_bytes, std::size_t payload_bytes) noexcept {
  if (metadata_bytes > UINT32_MAX - 64) return UINT64_MAX;
  return (metadata_bytes == 0 ? 0 : shm::metadata_block_size(static_cast<std::uint32_t>(metadata_bytes))) +
         std::uint64_t{payload_bytes};
}

std::size_t publish_annotated(Publisher& publisher, std::span<const AnnotatedMessage> messages,
                              std::chrono::nanoseconds timeout, std::uint64_t* sequences) noexcept {
  return detail::ChannelAccess::publish_annotated(publisher, messages, timeout, sequences);
}

namespace {
void for_each_metadata_of(const detail::ChannelState& state, const MetadataVisitor& fn) {
  state.ring.for_each_metadata(
      [&](std::uint32_t origin, std::uint64_t origin_seq, std::span<const std::byte> metadata) {
        fn(origin, origin_seq, metadata);
      });
}
}  // namespace

void for_each_metadata(const Topic& topic, const MetadataVisitor& fn) {
  for_each_metadata_of(*detail::ChannelAccess::state(topic), fn);
}
void for_each_metadata(const Queue& queue, const MetadataVisitor& fn) {
  for_each_metadata_of(*detail::ChannelAccess::state(queue), fn);
}

std::uint64_t released_below(const Queue& queue) noexcept {
  const auto& ring = detail::ChannelAccess::state(queue)->ring;
  // take first, then the holds: a consumer holds before it moves take, so
  // a range it is taking is seen either way (as in the ring's reclaim).
  std::uint64_t below = ring.take_cursor().second;
  for (const auto& r : ring.control().readers) {
    if (r.pid.load(std::memory_order_seq_cst) == 0 || r.mode.load(std::memory_order_relaxed) !=
                                                           static_cast<std::uint32_t>(shm::ReaderMode::consumer))
      continue;
    if (r.hold_pos.load(std::memory_order_seq_cst) == shm::kNoPosition) continue;
    below = std::min(below, r.hold_seq.load(std::memory_order_relaxed));
  }
  return below;
}

std::uint64_t published(const Queue& queue) noexcept {
  return detail::ChannelAccess::state(queue)->ring.tail().second;
}

Backlog backlog(const Reader& reader) noexcept { return detail::ChannelAccess::backlog(reader); }

Backlog queued(const Queue& queue) noexcept {
  const auto& ring = detail::ChannelAccess::state(queue)->ring;
  const auto [take_pos, take_seq] = ring.take_cursor();
  const auto [tail_pos, tail_seq] = ring.tail();
  return {tail_seq > take_seq ? tail_seq - take_seq : 0, tail_pos > take_pos ? tail_pos - take_pos : 0};
}

}  // namespace internal

}  // namespace colo
