#!/usr/bin/python3
# /usr/bin/python3 on purpose: kazoo and redis-py come from Debian's
# python3-kazoo and python3-redis, which only the system interpreter sees.
"""Increments per-key counter files under per-key locks taken with a
backend's own client and standard lock recipe, on the names colod gives the
keys of a cluster-scope lock table (TABLE/KEY), so that colo's tests can
check that table keys and other clients exclude each other key by key.

  increment_keys.py --backend zookeeper|redis|etcd --table TABLE
                    --keys K1,K2,... --count N --counter-dir DIR

N times, key K[i mod number of keys]: take the lock TABLE/KEY, read
DIR/KEY's number, write it + 1, release. Prints "done N" and exits 0; exits 1
if the server cannot be reached within 10 s or a lock call fails.

  zookeeper  kazoo Lock on /colo/locks/TABLE/KEY
  redis      redis-py Lock on key colo:lock:TABLE/KEY (SET NX PX, Lua release)
  etcd       `etcdctl lock colo/locks/TABLE/KEY CMD`: etcdctl runs the
             increment while it holds the lock

Endpoints default to $COLO_ZOOKEEPER, $COLO_ETCD, $COLO_REDIS, then to the
ports of tests/services/services.sh.
"""

import argparse
import os
import subprocess
import sys
import time

DEFAULT_ENDPOINT = {
    "zookeeper": os.environ.get("COLO_ZOOKEEPER", "127.0.0.1:21810"),
    "etcd": os.environ.get("COLO_ETCD", "http://127.0.0.1:23790"),
    "redis": os.environ.get("COLO_REDIS", "127.0.0.1:63790"),
}
TTL = 10


def fail(message):
    print(f"increment_keys: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def increment(path):
    try:
        with open(path) as f:
            value = int(f.read().strip() or 0)
    except FileNotFoundError:
        value = 0
    with open(path, "w") as f:
        f.write(f"{value + 1}\n")


def run_zookeeper(args, keys):
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=args.endpoint, timeout=TTL)
    try:
        zk.start(timeout=10)
    except Exception as e:
        fail(f"cannot connect to ZooKeeper at {args.endpoint}: {e}")
    for i in range(args.count):
        key = keys[i % len(keys)]
        lock = zk.Lock(f"/colo/locks/{args.table}/{key}", identifier=f"increment_keys.py:{os.getpid()}")
        lock.acquire()
        increment(os.path.join(args.counter_dir, key))
        lock.release()
    zk.stop()
    zk.close()


def run_redis(args, keys):
    import redis
    host, _, port = args.endpoint.rpartition(":")
    client = redis.Redis(host=host, port=int(port), socket_connect_timeout=2, socket_timeout=5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError as e:
            if time.monotonic() >= deadline:
                fail(f"cannot connect to Redis at {args.endpoint}: {e}")
            time.sleep(0.2)
    for i in range(args.count):
        key = keys[i % len(keys)]
        lock = client.lock(f"colo:lock:{args.table}/{key}", timeout=TTL, sleep=0.01)
        lock.acquire()
        increment(os.path.join(args.counter_dir, key))
        lock.release()


def run_etcd(args, keys):
    for i in range(args.count):
        key = keys[i % len(keys)]
        path = os.path.join(args.counter_dir, key)
        script = f'n=$(cat "{path}" 2>/dev/null || echo 0); echo $((n + 1)) > "{path}"'
        done = subprocess.run(["etcdctl", f"--endpoints={args.endpoint}", "lock", f"--ttl={TTL}",
                               f"colo/locks/{args.table}/{key}", "--", "sh", "-c", script],
                              capture_output=True, text=True)
        if done.returncode != 0:
            fail(f"etcdctl lock on {key} ended with {done.returncode}: {done.stderr.strip()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", required=True, choices=["zookeeper", "redis", "etcd"])
    parser.add_argument("--table", required=True)
    parser.add_argument("--keys", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--counter-dir", required=True)
    parser.add_argument("--endpoint")
    args = parser.parse_args()
    args.endpoint = args.endpoint or DEFAULT_ENDPOINT[args.backend]
    keys = args.keys.split(",")
    {"zookeeper": run_zookeeper, "redis": run_redis, "etcd": run_etcd}[args.backend](args, keys)
    print(f"done {args.count}", flush=True)


if __name__ == "__main__":
    main()
