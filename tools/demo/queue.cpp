// tools/demo/queue.cpp — the queue scenario of the "queues and topics"
// part (channels.hpp): 2 producer processes and 3 consumer processes share
// --queue-messages on a queue with acks; consumer 3 is killed holding a
// message it has not acknowledged, which is then redelivered to another.
#include <signal.h>

#include <algorithm>
#include <iterator>
#include <set>
#include <thread>
#include <vector>

#include "channels.hpp"

namespace colo::cli {
namespace {

constexpr auto relaxed = std::memory_order_relaxed;
constexpr auto acquire = std::memory_order_acquire;
constexpr auto release = std::memory_order_release;
constexpr auto acq_rel = std::memory_order_acq_rel;

int queue_producer(const ChannelPlan& plan, ChannelShared& sh, Role& role) {
  auto node = open_child_node(plan.ns);
  if (!node) return role.fail(node.error().message, 2);
  auto queue = node->queue(kQueueName, OpenMode::open);
  if (!queue) return role.fail(queue.error().message, 2);
  return write_messages(plan, sh, role, *queue, &Queue::producer);
}

// Takes messages and acknowledges them until all plan.total are acknowledged.
// The victim stalls at its plan.stall_at-th message without acknowledging.
int queue_consumer(const ChannelPlan& plan, ChannelShared& sh, Role& role) {
  ChannelProcess& me = sh.readers[plan.index];
  const auto pid = static_cast<std::uint32_t>(::getpid());
  auto node = open_child_node(plan.ns);
  if (!node) return role.fail(node.error().message, 2);
  auto queue = node->queue(kQueueName, OpenMode::open);
  if (!queue) return role.fail(queue.error().message, 2);
  auto consumer = queue->consumer();
  if (!consumer) return role.fail(consumer.error().message, 2);
  role.ready();
  if (!role.wait_for_go(kChildLimit)) return 3;

  const auto deadline = SteadyClock::now() + kChildLimit;
  std::uint64_t taken = 0, acked = 0, last_ns = 0;
  std::uint64_t per[kProducers] = {};
  while (sh.acked_total.load(acquire) < plan.total) {
    // Leave the victim enough to reach its stall point, however the
    // scheduler favours the others (only matters for small runs).
    const bool gated = plan.gate != 0 && sh.acked_total.load(relaxed) >= plan.gate &&
                       sh.victim_holding.load(acquire) == 0 && sh.victim_gone.load(acquire) == 0;
    auto msg = gated ? std::nullopt : consumer->receive_for(std::chrono::milliseconds(20));
    if (gated) std::this_thread::sleep_for(std::chrono::microseconds(200));
    if (!msg) {
      if (SteadyClock::now() > deadline) {
        return role.fail(with_commas(sh.acked_total.load(acquire)) + " of " + with_commas(plan.total) +
                           " messages acknowledged after " + secs(kChildLimit), 4);
      }
      continue;
    }
    Payload p;
    if (const char* bad = unseal(msg->data(), p, kProducers)) {
      return role.fail(std::string("took ") + bad, 5);
    }
    if (p.index >= plan.share[p.source]) {
      return role.fail("producer " + std::to_string(p.source + 1) + " message #" + std::to_string(p.index) +
                         " is beyond its " + with_commas(plan.share[p.source]), 5);
    }
    const std::uint64_t id = plan.base[p.source] + p.index;
    plan.receives[id].fetch_add(1, relaxed);
    ++taken;
    const std::uint32_t deliveries = msg->deliveries();
    if (deliveries != 1 && sh.redeliveries.fetch_add(1, acq_rel) == 0) {
      sh.redelivered_id.store(id, relaxed);
      sh.redelivered_seq.store(msg->sequence(), relaxed);
      sh.redelivered_pid.store(pid, relaxed);
      sh.redelivered_deliveries.store(deliveries, relaxed);
      sh.redelivered_consumer.store(static_cast<std::uint32_t>(plan.index), relaxed);
      sh.redelivery_recorded.store(1, release);
    }
    if (taken == plan.stall_at) {
      // The victim: say "I hold message `id`, not acknowledged", then stall
      // until killed. Bounded: with no SIGKILL, give up.
      me.count.store(acked, relaxed);
      for (int s = 0; s < kProducers; ++s) me.per_source[s].store(per[s], relaxed);
      sh.victim_id.store(id, relaxed);
      sh.victim_seq.store(msg->sequence(), relaxed);
      sh.victim_deliveries.store(deliveries, relaxed);
      sh.victim_holding.store(1, release);
      const auto stall_until = SteadyClock::now() + kChildLimit;
      while (SteadyClock::now() < stall_until) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      return role.fail("stalled holding a message but was never killed", 8);
    }
    msg->release();  // the acknowledgement
    plan.acks[id].fetch_add(1, relaxed);
    sh.acked_total.fetch_add(1, acq_rel);
    ++acked;
    ++per[p.source];
    last_ns = internal::monotonic_ns();
    if ((acked & 4095) == 0) me.count.store(acked, relaxed);  // progress, should it be killed
  }
  me.count.store(acked, relaxed);
  for (int s = 0; s < kProducers; ++s) me.per_source[s].store(per[s], relaxed);
  me.end_ns.store(last_ns, relaxed);
  if (plan.stall_at != 0) {
    return role.fail("never reached its stall point (message " + with_commas(plan.stall_at) + "): took only " +
                       with_commas(taken), 9);
  }
  return 0;
}

// The parent's side of the scenario, step by step.
class QueueScenario {
 public:
  QueueScenario(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result)
      : scratch_(scratch),
        out_(out),
        result_(result),
        failures_(result.failures),
        total_(static_cast<std::uint64_t>(opt.queue_messages)),
        dlq_name_(std::string(kQueueName) + ".dlq"),
        receives_(total_),
        acks_(total_),
        scenario_(result.failures) {
    share_[0] = (total_ + 1) / 2;
    share_[1] = total_ / 2;
    base_[1] = share_[0];
    // Stall at a message taken well into the run, with plenty left for the others.
    stall_at_ = std::max<std::uint64_t>(1, std::min<std::uint64_t>(2'000, total_ / 10));
  }

  void run() {
    if (!prepare() || !start()) return;
    t0_ = SteadyClock::now();
    go_ns_ = internal::monotonic_ns();
    scenario_.go();
    kill_victim();
    in_time_ = scenario_.wait_all(t0_ + kPhaseLimit);
    if (!in_time_) failures_.push_back("queue: a process did not finish within " + secs(kPhaseLimit) + " (killed)");
    clean_ = scenario_.collect(victim_pid_);  // the victim: reported where it was killed or found gone
    check_redelivery();
    check_exactly_once();
    check_nothing_left();
    report();
  }

 private:
  bool prepare();
  bool start();
  void kill_victim();
  void check_redelivery();
  void check_exactly_once();
  void check_nothing_left();
  void report();
  // "message 12 (producer 1 #12)"
  std::string describe(std::uint64_t id) const {
    const int source = id >= base_[1] ? 1 : 0;
    return "message " + with_commas(id) + " (producer " + std::to_string(source + 1) + " #" +
           with_commas(id - base_[source]) + ")";
  }

  ScratchNamespace& scratch_;
  Reporter& out_;
  PartOutcome& result_;
  std::vector<std::string>& failures_;
  const std::uint64_t total_;
  const std::string dlq_name_;
  std::uint64_t share_[2] = {0, 0}, base_[2] = {0, 0};
  std::uint64_t stall_at_ = 0;
  std::optional<Queue> queue_;
  SharedBlock<ChannelShared> shared_;
  SharedArray<std::atomic<std::uint32_t>> receives_, acks_;  // per message id
  std::vector<ChannelPlan> plans_;
  Scenario scenario_;  // roles: the consumers, then the producers
  pid_t victim_pid_ = -1;
  bool victim_ready_ = false;
  bool in_time_ = false;
  SteadyClock::time_point t0_;
  std::uint64_t go_ns_ = 0;
  std::set<pid_t> clean_;
  std::uint64_t victim_id_ = 0;
  nlohmann::json kill_json_ = nullptr, redelivery_json_ = nullptr;
  // The exactly-once check's counts.
  std::uint64_t sum_receives_ = 0, sum_acks_ = 0, duplicates_ = 0;
  bool exact_ = false;
  std::string leftover_;
  ChannelStats stats_;
  std::uint64_t dlq_published_ = 0;
};

bool QueueScenario::prepare() {
  unlink_on_interrupt(shm_file(scratch_, kQueueName));
  unlink_on_interrupt(shm_file(scratch_, dlq_name_));
  QueueOptions queue_options;
  queue_options.capacity = kRingBytes;
  queue_options.max_message = kMaxMessage;
  queue_options.acks = true;
  queue_options.max_deliveries = kMaxDeliveries;
  auto queue = scratch_.node().queue(kQueueName, OpenMode::create, queue_options);
  if (!queue) {
    failures_.push_back("queue: " + queue.error().message);
    return false;
  }
  queue_.emplace(std::move(queue).value());
  if (!shared_ || !receives_ || !acks_ || !scenario_) {
    failures_.push_back("queue: cannot map shared memory for the results");
    return false;
  }
  out_.line("");
  out_.line(std::string("  queue '") + kQueueName + "' with acks (max deliveries " + std::to_string(kMaxDeliveries) +
            "; then to '" + dlq_name_ + "'): " + std::to_string(kProducers) + " producer processes, " +
            std::to_string(kConsumers) + " consumer processes, " + with_commas(total_) + " messages");
  out_.line("        each message goes to one consumer; consumer " + std::to_string(kVictimConsumer + 1) +
            " will be killed holding one it has not acknowledged");
  plans_.resize(kConsumers + kProducers);
  for (std::size_t i = 0; i < plans_.size(); ++i) {
    ChannelPlan& p = plans_[i];
    p.ns = scratch_.ns();
    p.total = total_;
    std::copy(std::begin(share_), std::end(share_), p.share);
    std::copy(std::begin(base_), std::end(base_), p.base);
    p.receives = receives_.data();
    p.acks = acks_.data();
    if (i < kConsumers) {
      p.index = static_cast<int>(i);
      p.stall_at = static_cast<int>(i) == kVictimConsumer ? stall_at_ : 0;
      p.gate = static_cast<int>(i) == kVictimConsumer ? 0 : total_ / 2;
    } else {
      p.index = static_cast<int>(i - kConsumers);
      p.count = share_[p.index];
    }
  }
  return true;
}

bool QueueScenario::start() {
  for (int i = 0; i < kConsumers; ++i)
    if (!scenario_.start("consumer " + std::to_string(i + 1),
                         [&plan = plans_[static_cast<std::size_t>(i)], this](Role& role) {
                           return queue_consumer(plan, *shared_, role);
                         }))
      return false;
  for (int i = 0; i < kProducers; ++i)
    if (!scenario_.start("producer " + std::to_string(i + 1),
                         [&plan = plans_[static_cast<std::size_t>(kConsumers + i)], this](Role& role) {
                           return queue_producer(plan, *shared_, role);
                         }))
      return false;
  if (!scenario_.wait_ready(kReadyLimit)) return false;
  victim_pid_ = scenario_.pid(kVictimConsumer);
  out_.line("  consumers 1-" + std::to_string(kConsumers) + ": " + scenario_.pids(0, kConsumers) + "; producers 1-" +
            std::to_string(kProducers) + ": " + scenario_.pids(kConsumers, scenario_.size()) + " (" +
            (share_[0] == share_[1] ? with_commas(share_[0]) + " messages each)"
                                    : with_commas(share_[0]) + " and " + with_commas(share_[1]) + " messages)"));
  return true;
}

// Waits (bounded) for the victim to hold its message, then kills it.
void QueueScenario::kill_victim() {
  const std::string victim = "consumer " + std::to_string(kVictimConsumer + 1);
  const auto reached = scenario_.wait_until(
      kVictimConsumer, [this] { return shared_->victim_holding.load(acquire) != 0; }, t0_ + kReadyLimit);
  if (!reached.reached) {
    shared_->victim_gone.store(1, release);  // the other consumers stop waiting for it
    failures_.push_back(reached.ended ? "queue: " + victim + " ended (" + reached.ended->text() + ")" +
                                            scenario_.error_suffix(kVictimConsumer) + " before holding its message"
                                      : "queue: " + victim + " did not take " + with_commas(stall_at_) +
                                            " messages within " + secs(kReadyLimit));
    return;
  }
  victim_ready_ = true;
  victim_id_ = shared_->victim_id.load(relaxed);
  const std::uint32_t deliveries = shared_->victim_deliveries.load(relaxed);
  const ChannelStats before = queue_->stats();
  bool stats_holding = false;
  for (const auto& r : before.readers)
    if (r.pid == static_cast<std::uint32_t>(victim_pid_) && r.holding) stats_holding = true;
  out_.line("  " + victim + " (pid " + std::to_string(victim_pid_) + ") took " + describe(victim_id_) +
            ", deliveries() = " + std::to_string(deliveries) + ", and does not acknowledge it");
  out_.line(std::string("  Queue::stats: pid ") + std::to_string(victim_pid_) +
            (stats_holding ? " holds a message" : " holds NO message") + "; sending SIGKILL to pid " +
            std::to_string(victim_pid_));
  if (!stats_holding)
    failures_.push_back("queue: Queue::stats does not show pid " + std::to_string(victim_pid_) + " holding a message");
  if (deliveries != 1)
    failures_.push_back("queue: the victim's message was on delivery " + std::to_string(deliveries) +
                        ", expected its first");
  const ChildExit killed = scenario_.kill(kVictimConsumer, std::chrono::seconds(2));
  if (killed.how != ChildExit::How::signaled || killed.code != SIGKILL)
    failures_.push_back("queue: the victim did not die of SIGKILL (" + killed.text() + ")");
  kill_json_ = {{"pid", victim_pid_},
                {"consumer", kVictimConsumer + 1},
                {"message", victim_id_},
                {"sequence", shared_->victim_seq.load(relaxed)},
                {"deliveries", deliveries},
                {"stats_showed_holding", stats_holding},
                {"exit", killed.text()}};
}

// The killed consumer's message went to another consumer, on its second delivery.
void QueueScenario::check_redelivery() {
  const std::uint32_t redeliveries = shared_->redeliveries.load(acquire);
  if (!victim_ready_) return;
  if (shared_->redelivery_recorded.load(acquire) == 0) {
    failures_.push_back("queue: " + describe(victim_id_) + " held by the killed consumer was not redelivered");
  } else {
    const std::uint64_t id = shared_->redelivered_id.load(relaxed);
    const std::uint32_t pid = shared_->redelivered_pid.load(relaxed);
    const std::uint32_t deliveries = shared_->redelivered_deliveries.load(relaxed);
    out_.line("  redelivered: " + describe(id) + " to consumer " +
              std::to_string(shared_->redelivered_consumer.load(relaxed) + 1) + " (pid " + std::to_string(pid) +
              ") with deliveries() = " + std::to_string(deliveries) + "; first delivered to pid " +
              std::to_string(victim_pid_) + ", killed");
    if (id != victim_id_)
      failures_.push_back("queue: the redelivered message is " + with_commas(id) + ", not the killed consumer's " +
                          with_commas(victim_id_));
    if (deliveries != 2)
      failures_.push_back("queue: redelivered with deliveries() = " + std::to_string(deliveries) + ", expected 2");
    if (pid == static_cast<std::uint32_t>(victim_pid_)) failures_.push_back("queue: redelivered to the killed pid");
    redelivery_json_ = {{"message", id},
                        {"sequence", shared_->redelivered_seq.load(relaxed)},
                        {"old_pid", victim_pid_},
                        {"new_pid", pid},
                        {"consumer", shared_->redelivered_consumer.load(relaxed) + 1},
                        {"deliveries", deliveries}};
  }
  if (redeliveries != 1)
    failures_.push_back("queue: " + std::to_string(redeliveries) + " deliveries with deliveries() > 1, expected 1");
}

// Every message acknowledged exactly once, and delivered once but the killed
// consumer's (twice).
void QueueScenario::check_exactly_once() {
  std::uint64_t not_acked = 0, acked_twice = 0;
  std::uint64_t first_bad = ~std::uint64_t{0};
  for (std::uint64_t id = 0; id < total_; ++id) {
    const std::uint32_t r = receives_[id].load(relaxed);
    const std::uint32_t a = acks_[id].load(relaxed);
    sum_receives_ += r;
    sum_acks_ += a;
    if (a == 0) ++not_acked;
    if (a > 1) ++acked_twice;
    if (r > 1) duplicates_ += r - 1;
    const std::uint32_t expected_r = victim_ready_ && id == victim_id_ ? 2 : 1;
    if ((r != expected_r || a != 1) && first_bad == ~std::uint64_t{0}) first_bad = id;
  }
  exact_ = first_bad == ~std::uint64_t{0};
  if (!exact_)
    failures_.push_back("queue: " + with_commas(not_acked) + " messages never acknowledged, " +
                        with_commas(acked_twice) + " acknowledged twice, " + with_commas(duplicates_) +
                        " duplicate deliveries (first wrong: " + describe(first_bad) + ": delivered " +
                        std::to_string(receives_[first_bad].load(relaxed)) + "x, acknowledged " +
                        std::to_string(acks_[first_bad].load(relaxed)) + "x)");
}

// Nothing left behind: a fresh consumer here finds nothing (it would also
// rescue a message a dead consumer still held), and nothing went to the DLQ.
void QueueScenario::check_nothing_left() {
  if (auto consumer = queue_->consumer()) {
    if (auto msg = consumer->try_receive()) {
      Payload p;
      leftover_ = unseal(msg->data(), p, kProducers) == nullptr
                      ? describe(base_[p.source < 2 ? p.source : 0] + p.index) + ", delivery " +
                            std::to_string(msg->deliveries())
                      : "an unreadable message";
      failures_.push_back("queue: " + leftover_ + " was still in the queue at the end");
    }
  } else {
    failures_.push_back("queue: cannot open a consumer for the final check: " + consumer.error().message);
  }
  stats_ = queue_->stats();
  if (auto dlq = scratch_.node().queue(dlq_name_, OpenMode::open)) dlq_published_ = dlq->stats().published;
  else failures_.push_back("queue: cannot open '" + dlq_name_ + "': " + dlq.error().message);
  if (dlq_published_ != 0)
    failures_.push_back("queue: " + with_commas(dlq_published_) + " messages went to the dead-letter queue");
  if (stats_.published != total_ || stats_.depth != 0)
    failures_.push_back("queue: Queue::stats counts " + with_commas(stats_.published) + " published and depth " +
                        with_commas(stats_.depth) + ", expected " + with_commas(total_) + " and 0");
  if (stats_.dead_claims != 0 || stats_.bad_records != 0 || stats_.dropped_unacked != 0)
    failures_.push_back("queue: Queue::stats counts " + std::to_string(stats_.dead_claims) + " dead claims, " +
                        std::to_string(stats_.bad_records) + " bad records, " +
                        std::to_string(stats_.dropped_unacked) + " dropped, expected none");
}

void QueueScenario::report() {
  std::uint64_t produced = 0, prod_start = ~std::uint64_t{0}, prod_end = 0, cons_end = 0;
  nlohmann::json producers = nlohmann::json::array(), consumers = nlohmann::json::array();
  for (int i = 0; i < kProducers; ++i) {
    const ChannelProcess& w = shared_->writers[i];
    const std::uint64_t n = w.count.load(relaxed);
    produced += n;
    prod_start = std::min(prod_start, w.start_ns.load(relaxed));
    prod_end = std::max(prod_end, w.end_ns.load(relaxed));
    producers.push_back({{"pid", scenario_.pid(static_cast<std::size_t>(kConsumers + i))}, {"published", n}});
  }
  std::string per_consumer;
  for (int i = 0; i < kConsumers; ++i) {
    const ChannelProcess& r = shared_->readers[i];
    const std::uint64_t n = r.count.load(relaxed);
    cons_end = std::max(cons_end, r.end_ns.load(relaxed));
    const pid_t pid = scenario_.pid(static_cast<std::size_t>(i));
    const bool killed = i == kVictimConsumer && victim_ready_;
    const bool partial = !killed && clean_.count(pid) == 0;  // its count is the last progress it recorded
    per_consumer += (per_consumer.empty() ? "" : ", ") + std::to_string(i + 1) + ": " +
                    (partial ? "at least " : "") + with_commas(n) +
                    (killed ? " (+1 taken, not acknowledged: killed)" : partial ? " (did not end cleanly)" : "");
    consumers.push_back(
        {{"pid", pid}, {"acknowledged", n}, {"killed", killed}, {"ended_cleanly", clean_.count(pid) != 0}});
  }
  const std::uint64_t prod_ns = prod_end > prod_start ? prod_end - prod_start : 0;
  const std::uint64_t cons_ns = cons_end > go_ns_ ? cons_end - go_ns_ : 0;
  out_.line("  acknowledged: " + with_commas(sum_acks_) + " = every message exactly once" +
            (exact_ ? "" : " (NOT: see below)") + "; per consumer " + per_consumer);
  out_.line("  deliveries:   " + with_commas(sum_receives_) + " = " + with_commas(total_) + " + " +
            plural(duplicates_, "duplicate", "duplicates") +
            (victim_ready_ ? ": message " + with_commas(victim_id_) + ", redelivered after the kill" : std::string()));
  out_.line("  left over:    " + std::string(leftover_.empty() ? "nothing" : leftover_) +
            " (a fresh consumer finds the queue empty); Queue::stats: depth " + with_commas(stats_.depth) +
            ", dead-letter queue '" + dlq_name_ + "': " + with_commas(dlq_published_));
  out_.line("  producers:    " + with_commas(produced) + " messages in " +
            human_duration_ns(static_cast<double>(prod_ns)) + ": " + rate_text(produced, prod_ns));
  out_.line("  consumers:    " + with_commas(sum_acks_) + " acknowledged in " +
            human_duration_ns(static_cast<double>(cons_ns)) + ": " + rate_text(sum_acks_, cons_ns) +
            (victim_ready_ ? " (including the kill and the redelivery)" : ""));
  result_.detail["queue"] = {{"name", kQueueName},
                             {"capacity", kRingBytes},
                             {"max_message", kMaxMessage},
                             {"max_deliveries", kMaxDeliveries},
                             {"message_bytes", kMessageBytes},
                             {"total", total_},
                             {"producers", producers},
                             {"consumers", consumers},
                             {"killed", kill_json_},
                             {"redelivery", redelivery_json_},
                             {"deliveries", sum_receives_},
                             {"acknowledged", sum_acks_},
                             {"duplicates", duplicates_},
                             {"exactly_once_except_killed", exact_},
                             {"dead_lettered", dlq_published_},
                             {"stats_dead_readers", stats_.dead_readers},
                             {"depth", stats_.depth},
                             {"produce_rate", rate_json(produced, prod_ns)},
                             {"consume_rate", rate_json(sum_acks_, cons_ns)},
                             {"in_time", in_time_}};
}

}  // namespace

void run_queue(const DemoOptions& opt, ScratchNamespace& scratch, Reporter& out, PartOutcome& result) {
  QueueScenario(opt, scratch, out, result).run();
}

}  // namespace colo::cli
