// The `colo` tool on topics and queues, run as a real process (COLO_BIN):
// create with options, pub (stdin lines, --file, --size/--count), sub
// (--count, --timeout, --history, --format), stat (parameters, counters,
// rates), and a smoke run of `colo bench queue|topic` checking that every
// message of a cell arrived intact (no figures are asserted).
#include <grp.h>       // getgrgid: the group --group names
#include <gtest/gtest.h>
#include <sys/stat.h>  // the mode and group of a segment
#include <unistd.h>    // getegid

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support.hpp"

namespace colo {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::describe;
using test::run_colo;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class ColoChannelCli : public test::NamespaceTest {
 protected:
  // `printf INPUT | colo --ns NS pub ARGS...` through sh: pub reads stdin.
  test::RunResult pub_stdin(const std::string& input, const std::vector<std::string>& args) {
    std::string command = "printf '%s' \"$1\" | \"$2\" --ns \"$3\" pub";
    std::vector<std::string> argv = {"/bin/sh", "-c", "", "sh", input, test::colo_path(), ns};
    for (std::size_t i = 0; i < args.size(); ++i) {
      command += " \"$" + std::to_string(i + 4) + "\"";
      argv.push_back(args[i]);
    }
    argv[2] = command;
    return test::run(argv);
  }

  json parse(const test::RunResult& r) {
    EXPECT_TRUE(r.exited && r.exit_code == 0) << describe(r);
    try {
      return json::parse(r.out);
    } catch (const json::exception& e) {
      ADD_FAILURE() << "not JSON (" << e.what() << "):\n" << r.out;
      return json::object();
    }
  }
};

TEST_F(ColoChannelCli, createTopicKeepsItsParametersAndStatShowsThem) {
  const auto made = run_colo(ns, {"create", "topic", "prices", "--capacity", "65536", "--max-message", "1000",
                                  "--history", "3"});
  ASSERT_EQ(made.exit_code, 0) << describe(made);
  const json j = parse(run_colo(ns, {"stat", "prices", "--json", "--interval", "0"}));
  EXPECT_EQ(j["kind"], "topic");
  EXPECT_EQ(j["topic"]["capacity"], 65536);
  EXPECT_EQ(j["topic"]["max_message"], 1000);
  EXPECT_EQ(j["topic"]["history"], 3);
  EXPECT_EQ(j["topic"]["published"], 0);
  EXPECT_FALSE(j.contains("rates"));
  const auto text = run_colo(ns, {"stat", "prices", "--interval", "0"});
  EXPECT_TRUE(contains(text.out, "capacity:         64.0 KiB, max message 1000 B, history 3 messages")) << text.out;
}

TEST_F(ColoChannelCli, createRefusesOptionsOfTheOtherKind) {
  const auto history = run_colo(ns, {"create", "queue", "jobs", "--history", "3"});
  EXPECT_EQ(history.exit_code, 1) << describe(history);
  EXPECT_TRUE(contains(history.err, "--history is for topics, not queues")) << history.err;
  const auto acks = run_colo(ns, {"create", "topic", "prices", "--acks"});
  EXPECT_EQ(acks.exit_code, 1) << describe(acks);
  EXPECT_TRUE(contains(acks.err, "--acks is for queues, not topics")) << acks.err;
  const auto capacity = run_colo(ns, {"create", "topic", "prices", "--capacity", "5000"});
  EXPECT_EQ(capacity.exit_code, 1) << describe(capacity);
  EXPECT_TRUE(contains(capacity.err, "must be a power of two")) << capacity.err;
  EXPECT_TRUE(test::namespace_files(ns).size() <= 1u);  // at most the registry: no object was made
}

TEST_F(ColoChannelCli, pubLinesThenSubPrintsThemInOrderFromAQueue) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs"}).exit_code, 0);
  const auto pub = pub_stdin("one\ntwo\nthree\n", {"jobs"});
  ASSERT_EQ(pub.exit_code, 0) << describe(pub);
  const auto sub = run_colo(ns, {"sub", "jobs", "--count", "3", "--timeout", "5"});
  ASSERT_EQ(sub.exit_code, 0) << describe(sub);
  EXPECT_EQ(sub.out, "one\ntwo\nthree\n");
  const json j = parse(run_colo(ns, {"stat", "jobs", "--json", "--interval", "0"}));
  EXPECT_EQ(j["queue"]["published"], 3);
  EXPECT_EQ(j["queue"]["depth"], 0);
}

TEST_F(ColoChannelCli, subFormatsHexAndJson) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs"}).exit_code, 0);
  ASSERT_EQ(pub_stdin("AB\nhi\n", {"jobs"}).exit_code, 0);
  const auto hex = run_colo(ns, {"sub", "jobs", "--count", "1", "--format", "hex", "--timeout", "5"});
  EXPECT_EQ(hex.out, "4142\n") << describe(hex);
  const auto js = run_colo(ns, {"sub", "jobs", "--count", "1", "--format", "json", "--timeout", "5"});
  const json j = parse(js);
  EXPECT_EQ(j["text"], "hi");
  EXPECT_EQ(j["hex"], "6869");
  EXPECT_EQ(j["size"], 2);
  EXPECT_EQ(j["seq"], 1);
}

TEST_F(ColoChannelCli, pubFileIsOneMessageAndGeneratedPayloadsHaveTheirSize) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs"}).exit_code, 0);
  const std::string path = "/tmp/colo-cli-channel-" + ns + ".txt";
  {
    std::ofstream f(path, std::ios::binary);
    f << "line 1\nline 2";
  }
  const auto file = run_colo(ns, {"pub", "jobs", "--file", path});
  std::remove(path.c_str());
  ASSERT_EQ(file.exit_code, 0) << describe(file);
  const auto generated = run_colo(ns, {"pub", "jobs", "--size", "100", "--count", "4"});
  ASSERT_EQ(generated.exit_code, 0) << describe(generated);
  const auto sub = run_colo(ns, {"sub", "jobs", "--count", "5", "--format", "json", "--timeout", "5"});
  ASSERT_EQ(sub.exit_code, 0) << describe(sub);
  std::vector<json> lines;
  std::size_t start = 0;
  while (start < sub.out.size()) {
    const std::size_t end = sub.out.find('\n', start);
    lines.push_back(json::parse(sub.out.substr(start, end - start)));
    start = end + 1;
  }
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_EQ(lines[0]["text"], "line 1\nline 2");
  for (std::size_t i = 1; i < 5; ++i) EXPECT_EQ(lines[i]["size"], 100) << i;
}

TEST_F(ColoChannelCli, pubRefusesAMessageOverTheMaximumAndPublishesNothingOfIt) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs", "--max-message", "8", "--capacity", "4096"}).exit_code, 0);
  const auto pub = pub_stdin("short\nthis line is too long\n", {"jobs"});
  EXPECT_NE(pub.exit_code, 0) << describe(pub);
  EXPECT_EQ(pub.err, "colo: publishing to 'jobs' stopped after 1 messages: stdin: line 2 is longer than the "
                     "object's maximum message of 8 bytes\n");
  const json j = parse(run_colo(ns, {"stat", "jobs", "--json", "--interval", "0"}));
  EXPECT_EQ(j["queue"]["published"], 1);  // "short" only
}

// `colo pub` never holds more of its input than one message of the object's
// maximum, plus a byte: a directory is refused by name, /dev/zero ends with
// an error instead of growing without bound, and a line of 100 MB stops the
// reading after the maximum (its writer gets SIGPIPE: status 141).
TEST_F(ColoChannelCli, pubRefusesADirectoryAndReadsAtMostOneMaximumOfAnyInput) {
  ASSERT_EQ(run_colo(ns, {"create", "topic", "prices", "--max-message", "1024"}).exit_code, 0);
  const auto dir = run_colo(ns, {"pub", "prices", "--file", "/tmp"});
  const auto zero = run_colo(ns, {"pub", "prices", "--file", "/dev/zero"}, 20s);
  const auto line = test::run({"/bin/bash", "-c",
                               "head -c 100000000 /dev/zero | \"$0\" --ns \"$1\" pub prices; "
                               "echo \"${PIPESTATUS[0]} ${PIPESTATUS[1]}\"",
                               test::colo_path(), ns},
                              20s);

  EXPECT_EQ(dir.exit_code, 1) << describe(dir);
  EXPECT_EQ(dir.err, "colo: cannot publish '/tmp': it is a directory\n");
  EXPECT_EQ(zero.exit_code, 1) << describe(zero);
  EXPECT_EQ(zero.err, "colo: cannot publish '/dev/zero' to 'prices': more than the object's maximum message of "
                      "1024 bytes\n");
  ASSERT_TRUE(line.exited) << describe(line);
  EXPECT_EQ(line.out, "141 1\n") << describe(line);
  EXPECT_EQ(line.err, "colo: publishing to 'prices' stopped after 0 messages: stdin: line 1 is longer than the "
                      "object's maximum message of 1024 bytes\n");
  const json j = parse(run_colo(ns, {"stat", "prices", "--json", "--interval", "0"}));
  EXPECT_EQ(j["topic"]["published"], 0);
}

TEST_F(ColoChannelCli, pubSizeOverTheMaximumIsRefusedBeforeAnythingIsMade) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs", "--max-message", "1024"}).exit_code, 0);
  const auto r = run_colo(ns, {"pub", "jobs", "--size", "10000000000"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_EQ(r.err, "colo: --size 10000000000 is larger than the maximum message of 'jobs' (1024 bytes)\n");
}

// Seconds are finite numbers in a range, and the error quotes what was
// typed; durations print as people write them.
TEST_F(ColoChannelCli, timeoutsRefuseNanAndHugeValuesAndDurationsPrintPlainly) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs", "--capacity", "4096", "--max-message", "1000"}).exit_code, 0);
  const auto nan_sub = run_colo(ns, {"sub", "jobs", "--timeout", "nan"});
  const auto nan_pub = run_colo(ns, {"pub", "jobs", "--timeout", "NaN", "--size", "1"});
  const auto nan_lock = run_colo(ns, {"lock", "l", "--timeout", "nan", "--", "true"});
  const auto huge = run_colo(ns, {"lock", "l", "--timeout", "1e10", "--", "true"});
  const auto far = run_colo(ns, {"stat", "jobs", "--interval", "1e300"});
  const auto full = run_colo(ns, {"pub", "jobs", "--size", "1000", "--count", "10", "--timeout", "0.25"});

  EXPECT_EQ(nan_sub.exit_code, 2) << describe(nan_sub);
  EXPECT_EQ(nan_sub.err, "colo: --timeout: 'nan' is not a number (expected 0 to 1000000000 seconds)\n"
                         "(run `colo --help` for usage)\n");
  EXPECT_EQ(nan_pub.exit_code, 2) << describe(nan_pub);
  EXPECT_TRUE(contains(nan_pub.err, "--timeout: 'NaN' is not a number (expected 0 to 1000000000 seconds)")) << nan_pub.err;
  EXPECT_EQ(nan_lock.exit_code, 2) << describe(nan_lock);
  EXPECT_EQ(huge.exit_code, 2) << describe(huge);
  EXPECT_TRUE(contains(huge.err, "--timeout: '1e10' is out of range (expected 0 to 1000000000 seconds)")) << huge.err;
  EXPECT_EQ(far.exit_code, 2) << describe(far);
  EXPECT_TRUE(contains(far.err, "--interval: '1e300' is out of range (expected 0 to 60 seconds)")) << far.err;
  EXPECT_EQ(full.exit_code, 1) << describe(full);
  EXPECT_TRUE(contains(full.err, "no room within 0.25 s (a blocking subscriber")) << full.err;
}

TEST_F(ColoChannelCli, createRefusesAMaximumMessageOfZero) {
  const auto r = run_colo(ns, {"create", "topic", "prices", "--max-message", "0"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_EQ(r.err, "colo: topic 'prices': maximum message must be at least 1 byte\n");
}

// A segment whose header is damaged has no kind; pub says what is wrong with
// it rather than "is a , not a topic or queue".
TEST_F(ColoChannelCli, pubOnADamagedObjectSaysWhatIsWrongWithIt) {
  ASSERT_EQ(run_colo(ns, {"create", "topic", "t1"}).exit_code, 0);
  test::edit_header("colo." + ns + ".obj.t1", [](shm::SegmentHeader& h) { h.magic = 0xdead; });
  const auto r = pub_stdin("x\n", {"t1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_EQ(r.err, "colo: 't1' is not a usable topic or queue: corrupt: bad magic 0x000000000000dead\n");
}

// The remedy permission errors suggest: `colo create --group GROUP` (a name
// or a number) makes the object's segment mode 0660 with that group.
TEST_F(ColoChannelCli, createGroupSharesTheObjectWithThatGroupAndRefusesAnUnknownGroup) {
  const gid_t gid = ::getegid();
  const group* gr = ::getgrgid(gid);
  ASSERT_NE(gr, nullptr);
  const auto by_name = run_colo(ns, {"create", "topic", "t", "--group", gr->gr_name});
  const auto by_number = run_colo(ns, {"create", "lock", "l", "--group", std::to_string(gid)});
  const auto unknown = run_colo(ns, {"create", "lock", "u", "--group", "no-such-group-zz"});

  EXPECT_EQ(by_name.exit_code, 0) << describe(by_name);
  EXPECT_EQ(by_number.exit_code, 0) << describe(by_number);
  for (const char* object : {"t", "l"}) {
    const struct stat st = test::stat_of(test::dev_shm("colo." + ns + ".obj." + object));
    EXPECT_EQ(st.st_mode & 07777, 0660u) << object;
    EXPECT_EQ(st.st_gid, gid) << object;
  }
  EXPECT_EQ(unknown.exit_code, 1) << describe(unknown);
  EXPECT_EQ(unknown.err, "colo: --group 'no-such-group-zz': no such group\n");
}

TEST_F(ColoChannelCli, subTimesOutWithStatus75WhenFewerMessagesCame) {
  ASSERT_EQ(run_colo(ns, {"create", "topic", "prices"}).exit_code, 0);
  const auto sub = run_colo(ns, {"sub", "prices", "--count", "1", "--timeout", "0.3"});
  EXPECT_EQ(sub.exit_code, 75) << describe(sub);
  EXPECT_TRUE(contains(sub.err, "received 0 of 1 message(s) before the timeout")) << sub.err;
}

TEST_F(ColoChannelCli, topicHistoryStartsNewSubscribersBackUnlessTheyAskOtherwise) {
  ASSERT_EQ(run_colo(ns, {"create", "topic", "prices", "--history", "2"}).exit_code, 0);
  ASSERT_EQ(pub_stdin("a\nb\nc\nd\n", {"prices"}).exit_code, 0);
  const auto by_default = run_colo(ns, {"sub", "prices", "--count", "2", "--timeout", "5"});
  EXPECT_EQ(by_default.out, "c\nd\n") << describe(by_default);
  const auto asked = run_colo(ns, {"sub", "prices", "--history", "3", "--count", "3", "--timeout", "5"});
  EXPECT_EQ(asked.out, "b\nc\nd\n") << describe(asked);
  const auto none = run_colo(ns, {"sub", "prices", "--history", "0", "--timeout", "0.2"});
  EXPECT_EQ(none.out, "") << describe(none);
}

TEST_F(ColoChannelCli, subOnAQueueRefusesTopicOptions) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs"}).exit_code, 0);
  const auto sub = run_colo(ns, {"sub", "jobs", "--lossy", "--timeout", "0"});
  EXPECT_EQ(sub.exit_code, 1) << describe(sub);
  EXPECT_TRUE(contains(sub.err, "--lossy and --history are for topics; 'jobs' is a queue")) << sub.err;
}

TEST_F(ColoChannelCli, statRatesAreZeroWhenNothingHappens) {
  ASSERT_EQ(run_colo(ns, {"create", "queue", "jobs"}).exit_code, 0);
  ASSERT_EQ(pub_stdin("x\n", {"jobs"}).exit_code, 0);
  const json j = parse(run_colo(ns, {"stat", "jobs", "--json", "--interval", "0.2"}));
  ASSERT_TRUE(j.contains("rates")) << j.dump();
  EXPECT_GE(j["rates"]["interval_s"].get<double>(), 0.2);
  EXPECT_EQ(j["rates"]["published_per_s"].get<double>(), 0.0);  // published before the interval
  EXPECT_EQ(j["rates"]["delivered_per_s"], json::array());
  const auto text = run_colo(ns, {"stat", "jobs", "--interval", "0.1"});
  EXPECT_TRUE(contains(text.out, "published 0 msg/s")) << text.out;
}

TEST_F(ColoChannelCli, statOfAMissingObjectNamesIt) {
  const auto r = run_colo(ns, {"stat", "nothing-here"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_TRUE(contains(r.err, "nothing-here")) << r.err;
}

// The benchmark harness end to end, tiny: every message sent arrives, intact,
// through the per-message and the batch API and the floor, with a busy
// process alongside.
TEST_F(ColoChannelCli, benchQueueAndTopicDeliverEveryMessageIntact) {
  for (const std::string kind : {"queue", "topic"}) {
    const std::string single = "colo-" + kind, batch = single + "-batch";
    const auto r = run_colo(ns, {"bench", kind, "--transports", single + "," + batch + ",floor-spsc,unix-stream",
                                 "--sizes", "64,1K", "--patterns", "1-1,1-n,n-n", "--fan", "2", "--messages", "2000",
                                 "--batch", "16", "--load", "1", "--latency-seconds", "0.05", "--min-samples", "200",
                                 "--json"},
                            180s);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    const json j = json::parse(r.out);
    EXPECT_EQ(j["subject"], single);
    EXPECT_EQ(j["options"]["batch"], 16);
    EXPECT_EQ(j["options"]["load_processes"], 1);
    EXPECT_GT(j["pingpong"]["one_way_p50_ns"].get<std::uint64_t>(), 0u);
    int colo_cells = 0, floor_cells = 0;
    for (const char* measure : {"throughput", "latency"})
      for (const auto& cell : j[measure]) {
        if (cell["status"] == "skipped") {  // the floor is 1->1 only, a Unix socket has no n->n
          EXPECT_TRUE(cell["transport"] == "floor-spsc" || cell["transport"] == "unix-stream") << cell.dump();
          continue;
        }
        EXPECT_EQ(cell["status"], "ok") << cell.dump();
        EXPECT_EQ(cell["lost"], 0) << cell.dump();
        EXPECT_EQ(cell["corrupt"], 0) << cell.dump();
        EXPECT_EQ(cell["out_of_order"], 0) << cell.dump();
        EXPECT_EQ(cell["delivered"], cell["expected_deliveries"]) << cell.dump();
        colo_cells += cell["transport"] == single || cell["transport"] == batch;
        floor_cells += cell["transport"] == "floor-spsc";
      }
    // throughput: 3 patterns x 2 sizes x 2 APIs; latency: 2 readers x 2 sizes x 2 APIs
    EXPECT_EQ(colo_cells, 3 * 2 * 2 + 2 * 2 * 2) << kind;
    EXPECT_EQ(floor_cells, 2 + 2 * 2) << kind;  // 1->1 only
    EXPECT_EQ(j["goals"].size(), 6u);
  }
}

}  // namespace
}  // namespace colo
