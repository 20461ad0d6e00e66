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

// A lock's (or a key's) holder, or None.
py::object holder_dict(const LockHolder& holder) {
  if (holder.pid == 0) return py::none();
  py::dict h;
  h["pid"] = holder.pid;
  h["tid"] = holder.tid;
  h["held_for_ns"] = static_cast<std::uint64_t>(holder.held_for_ns);
  h["held_for_exact"] = holder.held_for_exact;
  h["alive"] = holder.alive;
  return h;
}

py::dict lock_dict(const LockStats& s) {
  py::object holder = holder_dict(s.holder);
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

py::dict lock_table_dict(const LockTableStats& s) {
  py::list hot;
  for (const auto& k : s.most_contended) {
    py::dict d;
    // Text, as in the tool's JSON; bytes that are not UTF-8 as \xNN escapes.
    d["key"] = py::reinterpret_steal<py::str>(
        PyUnicode_DecodeUTF8(k.key.data(), static_cast<Py_ssize_t>(k.key.size()), "backslashreplace"));
    d["waits"] = k.waits;
    hot.append(std::move(d));
  }
  py::dict d;
  d["capacity"] = s.capacity;
  d["entries"] = s.entries;
  d["max_key_bytes"] = s.max_key_bytes;
  d["bytes_per_entry"] = s.bytes_per_entry;
  d["live_keys"] = s.live_keys;
  d["kept_keys"] = s.kept_keys;
  d["occupancy"] = s.occupancy();
  d["dead_holders"] = s.dead_holders;
  d["overflowed_keys"] = s.overflowed_keys;
  d["waiters"] = s.waiters;
  d["grants"] = s.grants;
  d["contended_grants"] = s.contended_grants;
  d["recoveries"] = s.recoveries;
  d["timeouts"] = s.timeouts;
  d["full_refusals"] = s.full_refusals;
  d["damaged_entries"] = s.damaged_entries;
  d["bucket_recoveries"] = s.bucket_recoveries;
  d["most_contended"] = std::move(hot);
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
  d["fenced_commits"] = c.fenced_commits;
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
  if (info.lock_table) d["lock_table"] = lock_table_dict(*info.lock_table);
  if (info.channel) d[to_string(info.channel->kind)] = channel_dict(*info.channel);
  return d;
}

py::dict key_stats_dict(const KeyStats& s) {
  py::dict d;
  d["held"] = s.held;
  d["fencing_token"] = s.fencing_token;
  d["holder"] = holder_dict(s.holder);
  d["waiters"] = s.waiters;
  return d;
}

}  // namespace colo::python
