// tests/fuzz/make_seeds.cpp — writes the generated seed corpora of the fuzz
// targets: real frames, requests and segments made by colo's own code, and
// patch lists aimed at the fields of the registry and ring layouts.
//
//   build/tests/fuzz/colo-fuzz-seeds tests/fuzz/corpus
//
// writes corpus/{frames,control,segment,registry,ring}/seed-*; the config
// seeds (corpus/config/) are written by hand. Run it again when a layout or
// schema changes; crashes found by fuzzing are kept beside the seeds as
// crash-* files (docs/testing.md).
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "control.capnp.h"
#include "federation.capnp.h"
#include "fuzz_support.hpp"
#include "registry.hpp"
#include "ring.hpp"
#include "segment.hpp"

namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

fs::path out_dir;

void write_seed(const std::string& target, const std::string& name, const Bytes& bytes) {
  fs::create_directories(out_dir / target);
  std::ofstream(out_dir / target / ("seed-" + name), std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

template <typename Root>
Bytes message(const std::function<void(typename Root::Builder)>& fill) {
  capnp::MallocMessageBuilder builder;
  fill(builder.initRoot<Root>());
  const auto words = capnp::messageToFlatArray(builder);
  const auto bytes = words.asBytes();
  return {bytes.begin(), bytes.end()};
}

void frames() {
  using colo::wire::PeerFrame;
  write_seed("frames", "hello", message<PeerFrame>([](auto f) {
               auto h = f.initHello();
               h.setNode("beta");
               h.setProtocol(4);
               h.setIncarnation(7);
               h.setNamespace("fuzz");
             }));
  for (const char* object : {"t", "l", "q", "r"}) {
    const std::string o = object;
    write_seed("frames", "data-" + o, message<PeerFrame>([&](auto f) {
                 auto d = f.initData();
                 d.setOrigin("beta");
                 d.setObject(o);
                 d.setSequence(1);
                 d.setTimestamp(1);
                 const std::uint8_t payload[] = {'h', 'e', 'l', 'l', 'o'};
                 d.setPayload(capnp::Data::Reader(payload, sizeof payload));
               }));
    write_seed("frames", "batch-" + o, message<PeerFrame>([&](auto f) {
                 auto b = f.initBatch();
                 b.setOrigin("beta");
                 b.setObject(o);
                 auto entries = b.initEntries(3);
                 for (unsigned i = 0; i < 3; ++i) {
                   entries[i].setSequence(2 + i);
                   entries[i].setTimestamp(2 + i);
                   const std::uint8_t payload[] = {'m', static_cast<std::uint8_t>('0' + i)};
                   entries[i].setPayload(capnp::Data::Reader(payload, sizeof payload));
                 }
               }));
    write_seed("frames", "subscribe-" + o, message<PeerFrame>([&](auto f) {
                 auto s = f.initSubscribe();
                 s.setObject(o);
                 s.setFromSequence(1);
                 s.setCredit(16);
               }));
    write_seed("frames", "credit-" + o, message<PeerFrame>([&](auto f) {
                 auto c = f.initCredit();
                 c.setObject(o);
                 c.setMessages(4);
                 c.setReceivedThrough(3);
               }));
  }
  write_seed("frames", "lost-t", message<PeerFrame>([](auto f) {
               auto l = f.initLost();
               l.setObject("t");
               l.setFromSequence(10);
               l.setCount(5);
             }));
}

void control() {
  using colo::wire::ControlRequest;
  write_seed("control", "status", message<ControlRequest>([](auto r) { r.setStatus(); }));
  write_seed("control", "declare-topic", message<ControlRequest>([](auto r) { r.setDeclareTopic("declared"); }));
  write_seed("control", "declare-existing", message<ControlRequest>([](auto r) { r.setDeclareTopic("t"); }));
  write_seed("control", "pause-link", message<ControlRequest>([](auto r) { r.setPauseLink("mirror:t"); }));
  write_seed("control", "resume-link", message<ControlRequest>([](auto r) { r.setResumeLink("mirror:t"); }));
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void segments() {
  using namespace colo::shm;
  const std::string path = colo::fuzz::private_dir() + "/colo.fuzz.seed";
  struct Kind {
    SegmentKind kind;
    const char* name;
  };
  for (const Kind k : {Kind{SegmentKind::registry, "registry"}, Kind{SegmentKind::lock, "lock"},
                       Kind{SegmentKind::queue, "queue"}, Kind{SegmentKind::topic, "topic"},
                       Kind{SegmentKind::lock_table, "lock-table"}}) {
    for (const bool ready : {true, false}) {
      auto segment = Segment::create(path, "seed", k.kind, 64, Permissions{});
      if (!segment) {
        std::fprintf(stderr, "colo-fuzz-seeds: %s\n", segment.error().message.c_str());
        std::exit(1);
      }
      if (ready) segment->publish();
      write_seed("segment", std::string(k.name) + (ready ? "-ready" : "-creating"), read_file(path));
      (void)Segment::unlink(path);
    }
  }
}

// A patch (fuzz_support.hpp, apply_patches): offset, length, bytes.
void patch(Bytes& out, std::uint32_t offset, const Bytes& bytes) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(offset >> (8 * i)));
  out.push_back(static_cast<std::uint8_t>(bytes.size()));
  out.insert(out.end(), bytes.begin(), bytes.end());
}
Bytes le(std::uint64_t value, std::size_t width) {
  Bytes b;
  for (std::size_t i = 0; i < width; ++i) b.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
  return b;
}

void registry() {
  using colo::detail::RegistryEntry;
  using colo::detail::RegistryRecord;
  const auto entry = [](unsigned i) {
    return static_cast<std::uint32_t>(offsetof(RegistryRecord, entries) + i * sizeof(RegistryEntry));
  };
  write_seed("registry", "healthy", {});
  Bytes b;
  patch(b, offsetof(RegistryRecord, capacity), le(0xffffffff, 4));
  patch(b, offsetof(RegistryRecord, count), le(0xffffffff, 4));
  write_seed("registry", "counts", b);
  b.clear();
  patch(b, offsetof(RegistryRecord, layout_version), le(99, 4));
  write_seed("registry", "version", b);
  b.clear();
  patch(b, entry(0) + offsetof(RegistryEntry, state), le(1, 4));  // writing, as if its writer died
  write_seed("registry", "entry-writing", b);
  b.clear();
  patch(b, entry(1) + offsetof(RegistryEntry, kind), le(77, 4));
  patch(b, entry(1) + offsetof(RegistryEntry, scope), le(9, 4));
  write_seed("registry", "entry-kind", b);
  b.clear();
  patch(b, entry(0) + offsetof(RegistryEntry, name), Bytes(255, 'x'));  // no NUL within the name
  patch(b, entry(0) + offsetof(RegistryEntry, name) + 255, Bytes(1, 'y'));
  write_seed("registry", "entry-name-unterminated", b);
  b.clear();
  patch(b, entry(3), le(2, 4));  // a used entry where there was none: a name of "../x"
  patch(b, entry(3) + offsetof(RegistryEntry, kind), le(4, 4));
  patch(b, entry(3) + offsetof(RegistryEntry, name), {'.', '.', '/', 'x', 0});
  write_seed("registry", "entry-planted", b);
  b.clear();
  patch(b, entry(2) + offsetof(RegistryEntry, params), le(~std::uint64_t{0}, 8));
  patch(b, entry(2) + offsetof(RegistryEntry, creator_pid), le(1, 4));
  write_seed("registry", "entry-params", b);
}

void ring() {
  using namespace colo::shm;
  const std::uint32_t data = sizeof(RingControl);
  for (std::uint8_t mode : {0, 1, 3, 4, 5}) write_seed("ring", "healthy-" + std::to_string(mode), {mode});
  struct Aimed {
    const char* name;
    std::uint32_t offset;
    Bytes bytes;
  };
  const Aimed aimed[] = {
      {"tail", offsetof(RingControl, tail), le(0x123456789, 8)},
      {"tail-behind-head", offsetof(RingControl, head), le(~std::uint64_t{0} - 64, 8)},
      {"take", offsetof(RingControl, take), le(1 << 20, 8)},
      {"reclaimed", offsetof(RingControl, reclaimed), le(3, 8)},
      {"capacity", offsetof(RingControl, capacity), le(1 << 13, 8)},
      {"max-message", offsetof(RingControl, max_message), le(0xffffffff, 4)},
      {"reclaim-lock", offsetof(RingControl, reclaim_lock), le(0x0000000100000001, 8)},
      {"record-length", data + 0, le(0x0000010000000fff, 8)},
      {"record-pad", data + 16, le(0x0000020000000030, 8)},
      {"publisher-claim", offsetof(RingControl, publishers) + offsetof(PublisherSlot, claim_pos), le(64, 8)},
      {"reader-cursor", offsetof(RingControl, readers) + offsetof(ReaderSlot, cursor_pos), le(0xfffffff0, 8)},
      {"reader-hold", offsetof(RingControl, readers) + offsetof(ReaderSlot, hold_pos), le(16, 8)},
  };
  for (const auto& a : aimed)
    for (std::uint8_t mode : {0, 1}) {
      Bytes b{mode};
      patch(b, a.offset, a.bytes);
      write_seed("ring", std::string(a.name) + "-" + (mode == 0 ? "topic" : "queue"), b);
    }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR (tests/fuzz/corpus)\n", argv[0]);
    return 2;
  }
  out_dir = argv[1];
  frames();
  control();
  segments();
  registry();
  ring();
  return 0;
}
