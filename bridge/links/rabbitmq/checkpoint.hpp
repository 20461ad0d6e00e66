// bridge/links/rabbitmq/checkpoint.hpp — where a RabbitMQ mirror is in its
// object's sequences, kept across colod crashes.
//
// RabbitMQ cannot be read back (a queue's consumers take its messages), so
// a mirror that restarts learns from here what RabbitMQ confirmed before:
// a file in /dev/shm beside the namespace's segments,
// "colo.<ns>.link.<link name, '/' as '^'>", mapped into colod. It lives as
// long as the ring does (both are in /dev/shm: a reboot empties both), and
// a killed colod's last stores are in it (the page is the file's).
//
//   offset  field            meaning
//   0       magic u64        "colomq01" (anything else: no checkpoint yet)
//   8       epoch u64        the object's creation time: whose sequences these are
//   16      confirmed_below  every message of ours below this sequence was
//                            confirmed by RabbitMQ (or skipped, or not ours)
//   24      published_below  no message at or above this sequence was handed
//                            to RabbitMQ; those in [confirmed, published) may
//                            have reached it (published again, marked)
//
// Each field is one aligned 8-byte store (std::atomic_ref): a crash never
// leaves one half written. Used by its link's thread only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "colo/error.hpp"

namespace colo::bridge::rabbitmq {

class Checkpoint {
 public:
  struct Position {
    std::uint64_t epoch = 0, confirmed_below = 0, published_below = 0;
  };

  // Opens (creating it, mode 0600) the checkpoint of link `link` in namespace `ns`.
  static Result<Checkpoint> open(const std::string& ns, const std::string& link);
  Checkpoint() = default;
  Checkpoint(Checkpoint&& other) noexcept;
  Checkpoint& operator=(Checkpoint&& other) noexcept;
  ~Checkpoint();

  // What the file says; nullopt if it was just created (or is not ours).
  std::optional<Position> read() const noexcept;
  // A new epoch (the object was created again, or the first start): both
  // positions at `at`.
  void start(std::uint64_t epoch, std::uint64_t at) noexcept;
  void set_confirmed(std::uint64_t below) noexcept;
  void set_published(std::uint64_t below) noexcept;
  const std::string& path() const noexcept { return path_; }

 private:
  std::uint64_t* words_ = nullptr;  // the mapped file: magic, epoch, confirmed_below, published_below
  std::string path_;
};

}  // namespace colo::bridge::rabbitmq
