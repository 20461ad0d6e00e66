// A program that knows colo only as installed: <prefix>/include/colo and
// libcolo through colo.pc. tests/install/check.sh builds it twice (with this
// directory's meson.build, and with a plain `c++ ... $(pkg-config ...)`) and
// runs it with the namespace to use as its argument.
//
// It creates a lock and a topic, takes the lock, publishes one message and
// receives it, lists the namespace, removes both objects and the namespace's
// registry segment, and exits 0 only if every step gave exactly what it
// should (each failure says which step on stderr).
#include <sys/mman.h>  // shm_unlink: the registry segment

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

// Every public header, each by name: a header missing from the install
// fails here even if another one would have pulled it in.
#include <colo/channel.hpp>
#include <colo/error.hpp>
#include <colo/lock.hpp>
#include <colo/names.hpp>
#include <colo/node.hpp>
#include <colo/object.hpp>

namespace {

int fail(const std::string& step, const std::string& why) {
  std::fprintf(stderr, "colo consumer: %s: %s\n", step.c_str(), why.c_str());
  return 1;
}

std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

}  // namespace

int main(int argc, char** argv) {
  using namespace std::chrono_literals;
  if (argc != 2) return fail("usage", "colo-consumer NAMESPACE");
  const std::string ns = argv[1];
  if (auto ok = colo::validate_namespace(ns); !ok) return fail("namespace", ok.error().message);
  const std::string_view text = "hello from an installed libcolo";
  std::uint64_t token = 0;
  std::string listed;
  {
    colo::NodeOptions options;
    options.ns = ns;
    auto node = colo::Node::open(options);
    if (!node) return fail("Node::open", node.error().message);

    auto lock = node->lock("consumer/lock", colo::OpenMode::create);
    if (!lock) return fail("create the lock", lock.error().message);
    auto guard = lock->acquire();
    if (!guard) return fail("acquire the lock", guard.error().message);
    token = guard->fencing_token();
    if (token != 1) return fail("acquire the lock", "fencing token " + std::to_string(token) + ", not 1");
    guard->unlock();

    auto topic = node->topic("consumer/topic", colo::OpenMode::create);
    if (!topic) return fail("create the topic", topic.error().message);
    auto subscriber = topic->subscribe();
    if (!subscriber) return fail("subscribe", subscriber.error().message);
    auto publisher = topic->publisher();
    if (!publisher) return fail("open a publisher", publisher.error().message);
    if (publisher->publish(bytes_of(text), 1s) != colo::SendStatus::ok) return fail("publish", "not sent");
    auto message = subscriber->receive_for(1s);
    if (!message) return fail("receive", "nothing within 1 s");
    const std::string got(reinterpret_cast<const char*>(message->data().data()), message->data().size());
    if (got != text) return fail("receive", "got '" + got + "'");
    message->release();

    auto objects = node->list();
    if (!objects) return fail("list", objects.error().message);
    for (const auto& o : *objects)
      listed += std::string(o.kind ? colo::to_string(*o.kind) : "?") + " " + o.name + " " + colo::state_text(o) + "; ";
    if (listed != "lock consumer/lock ready; topic consumer/topic ready; ")
      return fail("list", "got '" + listed + "'");

    for (const char* name : {"consumer/lock", "consumer/topic"})
      if (auto removed = node->remove(name); !removed) return fail("remove", removed.error().message);
  }
  if (::shm_unlink(("/colo." + ns + ".registry").c_str()) != 0) return fail("remove the registry", "shm_unlink failed");
  std::printf("colo consumer: ok: token %llu, received '%s', listed %s\n", static_cast<unsigned long long>(token),
              std::string(text).c_str(), listed.c_str());
  return 0;
}
