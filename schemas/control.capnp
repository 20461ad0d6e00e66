# schemas/control.capnp — requests from libcolo / `colo` to the local colod,
# over its ipc:// control socket (REQ/REP style: one request, one reply).
# Field numbers are never reused; new fields go at the end.
@0xa95ce68045b633bc;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("colo::wire");

struct ControlRequest {
  union {
    status @0 :Void;          # the daemon's node, uptime, peers and counters
    declareTopic @1 :Text;    # make a topic cluster-scoped from now on (it must exist or be creatable)
    pauseLink @2 :Text;       # a link (by name) stops moving messages until resumed
    resumeLink @3 :Text;
  }
}

struct ControlReply {
  ok @0 :Bool;
  error @1 :Text;             # why not, when ok is false
  status @2 :Status;          # for `status`
}

struct Status {
  node @0 :Text;
  namespace @1 :Text;
  uptimeMs @2 :UInt64;
  peers @3 :List(PeerStatus);
  topics @4 :List(Text);      # cluster-scoped topics
  badFrames @5 :UInt64;       # malformed or unexpected frames from peers (dropped)
  rejectedPeers @6 :UInt64;   # connections refused by ZAP: key not a configured peer's
  failedHandshakes @7 :UInt64;  # ZMTP/CURVE handshakes that failed on the listen socket (garbage, bad keys)
  droppedConnections @8 :UInt64;  # connections closed, including for a frame over max_frame
  objects @9 :List(ObjectStatus);  # every cluster topic and queue, with its traffic
  earlyFrames @10 :UInt64;    # data of a stream we asked to restart (before a reconnected link's hello,
                              # or of an earlier epoch): dropped, sent again in the new stream
  links @11 :List(LinkStatus);  # links to other systems ([[link]]; bridge/links/link.hpp)
  refusedSessions @12 :UInt64;  # hellos from a second connection naming a peer whose session is alive
  ringWait @13 :Text;         # how the event loop learns of a publish while it sleeps: "io_uring" or "threads"
  ringWakes @14 :UInt64;      # io_uring: sleeps a publish into a cluster topic ended
}

# A link of colod to another messaging system (Kafka, RabbitMQ), as
# bridge/links/link.hpp counts it; docs/kafka.md and docs/rabbitmq.md say what
# each counter means in each mode.
struct LinkStatus {
  name @0 :Text;
  system @1 :Text;            # "kafka", "rabbitmq"
  mode @2 :Text;              # "mirror", "source", "spill"
  object @3 :Text;
  objectKind @4 :Text;        # "topic" or "queue"
  remote @5 :Text;            # the other side: "kafka cluster NAME, topic T", "rabbitmq server NAME, queue Q"
  state @6 :Text;             # starting, running, down, paused, failed, stopped
  stateMs @7 :UInt64;         # in that state for so long
  lastError @8 :Text;         # "" if none yet
  lastErrorMs @9 :UInt64;     # so long ago
  produced @10 :UInt64;
  acknowledged @11 :UInt64;
  returned @12 :UInt64;
  inFlight @13 :UInt64;
  lagMessages @14 :UInt64;
  lagBytes @15 :UInt64;
  errors @16 :UInt64;
  lost @17 :UInt64;
  skipped @18 :UInt64;
  duplicates @19 :UInt64;
  redelivered @20 :UInt64;
  outages @21 :UInt64;        # times the other side became unreachable
}

struct ObjectStatus {
  name @0 :Text;
  kind @1 :Text;              # "topic" or "queue"
  home @2 :Text;              # queue: the node that holds it; "" for a topic
  messagesIn @3 :UInt64;      # from peers, published into our ring
  messagesOut @4 :UInt64;     # sent to peers (a topic: once per peer)
  bytesIn @5 :UInt64;
  bytesOut @6 :UInt64;
  lost @7 :UInt64;            # topic: messages peers no longer retained for us
  duplicates @8 :UInt64;      # resent messages we already had, dropped
  inFlight @9 :UInt64;        # queue: sent to peers and not yet confirmed by them
}

struct PeerStatus {
  name @0 :Text;
  endpoint @1 :Text;
  connected @2 :Bool;         # a hello arrived within 3 heartbeat intervals
  sinceMs @3 :UInt64;         # how long it has been connected (or disconnected)
  messagesIn @4 :UInt64;
  messagesOut @5 :UInt64;
  bytesIn @6 :UInt64;
  bytesOut @7 :UInt64;
  gapsFilled @8 :UInt64;      # resubscriptions that resumed a stream after a gap
  lost @9 :UInt64;            # messages the peer could no longer send us
  duplicates @10 :UInt64;     # data frames already delivered (resent after a reconnect), dropped
  overCredit @11 :UInt64;     # messages it sent beyond the credit we granted, dropped
  rewinds @12 :UInt64;        # streams it told us to resume lower: we held sequences it never sent
}
