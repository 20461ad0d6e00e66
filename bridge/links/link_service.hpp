// bridge/links/link_service.hpp — every [[link]] of colod's config, started,
// listed, paused, resumed, stopped and measured together (link.hpp says what
// a link is).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "../config.hpp"
#include "../log.hpp"
#include "link.hpp"

namespace colo::bridge {

class LinkService {
 public:
  LinkService(const Config& config, const Log& log);
  ~LinkService();  // stops the links
  LinkService(const LinkService&) = delete;
  LinkService& operator=(const LinkService&) = delete;

  // Makes each link of the config and starts its thread. A link whose
  // other side is unreachable does not stop colod: it is `failed` or
  // `down` and keeps trying. Errors only for what no retry can mend.
  Result<void> start();
  // Stops every link (each finishes or leaves what it has in flight, per
  // its mode; bounded).
  void stop();

  std::vector<LinkStatus> status() const;  // in config order
  // `colo links pause|resume NAME`. Errc::not_found for an unknown name.
  Result<void> pause(const std::string& name);
  Result<void> resume(const std::string& name);

  // Prometheus samples (families colod_link_*), appended to `out`.
  void render_metrics(std::string& out) const;

 private:
  Link* find(const std::string& name) const;
  const Config& config_;
  const Log& log_;
  std::vector<std::unique_ptr<Link>> links_;
};

}  // namespace colo::bridge
