// `colo bench kafka`: what colod's Kafka links cost, against librdkafka
// itself on the same broker, in one run (docs/kafka.md, "Figures").
//
// For each message size (--sizes, default 64 B and 1 KiB), N messages
// (--messages):
//   produce  raw: this process's librdkafka producer, idempotent, acks=all,
//            linger 5 ms (the mirror's settings), N messages into a topic of
//            one partition as fast as librdkafka takes them; msg/s from the
//            first produce call to the last acknowledgement. No headers:
//            the library's own pace.
//            mirror: a colod (LocalCluster, one host) mirrors a topic of its
//            namespace into a topic of one partition (block, key = origin,
//            colo's one header, colo.id); this process publishes N messages into the
//            ring (publish_batch); msg/s from the first publish to the moment
//            colod's link reports N acknowledged (its control socket, polled
//            every 5 ms).
//   consume  raw: a librdkafka consumer of a new group reads the raw
//            topic's N records, with a source link's prefetch bounds
//            (queued.max.messages.kbytes 16 MiB, queued.min.messages
//            300,000); msg/s from the first record to the last.
//            source: a colod's source link (another group), assigned the
//            topic while it was empty and paused until then, is resumed; it
//            reads the N records into a topic of its namespace; msg/s from
//            its first published record to its N-th (its `produced`
//            counter, polled every 5 ms), as for the raw consumer. (A
//            resumed partition starts fetching about half a second after
//            the resume: not counted.)
// Then the local publisher's cost with the mirror on and off: one thread
// publishes --latency-messages 64-byte messages at --rate per second into a
// topic mirrored by colod and into one nobody reads, alternately in chunks
// of 1,000; p50/p99/p99.9 of the publish call itself.
// Goals (reported, not enforced): mirror msg/s at least 80% of raw produce
// msg/s at each size; publish p50 with the mirror on at most 1.1x off.
//
// Checked, making the exit status 1: every message acknowledged by Kafka
// (mirror), every record published (source), nothing lost or skipped.
// Cleanup: colod stopped, the namespace removed, and the Kafka topics of the
// run (colo.bench.<pid>.*) deleted from the broker (a run of 2,000,000
// messages per cell writes gigabytes there), unless --keep-topics.
#include "commands.hpp"

#include <librdkafka/rdkafka.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "app.hpp"
#include "colo/internal/clock.hpp"
#include "colo/node.hpp"
#include "colod_client.hpp"
#include "format.hpp"
#include "link_bench.hpp"
#include "local_cluster.hpp"

namespace colo::cli {
namespace {

using namespace std::chrono_literals;
using internal::monotonic_ns;

constexpr double kGoalMirrorRatio = 0.8;
constexpr double kGoalPublishP50Ratio = 1.1;
constexpr std::uint32_t kLatencyChunk = 1000;

struct Options {
  std::string bootstrap;  // --bootstrap, else $COLO_KAFKA
  std::string colod;
  std::vector<std::uint32_t> sizes = {64, 1024};
  std::uint32_t messages = 2'000'000;  // on a quiet machine 200,000 last 0.15 s at 64 B: too short
  std::uint32_t latency_messages = 100'000;
  std::uint32_t rate = 20'000;
  bool quick = false;
  bool json = false;
  bool keep_topics = false;  // --keep-topics: leave the run's topics on the broker
};

// CPU time per record of a produce cell, in microseconds (-1: not
// measured): the producing process's (this one's for librdkafka alone,
// colod's for the mirror) and the broker's, when it runs on this host.
struct CpuPerRecord {
  double producer_us = -1, broker_us = -1;
};

struct SizeRun {
  std::uint32_t size = 0;
  double raw_produce = 0, raw_with_headers = 0, mirror = 0, raw_consume = 0, source = 0;  // msg/s
  CpuPerRecord raw_cpu, with_headers_cpu, mirror_cpu;
  std::string error;  // a failed measurement
};

struct Percentiles {
  double p50 = 0, p99 = 0, p999 = 0;  // ns
};

std::string run_id() { return "colo.bench." + std::to_string(::getpid()); }

// ------------------------------------------------------------ librdkafka side

struct Rd {
  rd_kafka_t* rk = nullptr;
  ~Rd() {
    if (rk != nullptr) rd_kafka_destroy(rk);
  }
};

std::string make_client(Rd& out, rd_kafka_type_t type, const std::vector<std::pair<std::string, std::string>>& props,
                        void (*dr)(rd_kafka_t*, const rd_kafka_message_t*, void*) = nullptr, void* opaque = nullptr) {
  char err[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  for (const auto& [k, v] : props)
    if (rd_kafka_conf_set(conf, k.c_str(), v.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK) {
      rd_kafka_conf_destroy(conf);
      return k + ": " + err;
    }
  rd_kafka_conf_set_log_cb(conf, [](const rd_kafka_t*, int, const char*, const char*) {});  // quiet: the table speaks
  if (dr != nullptr) rd_kafka_conf_set_dr_msg_cb(conf, dr);
  if (opaque != nullptr) rd_kafka_conf_set_opaque(conf, opaque);
  out.rk = rd_kafka_new(type, conf, err, sizeof err);
  return out.rk == nullptr ? std::string(err) : std::string();
}

// A topic of one partition, created through the admin API.
std::string create_topic(const std::string& bootstrap, const std::string& topic) {
  Rd admin;
  if (auto e = make_client(admin, RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap}}); !e.empty()) return e;
  char err[512];
  rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), 1, -1, err, sizeof err);
  if (nt == nullptr) return err;
  rd_kafka_queue_t* q = rd_kafka_queue_new(admin.rk);
  rd_kafka_CreateTopics(admin.rk, &nt, 1, nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  std::string problem = ev == nullptr ? "no answer to CreateTopics" : "";
  if (ev != nullptr) {
    size_t n = 0;
    const auto** results = rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &n);
    for (size_t i = 0; i < n; ++i)
      if (rd_kafka_topic_result_error(results[i]) != RD_KAFKA_RESP_ERR_NO_ERROR)
        problem = rd_kafka_err2str(rd_kafka_topic_result_error(results[i]));
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  return problem;
}

// Deletes every topic whose name starts with `prefix` (the run's, also those
// a mirror link created); returns how many, or sets `error`.
std::size_t delete_topics(const std::string& bootstrap, const std::string& prefix, std::string& error) {
  Rd admin;
  if (auto e = make_client(admin, RD_KAFKA_PRODUCER, {{"bootstrap.servers", bootstrap}}); !e.empty()) {
    error = e;
    return 0;
  }
  const rd_kafka_metadata_t* metadata = nullptr;
  if (auto e = rd_kafka_metadata(admin.rk, 1, nullptr, &metadata, 30000); e != RD_KAFKA_RESP_ERR_NO_ERROR) {
    error = std::string("listing topics: ") + rd_kafka_err2str(e);
    return 0;
  }
  std::vector<rd_kafka_DeleteTopic_t*> doomed;
  for (int i = 0; i < metadata->topic_cnt; ++i)
    if (std::string_view(metadata->topics[i].topic).starts_with(prefix))
      doomed.push_back(rd_kafka_DeleteTopic_new(metadata->topics[i].topic));
  rd_kafka_metadata_destroy(metadata);
  if (doomed.empty()) return 0;
  rd_kafka_queue_t* q = rd_kafka_queue_new(admin.rk);
  rd_kafka_DeleteTopics(admin.rk, doomed.data(), doomed.size(), nullptr, q);
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, 30000);
  std::size_t deleted = 0;
  if (ev == nullptr) {
    error = "no answer to DeleteTopics";
  } else {
    size_t n = 0;
    const auto** results = rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &n);
    for (size_t i = 0; i < n; ++i) {
      if (rd_kafka_topic_result_error(results[i]) == RD_KAFKA_RESP_ERR_NO_ERROR) ++deleted;
      else error = std::string(rd_kafka_topic_result_name(results[i])) + ": " +
                   rd_kafka_err2str(rd_kafka_topic_result_error(results[i]));
    }
    rd_kafka_event_destroy(ev);
  }
  rd_kafka_queue_destroy(q);
  rd_kafka_DeleteTopic_destroy_array(doomed.data(), doomed.size());
  return deleted;
}

struct Delivered {
  std::uint64_t ok = 0, failed = 0;
};

// CPU time (user + system) of all of this process's threads so far, in seconds.
double own_cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(u.ru_utime) + seconds(u.ru_stime);
}

// CPU per record between two readings (seconds), or -1 if either failed.
double us_per_record(double before, double after, std::uint32_t records) {
  return before < 0 || after < 0 ? -1 : (after - before) * 1e6 / records;
}

// N messages of `size` bytes, as fast as librdkafka takes them; with
// `headers`, each carries the header a mirror gives its records (colo.id,
// a value of the same form) and a timestamp: the same bytes on the wire.
// `cpu`: this process's CPU (the calling thread and librdkafka's) and the
// broker's (`broker_pid`, 0 if not on this host), per record.
double raw_produce(const Options& o, const std::string& topic, std::uint32_t size, bool headers, pid_t broker_pid,
                   CpuPerRecord& cpu, std::string& error) {
  Delivered delivered;
  Rd p;
  error = make_client(
      p, RD_KAFKA_PRODUCER,
      {{"bootstrap.servers", o.bootstrap}, {"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", "5"},
       {"batch.num.messages", "10000"}, {"message.timeout.ms", "0"}},
      [](rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
        auto* d = static_cast<Delivered*>(opaque);
        (m->err == RD_KAFKA_RESP_ERR_NO_ERROR ? d->ok : d->failed)++;
      },
      &delivered);
  if (!error.empty()) return 0;
  const std::string payload(size, 'r');
  const std::string key = "bench";
  // colo.id's prefix, "ORIGIN:OBJECT:EPOCH:" (bridge/links/mirror_ring.hpp).
  const std::string id_prefix =
      key + ":bench/mirror-" + std::to_string(size) + ":" + std::to_string(internal::realtime_ns()) + ":";
  // Warm-up, not timed: the idempotent producer's id (the broker's first
  // answer can take a second) and the connection.
  rd_kafka_producev(p.rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE(const_cast<char*>("w"), 1), RD_KAFKA_V_END);
  while (delivered.ok + delivered.failed < 1) rd_kafka_poll(p.rk, 10);
  delivered = {};
  const double own_before = own_cpu_seconds();
  const double broker_before = broker_pid != 0 ? cpu_seconds(broker_pid) : -1;
  const std::uint64_t t0 = monotonic_ns();
  char id[128];
  std::copy(id_prefix.begin(), id_prefix.end(), id);
  for (std::uint32_t i = 0; i < o.messages; ++i) {
    const auto id_len = std::to_chars(id + id_prefix.size(), id + sizeof id, i).ptr - id;
    for (;;) {
      // The same call the mirror makes (bridge/links/kafka/mirror.cpp), its header or none.
      const auto err =
          headers ? rd_kafka_producev(p.rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                                      RD_KAFKA_V_KEY(key.data(), key.size()),
                                      RD_KAFKA_V_HEADER("colo.id", id, static_cast<ssize_t>(id_len)),
                                      RD_KAFKA_V_TIMESTAMP(static_cast<std::int64_t>(internal::realtime_ns() / 1'000'000)),
                                      RD_KAFKA_V_END)
                  : rd_kafka_producev(p.rk, RD_KAFKA_V_TOPIC(topic.c_str()), RD_KAFKA_V_PARTITION(0),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                                      RD_KAFKA_V_KEY(key.data(), key.size()), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        error = std::string("produce: ") + rd_kafka_err2str(err);
        return 0;
      }
      rd_kafka_poll(p.rk, 1);
    }
    rd_kafka_poll(p.rk, 0);
  }
  while (delivered.ok + delivered.failed < o.messages) rd_kafka_poll(p.rk, 1);
  const double s = static_cast<double>(monotonic_ns() - t0) / 1e9;
  cpu.producer_us = us_per_record(own_before, own_cpu_seconds(), o.messages);
  if (broker_pid != 0) cpu.broker_us = us_per_record(broker_before, cpu_seconds(broker_pid), o.messages);
  if (delivered.failed != 0) error = std::to_string(delivered.failed) + " message(s) not delivered";
  return o.messages / s;
}

// A new group reads the topic's N records (and the warm-up one).
double raw_consume(const Options& o, const std::string& topic, std::string& error) {
  Rd c;
  error = make_client(c, RD_KAFKA_CONSUMER,
                      {{"bootstrap.servers", o.bootstrap}, {"group.id", topic + ".raw-consumer"},
                       {"auto.offset.reset", "earliest"}, {"enable.auto.commit", "true"},
                       {"queued.max.messages.kbytes", "16384"},  // as a source link's prefetch
                       {"queued.min.messages", "300000"}});
  if (!error.empty()) return 0;
  rd_kafka_poll_set_consumer(c.rk);
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(list, topic.c_str(), RD_KAFKA_PARTITION_UA);
  rd_kafka_subscribe(c.rk, list);
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_queue_t* q = rd_kafka_queue_get_consumer(c.rk);
  std::uint64_t got = 0, first = 0;
  const std::uint64_t deadline = monotonic_ns() + 300'000'000'000ull;
  rd_kafka_message_t* batch[1000];
  while (got < o.messages + 1 && monotonic_ns() < deadline) {
    const ssize_t n = rd_kafka_consume_batch_queue(q, 100, batch, 1000);
    for (ssize_t i = 0; i < n; ++i) {
      if (batch[i]->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (got++ == 0) first = monotonic_ns();
      }
      rd_kafka_message_destroy(batch[i]);
    }
  }
  const std::uint64_t end = monotonic_ns();
  rd_kafka_queue_destroy(q);
  rd_kafka_consumer_close(c.rk);
  if (got < o.messages + 1) {
    error = "read " + std::to_string(got) + " of " + std::to_string(o.messages + 1) + " records";
    return 0;
  }
  return o.messages / (static_cast<double>(end - first) / 1e9);
}

// ------------------------------------------------------------------ colod side

std::string link_toml(const std::string& mode, const std::string& object, const std::string& topic,
                      std::uint64_t capacity, std::uint32_t max_message, const std::string& extra) {
  return "[[link]]\nmode = \"" + mode + "\"\nobject = \"" + object + "\"\nkind = \"topic\"\ncapacity = " +
         std::to_string(capacity) + "\nmax_message = " + std::to_string(max_message) +
         "\nkafka = { cluster = \"bench\", topic = \"" + topic + "\"" + extra + " }\n";
}

Percentiles percentiles(std::vector<double>& v) {
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return v.empty() ? 0.0 : v[std::min(v.size() - 1, static_cast<std::size_t>(q * v.size()))]; };
  return {at(0.5), at(0.99), at(0.999)};
}

// Publish-call latency into `on` (mirrored) and `off` (not), alternately in chunks, at a fixed rate.
std::string publish_latency(Node& node, const Options& o, Percentiles& on, Percentiles& off) {
  auto t_on = node.topic("bench/latency-mirrored", OpenMode::open);
  auto t_off = node.topic("bench/latency-plain", OpenMode::create_or_open, TopicOptions{1 << 24, 1024, 0});
  if (!t_on || !t_off) return "latency topics: " + (!t_on ? t_on.error().message : t_off.error().message);
  auto p_on = t_on->publisher();
  auto p_off = t_off->publisher();
  if (!p_on || !p_off) return "latency publishers";
  std::vector<double> ns_on, ns_off;
  const std::string payload(64, 'l');
  const auto bytes = std::as_bytes(std::span(payload.data(), payload.size()));
  const double gap_ns = 1e9 / o.rate;
  const std::uint64_t t0 = monotonic_ns();
  for (std::uint32_t i = 0; i < o.latency_messages; ++i) {
    const auto due = t0 + static_cast<std::uint64_t>(i * gap_ns);
    while (monotonic_ns() < due) {
    }
    const bool mirrored = (i / kLatencyChunk) % 2 == 0;
    const std::uint64_t start = monotonic_ns();
    const auto status = (mirrored ? *p_on : *p_off).publish(bytes, 1s);
    const double took = static_cast<double>(monotonic_ns() - start);
    if (status != SendStatus::ok) return "latency publish failed";
    (mirrored ? ns_on : ns_off).push_back(took);
  }
  on = percentiles(ns_on);
  off = percentiles(ns_off);
  return {};
}

// ------------------------------------------------------------------ the run

struct Run {
  std::vector<SizeRun> sizes;
  Percentiles on, off;
  std::string error;  // a failure outside one size's cells
  double load_before = 0, load_after = 0;
  std::size_t topics_deleted = 0;
  std::string cleanup_error;  // the topics could not all be deleted
};

Run run(const Options& o, Progress& progress) {
  Run r;
  const std::string id = run_id();
  // The broker's CPU is counted only when it runs here (a loopback broker, as the tests' own).
  const pid_t broker_pid = tcp_listener_pid(first_bootstrap_port(o.bootstrap));
  for (auto size : o.sizes) {
    SizeRun s;
    s.size = size;
    r.sizes.push_back(s);
  }
  auto raw_topic = [&](const SizeRun& s) { return id + ".raw-" + std::to_string(s.size); };
  auto source_link = [&](const SizeRun& s) { return "source:bench/source-" + std::to_string(s.size); };
  for (const auto& s : r.sizes)
    if (auto e = create_topic(o.bootstrap, raw_topic(s)); !e.empty()) return r.error = "topic " + raw_topic(s) + ": " + e, r;
  // A colod whose source links wait, paused, on the raw topics while they are
  // filled and read by librdkafka alone; then resumed one at a time.
  LocalCluster::Settings source_settings;
  source_settings.colod = o.colod;
  source_settings.extra_toml = "[[kafka]]\nname = \"bench\"\nbootstrap = \"" + o.bootstrap + "\"\n";
  for (const auto& s : r.sizes)
    // Nobody reads the source's topic: its ring wraps (reclaim is part of
    // the cost), 64 MiB like a busy topic's, not one that holds the run.
    source_settings.extra_toml += link_toml("source", "bench/source-" + std::to_string(s.size), raw_topic(s),
                                            std::max<std::uint64_t>(64ull << 20, ring_for(1000, s.size + 200)),
                                            s.size + 200,
                                            ", group = \"" + id + ".source\"");
  progress.show("colod with source links");
  LocalCluster sources;
  if (auto started = sources.start(source_settings, {{"bench", "kafkabench-s-"}}); !started)
    return r.error = started.error().message, r;
  auto& source_host = sources.host(0);
  for (const auto& s : r.sizes) {
    for (int i = 0; i < 15000 && link_counter(source_host, source_link(s), true) < 0; ++i) std::this_thread::sleep_for(kLinkPoll);
    if (auto paused = colod_pause_link(source_host.ns(), source_host.control, 1.0, source_link(s), true); !paused)
      return r.error = paused.error().message, r;
  }
  std::this_thread::sleep_for(2s);  // assigned, paused: nothing fetched
  for (auto& s : r.sizes) {
    progress.show("raw producer, " + std::to_string(s.size) + " B");
    s.raw_produce = raw_produce(o, raw_topic(s), s.size, false, broker_pid, s.raw_cpu, s.error);
    if (!s.error.empty()) continue;
    const std::string with_headers = id + ".raw-headers-" + std::to_string(s.size);
    progress.show("raw producer with colo's header, " + std::to_string(s.size) + " B");
    if (auto e = create_topic(o.bootstrap, with_headers); !e.empty()) return r.error = "topic " + with_headers + ": " + e, r;
    s.raw_with_headers = raw_produce(o, with_headers, s.size, true, broker_pid, s.with_headers_cpu, s.error);
    if (!s.error.empty()) continue;
    progress.show("raw consumer, " + std::to_string(s.size) + " B");
    s.raw_consume = raw_consume(o, raw_topic(s), s.error);
    if (!s.error.empty()) continue;
    progress.show("colod source, " + std::to_string(s.size) + " B");
    if (auto resumed = colod_pause_link(source_host.ns(), source_host.control, 1.0, source_link(s), false); !resumed) {
      s.error = resumed.error().message;
      continue;
    }
    std::uint64_t first = 0, done = 0, at_first = 0;
    if (wait_counter(source_host, source_link(s), true, o.messages + 1, first, done, s.error, &at_first))
      s.source = static_cast<double>(o.messages + 1 - at_first) / (static_cast<double>(done - first) / 1e9);
  }
  (void)sources.stop();
  // colod with a mirror link per size and the mirrored latency topic.
  LocalCluster::Settings settings;
  settings.colod = o.colod;
  settings.extra_toml = "[[kafka]]\nname = \"bench\"\nbootstrap = \"" + o.bootstrap + "\"\n";
  for (const auto& s : r.sizes)
    settings.extra_toml += link_toml("mirror", "bench/mirror-" + std::to_string(s.size),
                                     id + ".mirror-" + std::to_string(s.size), ring_for(o.messages, s.size), s.size,
                                     ", key = \"origin\"");
  settings.extra_toml +=
      link_toml("mirror", "bench/latency-mirrored", id + ".latency", 1 << 24, 1024, ", key = \"origin\"");
  for (const auto& s : r.sizes) {
    const std::string topic = id + ".mirror-" + std::to_string(s.size);
    if (auto e = create_topic(o.bootstrap, topic); !e.empty()) return r.error = "topic " + topic + ": " + e, r;
  }
  progress.show("colod with mirror links");
  LocalCluster cluster;
  if (auto started = cluster.start(settings, {{"bench", "kafkabench-m-"}}); !started)
    return r.error = started.error().message, r;
  auto& host = cluster.host(0);
  // Each link running (it has read its partition back) before it is timed.
  for (const auto& s : r.sizes) {
    const std::string link = "mirror:bench/mirror-" + std::to_string(s.size);
    for (int i = 0; i < 15000 && link_counter(host, link, false) < 0; ++i) std::this_thread::sleep_for(kLinkPoll);
  }
  std::this_thread::sleep_for(1s);
  NodeOptions node_options;
  node_options.ns = host.ns();
  auto node = Node::open(node_options);
  if (!node) return r.error = node.error().message, r;
  for (auto& s : r.sizes) {
    if (!s.error.empty()) continue;
    progress.show("mirror, " + std::to_string(s.size) + " B");
    const std::string object = "bench/mirror-" + std::to_string(s.size);
    const double colod_before = cpu_seconds(host.pid);
    const double broker_before = broker_pid != 0 ? cpu_seconds(broker_pid) : -1;
    const std::uint64_t t0 = monotonic_ns();
    if (auto e = publish_all(*node, object, o.messages, s.size); !e.empty()) {
      s.error = e;
      continue;
    }
    std::uint64_t first = 0, done = 0;
    if (wait_counter(host, "mirror:" + object, false, o.messages, first, done, s.error)) {
      s.mirror = o.messages / (static_cast<double>(done - t0) / 1e9);
      s.mirror_cpu.producer_us = us_per_record(colod_before, cpu_seconds(host.pid), o.messages);
      if (broker_pid != 0) s.mirror_cpu.broker_us = us_per_record(broker_before, cpu_seconds(broker_pid), o.messages);
    }
  }
  progress.show("publish latency, mirror on and off");
  if (auto e = publish_latency(*node, o, r.on, r.off); !e.empty()) r.error = e;
  (void)cluster.stop();
  return r;
}

std::string ratio_or_dash(double a, double b) { return a > 0 && b > 0 ? ratio_text(a / b) : "-"; }

int run_bench_kafka(Options o, const CLI::App& cmd) {
  if (o.quick) {
    if (cmd.count("--messages") == 0) o.messages = 20'000;
    if (cmd.count("--latency-messages") == 0) o.latency_messages = 20'000;
  }
  if (o.bootstrap.empty()) {
    const char* env = std::getenv("COLO_KAFKA");
    o.bootstrap = env != nullptr ? env : "";
  }
  if (o.bootstrap.empty())
    return fail("no Kafka broker: give --bootstrap HOST:PORT or set COLO_KAFKA (tests/services/services.sh start "
                "kafka starts one on loopback)");
  if (o.colod.empty()) o.colod = find_colod();
  Run r;
  const double load_before = load_average();  // r is replaced by run()'s result
  {
    Progress progress(!o.json);
    r = run(o, progress);
  }
  r.load_before = load_before;
  r.load_after = load_average();
  if (!o.keep_topics) r.topics_deleted = delete_topics(o.bootstrap, run_id() + ".", r.cleanup_error);
  bool correct = r.error.empty();
  for (const auto& s : r.sizes) correct = correct && s.error.empty();
  const double p50_ratio = r.off.p50 > 0 ? r.on.p50 / r.off.p50 : 0;
  if (o.json) {
    // null where not measured (the broker on another host).
    auto us_or_null = [](double us) { return us < 0 ? nlohmann::json() : nlohmann::json(us); };
    auto cpu_json = [&](const CpuPerRecord& c) {
      return nlohmann::json{{"producer", us_or_null(c.producer_us)}, {"broker", us_or_null(c.broker_us)}};
    };
    nlohmann::json sizes = nlohmann::json::array();
    for (const auto& s : r.sizes)
      sizes.push_back({{"size", s.size},
                       {"raw_produce_msg_per_s", s.raw_produce},
                       {"raw_produce_with_colo_headers_msg_per_s", s.raw_with_headers},
                       {"mirror_msg_per_s", s.mirror},
                       {"mirror_over_raw", s.raw_produce > 0 ? s.mirror / s.raw_produce : 0},
                       {"mirror_over_raw_with_headers", s.raw_with_headers > 0 ? s.mirror / s.raw_with_headers : 0},
                       {"raw_consume_msg_per_s", s.raw_consume},
                       {"source_msg_per_s", s.source},
                       {"source_over_raw", s.raw_consume > 0 ? s.source / s.raw_consume : 0},
                       {"cpu_us_per_record",
                        {{"raw_produce", cpu_json(s.raw_cpu)},
                         {"raw_produce_with_colo_headers", cpu_json(s.with_headers_cpu)},
                         {"mirror", cpu_json(s.mirror_cpu)}}},
                       {"goal_mirror_at_least", kGoalMirrorRatio},
                       {"error", s.error}});
    auto pj = [](const Percentiles& p) { return nlohmann::json{{"p50_ns", p.p50}, {"p99_ns", p.p99}, {"p999_ns", p.p999}}; };
    std::cout << nlohmann::json{{"benchmark", "kafka"},
                                {"machine", machine_json()},
                                {"bootstrap", o.bootstrap},
                                {"messages", o.messages},
                                {"load_average_1min", {{"before", r.load_before}, {"after", r.load_after}}},
                                {"sizes", sizes},
                                {"publish_latency",
                                 {{"rate_per_s", o.rate},
                                  {"messages", o.latency_messages},
                                  {"mirror_on", pj(r.on)},
                                  {"mirror_off", pj(r.off)},
                                  {"p50_on_over_off", p50_ratio},
                                  {"goal_at_most", kGoalPublishP50Ratio}}},
                                {"error", r.error},
                                {"topics", run_id() + ".*"},
                                {"topics_deleted", r.topics_deleted},
                                {"cleanup_error", r.cleanup_error},
                                {"correct", correct}}
                     .dump(2)
              << '\n';
    return correct ? kExitOk : kExitFailure;
  }
  std::printf("colo bench kafka: colod's Kafka links against librdkafka on the same broker (%s)\n%s\n",
              o.bootstrap.c_str(), machine_line().c_str());
  std::printf("load average (1 min): %.2f before, %.2f after; %u messages per cell\n\n", r.load_before, r.load_after,
              o.messages);
  std::printf("%-7s %13s %13s %13s %8s %8s %6s   %13s %13s %8s\n", "size", "raw produce", "+ colo.id",
              "colod mirror", "/raw", "/+id", "goal", "raw consume", "colod source", "source/");
  for (const auto& s : r.sizes) {
    if (!s.error.empty()) {
      std::printf("%-7s FAILED: %s\n", human_bytes(s.size).c_str(), s.error.c_str());
      continue;
    }
    std::printf("%-7s %11s/s %11s/s %11s/s %8s %8s %6s   %11s/s %11s/s %8s\n", human_bytes(s.size).c_str(),
                human_rate(s.raw_produce).c_str(), human_rate(s.raw_with_headers).c_str(), human_rate(s.mirror).c_str(),
                ratio_or_dash(s.mirror, s.raw_produce).c_str(), ratio_or_dash(s.mirror, s.raw_with_headers).c_str(),
                s.mirror >= kGoalMirrorRatio * s.raw_produce ? "met" : "MISSED", human_rate(s.raw_consume).c_str(),
                human_rate(s.source).c_str(), ratio_or_dash(s.source, s.raw_consume).c_str());
  }
  // Where a produce cell's time goes: the producer's CPU per record, and the broker's when it runs here.
  auto us = [](double v) {
    if (v < 0) return std::string("-");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f us", v);
    return std::string(buf);
  };
  std::printf("\nCPU per record    %13s %13s %13s\n", "raw produce", "+ colo.id", "colod mirror");
  for (const auto& s : r.sizes) {
    if (!s.error.empty()) continue;
    std::printf("%-7s producer %13s %13s %13s\n", human_bytes(s.size).c_str(), us(s.raw_cpu.producer_us).c_str(),
                us(s.with_headers_cpu.producer_us).c_str(), us(s.mirror_cpu.producer_us).c_str());
    std::printf("%-7s broker   %13s %13s %13s\n", "", us(s.raw_cpu.broker_us).c_str(),
                us(s.with_headers_cpu.broker_us).c_str(), us(s.mirror_cpu.broker_us).c_str());
  }
  std::printf("\npublish call, 64 B at %u/s, %u messages: mirror on p50 %s p99 %s p99.9 %s; off p50 %s p99 %s "
              "p99.9 %s; p50 on/off %s (goal at most %.1f: %s)\n",
              o.rate, o.latency_messages, human_duration_ns(r.on.p50).c_str(), human_duration_ns(r.on.p99).c_str(),
              human_duration_ns(r.on.p999).c_str(), human_duration_ns(r.off.p50).c_str(),
              human_duration_ns(r.off.p99).c_str(), human_duration_ns(r.off.p999).c_str(),
              ratio_or_dash(r.on.p50, r.off.p50).c_str(), kGoalPublishP50Ratio,
              p50_ratio > 0 && p50_ratio <= kGoalPublishP50Ratio ? "met" : "MISSED");
  if (!r.error.empty()) std::printf("FAILED: %s\n", r.error.c_str());
  if (o.keep_topics) std::printf("the run's topics (%s.*) stay on the broker\n", run_id().c_str());
  else if (!r.cleanup_error.empty())
    std::printf("deleting the run's topics (%s.*): %s\n", run_id().c_str(), r.cleanup_error.c_str());
  else std::printf("the run's %zu topics deleted from the broker\n", r.topics_deleted);
  std::printf(
      "raw produce: librdkafka, idempotent, acks=all, linger 5 ms, no headers; + colo.id: the same with the header\n"
      "a mirror gives each record (the same bytes on the wire). mirror: from the first publish into the ring\n"
      "to Kafka's last acknowledgement. The goal is on mirror/raw (no headers). raw consume / source: from the first\n"
      "record to the last (a new group each). CPU per record: user + system time of the producing process (this\n"
      "one, librdkafka's threads included; colod for the mirror) and of the broker (if it listens on this host)\n"
      "over the cell, divided by its records. Goals are reported, not enforced; exit status 1 only if a measurement\n"
      "failed or a message was lost.\n");
  return correct ? kExitOk : kExitFailure;
}

}  // namespace

void register_bench_kafka(CLI::App& bench, int& exit_code) {
  auto* cmd = bench.add_subcommand("kafka", "colod's Kafka mirror and source against librdkafka on the same broker");
  cmd->footer(
      "Needs a Kafka broker: --bootstrap HOST:PORT or $COLO_KAFKA (tests/services/services.sh start kafka starts one "
      "on loopback). Each size: librdkafka's producer alone, then colod's mirror (publish into a ring, colod produces); "
      "librdkafka's consumer alone, then colod's source (colod consumes into a ring). Then the local publish call "
      "with the mirror on and off. Goals: mirror at least 80% of the raw producer's msg/s; publish p50 with the "
      "mirror on within 10% of off.\n"
      "Examples:\n"
      "  colo bench kafka --quick\n"
      "  colo bench kafka --sizes 64 --messages 500000 --json");
  auto o = std::make_shared<Options>();
  cmd->add_option("--bootstrap", o->bootstrap, "the broker (default: $COLO_KAFKA)");
  cmd->add_option("--sizes", o->sizes, "message sizes in bytes (64,1024 or 64 1024)")
      ->delimiter(',')
      ->capture_default_str()
      ->check(CLI::Range(1u, 1u << 20));
  cmd->add_option("--messages", o->messages, "messages per cell")->capture_default_str()->check(CLI::Range(1000u, 100'000'000u));
  cmd->add_option("--latency-messages", o->latency_messages, "publishes timed, mirror on and off together")
      ->capture_default_str()
      ->check(CLI::Range(2000u, 100'000'000u));
  cmd->add_option("--rate", o->rate, "publishes per second in the latency run")->capture_default_str()->check(CLI::Range(100u, 10'000'000u));
  cmd->add_option("--colod", o->colod, "the colod program (default: $COLOD_BIN, beside colo-bench, or on $PATH)");
  cmd->add_flag("--quick", o->quick, "20,000 messages per cell (a smoke run)");
  cmd->add_flag("--json", o->json, "print JSON");
  cmd->add_flag("--keep-topics", o->keep_topics, "leave the run's topics (colo.bench.PID.*) on the broker (default: deleted)");
  cmd->callback([o, cmd, &exit_code] { exit_code = run_bench_kafka(*o, *cmd); });
}

}  // namespace colo::cli
