// tests/chaos/checks.hpp — the chaos run's checkers that work on the
// records once every worker has ended (the online ones are in the
// subscribers and lock holders, workers.cpp). Each counts what it finds in
// SharedRecords::violations and says it on stderr.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "records.hpp"

namespace colo::chaos {

// Writers of one kind, by incarnation id.
struct WriterSet {
  std::vector<std::uint32_t> ids;
};

// The local topic's witness got, from every writer, exactly its committed
// messages (one more for a writer killed between publishing and recording).
void check_topic_witness(SharedRecords& r, const WriterSet& writers);

// The federated topic's witness: what it missed (gaps it counted, and
// committed messages it never got) is at most what colod logged as lost;
// it got nothing beyond what was published. Returns the messages missed.
std::uint64_t check_federated_witness(SharedRecords& r, const WriterSet& writers, std::uint64_t counted_lost);

// The queue's consumption log: every committed message consumed; a message
// consumed twice only if the consumer of the earlier delivery was killed
// (and the later one says so in its delivery count); nothing consumed that
// no writer published. Returns the deliveries read, or -1 if the log is unreadable.
long check_queue_log(SharedRecords& r, const WriterSet& writers, const std::string& log_path);

// The fenced store's log: the tokens it accepted never go down, and no token
// was written by two holders. Returns the writes read, or -1.
// `host_changes`, if given: how many accepted writes came from another host
// than the write before (StoreWrite::holder's low half is the host for
// cluster lock holders): the hand-offs of a cluster lock between hosts.
long check_store_log(SharedRecords& r, const std::string& store_path, const std::string& lock,
                     std::uint64_t* host_changes = nullptr);

// Messages colod logged as lost from `peer` ("N message(s) from PEER no
// longer retained there"), summed over its log.
std::uint64_t lost_in_colod_log(const std::string& log_path, const std::string& peer);

}  // namespace colo::chaos
