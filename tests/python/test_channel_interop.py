"""Topics and queues shared by Python and C++ processes: 100,000 messages
from a C++ publisher to Python subscribers and from Python publishers to a
C++ subscriber, every byte checked, in order (patterns.py); a queue with
acks consumed by Python workers, one SIGKILLed holding a message: every
message acknowledged exactly once."""

import collections

MESSAGES = 100_000


def test_cpp_publisher_to_python_subscribers(node, ns, spawn):
    node.topic("t", capacity=1 << 20, max_message=1024)
    subscribers = [spawn.python("subscribe", ns, "t", MESSAGES), spawn.python("subscribe", ns, "t", MESSAGES, "batch")]
    for s in subscribers:
        s.expect("ready")
    publisher = spawn.peer("publish", ns, "t", MESSAGES)
    assert publisher.line(timeout=240) == f"published {MESSAGES}"
    for s in subscribers:
        assert s.line(timeout=240) == f"ok {MESSAGES}"


def test_python_publishers_to_a_cpp_subscriber(node, ns, spawn):
    for name, mode in (("single", "single"), ("batch", "batch")):
        node.topic(name, capacity=1 << 20, max_message=1024)
        subscriber = spawn.peer("subscribe", ns, name, MESSAGES)
        subscriber.expect("ready")
        publisher = spawn.python("publish", ns, name, MESSAGES, mode)
        assert publisher.line(timeout=240) == f"published {MESSAGES}"
        assert subscriber.line(timeout=240) == f"ok {MESSAGES}"


def test_queue_with_acks_and_a_killed_python_worker(node, ns, spawn, tmp_path):
    jobs = 3000
    queue = node.queue("jobs", capacity=1 << 20, max_message=1024, acks=True)
    victim = spawn.python("consume-and-hang", ns, "jobs")
    producer = spawn.peer("publish", ns, "jobs", jobs)
    held = int(victim.expect("holding ").split()[1])
    out = tmp_path / "acked"
    workers = [spawn.python("consume", ns, "jobs", out, 2.0) for _ in range(3)]
    for w in workers:
        w.expect("ready")
    victim.kill()  # mid-message: it holds `held`, unacknowledged
    assert producer.line(timeout=120) == f"published {jobs}"
    for w in workers:
        assert w.line(timeout=120) == "done"
        assert w.wait()[0] == 0
    # A worker appends "ID DELIVERIES" and then releases (acknowledges): one
    # line per acknowledgement.
    records = [tuple(map(int, line.split())) for line in out.read_text().splitlines()]
    acknowledged = collections.Counter(ident for ident, _ in records)
    assert sorted(acknowledged) == list(range(jobs))
    assert set(acknowledged.values()) == {1}
    deliveries = dict(records)
    assert deliveries[held] == 2
    assert all(d == 1 for ident, d in deliveries.items() if ident != held)
    # (The workers have exited: their slots, and their counters, are gone.)
    stats = queue.stats()["queue"]
    assert (stats["published"], stats["depth"], stats["readers"]) == (jobs, 0, [])
    assert node.info("jobs.dlq")["queue"]["published"] == 0
