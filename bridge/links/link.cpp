#include "link.hpp"

#include "colo/internal/clock.hpp"

namespace colo::bridge {
namespace {

using internal::monotonic_ns;
constexpr std::uint64_t kMs = 1'000'000;

}  // namespace

const char* to_string(LinkState state) noexcept {
  switch (state) {
    case LinkState::starting: return "starting";
    case LinkState::running: return "running";
    case LinkState::down: return "down";
    case LinkState::paused: return "paused";
    case LinkState::failed: return "failed";
    case LinkState::stopped: return "stopped";
  }
  return "unknown";
}

Link::Link(LinkConfig config, const Log& log) : config_(std::move(config)), log_(log) {
  state_since_ns_.store(monotonic_ns());
  paused_.store(config_.paused);
}

Link::~Link() {
  // A derived link's members are gone by now: its destructor must have
  // stopped the thread (LinkService stops every link before destroying it).
  if (thread_.joinable()) {
    stop_.store(true);
    thread_.join();
  }
}

void Link::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void Link::stop() {
  stop_.store(true);
  if (!thread_.joinable()) return;
  const std::uint64_t interrupt_at =
      monotonic_ns() + static_cast<std::uint64_t>(std::chrono::nanoseconds(kInterruptAfter).count());
  bool interrupted = false;
  while (!ended_.load()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (monotonic_ns() < interrupt_at) continue;
    if (!interrupted)
      log_.write(LogLevel::warn, "link %s: still busy %llu s after stop: interrupting its client",
                 config_.name.c_str(), static_cast<unsigned long long>(kInterruptAfter.count()));
    interrupted = true;
    interrupt();
    std::this_thread::sleep_for(std::chrono::milliseconds(90));
  }
  thread_.join();
}

void Link::set_state(LinkState state) {
  const LinkState was = state_.exchange(state);
  if (was == state) return;
  state_since_ns_.store(monotonic_ns());
  const auto level = state == LinkState::failed || state == LinkState::down ? LogLevel::warn : LogLevel::info;
  log_.write(level, "link %s: %s", config_.name.c_str(), to_string(state));
}

void Link::report_down(const std::string& why) {
  report_error(why);
  if (state_.load() == LinkState::running) {
    add(counters_.outages);
    set_state(LinkState::down);
  }
}

void Link::report_failed(const std::string& why) {
  report_error(why);
  set_state(LinkState::failed);
}

void Link::report_up() {
  if (state_.load() == LinkState::down) set_state(LinkState::running);
}

void Link::report_error(const std::string& what) {
  add(counters_.errors);
  std::uint64_t logged = 0;
  {
    std::lock_guard<std::mutex> lock(error_mutex_);
    last_error_ = what;
    last_error_ns_ = monotonic_ns();
    logged = ++errors_logged_;
  }
  if (logged <= 10 || logged % 1000 == 0)
    log_.write(LogLevel::warn, "link %s: %s%s", config_.name.c_str(), what.c_str(),
               logged == 10 ? " (from now on one error in 1000 is logged)" : "");
}

void Link::report_lost(std::uint64_t first, std::uint64_t last, std::uint64_t count, const char* why) {
  add(counters_.lost, count);
  report_error(std::string(system()) + ": " + std::to_string(count) + " message(s), sequences " +
               std::to_string(first) + ".." + std::to_string(last) + ", lost: " + why);
}

// The thread: open, then step until stopped; a failed open is retried.
void Link::run() {
  while (!stopping()) {
    set_state(LinkState::starting);
    auto opened = open();
    if (!opened) {
      close();  // first: what the client reports while it closes is not why it failed
      report_error(opened.error().message);
      set_state(LinkState::failed);
      const std::uint64_t retry_at =
          monotonic_ns() + static_cast<std::uint64_t>(std::chrono::nanoseconds(kRetryAfter).count());
      while (!stopping() && monotonic_ns() < retry_at) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      continue;
    }
    set_state(pause_requested() ? LinkState::paused : LinkState::running);  // `paused = true`: never running first
    bool failed = false;
    while (!stopping() && !failed) {
      if (pause_requested()) {
        if (state_.load() != LinkState::paused) set_state(LinkState::paused);
        idle();
        continue;
      }
      if (state_.load() == LinkState::paused) set_state(LinkState::running);
      step();
      failed = state_.load() == LinkState::failed;  // step() may give up on the client (reopened after a pause)
    }
    close();
    if (failed) std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  set_state(LinkState::stopped);
  ended_.store(true);
}

Result<void> Link::open_object(const std::string& ns, LinkObject& object) const {
  if (object.node) return Ok{};
  LinkObject o;
  NodeOptions options;
  options.ns = ns;
  auto node = Node::open(options);
  if (!node) return Error{node.error().code, "namespace " + ns + ": " + node.error().message};
  o.node.emplace(std::move(node).value());
  const std::string what = std::string(to_string(config_.kind)) + " '" + config_.object + "'";
  auto parameters_differ = [](const Error& e) { return e.code == Errc::parameter_mismatch; };
  if (config_.kind == ObjectKind::topic) {
    auto topic = o.node->topic(config_.object, OpenMode::create_or_open,
                               TopicOptions{config_.capacity, config_.max_message, config_.history});
    if (!topic && parameters_differ(topic.error())) topic = o.node->topic(config_.object, OpenMode::open);
    if (!topic) return Error{topic.error().code, what + ": " + topic.error().message};
    o.topic.emplace(std::move(topic).value());
  } else {
    auto queue = o.node->queue(config_.object, OpenMode::create_or_open,
                               QueueOptions{config_.capacity, config_.max_message, config_.acks, config_.max_deliveries});
    if (!queue && parameters_differ(queue.error())) queue = o.node->queue(config_.object, OpenMode::open);
    if (!queue) return Error{queue.error().code, what + ": " + queue.error().message};
    o.queue.emplace(std::move(queue).value());
  }
  auto info = o.node->info(config_.object);
  if (!info) return Error{info.error().code, what + ": " + info.error().message};
  o.epoch = info->created_realtime_ns;
  object = std::move(o);
  return Ok{};
}

Result<Publisher> Link::publisher_of(LinkObject& object) {
  return object.topic ? object.topic->publisher() : object.queue->producer();
}

LinkStatus Link::status() const {
  LinkStatus s;
  s.name = config_.name;
  s.system = system();
  s.mode = to_string(config_.mode);
  s.object = config_.object;
  s.object_kind = to_string(config_.kind);
  s.remote = describe();
  s.state = state_.load();
  const std::uint64_t now = monotonic_ns();
  s.state_ms = (now - std::min(now, state_since_ns_.load())) / kMs;
  {
    std::lock_guard<std::mutex> lock(error_mutex_);
    s.last_error = last_error_;
    s.last_error_ms = last_error_ns_ == 0 ? 0 : (now - std::min(now, last_error_ns_)) / kMs;
  }
  constexpr auto relaxed = std::memory_order_relaxed;
  auto& c = s.counters;
  c.produced = counters_.produced.load(relaxed);
  c.acknowledged = counters_.acknowledged.load(relaxed);
  c.returned = counters_.returned.load(relaxed);
  c.in_flight = counters_.in_flight.load(relaxed);
  c.lag_messages = counters_.lag_messages.load(relaxed);
  c.lag_bytes = counters_.lag_bytes.load(relaxed);
  c.errors = counters_.errors.load(relaxed);
  c.lost = counters_.lost.load(relaxed);
  c.skipped = counters_.skipped.load(relaxed);
  c.duplicates = counters_.duplicates.load(relaxed);
  c.redelivered = counters_.redelivered.load(relaxed);
  c.outages = counters_.outages.load(relaxed);
  return s;
}

}  // namespace colo::bridge
