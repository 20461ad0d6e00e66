// `colo ls` and `colo stat`: read-only views of a namespace.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>

#include "cli.hpp"
#include "colo/internal/text.hpp"  // escaped: keys are any bytes
#include "colod_client.hpp"

namespace colo::cli {
namespace {

std::string creator_text(const ObjectInfo& info) {
  if (info.creator_pid == 0) return "-";
  return std::to_string(info.creator_pid) + (info.creator_alive ? "" : " (exited)");
}

int run_ls(const Context& ctx, bool json) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto objects = node->list();
  if (!objects) return fail(objects.error());
  if (json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& o : *objects) out.push_back(to_json(o));
    std::cout << nlohmann::json{{"namespace", ctx.ns}, {"objects", out}}.dump(2) << '\n';
    return kExitOk;
  }
  if (objects->empty()) {
    std::cout << "namespace '" << ctx.ns << "' has no objects\n";
    return kExitOk;
  }
  std::printf("%-10s %-32s %-8s %10s %-16s %s\n", "KIND", "NAME", "SCOPE", "SIZE", "CREATOR", "STATE");
  for (const auto& o : *objects)
    std::printf("%-10s %-32s %-8s %10s %-16s %s\n", o.kind ? to_string(*o.kind) : "?", o.name.c_str(),
                scope_name(o.scope), human_bytes(o.size_bytes).c_str(), creator_text(o).c_str(), state_text(o).c_str());
  return kExitOk;
}

void print_lock(const LockStats& s) {
  std::printf("fencing epoch:    %llu\n", static_cast<unsigned long long>(s.fencing_epoch));
  if (s.holder.pid == 0) {
    std::printf("holder:           none\n");
  } else {
    std::printf("holder:           pid %u tid %u, held for %s%s, %s\n", s.holder.pid, s.holder.tid,
                s.holder.held_for_exact ? "" : "at least ", human_duration_ns(s.holder.held_for_ns).c_str(),
                s.holder.alive ? "alive" : "DEAD (the next acquirer is told owner_died)");
  }
  std::printf("waiters:          %u\n", s.waiters);
  std::printf("grants:           %llu\n", static_cast<unsigned long long>(s.grants));
  std::printf("contended grants: %llu\n", static_cast<unsigned long long>(s.contended_grants));
  std::printf("recoveries:       %llu (grants that found the previous owner dead)\n",
              static_cast<unsigned long long>(s.recoveries));
  std::printf("timeouts:         %llu\n", static_cast<unsigned long long>(s.timeouts));
  std::printf("mean hold time:   %s (from %llu timed grants: 1 in 16, and every contended one)\n",
              human_duration_ns(s.hold_ns_mean).c_str(), static_cast<unsigned long long>(s.hold_samples));
  if (s.cluster) {
    const ClusterLockStats& c = *s.cluster;
    std::printf("cluster lease:    %s", to_string(c.lease_state));
    if (c.epoch != 0)
      std::printf(", epoch %llu, %llu local grants, valid for %s", static_cast<unsigned long long>(c.epoch),
                  static_cast<unsigned long long>(c.local_grants),
                  c.valid_for_ms >= 0 ? human_duration_ns(c.valid_for_ms * 1e6).c_str() : "0 (expired)");
    std::printf("\n");
    if (c.keeper_pid == 0)
      std::printf("kept by:          no colod yet (acquirers fail after 5 s without one)\n");
    else
      std::printf("kept by:          colod pid %u%s\n", c.keeper_pid, c.keeper_alive ? "" : " (DEAD: start colod again)");
    std::printf("lease losses:     %llu\n", static_cast<unsigned long long>(c.lease_losses));
  }
}

void print_lock_table(const LockTableStats& s) {
  auto u = [](std::uint64_t v) { return with_commas(v); };
  std::printf("capacity:         %s keys of up to %u bytes (%s entries of %u bytes)\n", u(s.capacity).c_str(),
              s.max_key_bytes, u(s.entries).c_str(), s.bytes_per_entry);
  std::printf("live keys:        %s (%.1f%% of capacity), %s outside their home bucket\n", u(s.live_keys).c_str(),
              100.0 * s.occupancy(), u(s.overflowed_keys).c_str());
  if (s.scope == Scope::cluster)
    std::printf("kept keys:        %s (this host holds their cluster lock, no local holder)\n", u(s.kept_keys).c_str());
  std::printf("dead holders:     %s (their next acquirer is told owner_died)\n", u(s.dead_holders).c_str());
  std::printf("waiters:          %u\n", s.waiters);
  std::printf("grants:           %s\n", u(s.grants).c_str());
  std::printf("contended grants: %s\n", u(s.contended_grants).c_str());
  std::printf("recoveries:       %s (grants that found the holder dead)\n", u(s.recoveries).c_str());
  std::printf("timeouts:         %s\n", u(s.timeouts).c_str());
  std::printf("full refusals:    %s (acquires refused: no free entry for the key)\n", u(s.full_refusals).c_str());
  std::printf("damaged entries:  %s (isolated), %s bucket locks taken from dead processes\n",
              u(s.damaged_entries).c_str(), u(s.bucket_recoveries).c_str());
  if (s.most_contended.empty()) {
    std::printf("most contended:   none (no acquire has waited)\n");
    return;
  }
  std::printf("most contended:   (waits, approximate)\n");
  for (const auto& k : s.most_contended)
    std::printf("  %-12s %s\n", u(k.waits).c_str(), internal::escaped(k.key, 80).c_str());
}

void print_channel(const ChannelStats& c) {
  auto u = [](std::uint64_t v) { return static_cast<unsigned long long>(v); };
  std::printf("capacity:         %s, max message %s%s%s%s\n", human_bytes(c.capacity).c_str(),
              human_bytes(c.max_message).c_str(),
              c.acks ? (", acks, max deliveries " + std::to_string(c.max_deliveries)).c_str() : "",
              c.history != 0 ? (", history " + std::to_string(c.history) + " messages").c_str() : "",
              c.exclusive_publisher ? ", exclusive publisher" : "");
  std::printf("published:        %llu messages\n", u(c.published));
  std::printf("retained:         %llu messages, %s of the ring\n", u(c.retained), human_bytes(c.used_bytes).c_str());
  if (c.kind == ObjectKind::queue) std::printf("depth:            %llu (not yet taken)\n", u(c.depth));
  std::printf("dead claims:      %llu (writers that died mid-message, skipped)\n", u(c.dead_claims));
  std::printf("bad records:      %llu\n", u(c.bad_records));
  std::printf("commits:          %s\n", c.fenced_commits ? "fenced (its waiters sleep often: a fence per publication spares each sleep a membarrier)"
                                                          : "release stores, no fence");
  if (c.kind == ObjectKind::queue && !c.acks) std::printf("dropped unacked:  %llu (taken by consumers that died)\n", u(c.dropped_unacked));
  if (c.damaged_slots != 0)
    std::printf("damaged slots:    %u (publisher or reader slots holding impossible values: not listed)\n",
                c.damaged_slots);
  std::printf("publishers:       %zu\n", c.publishers.size());
  for (const auto& p : c.publishers)
    std::printf("  pid %-8u %-5s published %llu (%s) in %llu publications, waits %llu, abandoned %llu\n", p.pid,
                p.alive ? "alive" : "dead", u(p.published), human_bytes(p.bytes).c_str(), u(p.batches), u(p.waits),
                u(p.abandoned));
  std::printf("%-18s%zu\n", c.kind == ObjectKind::queue ? "consumers:" : "subscribers:", c.readers.size());
  for (const auto& r : c.readers)
    std::printf("  pid %-8u %-5s %-8s delivered %llu (%s), lag %llu, missed %llu, skipped %llu, redelivered %llu, "
                "dead-lettered %llu, waits %llu%s\n",
                r.pid, r.alive ? "alive" : "dead", to_string(r.mode), u(r.delivered), human_bytes(r.bytes).c_str(), u(r.lag),
                u(r.missed), u(r.skipped_bad), u(r.redelivered), u(r.dead_lettered), u(r.waits),
                r.holding ? ", holding a message" : "");
}

// Rates over the sampling interval, from two snapshots of the counters.
struct Rates {
  double seconds = 0;
  double grants = 0;                 // lock
  double published = 0, bytes = 0;   // topic/queue: messages and bytes committed
  std::vector<double> delivered;     // per reader of the second snapshot (0 for a reader new in it)
};

Rates rates_between(const ObjectInfo& a, const ObjectInfo& b, double seconds) {
  Rates r;
  r.seconds = seconds;
  auto per_s = [&](std::uint64_t before, std::uint64_t after) {
    return after >= before ? static_cast<double>(after - before) / seconds : 0.0;
  };
  if (a.lock && b.lock) r.grants = per_s(a.lock->grants, b.lock->grants);
  if (a.lock_table && b.lock_table) r.grants = per_s(a.lock_table->grants, b.lock_table->grants);
  if (a.channel && b.channel) {
    r.published = per_s(a.channel->published, b.channel->published);
    std::uint64_t bytes_a = 0, bytes_b = 0;
    for (const auto& p : a.channel->publishers) bytes_a += p.bytes;
    for (const auto& p : b.channel->publishers) bytes_b += p.bytes;
    r.bytes = per_s(bytes_a, bytes_b);
    for (const auto& reader : b.channel->readers) {
      double rate = 0;
      for (const auto& before : a.channel->readers)
        if (before.pid == reader.pid && before.mode == reader.mode) rate = per_s(before.delivered, reader.delivered);
      r.delivered.push_back(rate);
    }
  }
  return r;
}

// A topic or queue as the namespace's colod sees it: its traffic with other
// hosts (a cluster object) and its links to Kafka. Nothing if no colod
// answers, or colod neither federates nor links it.
struct Remote {
  std::string node;  // the colod's node name
  std::optional<ColodObject> object;
  std::vector<ColodLink> links;
};
std::optional<Remote> remote_of(const Context& ctx, const std::string& socket, const std::string& name) {
  auto status = colod_status(ctx.ns, socket, 0.3);
  if (!status) return std::nullopt;
  Remote r{status->node, std::nullopt, {}};
  if (const ColodObject* object = status->object(name)) r.object = *object;
  for (const auto& l : status->links)
    if (l.object == name) r.links.push_back(l);
  if (!r.object && r.links.empty()) return std::nullopt;
  return r;
}

int run_stat(const Context& ctx, const std::string& name, bool json, double interval_s, const std::string& socket) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto info = node->info(name);
  if (!info) return fail(info.error());
  std::optional<Remote> remote = info->channel ? remote_of(ctx, socket, name) : std::nullopt;
  std::optional<Rates> rates;
  double remote_in_per_s = 0, remote_out_per_s = 0;
  if (interval_s > 0 && (info->lock || info->lock_table || info->channel)) {
    const auto start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(interval_s));
    auto later = node->info(name);
    if (!later) return fail(later.error());
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    rates = rates_between(*info, *later, seconds);
    info = std::move(later);
    if (remote) {
      auto remote_later = remote_of(ctx, socket, name);
      if (remote_later && remote->object && remote_later->object) {
        auto per_s = [&](std::uint64_t a, std::uint64_t b) { return b >= a ? static_cast<double>(b - a) / seconds : 0.0; };
        remote_in_per_s = per_s(remote->object->messages_in, remote_later->object->messages_in);
        remote_out_per_s = per_s(remote->object->messages_out, remote_later->object->messages_out);
      }
      remote = std::move(remote_later);
    }
  }
  if (json) {
    auto j = to_json(*info);
    if (rates) {
      j["rates"] = {{"interval_s", rates->seconds}};
      if (info->lock || info->lock_table) j["rates"]["grants_per_s"] = rates->grants;
      if (info->channel) {
        j["rates"]["published_per_s"] = rates->published;
        j["rates"]["published_bytes_per_s"] = rates->bytes;
        j["rates"]["delivered_per_s"] = rates->delivered;  // in the order of channel.readers
      }
    }
    if (remote && remote->object) {
      j["cluster"] = object_json(*remote->object);
      j["cluster"]["colod_node"] = remote->node;
      if (rates) {
        j["rates"]["remote_in_per_s"] = remote_in_per_s;
        j["rates"]["remote_out_per_s"] = remote_out_per_s;
      }
    }
    if (remote && !remote->links.empty()) {
      j["links"] = nlohmann::json::array();
      for (const auto& l : remote->links) j["links"].push_back(link_json(l));
    }
    std::cout << j.dump(2) << '\n';
    return kExitOk;
  }
  const ObjectInfo& o = *info;
  std::printf("name:             %s\n", o.name.c_str());
  std::printf("kind:             %s\n", o.kind ? to_string(*o.kind) : "");
  std::printf("scope:            %s\n", scope_name(o.scope));
  std::printf("state:            %s\n", state_text(o).c_str());
  std::printf("segment:          %s (%s)\n", Node::file_of(o.shm_name).c_str(), human_bytes(o.size_bytes).c_str());
  std::printf("creator:          %s, created %s\n", creator_text(o).c_str(), format_realtime(o.created_realtime_ns).c_str());
  if (o.lock) print_lock(*o.lock);
  if (o.lock_table) print_lock_table(*o.lock_table);
  if (o.channel) print_channel(*o.channel);
  if (remote && remote->object) {
    const auto& r = *remote->object;
    std::printf("cluster:          federated by colod node %s%s\n", remote->node.c_str(),
                r.home.empty() ? "" : (", home " + r.home + (r.home == remote->node ? " (this host)" : "")).c_str());
    std::printf("  from peers:     %llu messages (%s)%s\n", static_cast<unsigned long long>(r.messages_in),
                human_bytes(r.bytes_in).c_str(),
                rates ? (", " + human_rate(remote_in_per_s) + " msg/s").c_str() : "");
    std::printf("  to peers:       %llu messages (%s)%s\n", static_cast<unsigned long long>(r.messages_out),
                human_bytes(r.bytes_out).c_str(),
                rates ? (", " + human_rate(remote_out_per_s) + " msg/s").c_str() : "");
    std::printf("  lost %llu, duplicates dropped %llu%s\n", static_cast<unsigned long long>(r.lost),
                static_cast<unsigned long long>(r.duplicates),
                r.kind == "queue" ? (", in flight " + std::to_string(r.in_flight)).c_str() : "");
  }
  for (const auto& l : remote ? remote->links : std::vector<ColodLink>()) {
    std::printf("link:             %s, %s %s (%s), %s for %s\n", l.name.c_str(), l.system.c_str(), l.mode.c_str(),
                l.remote.c_str(), l.state.c_str(), human_duration_ns(static_cast<double>(l.state_ms) * 1e6).c_str());
    std::printf("  produced %s, acknowledged %s, in flight %s, lag %s (%s), lost %s, skipped %s, errors %s\n",
                with_commas(l.produced).c_str(), with_commas(l.acknowledged).c_str(), with_commas(l.in_flight).c_str(),
                with_commas(l.lag_messages).c_str(), human_bytes(l.lag_bytes).c_str(), with_commas(l.lost).c_str(),
                with_commas(l.skipped).c_str(), with_commas(l.errors).c_str());
    if (!l.last_error.empty()) std::printf("  last error:     %s\n", l.last_error.c_str());
  }
  if (rates) {
    std::printf("rates:            over the last %.2f s:", rates->seconds);
    if (o.lock || o.lock_table) std::printf(" %s grants/s\n", human_rate(rates->grants).c_str());
    if (o.channel) {
      std::printf(" published %s msg/s (%s/s)", human_rate(rates->published).c_str(),
                  human_bytes(static_cast<std::uint64_t>(rates->bytes)).c_str());
      for (std::size_t i = 0; i < o.channel->readers.size() && i < rates->delivered.size(); ++i)
        std::printf("%s pid %u %s msg/s", i == 0 ? "; delivered:" : ",", o.channel->readers[i].pid,
                    human_rate(rates->delivered[i]).c_str());
      std::printf("\n");
    }
  }
  return kExitOk;
}

}  // namespace

void register_ls(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("ls", "List the objects of the namespace: kind, name, scope, size, creator, state");
  cmd->footer(
      "States: ready; creating (its creator is initialising it); abandoned (its creator died first: `colo gc` "
      "removes it); missing (registered, segment gone); unregistered (a segment with no registry entry); "
      "unreadable (this user may not open it); corrupt (with the reason).\n"
      "Examples:\n"
      "  colo ls\n"
      "  colo --ns prod ls --json");
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "print JSON instead of a table");
  cmd->callback([&ctx, json] { ctx.exit_code = run_ls(ctx, *json); });
}

void register_stat(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("stat", "Show one object's counters and rates");
  cmd->footer(
      "A lock: its holder (pid, held for), waiters, grants, recoveries, fencing epoch. A lock table: live keys and "
      "occupancy, dead holders, waiters, the most contended keys, recoveries, refusals, damage. A topic or queue: depth, "
      "publishers, and each reader's lag and counters; with colod running, a cluster object's traffic with other "
      "hosts.\n"
      "Examples:\n"
      "  colo stat jobs\n"
      "  colo --ns prod stat prices --json --interval 1");
  auto name = std::make_shared<std::string>();
  cmd->add_option("NAME", *name, "object name")->required();
  auto json = std::make_shared<bool>(false);
  cmd->add_flag("--json", *json, "print JSON");
  auto interval = std::make_shared<double>(0.5);
  cmd->add_option("--interval", *interval, "seconds between the two samples the rates come from (0: no rates)")
      ->capture_default_str()
      ->check(number_in(0, 60, "seconds"));
  auto socket = std::make_shared<std::string>();
  cmd->add_option("--socket", *socket,
                  "colod's control socket, for a cluster object's traffic with other hosts (default: derived from "
                  "the namespace; no colod answering: not shown)");
  cmd->callback([&ctx, name, json, interval, socket] {
    ctx.exit_code = run_stat(ctx, *name, *json, *interval, *socket);
  });
}

}  // namespace colo::cli
