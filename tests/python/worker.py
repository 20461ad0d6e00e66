"""The Python processes of the interop tests: the same roles as colo-py-peer
(colo_py_peer.cpp), written with the colo module. Output is line-based on
stdout, flushed; exit 0 done, 1 a check failed.

  lock-increment NS LOCK COUNTER LOG GO N   wait for file GO; N x {acquire; counter file += 1;
                                            append "py PID TOKEN" to LOG; release}
  lock-hold NS LOCK                         acquire; print "held token=T owner_died=B"; sleep (killed)
  lock-acquire NS LOCK                      acquire (30 s at most); print "token=T owner_died=0|1"
  table-increment NS TABLE KEY COUNTER LOG GO N
  table-hold NS TABLE KEY                   as the three above, on key KEY of lock table TABLE
  table-acquire NS TABLE KEY
  publish NS NAME COUNT [batch]             COUNT pattern messages, one publish() each (batch:
                                            publish_batch of 100)
  subscribe NS TOPIC COUNT [batch]          print "ready"; receive COUNT messages, check every byte and
                                            the order; print "ok COUNT"
  consume NS QUEUE OUT IDLE_S               until idle: receive; append "ID DELIVERIES" to OUT; release
  consume-and-hang NS QUEUE                 receive one message; print "holding ID"; sleep (killed)
  interrupt-receive NS TOPIC                these three print "waiting", block, and on KeyboardInterrupt
  interrupt-acquire NS LOCK                 print "interrupted", then what they hold: see
  interrupt-loan NS TOPIC SIZE              test_interrupts.py
  interrupt-table-acquire NS TABLE KEY
"""

import os
import sys
import time

import colo
import patterns


def say(line):
    print(line, flush=True)


def fail(why):
    say(why)
    sys.exit(1)


def open_key(ns, table, key):
    return colo.Node(ns).lock_table(table, mode="open").lock(key)


def increment(lock, counter, log, go, n):
    """n x {acquire; counter file += 1; append "py PID TOKEN" to log; release} (a Lock or a KeyLock)."""
    with open(log, "a", buffering=1) as out:
        while not os.path.exists(go):
            time.sleep(0.001)
        for _ in range(int(n)):
            with lock as guard:
                with open(counter, "r+") as f:
                    value = int(f.read().strip() or 0)
                    f.seek(0)
                    f.write(f"{value + 1}\n")
                    f.truncate()
                out.write(f"py {os.getpid()} {guard.fencing_token}\n")
    say("done")


def hold(lock):
    guard = lock.acquire()
    say(f"held token={guard.fencing_token} owner_died={int(guard.owner_died)}")
    time.sleep(120)


def acquire(lock):
    guard = lock.acquire(timeout=30)
    say(f"token={guard.fencing_token} owner_died={int(guard.owner_died)}")
    guard.release()


def lock_increment(ns, name, counter, log, go, n):
    increment(colo.Node(ns).lock(name, mode="open"), counter, log, go, n)


def lock_hold(ns, name):
    hold(colo.Node(ns).lock(name, mode="open"))


def lock_acquire(ns, name):
    acquire(colo.Node(ns).lock(name, mode="open"))


def table_increment(ns, table, key, counter, log, go, n):
    increment(open_key(ns, table, key), counter, log, go, n)


def table_hold(ns, table, key):
    hold(open_key(ns, table, key))


def table_acquire(ns, table, key):
    acquire(open_key(ns, table, key))


def channel(node, name):
    kind = node.info(name)["kind"]
    return node.topic(name, mode="open") if kind == "topic" else node.queue(name, mode="open")


def publish(ns, name, count, mode="single"):
    ch = channel(colo.Node(ns), name)
    pub = ch.publisher() if isinstance(ch, colo.Topic) else ch.producer()
    count = int(count)
    if mode == "batch":
        for start in range(0, count, 100):
            messages = [patterns.payload(i) for i in range(start, min(start + 100, count))]
            if pub.publish_batch(messages, timeout=30) != len(messages):
                fail(f"publish_batch timed out at {start}")
    else:
        for i in range(count):
            pub.publish(patterns.payload(i), timeout=30)
    say(f"published {count}")


def subscribe(ns, name, count, mode="single"):
    sub = colo.Node(ns).topic(name, mode="open").subscribe()
    say("ready")
    count = int(count)
    i = 0
    while i < count:
        if mode == "batch":
            with sub.receive_batch(max=512, timeout=30) as batch:
                if not batch:
                    fail(f"bad: message {i} did not come within 30 s")
                for view in batch:
                    if view != patterns.payload(i):
                        fail(f"bad: message {i} ({len(view)} bytes) differs from the pattern")
                    i += 1
        else:
            msg = sub.receive(timeout=30)
            if msg is None:
                fail(f"bad: message {i} did not come within 30 s")
            with msg:
                if msg.sequence != i or msg.data != patterns.payload(i):
                    fail(f"bad: message {i} (sequence {msg.sequence}, {len(msg.data)} bytes) differs")
            i += 1
    say(f"ok {count}")


def consume(ns, name, out, idle_s):
    consumer = colo.Node(ns).queue(name, mode="open").consumer()
    fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    say("ready")
    while True:
        msg = consumer.receive(timeout=float(idle_s))
        if msg is None:
            break
        with msg:
            ident = int.from_bytes(msg.data[:8], "little")
            if msg.data != patterns.payload(ident):
                fail(f"bad: message {ident} differs from the pattern")
            os.write(fd, f"{ident} {msg.deliveries}\n".encode())  # one write: whole lines only
    os.close(fd)
    say("done")


def consume_and_hang(ns, name):
    consumer = colo.Node(ns).queue(name, mode="open").consumer()
    msg = consumer.receive(timeout=30)
    if msg is None:
        fail("none")
    say(f"holding {int.from_bytes(msg.data[:8], 'little')}")
    time.sleep(120)


def interrupt_receive(ns, name):
    topic = colo.Node(ns).topic(name, mode="open")
    sub = topic.subscribe()
    say("waiting")
    try:
        sub.receive()
        fail("received a message")
    except KeyboardInterrupt:
        say("interrupted")
    me = [r for r in topic.stats()["topic"]["readers"] if r["pid"] == os.getpid()]
    say(f"holding={int(me[0]['holding'])}")
    # The reader still works: the test publishes one message now.
    msg = sub.receive(timeout=30)
    say(f"then received sequence={msg.sequence if msg else None}")


def interrupt_acquire(ns, name):
    lock = colo.Node(ns).lock(name, mode="open")
    say("waiting")
    try:
        lock.acquire()
        fail("acquired")
    except KeyboardInterrupt:
        say("interrupted")
    stats = lock.stats()["lock"]
    say(f"guard={lock.guard} holder_is_me={int((stats['holder'] or {}).get('pid') == os.getpid())} "
        f"waiters={stats['waiters']}")
    # Once the holder is gone the lock is free for anyone: this process takes it again.
    guard = lock.acquire(timeout=30)
    say(f"then acquired token={guard.fencing_token}")
    guard.release()


def interrupt_table_acquire(ns, table, key):
    key_lock = open_key(ns, table, key)
    say("waiting")
    try:
        key_lock.acquire()
        fail("acquired")
    except KeyboardInterrupt:
        say("interrupted")
    stats = key_lock.stats()
    say(f"guard={key_lock.guard} holder_is_me={int((stats['holder'] or {}).get('pid') == os.getpid())} "
        f"waiters={stats['waiters']}")
    # Once the holder is gone the key is free for anyone: this process takes it again.
    guard = key_lock.acquire(timeout=30)
    say(f"then acquired token={guard.fencing_token}")
    guard.release()


def interrupt_loan(ns, name, size):
    pub = colo.Node(ns).topic(name, mode="open").publisher()
    size = int(size)
    # Fill the ring (a blocking subscriber that reads nothing holds it).
    n = 0
    while pub.try_publish(bytes(size)):
        n += 1
    say(f"filled {n}")
    say("waiting")
    try:
        pub.loan(size)
        fail("loaned")
    except KeyboardInterrupt:
        say("interrupted")
    # The next loan, once the subscriber reads, is the next message.
    with pub.loan(size, timeout=30) as loan:
        loan.data[:] = b"\xab" * size
    say("then committed")


COMMANDS = {
    "lock-increment": lock_increment,
    "lock-hold": lock_hold,
    "lock-acquire": lock_acquire,
    "publish": publish,
    "subscribe": subscribe,
    "consume": consume,
    "consume-and-hang": consume_and_hang,
    "interrupt-receive": interrupt_receive,
    "interrupt-acquire": interrupt_acquire,
    "interrupt-loan": interrupt_loan,
    "table-increment": table_increment,
    "table-hold": table_hold,
    "table-acquire": table_acquire,
    "interrupt-table-acquire": interrupt_table_acquire,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
