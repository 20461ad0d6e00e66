// tests/rabbitmq/rabbitmq_support.hpp — what the `rabbitmq` suite's tests
// share: the server (COLO_RABBITMQ, started by tests/services/services.sh),
// queues made for one test, and pika on the other side
// (interop/amqp_tool.py), on top of LinkHosts (colod hosts with links).
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "link_support.hpp"

namespace colo::test {

// A message a mirror put in RabbitMQ, as pika read it: its message id
// "ORIGIN:OBJECT:EPOCH:SEQ" and that split (parsed here on its own, as a
// consumer would; "" where the id is not of that form), its colo.redelivery
// header ("-" if none), the names of all its headers ("name,name" sorted,
// "-" if none), its timestamp property ("-" if none).
struct Drained {
  std::string message_id, origin, object, epoch, seq, redelivery, header_names, timestamp, body;
};

class RabbitmqLinks : public LinkHosts {
 protected:
  // Skips when no server is given (COLO_RABBITMQ), unless COLO_REQUIRE_SERVICES=1.
  void SetUp() override;

  std::string address_;  // HOST:PORT

  // A queue name no other test or run uses ("colo.test.<pid>.<n>.<stem>").
  std::string queue_name(const std::string& stem);
  // [[rabbitmq]] named `name` for the server, user guest with `password`
  // (in a file of the test's directory).
  std::string rabbitmq_toml(const std::string& password = "guest", const std::string& name = "local");
  // interop/amqp_tool.py ADDRESS args...; the test fails if it fails.
  RunResult amqp(const std::vector<std::string>& args, std::chrono::seconds timeout = std::chrono::seconds(180));
  // Everything in `queue`, consumed with pika until `expected` or `idle` without one.
  std::vector<Drained> drain(const std::string& queue, std::size_t expected, std::chrono::seconds idle);
};

}  // namespace colo::test
