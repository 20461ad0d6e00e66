// Fuzz target: a segment header (the first 512 bytes of every colo
// segment, shm/segment.hpp), as a hostile or broken process could leave it.
// Feeds: the input as a whole segment file (header and body) in a tmpfs
// directory, then the code every opener and `colo ls`/`colo gc` run on it:
// Segment::inspect, Segment::open for each kind (no wait) and
// Segment::reclaim_if_abandoned. Checks: no crash, no sanitizer report, no
// hang; what is not a healthy segment of the asked kind is an error (and the
// file is removed only by reclaim, and only if abandoned). Seeds: real
// segments of each kind and state, tests/fuzz/corpus/segment/.
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "fuzz_support.hpp"
#include "segment.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace colo::shm;
  static const std::string path = colo::fuzz::private_dir() + "/colo.fuzz.segment";
  const std::span input(data, size);
  colo::fuzz::write_file(path, input);
  auto info = Segment::inspect(path);
  if (info && info->header_valid && info->file_size != size) std::abort();
  for (auto kind : {SegmentKind::registry, SegmentKind::lock, SegmentKind::queue, SegmentKind::topic,
                    SegmentKind::lock_table}) {
    auto segment = Segment::open(path, kind, std::chrono::milliseconds(0));
    if (segment && (segment->body_size() + sizeof(SegmentHeader) != size ||
                    segment->header().kind != static_cast<std::uint32_t>(kind)))
      std::abort();
  }
  (void)Segment::reclaim_if_abandoned(path, std::chrono::milliseconds(0));
  return 0;
}
