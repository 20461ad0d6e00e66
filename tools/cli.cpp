#include "cli.hpp"

namespace colo::cli {

Result<Node> open_node(const Context& ctx) {
  NodeOptions options;
  options.ns = ctx.ns;
  return Node::open(options);
}

nlohmann::json to_json(const ObjectInfo& info) {
  nlohmann::json j = {
      {"name", info.name},
      {"kind", info.kind ? to_string(*info.kind) : ""},
      {"scope", scope_name(info.scope)},
      // as shm_open(3) names it ("/colo.ns.obj.x"), or its path in a namespace directory
      {"segment", info.shm_name.starts_with('/') ? info.shm_name : "/" + info.shm_name},
      {"size_bytes", info.size_bytes},
      {"state", state_text(info)},
      {"creator", {{"pid", info.creator_pid}, {"alive", info.creator_alive}}},
      {"created", format_realtime(info.created_realtime_ns)},
  };
  if (info.lock) {
    const LockStats& s = *info.lock;
    nlohmann::json holder = nullptr;
    if (s.holder.pid != 0)
      holder = {{"pid", s.holder.pid},
                {"tid", s.holder.tid},
                {"held_for_ns", static_cast<std::uint64_t>(s.holder.held_for_ns)},
                {"held_for_exact", s.holder.held_for_exact},
                {"alive", s.holder.alive}};
    j["lock"] = {
        {"fencing_epoch", s.fencing_epoch},
        {"grants", s.grants},
        {"contended_grants", s.contended_grants},
        {"recoveries", s.recoveries},
        {"timeouts", s.timeouts},
        {"hold_ns_mean", static_cast<std::uint64_t>(s.hold_ns_mean)},
        {"hold_samples", s.hold_samples},
        {"waiters", s.waiters},
        {"holder", holder},
    };
    if (s.cluster) {
      const ClusterLockStats& c = *s.cluster;
      j["lock"]["cluster"] = {{"lease_state", to_string(c.lease_state)},   {"epoch", c.epoch},
                              {"local_grants", c.local_grants}, {"valid_for_ms", c.valid_for_ms},
                              {"keeper_pid", c.keeper_pid},     {"keeper_alive", c.keeper_alive},
                              {"lease_losses", c.lease_losses}};
    }
  }
  if (info.lock_table) {
    const LockTableStats& s = *info.lock_table;
    nlohmann::json hot = nlohmann::json::array();
    for (const auto& k : s.most_contended) hot.push_back({{"key", k.key}, {"waits", k.waits}});
    j["lock_table"] = {
        {"capacity", s.capacity},         {"entries", s.entries},
        {"max_key_bytes", s.max_key_bytes}, {"bytes_per_entry", s.bytes_per_entry},
        {"live_keys", s.live_keys},       {"kept_keys", s.kept_keys}, {"occupancy", s.occupancy()},
        {"dead_holders", s.dead_holders}, {"overflowed_keys", s.overflowed_keys},
        {"waiters", s.waiters},           {"grants", s.grants},
        {"contended_grants", s.contended_grants}, {"recoveries", s.recoveries},
        {"timeouts", s.timeouts},         {"full_refusals", s.full_refusals},
        {"damaged_entries", s.damaged_entries}, {"bucket_recoveries", s.bucket_recoveries},
        {"most_contended", hot},
    };
  }
  if (info.channel) {
    const ChannelStats& c = *info.channel;
    nlohmann::json publishers = nlohmann::json::array();
    for (const auto& p : c.publishers)
      publishers.push_back({{"pid", p.pid}, {"alive", p.alive}, {"published", p.published}, {"bytes", p.bytes},
                            {"waits", p.waits}, {"abandoned", p.abandoned},
                            {"batches", p.batches}});
    nlohmann::json readers = nlohmann::json::array();
    for (const auto& r : c.readers)
      readers.push_back({{"pid", r.pid}, {"alive", r.alive}, {"mode", to_string(r.mode)}, {"delivered", r.delivered},
                         {"bytes", r.bytes}, {"lag", r.lag}, {"missed", r.missed}, {"skipped_bad", r.skipped_bad},
                         {"redelivered", r.redelivered}, {"dead_lettered", r.dead_lettered}, {"waits", r.waits},
                         {"batches", r.batches}, {"holding", r.holding}});
    j[to_string(c.kind)] = {
        {"capacity", c.capacity},     {"max_message", c.max_message},   {"acks", c.acks},
        {"max_deliveries", c.max_deliveries}, {"history", c.history},
        {"exclusive_publisher", c.exclusive_publisher},
        {"published", c.published},   {"retained", c.retained},         {"depth", c.depth},
        {"used_bytes", c.used_bytes}, {"dead_claims", c.dead_claims},   {"bad_records", c.bad_records},
        {"dead_readers", c.dead_readers}, {"dropped_unacked", c.dropped_unacked}, {"damaged_slots", c.damaged_slots},
        {"fenced_commits", c.fenced_commits},
        {"publishers", publishers},   {"readers", readers},
    };
  }
  return j;
}

}  // namespace colo::cli
