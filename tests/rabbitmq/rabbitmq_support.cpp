// tests/rabbitmq/rabbitmq_support.cpp — see rabbitmq_support.hpp.
#include "rabbitmq_support.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

namespace colo::test {

void RabbitmqLinks::SetUp() {
  LinkHosts::SetUp();
  const char* server = std::getenv("COLO_RABBITMQ");
  if (server == nullptr || *server == '\0') {
    const char* require = std::getenv("COLO_REQUIRE_SERVICES");
    if (require != nullptr && std::string(require) == "1") FAIL() << "COLO_RABBITMQ is not set (services.sh env rabbitmq)";
    GTEST_SKIP() << "no RabbitMQ server: start one with tests/services/services.sh start rabbitmq and "
                    "eval \"$(tests/services/services.sh env rabbitmq)\"";
  }
  address_ = server;
}

std::string RabbitmqLinks::queue_name(const std::string& stem) {
  static int counter = 0;
  return "colo.test." + std::to_string(::getpid()) + "." + std::to_string(counter++) + "." + stem;
}

std::string RabbitmqLinks::rabbitmq_toml(const std::string& password, const std::string& name) {
  const std::string file = dir_ + "/" + name + ".password";
  std::ofstream(file) << password << "\n";
  const auto colon = address_.rfind(':');
  return "[[rabbitmq]]\nname = \"" + name + "\"\nhost = \"" + address_.substr(0, colon) + "\"\nport = " +
         address_.substr(colon + 1) + "\nuser = \"guest\"\npassword_file = \"" + file + "\"\n";
}

RunResult RabbitmqLinks::amqp(const std::vector<std::string>& args, std::chrono::seconds timeout) {
  const char* tool = std::getenv("COLO_AMQP_TOOL");
  std::vector<std::string> argv{"/usr/bin/python3", tool != nullptr ? tool : "amqp_tool.py", address_};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv, timeout);
  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  return r;
}

std::vector<Drained> RabbitmqLinks::drain(const std::string& queue, std::size_t expected, std::chrono::seconds idle) {
  const std::string file = dir_ + "/drained-" + queue + ".txt";
  amqp({"drain", queue, file, std::to_string(expected), std::to_string(idle.count())}, std::chrono::seconds(600));
  std::vector<Drained> out;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    Drained d;
    std::istringstream fields(line);
    std::getline(fields, d.message_id, '\t');
    std::getline(fields, d.redelivery, '\t');
    std::getline(fields, d.header_names, '\t');
    std::getline(fields, d.timestamp, '\t');
    std::getline(fields, d.body);
    std::vector<std::string> parts;
    std::istringstream id(d.message_id);
    for (std::string part; std::getline(id, part, ':');) parts.push_back(part);
    if (parts.size() == 4) {
      d.origin = parts[0];
      d.object = parts[1];
      d.epoch = parts[2];
      d.seq = parts[3];
    }
    out.push_back(std::move(d));
  }
  return out;
}

}  // namespace colo::test
