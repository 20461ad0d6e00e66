// colo-test-kafka-consumer: a consumer process of a queue fed by a Kafka or
// RabbitMQ source link, for the kafka and rabbitmq suites' tests, which kill
// it at random.
//
//   colo-test-kafka-consumer NS QUEUE OUT_FILE WORK_US
//
// For each message: one line appended to OUT_FILE with write(2) (so that a
// SIGKILL loses no line already written), then the acknowledgement:
//   "<partition> <offset> <deliveries> <redelivery> <value>\n"
// (partition and offset from the message's Kafka metadata; -1 -1 if it has
// none; redelivery from its Kafka metadata, or RabbitMQ's redelivered flag).
// WORK_US: microseconds of "work" per message, between the line and the
// acknowledgement. Runs until SIGTERM (exit 0) or SIGKILL.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "colo/metadata.hpp"
#include "colo/node.hpp"

namespace {
std::atomic<bool> g_stop{false};
extern "C" void on_term(int) { g_stop.store(true); }
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s NS QUEUE OUT_FILE WORK_US\n", argv[0]);
    return 2;
  }
  std::signal(SIGTERM, on_term);
  colo::NodeOptions options;
  options.ns = argv[1];
  auto node = colo::Node::open(options);
  if (!node) {
    std::fprintf(stderr, "%s\n", node.error().message.c_str());
    return 1;
  }
  auto queue = node->queue(argv[2], colo::OpenMode::open);
  if (!queue) {
    std::fprintf(stderr, "%s\n", queue.error().message.c_str());
    return 1;
  }
  auto consumer = queue->consumer();
  if (!consumer) {
    std::fprintf(stderr, "%s\n", consumer.error().message.c_str());
    return 1;
  }
  const int out = ::open(argv[3], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) {
    std::perror(argv[3]);
    return 1;
  }
  const long work_us = std::strtol(argv[4], nullptr, 10);
  while (!g_stop.load()) {
    auto message = consumer->receive_for(std::chrono::milliseconds(50));
    if (!message) continue;
    const auto kafka = colo::kafka_metadata(message->metadata());
    const auto rabbitmq = colo::rabbitmq_metadata(message->metadata());
    const unsigned redelivery = kafka ? kafka->redelivery : rabbitmq && rabbitmq->redelivered ? 1 : 0;
    std::string line = std::to_string(kafka ? kafka->partition : -1) + " " + std::to_string(kafka ? kafka->offset : -1) +
                       " " + std::to_string(message->deliveries()) + " " + std::to_string(redelivery) +
                       " " + std::string(reinterpret_cast<const char*>(message->data().data()), message->data().size()) +
                       "\n";
    if (::write(out, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 1;
    if (work_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(work_us));
    message->release();  // the acknowledgement
  }
  ::close(out);
  return 0;
}
