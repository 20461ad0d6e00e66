"""The module's API in one process (and a few helpers): objects and options,
errors and their classes, wrong types, locks, topics, queues, batches,
cluster-scope locks (with colo-py-peer playing colod), and the GIL."""

import threading
import time

import pytest

import colo


def test_node_namespace_and_objects(node, ns):
    assert node.namespace == ns
    node.lock("a/lock")
    node.topic("a/topic", capacity=1 << 16, max_message=1024)
    node.queue("a/queue", acks=True)
    names = sorted((o["name"], o["kind"]) for o in node.list())
    assert names == [("a/lock", "lock"), ("a/queue", "queue"), ("a/queue.dlq", "queue"), ("a/topic", "topic")]
    node.remove("a/lock")
    assert "a/lock" not in [o["name"] for o in node.list()]
    assert node.shm_name_of("a/topic") == f"colo.{ns}.obj.a^topic"


def test_errors_carry_libcolo_messages_and_classes(node):
    with pytest.raises(colo.NotFound) as e:
        node.lock("missing", mode="open")
    assert e.value.code == "not found"
    assert "missing" in str(e.value)
    assert isinstance(e.value, colo.Error)

    with pytest.raises(colo.InvalidArgument) as e:
        node.lock("bad//name")
    assert isinstance(e.value, ValueError) and e.value.code == "invalid argument"

    node.topic("t", capacity=1 << 16, max_message=1024)
    with pytest.raises(colo.Mismatch):
        node.topic("t", capacity=1 << 17, max_message=1024)
    with pytest.raises(colo.Mismatch):
        node.queue("t")
    with pytest.raises(colo.AlreadyExists):
        node.topic("t", mode="create", capacity=1 << 16, max_message=1024)
    with pytest.raises(colo.InvalidArgument):
        node.topic("u", capacity=5000, max_message=1024)  # not a power of two
    with pytest.raises(colo.InvalidArgument):
        node.topic("u", mode="sometimes")
    with pytest.raises(colo.InvalidArgument):
        node.lock("u", scope="planet")
    with pytest.raises(colo.InvalidArgument):
        colo.Node("no.dots")
    assert issubclass(colo.Timeout, TimeoutError) and issubclass(colo.PermissionDenied, PermissionError)


def test_wrong_types_raise_type_error(node):
    topic = node.topic("t", capacity=1 << 16, max_message=256)
    pub = topic.publisher()
    sub = topic.subscribe()
    for bad in (123, "text", None, 1.5, [b"x"]):
        with pytest.raises(TypeError):
            pub.publish(bad)
    with pytest.raises(TypeError):
        pub.loan("8")
    with pytest.raises(TypeError):
        pub.loan(8.0)
    with pytest.raises(TypeError):
        pub.publish_batch([b"ok", 5])
    with pytest.raises(TypeError):
        pub.publish_batch(7)
    with pytest.raises(TypeError):
        sub.receive(timeout="1")
    with pytest.raises(TypeError):
        node.topic(42)
    with pytest.raises(TypeError):
        node.lock("l").acquire(timeout=[1])
    with pytest.raises(ValueError):
        sub.receive(timeout=-1)
    with pytest.raises(ValueError):
        pub.loan(-1)
    with pytest.raises(TypeError):
        node.lock("l").acquire().on_lease_lost(5)
    # Arguments are checked before anything happens: a message waiting is
    # not taken, an open loan not given up.
    pub.publish(b"m")
    with pytest.raises(ValueError):
        sub.receive(timeout=-1)
    loan = pub.loan(1)
    with pytest.raises(TypeError):
        pub.publish(5)
    loan.data[:] = b"n"
    loan.commit()
    assert [bytes(m) for m in iter(sub.try_receive, None)] == [b"m", b"n"]  # nothing else was published


def test_publish_receive_in_order_with_metadata(node):
    topic = node.topic("t", capacity=1 << 16, max_message=256)
    sub = topic.subscribe()
    pub = topic.publisher()
    payloads = [bytes([i]) * i for i in range(50)]
    for p in payloads:
        pub.publish(p)
    assert topic.published == 50
    for i, p in enumerate(payloads):
        msg = sub.receive(timeout=5)
        assert (msg.sequence, bytes(msg.data), msg.deliveries, msg.origin) == (i, p, 1, 0)
        assert msg.data.readonly
        msg.release()
    assert sub.receive(timeout=0.05) is None
    with pytest.raises(colo.InvalidArgument) as e:
        pub.publish(bytes(257))
    assert "257 bytes is larger than its max_message (256 bytes)" in str(e.value)


def test_publish_times_out_when_a_blocking_subscriber_holds_the_ring(node):
    topic = node.topic("t", capacity=4096, max_message=512)
    sub = topic.subscribe()
    pub = topic.publisher()
    sent = 0
    while pub.try_publish(bytes(500)):
        sent += 1
    assert sent > 0
    start = time.monotonic()
    with pytest.raises(colo.Timeout) as e:
        pub.publish(bytes(500), timeout=0.2)
    assert time.monotonic() - start >= 0.2
    assert "no space for 500 bytes within 0.2 s" in str(e.value)
    assert pub.try_loan(500) is None and pub.try_loan_batch(4, 500) is None
    assert len(sub.receive_batch(max=1000, timeout=1)) == sent


def test_loans_commit_abandon_and_context_manager(node):
    topic = node.topic("t", capacity=1 << 16, max_message=64)
    sub = topic.subscribe()
    pub = topic.publisher()
    with pub.loan(5) as loan:
        loan.data[:] = b"hello"
    assert loan.committed
    loan2 = pub.loan(3)
    loan2.data[:] = b"abc"
    loan2.abandon()
    with pytest.raises(ValueError):
        loan2.commit()
    with pytest.raises(RuntimeError):
        with pub.loan(4) as loan3:
            loan3.data[:] = b"nope"
            raise RuntimeError("abandon it")
    assert not loan3.committed
    loan4 = pub.loan(2)
    loan4.data[:] = b"ok"
    loan4.commit()
    got = [bytes(m) for m in iter(lambda: sub.try_receive(), None)]
    assert got == [b"hello", b"ok"]
    stats = topic.stats()["topic"]
    assert stats["publishers"][0]["abandoned"] == 2


def test_loan_batch_and_receive_batch(node):
    topic = node.topic("t", capacity=1 << 16, max_message=64)
    sub = topic.subscribe()
    pub = topic.publisher()
    with pub.loan_batch(10, 4) as batch:
        assert (len(batch), batch.message_size) == (10, 4)
        for i in range(10):
            batch[i][:] = i.to_bytes(4, "little")
    assert pub.publish_batch([b"x" * i for i in range(1, 6)]) == 5
    partial = pub.loan_batch(3, 1)
    for i in range(3):
        partial[i][:] = b"p"
    partial.commit(count=2)  # the third is given up
    got = sub.receive_batch(max=100, timeout=1)
    assert len(got) == 17
    assert [int.from_bytes(v, "little") for v in list(got)[:10]] == list(range(10))
    assert [bytes(got[i]) for i in range(10, 17)] == [b"x", b"xx", b"xxx", b"xxxx", b"xxxxx", b"p", b"p"]
    assert [got.sequence(i) for i in (0, 16)] == [0, 16]
    assert got[-1] == b"p"
    with pytest.raises(IndexError):
        got[17]
    got.release()
    empty = sub.receive_batch(timeout=0.05)
    assert len(empty) == 0 and not empty
    with pytest.raises(ValueError):
        pub.loan_batch(0, 1)


def test_iteration_and_reader_context(node):
    queue = node.queue("q", capacity=1 << 16, max_message=64)
    producer = queue.producer()
    for i in range(5):
        producer.publish(bytes([i]))
    seen = []
    with queue.consumer() as consumer:
        for msg in consumer:
            seen.append(msg.data[0])
            if len(seen) == 5:
                break
    assert consumer.closed and seen == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        consumer.receive()


def test_queue_with_acks_and_exclusive_publisher(node):
    queue = node.queue("q", capacity=1 << 16, max_message=64, acks=True, max_deliveries=3, exclusive_publisher=True)
    producer = queue.producer()
    with pytest.raises(colo.Busy):
        queue.producer()
    producer.publish(b"job")
    c1 = queue.consumer()
    c2 = queue.consumer()
    msg = c1.receive(timeout=1)
    assert c2.try_receive() is None
    msg.release()
    assert queue.stats()["queue"]["depth"] == 0


def test_lock_tokens_threads_and_errors(node):
    lock = node.lock("l")
    tokens = []
    for _ in range(3):
        with lock as guard:
            assert guard.held and not guard.owner_died
            tokens.append(guard.fencing_token)
        assert not guard.held
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    guard = lock.acquire()
    assert lock.guard is guard
    with pytest.raises(colo.InvalidArgument):
        lock.acquire()  # this thread holds it already
    other = []
    t = threading.Thread(target=lambda: other.append(lock.try_acquire()))
    t.start()
    t.join()
    assert other == [None]
    failures = []

    def release_from_elsewhere():
        try:
            guard.release()
        except RuntimeError as e:
            failures.append(str(e))

    t = threading.Thread(target=release_from_elsewhere)
    t.start()
    t.join()
    assert failures and "only the thread that acquired a lock may release it" in failures[0]
    lock.release()
    assert lock.guard is None and not guard.held
    with pytest.raises(RuntimeError):
        lock.release()
    second = node.lock("l")
    errors = []

    def time_out():
        try:
            second.acquire(timeout=0.1)
        except colo.Timeout as e:
            errors.append(str(e))

    with lock:
        t = threading.Thread(target=time_out)
        t.start()
        t.join()
    assert len(errors) == 1 and "was not acquired within 0.1 s (held by pid" in errors[0]
    assert second.stats()["lock"]["timeouts"] == 1  # one timeout, not one per slice


def test_a_dropped_lock_is_released(node):
    first = node.lock("l")
    first.acquire()
    del first
    assert node.lock("l").try_acquire() is not None


def test_cluster_lock_lease_loss(node, ns, spawn):
    lock = node.lock("c", scope="cluster")
    assert lock.scope == "cluster"
    keeper = spawn.peer("keeper", ns, "c", 7, stdin=True)
    keeper.expect("keeping")
    guard = lock.acquire(timeout=10)
    keeper.expect("granted")
    assert guard.fencing_token == (7 << 20) | 1
    assert not guard.lease_lost
    called = threading.Event()
    guard.on_lease_lost(called.set)
    keeper.send("lose")
    keeper.expect("lost")
    assert called.wait(10)
    assert guard.lease_lost
    guard.release()
    assert lock.stats()["lock"]["cluster"]["lease_losses"] == 1


def test_a_thread_blocked_in_receive_lets_other_threads_run(node):
    topic = node.topic("t", capacity=1 << 16, max_message=64)
    sub = topic.subscribe()
    got = []
    waiter = threading.Thread(target=lambda: got.append(sub.receive(timeout=30)))
    waiter.start()
    time.sleep(0.05)  # the waiter is in receive() now
    # This thread runs while the other one waits: it counts, and reads the
    # reader's counters (the waiter sleeps in the ring: waits > 0).
    count = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        count += 1
    assert count > 1000
    assert got == [] and waiter.is_alive()
    assert topic.stats()["topic"]["readers"][0]["waits"] > 0
    with pytest.raises(RuntimeError) as e:
        sub.try_receive()  # one thread at a time
    assert "in use by another thread" in str(e.value)
    topic.publisher().publish(b"wake")
    waiter.join(10)
    assert bytes(got[0].data) == b"wake"


def test_a_thread_blocked_in_acquire_lets_other_threads_run(node):
    lock = node.lock("l")
    other = node.lock("l")
    guard = lock.acquire()
    got = []
    def wait_for_it():
        g = other.acquire(timeout=30)
        got.append(g.fencing_token)
        g.release()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.05)
    count = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        count += 1
    assert count > 1000 and got == []
    token = guard.fencing_token
    guard.release()
    waiter.join(10)
    assert got == [token + 1]
