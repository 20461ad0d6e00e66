"""Ctrl-C (SIGINT, sent by the test) interrupts a Python process blocked in
receive(), acquire() and loan(): KeyboardInterrupt, and nothing held
afterwards. libcolo's waits are futex sleeps a signal does not end; the
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
