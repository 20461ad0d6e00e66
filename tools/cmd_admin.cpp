// `colo create`, `colo rm`, `colo gc`: creating and removing objects.
#include <grp.h>  // getgrnam: --group NAME

#include <charconv>
#include <iostream>

#include "cli.hpp"

namespace colo::cli {
namespace {

struct CreateOptions {
  std::string kind, name;
  std::uint64_t capacity = 1 << 20;
  std::uint32_t max_message = 64 * 1024;
  bool acks = false;
  std::uint32_t max_deliveries = 5;
  std::uint32_t history = 0;
  bool exclusive = false;
  std::uint32_t max_key = 64;  // lock-table
  bool cluster = false;        // lock, lock-table
  bool capacity_given = false;
  std::string group;  // share with this group (name or gid): mode 0660
};

// A group by name, or by number.
std::optional<gid_t> group_id(const std::string& text) {
  if (const group* gr = ::getgrnam(text.c_str())) return gr->gr_gid;
  gid_t gid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), gid);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size()) return gid;
  return std::nullopt;
}

int run_create(const Context& ctx, const CreateOptions& o) {
  NodeOptions options;
  options.ns = ctx.ns;
  if (!o.group.empty()) {
    options.group = group_id(o.group);
    if (!options.group) return fail("--group '" + o.group + "': no such group");
  }
  auto node = Node::open(options);
  if (!node) return fail(node.error());
  if (o.cluster && o.kind != "lock" && o.kind != "lock-table") return fail("--cluster is for locks and lock tables");
  if (o.kind == "lock") {
    if (o.exclusive) return fail("--exclusive-publisher is for topics and queues, not locks");
    auto lock = node->lock(o.name, OpenMode::create, {.scope = o.cluster ? Scope::cluster : Scope::host});
    if (!lock) return fail(lock.error());
  } else if (o.kind == "lock-table") {
    if (o.exclusive) return fail("--exclusive-publisher is for topics and queues, not lock tables");
    const std::uint64_t capacity = o.capacity_given ? o.capacity : LockTableOptions{}.capacity;
    auto table = node->lock_table(o.name, OpenMode::create,
                                  {.scope = o.cluster ? Scope::cluster : Scope::host, .capacity = capacity,
                                   .max_key_bytes = o.max_key});
    if (!table) return fail(table.error());
    const LockTableStats s = table->stats();
    auto info = node->info(o.name);
    std::cout << "created lock-table '" << o.name << "' in namespace '" << ctx.ns << "': " << with_commas(s.capacity)
              << " keys of up to " << s.max_key_bytes << " bytes, " << with_commas(s.entries) << " entries of "
              << s.bytes_per_entry << " bytes (" << human_bytes(info ? info->size_bytes : 0) << " of shared memory)\n";
    return kExitOk;
  } else if (o.kind == "topic") {
    if (o.acks) return fail("--acks is for queues, not topics");
    auto topic = node->topic(o.name, OpenMode::create, TopicOptions{o.capacity, o.max_message, o.history, o.exclusive});
    if (!topic) return fail(topic.error());
  } else if (o.kind == "queue") {
    if (o.history != 0) return fail("--history is for topics, not queues");
    auto queue = node->queue(o.name, OpenMode::create, QueueOptions{o.capacity, o.max_message, o.acks, o.max_deliveries, o.exclusive});
    if (!queue) return fail(queue.error());
  } else {
    return fail("unknown object kind '" + o.kind + "' (expected lock, lock-table, topic or queue)");
  }
  std::cout << "created " << o.kind << " '" << o.name << "' in namespace '" << ctx.ns << "'\n";
  return kExitOk;
}

int run_rm(const Context& ctx, const std::string& name) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  if (auto removed = node->remove(name); !removed) return fail(removed.error());
  std::cout << "removed '" << name << "' from namespace '" << ctx.ns << "'\n";
  return kExitOk;
}

int run_gc(const Context& ctx, bool dry_run) {
  auto node = open_node(ctx);
  if (!node) return fail(node.error());
  auto report = node->gc(dry_run);
  if (!report) return fail(report.error());
  const char* verb = dry_run ? "would remove" : "removed";
  for (const auto& s : report->removed_segments)
    std::cout << verb << " segment /" << s << " (its creator died before it was ready)\n";
  for (const auto& e : report->removed_registry_entries)
    std::cout << verb << " registry entry '" << e << "' (its segment is gone)\n";
  if (report->removed_segments.empty() && report->removed_registry_entries.empty())
    std::cout << "nothing to remove in namespace '" << ctx.ns << "'\n";
  return kExitOk;
}

}  // namespace

void register_create(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("create", "Create a lock, lock table, topic or queue (fails if it exists)");
  cmd->footer(
      "A lock table holds one lock per key (colo lock --table TABLE KEY); --capacity is then the number of keys "
      "held at once (default 65536, up to 67108864).\n"
      "Examples:\n"
      "  colo create lock jobs/cleanup\n"
      "  colo create lock-table orders --capacity 1000000\n"
      "  colo create topic prices --capacity 16777216 --history 100\n"
      "  colo create queue jobs --acks --max-deliveries 5\n"
      "  colo create topic ticks --exclusive-publisher   # one publisher at a time: no atomic step per message\n"
      "  colo create --group render lock frames          # users of group render may use it too (mode 0660)");
  auto o = std::make_shared<CreateOptions>();
  cmd->add_option("KIND", o->kind, "lock, lock-table, topic or queue")
      ->required()
      ->check(CLI::IsMember({"lock", "lock-table", "topic", "queue"}));
  cmd->add_option("NAME", o->name, "object name: 1-200 bytes of A-Z a-z 0-9 . _ - /")->required();
  auto* capacity = cmd->add_option("--capacity", o->capacity,
                                   "topic/queue: ring bytes, a power of two from 4096 (default 1048576); lock-table: "
                                   "keys held at once, 1 to 67108864 (default 65536)")
                       ->check(CLI::Range(std::uint64_t{1}, std::uint64_t{1} << 34));
  cmd->add_option("--max-key", o->max_key, "lock-table: longest key in bytes, 1 to 256 (sets the entry size)")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--cluster", o->cluster, "lock, lock-table: cluster scope (excludes holders on every host, through colod)");
  cmd->add_option("--max-message", o->max_message, "topic/queue: largest message in bytes (at most about capacity/2)")
      ->capture_default_str();
  cmd->add_option("--history", o->history,
                  "topic: newest messages kept for new subscribers while there is room; they start that far back")
      ->capture_default_str();
  cmd->add_flag("--exclusive-publisher", o->exclusive,
                "topic/queue: one publisher at a time (a second one is refused while the first lives); publishing "
                "then needs no atomic read-modify-write");
  cmd->add_option("--group", o->group,
                  "share the object (and the namespace's registry, if this creates it) with the users of this "
                  "group, by name or number: mode 0660 instead of 0600");
  cmd->add_flag("--acks", o->acks, "queue: consumers acknowledge; unacknowledged messages are redelivered");
  cmd->add_option("--max-deliveries", o->max_deliveries, "queue with --acks: deliveries before NAME.dlq")
      ->capture_default_str()
      ->check(CLI::Range(1, 255));
  cmd->callback([&ctx, o, capacity] {
    o->capacity_given = capacity->count() != 0;
    ctx.exit_code = run_create(ctx, *o);
  });
}

void register_rm(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("rm", "Remove an object: its segment and registry entry");
  cmd->footer(
      "Processes that have the object open keep using their mapping; new opens no longer find it.\n"
      "Example:\n"
      "  colo rm prices");
  auto name = std::make_shared<std::string>();
  cmd->add_option("NAME", *name, "object name")->required();
  cmd->callback([&ctx, name] { ctx.exit_code = run_rm(ctx, *name); });
}

void register_gc(CLI::App& app, Context& ctx) {
  auto* cmd = app.add_subcommand("gc", "Remove what crashed creators left: unready segments, stale registry entries");
  cmd->footer(
      "Removes the segments whose creator died before they were ready, and the registry entries whose segment is "
      "gone. Objects in use are never touched.\n"
      "Example:\n"
      "  colo gc --dry-run");
  auto dry = std::make_shared<bool>(false);
  cmd->add_flag("--dry-run", *dry, "print what would be removed, remove nothing");
  cmd->callback([&ctx, dry] { ctx.exit_code = run_gc(ctx, *dry); });
}

}  // namespace colo::cli
