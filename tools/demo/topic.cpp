// tools/demo/topic.cpp — the topic scenario of the "queues and topics" part
// (channels.hpp): 3 subscriber processes (2 blocking, 1 lossy and slow)
// subscribe, then 2 publisher processes write --topic-messages each.
#include <algorithm>
#include <set>
#include <thread>
#include <vector>

#include "channels.hpp"

namespace colo::cli {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto acquire = std::memory_order_acquire;
constexpr auto release = std::memory_order_release;

int topic_publisher(const ChannelPlan& plan, ChannelShared& sh, Role& role) {
  auto node = open_child_node(plan.ns);
  if (!node) return role.fail(node.error().message, 2);
  auto topic = node->topic(kTopicName, OpenMode::open);
  if (!topic) return role.fail(topic.error().message, 2);
  return write_messages(plan, sh, role, *topic, &Topic::publisher);
}

// A blocking subscriber reads plan.count messages, in order per publisher,
// recording latencies; the lossy one reads until the publishers are done and
// it has caught up, pausing 1 ms every kLossyBurst messages.
int topic_subscriber(const ChannelPlan& plan, ChannelShared& sh, Role& role) {
  ChannelProcess& me = sh.readers[plan.index];
  auto node = open_child_node(plan.ns);
  if (!node) return role.fail(node.error().message, 2);
  auto topic = node->topic(kTopicName, OpenMode::open);
  if (!topic) return role.fail(topic.error().message, 2);
  auto sub = topic->subscribe({plan.lossy ? Backpressure::lossy : Backpressure::block, 0, std::nullopt});
  if (!sub) return role.fail(sub.error().message, 2);
  role.ready();  // subscribed: it gets every message published from now on
  if (!role.wait_for_go(kChildLimit)) return 3;

  const auto deadline = SteadyClock::now() + kChildLimit;
  std::uint64_t next[kPublishers] = {};  // next index expected (blocking) or allowed (lossy) per publisher
  std::uint64_t per[kPublishers] = {};
  std::uint64_t received = 0, last_ns = 0;
  int rc = 0;
  for (;;) {
    if (!plan.lossy && received == plan.count) break;
    const bool done = plan.lossy && sh.publishers_done.load(acquire) != 0;
    auto msg = sub->receive_for(std::chrono::milliseconds(20));
    if (!msg) {
      if (done) break;  // everything is published and nothing is left to read
      if (SteadyClock::now() > deadline) {
        rc = role.fail("received " + with_commas(received) + " of " + with_commas(plan.count) + " messages in " + secs(kChildLimit), 4);
        break;
      }
      continue;
    }
    const std::uint64_t now = internal::monotonic_ns();
    Payload p;
    const char* bad = unseal(msg->data(), p, kPublishers);
    msg->release();  // copied out: let the ring move on
    if (bad != nullptr) {
      rc = role.fail(std::string("message ") + with_commas(received + 1) + " received was " + bad, 5);
      break;
    }
    if (plan.lossy ? p.index < next[p.source] : p.index != next[p.source]) {
      rc = role.fail("publisher " + std::to_string(p.source + 1) + ": message #" + std::to_string(p.index) +
                         " arrived where #" + std::to_string(next[p.source]) + " was expected" +
                         (plan.lossy ? " or later" : ""), 6);
      break;
    }
    next[p.source] = p.index + 1;
    ++per[p.source];
    if (!plan.lossy) plan.samples[received] = now > p.send_ns ? now - p.send_ns : 0;
    ++received;
    last_ns = now;
    if ((received & 4095) == 0) me.count.store(received, relaxed);  // progress, should it be killed
    if (plan.lossy && received % kLossyBurst == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (rc == 0 && !plan.lossy) {
    if (sub->try_receive()) {
      rc = role.fail("a message beyond the " + with_commas(plan.count) + " published", 7);
    }
  }
  me.count.store(received, relaxed);
  for (int s = 0; s < kPublishers; ++s) me.per_source[s].store(per[s], relaxed);
  me.missed.store(sub->missed(), relaxed);
  me.end_ns.store(last_ns, relaxed);
  return rc;
}


// The parent's side of the scenario, step by step.
class TopicScenario {
 public:
  TopicScenario(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result)
      : scratch_(scratch),
        out_(out),
        result_(result),
        failures_(result.failures),
        per_publisher_(static_cast<std::uint64_t>(opt.topic_messages)),
        total_(per_publisher_ * kPublishers),
        samples_(total_ * 2),  // latencies of the 2 blocking subscribers
        scenario_(result.failures) {}

  void run() {
    if (!prepare() || !start()) return;
    run_to_the_end();
    report_publishers();
    report_subscribers();
    out_.line("  latency = receive time - send time (CLOCK_MONOTONIC), at full speed: it is mostly time spent queued");
    out_.line("  in the ring behind the slowest blocking subscriber (up to " + with_commas(ring_messages()) +
              " messages)");
    result_.detail["topic"] = {{"name", kTopicName},
                               {"capacity", kRingBytes},
                               {"max_message", kMaxMessage},
                               {"message_bytes", kMessageBytes},
                               {"messages_per_publisher", per_publisher_},
                               {"total", total_},
                               {"published", stats_.published},
                               {"publishers", publishers_json_},
                               {"publish_rate", rate_json(published_, publish_ns_)},
                               {"subscribers", subscribers_json_},
                               {"in_time", in_time_}};
  }

 private:
  static std::uint64_t ring_messages() { return kRingBytes / ((16 + kMessageBytes + 15) / 16 * 16); }
  bool prepare();
  bool start();
  void run_to_the_end();
  void report_publishers();
  void report_subscribers();
  void report_blocking(int i, nlohmann::json& j);
  void report_lossy(int i, nlohmann::json& j);

  ScratchNamespace& scratch_;
  Reporter& out_;
  PartOutcome& result_;
  std::vector<std::string>& failures_;
  const std::uint64_t per_publisher_, total_;
  std::optional<Topic> topic_;
  SharedBlock<ChannelShared> shared_;
  SharedArray<std::uint64_t> samples_;
  std::vector<ChannelPlan> plans_;
  Scenario scenario_;  // roles: the subscribers, then the publishers
  std::uint64_t go_ns_ = 0;
  bool in_time_ = true;
  std::set<pid_t> clean_;
  ChannelStats stats_;
  std::uint64_t published_ = 0, publish_ns_ = 0;
  nlohmann::json publishers_json_ = nlohmann::json::array(), subscribers_json_ = nlohmann::json::array();
};

bool TopicScenario::prepare() {
  unlink_on_interrupt(shm_file(scratch_, kTopicName));
  TopicOptions topic_options;
  topic_options.capacity = kRingBytes;
  topic_options.max_message = kMaxMessage;
  auto topic = scratch_.node().topic(kTopicName, OpenMode::create, topic_options);
  if (!topic) {
    failures_.push_back("topic: " + topic.error().message);
    return false;
  }
  topic_.emplace(std::move(topic).value());
  if (!shared_ || !samples_ || !scenario_) {
    failures_.push_back("topic: cannot map shared memory for the results");
    return false;
  }
  out_.line(std::string("[queues and topics] topic '") + kTopicName + "': ring of " + human_bytes(kRingBytes) +
            ", messages up to " + human_bytes(kMaxMessage) + " (" + with_commas(ring_messages()) + " of " +
            std::to_string(kMessageBytes) + " bytes fit)");
  out_.line("        " + std::to_string(kPublishers) + " publisher processes write " + with_commas(per_publisher_) +
            " messages each, in place (loan_for + commit), stamped {publisher, index, send time};");
  out_.line("        2 blocking subscribers must get all " + with_commas(total_) +
            " in order, and hold publishers back; 1 lossy subscriber is slow");
  out_.line("        (1 ms pause every " + std::to_string(kLossyBurst) +
            " messages): the publishers lap it, and it counts what it missed");
  plans_.resize(kSubscribers + kPublishers);
  for (int i = 0; i < kSubscribers; ++i) {
    ChannelPlan& p = plans_[static_cast<std::size_t>(i)];
    p.ns = scratch_.ns();
    p.index = i;
    p.count = total_;
    p.lossy = i == kLossySubscriber;
    p.samples = p.lossy ? nullptr : samples_.data() + static_cast<std::uint64_t>(i) * total_;
  }
  for (int i = 0; i < kPublishers; ++i) {
    ChannelPlan& p = plans_[static_cast<std::size_t>(kSubscribers + i)];
    p.ns = scratch_.ns();
    p.index = i;
    p.count = per_publisher_;
  }
  return true;
}

bool TopicScenario::start() {
  // Subscribers first: they must be subscribed before anything is published.
  for (int i = 0; i < kSubscribers; ++i)
    if (!scenario_.start("subscriber " + std::to_string(i + 1) + (i == kLossySubscriber ? " (lossy)" : " (blocking)"),
                         [&plan = plans_[static_cast<std::size_t>(i)], this](Role& role) {
                           return topic_subscriber(plan, *shared_, role);
                         }))
      return false;
  if (!scenario_.wait_ready(kReadyLimit)) return false;
  for (int i = 0; i < kPublishers; ++i)
    if (!scenario_.start("publisher " + std::to_string(i + 1),
                         [&plan = plans_[static_cast<std::size_t>(kSubscribers + i)], this](Role& role) {
                           return topic_publisher(plan, *shared_, role);
                         }))
      return false;
  if (!scenario_.wait_ready(kReadyLimit)) return false;
  out_.line("  subscribed: " + scenario_.pids(0, 2) + " (blocking), pid " + std::to_string(scenario_.pid(2)) +
            " (lossy); publishers: " + scenario_.pids(kSubscribers, scenario_.size()));
  return true;
}

void TopicScenario::run_to_the_end() {
  const auto deadline = SteadyClock::now() + kPhaseLimit;
  go_ns_ = internal::monotonic_ns();
  scenario_.go();
  for (std::size_t i = kSubscribers; i < scenario_.size(); ++i)
    if (scenario_.wait(i, deadline).how == ChildExit::How::timed_out) in_time_ = false;
  shared_->publishers_done.store(1, release);  // the lossy subscriber may stop once caught up
  if (!scenario_.wait_all(deadline)) in_time_ = false;
  if (!in_time_) failures_.push_back("topic: a process did not finish within " + secs(kPhaseLimit) + " (killed)");
  clean_ = scenario_.collect();
}

void TopicScenario::report_publishers() {
  std::uint64_t start = ~std::uint64_t{0}, end = 0;
  for (int i = 0; i < kPublishers; ++i) {
    const ChannelProcess& w = shared_->writers[i];
    const pid_t pid = scenario_.pid(static_cast<std::size_t>(kSubscribers + i));
    const std::uint64_t n = w.count.load(relaxed);
    published_ += n;
    start = std::min(start, w.start_ns.load(relaxed));
    end = std::max(end, w.end_ns.load(relaxed));
    publishers_json_.push_back(
        {{"pid", pid}, {"published", n}, {"rate", rate_json(n, w.end_ns.load(relaxed) - w.start_ns.load(relaxed))}});
    if (n != per_publisher_ && clean_.count(pid) != 0)
      failures_.push_back("topic: publisher " + std::to_string(i + 1) + " published " + with_commas(n) + " of " +
                          with_commas(per_publisher_));
  }
  publish_ns_ = end > start ? end - start : 0;
  stats_ = topic_->stats();
  if (stats_.published != published_)
    failures_.push_back("topic: Topic::stats counts " + with_commas(stats_.published) +
                        " messages published, the publishers " + with_commas(published_));
  if (stats_.dead_claims != 0 || stats_.bad_records != 0)
    failures_.push_back("topic: Topic::stats counts " + std::to_string(stats_.dead_claims) + " dead claims and " +
                        std::to_string(stats_.bad_records) + " bad records, expected none");
  out_.line("  publishers:   " + with_commas(published_) + " messages in " +
            human_duration_ns(static_cast<double>(publish_ns_)) + ": " + rate_text(published_, publish_ns_) +
            " (Topic::stats: " + with_commas(stats_.published) + " published)");
}

void TopicScenario::report_subscribers() {
  for (int i = 0; i < kSubscribers; ++i) {
    const ChannelProcess& r = shared_->readers[i];
    const pid_t pid = scenario_.pid(static_cast<std::size_t>(i));
    const std::uint64_t got = r.count.load(relaxed);
    const std::uint64_t end = r.end_ns.load(relaxed);
    nlohmann::json j = {{"pid", pid},
                        {"mode", i == kLossySubscriber ? "lossy" : "block"},
                        {"received", got},
                        {"missed", r.missed.load(relaxed)},
                        {"per_publisher", {r.per_source[0].load(relaxed), r.per_source[1].load(relaxed)}},
                        {"rate", rate_json(got, end > go_ns_ ? end - go_ns_ : 0)},
                        {"ended_cleanly", clean_.count(pid) != 0}};
    if (i != kLossySubscriber) report_blocking(i, j);
    else report_lossy(i, j);
    subscribers_json_.push_back(j);
  }
}

// A blocking subscriber: every message, in order, and its latencies.
void TopicScenario::report_blocking(int i, nlohmann::json& j) {
  const ChannelProcess& r = shared_->readers[i];
  const pid_t pid = scenario_.pid(static_cast<std::size_t>(i));
  const std::uint64_t got = r.count.load(relaxed), missed = r.missed.load(relaxed), end = r.end_ns.load(relaxed);
  const std::uint64_t ns = end > go_ns_ ? end - go_ns_ : 0;
  const bool complete = got == total_ && missed == 0 && r.per_source[0].load(relaxed) == per_publisher_ &&
                        r.per_source[1].load(relaxed) == per_publisher_;
  if (!complete && clean_.count(pid) != 0)
    failures_.push_back("topic: blocking subscriber " + std::to_string(i + 1) + " received " + with_commas(got) +
                        " (missed " + with_commas(missed) + "), expected " + with_commas(total_));
  const Latency l = latency_of(samples_.data() + static_cast<std::uint64_t>(i) * total_, std::min(got, total_));
  const bool partial = clean_.count(pid) == 0;  // its count is the last progress it recorded
  out_.line("  subscriber " + std::to_string(i + 1) + " (pid " + std::to_string(pid) + ", blocking): " +
            (partial ? "at least " : "") + with_commas(got) + " messages, " + (complete ? "all, " : "NOT all, ") +
            "in order per publisher: " + rate_text(got, ns));
  out_.line("                latency p50 " + human_duration_ns(static_cast<double>(l.p50)) + ", p99 " +
            human_duration_ns(static_cast<double>(l.p99)) + ", p99.9 " +
            human_duration_ns(static_cast<double>(l.p999)) + ", max " + human_duration_ns(static_cast<double>(l.max)));
  j["latency_ns"] = {{"samples", l.n}, {"p50", l.p50}, {"p99", l.p99}, {"p99_9", l.p999}, {"max", l.max}};
}

// The lossy subscriber: every message published is either received or
// counted missed.
void TopicScenario::report_lossy(int i, nlohmann::json& j) {
  const ChannelProcess& r = shared_->readers[i];
  const pid_t pid = scenario_.pid(static_cast<std::size_t>(i));
  const std::uint64_t got = r.count.load(relaxed), missed = r.missed.load(relaxed), end = r.end_ns.load(relaxed);
  const bool adds_up = got + missed == stats_.published;
  if (!adds_up && clean_.count(pid) != 0)
    failures_.push_back("topic: lossy subscriber received " + with_commas(got) + " + missed " + with_commas(missed) +
                        " = " + with_commas(got + missed) + ", but " + with_commas(stats_.published) +
                        " were published");
  out_.line("  subscriber " + std::to_string(i + 1) + " (pid " + std::to_string(pid) + ", lossy):    received " +
            with_commas(got) + " + missed " + with_commas(missed) + (missed != 0 ? " (lapped while it paused)" : "") +
            " = " + with_commas(got + missed) + (adds_up ? ": all " : ", NOT the ") + with_commas(stats_.published) +
            " published");
  out_.line("                what it received was intact and in order per publisher; its pace: " +
            rate_text(got, end > go_ns_ ? end - go_ns_ : 0));
  j["accounted"] = adds_up;
}

}  // namespace

void run_topic(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result) {
  TopicScenario(opt, scratch, out, result).run();
}

}  // namespace colo::cli
