// tests/kafka/kafka_support.cpp — see kafka_support.hpp.
#include "kafka_support.hpp"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include "colo/node.hpp"

namespace colo::test {

using nlohmann::json;

void KafkaLinks::SetUp() {
  Federation::SetUp();
  const char* broker = std::getenv("COLO_KAFKA");
  if (broker == nullptr || *broker == '\0') {
    const char* require = std::getenv("COLO_REQUIRE_SERVICES");
    if (require != nullptr && std::string(require) == "1") FAIL() << "COLO_KAFKA is not set (services.sh env kafka)";
    GTEST_SKIP() << "no Kafka broker: start one with tests/services/services.sh start kafka and "
                    "eval \"$(tests/services/services.sh env kafka)\"";
  }
  bootstrap_ = broker;
}

std::string KafkaLinks::topic_name(const std::string& stem) {
  static int counter = 0;
  return "colo.test." + std::to_string(::getpid()) + "." + std::to_string(counter++) + "." + stem;
}

namespace {
// A program on $PATH, by name (processes are started with execve).
std::string program(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  for (std::size_t start = 0; start <= dirs.size();) {
    const auto colon = dirs.find(':', start);
    const std::string dir = dirs.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (!dir.empty() && ::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return name;
}
std::string admin_script() {
  const char* p = std::getenv("COLO_KAFKA_ADMIN");
  return p != nullptr ? p : "kafka_admin.py";
}
}  // namespace

void KafkaLinks::create_topic(const std::string& topic, int partitions) {
  const auto r = run({"/usr/bin/python3", admin_script(), bootstrap_, "create", topic, std::to_string(partitions)}, 60s);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << describe(r);
}

std::vector<int> KafkaLinks::visit_group(const std::string& group, const std::string& topic, int seconds) {
  std::vector<int> assigned;
  const auto r = run({"/usr/bin/python3", admin_script(), bootstrap_, "visit", group, topic, std::to_string(seconds)},
                     std::chrono::seconds(seconds + 60));
  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  std::istringstream lines(r.out);
  std::string word;
  int n = 0;
  while (lines >> word >> n)
    if (word == "assigned") assigned.push_back(n);
  return assigned;
}

std::map<int, std::int64_t> KafkaLinks::committed(const std::string& group, const std::string& topic) {
  std::map<int, std::int64_t> out;
  const auto r = run({"/usr/bin/python3", admin_script(), bootstrap_, "committed", group, topic}, 60s);
  EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
  std::istringstream lines(r.out);
  int p = 0;
  std::int64_t offset = 0;
  while (lines >> p >> offset) out[p] = offset;
  return out;
}

// kcat -C prints one line per record: partition, offset, key, timestamp,
// headers (name=value,...) and value, tab-separated (our values have no tab or
// newline).
std::vector<KafkaRecord> KafkaLinks::read_topic(const std::string& topic, std::size_t expected, std::chrono::seconds timeout) {
  std::vector<KafkaRecord> records;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    records.clear();
    const auto r = run({program("kcat"), "-C", "-b", bootstrap_, "-t", topic, "-e", "-q", "-X", "log_level=0", "-f",
                        "%p\t%o\t%k\t%T\t%h\t%s\n"},
                       120s);
    EXPECT_TRUE(r.exited) << describe(r);
    std::istringstream lines(r.out);
    std::string line;
    while (std::getline(lines, line)) {
      std::vector<std::string> fields;
      std::size_t start = 0;
      for (int i = 0; i < 5; ++i) {
        const auto tab = line.find('\t', start);
        if (tab == std::string::npos) break;
        fields.push_back(line.substr(start, tab - start));
        start = tab + 1;
      }
      if (fields.size() != 5) continue;
      KafkaRecord rec;
      rec.partition = std::stoi(fields[0]);
      rec.offset = std::stoll(fields[1]);
      rec.key = fields[2];
      rec.timestamp_ms = std::stoll(fields[3]);
      std::istringstream headers(fields[4]);
      std::string header;
      while (std::getline(headers, header, ',')) {
        const auto eq = header.find('=');
        if (eq != std::string::npos) rec.headers[header.substr(0, eq)] = header.substr(eq + 1);
      }
      rec.value = line.substr(start);
      records.push_back(std::move(rec));
    }
    if (records.size() >= expected) break;
    std::this_thread::sleep_for(500ms);
  } while (std::chrono::steady_clock::now() < deadline);
  std::stable_sort(records.begin(), records.end(), [](const KafkaRecord& a, const KafkaRecord& b) {
    return a.partition != b.partition ? a.partition < b.partition : a.offset < b.offset;
  });
  return records;
}

std::optional<ColoId> colo_id(const KafkaRecord& record) {
  const auto it = record.headers.find("colo.id");
  if (it == record.headers.end()) return std::nullopt;
  std::vector<std::string> parts;
  std::istringstream fields(it->second);
  for (std::string part; std::getline(fields, part, ':');) parts.push_back(part);
  if (parts.size() != 4) return std::nullopt;
  try {
    return ColoId{parts[0], parts[1], std::stoull(parts[2]), std::stoull(parts[3])};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void KafkaLinks::produce(const std::string& topic, const std::vector<std::string>& lines, const std::string& header) {
  const std::string file = dir_ + "/produce-" + topic + ".txt";
  {
    std::ofstream out(file);
    for (const auto& l : lines) out << l << '\n';
  }
  std::vector<std::string> argv = {program("kcat"), "-P", "-b", bootstrap_, "-t", topic, "-K", "\t", "-l", file,
                                   "-X", "log_level=0", "-X", "linger.ms=20"};
  if (!header.empty()) {
    argv.push_back("-H");
    argv.push_back(header);
  }
  const auto r = run(argv, 120s);
  ASSERT_TRUE(r.exited && r.exit_code == 0) << describe(r);
}

std::string KafkaLinks::kafka_toml(const std::string& properties) const {
  std::string t = "[[kafka]]\nname = \"local\"\nbootstrap = \"" + bootstrap_ + "\"\n";
  if (!properties.empty()) t += "[kafka.properties]\n" + properties;
  return t;
}

}  // namespace colo::test
