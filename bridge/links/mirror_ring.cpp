// bridge/links/mirror_ring.cpp — see mirror_ring.hpp.
#include "mirror_ring.hpp"

#include <algorithm>
#include <charconv>

namespace colo::bridge {
namespace {

constexpr std::size_t kReadBatch = 1024;    // messages read from the ring at once
constexpr std::size_t kRetainBatch = 4096;  // messages retain moves over at once
constexpr std::uint32_t kBusyReads = 200;   // empty reads 1 ms apart before they go 5 ms apart
constexpr int kRetainSteps = 64;            // batches advance_retain() moves over at most per call
constexpr std::size_t kMaxDigits = 20;      // of a 64-bit number
constexpr std::size_t kFirstWindowCapacity = 1024;  // the window's first allocation (in flight messages)

std::optional<std::uint64_t> number(std::string_view s) noexcept {
  std::uint64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

}  // namespace

// ------------------------------------------------------------------ MessageId

MessageId::MessageId(std::string_view origin, std::string_view object, std::uint64_t epoch) {
  text_.append(origin).append(1, ':').append(object).append(1, ':').append(std::to_string(epoch)).append(1, ':');
  prefix_ = text_.size();
  text_.resize(prefix_ + kMaxDigits);
}

std::string_view MessageId::of(std::uint64_t seq) noexcept {
  char* digits = text_.data() + prefix_;
  const auto end = std::to_chars(digits, digits + kMaxDigits, seq).ptr;
  return {text_.data(), static_cast<std::size_t>(end - text_.data())};
}

std::optional<MessageId::Parts> MessageId::parse(std::string_view id) noexcept {
  const auto first = id.find(':');
  if (first == std::string_view::npos) return std::nullopt;
  const auto last = id.rfind(':');
  if (last == first) return std::nullopt;
  const auto third = id.rfind(':', last - 1);
  if (third == first) return std::nullopt;  // three parts only
  const auto epoch = number(id.substr(third + 1, last - third - 1));
  const auto seq = number(id.substr(last + 1));
  if (!epoch || !seq || first == 0 || third == first + 1) return std::nullopt;
  return Parts{id.substr(0, first), id.substr(first + 1, third - first - 1), *epoch, *seq};
}

// ------------------------------------------------------------------ readers

Result<void> MirrorRing::hold(LinkObject& object) {
  if (lossy_ || retain_) return Ok{};
  auto retain = object.topic ? object.topic->subscribe(SubscribeOptions{Backpressure::block, std::nullopt, 0})
                             : internal::subscribe_tap(*object.queue, 0);
  if (!retain) return std::move(retain).error();
  retain_.emplace(std::move(retain).value());
  retain_next_ = 0;
  return Ok{};
}

Result<std::uint64_t> MirrorRing::open_ahead(LinkObject& object, std::uint64_t from) {
  auto ahead = object.queue ? internal::subscribe_tap(*object.queue, from)
                            : object.topic->subscribe(SubscribeOptions{
                                  lossy_ ? Backpressure::lossy : Backpressure::block, std::nullopt, from});
  if (!ahead) return std::move(ahead).error();
  ahead_.emplace(std::move(ahead).value());
  next_in_batch_ = 0;
  handled_below_ = from;
  missed_seen_ = ahead_->missed();
  empty_reads_ = 0;
  return missed_seen_;
}

bool MirrorRing::read(Lapped& lapped) {
  lapped = {};
  if (current() != nullptr) return true;
  batch_.release();
  next_in_batch_ = 0;
  if (!ahead_) return false;
  batch_ = ahead_->try_receive_batch(kReadBatch);
  if (batch_.empty()) {
    empty_reads_ = std::min<std::uint32_t>(empty_reads_ + 1, kBusyReads + 1);
    return false;
  }
  empty_reads_ = 0;
  const std::uint64_t missed = ahead_->missed();
  if (missed != missed_seen_) {
    // Lossy: lapped; the messages just before this batch are gone.
    const std::uint64_t gone = missed - missed_seen_;
    const std::uint64_t first = batch_[0].sequence();
    lapped = {first - std::min(gone, first), gone};
    missed_seen_ = missed;
  }
  return true;
}

std::chrono::milliseconds MirrorRing::idle_wait() const noexcept {
  return std::chrono::milliseconds(empty_reads_ > kBusyReads ? 5 : 1);
}

// ------------------------------------------------------------------ the window

void MirrorRing::sent(std::uint64_t seq, std::uint32_t bytes) {
  if (window_.full()) window_.set_capacity(std::max<std::size_t>(kFirstWindowCapacity, 2 * window_.capacity()));
  window_.push_back({seq, bytes, false, false});
  window_bytes_ += bytes;
  ++pending_;
}

std::optional<std::size_t> MirrorRing::find(std::uint64_t seq) const noexcept {
  if (first_pending_ < window_.size() && window_[first_pending_].seq == seq) return first_pending_;
  const auto it = std::lower_bound(window_.begin(), window_.end(), seq,
                                   [](const InFlight& f, std::uint64_t s) { return f.seq < s; });
  if (it == window_.end() || it->seq != seq) return std::nullopt;
  return static_cast<std::size_t>(it - window_.begin());
}

std::size_t MirrorRing::done(std::size_t index) noexcept {
  InFlight& f = window_[index];
  if (!f.done) {
    f.done = true;
    --pending_;
  }
  while (first_pending_ < window_.size() && window_[first_pending_].done) ++first_pending_;
  std::size_t left = 0;
  while (!window_.empty() && window_.front().done) {
    window_bytes_ -= window_.front().bytes;
    window_.pop_front();
    ++left;
  }
  first_pending_ -= std::min(first_pending_, left);
  return left;
}

void MirrorRing::forget_window() noexcept {
  window_.clear();
  window_bytes_ = 0;
  pending_ = 0;
  first_pending_ = 0;
}

void MirrorRing::advance_retain() {
  if (!retain_) return;
  const std::uint64_t target = confirmed_below();
  for (int step = 0; step < kRetainSteps; ++step) {
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

internal::Backlog MirrorRing::lag() const noexcept {
  if (retain_) return internal::backlog(*retain_);
  internal::Backlog lag = ahead_ ? internal::backlog(*ahead_) : internal::Backlog{};
  lag.messages += pending_;
  lag.bytes += window_bytes_;
  return lag;
}

void MirrorRing::close_ahead() noexcept {
  batch_.release();
  next_in_batch_ = 0;
  ahead_.reset();
  forget_window();
}

void MirrorRing::close() noexcept {
  close_ahead();
  retain_batch_.release();
  retain_.reset();
}

}  // namespace colo::bridge
