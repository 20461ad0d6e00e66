// `colo pub` and `colo sub`: drive topics and queues from a shell.
#include <csignal>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>

#include "cli.hpp"

namespace colo::cli {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void request_stop(int) { g_stop = 1; }

// Opens NAME as whatever it is (topic or queue), never creating it.
struct Channel {
  std::optional<Topic> topic;
  std::optional<Queue> queue;
};

Result<Channel> open_channel(Node& node, const std::string& name) {
  auto info = node.info(name);
  if (!info) return std::move(info).error();
  Channel channel;
  if (info->kind == ObjectKind::topic) {
    auto topic = node.topic(name, OpenMode::open);
    if (!topic) return std::move(topic).error();
    channel.topic.emplace(std::move(topic).value());
  } else if (info->kind == ObjectKind::queue) {
    auto queue = node.queue(name, OpenMode::open);
    if (!queue) return std::move(queue).error();
    channel.queue.emplace(std::move(queue).value());
  } else {
    return Error{Errc::kind_mismatch, "'" + name + "' is a " + (info->kind ? to_string(*info->kind) : "") + ", not a topic or queue"};
  }
  return channel;
}

std::string describe(SendStatus status, double timeout_s) {
  switch (status) {
    case SendStatus::ok: return "ok";
    case SendStatus::timed_out:
      return "no room within " + std::to_string(timeout_s) + " s (a blocking subscriber or unacknowledged messages hold the ring)";
    case SendStatus::too_large: return "message larger than the object's maximum";
    case SendStatus::corrupt: return "the ring's shared state failed validation";
  }
  return "unknown";
}

struct PubOptions {
  std::string name;
  std::string file;
  std::int64_t size = -1;
  std::uint64_t count = 1;
  double timeout_s = 5;
};

int run_pub(const Context& ctx, const PubOptions& o) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto channel = open_channel(*node, o.name);
  if (!channel) return fail(channel.error());
  auto publisher = channel->topic ? channel->topic->publisher() : channel->queue->producer();
  if (!publisher) return fail(publisher.error());
  const auto timeout = std::chrono::nanoseconds(static_cast<std::int64_t>(o.timeout_s * 1e9));
  std::uint64_t sent = 0;
  auto send = [&](std::span<const std::byte> bytes) -> bool {
    const SendStatus status = publisher->publish(bytes, timeout);
    if (status != SendStatus::ok) {
      fail("publishing to '" + o.name + "' failed after " + std::to_string(sent) + " messages: " +
           describe(status, o.timeout_s));
      return false;
    }
    ++sent;
    return true;
  };
  if (!o.file.empty()) {
    std::ifstream in(o.file, std::ios::binary);
    if (!in) return fail("cannot read '" + o.file + "'");
    const std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!send(std::as_bytes(std::span(content.data(), content.size())))) return kExitFailure;
  } else if (o.size >= 0) {
    std::vector<std::byte> payload(static_cast<std::size_t>(o.size));
    for (std::uint64_t i = 0; i < o.count; ++i) {
      for (std::size_t b = 0; b < payload.size(); ++b) payload[b] = static_cast<std::byte>((i + b) & 0xff);
      if (!send(payload)) return kExitFailure;
    }
  } else {
    std::string line;
    while (std::getline(std::cin, line))
      if (!send(std::as_bytes(std::span(line.data(), line.size())))) return kExitFailure;
  }
  std::cerr << "colo: published " << sent << " message(s) to '" << o.name << "'\n";
  return kExitOk;
}

struct SubOptions {
  std::string name;
  std::uint64_t count = 0;  // 0: no limit
  double timeout_s = -1;    // idle timeout; negative: none
  std::optional<std::uint64_t> history;  // unset: the topic's own
  bool lossy = false;
  std::string format = "text";
};

void print_message(const Message& m, const std::string& format) {
  const auto data = m.data();
  if (format == "text") {
    std::fwrite(data.data(), 1, data.size(), stdout);
    std::fputc('\n', stdout);
    return;
  }
  std::string hex;
  hex.reserve(data.size() * 2);
  static const char* digits = "0123456789abcdef";
  for (std::byte b : data) {
    hex += digits[static_cast<unsigned>(b) >> 4];
    hex += digits[static_cast<unsigned>(b) & 15];
  }
  if (format == "hex") {
    std::printf("%s\n", hex.c_str());
    return;
  }
  nlohmann::json j = {{"seq", m.sequence()}, {"size", data.size()}, {"deliveries", m.deliveries()}, {"hex", hex}};
  j["text"] = std::string(reinterpret_cast<const char*>(data.data()), data.size());
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

int run_sub(const Context& ctx, const SubOptions& o) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto channel = open_channel(*node, o.name);
  if (!channel) return fail(channel.error());
  if (channel->queue && (o.lossy || o.history))
    return fail("--lossy and --history are for topics; '" + o.name + "' is a queue");
  auto reader = channel->topic
                    ? channel->topic->subscribe({o.lossy ? Backpressure::lossy : Backpressure::block, o.history, std::nullopt})
                    : channel->queue->consumer();
  if (!reader) return fail(reader.error());
  struct sigaction sa{};
  sa.sa_handler = request_stop;
  ::sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE}) ::sigaction(sig, &sa, nullptr);

  std::uint64_t received = 0;
  auto idle_since = std::chrono::steady_clock::now();
  while (g_stop == 0 && (o.count == 0 || received < o.count)) {
    // Short waits, so a signal or the idle timeout is noticed promptly.
    auto message = reader->receive_for(std::chrono::milliseconds(100));
    if (!message) {
      const double idle = std::chrono::duration<double>(std::chrono::steady_clock::now() - idle_since).count();
      if (o.timeout_s >= 0 && idle >= o.timeout_s) break;
      continue;
    }
    print_message(*message, o.format);
    message->release();  // for a queue with acks: acknowledged only after printing
    ++received;
    idle_since = std::chrono::steady_clock::now();
  }
  std::fflush(stdout);
  if (reader->missed() != 0) std::cerr << "colo: missed " << reader->missed() << " message(s) (lossy subscriber lapped)\n";
  if (o.count != 0 && received < o.count) {
    std::cerr << "colo: received " << received << " of " << o.count << " message(s) before "
              << (g_stop != 0 ? "being stopped" : "the timeout") << '\n';
    return kExitTimeout;
  }
  return kExitOk;
}

}  // namespace

void register_pub(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("pub", "Publish to a topic or queue: each line of stdin is one message");
  cmd->footer(
      "Each line of stdin is one message (without its newline). --file F publishes a whole file as one message; "
      "--size N --count K publishes K generated payloads of N bytes. Waits up to --timeout for room in the ring "
      "for each message.\n"
      "Examples:\n"
      "  echo hello | colo pub prices\n"
      "  colo pub --file order.json jobs\n"
      "  colo pub --size 64 --count 1000 prices");
  auto o = std::make_shared<PubOptions>();
  cmd->add_option("NAME", o->name, "topic or queue")->required();
  auto* file = cmd->add_option("--file", o->file, "publish this file as one message");
  auto* size = cmd->add_option("--size", o->size, "generated payload size in bytes")->check(CLI::NonNegativeNumber);
  cmd->add_option("--count", o->count, "with --size: number of messages")->capture_default_str()->needs(size);
  cmd->add_option("--timeout", o->timeout_s, "seconds to wait for room per message")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  file->excludes(size);
  cmd->callback([&ctx, o] { ctx.exit_code = run_pub(ctx, *o); });
}

void register_sub(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("sub", "Print the messages of a topic or queue, one per line");
  cmd->footer(
      "On a topic: subscribes (blocking the publishers when it falls behind, or --lossy). On a queue: consumes, "
      "acknowledging each message once printed. Exit 75 if --timeout passes before --count messages.\n"
      "Examples:\n"
      "  colo sub prices --count 10\n"
      "  colo sub jobs --timeout 5 --format json");
  auto o = std::make_shared<SubOptions>();
  cmd->add_option("NAME", o->name, "topic or queue")->required();
  cmd->add_option("--count", o->count, "stop after N messages (exit 75 if the timeout comes first)");
  cmd->add_option("--timeout", o->timeout_s, "stop after this many seconds without a message")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--history", o->history, "topic: start up to N retained messages back (default: the topic's --history)");
  cmd->add_flag("--lossy", o->lossy, "topic: never hold publishers back; count what is missed");
  cmd->add_option("--format", o->format,
                  "text: the bytes as they are; hex; json: {seq, size, deliveries, hex} per message")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "hex", "json"}));
  cmd->callback([&ctx, o] { ctx.exit_code = run_sub(ctx, *o); });
}

}  // namespace colo::cli
