// `colo bench rabbitmq --quick` end to end (suite `rabbitmq`): exact checks
// only (every cell measured, nothing lost or skipped, nothing left
// behind), never timings.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "rabbitmq_support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

class BenchRabbitmq : public test::RabbitmqLinks {};

TEST_F(BenchRabbitmq, quickRunMeasuresEveryCellAndLeavesNothingBehind) {
  const auto r = test::run({test::colo_path(), "bench", "rabbitmq", "--quick", "--sizes", "64", "--rounds", "2",
                            "--server", address_, "--colod", test::colod_path(), "--json"},
                           300s);
  ASSERT_TRUE(r.exited) << test::describe(r);
  EXPECT_EQ(r.exit_code, 0) << test::describe(r);
  const json j = json::parse(r.out);
  EXPECT_EQ(j["benchmark"], "rabbitmq");
  EXPECT_TRUE(j["correct"].get<bool>()) << j.dump(2);
  EXPECT_EQ(j["error"], "");
  ASSERT_EQ(j["sizes"].size(), 1u);
  const auto& s = j["sizes"][0];
  EXPECT_EQ(s["size"], 64);
  EXPECT_EQ(s["error"], "");
  EXPECT_EQ(j["rounds"], 2);
  // Every round measured each cell (the mirror's counter reached 10,000 and
  // then 20,000 acknowledged: every message of both rounds; each round's
  // source took all 10,000 of its round).
  ASSERT_EQ(s["rounds"].size(), 2u) << s.dump(2);
  for (const auto& round : s["rounds"])
    for (const char* figure : {"raw_publish_msg_per_s", "raw_publish_as_mirror_msg_per_s", "mirror_msg_per_s",
                               "raw_consume_msg_per_s", "source_msg_per_s"})
      EXPECT_GT(round[figure].get<double>(), 0) << figure;
  for (const char* figure : {"raw_publish_msg_per_s_median", "raw_publish_as_mirror_msg_per_s_median",
                             "mirror_msg_per_s_median", "raw_consume_msg_per_s_median", "source_msg_per_s_median"})
    EXPECT_GT(s[figure].get<double>(), 0) << figure;
  // Its namespaces are gone (rmqbench-*<pid>).
  const auto left = test::run({"/bin/sh", "-c", "ls /dev/shm | grep -c rmqbench || true"});
  EXPECT_EQ(left.out, "0\n");
}

}  // namespace
}  // namespace colo
