// Fuzz target: federation frames, what colod reads from peers.
// Feeds: the input as one PeerFrame (Cap'n Proto, any kind: hello, data,
// subscribe, credit, lost, batch) to a started colod, once on its listen
// socket from peer beta's session (the receiving side: hello, data, batch,
// lost) and once as beta's answer on our link to it (the origin side: hello,
// subscribe, credit). Checks: no crash, no sanitizer report, no hang; bad
// frames are counted and dropped (bridge/daemon.cpp, on_router_frame and
// on_dealer_frame). Seeds: frames of every kind, tests/fuzz/corpus/frames/.
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <span>

#include "federation.capnp.h"
#include "fuzz_daemon.hpp"

namespace {

// beta's hello, as its colod sends it: makes "beta-1" the session of peer
// beta, so that data, batch and lost frames reach the code that uses them.
std::vector<std::byte> beta_hello() {
  capnp::MallocMessageBuilder builder;
  auto hello = builder.initRoot<colo::wire::PeerFrame>().initHello();
  hello.setNode("beta");
  hello.setProtocol(4);
  hello.setIncarnation(42);
  hello.setNamespace("fuzz");
  const auto words = capnp::messageToFlatArray(builder);
  const auto bytes = words.asBytes();
  return {reinterpret_cast<const std::byte*>(bytes.begin()), reinterpret_cast<const std::byte*>(bytes.end())};
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto daemon = colo::fuzz::start_daemon("frames");
  static const auto hello = beta_hello();
  daemon->feed_listen_frame("beta-1", hello);
  const std::span frame(reinterpret_cast<const std::byte*>(data), size);
  daemon->feed_listen_frame("beta-1", frame);
  daemon->feed_link_frame("beta", frame);
  return 0;
}
