// tools/bench/transport_iceoryx2.cpp — iceoryx2, the best open-source
// shared-memory peer, as an optional transport of `colo bench queue|topic`.
//
// iceoryx2 is a Rust crate; tools/bench/iceoryx2/ wraps it in a shared
// library with a small C ABI, built by tools/bench/iceoryx2/build.sh (cargo,
// crates.io), never by Meson or CI. colo-bench loads that library with
// dlopen when COLO_BENCH_ICEORYX2 names it, so the default build carries no
// Rust toolchain and no trace of iceoryx2.
#include <dlfcn.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include "transport.hpp"

namespace colo::bench {
namespace {

// The library's C ABI (tools/bench/iceoryx2/src/lib.rs).
struct Iceoryx2Api {
  const char* (*last_error)();
  void* (*publisher_open)(const char* name, std::size_t max_size, std::size_t depth);
  std::uint8_t* (*loan)(void* sender, std::size_t size);
  int (*send)(void* sender);
  void (*publisher_close)(void* sender);
  void* (*subscriber_open)(const char* name, std::size_t depth);
  int (*receive)(void* receiver, const std::uint8_t** data, std::size_t* size);
  void (*release)(void* receiver);
  void (*subscriber_close)(void* receiver);
};

template <typename F>
void bind(void* library, const char* symbol, F& function, const std::string& path) {
  function = reinterpret_cast<F>(::dlsym(library, symbol));
  if (function == nullptr) throw TransportError(path + ": no symbol " + symbol + " (rebuild it with build.sh)");
}

Iceoryx2Api load_api(const std::string& path) {
  void* library = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);  // kept for the process's life
  if (library == nullptr) throw TransportError("COLO_BENCH_ICEORYX2: cannot load " + path + ": " + ::dlerror());
  Iceoryx2Api api{};
  bind(library, "colo_ix2_last_error", api.last_error, path);
  bind(library, "colo_ix2_publisher_open", api.publisher_open, path);
  bind(library, "colo_ix2_loan", api.loan, path);
  bind(library, "colo_ix2_send", api.send, path);
  bind(library, "colo_ix2_publisher_close", api.publisher_close, path);
  bind(library, "colo_ix2_subscriber_open", api.subscriber_open, path);
  bind(library, "colo_ix2_receive", api.receive, path);
  bind(library, "colo_ix2_release", api.release, path);
  bind(library, "colo_ix2_subscriber_close", api.subscriber_close, path);
  return api;
}

class Iceoryx2Factory final : public TransportFactory {
 public:
  explicit Iceoryx2Factory(const std::string& path) : api_(load_api(path)) {}
  std::string name() const override { return "iceoryx2"; }
  std::string description() const override {
    return "iceoryx2 0.10 publish-subscribe of byte slices (loan, write in place, send; receive in place), "
           "subscriber buffer = depth, no overflow, publisher retries until delivered; receivers always poll";
  }
  bool supports(Pattern p) const override { return p == Pattern::one_to_one; }
  Fanout fanout() const override { return Fanout::broadcast; }
  std::string setup(const Config& config) override {
    service_ = "colo-bench/" + config.tag;
    size_ = config.message_size;
    depth_ = config.depth;
    return "service " + service_ + ", buffer " + std::to_string(depth_) + " samples";
  }
  std::unique_ptr<Sender> open_sender(int) override { return std::make_unique<Publisher>(*this); }
  std::unique_ptr<Receiver> open_receiver(int) override { return std::make_unique<Subscriber>(*this); }
  void teardown() noexcept override {}  // the service goes with its last port

 private:
  [[noreturn]] void fail(const char* what) const { throw TransportError(std::string(what) + ": " + api_.last_error()); }

  class Publisher final : public Sender {
   public:
    explicit Publisher(const Iceoryx2Factory& f) : f_(f), port_(f.api_.publisher_open(f.service_.c_str(), f.size_, f.depth_)) {
      if (port_ == nullptr) f.fail("iceoryx2 publisher");
    }
    ~Publisher() override { f_.api_.publisher_close(port_); }
    bool send(std::span<const std::byte> message, Nanos timeout) override {
      auto region = loan(message.size(), timeout);
      if (region.empty()) return false;
      std::memcpy(region.data(), message.data(), message.size());
      return commit(timeout);
    }
    bool zero_copy() const noexcept override { return true; }
    std::span<std::byte> loan(std::size_t size, Nanos timeout) override {
      std::uint8_t* data = nullptr;
      if (!spin_until_ready([&] { return (data = f_.api_.loan(port_, size)) != nullptr; }, timeout)) return {};
      return {reinterpret_cast<std::byte*>(data), size};
    }
    bool commit(Nanos) override {
      if (f_.api_.send(port_) != 0) f_.fail("iceoryx2 send");
      return true;
    }

   private:
    const Iceoryx2Factory& f_;
    void* port_;
  };

  class Subscriber final : public Receiver {
   public:
    explicit Subscriber(const Iceoryx2Factory& f) : f_(f), port_(f.api_.subscriber_open(f.service_.c_str(), f.depth_)) {
      if (port_ == nullptr) f.fail("iceoryx2 subscriber");
    }
    ~Subscriber() override { f_.api_.subscriber_close(port_); }
    std::optional<std::size_t> receive(std::span<std::byte> buffer, Nanos timeout) override {
      auto message = view(timeout);
      if (!message) return std::nullopt;
      if (message->size() > buffer.size()) throw TransportError("iceoryx2: a message larger than the buffer");
      std::memcpy(buffer.data(), message->data(), message->size());
      release();
      return message->size();
    }
    bool zero_copy() const noexcept override { return true; }
    std::optional<std::span<const std::byte>> view(Nanos timeout) override {
      const std::uint8_t* data = nullptr;
      std::size_t size = 0;
      const bool got = spin_until_ready(
          [&] {
            const int status = f_.api_.receive(port_, &data, &size);
            if (status < 0) f_.fail("iceoryx2 receive");
            return status == 1;
          },
          timeout);
      if (!got) return std::nullopt;
      return std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size);
    }
    void release() noexcept override { f_.api_.release(port_); }

   private:
    const Iceoryx2Factory& f_;
    void* port_;
  };

  Iceoryx2Api api_;
  std::string service_;
  std::size_t size_ = 0;
  std::size_t depth_ = 0;
};

}  // namespace

std::unique_ptr<TransportFactory> iceoryx2_transport() {
  const char* path = std::getenv("COLO_BENCH_ICEORYX2");
  if (path == nullptr || *path == '\0') return nullptr;
  return std::make_unique<Iceoryx2Factory>(path);
}

}  // namespace colo::bench
