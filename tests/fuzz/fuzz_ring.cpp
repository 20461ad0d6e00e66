// Fuzz target: a ring image (shm/ring.hpp, the body of every topic and
// queue segment) scribbled over by a hostile or broken process, then used
// by readers and by writers, whose claims run the reclaim path.
// Feeds: input byte 0 chooses the ring (bit 0: queue, else topic; bit 1:
// acks; bit 2: exclusive writer); a healthy 4 KiB ring is made and some
// messages published and read; the rest of the input is patches
// (fuzz_support.hpp, apply_patches) over the whole image, control block and
// records. Then: Ring::attach; a reader opened before the damage and new
// readers (topic: block, lossy, block_untagged, from a sequence; queue: a
// consumer) read until empty or corrupt; a writer publishes until the ring
// is full (each claim reclaims). Checks: no crash, no sanitizer report, no
// hang (every loop here is bounded, so a hang is the ring's); every view
// handed out lies inside the ring's data and within max_message. Seeds:
// tests/fuzz/corpus/ring/ (make_seeds.cpp).
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "fuzz_support.hpp"
#include "ring.hpp"

namespace {

using namespace colo::shm;

constexpr std::uint64_t kCapacity = kMinRingCapacity;
constexpr std::uint32_t kMaxMessage = 512;

std::byte* image() {
  static void* memory = [] {
    void* m = ::mmap(nullptr, Ring::bytes_for(kCapacity), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) std::abort();
    return m;
  }();
  return static_cast<std::byte*>(memory);
}

void check_view(const View& view) {
  const std::byte* data = image() + sizeof(RingControl);
  if (view.size > kMaxMessage || view.data < data || view.data + view.size > data + kCapacity) std::abort();
  (void)colo::fuzz::touch(view.data, view.size);
  if (view.metadata != nullptr) {
    if (view.metadata < data || view.metadata + view.metadata_size > data + kCapacity) std::abort();
    (void)colo::fuzz::touch(view.metadata, view.metadata_size);
  }
}

// Reads (and releases) until empty or corrupt, a bounded number of batches.
void read_some(Ring& ring, ReaderHandle& reader) {
  View views[16];
  for (int batch = 0; batch < 64; ++batch) {
    ReadStatus status{};
    const std::uint32_t n = ring.try_read(reader, views, 16, status);
    for (std::uint32_t i = 0; i < n; ++i) check_view(views[i]);
    if (n > 0) ring.release(reader);
    if (n == 0) return;
  }
}

// Publishes one message of `size` bytes; false when the ring refuses.
bool publish(Ring& ring, PublisherHandle& writer, std::uint32_t size, std::uint64_t value) {
  Claim claim;
  if (ring.try_claim(writer, 1, size, claim) != ClaimStatus::ok) return false;
  if (std::byte* payload = ring.next_record(claim, size)) std::memset(payload, static_cast<int>(value), size);
  ring.commit(writer, claim);
  ring.finish(writer, claim);
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t bytes = Ring::bytes_for(kCapacity);
  std::memset(image(), 0, bytes);
  RingConfig config;
  config.kind = (data[0] & 1) != 0 ? RingKind::queue : RingKind::topic;
  config.capacity = kCapacity;
  config.max_message = kMaxMessage;
  config.acks = config.kind == RingKind::queue && (data[0] & 2) != 0;
  config.exclusive = (data[0] & 4) != 0;
  config.history = config.kind == RingKind::topic ? 4 : 0;
  auto created = Ring::create(image(), bytes, config);
  if (!created) std::abort();
  Ring ring = *created;
  const bool queue = config.kind == RingKind::queue;

  // A healthy history: a reader that keeps up, messages of several sizes,
  // enough of them to wrap the ring once.
  auto early_reader = ring.open_reader(queue ? ReaderMode::consumer : ReaderMode::block);
  auto writer = ring.open_publisher();
  if (!early_reader || !writer) std::abort();
  for (std::uint64_t i = 0; i < 40; ++i) {
    if (!publish(ring, *writer, static_cast<std::uint32_t>(8 + (i * 37) % 200), i)) std::abort();
    if (i % 4 == 3) read_some(ring, *early_reader);
  }

  colo::fuzz::apply_patches(std::span(data + 1, size - 1), std::span(image(), bytes));

  // Whoever attaches now sees the damage; the early reader and the writer
  // were there when it happened.
  auto attached = Ring::attach(image(), bytes);
  read_some(ring, *early_reader);
  if (attached) {
    Ring& damaged = *attached;
    if (queue) {
      if (auto consumer = damaged.open_reader(ReaderMode::consumer)) {
        read_some(damaged, *consumer);
        damaged.close_reader(*consumer);
      }
    } else {
      for (auto mode : {ReaderMode::block, ReaderMode::lossy, ReaderMode::block_untagged}) {
        if (auto reader = damaged.open_reader(mode, 4)) {
          read_some(damaged, *reader);
          damaged.close_reader(*reader);
        }
      }
      if (auto from = damaged.open_reader(ReaderMode::lossy, 0, std::uint64_t{5})) {
        read_some(damaged, *from);
        damaged.close_reader(*from);
      }
    }
    if (auto second = damaged.open_publisher()) {
      for (std::uint64_t i = 0; i < 48 && publish(damaged, *second, 100, i); ++i) {}
      damaged.close_publisher(*second);
    }
  }
  // The writer that was there: its claims reclaim over the damage too.
  for (std::uint64_t i = 0; i < 48 && publish(ring, *writer, 60, i); ++i) read_some(ring, *early_reader);
  ring.close_publisher(*writer);
  ring.close_reader(*early_reader);
  return 0;
}
