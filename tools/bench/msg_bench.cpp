// tools/bench/msg_bench.cpp — the message-passing benchmark (see msg_bench.hpp).
//
// Processes of one cell and what they share (CellShared, anonymous shared
// memory mapped before fork):
//
//   parent                   phase      senders                      receivers
//   open ends                kOpening   open_sender, opened=1        open_receiver, opened=1
//   all opened?  ──────────▶ kWarmup    send warm-up messages until  mark warm_from[sender]
//                                       every receiver marked me;
//                                       then warm=1
//   all warm? connected() ─▶ kQuiet     (idle)                       drain warm-ups
//   20 ms without warm-ups,
//   t0 = now + 5 ms ──────▶ kRun       wait for t0, send data,      count, check, time
//   (throughput: at t0+S,               sent=n, done=1
//    stop_sending=1)
//   all senders done:
//   expected=sum(sent),
//   senders_done=1                                                   stop when all expected
//                                                                    arrived (or none for 1 s),
//                                                                    done=1, exit
//   all receivers done ──▶  kFinish    close, exit
//   any failure / overrun ▶ kAbort     everyone stops; stragglers are SIGKILLed
//
// Senders keep their ends open until kFinish, so nothing still buffered in a
// transport is lost by an early close.
//
// Message layout (every message, whatever its size; sizes are multiples of 8):
//
//    bit 63 62 61      56 55                                   0
//       +-----+----------+--------------------------------------+
//   w0  |kind | sender   | value: sequence (throughput) or       |
//       |     |          | intended send time, ns after t0       |
//       +-----+----------+--------------------------------------+
//   w1 .. w(n-1):  (w0 ^ kSalt) + k * kStep      — checked through their sum
//
// Word 0 is all an 8-byte message has: it carries the timestamp, so latency
// is measured at every size. Each sender's values increase from one message
// to the next, and every receiver checks that they do: a message repeated or
// overtaken (a bug of the channel) is counted even when a loss elsewhere
// would make the totals match.
#include "msg_bench.hpp"

#include <sched.h>  // sched_setaffinity, sched_yield
#include <unistd.h>

#include <nlohmann/json.hpp>  // --json

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>  // getenv (TMPDIR)
#include <cstring>
#include <ctime>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "colo/internal/clock.hpp"
#include "colo/internal/text.hpp"  // errno_text
#include "app.hpp"        // number_in
#include "format.hpp"     // machine_json, machine_line, human_duration_ns
#include "processes.hpp"  // Children, SharedBlock: forked processes with bounded waits

namespace colo::bench {
namespace {

using cli::ChildExit;
using cli::Children;
using cli::SharedBlock;
using cli::SteadyClock;

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto acquire = std::memory_order_acquire;
constexpr auto release = std::memory_order_release;

constexpr int kMaxEnds = 16;                  // senders or receivers in one cell
constexpr Nanos kRetryStep = std::chrono::milliseconds(100);  // a blocked send re-checks for abort this often
constexpr Nanos kBlockingWait = std::chrono::milliseconds(20);  // blocking readers' receive timeout
constexpr std::int64_t kDrainNs = 1'000'000'000;  // receivers give up 1 s after the last message
constexpr std::int64_t kQuietNs = 20'000'000;     // no warm-up message for this long: drained
constexpr std::int64_t kStartDelayNs = 5'000'000; // t0 lies this far after the order to start
constexpr std::size_t kMinDepth = 16;
constexpr std::size_t kMaxDepth = 4096;

// Signed: latencies and deadlines here are differences that may be negative.
std::int64_t now_ns() noexcept { return static_cast<std::int64_t>(internal::monotonic_ns()); }

void sleep_ns(std::int64_t ns) {
  if (ns <= 0) return;
  timespec ts{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// Waits until CLOCK_MONOTONIC reaches `target`: sleeps while it is far, then
// spins, yielding so that a library's helper thread on this CPU can run.
void wait_until_ns(std::int64_t target) {
  for (;;) {
    const std::int64_t now = now_ns();
    if (now >= target) return;
    if (target - now > 200'000) sleep_ns(target - now - 100'000);
    else ::sched_yield();
  }
}

// --------------------------------------------------------------- histogram

// Log-linear buckets in the manner of HdrHistogram: values below 256 ns are
// exact; above, each power of two is split into 128 buckets, so a reported
// percentile is at most 1/128 (0.8%) above the true sample. Plain data, one
// writer: it lives in the shared block and the parent reads it after the
// receiver's release-store of `done`.
class LatencyHistogram {
 public:
  static constexpr int kSubBits = 8;
  static constexpr int kMaxShift = 34;  // up to ~2^42 ns (73 min); beyond lands in the last bucket
  static constexpr std::size_t kBuckets = (std::size_t{1} << kSubBits) + kMaxShift * (std::size_t{1} << (kSubBits - 1));

  void record(std::uint64_t ns) noexcept {
    ++counts_[index(ns)];
    ++count_;
    sum_ += ns;
    if (ns < min_ || count_ == 1) min_ = ns;
    if (ns > max_) max_ = ns;
  }
  void merge(const LatencyHistogram& other) noexcept {
    if (other.count_ == 0) return;
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    if (count_ == 0 || other.min_ < min_) min_ = other.min_;
    max_ = std::max(max_, other.max_);
    count_ += other.count_;
    sum_ += other.sum_;
  }
  std::uint64_t count() const noexcept { return count_; }
  std::uint64_t min() const noexcept { return min_; }
  std::uint64_t max() const noexcept { return max_; }
  double mean() const noexcept { return count_ == 0 ? 0 : static_cast<double>(sum_) / static_cast<double>(count_); }

  // The smallest bucket bound at or below which `percent` of the samples lie
  // (the bucket's highest value, never above the true maximum).
  std::uint64_t percentile(double percent) const noexcept {
    if (count_ == 0) return 0;
    if (percent >= 100) return max_;
    auto rank = static_cast<std::uint64_t>(std::ceil(percent / 100.0 * static_cast<double>(count_)));
    rank = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return std::min(highest(i), max_);
    }
    return max_;
  }

 private:
  static std::size_t index(std::uint64_t v) noexcept {
    constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;
    constexpr std::uint64_t kHalf = kSub / 2;
    if (v < kSub) return static_cast<std::size_t>(v);
    const int msb = 63 - __builtin_clzll(v);
    int shift = msb - (kSubBits - 1);  // >= 1: keeps the top kSubBits bits
    if (shift > kMaxShift) return kBuckets - 1;
    const std::uint64_t mantissa = v >> shift;  // in [kHalf, kSub)
    return static_cast<std::size_t>(kSub + static_cast<std::uint64_t>(shift - 1) * kHalf + (mantissa - kHalf));
  }
  static std::uint64_t highest(std::size_t i) noexcept {
    constexpr std::uint64_t kSub = std::uint64_t{1} << kSubBits;
    constexpr std::uint64_t kHalf = kSub / 2;
    if (i < kSub) return i;
    const std::uint64_t shift = (i - kSub) / kHalf + 1;
    const std::uint64_t mantissa = (i - kSub) % kHalf + kHalf;
    return ((mantissa + 1) << shift) - 1;
  }

  std::uint64_t counts_[kBuckets] = {};
  std::uint64_t count_ = 0;
  std::uint64_t sum_ = 0;
  std::uint64_t min_ = 0;
  std::uint64_t max_ = 0;
};

// ---------------------------------------------------------------- messages

enum class Kind : std::uint64_t { data = 0, warmup = 1 };
constexpr std::uint64_t kValueMask = (std::uint64_t{1} << 56) - 1;
constexpr std::uint64_t kSalt = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kStep = 0xD1B54A32D192ED03ull;
static_assert(kMaxEnds <= 64, "the sender index has 6 bits in word 0");

constexpr std::uint64_t word0(Kind kind, int sender, std::uint64_t value) noexcept {
  return (static_cast<std::uint64_t>(kind) << 62) | (static_cast<std::uint64_t>(sender) << 56) | (value & kValueMask);
}

// Writes every byte of a `size`-byte message (size: a multiple of 8, >= 8).
void fill_message(std::byte* p, std::size_t size, std::uint64_t w0) noexcept {
  std::memcpy(p, &w0, sizeof w0);
  const std::uint64_t base = w0 ^ kSalt;
  const std::size_t words = size / 8;
  for (std::size_t k = 1; k < words; ++k) {
    const std::uint64_t w = base + k * kStep;
    std::memcpy(p + k * 8, &w, sizeof w);  // the buffer of a library need not be 8-aligned
  }
}

// Reads every byte; true if they are what fill_message wrote for this word 0.
bool check_message(const std::byte* p, std::size_t size, std::uint64_t w0) noexcept {
  const std::size_t words = size / 8;
  std::uint64_t sum = 0;
  for (std::size_t k = 1; k < words; ++k) {
    std::uint64_t w;
    std::memcpy(&w, p + k * 8, sizeof w);
    sum += w;
  }
  const std::uint64_t n = words;
  const std::uint64_t expected = (n - 1) * (w0 ^ kSalt) + kStep * ((n - 1) * n / 2);
  return sum == expected;
}

// 64-byte aligned, uninitialised until filled.
struct Buffer {
  explicit Buffer(std::size_t size)
      : data(static_cast<std::byte*>(::operator new(std::max<std::size_t>(size, 64), std::align_val_t{64}))),
        size(size) {}
  ~Buffer() { ::operator delete(data, std::align_val_t{64}); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  std::byte* data;
  std::size_t size;
};

// ------------------------------------------------------------ shared state

enum Phase : int { kOpening = 0, kWarmup = 1, kQuiet = 2, kRun = 3, kFinish = 4, kAbort = 5 };

constexpr std::size_t kErrorText = 256;

// Each slot is written by its own process; the parent reads it.
struct alignas(64) SenderSlot {
  std::atomic<int> opened{0};
  std::atomic<int> warm{0};  // every receiver has seen one of my warm-up messages
  std::atomic<int> done{0};  // release: sent, stopped_ns, max_behind_ns are final
  std::atomic<int> failed{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::int64_t> stopped_ns{0};
  std::atomic<std::int64_t> max_behind_ns{0};  // latency: worst lateness of a send against its schedule
  char error[kErrorText] = {};
};

struct alignas(64) ReceiverSlot {
  std::atomic<int> opened{0};
  std::atomic<int> done{0};  // release: counters and histogram are final
  std::atomic<int> failed{0};
  std::atomic<std::int64_t> last_warm_ns{0};
  std::atomic<std::uint8_t> warm_from[kMaxEnds] = {};
  // Written per message, read by the other receivers of a shared queue at
  // the end: a line of its own.
  alignas(64) std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> corrupt{0};
  std::atomic<std::uint64_t> out_of_order{0};  // a sender's value not above its previous one
  std::atomic<std::int64_t> last_data_ns{0};
  char error[kErrorText] = {};
  LatencyHistogram histogram;
};

struct CellShared {
  alignas(64) std::atomic<int> phase{kOpening};
  std::atomic<int> stop_sending{0};
  std::atomic<int> senders_done{0};  // release: expected is final
  std::atomic<std::uint64_t> expected{0};  // messages sent, all senders together
  std::atomic<std::int64_t> t0_ns{0};
  SenderSlot senders[kMaxEnds];
  ReceiverSlot receivers[kMaxEnds];
};

template <typename Slot>
void set_error(Slot& slot, const std::string& text) {
  std::snprintf(slot.error, sizeof slot.error, "%s", text.c_str());
  slot.failed.store(1, release);
}

// ------------------------------------------------------------------- cells

struct CellSpec {
  Measure measure = Measure::throughput;
  Pattern pattern = Pattern::one_to_one;
  int senders = 1;
  int receivers = 1;
  std::size_t size = 64;
  std::size_t depth = 1024;
  ReaderMode reader = ReaderMode::blocking;
  double seconds = 0.3;          // throughput: run length (messages == 0)
  std::uint64_t messages = 0;    // throughput: fixed total instead
  double rate = 0;               // latency: msg/s, all senders together
  std::uint64_t count = 0;       // latency: messages, all senders together
  double run_s = 0;              // how long the senders send (0: as long as --messages takes)
  bool broadcast = false;        // every receiver gets every message
  bool zero_copy = true;         // use the transport's zero-copy path if it has one
  std::size_t batch = 1;         // > 1: use the transport's batch path if it has one
  int load = 0;                  // busy-looping processes alongside the cell
  std::vector<int> cpus;         // --pin: CPU of process k (senders, then receivers)
  double cell_timeout = 30;
};

void pin_self(const CellSpec& spec, int process) {
  if (spec.cpus.empty()) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(spec.cpus[static_cast<std::size_t>(process) % spec.cpus.size()], &set);
  (void)::sched_setaffinity(0, sizeof set, &set);
}

// Waits (polling) until phase >= `at_least`; false on abort or after `limit_ns`.
bool wait_phase(CellShared& sh, int at_least, std::int64_t limit_ns) {
  const std::int64_t give_up = now_ns() + limit_ns;
  for (;;) {
    const int p = sh.phase.load(acquire);
    if (p == kAbort) return false;
    if (p >= at_least) return true;
    if (now_ns() > give_up) return false;
    sleep_ns(50'000);
  }
}

// How long a child waits for the parent before it gives up by itself (the
// parent's watchdog normally kills it first).
std::int64_t child_limit_ns(const CellSpec& spec) {
  return static_cast<std::int64_t>((spec.cell_timeout + spec.run_s + 10) * 1e9);
}

// One message at a time through copy or loan; a message that could not be
// sent stays pending and goes first on the next attempt.
class Emitter {
 public:
  Emitter(Sender& tx, std::size_t size, bool loan) : tx_(tx), size_(size), loan_(loan), buffer_(loan ? 0 : size) {}

  // One attempt, waiting up to `timeout`; true if the message went.
  bool attempt(std::uint64_t w0, Nanos timeout) {
    if (!loan_) {
      if (!pending_) fill_message(buffer_.data, size_, w0);
      pending_ = true;
      if (!tx_.send({buffer_.data, size_}, timeout)) return false;
    } else {
      if (!pending_) {
        const std::span<std::byte> region = tx_.loan(size_, timeout);
        if (region.empty()) return false;
        if (region.size() < size_) throw TransportError("loan() gave fewer bytes than asked for");
        fill_message(region.data(), size_, w0);
        pending_ = true;
      }
      if (!tx_.commit(timeout)) return false;
    }
    pending_ = false;
    return true;
  }
  bool pending() const noexcept { return pending_; }

 private:
  Sender& tx_;
  std::size_t size_;
  bool loan_;
  Buffer buffer_;
  bool pending_ = false;
};

int sender_body(TransportFactory& factory, const CellSpec& spec, CellShared& sh, int me) {
  SenderSlot& slot = sh.senders[me];
  ::signal(SIGPIPE, SIG_IGN);  // a reader that went away is an error to report, not a silent death
  pin_self(spec, me);
  std::unique_ptr<Sender> tx;
  try {
    tx = factory.open_sender(me);
  } catch (const std::exception& e) {
    set_error(slot, std::string("open: ") + e.what());
    return 2;
  }
  slot.opened.store(1, release);
  const std::int64_t limit = child_limit_ns(spec);
  try {
    Emitter emitter(*tx, spec.size, spec.zero_copy && tx->zero_copy());
    auto aborted = [&] { return sh.phase.load(relaxed) == kAbort; };
    auto send_blocking = [&](std::uint64_t w0) {
      while (!emitter.attempt(w0, kRetryStep))
        if (aborted()) return false;
      return true;
    };

    if (!wait_phase(sh, kWarmup, limit)) return 3;
    bool warm = false;
    while (sh.phase.load(acquire) == kWarmup) {
      if (!warm) {
        warm = true;
        for (int r = 0; r < spec.receivers; ++r) warm &= sh.receivers[r].warm_from[me].load(relaxed) != 0;
        if (warm) slot.warm.store(1, release);
      }
      if (!warm) (void)emitter.attempt(word0(Kind::warmup, me, 0), std::chrono::milliseconds(1));
      sleep_ns(warm ? 100'000 : 200'000);
    }
    // A warm-up message still pending must not be counted as data.
    while (emitter.pending())
      if (!emitter.attempt(0, kRetryStep) && aborted()) return 3;
    if (!wait_phase(sh, kRun, limit)) return 3;
    const std::int64_t t0 = sh.t0_ns.load(acquire);
    wait_until_ns(t0);

    std::uint64_t sent = 0;
    if (spec.measure == Measure::throughput) {
      std::uint64_t quota = UINT64_MAX;
      if (spec.messages > 0)
        quota = spec.messages / static_cast<std::uint64_t>(spec.senders) +
                (me == 0 ? spec.messages % static_cast<std::uint64_t>(spec.senders) : 0);
      const bool batching = spec.batch > 1 && tx->batches();
      while (sent < quota && sh.stop_sending.load(relaxed) == 0) {
        if (!batching) {
          if (!send_blocking(word0(Kind::data, me, sent))) break;
          if ((++sent & 63) == 0) slot.sent.store(sent, relaxed);  // progress, for a watchdog report
          continue;
        }
        // Up to `batch` messages loaned at once, written in place, published together.
        const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(spec.batch, quota - sent));
        std::size_t n = 0;
        while ((n = tx->loan_batch(want, spec.size, kRetryStep)) == 0 && !aborted()) {
        }
        if (n == 0) break;
        for (std::size_t i = 0; i < n; ++i) {
          const std::span<std::byte> region = tx->batch_slot(i);
          if (region.size() < spec.size) throw TransportError("batch_slot() gave fewer bytes than asked for");
          fill_message(region.data(), spec.size, word0(Kind::data, me, sent + i));
        }
        tx->commit_batch();
        sent += n;
        slot.sent.store(sent, relaxed);
      }
    } else {
      // The global schedule: message i at t0 + i/rate; sender `me` sends
      // i = me, me + senders, ...
      std::int64_t behind = 0;
      const double period_ns = 1e9 / spec.rate;
      for (std::uint64_t i = static_cast<std::uint64_t>(me); i < spec.count;
           i += static_cast<std::uint64_t>(spec.senders)) {
        const auto intended = static_cast<std::int64_t>(static_cast<double>(i) * period_ns);
        wait_until_ns(t0 + intended);
        behind = std::max(behind, now_ns() - (t0 + intended));
        if (!send_blocking(word0(Kind::data, me, static_cast<std::uint64_t>(intended)))) break;
        if ((++sent & 63) == 0) slot.sent.store(sent, relaxed);
      }
      slot.max_behind_ns.store(behind, relaxed);
    }
    slot.sent.store(sent, relaxed);
    slot.stopped_ns.store(now_ns(), relaxed);
    slot.done.store(1, release);
    // Keep the end open until everything was received.
    (void)wait_phase(sh, kFinish, limit);
    tx.reset();
  } catch (const std::exception& e) {
    set_error(slot, e.what());
    return 4;
  }
  return 0;
}

int receiver_body(TransportFactory& factory, const CellSpec& spec, CellShared& sh, int me) {
  ReceiverSlot& slot = sh.receivers[me];
  pin_self(spec, spec.senders + me);
  std::unique_ptr<Receiver> rx;
  try {
    rx = factory.open_receiver(me);
  } catch (const std::exception& e) {
    set_error(slot, std::string("open: ") + e.what());
    return 2;
  }
  slot.opened.store(1, release);
  try {
    if (!wait_phase(sh, kWarmup, child_limit_ns(spec))) return 3;
    const Nanos timeout = spec.reader == ReaderMode::busy ? kNoWait : kBlockingWait;
    const bool view = spec.zero_copy && rx->zero_copy();
    const bool latency = spec.measure == Measure::latency;
    // clock_gettime costs ~40 ns: long runs of small messages sample it every
    // 16th message; short fixed-count runs cannot afford the inexact tail.
    const bool clock_every_message =
        latency || spec.size >= 1024 || (spec.messages > 0 && spec.messages < 1'000'000);
    Buffer buffer(view ? 0 : spec.size);
    std::int64_t t0 = 0;
    std::uint64_t received = 0;
    std::uint64_t corrupt = 0;
    std::uint64_t out_of_order = 0;
    std::uint64_t last_value[kMaxEnds] = {};
    bool heard[kMaxEnds] = {};
    std::uint64_t seen = 0;
    std::int64_t last_progress = now_ns();
    const std::int64_t give_up = now_ns() + child_limit_ns(spec);

    // One message, in place or copied; false once the run is aborted.
    auto take = [&](std::span<const std::byte> msg, std::int64_t at) {
      std::uint64_t w0 = 0;
      if (msg.size() >= sizeof w0) std::memcpy(&w0, msg.data(), sizeof w0);
      const auto kind = static_cast<Kind>(w0 >> 62);
      const int sender = static_cast<int>((w0 >> 56) & 63);
      if (msg.size() >= sizeof w0 && kind == Kind::warmup) {
        if (sender < kMaxEnds) slot.warm_from[sender].store(1, relaxed);
        slot.last_warm_ns.store(now_ns(), relaxed);
        return true;
      }
      const bool ok = msg.size() == spec.size && kind == Kind::data && sender < spec.senders &&
                      check_message(msg.data(), msg.size(), w0);
      ++received;
      slot.received.store(received, relaxed);
      if (!ok) slot.corrupt.store(++corrupt, relaxed);
      if (ok) {
        const std::uint64_t value = w0 & kValueMask;
        if (heard[sender] && value <= last_value[sender]) slot.out_of_order.store(++out_of_order, relaxed);
        heard[sender] = true;
        last_value[sender] = value;
      }
      if (latency) {
        if (t0 == 0)
          while ((t0 = sh.t0_ns.load(acquire)) == 0) {
          }
        const std::int64_t intended = t0 + static_cast<std::int64_t>(w0 & kValueMask);
        if (ok) slot.histogram.record(static_cast<std::uint64_t>(std::max<std::int64_t>(0, at - intended)));
        slot.last_data_ns.store(at, relaxed);
      } else if (clock_every_message) {
        slot.last_data_ns.store(at, relaxed);
      } else if ((received & 15) == 0) {
        slot.last_data_ns.store(now_ns(), relaxed);
      }
      return (received & 1023) != 0 || sh.phase.load(relaxed) != kAbort;
    };
    const bool batch = spec.batch > 1 && rx->batches();
    bool aborted = false;
    for (;;) {
      if (batch) {
        // Every available message up to 4 batches at once; one clock read per batch.
        const std::size_t n = rx->view_batch(4 * spec.batch, timeout);
        if (n > 0) {
          const std::int64_t at = clock_every_message ? now_ns() : 0;
          for (std::size_t i = 0; i < n && !aborted; ++i) aborted = !take(rx->batch_message(i), at);
          rx->release_batch();
          if (aborted) break;
          continue;
        }
      } else {
        std::optional<std::span<const std::byte>> msg;
        if (view) {
          msg = rx->view(timeout);
        } else if (auto n = rx->receive({buffer.data, buffer.size}, timeout)) {
          msg = std::span<const std::byte>(buffer.data, *n);
        }
        if (msg) {
          const std::int64_t at = clock_every_message ? now_ns() : 0;
          aborted = !take(*msg, at);
          if (view) rx->release();
          if (aborted) break;
          continue;
        }
      }
      // Nothing arrived within the timeout: is there more to come?
      const std::int64_t now = now_ns();
      if (received != seen) {
        seen = received;
        last_progress = now;
        // Fewer than 16 small messages never sampled the clock: now is an upper bound.
        if (slot.last_data_ns.load(relaxed) == 0) slot.last_data_ns.store(now, relaxed);
      }
      if (sh.phase.load(acquire) >= kFinish) break;
      if (sh.senders_done.load(acquire) != 0) {
        const std::uint64_t expected = sh.expected.load(relaxed);
        std::uint64_t got = received;
        if (!spec.broadcast) {  // a shared queue: all receivers together
          got = 0;
          for (int r = 0; r < spec.receivers; ++r) got += sh.receivers[r].received.load(relaxed);
        }
        if (got >= expected) break;
        if (now - last_progress > kDrainNs) break;  // lost messages: the parent counts them
      }
      if (now > give_up) {
        set_error(slot, "never told to stop");
        return 3;
      }
    }
    slot.done.store(1, release);
  } catch (const std::exception& e) {
    set_error(slot, e.what());
    return 4;
  }
  return 0;
}

// ------------------------------------------------------------- the parent

enum class Status { ok, skipped, failed };

struct CellResult {
  std::string transport;
  CellSpec spec;
  Fanout fanout = Fanout::share;
  Status status = Status::ok;
  std::string error;  // why failed or skipped
  std::string note;   // from setup()
  double elapsed_s = 0;
  // both
  std::uint64_t sent = 0, delivered = 0, expected_deliveries = 0, lost = 0, corrupt = 0, out_of_order = 0;
  // throughput
  double seconds = 0, msgs_per_s = 0, bytes_per_s = 0;
  // latency
  std::uint64_t samples = 0, p50 = 0, p99 = 0, p999 = 0, max = 0, min = 0;
  double mean = 0;
  std::int64_t max_behind_ns = 0;
};

using internal::errno_text;

class CellRunner {
 public:
  CellRunner(TransportFactory& factory, const CellSpec& spec, CellShared& shared)
      : f_(factory), spec_(spec), sh_(shared) {}

  // Forks and drives the processes; fills `r` (status, error, counters).
  void run(CellResult& r) {
    const auto start = SteadyClock::now();
    const double run_s = spec_.run_s;
    cell_deadline_ = start + to_duration(spec_.cell_timeout + run_s);
    if (auto err = drive(run_s)) {
      sh_.stop_sending.store(1, release);
      sh_.phase.store(kAbort, release);
      (void)children_.wait_all(SteadyClock::now() + std::chrono::seconds(2));
      r.status = Status::failed;
      r.error = *err + exits_text();
      return;
    }
    collect(r);
  }

 private:
  static SteadyClock::duration to_duration(double s) {
    return std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(s));
  }

  std::optional<std::string> drive(double run_s) {
    for (int i = 0; i < spec_.receivers; ++i) {
      const pid_t pid = children_.spawn([this, i] { return receiver_body(f_, spec_, sh_, i); });
      if (pid < 0) return errno_text("fork");
      receivers_.push_back(pid);
    }
    for (int i = 0; i < spec_.senders; ++i) {
      const pid_t pid = children_.spawn([this, i] { return sender_body(f_, spec_, sh_, i); });
      if (pid < 0) return errno_text("fork");
      senders_.push_back(pid);
    }
    auto all = [](auto& slots, int n, auto field) {
      for (int i = 0; i < n; ++i)
        if ((slots[i].*field).load(acquire) == 0) return false;
      return true;
    };
    if (auto e = wait_for("open", 10, [&] {
          return all(sh_.senders, spec_.senders, &SenderSlot::opened) &&
                 all(sh_.receivers, spec_.receivers, &ReceiverSlot::opened);
        }))
      return e;
    sh_.phase.store(kWarmup, release);
    if (auto e = wait_for("warm-up (every receiver hears from every sender)", 5,
                          [&] { return all(sh_.senders, spec_.senders, &SenderSlot::warm); }))
      return e;
    try {
      f_.connected();
    } catch (const std::exception& e) {
      return std::string("connected(): ") + e.what();
    }
    sh_.phase.store(kQuiet, release);
    const std::int64_t quiet_from = now_ns();
    if (auto e = wait_for("quiet", 2, [&] {
          std::int64_t last = quiet_from;
          for (int i = 0; i < spec_.receivers; ++i) last = std::max(last, sh_.receivers[i].last_warm_ns.load(relaxed));
          return now_ns() - last > kQuietNs;
        }))
      return e;
    const std::int64_t t0 = now_ns() + kStartDelayNs;
    sh_.t0_ns.store(t0, release);
    sh_.phase.store(kRun, release);
    if (spec_.measure == Measure::throughput && spec_.messages == 0) {
      const std::int64_t end = t0 + static_cast<std::int64_t>(run_s * 1e9);
      if (auto e = wait_for("run", run_s + 1, [&] { return now_ns() >= end; }, std::chrono::milliseconds(2))) return e;
      sh_.stop_sending.store(1, release);
    }
    const double sending_bound = spec_.messages > 0 ? spec_.cell_timeout + run_s : run_s + 10;
    if (auto e = wait_for("senders finishing", sending_bound,
                          [&] { return all(sh_.senders, spec_.senders, &SenderSlot::done); },
                          std::chrono::milliseconds(2))) {
      if (spec_.measure != Measure::latency || e->rfind("watchdog", 0) != 0) return e;
      std::uint64_t sent = 0;
      for (int i = 0; i < spec_.senders; ++i) sent += sh_.senders[i].sent.load(relaxed);
      return *e + "; " + std::to_string(sent) + " of " + std::to_string(spec_.count) +
             " messages sent (about): the channel or the CPUs could not keep up with the rate";
    }
    std::uint64_t expected = 0;
    for (int i = 0; i < spec_.senders; ++i) expected += sh_.senders[i].sent.load(relaxed);
    sh_.expected.store(expected, relaxed);
    sh_.senders_done.store(1, release);
    if (auto e = wait_for("receivers draining", static_cast<double>(kDrainNs) / 1e9 + 5,
                          [&] { return all(sh_.receivers, spec_.receivers, &ReceiverSlot::done); },
                          std::chrono::milliseconds(1)))
      return e;
    sh_.phase.store(kFinish, release);
    if (!children_.wait_all(std::min(cell_deadline_, SteadyClock::now() + std::chrono::seconds(5))))
      return std::string("watchdog: a process did not exit within 5 s of the end (killed)");
    for (pid_t pid : senders_)
      if (auto st = children_.status(pid); st.how != ChildExit::How::exited || st.code != 0)
        return std::string("a sender ended badly");
    for (pid_t pid : receivers_)
      if (auto st = children_.status(pid); st.how != ChildExit::How::exited || st.code != 0)
        return std::string("a receiver ended badly");
    return std::nullopt;
  }

  // Polls `done` until it holds, a child fails, or the stage's bound (or the
  // cell's) passes.
  template <typename Pred>
  std::optional<std::string> wait_for(const char* stage, double bound_s, Pred done,
                                      std::chrono::microseconds poll = std::chrono::microseconds(200)) {
    const auto begin = SteadyClock::now();
    const auto limit = std::min(cell_deadline_, begin + to_duration(bound_s));
    for (;;) {
      if (done()) return std::nullopt;
      if (auto problem = child_problem()) return std::string(stage) + ": " + *problem;
      if (SteadyClock::now() > limit) {
        char buf[200];
        std::snprintf(buf, sizeof buf, "watchdog: stage '%s' not done after %.1f s%s, processes killed", stage,
                      std::chrono::duration<double>(limit - begin).count(),
                      limit == cell_deadline_ ? " (the cell's --cell-timeout ran out)" : "");
        return std::string(buf);
      }
      std::this_thread::sleep_for(poll);
    }
  }

  // A child that reported an error or ended with a non-zero status.
  std::optional<std::string> child_problem() {
    for (int i = 0; i < spec_.senders; ++i)
      if (sh_.senders[i].failed.load(acquire) != 0) return "sender " + std::to_string(i) + ": " + sh_.senders[i].error;
    for (int i = 0; i < spec_.receivers; ++i)
      if (sh_.receivers[i].failed.load(acquire) != 0)
        return "receiver " + std::to_string(i) + ": " + sh_.receivers[i].error;
    auto check = [&](const std::vector<pid_t>& pids, const char* role) -> std::optional<std::string> {
      for (std::size_t i = 0; i < pids.size(); ++i)
        if (auto st = children_.poll(pids[i]); st && (st->how != ChildExit::How::exited || st->code != 0))
          return std::string(role) + " " + std::to_string(i) + " " + st->text();
      return std::nullopt;
    };
    if (auto p = check(senders_, "sender")) return p;
    return check(receivers_, "receiver");
  }

  // " [sender 0: killed by SIGKILL, ...]" for children that did not exit 0.
  std::string exits_text() const {
    std::string out;
    auto add = [&](const std::vector<pid_t>& pids, const char* role) {
      for (std::size_t i = 0; i < pids.size(); ++i) {
        const ChildExit st = children_.status(pids[i]);
        if (st.how == ChildExit::How::exited && st.code == 0) continue;
        out += (out.empty() ? "" : ", ") + std::string(role) + " " + std::to_string(i) + ": " + st.text();
      }
    };
    add(senders_, "sender");
    add(receivers_, "receiver");
    return out.empty() ? out : " [" + out + "]";
  }

  void collect(CellResult& r) {
    const std::int64_t t0 = sh_.t0_ns.load(relaxed);
    r.sent = sh_.expected.load(relaxed);
    r.expected_deliveries = spec_.broadcast ? r.sent * static_cast<std::uint64_t>(spec_.receivers) : r.sent;
    std::int64_t end = t0;
    LatencyHistogram merged;
    for (int i = 0; i < spec_.receivers; ++i) {
      const ReceiverSlot& s = sh_.receivers[i];
      r.delivered += s.received.load(relaxed);
      r.corrupt += s.corrupt.load(relaxed);
      r.out_of_order += s.out_of_order.load(relaxed);
      end = std::max(end, s.last_data_ns.load(relaxed));
      merged.merge(s.histogram);
    }
    for (int i = 0; i < spec_.senders; ++i)
      r.max_behind_ns = std::max(r.max_behind_ns, sh_.senders[i].max_behind_ns.load(relaxed));
    r.lost = r.delivered < r.expected_deliveries ? r.expected_deliveries - r.delivered : 0;
    r.seconds = static_cast<double>(end - t0) / 1e9;
    if (r.seconds > 0) {
      r.msgs_per_s = static_cast<double>(r.delivered) / r.seconds;
      r.bytes_per_s = r.msgs_per_s * static_cast<double>(spec_.size);
    }
    r.samples = merged.count();
    r.p50 = merged.percentile(50);
    r.p99 = merged.percentile(99);
    r.p999 = merged.percentile(99.9);
    r.max = merged.max();
    r.min = merged.min();
    r.mean = merged.mean();

    if (r.corrupt > 0) fail(r, std::to_string(r.corrupt) + " corrupt messages (wrong size or contents)");
    else if (r.out_of_order > 0)
      fail(r, std::to_string(r.out_of_order) + " messages repeated or out of order (a sender's sequence went back)");
    else if (r.delivered > r.expected_deliveries)
      fail(r, std::to_string(r.delivered - r.expected_deliveries) + " messages more than were sent");
    else if (r.lost > 0)
      fail(r, "lost " + std::to_string(r.lost) + " of " + std::to_string(r.expected_deliveries) + " messages");
    else if (r.delivered == 0)
      fail(r, "no message was delivered");
  }

  static void fail(CellResult& r, const std::string& why) {
    r.status = Status::failed;
    r.error = why;
  }

  TransportFactory& f_;
  const CellSpec& spec_;
  CellShared& sh_;
  Children children_;
  std::vector<pid_t> senders_, receivers_;
  SteadyClock::time_point cell_deadline_;
};

std::string tmp_dir() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

CellResult run_cell(TransportFactory& factory, const CellSpec& spec, int cell_number) {
  CellResult r;
  r.transport = factory.name();
  r.spec = spec;
  r.fanout = factory.fanout();
  const auto start = SteadyClock::now();
  auto finish = [&]() -> CellResult {
    r.elapsed_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
    return r;
  };
  if (!factory.supports(spec.pattern)) {
    r.status = Status::skipped;
    r.error = std::string("pattern ") + pattern_key(spec.pattern) + " not supported";
    return finish();
  }
  Config config;
  config.pattern = spec.pattern;
  config.senders = spec.senders;
  config.receivers = spec.receivers;
  config.message_size = spec.size;
  config.depth = spec.depth;
  config.tag = "colo-msgbench-" + std::to_string(::getpid()) + "-" + std::to_string(cell_number);
  config.tmp_dir = tmp_dir();
  try {
    r.note = factory.setup(config);
  } catch (const Unsupported& e) {
    factory.teardown();
    r.status = Status::skipped;
    r.error = e.what();
    return finish();
  } catch (const std::exception& e) {
    factory.teardown();
    r.status = Status::failed;
    r.error = std::string("setup: ") + e.what();
    return finish();
  }
  {
    // --load: busy-looping processes alongside the cell (an oversubscribed
    // host), killed with the cell.
    Children load;
    for (int i = 0; i < spec.load; ++i)
      if (load.spawn([] {
            std::uint64_t spin = 0;
            for (;;) asm volatile("" : "+r"(spin));  // an empty loop the compiler keeps
            return 0;
          }) < 0) {
        r.status = Status::failed;
        r.error = errno_text("fork (load)");
        factory.teardown();
        return finish();
      }
    SharedBlock<CellShared> shared;
    if (!shared) {
      r.status = Status::failed;
      r.error = errno_text("mmap");
    } else {
      CellRunner runner(factory, spec, *shared);
      runner.run(r);
    }  // the runner's Children kill and reap anything left before teardown
  }
  factory.teardown();
  return finish();
}

// ------------------------------------------------------------- formatting

std::string size_label(std::size_t size) {
  if (size >= (1u << 20) && size % (1u << 20) == 0) return std::to_string(size >> 20) + " MiB";
  if (size >= 1024 && size % 1024 == 0) return std::to_string(size >> 10) + " KiB";
  return std::to_string(size) + " B";
}

std::string pattern_label(Pattern p, int fan) {
  switch (p) {
    case Pattern::one_to_one: return "1->1";
    case Pattern::many_to_one: return std::to_string(fan) + "->1";
    case Pattern::one_to_many: return "1->" + std::to_string(fan);
    case Pattern::many_to_many: return std::to_string(fan) + "->" + std::to_string(fan);
  }
  return "?";
}

const char* reader_name(ReaderMode m) { return m == ReaderMode::busy ? "busy" : "blocking"; }

std::string ratio_text(double r) {
  if (!std::isfinite(r) || r <= 0) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, r >= 100 ? "%.0fx" : r >= 10 ? "%.1fx" : "%.2fx", r);
  return buf;
}

std::string gb_text(double bytes_per_s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, bytes_per_s >= 1e9 ? "%.2f" : "%.3f", bytes_per_s / 1e9);
  return buf;
}

std::string ns_text(double ns) { return cli::human_duration_ns(ns); }

nlohmann::json number_or_null(double v) {
  return std::isfinite(v) && v > 0 ? nlohmann::json(v) : nlohmann::json(nullptr);
}

const char* status_name(Status s) {
  switch (s) {
    case Status::ok: return "ok";
    case Status::skipped: return "skipped";
    case Status::failed: return "failed";
  }
  return "?";
}

// The reference's result for the same cell, if it ran.
const CellResult* reference_of(const std::vector<CellResult>& results, const CellResult& r, const std::string& ref) {
  for (const auto& o : results)
    if (o.transport == ref && o.status == Status::ok && o.spec.measure == r.spec.measure &&
        o.spec.pattern == r.spec.pattern && o.spec.size == r.spec.size && o.spec.reader == r.spec.reader)
      return &o;
  return nullptr;
}

double ratio(double it, double ref) { return ref > 0 && it > 0 ? it / ref : std::nan(""); }

// The baselines every figure is also compared with, in the same cell: the
// floor (floor-spsc), ZeroMQ of the transport's fan-out (PUB/SUB for a
// broadcast to several readers, PUSH/PULL otherwise) and a Unix socket.
struct Ratios {
  double floor = NAN, zmq = NAN, unix_socket = NAN, pingpong = NAN;
};
Ratios ratios_of(const std::vector<CellResult>& results, const CellResult& r, const PingPong& pp) {
  Ratios out;
  const bool broadcast = r.fanout == Fanout::broadcast && r.spec.receivers > 1;
  const CellResult* floor = reference_of(results, r, "floor-spsc");
  const CellResult* zmq = reference_of(results, r, broadcast ? "zmq-ipc-pubsub" : "zmq-ipc-pushpull");
  const CellResult* unix_socket = reference_of(results, r, "unix-stream");
  if (r.status != Status::ok) return out;
  if (r.spec.measure == Measure::throughput) {
    if (floor) out.floor = ratio(r.msgs_per_s, floor->msgs_per_s);
    if (zmq) out.zmq = ratio(r.msgs_per_s, zmq->msgs_per_s);
    if (unix_socket) out.unix_socket = ratio(r.msgs_per_s, unix_socket->msgs_per_s);
  } else {
    const auto p50 = static_cast<double>(r.p50);
    if (floor) out.floor = ratio(p50, static_cast<double>(floor->p50));
    if (zmq) out.zmq = ratio(p50, static_cast<double>(zmq->p50));
    if (unix_socket) out.unix_socket = ratio(p50, static_cast<double>(unix_socket->p50));
    if (pp.one_way_p50_ns > 0) out.pingpong = ratio(p50, static_cast<double>(pp.one_way_p50_ns));
  }
  return out;
}

// The goals of the subject (options.goals) as ratios from the same run. A
// goal whose cells did not run is reported as not measured.
struct Goal {
  std::string text;    // "64 B 1->1 throughput at least 10x zmq-ipc-pushpull's"
  std::string ratio;   // "colo-queue msg/s / zmq-ipc-pushpull msg/s"
  double value = NAN;  // measured ratio
  double target = 0;
  bool at_least = true;  // value >= target (else value <= target)
  bool measured() const { return !std::isnan(value); }
  bool met() const { return measured() && (at_least ? value >= target : value <= target); }
};

std::vector<Goal> goals_of(const std::vector<CellResult>& results, const std::string& run_subject,
                           const std::vector<GoalSpec>& specs, const PingPong& pingpong) {
  auto find = [&](const std::string& transport, const GoalSpec& spec) -> const CellResult* {
    for (const auto& r : results)
      if (r.transport == transport && r.status == Status::ok && r.spec.measure == spec.measure &&
          r.spec.pattern == spec.pattern && r.spec.size == spec.size &&
          (spec.measure == Measure::throughput || r.spec.reader == spec.reader))
        return &r;
    return nullptr;
  };
  std::vector<Goal> goals;
  for (const auto& spec : specs) {
    const std::string subject = spec.subject.empty() ? run_subject : spec.subject;
    const bool throughput = spec.measure == Measure::throughput;
    const bool floor = spec.baseline == "pingpong";
    Goal g{spec.text,
           throughput ? subject + " msg/s / " + spec.baseline + " msg/s"
                      : subject + " p50 / " + (floor ? std::string("ping-pong one-way p50") : spec.baseline + " p50"),
           NAN, spec.target, spec.at_least};
    const auto* a = find(subject, spec);
    if (floor) {
      if (a && pingpong.one_way_p50_ns > 0)
        g.value = ratio(static_cast<double>(a->p50), static_cast<double>(pingpong.one_way_p50_ns));
    } else if (const auto* b = find(spec.baseline, spec); a && b) {
      g.value = throughput ? ratio(a->msgs_per_s, b->msgs_per_s)
                           : ratio(static_cast<double>(a->p50), static_cast<double>(b->p50));
    }
    goals.push_back(g);
  }
  return goals;
}

// ------------------------------------------------------------------ lists

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream in(text);
  while (std::getline(in, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// "64", "1K", "64KiB", "1M", "500M" -> bytes (K = 1024). nullopt if malformed.
std::optional<std::uint64_t> parse_size(const std::string& text) {
  std::size_t pos = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &pos);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (text[0] == '-') return std::nullopt;
  std::string unit = text.substr(pos);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  std::uint64_t mult = 1;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") mult = 1024;
  else if (unit == "M" || unit == "MB" || unit == "MIB") mult = 1024 * 1024;
  else if (unit == "G" || unit == "GB" || unit == "GIB") mult = 1024ull * 1024 * 1024;
  else return std::nullopt;
  if (value > UINT64_MAX / mult) return std::nullopt;
  return value * mult;
}

std::optional<Pattern> parse_pattern(const std::string& text) {
  if (text == "1-1") return Pattern::one_to_one;
  if (text == "n-1") return Pattern::many_to_one;
  if (text == "1-n") return Pattern::one_to_many;
  if (text == "n-n") return Pattern::many_to_many;
  return std::nullopt;
}

// ---------------------------------------------------------------- options

// Texts of the defaults for --help: "64,64K", "1-1,n-1", "busy,blocking".
std::string size_key(std::size_t size) {
  if (size >= (1u << 20) && size % (1u << 20) == 0) return std::to_string(size >> 20) + "M";
  if (size >= 1024 && size % 1024 == 0) return std::to_string(size >> 10) + "K";
  return std::to_string(size);
}

template <typename T, typename F>
std::string list_text(const std::vector<T>& items, F name) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ",") + std::string(name(item));
  return out;
}

std::string patterns_text(const std::vector<Pattern>& patterns) { return list_text(patterns, pattern_key); }

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

void add_msg_bench_options(CLI::App& app, MsgBenchCli& cli) {
  MsgBenchOptions& o = cli.options;
  const MsgBenchCli::Quick& q = cli.quick_profile;
  app.add_option("--transports", cli.transports, "comma-separated transports to run (default: all; see --list)");
  cli.reference_opt =
      app.add_option("--reference", o.reference, "transport the ratios compare against (its figure = 1.00x)")
          ->capture_default_str();
  cli.sizes_opt = app.add_option("--sizes", cli.sizes,
                                 "message sizes, multiples of 8 (K = 1024) [" + list_text(o.sizes, size_key) + "]");
  app.add_option("--measure", cli.measures, "what to measure: throughput, latency [throughput,latency]");
  app.add_option("--fan", o.fan, "the 'many' of n->1 and 1->n")->capture_default_str()->check(CLI::Range(2, kMaxEnds));
  cli.patterns_opt = app.add_option("--patterns", cli.patterns,
                                    "throughput patterns: 1-1, n-1, 1-n, n-n [" + patterns_text(o.patterns) + "]");
  cli.seconds_opt = app.add_option("--seconds", o.seconds, "length of a throughput cell, seconds")
                        ->capture_default_str()
                        ->check(cli::number_in(0.01, 60, "seconds"));
  cli.messages_opt =
      app.add_option("--messages", o.messages, "messages per throughput cell instead of --seconds (0: use --seconds)")
          ->capture_default_str()
          ->check(CLI::Range(std::uint64_t{0}, std::uint64_t{1'000'000'000}));
  app.add_option("--throughput-reader", cli.throughput_reader,
                 "reader mode of throughput cells: busy, blocking [" + std::string(reader_name(o.throughput_reader)) +
                     "]");
  app.add_option("--latency-patterns", cli.latency_patterns,
                 "latency patterns: 1-1, n-1, 1-n, n-n [" + patterns_text(o.latency_patterns) + "]");
  app.add_option("--readers", cli.readers,
                 "latency reader modes: busy, blocking [" + list_text(o.readers, reader_name) + "]");
  cli.latency_seconds_opt = app.add_option("--latency-seconds", o.latency_seconds, "length of a latency cell, seconds")
                                ->capture_default_str()
                                ->check(cli::number_in(0.01, 60, "seconds"));
  cli.min_samples_opt =
      app.add_option("--min-samples", o.min_samples, "latency cells send at least this many messages")
          ->capture_default_str()
          ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{10'000'000}));
  cli.rate_opt = app.add_option("--rate", o.rate, "latency send rate, msg/s (all senders together)")
                     ->capture_default_str()
                     ->check(cli::number_in(1, 1e8, "msg/s"));
  app.add_option("--rate-bytes", cli.rate_bytes, "... capped at this many bytes/s, so big messages go slower [500M]");
  app.add_option("--buffer", cli.buffer_bytes,
                 "bytes a channel should buffer; depth = clamp(buffer/size, 16, 4096) messages [4M]");
  app.add_option("--cell-timeout", o.cell_timeout,
                 "watchdog: a cell still running this long after its run is killed, s")
      ->capture_default_str()
      ->check(cli::number_in(1, 3600, "seconds"));
  app.add_option("--batch", o.batch, "messages per loan of the batch transports (colo-*-batch); their readers take "
                                     "up to 4x this at once")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{2}, std::size_t{4096}));
  app.add_option("--load", o.load, "busy-looping processes running alongside every cell (an oversubscribed host)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_flag("--no-pingpong", cli.no_pingpong, "skip the cache-line ping-pong floor measured before the cells");
  app.add_flag("--pin", o.pin, "pin a cell's processes to CPUs round-robin (senders first); default: not pinned");
  app.add_flag("--copy", o.copy_only, "never use a transport's zero-copy path (loan/commit, view/release)");
  std::vector<std::string> quick;
  if (!q.sizes.empty()) quick.push_back("sizes " + q.sizes);
  if (q.messages > 0) quick.push_back(cli::with_commas(q.messages) + " messages per throughput cell");
  else if (q.seconds > 0) quick.push_back(number_text(q.seconds) + " s throughput cells");
  if (q.latency_seconds > 0) quick.push_back(number_text(q.latency_seconds) + " s latency cells");
  if (q.rate > 0) quick.push_back("at " + cli::with_commas(static_cast<std::uint64_t>(q.rate)) + " msg/s");
  if (q.min_samples > 0) quick.push_back("at least " + cli::with_commas(q.min_samples) + " samples");
  std::string quick_text;
  for (const auto& item : quick) quick_text += (quick_text.empty() ? "" : ", ") + item;
  app.add_flag("--quick", cli.quick, "a subset for a smoke run: " + quick_text + " (explicit options win)");
  app.add_flag("--json", o.json, "print JSON instead of tables");
  app.add_option("--json-out", o.json_out, "also write the JSON to this file (tables still on stdout)");
  app.add_flag("--verbose", o.verbose, "one line per cell on stderr as it finishes");
}

std::string resolve_msg_bench_options(MsgBenchCli& cli,
                                      const std::vector<std::unique_ptr<TransportFactory>>& transports) {
  MsgBenchOptions& o = cli.options;
  if (cli.no_pingpong) o.pingpong = false;
  if (cli.quick) {
    const MsgBenchCli::Quick& q = cli.quick_profile;
    auto given = [](const CLI::Option* opt) { return opt != nullptr && opt->count() > 0; };
    if (!q.sizes.empty() && !given(cli.sizes_opt)) cli.sizes = q.sizes;
    if (q.seconds > 0 && !given(cli.seconds_opt)) o.seconds = q.seconds;
    if (q.messages > 0 && !given(cli.messages_opt)) o.messages = q.messages;
    if (q.latency_seconds > 0 && !given(cli.latency_seconds_opt)) o.latency_seconds = q.latency_seconds;
    if (q.min_samples > 0 && !given(cli.min_samples_opt)) o.min_samples = q.min_samples;
    if (q.rate > 0 && !given(cli.rate_opt)) o.rate = q.rate;
  }
  std::vector<std::string> known;
  for (const auto& t : transports) known.push_back(t->name());
  auto known_text = [&] {
    std::string s;
    for (const auto& k : known) s += (s.empty() ? "" : ", ") + k;
    return s;
  };
  if (!cli.transports.empty()) {
    o.transports = split(cli.transports);
    if (o.transports.empty()) return "--transports: empty list";
    for (const auto& t : o.transports)
      if (std::find(known.begin(), known.end(), t) == known.end())
        return "--transports: unknown transport '" + t + "' (known: " + known_text() + ")";
  }
  const std::vector<std::string> selected = o.transports.empty() ? known : o.transports;
  if (std::find(selected.begin(), selected.end(), o.reference) == selected.end()) {
    const bool explicit_reference = cli.reference_opt != nullptr && cli.reference_opt->count() > 0;
    if (explicit_reference) {
      if (std::find(known.begin(), known.end(), o.reference) == known.end())
        return "--reference: unknown transport '" + o.reference + "' (known: " + known_text() + ")";
      return "--reference: '" + o.reference + "' is not among the transports to run";
    }
    for (const auto& k : known)  // the default reference was left out: the first one that runs
      if (std::find(selected.begin(), selected.end(), k) != selected.end()) {
        o.reference = k;
        break;
      }
  }
  if (!cli.sizes.empty()) {
    o.sizes.clear();
    for (const auto& s : split(cli.sizes)) {
      const auto v = parse_size(s);
      if (!v) return "--sizes: cannot read '" + s + "' (e.g. 64, 1K, 64KiB, 1M)";
      if (*v < 8 || *v % 8 != 0) return "--sizes: " + s + " is not a multiple of 8 bytes of at least 8";
      if (*v > (64u << 20)) return "--sizes: " + s + " is over 64 MiB";
      o.sizes.push_back(static_cast<std::size_t>(*v));
    }
    if (o.sizes.empty()) return "--sizes: empty list";
  }
  if (!cli.measures.empty()) {
    o.measures.clear();
    for (const auto& m : split(cli.measures)) {
      if (m == "throughput") o.measures.push_back(Measure::throughput);
      else if (m == "latency") o.measures.push_back(Measure::latency);
      else return "--measure: '" + m + "' is neither throughput nor latency";
    }
    if (o.measures.empty()) return "--measure: empty list";
  }
  auto patterns = [](const std::string& text, std::vector<Pattern>& out, const char* opt) -> std::string {
    if (text.empty()) return {};
    out.clear();
    for (const auto& p : split(text)) {
      const auto v = parse_pattern(p);
      if (!v) return std::string(opt) + ": '" + p + "' is not one of 1-1, n-1, 1-n, n-n";
      out.push_back(*v);
    }
    if (out.empty()) return std::string(opt) + ": empty list";
    return {};
  };
  if (auto e = patterns(cli.patterns, o.patterns, "--patterns"); !e.empty()) return e;
  if (auto e = patterns(cli.latency_patterns, o.latency_patterns, "--latency-patterns"); !e.empty()) return e;
  auto reader = [](const std::string& text) -> std::optional<ReaderMode> {
    if (text == "busy") return ReaderMode::busy;
    if (text == "blocking") return ReaderMode::blocking;
    return std::nullopt;
  };
  if (!cli.readers.empty()) {
    o.readers.clear();
    for (const auto& r : split(cli.readers)) {
      const auto v = reader(r);
      if (!v) return "--readers: '" + r + "' is neither busy nor blocking";
      o.readers.push_back(*v);
    }
    if (o.readers.empty()) return "--readers: empty list";
  }
  if (!cli.throughput_reader.empty()) {
    const auto v = reader(cli.throughput_reader);
    if (!v) return "--throughput-reader: '" + cli.throughput_reader + "' is neither busy nor blocking";
    o.throughput_reader = *v;
  }
  if (!cli.rate_bytes.empty()) {
    const auto v = parse_size(cli.rate_bytes);
    if (!v || *v == 0) return "--rate-bytes: cannot read '" + cli.rate_bytes + "' (e.g. 500M)";
    o.rate_bytes = static_cast<double>(*v);
  }
  if (!cli.buffer_bytes.empty()) {
    const auto v = parse_size(cli.buffer_bytes);
    if (!v || *v == 0) return "--buffer: cannot read '" + cli.buffer_bytes + "' (e.g. 4M)";
    o.buffer_bytes = static_cast<std::size_t>(*v);
  }
  return {};
}

// ------------------------------------------------------------------- run

namespace {

// The transports a run measures, in registry order (--transports: those named).
std::vector<TransportFactory*> selected_transports(const MsgBenchOptions& opt,
                                                   std::vector<std::unique_ptr<TransportFactory>>& all) {
  std::vector<TransportFactory*> transports;
  for (auto& t : all)
    if (opt.transports.empty() ||
        std::find(opt.transports.begin(), opt.transports.end(), t->name()) != opt.transports.end())
      transports.push_back(t.get());
  return transports;
}

// --pin: every CPU this process may run on; else none.
std::vector<int> pinning_cpus(const MsgBenchOptions& opt) {
  std::vector<int> cpus;
  if (opt.pin) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0)
      for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
        if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  }
  return cpus;
}

bool measures(const MsgBenchOptions& opt, Measure m) {
  return std::find(opt.measures.begin(), opt.measures.end(), m) != opt.measures.end();
}

struct Planned {
  TransportFactory* transport;
  CellSpec spec;
};

// Cells in the order they run: for each pattern and size, every transport
// in turn, so that a noisy neighbour slows them alike.
std::vector<Planned> plan_cells(const MsgBenchOptions& opt, const std::vector<TransportFactory*>& transports,
                                const std::vector<int>& cpus) {
  auto make_spec = [&](Measure m, Pattern p, std::size_t size, ReaderMode reader, Fanout fanout) {
    CellSpec s;
    s.measure = m;
    s.pattern = p;
    s.senders = p == Pattern::many_to_one || p == Pattern::many_to_many ? opt.fan : 1;
    s.receivers = p == Pattern::one_to_many || p == Pattern::many_to_many ? opt.fan : 1;
    s.size = size;
    s.depth = std::clamp<std::size_t>(opt.buffer_bytes / size, kMinDepth, kMaxDepth);
    s.reader = reader;
    s.seconds = opt.seconds;
    s.messages = opt.messages;
    s.rate = std::min(opt.rate, opt.rate_bytes / static_cast<double>(size));
    s.count = std::max<std::uint64_t>(opt.min_samples, static_cast<std::uint64_t>(s.rate * opt.latency_seconds));
    s.run_s = m == Measure::throughput ? (s.messages > 0 ? 0 : s.seconds) : static_cast<double>(s.count) / s.rate;
    s.broadcast = s.receivers > 1 && fanout == Fanout::broadcast;
    s.zero_copy = !opt.copy_only;
    s.batch = opt.batch;
    s.load = opt.load;
    s.cpus = cpus;
    s.cell_timeout = opt.cell_timeout;
    return s;
  };

  std::vector<Planned> plan;
  if (measures(opt, Measure::throughput))
    for (Pattern p : opt.patterns)
      for (std::size_t size : opt.sizes)
        for (auto* t : transports)
          plan.push_back({t, make_spec(Measure::throughput, p, size, opt.throughput_reader, t->fanout())});
  if (measures(opt, Measure::latency))
    for (Pattern p : opt.latency_patterns)
      for (std::size_t size : opt.sizes)
        for (ReaderMode reader : opt.readers)
          for (auto* t : transports) plan.push_back({t, make_spec(Measure::latency, p, size, reader, t->fanout())});
  return plan;
}

// One stderr line per cell as it finishes (--verbose).
void print_cell_line(const MsgBenchOptions& opt, const CellResult& r, int cell_number, std::size_t cells) {
  std::fprintf(stderr, "cell %d/%zu %-10s %-5s %-7s %-17s %-8s %-7s %.2fs", cell_number, cells,
               r.spec.measure == Measure::throughput ? "throughput" : "latency",
               pattern_label(r.spec.pattern, opt.fan).c_str(), size_label(r.spec.size).c_str(), r.transport.c_str(),
               r.spec.measure == Measure::latency ? reader_name(r.spec.reader) : "", status_name(r.status),
               r.elapsed_s);
  if (r.status != Status::ok) std::fprintf(stderr, "  %s", r.error.c_str());
  else if (r.spec.measure == Measure::throughput)
    std::fprintf(stderr, "  %s msg/s", cli::human_rate(r.msgs_per_s).c_str());
  else
    std::fprintf(stderr, "  p50 %s p99 %s", ns_text(static_cast<double>(r.p50)).c_str(),
                 ns_text(static_cast<double>(r.p99)).c_str());
  std::fprintf(stderr, "\n");
}

std::vector<CellResult> run_cells(const MsgBenchOptions& opt, std::vector<Planned>& plan) {
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  std::vector<CellResult> results;
  int cell_number = 0;
  for (auto& cell : plan) {
    ++cell_number;
    if (tty && !opt.verbose) {
      std::fprintf(stderr, "\r\033[K%s: cell %d/%zu: %s %s %s %s", opt.title.c_str(), cell_number, plan.size(),
                   cell.spec.measure == Measure::throughput ? "throughput" : "latency",
                   pattern_label(cell.spec.pattern, opt.fan).c_str(), size_label(cell.spec.size).c_str(),
                   cell.transport->name().c_str());
      std::fflush(stderr);
    }
    results.push_back(run_cell(*cell.transport, cell.spec, cell_number));
    if (opt.verbose) print_cell_line(opt, results.back(), cell_number, plan.size());
  }
  if (tty && !opt.verbose) std::fprintf(stderr, "\r\033[K");
  return results;
}

// What the report is made of, gathered once the cells ran.
struct RunReport {
  const MsgBenchOptions& opt;
  const std::vector<TransportFactory*>& transports;
  const std::vector<int>& cpus;
  const std::vector<CellResult>& results;
  const std::vector<Goal>& goals;
  const ReportContext& context;
  const PingPong& pingpong;
  double load_before, load_after, elapsed;
  bool any_failed;
};

nlohmann::json cell_json(const RunReport& rep, const CellResult& r) {
  const MsgBenchOptions& opt = rep.opt;
  const CellResult* ref = reference_of(rep.results, r, opt.reference);
      nlohmann::json j = {
      {"transport", r.transport},
      {"pattern", pattern_key(r.spec.pattern)},
      {"pattern_label", pattern_label(r.spec.pattern, opt.fan)},
      {"senders", r.spec.senders},
      {"receivers", r.spec.receivers},
      {"fanout", r.spec.receivers > 1 ? nlohmann::json(fanout_name(r.fanout)) : nlohmann::json(nullptr)},
      {"size", r.spec.size},
      {"depth", r.spec.depth},
      {"status", status_name(r.status)},
      {"elapsed_s", r.elapsed_s},
  };
  if (!r.error.empty()) j["error"] = r.error;
  if (!r.note.empty()) j["note"] = r.note;
  if (r.status == Status::failed || r.status == Status::ok) {
    j["sent"] = r.sent;
    j["delivered"] = r.delivered;
    j["expected_deliveries"] = r.expected_deliveries;
    j["lost"] = r.lost;
    j["corrupt"] = r.corrupt;
    j["out_of_order"] = r.out_of_order;
  }
  if (r.spec.measure == Measure::throughput) {
    j["reader"] = reader_name(r.spec.reader);
    if (r.status == Status::ok) {
      j["seconds"] = r.seconds;
      j["msgs_per_s"] = r.msgs_per_s;
      j["bytes_per_s"] = r.bytes_per_s;
      j["gb_per_s"] = r.bytes_per_s / 1e9;
      j["ratio_to_reference"] = number_or_null(ref ? ratio(r.msgs_per_s, ref->msgs_per_s) : std::nan(""));
      const Ratios q = ratios_of(rep.results, r, rep.pingpong);
      j["ratios"] = {{"floor_spsc", number_or_null(q.floor)},
                     {"zmq", number_or_null(q.zmq)},
                     {"unix_stream", number_or_null(q.unix_socket)}};
    }
  } else {
    j["reader"] = reader_name(r.spec.reader);
    j["rate_msgs_per_s"] = r.spec.rate;
    if (r.status == Status::ok) {
      j["samples"] = r.samples;
      j["latency_ns"] = {{"min", r.min},   {"mean", r.mean}, {"p50", r.p50},
                         {"p99", r.p99},   {"p99_9", r.p999}, {"max", r.max}};
      j["sender_max_behind_ns"] = r.max_behind_ns;
      j["ratio_to_reference"] = {
          {"p50", number_or_null(ref ? ratio(static_cast<double>(r.p50), static_cast<double>(ref->p50)) : NAN)},
          {"p99", number_or_null(ref ? ratio(static_cast<double>(r.p99), static_cast<double>(ref->p99)) : NAN)},
      };
      const Ratios q = ratios_of(rep.results, r, rep.pingpong);
      j["ratios_p50"] = {{"pingpong", number_or_null(q.pingpong)},
                         {"floor_spsc", number_or_null(q.floor)},
                         {"zmq", number_or_null(q.zmq)},
                         {"unix_stream", number_or_null(q.unix_socket)}};
    }
  }
  return j;
}

nlohmann::json report_json(const RunReport& rep) {
  const MsgBenchOptions& opt = rep.opt;
  nlohmann::json jt = nlohmann::json::array();
  for (auto* t : rep.transports)
    jt.push_back({{"name", t->name()}, {"fanout", fanout_name(t->fanout())}, {"description", t->description()}});
  nlohmann::json thr = nlohmann::json::array();
  nlohmann::json lat = nlohmann::json::array();
  for (const auto& r : rep.results) (r.spec.measure == Measure::throughput ? thr : lat).push_back(cell_json(rep, r));
  const double load_before = rep.load_before, load_after = rep.load_after, elapsed = rep.elapsed;
  const std::vector<int>& cpus = rep.cpus;
  const bool any_failed = rep.any_failed;
    nlohmann::json out = {
      {"benchmark", opt.json_name},
      {"machine", cli::machine_json()},
      {"load_average_1min", {{"before", load_before}, {"after", load_after}}},
      {"reference", opt.reference},
      {"ratio", "this transport's figure / the reference's figure for the same cell"},
      {"options",
       {{"fan", opt.fan},
        {"throughput_seconds", opt.seconds},
        {"throughput_messages", opt.messages},
        {"throughput_reader", reader_name(opt.throughput_reader)},
        {"latency_seconds", opt.latency_seconds},
        {"min_samples", opt.min_samples},
        {"rate", opt.rate},
        {"rate_bytes", opt.rate_bytes},
        {"buffer_bytes", opt.buffer_bytes},
        {"pinned_cpus", cpus},
        {"zero_copy", !opt.copy_only},
        {"batch", opt.batch},
        {"load_processes", opt.load},
        {"clock", "CLOCK_MONOTONIC"}}},
      {"pingpong",
       rep.pingpong.round_trips == 0
           ? nlohmann::json(nullptr)
           : nlohmann::json{{"round_trips", rep.pingpong.round_trips},
                            {"one_way_p50_ns", rep.pingpong.one_way_p50_ns},
                            {"one_way_p99_ns", rep.pingpong.one_way_p99_ns}}},
      {"transports", jt},
      {"throughput", thr},
      {"latency", lat},
      {"elapsed_s", elapsed},
      {"failed", any_failed},
  };
  if (!rep.context.json.is_null()) out["setup"] = rep.context.json;
  if (!opt.subject.empty()) {
    nlohmann::json jg = nlohmann::json::array();
    for (const auto& g : rep.goals)
      jg.push_back({{"goal", g.text},
                    {"ratio", g.ratio},
                    {"value", number_or_null(g.value)},
                    {"target", g.target},
                    {"comparison", g.at_least ? ">=" : "<="},
                    {"met", g.measured() ? nlohmann::json(g.met()) : nlohmann::json(nullptr)}});
    out["subject"] = opt.subject;
    out["goals"] = jg;
  }
  return out;
}

// Numbers notes as the tables cite them: "[1]".
class Notes {
 public:
  std::string cite(const CellResult& r) {
    if (r.note.empty()) return {};
    auto it = std::find(notes_.begin(), notes_.end(), r.note);
    if (it == notes_.end()) {
      notes_.push_back(r.note);
      it = notes_.end() - 1;
    }
    return "[" + std::to_string(it - notes_.begin() + 1) + "]";
  }
  const std::vector<std::string>& all() const { return notes_; }

 private:
  std::vector<std::string> notes_;
};

std::string status_cell(const CellResult& r) { return (r.status == Status::skipped ? "skipped: " : "FAILED: ") + r.error; }

void print_throughput(const RunReport& rep, Notes& notes) {
  const MsgBenchOptions& opt = rep.opt;
  const std::vector<CellResult>& results = rep.results;
  char seconds_text[32];
  std::snprintf(seconds_text, sizeof seconds_text, "%.3g s", opt.seconds);
  const std::string run_length =
      opt.messages > 0 ? cli::with_commas(opt.messages) + " messages" : std::string(seconds_text);
  std::printf("\nTHROUGHPUT  %s per cell, %s readers; msg/s = messages received (every copy for broadcast) / time "
              "from start to the last one\n",
              run_length.c_str(),
              reader_name(opt.throughput_reader));
  std::printf("x floor / x zmq / x unix = msg/s over floor-spsc's, ZeroMQ's (PUB/SUB for a broadcast to several "
              "readers, else PUSH/PULL) and unix-stream's, same pattern and size (above 1: faster)\n\n");
  std::printf("%-7s %-8s %-17s %-9s %5s %11s %9s %8s %8s %8s  %s\n", "pattern", "size", "transport", "fan-out",
              "depth", "msg/s", "GB/s", "x floor", "x zmq", "x unix", "");
  std::printf("%s\n", std::string(108, '-').c_str());
  Pattern last_p = Pattern::one_to_one;
  std::size_t last_size = 0;
  bool first = true;
  for (const auto& r : results) {
    if (r.spec.measure != Measure::throughput) continue;
    if (!first && (r.spec.pattern != last_p || r.spec.size != last_size)) std::printf("\n");
    first = false;
    last_p = r.spec.pattern;
    last_size = r.spec.size;
    const std::string fan = r.spec.receivers > 1 ? fanout_name(r.fanout) : "-";
    std::printf("%-7s %-8s %-17s %-9s %5zu ", pattern_label(r.spec.pattern, opt.fan).c_str(),
                size_label(r.spec.size).c_str(), r.transport.c_str(), fan.c_str(), r.spec.depth);
    if (r.status != Status::ok) {
      std::printf("%s\n", status_cell(r).c_str());
      continue;
    }
    const Ratios q = ratios_of(results, r, rep.pingpong);
    std::printf("%11s %9s %8s %8s %8s  %s\n", cli::human_rate(r.msgs_per_s).c_str(), gb_text(r.bytes_per_s).c_str(),
                ratio_text(q.floor).c_str(), ratio_text(q.zmq).c_str(), ratio_text(q.unix_socket).c_str(),
                notes.cite(r).c_str());
  }
}

void print_latency(const RunReport& rep, Notes& notes) {
  const MsgBenchOptions& opt = rep.opt;
  const std::vector<CellResult>& results = rep.results;
  std::printf("\nLATENCY  one-way: receive time - INTENDED send time (message i is due at t0 + i/rate, so a late "
              "sender or a stall counts),\n         CLOCK_MONOTONIC; from the moment the sender starts writing the "
              "payload to receive() / view() returning\n");
  std::printf("rate = min(%s msg/s, %s/s / size), at least %s messages and %.2g s per cell; percentiles from a "
              "log-bucket histogram (<0.8%% high)\n",
              cli::with_commas(static_cast<std::uint64_t>(opt.rate)).c_str(),
              cli::human_bytes(static_cast<std::uint64_t>(opt.rate_bytes)).c_str(),
              cli::with_commas(opt.min_samples).c_str(), opt.latency_seconds);
  std::printf("busy = non-blocking receive in a spin loop; blocking = receive waits in the kernel/library; "
              "x pp / x zmq / x unix = p50 over the ping-pong one-way floor's, ZeroMQ's and unix-stream's (above 1: "
              "slower)\n");
  std::printf("behind = the sender's worst lateness against its schedule (large: the rate saturated the channel, "
              "or the sender lost its CPU)\n\n");
  std::printf("%-7s %-8s %-17s %-8s %8s %8s %9s %9s %9s %9s %7s %7s %7s %9s  %s\n", "pattern", "size", "transport",
              "reader", "rate/s", "samples", "p50", "p99", "p99.9", "max", "x pp", "x zmq", "x unix", "behind", "");
  std::printf("%s\n", std::string(140, '-').c_str());
  std::string last_group;
  for (const auto& r : results) {
    if (r.spec.measure != Measure::latency) continue;
    const std::string group = std::to_string(static_cast<int>(r.spec.pattern)) + "/" + std::to_string(r.spec.size) +
                              "/" + reader_name(r.spec.reader);
    if (!last_group.empty() && group != last_group) std::printf("\n");
    last_group = group;
    std::printf("%-7s %-8s %-17s %-8s %8s ", pattern_label(r.spec.pattern, opt.fan).c_str(),
                size_label(r.spec.size).c_str(), r.transport.c_str(), reader_name(r.spec.reader),
                cli::human_rate(r.spec.rate).c_str());
    if (r.status != Status::ok) {
      std::printf("%s\n", status_cell(r).c_str());
      continue;
    }
    const Ratios q = ratios_of(results, r, rep.pingpong);
    std::printf("%8s %9s %9s %9s %9s %7s %7s %7s %9s  %s\n", cli::with_commas(r.samples).c_str(),
                ns_text(static_cast<double>(r.p50)).c_str(), ns_text(static_cast<double>(r.p99)).c_str(),
                ns_text(static_cast<double>(r.p999)).c_str(), ns_text(static_cast<double>(r.max)).c_str(),
                ratio_text(r.spec.reader == ReaderMode::busy ? q.pingpong : NAN).c_str(), ratio_text(q.zmq).c_str(),
                ratio_text(q.unix_socket).c_str(), ns_text(static_cast<double>(r.max_behind_ns)).c_str(),
                notes.cite(r).c_str());
  }
}

void print_goals(const RunReport& rep) {
  const MsgBenchOptions& opt = rep.opt;
  std::printf("\ngoals (ratios from this run%s):\n",
              opt.load > 0 ? (", with " + std::to_string(opt.load) + " busy process" + (opt.load == 1 ? "" : "es") +
                              " alongside")
                                 .c_str()
                           : "");
  for (const auto& g : rep.goals) {
    if (!g.measured()) {
      std::printf("  %-78s not measured (its cells did not both run)\n", g.text.c_str());
      continue;
    }
    char value[32];
    std::snprintf(value, sizeof value, "%.3f", g.value);
    std::printf("  %-78s %s = %s  %s\n", g.text.c_str(), g.ratio.c_str(),
                g.at_least ? ratio_text(g.value).c_str() : value, g.met() ? "met" : "NOT met");
  }
}

void print_report(const RunReport& rep) {
  const MsgBenchOptions& opt = rep.opt;
  std::printf("%s: %s\n%s\n", opt.title.c_str(), opt.headline.c_str(), cli::machine_line().c_str());
  std::printf("load average (1 min): %.2f before, %.2f after the run (above 0: other processes competed for the "
              "CPUs)\n",
              rep.load_before, rep.load_after);
  std::printf("pinning: %s; zero-copy paths: %s; batch transports: %zu messages per loan; load: %d busy-looping "
              "process%s alongside every cell\n",
              rep.cpus.empty() ? "none" : "round-robin over the allowed CPUs",
              opt.copy_only ? "off" : "used where offered", opt.batch, opt.load, opt.load == 1 ? "" : "es");
  if (rep.pingpong.round_trips > 0)
    std::printf("floor: a cache line ping-pong between two processes, %s round trips: one-way p50 %s, p99 %s\n\n",
                cli::with_commas(rep.pingpong.round_trips).c_str(),
                ns_text(static_cast<double>(rep.pingpong.one_way_p50_ns)).c_str(),
                ns_text(static_cast<double>(rep.pingpong.one_way_p99_ns)).c_str());
  else
    std::printf("\n");
  for (const auto& line : rep.context.lines) std::printf("%s\n", line.c_str());
  if (!rep.context.lines.empty()) std::printf("\n");
  std::printf("transports (1->n fan-out: share = each message to one reader, broadcast = to every reader):\n");
  for (auto* t : rep.transports)
    std::printf("  %-17s %-9s %s\n", t->name().c_str(), fanout_name(t->fanout()), t->description().c_str());
  Notes notes;
  if (measures(opt, Measure::throughput)) print_throughput(rep, notes);
  if (measures(opt, Measure::latency)) print_latency(rep, notes);
  if (!notes.all().empty()) {
    std::printf("\nnotes:\n");
    for (std::size_t i = 0; i < notes.all().size(); ++i) std::printf("  [%zu] %s\n", i + 1, notes.all()[i].c_str());
  }
  if (!opt.subject.empty()) print_goals(rep);
  int failed = 0, skipped = 0;
  for (const auto& r : rep.results) {
    failed += r.status == Status::failed;
    skipped += r.status == Status::skipped;
  }
  std::printf("\n%zu cells: %zu ok, %d skipped, %d failed; elapsed %.1f s\n", rep.results.size(),
              rep.results.size() - static_cast<std::size_t>(failed + skipped), skipped, failed, rep.elapsed);
}

}  // namespace

PingPong measure_pingpong(std::uint64_t round_trips) {
  // Two cache lines in shared memory: the parent writes i into one, the
  // child answers i in the other; a round trip moves each line once each way.
  struct Lines {
    alignas(64) std::atomic<std::uint64_t> ping{0};
    alignas(64) std::atomic<std::uint64_t> pong{0};
  };
  PingPong out;
  SharedBlock<Lines> lines;
  if (!lines) return out;
  Children child;
  Lines& l = *lines;
  const std::uint64_t n = round_trips;
  const pid_t pid = child.spawn([&l, n] {
    for (std::uint64_t i = 1; i <= n; ++i) {
      const std::int64_t give_up = now_ns() + 1'000'000'000;
      for (std::uint32_t k = 0; l.ping.load(acquire) != i; ++k)
        if ((k & 0xffff) == 0 && now_ns() > give_up) return 1;  // the parent went away
      l.pong.store(i, release);
    }
    return 0;
  });
  if (pid < 0) return out;
  std::vector<std::uint64_t> rt;
  rt.reserve(n);
  for (std::uint64_t i = 1; i <= n; ++i) {
    const std::int64_t start = now_ns();
    l.ping.store(i, release);
    for (std::uint32_t k = 0; l.pong.load(acquire) != i; ++k)
      if ((k & 0xffff) == 0 && now_ns() - start > 1'000'000'000) return out;  // the child died: no floor
    rt.push_back(static_cast<std::uint64_t>(now_ns() - start));
  }
  (void)child.wait(pid, SteadyClock::now() + std::chrono::seconds(2));
  std::sort(rt.begin(), rt.end());
  out.round_trips = n;
  out.one_way_p50_ns = rt[rt.size() / 2] / 2;
  out.one_way_p99_ns = rt[rt.size() * 99 / 100] / 2;
  return out;
}

int run_msg_bench(const MsgBenchOptions& opt, std::vector<std::unique_ptr<TransportFactory>>& all) {
  const auto run_start = SteadyClock::now();
  const double load_before = cli::load_average();  // other work skews every figure: shown before and after
  const std::vector<TransportFactory*> transports = selected_transports(opt, all);
  const std::vector<int> cpus = pinning_cpus(opt);
  // The floor first, on the same machine in the same state as the cells.
  const PingPong pingpong = opt.pingpong ? measure_pingpong() : PingPong{};
  std::vector<Planned> plan = plan_cells(opt, transports, cpus);
  const std::vector<CellResult> results = run_cells(opt, plan);
  const double elapsed = std::chrono::duration<double>(SteadyClock::now() - run_start).count();
  const double load_after = cli::load_average();

  bool any_failed = false;
  for (const auto& r : results) any_failed |= r.status == Status::failed;
  ReportContext context;
  if (opt.context) context = opt.context();
  any_failed |= context.failed;
  const std::vector<Goal> goals = goals_of(results, opt.subject, opt.goals, pingpong);
  RunReport rep{opt, transports, cpus, results, goals, context, pingpong, load_before, load_after, elapsed, any_failed};

  if (opt.json || !opt.json_out.empty()) {
    const nlohmann::json out = report_json(rep);
    if (!opt.json_out.empty()) {
      std::FILE* f = std::fopen(opt.json_out.c_str(), "w");
      const std::string text = out.dump(2) + "\n";
      if (f == nullptr || std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
        std::fprintf(stderr, "%s: cannot write %s: %s\n", opt.title.c_str(), opt.json_out.c_str(), std::strerror(errno));
        any_failed = true;
      }
      if (f != nullptr) std::fclose(f);
    }
    if (opt.json) {
      std::cout << out.dump(2) << '\n';
      return any_failed ? 1 : 0;
    }
  }

  print_report(rep);
  return any_failed ? 1 : 0;
}

}  // namespace colo::bench
