"""Stats as dicts: Lock.stats(), LockTable.stats(), Topic.stats(),
Queue.stats(), Node.info() and Node.list() hold exactly what `colo stat NAME --json` and
`colo ls --json` print for the same objects."""

import json
import os
import subprocess

import pytest

import colo

COLO_BIN = os.environ.get("COLO_BIN", "")


def colo_json(ns, *args):
    assert COLO_BIN, "COLO_BIN is not set (run through meson test)"
    done = subprocess.run([COLO_BIN, "--ns", ns, *args, "--json"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def colo_stat(ns, name):
    return colo_json(ns, "stat", name, "--interval", "0")


def test_lock_stats_match_colo_stat(node, ns):
    lock = node.lock("orders/pool")
    for _ in range(3):
        with lock:
            pass
    mine = lock.stats()
    assert mine == colo_stat(ns, "orders/pool")
    assert (mine["kind"], mine["lock"]["grants"], mine["lock"]["holder"]) == ("lock", 3, None)


def test_held_lock_stats_match_colo_stat(node, ns):
    lock = node.lock("l")
    with lock:
        mine, theirs = lock.stats(), colo_stat(ns, "l")
    # The time held grows between the two looks.
    for d in (mine, theirs):
        assert d["lock"]["holder"].pop("held_for_ns") >= 0
    assert mine == theirs
    assert mine["lock"]["holder"]["pid"] == os.getpid()


def test_lock_table_stats_match_colo_stat(node, ns):
    table = node.lock_table("orders", capacity=1000, max_key_bytes=32)
    for i in range(5):
        with table.lock(f"order:{i}"):
            pass
    held = [table.lock("order:1").acquire(), table.lock(b"order:2").acquire()]
    mine = table.stats()
    assert mine == colo_stat(ns, "orders")
    t = mine["lock_table"]
    assert (mine["kind"], t["capacity"], t["max_key_bytes"], t["live_keys"], t["grants"]) == (
        "lock-table", 1000, 32, 2, 7)
    assert t["occupancy"] == 2 / 1000
    for g in held:
        g.release()


def test_topic_stats_match_colo_stat(node, ns):
    topic = node.topic("prices", capacity=1 << 16, max_message=512, history=4)
    pub = topic.publisher()
    sub = topic.subscribe()
    lossy = topic.subscribe(backpressure="lossy")
    pub.publish_batch([bytes(i) for i in range(10)])
    sub.receive_batch(max=4).release()
    mine = topic.stats()
    assert mine == colo_stat(ns, "prices")
    t = mine["topic"]
    assert (t["published"], t["history"], len(t["publishers"]), [r["mode"] for r in t["readers"]]) == (
        10, 4, 1, ["block", "lossy"])
    assert [r["lag"] for r in t["readers"]] == [6, 10]
    lossy.close()


def test_queue_stats_match_colo_stat(node, ns):
    queue = node.queue("jobs", capacity=1 << 16, max_message=512, acks=True, max_deliveries=4)
    producer = queue.producer()
    consumer = queue.consumer()
    for i in range(5):
        producer.publish(b"job %d" % i)
    held = consumer.receive(timeout=1)
    mine = queue.stats()
    assert mine == colo_stat(ns, "jobs")
    q = mine["queue"]
    assert (q["acks"], q["max_deliveries"], q["published"], q["depth"]) == (True, 4, 5, 4)
    assert [r["holding"] for r in q["readers"]] == [True]
    held.release()


def test_node_list_and_info_match_colo_ls_and_stat(node, ns):
    node.lock("a")
    node.topic("b", capacity=1 << 16, max_message=1024)
    node.queue("c", capacity=1 << 16, max_message=1024)
    assert node.list() == colo_json(ns, "ls")["objects"]
    assert node.info("b") == colo_stat(ns, "b")
    with pytest.raises(colo.NotFound):
        node.info("nothing")
