// `colo pub` and `colo sub`: drive topics and queues from a shell.
#include <fcntl.h>     // open: --file
#include <sys/stat.h>  // fstat: --file is not a directory
#include <unistd.h>    // read

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <optional>

#include "cli.hpp"
#include "colo/internal/text.hpp"  // errno_text, escaped

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
  } else if (info->kind) {
    return Error{Errc::kind_mismatch, "'" + name + "' is a " + to_string(*info->kind) + ", not a topic or queue"};
  } else {
    return Error{Errc::corrupt, "'" + name + "' is not a usable topic or queue: " + state_text(*info)};
  }
  return channel;
}

// Reads what `colo pub` publishes, never holding more than one message of
// the object's maximum (plus one byte, to tell "too large"): a line of
// stdin or a whole file may be any size, and /dev/zero has no end.
class BoundedInput {
 public:
  BoundedInput(int fd, std::uint32_t max_message) : fd_(fd), max_(max_message) {}

  // The next line (without its '\n'; the last one may lack it). False at the
  // end, or with `error` set if a line is longer than the maximum or a read fails.
  bool next_line(std::string& line, std::string& error) {
    line.clear();
    for (;;) {
      const auto newline = buffer_.find('\n', scanned_);
      if (newline != std::string::npos) {
        line.assign(buffer_, 0, newline);
        buffer_.erase(0, newline + 1);
        scanned_ = 0;
        ++lines_;
        return check(line, error);
      }
      scanned_ = buffer_.size();
      if (buffer_.size() > max_) return check(buffer_, error);  // already too long: stop reading
      if (eof_) {
        if (buffer_.empty()) return false;
        line.swap(buffer_);
        scanned_ = 0;
        ++lines_;
        return check(line, error);
      }
      if (!fill(error)) return false;
    }
  }

  // Everything up to the end, as one message; false with `error` if it is
  // longer than the maximum or a read fails.
  bool all(std::string& out, std::string& error) {
    while (!eof_) {
      if (buffer_.size() > max_) break;
      if (!fill(error)) return false;
    }
    if (buffer_.size() > max_) {
      error = "more than the object's maximum message of " + std::to_string(max_) + " bytes";
      return false;
    }
    out.swap(buffer_);
    return true;
  }

 private:
  bool check(const std::string& line, std::string& error) {
    if (line.size() <= max_) return true;
    error = "line " + std::to_string(lines_ + 1) + " is longer than the object's maximum message of " +
            std::to_string(max_) + " bytes";
    return false;
  }
  bool fill(std::string& error) {
    char chunk[64 * 1024];
    const std::size_t want = std::min<std::size_t>(sizeof chunk, std::size_t{max_} + 1 - std::min<std::size_t>(buffer_.size(), max_));
    const ssize_t n = ::read(fd_, chunk, want);
    if (n < 0) {
      if (errno == EINTR) return true;
      error = internal::errno_text("read");
      return false;
    }
    if (n == 0) eof_ = true;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  }

  int fd_;
  std::uint32_t max_;
  std::string buffer_;
  std::size_t scanned_ = 0;  // bytes of buffer_ known to hold no '\n'
  std::uint64_t lines_ = 0;  // lines returned so far
  bool eof_ = false;
};

std::string describe(SendStatus status, double timeout_s) {
  switch (status) {
    case SendStatus::ok: return "ok";
    case SendStatus::timed_out:
      return "no room within " + seconds_text(timeout_s) + " (a blocking subscriber or unacknowledged messages hold the ring)";
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
  const std::uint32_t max_message = channel->topic ? channel->topic->stats().max_message : channel->queue->stats().max_message;
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
    const std::string shown = "'" + internal::escaped(o.file, 200) + "'";
    const int fd = ::open(o.file.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fail(internal::errno_text("cannot read " + shown));
    struct stat st {};
    if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
      ::close(fd);
      return fail("cannot publish " + shown + ": it is a directory");
    }
    BoundedInput in(fd, max_message);
    std::string content, error;
    const bool read = in.all(content, error);
    ::close(fd);
    if (!read) return fail("cannot publish " + shown + " to '" + o.name + "': " + error);
    if (!send(std::as_bytes(std::span(content.data(), content.size())))) return kExitFailure;
  } else if (o.size >= 0) {
    if (static_cast<std::uint64_t>(o.size) > max_message)
      return fail("--size " + std::to_string(o.size) + " is larger than the maximum message of '" + o.name + "' (" +
                  std::to_string(max_message) + " bytes)");
    std::vector<std::byte> payload(static_cast<std::size_t>(o.size));
    for (std::uint64_t i = 0; i < o.count; ++i) {
      for (std::size_t b = 0; b < payload.size(); ++b) payload[b] = static_cast<std::byte>((i + b) & 0xff);
      if (!send(payload)) return kExitFailure;
    }
  } else {
    BoundedInput in(STDIN_FILENO, max_message);
    std::string line, error;
    while (in.next_line(line, error))
      if (!send(std::as_bytes(std::span(line.data(), line.size())))) return kExitFailure;
    if (!error.empty())
      return fail("publishing to '" + o.name + "' stopped after " + std::to_string(sent) + " messages: stdin: " + error);
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
      ->check(number_in(0, kMaxSeconds, "seconds"));
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
      ->check(number_in(0, kMaxSeconds, "seconds"));
  cmd->add_option("--history", o->history, "topic: start up to N retained messages back (default: the topic's --history)");
  cmd->add_flag("--lossy", o->lossy, "topic: never hold publishers back; count what is missed");
  cmd->add_option("--format", o->format,
                  "text: the bytes as they are; hex; json: {seq, size, deliveries, hex} per message")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "hex", "json"}));
  cmd->callback([&ctx, o] { ctx.exit_code = run_sub(ctx, *o); });
}

}  // namespace colo::cli
