#!/usr/bin/python3
"""colo-bench python: colo from Python against what Python processes use
today, in one run on this machine.

Locks: acquire+release pairs per second in one Python process, uncontended,
the rounds of all rows interleaved:
colo's Lock (`with lock:`), redis-py's Lock and a bare SET NX PX / DEL pair
on a local Redis, fcntl.flock on a file, multiprocessing.Lock. Per key:
colo's lock table (`with table.lock(key):`, keys drawn from 100,000 in a
shuffled order made before the run, or from 1,000 of them, whose objects and
entries stay in the caches; and one KeyLock kept and reused)
against redis-py's Lock on a key of its own per draw.

Queues: messages per second from one Python process to another, at 64 B and
1 KiB: colo's Queue one message per call (publish / `for msg in consumer`)
and in batches (publish_batch of 64 / receive_batch), multiprocessing.Queue,
pyzmq ipc:// PUSH/PULL, a Unix SOCK_SEQPACKET socket pair. Message i is
payload i mod 4096 of a set made before the run (its first 8 bytes are that
index), and the receiver compares the first 8 bytes of every message with
the key it expects, in order; so the Python work around each transport is
the same small loop for all. msg/s = messages / (the first send .. the last
receive). Each cell runs --runs
times, interleaved (run r of every cell, then run r+1, so that a noisy
neighbour slows every transport alike); the median is shown, with the
range.

Goals: the colo lock pair at least 100x redis-py's Lock; the table's
random-key pair at least 100x redis-py's Lock per key; the colo queue at
least 5x multiprocessing.Queue and at least 2x pyzmq. (The table against a
named lock is a goal of the C++ pair, `colo bench lock-table`; here the
rows show it with Python's own costs on top.)

Run as `colo bench python` (or colo-bench python), which finds this script
and the colo module; Redis: --redis HOST:PORT, else $COLO_REDIS, else a
private redis-server started on 127.0.0.1 (stopped at the end); a baseline
whose library or server is missing is reported as skipped."""

import argparse
import fcntl
import json
import multiprocessing
import itertools
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import colo

GOAL_LOCK_VS_REDIS = 100.0
TABLE_KEYS = 100_000       # the key space of the table cells
GOAL_QUEUE_VS_MP = 5.0
GOAL_QUEUE_VS_ZMQ = 2.0
BATCH = 64  # messages per publish_batch


class Skipped(Exception):
    """A baseline that cannot run here (its library or server is missing)."""


# ------------------------------------------------------------------- locks


def pairs_per_second(pair, rounds, seconds_per_round):
    """The median over `rounds` of pairs per second, each round about `seconds_per_round` long."""
    rates = []
    for _ in range(rounds):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds_per_round
        while True:
            for _ in range(100):
                pair()
            n += 100
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(n / (now - start))
    return statistics.median(rates)


class PrivateRedis:
    """redis-server on 127.0.0.1 for this run, without persistence; stopped by stop()."""

    def __init__(self):
        server = shutil.which("redis-server")
        if server is None:
            raise Skipped("redis-server not found (apt-get install redis-server)")
        self.dir = tempfile.mkdtemp(prefix="colo-bench-redis.")
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise Skipped("the private redis-server did not start within 10 s")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def lock_baselines(node, redis_endpoint, tmpdir):
    """[(name, pair function or Skipped)], colo's first."""
    lock = node.lock("bench/lock")

    def colo_pair():
        with lock:
            pass

    table = node.lock_table("bench/table", capacity=TABLE_KEYS, max_key_bytes=24)
    keys = [f"order:{i}" for i in range(TABLE_KEYS)]
    random.Random(42).shuffle(keys)
    table_keys = itertools.cycle(keys)
    cached_keys = itertools.cycle(keys[:1000])  # these keys' objects and entries stay in the caches
    one_key = table.lock("order:one")

    def table_pair():
        with table.lock(next(table_keys)):
            pass

    def cached_table_pair():
        with table.lock(next(cached_keys)):
            pass

    def one_key_pair():
        with one_key:
            pass

    rows = [("colo Lock (with lock:)", colo_pair), (TABLE_ROW, table_pair),
            ("colo table, random keys of 1,000", cached_table_pair), ("colo table, one KeyLock kept", one_key_pair)]
    try:
        import redis

        if redis_endpoint is None:
            raise Skipped("no Redis")
        host, port = redis_endpoint
        client = redis.Redis(host=host, port=port)
        client.ping()
        redis_lock = client.lock("colo-bench:lock", timeout=10)

        def redis_lock_pair():
            redis_lock.acquire()
            redis_lock.release()

        def set_del_pair():
            client.set("colo-bench:setnx", "token", nx=True, px=10000)
            client.delete("colo-bench:setnx")

        redis_keys = itertools.cycle([f"colo-bench:{k}" for k in keys])

        def redis_key_pair():  # a redis-py Lock per key, as per-entity locking does it
            with client.lock(next(redis_keys), timeout=10):
                pass

        rows += [("redis-py Lock", redis_lock_pair), (REDIS_KEY_ROW, redis_key_pair),
                 ("Redis SET NX PX / DEL", set_del_pair)]
    except ImportError:
        rows += [(n, Skipped("redis-py not installed (python3-redis)")) for n in REDIS_ROWS]
    except Skipped as why:
        rows += [(n, why) for n in REDIS_ROWS]
    fd = os.open(os.path.join(tmpdir, "flock"), os.O_RDWR | os.O_CREAT, 0o600)

    def flock_pair():
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)

    mp_lock = multiprocessing.Lock()

    def mp_pair():
        mp_lock.acquire()
        mp_lock.release()

    rows += [("fcntl.flock", flock_pair), ("multiprocessing.Lock", mp_pair)]
    return rows


TABLE_ROW = "colo table, random keys"  # of TABLE_KEYS
REDIS_KEY_ROW = "redis-py Lock, a key per draw"
REDIS_ROWS = ("redis-py Lock", REDIS_KEY_ROW, "Redis SET NX PX / DEL")


def bench_locks(node, redis_endpoint, tmpdir, rounds, seconds):
    """Round r of every row, then round r + 1 (a noisy neighbour slows every row alike); the median per row."""
    rows = lock_baselines(node, redis_endpoint, tmpdir)
    rates = {name: [] for name, pair in rows if not isinstance(pair, Skipped)}
    failed = {}
    for r in range(-1, rounds):  # round -1 warms up (connections, caches)
        for name, pair in rows:
            if name not in rates or name in failed:
                continue
            try:
                if r < 0:
                    for _ in range(100):
                        pair()
                else:
                    rates[name].append(pairs_per_second(pair, 1, seconds))
            except Exception as e:  # a baseline's own failure (redis-py: a lease that ran out on a stalled machine)
                if name.startswith("colo"):
                    raise  # colo's own rows are what the run is for
                failed[name] = f"failed: {e!r}"
    results = []
    for name, pair in rows:
        if isinstance(pair, Skipped) or name in failed:
            results.append({"name": name, "skipped": failed.get(name, str(pair))})
            continue
        rate = statistics.median(rates[name])
        results.append({"name": name, "pairs_per_s": rate, "ns_per_pair": 1e9 / rate})
    return results


# ------------------------------------------------------------------ queues
#
# Each transport: setup(size) in the parent before the two processes fork,
# then receive(count, payloads, ready) in one child (it sets `ready` once
# messages can come) and send(count, payloads) in the other. send returns its start time,
# receive its end time (time.perf_counter is CLOCK_MONOTONIC: one clock for
# every process).


KEYS = 4096  # distinct payloads per size; message i is payload i % KEYS


class Payloads:
    """The payloads of one size, made before the processes fork, and their keys."""

    def __init__(self, size):
        self.items = [i.to_bytes(8, "little") + bytes(size - 8) for i in range(KEYS)]
        self.keys = [p[:8] for p in self.items]


class Mismatch(Exception):
    pass


def mismatch(i, data):
    return Mismatch(f"message {i} came as {int.from_bytes(bytes(data[:8]), 'little')} (mod {KEYS})")


class ColoQueue:
    def __init__(self, ns, batch):
        self.ns, self.batch = ns, batch
        self.name = "colo Queue (batch)" if batch else "colo Queue (per message)"

    def setup(self, size):
        self.queue_name = f"bench/q{size}{'b' if self.batch else ''}"
        colo.Node(self.ns).queue(self.queue_name, capacity=1 << 22, max_message=max(size, 64))

    def send(self, count, payloads):
        producer = colo.Node(self.ns).queue(self.queue_name, mode="open").producer()
        items = payloads.items
        start = time.perf_counter()
        if self.batch:
            for first in range(0, count, BATCH):
                producer.publish_batch([items[i % KEYS] for i in range(first, min(first + BATCH, count))])
        else:
            for i in range(count):
                producer.publish(items[i % KEYS])
        return start

    def receive(self, count, payloads, ready):
        consumer = colo.Node(self.ns).queue(self.queue_name, mode="open").consumer()
        keys = payloads.keys
        ready.set()
        i = 0
        if self.batch:
            while i < count:
                with consumer.receive_batch(max=256) as batch:
                    for view in batch:
                        if view[:8] != keys[i % KEYS]:
                            raise mismatch(i, view)
                        i += 1
        else:
            for msg in consumer:  # each step releases the message before
                if msg.data[:8] != keys[i % KEYS]:
                    raise mismatch(i, msg.data)
                i += 1
                if i == count:
                    break
        return time.perf_counter()


class MultiprocessingQueue:
    name = "multiprocessing.Queue"

    def setup(self, size):
        self.queue = multiprocessing.Queue()

    def send(self, count, payloads):
        items = payloads.items
        start = time.perf_counter()
        for i in range(count):
            self.queue.put(items[i % KEYS])
        self.queue.close()
        self.queue.join_thread()  # its feeder thread has written everything
        return start

    def receive(self, count, payloads, ready):
        keys = payloads.keys
        ready.set()
        for i in range(count):
            data = self.queue.get()
            if data[:8] != keys[i % KEYS]:
                raise mismatch(i, data)
        return time.perf_counter()


class ZeroMQ:
    name = "pyzmq ipc:// PUSH/PULL"

    def __init__(self, tmpdir):
        try:
            import zmq  # noqa: F401
        except ImportError:
            raise Skipped("pyzmq not installed (python3-zmq)")
        self.endpoint = f"ipc://{tmpdir}/zmq-push-pull"

    def setup(self, size):
        pass

    def send(self, count, payloads):
        import zmq

        push = zmq.Context().socket(zmq.PUSH)
        push.connect(self.endpoint)
        items = payloads.items
        start = time.perf_counter()
        for i in range(count):
            push.send(items[i % KEYS])
        push.close(linger=-1)
        return start

    def receive(self, count, payloads, ready):
        import zmq

        pull = zmq.Context().socket(zmq.PULL)
        pull.bind(self.endpoint)
        keys = payloads.keys
        ready.set()
        for i in range(count):
            data = pull.recv()
            if data[:8] != keys[i % KEYS]:
                raise mismatch(i, data)
        return time.perf_counter()


class UnixSocket:
    name = "Unix socket (SOCK_SEQPACKET)"

    def setup(self, size):
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)

    def send(self, count, payloads):
        items = payloads.items
        start = time.perf_counter()
        for i in range(count):
            self.a.send(items[i % KEYS])
        return start

    def receive(self, count, payloads, ready):
        keys = payloads.keys
        size = len(payloads.items[0])
        ready.set()
        for i in range(count):
            data = self.b.recv(size)
            if data[:8] != keys[i % KEYS]:
                raise mismatch(i, data)
        return time.perf_counter()


class Started:
    """The receiver's `ready`: tells the parent, then waits for its go."""

    def __init__(self, ready, go):
        self.ready, self.go = ready, go

    def set(self):
        self.ready.set()
        self.go.wait()


def run_child(role, transport, count, payloads, ready, go, results):
    try:
        if role == "send":
            go.wait()
            results.put(("send", transport.send(count, payloads)))
        else:
            results.put(("receive", transport.receive(count, payloads, Started(ready, go))))
    except Exception as e:  # reported by the parent
        results.put(("error", f"{role}: {type(e).__name__}: {e}"))


def bench_queue(transport, count, payloads):
    ctx = multiprocessing.get_context("fork")
    transport.setup(len(payloads.items[0]))
    ready, go = ctx.Event(), ctx.Event()
    results = ctx.Queue()
    children = [ctx.Process(target=run_child, args=(role, transport, count, payloads, ready, go, results))
                for role in ("receive", "send")]
    for c in children:
        c.start()
    if not ready.wait(30):
        raise RuntimeError(f"{transport.name}: the receiver did not get ready")
    go.set()
    got = {}
    try:
        for _ in range(2):
            role, value = results.get(timeout=600)
            if role == "error":
                raise RuntimeError(f"{transport.name}: {value}")
            got[role] = value
    finally:
        for c in children:
            c.join(5)
            if c.is_alive():
                c.kill()
    return count / (got["receive"] - got["send"])


def bench_queues(transports, sizes, count, runs):
    """{transport name: {size: {"median", "min", "max", "runs"}}}, runs interleaved."""
    rates = {t.name: {s: [] for s in sizes} for t in transports}
    payloads = {s: Payloads(s) for s in sizes}
    for _ in range(runs):
        for t in transports:
            for s in sizes:
                rates[t.name][s].append(bench_queue(t, count, payloads[s]))
    return {name: {s: {"median": statistics.median(r), "min": min(r), "max": max(r), "runs": r}
                   for s, r in cells.items()} for name, cells in rates.items()}


# -------------------------------------------------------------------- output


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "python": platform.python_version()}


def ratio(a, b):
    return a / b if a and b else None


def fmt_ratio(r):
    return "-" if r is None else f"{r:,.2f}x" if r < 1 else f"{r:,.1f}x"


def report(locks, queues, sizes, args):
    m = machine()
    print(f"colo bench python: colo {colo.__version__}, Python {m['python']}, {m['nproc']} CPUs ({m['cpu']}), "
          f"Linux {m['kernel']}")
    print()
    print("Locks: acquire + release pairs in one Python process, uncontended (median of "
          f"{args.rounds} rounds of {args.lock_seconds} s)")
    colo_rate = locks[0].get("pairs_per_s")
    print(f"  {'':32} {'ns/pair':>12} {'pairs/s':>14} {'colo / it':>12}")
    for row in locks:
        if "skipped" in row:
            print(f"  {row['name']:32} skipped: {row['skipped']}")
            continue
        speedup = ratio(colo_rate, row["pairs_per_s"])
        print(f"  {row['name']:32} {row['ns_per_pair']:>12,.0f} {row['pairs_per_s']:>14,.0f} "
              f"{'' if row is locks[0] else fmt_ratio(speedup):>12}")
    print()
    print(f"Queues: messages/s from one Python process to another ({args.messages:,} messages per run, each "
          f"checked; median of {args.runs} runs, min - max)")
    header = "".join(f"{f'{s} B msg/s':>34}" for s in sizes)
    print(f"  {'':30}{header}")
    for name, cells in queues.items():
        line = ""
        for s in sizes:
            c = cells[s]
            text = "skipped" if isinstance(c, str) else f"{c['median']:,.0f} ({c['min']:,.0f} - {c['max']:,.0f})"
            line += f"{text:>34}"
        print(f"  {name:30}{line}")
        for s in sizes:
            if isinstance(cells[s], str):
                print(f"    {s} B: {cells[s]}")
    print()
    print("Ratios (colo / baseline) and goals")
    goals = goal_checks(locks, queues, sizes)
    for g in goals:
        print(f"  {g['what']:62} {fmt_ratio(g['ratio']):>9}  goal >= {g['goal']:g}x: "
              f"{'met' if g['met'] else 'NOT met' if g['ratio'] is not None else 'not measured'}")
    return goals


def goal_checks(locks, queues, sizes):
    by_name = {row["name"]: row.get("pairs_per_s") for row in locks}
    goals = [{"what": "lock pair vs redis-py Lock", "goal": GOAL_LOCK_VS_REDIS,
              "ratio": ratio(by_name["colo Lock (with lock:)"], by_name.get("redis-py Lock"))},
             {"what": "table random-key pair vs redis-py Lock per key", "goal": GOAL_LOCK_VS_REDIS,
              "ratio": ratio(by_name[TABLE_ROW], by_name.get(REDIS_KEY_ROW))}]
    def rate(name, size):
        cell = queues.get(name, {}).get(size)
        return cell["median"] if isinstance(cell, dict) else None

    for form in ("per message", "batch"):
        for s in sizes:
            ours = rate(f"colo Queue ({form})", s)
            goals.append({"what": f"queue {s} B, colo {form}, vs multiprocessing.Queue", "goal": GOAL_QUEUE_VS_MP,
                          "ratio": ratio(ours, rate(MultiprocessingQueue.name, s))})
            goals.append({"what": f"queue {s} B, colo {form}, vs pyzmq", "goal": GOAL_QUEUE_VS_ZMQ,
                          "ratio": ratio(ours, rate(ZeroMQ.name, s))})
    for g in goals:
        g["met"] = g["ratio"] is not None and g["ratio"] >= g["goal"]
    return goals


# ---------------------------------------------------------------------- main


def parse_args(argv):
    prog = os.environ.get("COLO_BENCH_NAME", "colo bench python")
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                epilog="Exit codes: 0 measured (goals met or not), 1 a check failed, 2 usage.")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quick", action="store_true", help="a few seconds: 20,000 messages, short lock rounds")
    p.add_argument("--messages", type=int, default=100_000, help="messages per queue run (default 100,000)")
    p.add_argument("--runs", type=int, default=3, help="runs of each queue cell, the median is shown (default 3)")
    p.add_argument("--sizes", default="64,1024", help="message sizes in bytes, comma-separated (default 64,1024)")
    p.add_argument("--lock-seconds", type=float, default=0.5, help="seconds per lock round (default 0.5)")
    p.add_argument("--rounds", type=int, default=5, help="lock rounds, the median is shown (default 5)")
    p.add_argument("--redis", metavar="HOST:PORT",
                   help="a Redis server to use (default $COLO_REDIS, else a private redis-server)")
    p.add_argument("--ns", default=f"bench_py{os.getpid()}", help="the scratch namespace (removed at the end)")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.runs, args.lock_seconds, args.rounds = 20_000, 1, 0.1, 3
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        p.error(f"--sizes: '{args.sizes}' is not a comma-separated list of byte counts")
    if any(s < 8 or s > 1 << 20 for s in args.sizes):
        p.error("--sizes: each size must be 8 .. 1048576 bytes (a message carries its 8-byte index)")
    if args.messages < 1 or args.runs < 1 or args.rounds < 1 or not args.lock_seconds > 0:
        p.error("--messages, --runs and --rounds must be >= 1, --lock-seconds > 0")
    return args


def main(argv):
    args = parse_args(argv)
    endpoint, private = None, None
    given = args.redis or os.environ.get("COLO_REDIS")
    try:
        if given:
            host, _, port = given.rpartition(":")
            endpoint = (host or "127.0.0.1", int(port))
        else:
            private = PrivateRedis()
            endpoint = ("127.0.0.1", private.port)
    except Skipped as why:
        print(f"colo bench python: Redis baselines skipped: {why}", file=sys.stderr)
    except ValueError:
        print(f"colo bench python: --redis '{given}' is not HOST:PORT", file=sys.stderr)
        return 2
    tmpdir = tempfile.mkdtemp(prefix="colo-bench-py.")
    node = colo.Node(args.ns)
    try:
        locks = bench_locks(node, endpoint, tmpdir, args.rounds, args.lock_seconds)
        transports = [ColoQueue(args.ns, False), ColoQueue(args.ns, True), MultiprocessingQueue()]
        skipped = {}
        try:
            transports.append(ZeroMQ(tmpdir))
        except Skipped as why:
            skipped[ZeroMQ.name] = str(why)
        transports.append(UnixSocket())
        queues = bench_queues(transports, args.sizes, args.messages, args.runs)
        for name, why in skipped.items():
            queues[name] = {s: why for s in args.sizes}
        if args.json:
            print(json.dumps({"machine": machine(), "locks": locks,
                              "queues": {n: {str(s): v for s, v in c.items()} for n, c in queues.items()},
                              "goals": goal_checks(locks, queues, args.sizes)}, indent=2))
        else:
            report(locks, queues, args.sizes, args)
        return 0
    except (RuntimeError, Mismatch) as e:
        print(f"colo bench python: {e}", file=sys.stderr)
        return 1
    finally:
        for name in node.list():
            node.remove(name["name"])
        shutil.rmtree(tmpdir, ignore_errors=True)
        if private is not None:
            private.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
