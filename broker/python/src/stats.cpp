#include "stats.hpp"

#include <ctime>
#include <string>

namespace colo::python {
namespace {

// As the colo tool shows a creation time (tools/common/format.cpp):
// local time, to the second; "-" if unknown.
std::string local_time_text(std::uint64_t realtime_ns) {
  if (realtime_ns == 0) return "-";
  const auto secs = static_cast<std::time_t>(realtime_ns / 1'000'000'000u);
  std::tm tm{};
  ::localtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return buf;
}

py::dict lock_dict(const LockStats& s) {
  py::object holder = py::none();
  if (s.holder.pid != 0) {
    py::dict h;
    h["pid"] = s.holder.pid;
    h["tid"] = s.holder.tid;
    h["held_for_ns"] = static_cast<std::uint64_t>(s.holder.held_for_ns);
    h["held_for_exact"] = s.holder.held_for_exact;
    h["alive"] = s.holder.alive;
    holder = std::move(h);
  }
  py::dict d;
  d["fencing_epoch"] = s.fencing_epoch;
  d["grants"] = s.grants;
  d["contended_grants"] = s.contended_grants;
  d["recoveries"] = s.recoveries;
  d["timeouts"] = s.timeouts;
  d["hold_ns_mean"] = static_cast<std::uint64_t>(s.hold_ns_mean);
  d["hold_samples"] = s.hold_samples;
  d["waiters"] = s.waiters;
  d["holder"] = holder;
  if (s.cluster) {
    const ClusterLockStats& c = *s.cluster;
    py::dict cluster;
    cluster["lease_state"] = to_string(c.lease_state);
    cluster["epoch"] = c.epoch;
    cluster["local_grants"] = c.local_grants;
    cluster["valid_for_ms"] = c.valid_for_ms;
    cluster["keeper_pid"] = c.keeper_pid;
    cluster["keeper_alive"] = c.keeper_alive;
    cluster["lease_losses"] = c.lease_losses;
    d["cluster"] = std::move(cluster);
  }
  return d;
}

py::dict channel_dict(const ChannelStats& c) {
  py::list publishers;
  for (const auto& p : c.publishers) {
    py::dict d;
    d["pid"] = p.pid;
    d["alive"] = p.alive;
    d["published"] = p.published;
    d["bytes"] = p.bytes;
    d["waits"] = p.waits;
    d["abandoned"] = p.abandoned;
    d["batches"] = p.batches;
    publishers.append(std::move(d));
  }
  py::list readers;
  for (const auto& r : c.readers) {
    py::dict d;
    d["pid"] = r.pid;
    d["alive"] = r.alive;
    d["mode"] = to_string(r.mode);
    d["delivered"] = r.delivered;
    d["bytes"] = r.bytes;
    d["lag"] = r.lag;
    d["missed"] = r.missed;
    d["skipped_bad"] = r.skipped_bad;
    d["redelivered"] = r.redelivered;
    d["dead_lettered"] = r.dead_lettered;
    d["waits"] = r.waits;
    d["batches"] = r.batches;
    d["holding"] = r.holding;
    readers.append(std::move(d));
  }
  py::dict d;
  d["capacity"] = c.capacity;
  d["max_message"] = c.max_message;
  d["acks"] = c.acks;
  d["max_deliveries"] = c.max_deliveries;
  d["history"] = c.history;
  d["exclusive_publisher"] = c.exclusive_publisher;
  d["published"] = c.published;
  d["retained"] = c.retained;
  d["depth"] = c.depth;
  d["used_bytes"] = c.used_bytes;
  d["dead_claims"] = c.dead_claims;
  d["bad_records"] = c.bad_records;
  d["dead_readers"] = c.dead_readers;
  d["dropped_unacked"] = c.dropped_unacked;
  d["damaged_slots"] = c.damaged_slots;
  d["publishers"] = std::move(publishers);
  d["readers"] = std::move(readers);
  return d;
}

}  // namespace

py::dict object_info_dict(const ObjectInfo& info) {
  py::dict d;
  d["name"] = info.name;
  d["kind"] = info.kind ? to_string(*info.kind) : "";
  d["scope"] = scope_name(info.scope);
  // as `colo ls --json`: shm_open(3)'s name, or the path in a namespace directory
  d["segment"] = info.shm_name.starts_with('/') ? info.shm_name : "/" + info.shm_name;
  d["size_bytes"] = info.size_bytes;
  d["state"] = state_text(info);
  py::dict creator;
  creator["pid"] = info.creator_pid;
  creator["alive"] = info.creator_alive;
  d["creator"] = std::move(creator);
  d["created"] = local_time_text(info.created_realtime_ns);
  if (info.lock) d["lock"] = lock_dict(*info.lock);
  if (info.channel) d[to_string(info.channel->kind)] = channel_dict(*info.channel);
  return d;
}

}  // namespace colo::python
