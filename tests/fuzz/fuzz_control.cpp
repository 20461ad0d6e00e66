// Fuzz target: control-socket requests, what colod reads from `colo` and
// libcolo on its control socket.
// Feeds: the input as one ControlRequest (Cap'n Proto: status, declareTopic,
// pauseLink, resumeLink) to a started colod's request handler. Checks: no
// crash, no sanitizer report, no hang; every request gets a reply that is a
// well-formed ControlReply, and a refused one says why (bridge/daemon.cpp,
// answer_control). Seeds: one request of each kind,
// tests/fuzz/corpus/control/.
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <span>

#include "control.capnp.h"
#include "fuzz_daemon.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // declareTopic creates topics: a fresh daemon (and namespace) every 32
  // inputs keeps what they take of /dev/shm bounded.
  static std::unique_ptr<colo::bridge::Daemon> daemon;
  static unsigned inputs = 0, generation = 0;
  if (inputs++ % 32 == 0) {
    daemon.reset();
    daemon = colo::fuzz::start_daemon("control" + std::to_string(generation++));
  }
  const auto reply_bytes = daemon->answer_control(std::span(reinterpret_cast<const std::byte*>(data), size));
  // The reply must read back as a ControlReply; a refusal must say why.
  const kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(reply_bytes.data()),
                                              reply_bytes.size() / sizeof(capnp::word));
  if (reply_bytes.size() % sizeof(capnp::word) != 0) std::abort();
  capnp::FlatArrayMessageReader reader(words);
  const auto reply = reader.getRoot<colo::wire::ControlReply>();
  if (!reply.getOk() && reply.getError().size() == 0) std::abort();
  return 0;
}
