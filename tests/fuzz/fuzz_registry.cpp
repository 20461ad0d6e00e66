// Fuzz target: a namespace's registry image (broker/registry.hpp, the table
// of objects every process of the namespace shares) scribbled over by a
// hostile or broken process.
// Feeds: a namespace with a topic t, a queue q and a lock k; the input is
// patches (fuzz_support.hpp, apply_patches) over the registry's body, its
// metadata and entries. Its first 64 bytes, the glibc robust mutex, are
// left alone: its word is the kernel's futex protocol, whose damage no
// reader can tell from a holder; each input would wait out the registry's
// 5 s lock timeout (test_node.cpp tests that timeout once).
// Then what `colo ls`, `colo info`, opening objects, creating and removing
// one, and `colo gc` run on it. The healthy image is put back after each
// input. Checks: no crash, no sanitizer report, no hang; damage is reported
// as errors or as corrupt objects. Seeds: tests/fuzz/corpus/registry/.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "colo/node.hpp"
#include "fuzz_support.hpp"
#include "registry.hpp"

namespace {

struct Fixture {
  std::optional<colo::Node> node;
  std::string registry_file;
  std::byte* body = nullptr;  // the registry's body, mapped
  std::size_t body_size = 0;
  std::vector<std::byte> healthy;  // the body as it was set up
};

Fixture& fixture() {
  static Fixture f = [] {
    Fixture made;
    colo::NodeOptions options;
    options.ns = "fuzz";
    options.shm_dir = colo::fuzz::private_dir();
    options.ready_timeout = std::chrono::milliseconds(0);
    auto node = colo::Node::open(options);
    if (!node) std::abort();
    made.node.emplace(std::move(node).value());
    colo::TopicOptions topic;
    topic.capacity = 4096;
    topic.max_message = 64;
    colo::QueueOptions queue;
    queue.capacity = 4096;
    queue.max_message = 64;
    if (!made.node->topic("t", colo::OpenMode::create, topic) || !made.node->queue("q", colo::OpenMode::create, queue) ||
        !made.node->lock("k", colo::OpenMode::create))
      std::abort();
    for (const auto& entry : std::filesystem::directory_iterator(options.shm_dir))
      if (entry.path().filename() == "colo.fuzz.registry") made.registry_file = entry.path();
    const int fd = ::open(made.registry_file.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) std::abort();
    const std::size_t size = sizeof(colo::shm::SegmentHeader) + sizeof(colo::detail::RegistryRecord);
    void* mapped = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (mapped == MAP_FAILED) std::abort();
    made.body = static_cast<std::byte*>(mapped) + sizeof(colo::shm::SegmentHeader);
    made.body_size = sizeof(colo::detail::RegistryRecord);
    made.healthy.assign(made.body, made.body + made.body_size);
    return made;
  }();
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture& f = fixture();
  auto& node = *f.node;
  constexpr std::size_t kMutexBytes = 64;
  colo::fuzz::apply_patches(std::span(data, size), std::span(f.body, f.body_size), 0, kMutexBytes);

  if (auto list = node.list())
    for (const auto& info : *list) (void)colo::state_text(info);
  for (const char* name : {"t", "q", "k", "missing"})
    if (auto info = node.info(name)) (void)colo::state_text(*info);
  (void)node.topic("t", colo::OpenMode::open);
  (void)node.queue("q", colo::OpenMode::open);
  (void)node.lock("k", colo::OpenMode::open);
  (void)node.gc(true);
  colo::TopicOptions small;
  small.capacity = 4096;
  small.max_message = 64;
  if (node.topic("n", colo::OpenMode::create, small)) (void)node.remove("n");
  (void)node.gc(false);

  // The healthy namespace again, for the next input: the registry, and no
  // segment but those of t, q and k (gc and remove may have taken some).
  std::memcpy(f.body, f.healthy.data(), f.body_size);
  ::unlink((colo::fuzz::private_dir() + "/colo.fuzz.obj.n").c_str());
  return 0;
}
