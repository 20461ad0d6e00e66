// colo/internal/text.hpp — putting untrusted bytes and system errors into
// messages (internal to colo: not installed).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace colo::internal {

// `value` fit for a message between single quotes: printable ASCII stays,
// every other byte and the quote itself become \xNN; cut after `max_bytes`
// bytes of input, with "..." appended. Names from users, values from config
// files and text from the network all go through it before they reach a
// message or a log.
std::string escaped(std::string_view value, std::size_t max_bytes);

// "<what>: <strerror(errno)>", errno read on entry.
std::string errno_text(std::string_view what);

}  // namespace colo::internal
