#include "link_service.hpp"

#include "kafka/kafka_link.hpp"
#include "rabbitmq/rabbitmq_link.hpp"

namespace colo::bridge {
namespace {

// The link of one [[link]] table, by the system it links to. Another
// system adds its LinkSystem value, its sub-table and its branch here.
Result<std::unique_ptr<Link>> make_link(const Config& config, const LinkConfig& link, const Log& log) {
  switch (link.system) {
    case LinkSystem::kafka:
      for (const auto& cluster : config.kafka_clusters)
        if (cluster.name == link.kafka.cluster) return kafka::make_link(config, cluster, link, log);
      return Error{Errc::invalid_argument, "link " + link.name + ": no [[kafka]] cluster named " + link.kafka.cluster};
    case LinkSystem::rabbitmq:
      for (const auto& server : config.rabbitmq_servers)
        if (server.name == link.rabbitmq.server) return rabbitmq::make_link(config, server, link, log);
      return Error{Errc::invalid_argument,
                   "link " + link.name + ": no [[rabbitmq]] server named " + link.rabbitmq.server};
  }
  return Error{Errc::invalid_argument, "link " + link.name + ": unknown system"};
}

// A label value of the Prometheus text format: \ " and newlines escaped.
std::string label(const std::string& value) {
  std::string out;
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

LinkService::LinkService(const Config& config, const Log& log) : config_(config), log_(log) {}

LinkService::~LinkService() { stop(); }

Result<void> LinkService::start() {
  for (const auto& link : config_.links) {
    auto made = make_link(config_, link, log_);
    if (!made) return std::move(made).error();
    links_.push_back(std::move(made).value());
  }
  for (auto& link : links_) link->start();
  return Ok{};
}

void LinkService::stop() {
  for (auto& link : links_) link->stop();
}

std::vector<LinkStatus> LinkService::status() const {
  std::vector<LinkStatus> out;
  for (const auto& link : links_) out.push_back(link->status());
  return out;
}

Link* LinkService::find(const std::string& name) const {
  for (const auto& link : links_)
    if (link->config().name == name) return link.get();
  return nullptr;
}

Result<void> LinkService::pause(const std::string& name) {
  Link* link = find(name);
  if (link == nullptr) return Error{Errc::not_found, "no link named '" + name + "' (colo links lists them)"};
  link->pause();
  log_.write(LogLevel::info, "link %s: pause asked over the control socket", name.c_str());
  return Ok{};
}

Result<void> LinkService::resume(const std::string& name) {
  Link* link = find(name);
  if (link == nullptr) return Error{Errc::not_found, "no link named '" + name + "' (colo links lists them)"};
  link->resume();
  log_.write(LogLevel::info, "link %s: resume asked over the control socket", name.c_str());
  return Ok{};
}

// Prometheus text format 0.0.4, one family per counter, labelled by link.
void LinkService::render_metrics(std::string& out) const {
  if (links_.empty()) return;
  const auto all = status();
  auto family = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto each = [&](const char* name, auto value_of, const std::string& extra = "") {
    for (const auto& s : all)
      out += std::string(name) + "{link=\"" + label(s.name) + "\"" + extra + "} " + std::to_string(value_of(s)) + "\n";
  };
  family("colod_link_info", "gauge", "one per link: its system, mode, object, state and last error (as labels)");
  for (const auto& s : all)
    out += "colod_link_info{link=\"" + label(s.name) + "\",system=\"" + s.system + "\",mode=\"" + s.mode +
           "\",object=\"" + label(s.object) + "\",kind=\"" + s.object_kind + "\",state=\"" + to_string(s.state) +
           "\",last_error=\"" + label(s.last_error.substr(0, 200)) + "\"} 1\n";
  family("colod_link_up", "gauge", "1 while the link is running (moving messages), else 0");
  each("colod_link_up", [](const LinkStatus& s) { return s.state == LinkState::running ? 1 : 0; });
  family("colod_link_messages_total", "counter", "messages the link moved, by event (docs/kafka.md)");
  for (const auto& s : all) {
    const auto& c = s.counters;
    const std::pair<const char*, std::uint64_t> events[] = {
        {"produced", c.produced}, {"acknowledged", c.acknowledged}, {"returned", c.returned},
        {"lost", c.lost},         {"skipped", c.skipped},           {"duplicates", c.duplicates},
        {"redelivered", c.redelivered}};
    for (const auto& [event, value] : events)
      out += "colod_link_messages_total{link=\"" + label(s.name) + "\",event=\"" + event + "\"} " +
             std::to_string(value) + "\n";
  }
  family("colod_link_in_flight", "gauge", "messages produced and not yet acknowledged");
  each("colod_link_in_flight", [](const LinkStatus& s) { return s.counters.in_flight; });
  family("colod_link_lag_messages", "gauge", "messages still to move");
  each("colod_link_lag_messages", [](const LinkStatus& s) { return s.counters.lag_messages; });
  family("colod_link_lag_bytes", "gauge", "bytes still to move (mirror and spill)");
  each("colod_link_lag_bytes", [](const LinkStatus& s) { return s.counters.lag_bytes; });
  family("colod_link_outages_total", "counter", "times the other side became unreachable (the link went down)");
  each("colod_link_outages_total", [](const LinkStatus& s) { return s.counters.outages; });
  family("colod_link_errors_total", "counter", "errors met by the link (the last one is in colod_link_info)");
  each("colod_link_errors_total", [](const LinkStatus& s) { return s.counters.errors; });
  family("colod_link_last_error_age_seconds", "gauge", "seconds since the link's last error (absent: none yet)");
  for (const auto& s : all)
    if (!s.last_error.empty())
      out += "colod_link_last_error_age_seconds{link=\"" + label(s.name) + "\"} " +
             std::to_string(s.last_error_ms / 1000) + "\n";
}

}  // namespace colo::bridge
