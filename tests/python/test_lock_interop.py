"""Python and C++ processes share one lock: exclusion (a counter in a file),
fencing tokens strictly increasing in grant order across both languages,
and a SIGKILLed Python holder seen as owner_died by the next holder, C++
or Python."""

from conftest import run_increments

PROCESSES = 4  # of each language
INCREMENTS = 2000


def test_python_and_cpp_processes_share_one_lock(node, ns, spawn, tmp_path):
    lock = node.lock("counter")
    tokens = run_increments(spawn, tmp_path, "lock-increment", (ns, "counter"), PROCESSES, INCREMENTS)
    total = 2 * PROCESSES * INCREMENTS
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
