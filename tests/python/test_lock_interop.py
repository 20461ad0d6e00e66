"""Python and C++ processes share one lock: exclusion (a counter in a file),
fencing tokens strictly increasing in grant order across both languages,
and a SIGKILLed Python holder seen as owner_died by the next holder, C++
or Python."""

import collections

PROCESSES = 4  # of each language
INCREMENTS = 2000


def test_python_and_cpp_processes_share_one_lock(node, ns, spawn, tmp_path):
    lock = node.lock("counter")
    counter, log, go = tmp_path / "counter", tmp_path / "log", tmp_path / "go"
    counter.write_text("0\n")
    workers = [spawn.python("lock-increment", ns, "counter", counter, log, go, INCREMENTS) for _ in range(PROCESSES)]
    workers += [spawn.peer("lock-increment", ns, "counter", counter, log, go, INCREMENTS) for _ in range(PROCESSES)]
    go.touch()
    for w in workers:
        w.expect("done", timeout=240)
    total = 2 * PROCESSES * INCREMENTS
    assert int(counter.read_text()) == total
    # Each holder appended its token while holding: the log is in grant order.
    entries = [line.split() for line in log.read_text().splitlines()]
    assert len(entries) == total
    assert collections.Counter(e[0] for e in entries) == {"py": PROCESSES * INCREMENTS, "cpp": PROCESSES * INCREMENTS}
    assert collections.Counter(int(e[1]) for e in entries) == {w.pid: INCREMENTS for w in workers}
    tokens = [int(e[2]) for e in entries]
    assert all(a < b for a, b in zip(tokens, tokens[1:]))
    stats = lock.stats()["lock"]
    assert (stats["grants"], stats["recoveries"], stats["holder"]) == (total, 0, None)


def test_a_killed_python_holder_is_seen_by_the_next_holder(node, ns, spawn):
    lock = node.lock("l")
    for next_holder in (spawn.peer, spawn.python):
        victim = spawn.python("lock-hold", ns, "l")
        token = int(victim.expect("held token=").split()[1].split("=")[1])
        waiter = next_holder("lock-acquire", ns, "l")
        victim.kill()
        assert waiter.line() == f"token={token + 1} owner_died=1"
        assert waiter.wait()[0] == 0
    assert lock.stats()["lock"]["recoveries"] == 2
    with lock as guard:
        assert not guard.owner_died  # told once, to the next holder only
