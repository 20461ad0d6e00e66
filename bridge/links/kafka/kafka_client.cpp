#include "kafka_client.hpp"

#include <algorithm>
#include <cstring>
#include <thread>

namespace colo::bridge::kafka {
namespace {

// Properties whose value a link's guarantees rest on, and why.
constexpr std::pair<std::string_view, std::string_view> kReserved[] = {
    {"bootstrap.servers", "write it as the table's `bootstrap`"},
    {"metadata.broker.list", "write it as the table's `bootstrap`"},
    {"enable.idempotence", "a mirror's exactly-once needs the idempotent producer"},
    {"acks", "records count as stored only when every in-sync replica has them (acks=all)"},
    {"request.required.acks", "records count as stored only when every in-sync replica has them (acks=all)"},
    {"transactional.id", "colod's producers are idempotent, not transactional (docs/kafka.md)"},
    {"group.id", "a link names its group in [link.kafka] group"},
    {"group.instance.id", "each link is a static member of its group, under a name of its own"},
    {"enable.auto.commit", "a source commits an offset only once the object has the record"},
    {"enable.auto.offset.store", "a source commits an offset only once the object has the record"},
    {"message.timeout.ms", "set per link by its backpressure class"},
    {"delivery.timeout.ms", "set per link by its backpressure class"},
};

constexpr std::int64_t kFirstWindow = 256;  // records read back at first; doubled each time

}  // namespace

std::optional<std::string> property_problem(const std::string& name, const std::string& value) {
  Conf conf(rd_kafka_conf_new());
  char errstr[512] = {};
  if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
    return "librdkafka: " + std::string(errstr);
  return std::nullopt;
}

std::optional<std::string> reserved_property(const std::string& name) {
  for (const auto& [reserved, why] : kReserved)
    if (name == reserved) return std::string(why);
  return std::nullopt;
}

std::string error_text(rd_kafka_resp_err_t err) { return rd_kafka_err2str(err); }

void ClientDeleter::operator()(rd_kafka_t* rk) const noexcept { rd_kafka_destroy(rk); }

Result<Conf> make_conf(const KafkaClusterConfig& cluster, const Properties& own) {
  Conf conf(rd_kafka_conf_new());
  char errstr[512] = {};
  auto set = [&](const std::string& name, const std::string& value) -> Result<void> {
    if (rd_kafka_conf_set(conf.get(), name.c_str(), value.c_str(), errstr, sizeof errstr) != RD_KAFKA_CONF_OK)
      return Error{Errc::invalid_argument, "kafka cluster " + cluster.name + ": " + name + ": " + errstr};
    return Ok{};
  };
  if (auto ok = set("bootstrap.servers", cluster.bootstrap); !ok) return std::move(ok).error();
  for (const auto& [name, value] : cluster.properties)
    if (auto ok = set(name, value); !ok) return std::move(ok).error();
  for (const auto& [name, value] : own)
    if (auto ok = set(name, value); !ok) return std::move(ok).error();
  return conf;
}

Result<Client> make_client(rd_kafka_type_t type, Conf conf) {
  char errstr[512] = {};
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof errstr);
  if (rk == nullptr) return Error{Errc::invalid_argument, std::string("librdkafka: ") + errstr};
  (void)conf.release();  // rd_kafka_new took it
  return Client(rk);
}

Result<std::int32_t> topic_partitions(rd_kafka_t* rk, const std::string& topic, std::int32_t create_partitions,
                                      std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto left_ms = [&] {
    return static_cast<int>(std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count()));
  };
  bool created = false;
  for (;;) {
    // Metadata of this topic only (a handle that does not trigger auto-creation).
    TopicHandle rkt(rd_kafka_topic_new(rk, topic.c_str(), nullptr));
    const rd_kafka_metadata_t* metadata = nullptr;
    const auto err = rd_kafka_metadata(rk, 0, rkt.get(), &metadata, std::min(left_ms(), 5000));
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (std::chrono::steady_clock::now() >= deadline)
        return Error{Errc::timed_out, "kafka: metadata of topic " + topic + ": " + error_text(err)};
      std::this_thread::sleep_for(std::chrono::milliseconds(100));  // not reachable yet: librdkafka reconnects
      continue;
    }
    const auto& t = metadata->topics[0];
    const auto topic_err = metadata->topic_cnt == 1 ? t.err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    const std::int32_t count = metadata->topic_cnt == 1 ? t.partition_cnt : 0;
    rd_kafka_metadata_destroy(metadata);
    if (topic_err == RD_KAFKA_RESP_ERR_NO_ERROR && count > 0) return count;
    if (topic_err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && topic_err != RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE)
      return Error{Errc::invalid_argument, "kafka: topic " + topic + ": " + error_text(topic_err)};
    if (std::chrono::steady_clock::now() >= deadline)
      return Error{Errc::timed_out, "kafka: topic " + topic + ": " + error_text(topic_err)};
    if (topic_err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART && create_partitions > 0 && !created) {
      // CreateTopics through the admin API on this very client.
      char errstr[512] = {};
      rd_kafka_NewTopic_t* new_topic =
          rd_kafka_NewTopic_new(topic.c_str(), create_partitions, -1, errstr, sizeof errstr);
      if (new_topic == nullptr) return Error{Errc::invalid_argument, "kafka: topic " + topic + ": " + errstr};
      rd_kafka_queue_t* queue = rd_kafka_queue_new(rk);
      rd_kafka_CreateTopics(rk, &new_topic, 1, nullptr, queue);
      rd_kafka_event_t* event = rd_kafka_queue_poll(queue, left_ms());
      std::string problem;
      if (event == nullptr) {
        problem = "no answer to CreateTopics";
      } else if (const auto* result = rd_kafka_event_CreateTopics_result(event)) {
        size_t n = 0;
        const rd_kafka_topic_result_t** topics = rd_kafka_CreateTopics_result_topics(result, &n);
        for (size_t i = 0; i < n; ++i) {
          const auto e = rd_kafka_topic_result_error(topics[i]);
          if (e != RD_KAFKA_RESP_ERR_NO_ERROR && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
            problem = error_text(e) + (rd_kafka_topic_result_error_string(topics[i])
                                           ? std::string(": ") + rd_kafka_topic_result_error_string(topics[i])
                                           : "");
        }
        if (n == 0 && rd_kafka_event_error(event) != RD_KAFKA_RESP_ERR_NO_ERROR)
          problem = rd_kafka_event_error_string(event);
      }
      if (event != nullptr) rd_kafka_event_destroy(event);
      rd_kafka_queue_destroy(queue);
      rd_kafka_NewTopic_destroy(new_topic);
      if (!problem.empty()) return Error{Errc::system, "kafka: creating topic " + topic + ": " + problem};
      created = true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the new topic's leader is being elected
  }
}

std::int32_t partition_for_key(std::span<const std::byte> key, std::int32_t partition_count) noexcept {
  // librdkafka's murmur2 partitioner reads neither the topic nor the opaques.
  return rd_kafka_msg_partitioner_murmur2(nullptr, key.data(), key.size(), partition_count, nullptr, nullptr);
}

std::string header_text(rd_kafka_headers_t* headers, const char* name) {
  const void* value = nullptr;
  size_t size = 0;
  if (headers == nullptr || rd_kafka_header_get_last(headers, name, &value, &size) != RD_KAFKA_RESP_ERR_NO_ERROR ||
      value == nullptr)
    return {};
  return std::string(static_cast<const char*>(value), size);
}

Result<MessagePtr> newest_matching(rd_kafka_t* reader, const std::string& topic, std::int32_t partition,
                                   const std::function<bool(const rd_kafka_message_t&)>& match,
                                   std::chrono::steady_clock::time_point deadline) {
  auto left_ms = [&] {
    return static_cast<int>(std::max<std::int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count()));
  };
  std::int64_t low = 0, high = 0;
  const auto err = rd_kafka_query_watermark_offsets(reader, topic.c_str(), partition, &low, &high, left_ms());
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    return Error{Errc::timed_out, "kafka: offsets of " + topic + "[" + std::to_string(partition) + "]: " + error_text(err)};
  std::int64_t end = high;
  std::int64_t window = kFirstWindow;
  while (end > low) {
    const std::int64_t start = std::max(low, end - window);
    Partitions assignment(rd_kafka_topic_partition_list_new(1));
    rd_kafka_topic_partition_list_add(assignment.get(), topic.c_str(), partition)->offset = start;
    if (const auto e = rd_kafka_assign(reader, assignment.get()); e != RD_KAFKA_RESP_ERR_NO_ERROR)
      return Error{Errc::system, "kafka: reading back " + topic + ": " + error_text(e)};
    MessagePtr newest;
    for (;;) {
      if (left_ms() == 0)
        return Error{Errc::timed_out, "kafka: reading back " + topic + "[" + std::to_string(partition) +
                                          "] from offset " + std::to_string(start) + ": too slow"};
      MessagePtr m(rd_kafka_consumer_poll(reader, std::min(left_ms(), 200)));
      if (!m) continue;
      if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) break;  // the partition's end: the window is read
      if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) break;  // deleted meanwhile (retention)
        continue;  // transient (a broker reconnecting): librdkafka retries
      }
      const bool in_window = m->offset < end;
      const bool last = m->offset >= end - 1;
      if (in_window && match(*m)) newest = std::move(m);
      if (last) break;
    }
    (void)rd_kafka_assign(reader, nullptr);
    if (newest) return newest;
    end = start;
    window *= 2;
  }
  return MessagePtr();
}

}  // namespace colo::bridge::kafka
