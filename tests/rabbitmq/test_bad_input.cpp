// Bad input for RabbitMQ links (suite `rabbitmq`): wrong credentials, a
// missing queue with passive, a declaration RabbitMQ refuses, a server that
// does not answer, configurations colod refuses, and a message larger than
// the object takes. Clear errors, counted and logged; never a crash or a
// stall.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <fstream>

#include "colo/metadata.hpp"
#include "colo/node.hpp"
#include "rabbitmq_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::RabbitmqLinks;

class BadInput : public RabbitmqLinks {
 protected:
  // A host whose link `toml` (a [[link]] table) should fail with exactly
  // `error` as its last error; colod keeps serving meanwhile.
  void expect_failed(const std::string& toml, const std::string& name, const std::string& error) {
    auto& h = add_host("alpha");
    write_configs({}, false);
    append_config(h, toml);
    start(h);
    json l;
    ASSERT_TRUE(wait_link(h, name, [](const json& j) { return j["state"] == "failed"; }, 60s, &l)) << l.dump();
    EXPECT_EQ(l["last_error"], error) << l.dump();
    EXPECT_GE(l["errors"].get<int>(), 1) << "one per attempt (every 5 s)";
    EXPECT_EQ(l["produced"], 0);
    EXPECT_TRUE(all_connected(h));
    EXPECT_FALSE(h.colod->wait_for(100ms).has_value()) << "colod ended:\n" << h.colod->err();
  }
};

TEST_F(BadInput, wrongCredentialsLeaveTheLinkFailedWithTheServersRefusal) {
  expect_failed(rabbitmq_toml("not-the-password") +
                    "[[link]]\nobject = \"prices\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                    "rabbitmq = { server = \"local\", queue = \"" + queue_name("prices") + "\" }\n",
                "mirror:prices",
                "rabbitmq server local (" + address_ + "): login as guest to vhost / refused: the server closed the "
                "connection: 403 ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN. For details "
                "see the broker logfile.");
}

TEST_F(BadInput, missingQueueWithPassiveIsNamedAsTheServerSaysIt) {
  const std::string queue = queue_name("absent");
  expect_failed(rabbitmq_toml() + "[[link]]\nobject = \"jobs\"\nkind = \"queue\"\nmode = \"source\"\n"
                                  "rabbitmq = { server = \"local\", queue = \"" + queue + "\", passive = true }\n",
                "source:jobs",
                "rabbitmq server local (" + address_ + "): checking queue '" + queue + "': 404 NOT_FOUND - no queue '" +
                    queue + "' in vhost '/'");
}

TEST_F(BadInput, aQueueDeclaredOtherwiseIsAMismatchAtStart) {
  const std::string queue = queue_name("plain");
  amqp({"declare", queue});  // no dead-letter exchange
  expect_failed(rabbitmq_toml() + "[[link]]\nobject = \"jobs\"\nkind = \"queue\"\nmode = \"source\"\n"
                                  "rabbitmq = { server = \"local\", queue = \"" + queue +
                                  "\", dead_letter_exchange = \"dlx\" }\n",
                "source:jobs",
                "rabbitmq server local (" + address_ + "): declaring queue '" + queue +
                    "' (durable): 406 PRECONDITION_FAILED - inequivalent arg 'x-dead-letter-exchange' for queue '" +
                    queue + "' in vhost '/': received the value 'dlx' of type 'longstr' but current is none");
}

TEST_F(BadInput, unreachableServerLeavesTheLinkFailedAndTheObjectWorking) {
  const int closed = test::free_port();  // nothing listens there
  const std::string file = dir_ + "/password";
  std::ofstream(file) << "guest\n";
  expect_failed("[[rabbitmq]]\nname = \"nowhere\"\nhost = \"127.0.0.1\"\nport = " + std::to_string(closed) +
                    "\nuser = \"guest\"\npassword_file = \"" + file + "\"\n"
                    "[[link]]\nobject = \"prices\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                    "rabbitmq = { server = \"nowhere\" }\n",
                "mirror:prices",
                "rabbitmq server nowhere (127.0.0.1:" + std::to_string(closed) + "): connect: a socket error occurred");
  auto node = Node::open(test::node_options(hosts_[0].ns)).value();
  auto topic = node.topic("prices", OpenMode::open).value();
  auto sub = topic.subscribe().value();
  ASSERT_EQ(topic.publisher().value().publish(std::as_bytes(std::span("local", 5)), 1s), SendStatus::ok);
  EXPECT_TRUE(sub.receive_for(1s).has_value());
}

TEST_F(BadInput, checkConfigNamesFileLineAndKey) {
  const std::string path = dir_ + "/bad.toml", password = dir_ + "/pw";
  std::ofstream(password) << "secret\n";
  auto check = [&](const std::string& body) {
    std::ofstream(path) << "[node]\nname = \"alpha\"\nlisten = \"tcp://127.0.0.1:1\"\n" << body;
    return test::run({test::colod_path(), "--check-config", path});
  };
  const std::string server = "[[rabbitmq]]\nname = \"mq\"\nhost = \"h\"\nuser = \"u\"\npassword_file = \"" + password + "\"\n";
  auto r = check(server + "[[link]]\nobject = \"t\"\nkind = \"topic\"\nmode = \"mirror\"\nrabbitmq = { server = \"mq9\" }\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "colod: " + path + ":13: link[0].rabbitmq.server: 'mq9' is not the name of a [[rabbitmq]] table "
                                      "(known: 'mq')\n");
  r = check("[[rabbitmq]]\nname = \"mq\"\nhost = \"h\"\nuser = \"u\"\npassword_file = \"" + dir_ + "/none\"\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "colod: " + path + ":8: rabbitmq[0].password_file: cannot read '" + dir_ +
                       "/none': No such file or directory\n");
  r = check(server + "[[link]]\nobject = \"t\"\nkind = \"queue\"\nmode = \"spill\"\nacks = true\n"
                     "rabbitmq = { server = \"mq\" }\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "colod: " + path + ":12: link[0].mode: a spill goes to Kafka (a RabbitMQ link mirrors or sources)\n");
  r = check(server + "[[link]]\nobject = \"t\"\nkind = \"topic\"\nmode = \"mirror\"\n"
                     "rabbitmq = { server = \"mq\", prefetch = 10 }\n");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "colod: " + path + ":13: link[0].rabbitmq.prefetch: only a source consumes (a mirror has window)\n");
}

TEST_F(BadInput, messageLargerThanMaxMessageIsRejectedToTheDeadLetterQueueCountedAndLogged) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string queue = queue_name("big"), dlx = queue_name("dlx"), dead = queue_name("dead");
  amqp({"dead-letters", dlx, dead});  // a fanout exchange and a queue bound to it
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"small\"\nkind = \"topic\"\nmode = \"source\"\n"
                                     "max_message = 1024\nrabbitmq = { server = \"local\", queue = \"" + queue +
                                     "\", dead_letter_exchange = \"" + dlx + "\" }\n");
  start(h);
  ASSERT_TRUE(wait_link(h, "source:small", [](const json& l) { return l["state"] == "running"; }, 60s))
      << h.colod->err();
  auto node = Node::open(test::node_options(h.ns)).value();
  auto sub = node.topic("small", OpenMode::open).value().subscribe().value();
  amqp({"publish", queue, "3", "3000"});  // m0, m1, m2 of 3000 bytes: all too large
  amqp({"publish", queue, "2"});          // m0, m1: small
  std::vector<std::string> got;
  while (got.size() < 2) {
    auto m = sub.receive_for(20s);
    ASSERT_TRUE(m.has_value()) << h.colod->err();
    got.emplace_back(reinterpret_cast<const char*>(m->data().data()), m->data().size());
  }
  EXPECT_EQ(got, (std::vector<std::string>{"m0 ", "m1 "}));
  json l;
  ASSERT_TRUE(wait_link(h, "source:small", [](const json& j) { return j["acknowledged"] == 2; }, 30s, &l)) << l.dump();
  EXPECT_EQ(l["skipped"], 3);
  EXPECT_EQ(l["produced"], 2);
  // Each logged with its size, once. Its metadata: 69 bytes of fields
  // (system, exchange, message id, content type, the header's name, with
  // their framing) and the queue's name three times (queue, routing key,
  // the header's value).
  const std::string metadata = std::to_string(69 + 3 * queue.size());
  const std::string rejected = "link source:small: rabbitmq: a message of queue '" + queue + "' (3000 bytes and " +
                               metadata + " of metadata) is larger than small's max_message of 1024: "
                               "rejected to its dead-letter handling\n";
  const std::string log = h.colod->err();
  std::size_t times = 0;
  for (auto at = log.find(rejected); at != std::string::npos; at = log.find(rejected, at + 1)) ++times;
  EXPECT_EQ(times, 3u) << log;
  EXPECT_EQ(amqp({"count", queue}).out, "0\n") << "no stall: nothing left behind";
  EXPECT_TRUE(test::wait_until([&] { return amqp({"count", dead}).out == "3\n"; }, 10s, 200ms))
      << "the rejected ones are dead-lettered";
}

// A clean stop with a link of each mode busy: colod ends by itself, exit 0.
TEST_F(BadInput, sigtermStopsColodCleanlyWithBothModesBusy) {
  auto& h = add_host("alpha");
  write_configs({}, false);
  const std::string in = queue_name("in");
  append_config(h, rabbitmq_toml() + "[[link]]\nobject = \"out\"\nkind = \"queue\"\nmode = \"mirror\"\n"
                                     "rabbitmq = { server = \"local\", queue = \"" + queue_name("out") + "\" }\n"
                                     "[[link]]\nobject = \"in\"\nkind = \"topic\"\nmode = \"source\"\n"
                                     "rabbitmq = { server = \"local\", queue = \"" + in + "\" }\n");
  start(h);
  for (const char* name : {"mirror:out", "source:in"})
    ASSERT_TRUE(wait_link(h, name, [](const json& l) { return l["state"] == "running"; }, 60s)) << name;
  auto node = Node::open(test::node_options(h.ns)).value();
  auto out = node.queue("out", OpenMode::open).value().producer().value();
  for (int i = 0; i < 3000; ++i) {
    const std::string m = "message " + std::to_string(i);
    ASSERT_EQ(out.publish(std::as_bytes(std::span(m.data(), m.size())), 1s), SendStatus::ok);
  }
  amqp({"publish", in, "500"});
  h.colod->kill(SIGTERM);
  const auto status = h.colod->wait_for(30s);
  ASSERT_TRUE(status.has_value()) << "colod still running 30 s after SIGTERM:\n" << h.colod->err();
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << h.colod->err();
  for (const char* name : {"mirror:out", "source:in"})
    EXPECT_NE(h.colod->err().find(std::string("link ") + name + ": stopped"), std::string::npos) << name;
}

}  // namespace
}  // namespace colo
