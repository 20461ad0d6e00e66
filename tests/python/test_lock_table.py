"""Lock tables from Python: Python and C++ processes exclude each other on one
key (a counter in a file), fencing tokens strictly increase per key across
releases and the key leaving the table and coming back, a SIGKILLed Python
holder is seen as owner_died by the next holder (C++, then Python), and the
errors: a full table, a key too long, bad names and options, wrong types.
A thread blocked on a key lets the process's other threads run. A cluster
table's key with colo-py-peer playing colod: its token and lease loss."""

import os
import threading
import time

import pytest

import colo
from conftest import run_increments

PROCESSES = 3  # of each language
INCREMENTS = 1500


def wait_until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.01)


def test_python_and_cpp_processes_exclude_each_other_on_one_key(node, ns, spawn, tmp_path):
    table = node.lock_table("orders", capacity=1000)
    tokens = run_increments(spawn, tmp_path, "table-increment", (ns, "orders", "order:42"), PROCESSES, INCREMENTS)
    total = 2 * PROCESSES * INCREMENTS
    assert tokens == list(range(1, total + 1))  # the only key of its bucket: every grant takes the next token
    stats = table.stats()["lock_table"]
    assert (stats["grants"], stats["recoveries"], stats["live_keys"], stats["waiters"]) == (total, 0, 0, 0)


def test_tokens_of_a_key_keep_growing_across_release_and_reinsertion(node, ns, spawn):
    table = node.lock_table("t", capacity=100)
    keys = [f"k{i}" for i in range(20)]
    last = {}
    for round_ in range(5):
        for key in keys:
            with table.lock(key) as guard:
                assert table.lock(key).stats()["held"]
                assert guard.fencing_token > last.get(key, 0)
                last[key] = guard.fencing_token
            # Released: the key left the table.
            assert table.lock(key).stats() == {"held": False, "fencing_token": 0, "holder": None, "waiters": 0}
    assert table.stats()["lock_table"]["live_keys"] == 0
    # Another process's grant of the key comes after ours, and ours after its
    # (nothing else is granted meanwhile: each takes the next token).
    with table.lock("k7") as guard:
        assert guard.fencing_token > last["k7"]
        token = guard.fencing_token
    assert spawn.peer("table-acquire", ns, "t", "k7").line() == f"token={token + 1} owner_died=0"
    assert spawn.python("table-acquire", ns, "t", "k7").line() == f"token={token + 2} owner_died=0"
    with table.lock(b"k7") as guard:
        assert guard.fencing_token == token + 3
    assert table.stats()["lock_table"]["grants"] == 5 * len(keys) + 4


def test_a_killed_python_holder_is_seen_by_the_next_holder_of_its_key(node, ns, spawn):
    table = node.lock_table("t", capacity=100)
    with table.lock("other"):
        pass
    for next_holder in (spawn.peer, spawn.python):
        victim = spawn.python("table-hold", ns, "t", "order:9")
        token = int(victim.expect("held token=").split()[1].split("=")[1])
        waiter = next_holder("table-acquire", ns, "t", "order:9")
        wait_until(lambda: table.lock("order:9").stats()["waiters"] == 1)  # it sleeps on the key
        victim.kill()
        assert waiter.line() == f"token={token + 1} owner_died=1"
        assert waiter.wait()[0] == 0
    stats = table.stats()["lock_table"]
    assert (stats["recoveries"], stats["live_keys"], stats["dead_holders"]) == (2, 0, 0)
    with table.lock("order:9") as guard:
        assert not guard.owner_died  # told once, to the next holder only
    with table.lock("other") as guard:
        assert not guard.owner_died  # other keys unaffected


def test_a_dead_holder_is_taken_over_by_try_acquire(node, ns, spawn):
    table = node.lock_table("t", capacity=100)
    victim = spawn.python("table-hold", ns, "t", "k")
    token = int(victim.expect("held token=").split()[1].split("=")[1])
    key = table.lock("k")
    assert key.try_acquire() is None
    assert key.stats()["holder"]["pid"] == victim.pid and key.stats()["holder"]["alive"]
    victim.kill()
    assert table.stats()["lock_table"]["dead_holders"] == 1
    guard = key.try_acquire()
    assert (guard.fencing_token, guard.owner_died) == (token + 1, True)
    guard.release()


def test_a_full_table_says_so_and_takes_keys_again_once_one_is_released(node):
    # Capacity 6: one home bucket and one overflow bucket, 16 entries, and
    # every key's window is both: the 17th held key finds no room.
    table = node.lock_table("small", capacity=6)
    guards = [table.lock(f"k{i}").acquire() for i in range(16)]
    expected = ("lock table 'small' is full for this key (capacity 6 held keys; all 16 entries where the key may "
                "live are held): release keys, or recreate the table with a larger capacity")
    for attempt in (lambda k: k.acquire(), lambda k: k.acquire(timeout=5), lambda k: k.try_acquire()):
        with pytest.raises(colo.Error) as e:
            attempt(table.lock("k16"))
        assert (type(e.value), e.value.code, str(e.value)) == (colo.Error, "capacity", expected)
    stats = table.stats()["lock_table"]
    assert (stats["live_keys"], stats["full_refusals"], stats["occupancy"]) == (16, 3, 16 / 6)
    guards[3].release()
    with table.lock("k16") as guard:
        assert guard.held
    for g in guards:
        g.release()
    assert table.stats()["lock_table"]["live_keys"] == 0


def test_keys_names_and_options_are_checked(node):
    table = node.lock_table("t", capacity=10, max_key_bytes=8)
    table.lock("12345678")
    table.lock(b"\x00" * 8)
    for bad, length in (("123456789", 9), (b"", 0), ("", 0), ("é" * 5, 10)):
        with pytest.raises(colo.InvalidArgument) as e:
            table.lock(bad)
        assert str(e.value) == f"lock table 't': a key is 1 to 8 bytes; this one is {length}"
        assert isinstance(e.value, ValueError) and e.value.code == "invalid argument"
    for bad in (42, None, 1.5, ["k"]):
        with pytest.raises(TypeError) as e:
            table.lock(bad)
        assert str(e.value).startswith("a key is a str or a bytes-like object, not ")
    with pytest.raises(colo.InvalidArgument):
        node.lock_table("bad//name")
    with pytest.raises(colo.InvalidArgument) as e:
        node.lock_table("u", capacity=0)
    assert str(e.value) == "lock table 'u': capacity 0 is not in 1 .. 67108864"
    with pytest.raises(colo.InvalidArgument) as e:
        node.lock_table("u", max_key_bytes=257)
    assert str(e.value) == "lock table 'u': max key size 257 is not in 1 .. 256"
    with pytest.raises(colo.InvalidArgument):
        node.lock_table("u", scope="planet")
    with pytest.raises(colo.Mismatch):
        node.lock_table("t", capacity=11, max_key_bytes=8)
    with pytest.raises(colo.AlreadyExists):
        node.lock_table("t", mode="create", capacity=10, max_key_bytes=8)
    with pytest.raises(colo.NotFound):
        node.lock_table("missing", mode="open")
    node.lock("a-lock")
    with pytest.raises(colo.Mismatch):
        node.lock_table("a-lock")
    assert node.lock_table("t", mode="open").lock("k").acquire().held  # open takes it as it is
    with pytest.raises(TypeError):
        table.lock("k").acquire(timeout="1")
    with pytest.raises(ValueError):
        table.lock("k").acquire(timeout=-1)


def test_str_and_bytes_name_the_same_key(node):
    table = node.lock_table("t", capacity=100)
    text, raw = table.lock("é:1"), table.lock("é:1".encode())
    assert (text.key, raw.key, raw.table) == ("é:1", b"\xc3\xa9:1", "t")
    assert repr(text) == "<colo.KeyLock key 'é:1' of lock table 't'>"
    assert repr(raw) == "<colo.KeyLock key '\\xc3\\xa9:1' of lock table 't'>"
    buffer = bytearray(b"k")
    from_buffer = table.lock(buffer)
    buffer[0] = ord("z")  # a key is the bytes the buffer held when it was made
    assert from_buffer.key == b"k"
    with text as guard:
        other = []
        t = threading.Thread(target=lambda: other.append(raw.try_acquire()))
        t.start()
        t.join()
        assert other == [None]
        # The same thread, through another KeyLock of the same key: an error, not a deadlock.
        with pytest.raises(colo.InvalidArgument) as e:
            raw.acquire()
        assert str(e.value) == "lock table 't': this thread already holds the key"
        with pytest.raises(colo.InvalidArgument) as e:
            text.acquire()
        assert str(e.value) == "key 'é:1' of lock table 't' is already held by this thread"
        assert text.guard is guard
    assert text.guard is None and not guard.held


def test_timeouts_guards_and_threads(node):
    table = node.lock_table("t", capacity=100)
    key = table.lock("k")
    guard = key.acquire()
    failures = []

    def release_from_elsewhere():
        try:
            guard.release()
        except RuntimeError as e:
            failures.append(str(e))

    t = threading.Thread(target=release_from_elsewhere)
    t.start()
    t.join()
    assert failures == ["key 'k' of lock table 't' is held by another thread: only the thread that acquired a lock "
                        "may release it"]
    errors = []

    def time_out():
        try:
            table.lock("k").acquire(timeout=0.1)
        except colo.Timeout as e:
            errors.append(str(e))

    t = threading.Thread(target=time_out)
    t.start()
    t.join()
    assert errors == [f"key 'k' of lock table 't' was not acquired within 0.1 s (held by pid {os.getpid()})"]
    key.release()
    with pytest.raises(RuntimeError):
        key.release()
    stats = table.stats()["lock_table"]
    assert (stats["timeouts"], stats["contended_grants"], stats["waiters"]) == (1, 0, 0)  # one timeout, not one per slice
    # A KeyLock dropped while held releases its key.
    table.lock("dropped").acquire()
    assert table.stats()["lock_table"]["live_keys"] == 0


def test_a_thread_blocked_on_a_key_lets_other_threads_run(node):
    table = node.lock_table("t", capacity=100)
    guard = table.lock("k").acquire()
    got = []

    def wait_for_it():
        g = table.lock("k").acquire(timeout=30)
        got.append((g.fencing_token, g.owner_died))
        g.release()

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.05)  # the waiter is in acquire() now
    count = 0
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        count += 1
    assert count > 1000 and got == []
    key_stats = table.lock("k").stats()
    assert (key_stats["waiters"], key_stats["holder"]["pid"], key_stats["fencing_token"]) == (1, os.getpid(), 1)
    blocked = table.stats()["lock_table"]
    assert (blocked["waiters"], blocked["most_contended"]) == (1, [{"key": "k", "waits": 1}])
    guard.release()
    waiter.join(10)
    assert got == [(2, False)]
    stats = table.stats()["lock_table"]
    assert (stats["contended_grants"], stats["waiters"], stats["live_keys"], stats["timeouts"]) == (1, 0, 0, 0)


def test_a_cluster_table_key_and_its_lease_loss(node, ns, spawn):
    table = node.lock_table("c", scope="cluster", capacity=100)
    assert table.scope == "cluster"
    with pytest.raises(colo.InvalidArgument) as e:
        table.lock("order 42")  # a cluster key is part of the backend lock's name
    assert e.value.code == "invalid argument"
    keeper = spawn.peer("table-keeper", ns, "c", 7, stdin=True)
    keeper.expect("keeping")
    guard = table.lock("order:42").acquire(timeout=10)
    assert keeper.line() == "granted c/order:42"
    assert (guard.fencing_token, guard.lease_lost) == ((7 << 20) | 1, False)
    called = threading.Event()
    guard.on_lease_lost(called.set)
    keeper.send("lose")
    keeper.expect("lost")
    assert called.wait(10)
    assert guard.lease_lost
    guard.release()
