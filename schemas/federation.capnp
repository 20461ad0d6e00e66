# schemas/federation.capnp — the wire between the colod of two hosts.
#
# One ZeroMQ connection per direction: host A's DEALER connects to host B's
# ROUTER (its `listen` endpoint). Each ZeroMQ message is one PeerFrame.
#
#   A (origin, DEALER)                         B (receiver, ROUTER)
#   hello ─────────────────────────────────▶   (who is this link; every heartbeat)
#                                          ◀─  hello (B's name), then for each
#                                              cluster topic: subscribe{from, credit}
#   data{seq, payload} or batch{entries}    ─▶ published into B's topic, relayed
#   ... (at most credit messages)
#                                          ◀─  credit{n, receivedThrough} as B
#                                              receives (A may stop retaining
#                                              them) and publishes (n more) them
#   lost{from, to} (no longer retained)  ──▶   counted and logged by B
#
# Credit is enforced by B: what A sends of one stream beyond what B granted
# (subscribe's credit plus every credit frame since) is dropped and counted
# (`over_credit` in `colo peers`), so a sender that ignores credit cannot
# make B hold more than `credit` messages per stream in memory. A topic's
# credit also counts payload bytes (protocol 4): its window is a number of
# bytes, so a stream of small messages gets a window of many, whatever the
# largest message the topic takes. Frames of an
# earlier stream (another epoch) are dropped and sent again in the new one.
#
# B asks to resume at the sequence after the last one it delivered from A
# (it finds it in its own ring, see internal::relayed_high_water), so a restart
# of either side or a dropped link loses nothing still retained by A and
# duplicates nothing. Rules for field numbers: never reuse or renumber one;
# add fields at the end.
@0xc295c8b764e4a025;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("colo::wire");

struct PeerFrame {
  union {
    hello @0 :Hello;          # both directions, first and then every heartbeat interval
    data @1 :Envelope;        # origin -> receiver
    subscribe @2 :Subscribe;  # receiver -> origin: (re)start a topic's stream
    credit @3 :Credit;        # receiver -> origin: room for more messages
    lost @4 :Lost;            # origin -> receiver: messages it no longer retains
    batch @5 :Batch;          # origin -> receiver: several messages of one object (protocol 2)
    rewind @6 :Rewind;        # origin -> receiver: you asked from beyond what I published (protocol 3)
  }
}

struct Hello {
  node @0 :Text;              # the sender's [node].name
  protocol @1 :UInt16;        # 4 (3: no byte credit; 2: no epochs, no rewind; 1: no batch frames); a peer speaking another
                              # version is refused and logged
  incarnation @2 :UInt64;     # random per colod start: tells a restarted peer from a reconnected one
  namespace @3 :Text;         # the sender's colo namespace (informational)
}

struct Envelope {
  origin @0 :Text;            # node name of the host the message was published on
  object @1 :Text;            # topic name
  sequence @2 :UInt64;        # the message's sequence in the origin's ring (per origin, increasing)
  timestamp @3 :UInt64;       # CLOCK_REALTIME ns when the origin's colod read it
  payload @4 :Data;           # the message bytes, unchanged
  flags @5 :UInt32;           # reserved, 0
  epoch @6 :UInt32;           # the Subscribe.epoch this stream answers (protocol 3)
}

struct Subscribe {
  object @0 :Text;            # topic name
  fromSequence @1 :UInt64;    # first origin sequence wanted; 0: from whatever is published next
  credit @2 :UInt32;          # messages the origin may send before the next credit
  epoch @3 :UInt32;           # (protocol 3) the receiver's count of its subscribes to this object
                              # and origin; the origin echoes it in every data, batch and lost frame
                              # of the stream this subscribe starts. The receiver drops frames of an
                              # earlier epoch (in flight when it subscribed again): they are sent
                              # again in the new stream, so taking them would leave a hole.
  creditBytes @4 :UInt64;     # (protocol 4) payload bytes the origin may send before the next credit:
                              # it starts a message only while what is left of them is above 0 (so it
                              # goes over by less than one message). 0xffffffffffffffff: no byte limit
                              # (a queue's stream, whose credit is its consumers' demand)
}

struct Credit {
  object @0 :Text;            # topic name
  messages @1 :UInt32;        # more messages the origin may send (we published that many)
  receivedThrough @2 :UInt64; # highest sequence received (published or waiting for room);
                              # the origin stops retaining up to it for us. 0: no news
  bytes @3 :UInt64;           # (protocol 4) more payload bytes the origin may send (those of the
                              # messages we published); ignored on a stream without a byte limit
}

struct Lost {
  object @0 :Text;            # topic name
  fromSequence @1 :UInt64;    # first origin sequence not retained any more
  count @2 :UInt64;           # how many of the origin's own messages from there on: the range ends
                              # just before the next data frame (relayed records are not counted,
                              # except those relayed before the origin's colod started: an upper bound)
  epoch @3 :UInt32;           # as Envelope.epoch
}

# What the origin has ready for one object within the peer's credit, in one
# frame: one ZeroMQ message and one Cap'n Proto read per batch instead of
# per message. Entries are in sequence order; each counts against credit.
struct Batch {
  origin @0 :Text;            # as Envelope.origin
  object @1 :Text;            # as Envelope.object
  entries @2 :List(Entry);
  epoch @3 :UInt32;           # as Envelope.epoch
}

# The answer to a subscribe to a topic whose fromSequence is beyond what the
# origin has published: the receiver holds sequences of this origin that it
# never sent (a forged frame on a plain-TCP link, or the origin's ring made
# anew). The receiver forgets them, resumes after the highest one it holds
# up to `sequence`, and subscribes again; without this, every real message
# at or below the false high-water mark would be dropped as a duplicate, for
# good (the mark is read back from the ring at a restart). No stream starts
# before that new subscribe.
struct Rewind {
  object @0 :Text;            # topic name
  epoch @1 :UInt32;           # as Envelope.epoch: the subscribe this answers
  sequence @2 :UInt64;        # the origin's highest sequence so far (0: none)
}

struct Entry {
  sequence @0 :UInt64;        # as Envelope.sequence
  timestamp @1 :UInt64;       # as Envelope.timestamp
  payload @2 :Data;           # as Envelope.payload
}
