// tools/colod_client.hpp — one request to a colod over its control socket
// (schemas/control.capnp), for `colo peers`, `colo federate` and
// `colo bench bridge`.
//
// Contract: any thread; each call makes its own ZeroMQ context and socket and
// closes them before it returns (nothing is left to a later fork). The reply
// is read with limits (a size cap, a traversal limit), since the socket file
// could be anyone's.
#pragma once

#include <chrono>      // timeout
#include <functional>  // request filler, reply reader
#include <string>

#include "colo/error.hpp"
#include "control.capnp.h"  // wire::ControlRequest, wire::ControlReply

namespace colo::cli {

// Sends the request `fill` writes to the colod listening on `socket_path`
// (a file path, without "ipc://") and calls `on_reply` with its reply while
// the reply is valid. Errors:
//   timed_out  no answer within `timeout` (colod not running, or busy);
//   system     ZeroMQ refused (a path too long, ...);
//   corrupt    the reply is not a ControlReply;
//   invalid_argument  colod answered ok = false (message: its error).
Result<void> request_colod(const std::string& socket_path, std::chrono::milliseconds timeout,
                           const std::function<void(wire::ControlRequest::Builder)>& fill,
                           const std::function<void(wire::ControlReply::Reader)>& on_reply);

}  // namespace colo::cli
