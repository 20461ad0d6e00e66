// `colo bench kafka --quick` end to end (suite `kafka`): exact checks only
// (every cell measured, nothing lost or skipped, nothing left behind),
// never timings.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "kafka_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class BenchKafka : public test::KafkaLinks {};

TEST_F(BenchKafka, quickRunMeasuresEveryCellAndLeavesNothingBehind) {
  const auto r = test::run({test::colo_path(), "bench", "kafka", "--quick", "--sizes", "64", "--bootstrap", bootstrap_,
                            "--colod", test::colod_path(), "--json"},
                           300s);
  ASSERT_TRUE(r.exited) << test::describe(r);
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["benchmark"], "kafka");
  EXPECT_TRUE(j["correct"].get<bool>()) << j.dump(2);
  EXPECT_EQ(j["error"], "");
  ASSERT_EQ(j["sizes"].size(), 1u);
  const auto& s = j["sizes"][0];
  EXPECT_EQ(s["size"], 64);
  EXPECT_EQ(s["error"], "");
  for (const char* figure : {"raw_produce_msg_per_s", "raw_produce_with_colo_headers_msg_per_s", "mirror_msg_per_s",
                             "raw_consume_msg_per_s", "source_msg_per_s"})
    EXPECT_GT(s[figure].get<double>(), 0) << figure;
  EXPECT_GT(j["publish_latency"]["mirror_on"]["p50_ns"].get<double>(), 0);
  // Its namespaces are gone (kafkabench-*<pid>).
  const auto left = test::run({"/bin/sh", "-c", "ls /dev/shm | grep -c kafkabench || true"});
  EXPECT_EQ(left.out, "0\n");
  // So are its topics on the broker: the raw, raw-with-headers and mirror
  // topics of its one size, and the mirrored latency topic.
  EXPECT_EQ(j["cleanup_error"], "");
  EXPECT_EQ(j["topics_deleted"], 4) << j.dump(2);
  const std::string prefix = j["topics"].get<std::string>();
  ASSERT_EQ(prefix.substr(prefix.size() - 2), ".*");
  // (The broker's metadata follows a deletion within moments.)
  std::string listed;
  EXPECT_TRUE(test::wait_until(
      [&] {
        listed = test::run({"/bin/sh", "-c", "kcat -b \"$0\" -L -J | grep -c \"\\\"$1\" || true", bootstrap_,
                            prefix.substr(0, prefix.size() - 1)},
                           60s)
                     .out;
        return listed == "0\n";
      },
      20s, 500ms))
      << "topics of the run still listed by kcat: " << listed;
}

}  // namespace
}  // namespace colo
