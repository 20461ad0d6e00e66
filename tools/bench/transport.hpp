// tools/bench/transport.hpp — what the message-passing benchmark measures: a
// one-direction channel between processes, behind a small virtual interface
// that colo's Queue and Topic and the IPC baselines all implement (colo's
// with their loan/commit zero-copy path).
//
// Life of one channel in one benchmark cell (msg_bench.cpp drives it):
//
//   parent                       senders (forked)            receivers (forked)
//   ------                       ----------------            ------------------
//   factory.setup(config)
//   fork ───────────────────────▶ open_sender(i)              open_receiver(j)
//                                send() / loan()+commit() ──▶ receive() / view()+release()
//   factory.connected()          (every receiver has heard from every sender:
//                                 names may go, the open ends keep it alive)
//   wait for the children (bounded; a stuck child is SIGKILLed)
//   factory.teardown()           removes every name and file, even after a failure
//
// Errors: "nothing yet" / "no space yet" is an empty result, never an
// exception; a real failure (a syscall error, a peer that vanished mid-frame,
// a message larger than the buffer) throws TransportError with the reason.
// A combination the transport cannot do on this machine (a size over a
// kernel limit) makes setup() throw Unsupported, and the cell is reported as
// skipped with that reason.
#pragma once

#include <chrono>     // timeouts
#include <cstddef>    // size_t, std::byte
#include <cstdint>    // spin_until_ready
#include <functional> // RemoteTopic::check
#include <memory>     // unique_ptr from the factory
#include <optional>   // "nothing yet" results
#include <span>       // message bytes
#include <stdexcept>  // TransportError, Unsupported
#include <string>
#include <vector>     // baseline_transports()

#include "colo/internal/clock.hpp"  // spin_until_ready

namespace colo::bench {

using Nanos = std::chrono::nanoseconds;
// Timeout of send/receive/loan/commit that means "do not wait at all".
inline constexpr Nanos kNoWait{0};

// Who talks to whom. `fan` in Config says how many are "many" (default 4).
enum class Pattern {
  one_to_one,    // 1 sender  -> 1 receiver
  many_to_one,   // N senders -> 1 receiver (every message reaches it)
  one_to_many,   // 1 sender  -> N receivers: see Fanout
  many_to_many,  // N senders -> N receivers: see Fanout
};

// What one_to_many means for a transport.
enum class Fanout {
  share,      // work queue: each message goes to exactly one receiver
  broadcast,  // pub/sub: every receiver gets every message
};

// "1-1", "n-1", "1-n": the names on the command line and in JSON.
inline const char* pattern_key(Pattern p) noexcept {
  switch (p) {
    case Pattern::one_to_one: return "1-1";
    case Pattern::many_to_one: return "n-1";
    case Pattern::one_to_many: return "1-n";
    case Pattern::many_to_many: return "n-n";
  }
  return "?";
}
inline const char* fanout_name(Fanout f) noexcept { return f == Fanout::share ? "share" : "broadcast"; }

// What the parent knows before fork; the same for setup() and every open_*().
struct Config {
  Pattern pattern = Pattern::one_to_one;
  int senders = 1;
  int receivers = 1;
  std::size_t message_size = 0;  // every message of the cell has exactly this size
  // Messages the channel should be able to hold (queue depth, ZeroMQ high-water
  // mark), chosen by the harness from a byte budget so that every transport
  // buffers about as much. Transports with a fixed kernel buffer (sockets,
  // pipes) keep their defaults and say so in their description.
  std::size_t depth = 1024;
  std::string tag;      // unique for this cell: "colo-msgbench-<pid>-<cell>"; names derive from it
  std::string tmp_dir;  // where file-system names go ($TMPDIR or /tmp)
};

class TransportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// setup(): this transport cannot run this configuration here; the message says why.
class Unsupported : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The sending end, owned by one process (and one thread) at a time.
class Sender {
 public:
  virtual ~Sender() = default;

  // Copies `message` into the channel. Waits up to `timeout` for space
  // (kNoWait: not at all). Returns false if there was no space in time;
  // nothing was sent and the call may be repeated. Throws TransportError.
  [[nodiscard]] virtual bool send(std::span<const std::byte> message, Nanos timeout) = 0;

  // Optional zero-copy path. If zero_copy(), the harness writes each message
  // in place: loan(size) gives `size` writable bytes (empty span: no space
  // within `timeout`), the caller fills them, and commit() publishes them
  // (false: not accepted within `timeout`; the loan is kept, call commit
  // again). At most one loan at a time; the next loan() or the destructor
  // abandons an uncommitted one.
  virtual bool zero_copy() const noexcept { return false; }
  virtual std::span<std::byte> loan(std::size_t /*size*/, Nanos /*timeout*/) { return {}; }
  [[nodiscard]] virtual bool commit(Nanos /*timeout*/) { return false; }

  // Optional batch path (throughput cells). If batches(), the harness loans
  // up to `count` messages of `size` bytes at once: loan_batch returns how
  // many it got (0: no space within `timeout`), batch_slot(i) gives each one's
  // bytes, and commit_batch() publishes them all together. One batch at a
  // time; the single-message calls above still work (warm-up, latency).
  virtual bool batches() const noexcept { return false; }
  virtual std::size_t loan_batch(std::size_t /*count*/, std::size_t /*size*/, Nanos /*timeout*/) { return 0; }
  virtual std::span<std::byte> batch_slot(std::size_t /*i*/) { return {}; }
  virtual void commit_batch() {}
};

// The receiving end, owned by one process (and one thread) at a time.
class Receiver {
 public:
  virtual ~Receiver() = default;

  // Copies the next message into `buffer` and returns its size, or nullopt if
  // none arrived within `timeout` (kNoWait: a non-blocking poll, for busy
  // polling; a positive timeout: a blocking wait in the kernel or the
  // library, for blocking readers). Throws TransportError, also if the
  // message does not fit.
  virtual std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) = 0;

  // Optional zero-copy path. If zero_copy(), view() returns the next message
  // in place (nullopt as for receive), valid until release() — which the
  // caller calls before the next view().
  virtual bool zero_copy() const noexcept { return false; }
  virtual std::optional<std::span<const std::byte>> view(Nanos /*timeout*/) { return std::nullopt; }
  virtual void release() noexcept {}

  // Optional batch path. If batches(), view_batch(max, timeout) makes up to
  // `max` available messages readable in place (0: none within `timeout`),
  // batch_message(i) gives each, and release_batch() releases them all,
  // before the next view_batch().
  virtual bool batches() const noexcept { return false; }
  virtual std::size_t view_batch(std::size_t /*max*/, Nanos /*timeout*/) { return 0; }
  virtual std::span<const std::byte> batch_message(std::size_t /*i*/) { return {}; }
  virtual void release_batch() noexcept {}
};

// One kind of channel ("zmq-ipc-pushpull"). The parent calls setup, then the
// forked children call open_*, then the parent calls connected and teardown.
// One configuration at a time: setup() again only after teardown().
class TransportFactory {
 public:
  virtual ~TransportFactory() = default;

  virtual std::string name() const = 0;         // key on the command line and in JSON
  virtual std::string description() const = 0;  // one line: mechanism, buffering, API used
  virtual bool supports(Pattern p) const = 0;
  virtual Fanout fanout() const = 0;            // what one_to_many means here

  // Parent, before fork: create the endpoints and names. Returns a note for
  // the report ("" if none, e.g. "depth 12: RLIMIT_MSGQUEUE"). Throws
  // Unsupported (skip this cell) or TransportError (the cell failed).
  virtual std::string setup(const Config& config) = 0;
  // In a forked child; `index` is 0..senders-1 or 0..receivers-1.
  virtual std::unique_ptr<Sender> open_sender(int index) = 0;
  virtual std::unique_ptr<Receiver> open_receiver(int index) = 0;
  // Parent, once every receiver has heard from every sender: every end is
  // open and connected, so names may be removed now (a name removed early
  // cannot be left behind by a run that is killed). Default: nothing.
  virtual void connected() {}
  // Parent, after the children have exited or been killed: remove every name
  // and file, close what setup() opened. Idempotent; never throws.
  virtual void teardown() noexcept = 0;
};

// Retries `ready` (true: done), spinning with a pause, until `timeout`
// passes (kNoWait: one look). For the transports that always poll.
template <typename Ready>
bool spin_until_ready(Ready ready, Nanos timeout) {
  if (ready()) return true;
  if (timeout == kNoWait) return false;
  const std::uint64_t until = internal::monotonic_ns() + static_cast<std::uint64_t>(timeout.count());
  for (int i = 0;; ++i) {
    __builtin_ia32_pause();
    if (ready()) return true;
    if ((i & 255) == 0 && internal::monotonic_ns() >= until) return false;
  }
}

// The IPC baselines (transports.cpp), in the order the tables list them:
// floor-spsc, zmq-ipc-pushpull, zmq-ipc-pubsub, unix-stream, pipe, posix-mq,
// boost-mq.
std::vector<std::unique_ptr<TransportFactory>> baseline_transports();

// The hardware floor (transports.cpp): fixed 64-byte aligned slots in shared
// memory, one writer, one reader, cached indices, one release store per
// message and nothing else; 1->1 only. What a shared-memory channel could do
// on this machine at best.
std::unique_ptr<TransportFactory> floor_spsc_transport();

// iceoryx2 (transport_iceoryx2.cpp), loaded from the library that
// COLO_BENCH_ICEORYX2 names (built by tools/bench/iceoryx2/build.sh); null
// when the variable is unset. Throws TransportError if it cannot be loaded.
std::unique_ptr<TransportFactory> iceoryx2_transport();

// ZeroMQ PUSH (connect) -> PULL (bind) over tcp://127.0.0.1 on a free port
// (transports.cpp): the baseline of `colo bench bridge`, not in the list above.
std::unique_ptr<TransportFactory> zmq_tcp_transport();

// colo's own (colo_transports.cpp): a Queue (share, with acks) and a Topic
// (broadcast), through the per-message API; with `batch` > 1, through the
// batch API (LoanBatch of up to `batch` messages, receive_batch_for), named
// "...-batch". One sender: the object is made with exclusive_publisher.
std::unique_ptr<TransportFactory> colo_queue_transport(std::size_t batch = 1);
std::unique_ptr<TransportFactory> colo_topic_transport(std::size_t batch = 1);

// A colo Topic that exists in two namespaces, carried between them by
// something else (`colo bench bridge`: two colod daemons). Senders publish in
// `sender_ns` (loan/commit), receivers subscribe with Backpressure::block in
// `receiver_ns` (in-place views); nothing is created or removed here.
struct RemoteTopic {
  std::string name;         // transport name: "colo-bridge"
  std::string description;  // one line for the report
  std::string topic;        // object name, the same in both namespaces
  std::string sender_ns, receiver_ns;
  std::size_t max_message = 0;  // larger sizes are skipped (Unsupported)
  std::string note;             // setup()'s note for every cell ("ring 64 MiB per host")
  // Before each cell: "" if the carrier still works, else why not (the cell
  // fails with it rather than timing out). May be empty.
  std::function<std::string()> check;
};
std::unique_ptr<TransportFactory> colo_remote_topic_transport(RemoteTopic topic);

}  // namespace colo::bench
