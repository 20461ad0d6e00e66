"""Ctrl-C (SIGINT, sent by the test) interrupts a Python process blocked in
receive(), acquire() (of a lock, and of a lock table's key) and loan():
KeyboardInterrupt, and nothing held or waited for afterwards. libcolo's waits are futex sleeps a signal does not end; the
module waits in slices of at most 50 ms and runs the signal handlers between
them, so the interrupt comes within about 50 ms (the bound checked here is
looser: two busy cores)."""

import signal
import time

INTERRUPT_BOUND_S = 1.0  # a wait that ignored the signal would never end


def interrupt(proc):
    """Sends SIGINT to a worker that said "waiting"; returns how long it took to say "interrupted"."""
    time.sleep(0.2)  # it is inside the blocking call by now
    start = time.monotonic()
    proc.signal(signal.SIGINT)
    proc.expect("interrupted", timeout=10)
    elapsed = time.monotonic() - start
    print(f"interrupted after {elapsed * 1000:.1f} ms")
    return elapsed


def test_ctrl_c_during_a_blocking_receive(node, ns, spawn):
    topic = node.topic("t", capacity=1 << 14, max_message=64)
    worker = spawn.python("interrupt-receive", ns, "t")
    worker.expect("waiting")
    assert interrupt(worker) < INTERRUPT_BOUND_S
    assert worker.line() == "holding=0"
    topic.publisher().publish(b"after")  # the reader still works: it gets this one
    assert worker.line() == "then received sequence=0"
    assert worker.wait()[0] == 0


def test_ctrl_c_during_a_blocking_acquire(node, ns, spawn):
    lock = node.lock("l")
    holder = spawn.peer("lock-hold", ns, "l", stdin=True)
    token = int(holder.expect("held token=").split("=")[1])
    worker = spawn.python("interrupt-acquire", ns, "l")
    worker.expect("waiting")
    time.sleep(0.2)
    assert lock.stats()["lock"]["waiters"] == 1
    assert interrupt(worker) < INTERRUPT_BOUND_S
    # It holds nothing and waits for nothing; the C++ holder still holds it.
    assert worker.line() == "guard=None holder_is_me=0 waiters=0"
    assert lock.stats()["lock"]["holder"]["pid"] == holder.pid
    holder.close_stdin()  # the holder releases; the worker takes it with the next token
    assert worker.line() == f"then acquired token={token + 1}"
    assert worker.wait()[0] == 0
    assert lock.stats()["lock"]["timeouts"] == 0


def test_ctrl_c_during_a_blocking_acquire_of_a_table_key(node, ns, spawn):
    table = node.lock_table("orders", capacity=100)
    holder = spawn.peer("table-hold", ns, "orders", "order:42", stdin=True)
    token = int(holder.expect("held token=").split("=")[1])
    worker = spawn.python("interrupt-table-acquire", ns, "orders", "order:42")
    worker.expect("waiting")
    time.sleep(0.2)
    key = table.lock("order:42")
    assert key.stats()["waiters"] == 1
    assert interrupt(worker) < INTERRUPT_BOUND_S
    # It holds nothing and waits for nothing; the C++ holder still holds the key.
    assert worker.line() == "guard=None holder_is_me=0 waiters=0"
    assert key.stats()["holder"]["pid"] == holder.pid
    holder.close_stdin()  # the holder releases (the key leaves the table); the worker inserts it again
    assert worker.line() == f"then acquired token={token + 1}"
    assert worker.wait()[0] == 0
    stats = table.stats()["lock_table"]
    assert (stats["timeouts"], stats["waiters"], stats["live_keys"], stats["grants"]) == (0, 0, 0, 2)


def test_ctrl_c_during_a_blocking_loan(node, ns, spawn):
    topic = node.topic("t", capacity=4096, max_message=256)
    sub = topic.subscribe()  # blocking, and reading nothing yet: the ring fills
    worker = spawn.python("interrupt-loan", ns, "t", 200)
    filled = int(worker.expect("filled ").split()[1])
    assert filled > 0
    worker.expect("waiting")
    assert interrupt(worker) < INTERRUPT_BOUND_S
    # Nothing was claimed by the interrupted loan: the subscriber gets the
    # messages that filled the ring, then the one committed after.
    got = []
    while len(got) < filled + 1:
        batch = sub.receive_batch(max=64, timeout=10)
        assert batch, f"only {len(got)} messages came"
        got.extend(bytes(v) for v in batch)
        batch.release()
    worker.expect("then committed")
    assert got == [bytes(200)] * filled + [b"\xab" * 200]
    assert worker.wait()[0] == 0
    stats = topic.stats()["topic"]
    assert (stats["published"], stats["dead_claims"]) == (filled + 1, 0)
