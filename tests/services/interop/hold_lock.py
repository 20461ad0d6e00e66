#!/usr/bin/python3
# /usr/bin/python3 on purpose: kazoo and redis-py come from Debian's
# python3-kazoo and python3-redis, which only the system interpreter sees (a
# pyenv or venv python3 first on PATH would not find them).
"""Takes a named lock with a backend's own client and standard lock recipe,
so that colo's tests can check that colo and other clients exclude each other.

  hold_lock.py --backend zookeeper|redis|etcd --name NAME --hold SECONDS
  hold_lock.py --backend ... --name NAME --try-acquire TIMEOUT [--hold SECONDS]

The recipes (tests/services/README.md shows what each writes, as observed):
  zookeeper  kazoo Lock on /colo/locks/NAME: an ephemeral sequential child
             <32 hex>__lock__<10 digits>; the lowest sequence holds it.
  redis      redis-py Lock on key colo:lock:NAME: SET key TOKEN NX PX ttl,
             released by a Lua script that deletes the key if it still holds
             TOKEN; the TTL is renewed every ttl/3 while held.
  etcd       `etcdctl lock colo/locks/NAME` (clientv3 concurrency.Mutex): key
             colo/locks/NAME/<lease id in hex> on the session's lease; the
             lowest create revision holds it.

Standard output, one word a line, each flushed:
  acquired   the lock is held (then held for --hold seconds, or until SIGTERM
             or SIGINT)
  released   it was released; exit 0
  busy       --try-acquire only: not acquired within TIMEOUT; exit 3
  lost       the lock was lost while held (session expired, key taken,
             etcdctl ended); exit 1
Exit 1 also when the server cannot be reached within 10 s, 2 on bad arguments.

--ttl SECONDS (default 10): how long the lock outlives this process if it is
killed without releasing: the ZooKeeper session timeout, the etcd lease TTL,
the Redis key's expiry. Killing this script kills its etcdctl with it (SIGKILL,
so that no unlock is sent: the same as a crash).

Endpoints default to $COLO_ZOOKEEPER, $COLO_ETCD, $COLO_REDIS, then to the
ports of tests/services/services.sh.
"""

import argparse
import ctypes
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CONNECT_TIMEOUT = 10.0
# etcd --try-acquire: time allowed to etcdctl to connect and put its key
# before TIMEOUT starts (about 0.1 s here).
ETCDCTL_START = 1.0
EXIT_LOST_OR_NO_SERVER = 1
EXIT_USAGE = 2
EXIT_BUSY = 3

DEFAULT_ENDPOINT = {
    "zookeeper": os.environ.get("COLO_ZOOKEEPER", "127.0.0.1:21810"),
    "etcd": os.environ.get("COLO_ETCD", "http://127.0.0.1:23790"),
    "redis": os.environ.get("COLO_REDIS", "127.0.0.1:63790"),
}

verbose = False
# Set by SIGTERM or SIGINT: give up waiting, or release now.
stop = threading.Event()
# Called too on SIGTERM or SIGINT: wakes a backend's blocking acquire.
on_stop = []


def handle_stop_signal(*_):
    stop.set()
    for hook in on_stop:
        hook()


def say(word):
    print(word, flush=True)


def note(message):
    if verbose:
        print(f"hold_lock: {message}", file=sys.stderr, flush=True)


def fail(message, code=EXIT_LOST_OR_NO_SERVER):
    print(f"hold_lock: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def announce_acquired():
    # Time stamps for checking mutual exclusion from outside (check.sh): taken
    # after acquiring and before releasing, so that for two holders that
    # exclude each other, the first's "releasing" comes before the second's
    # "acquired". CLOCK_MONOTONIC is one clock for all processes.
    note(f"acquired at {time.monotonic_ns()} ns")
    say("acquired")


def announce_releasing():
    note(f"releasing at {time.monotonic_ns()} ns")


def hold(seconds, lost):
    """Waits `seconds` (or until SIGTERM/SIGINT); calls lost() about every
    0.2 s, and if it answers True prints `lost` and exits 1."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or stop.wait(min(left, 0.2)):
            return
        if lost():
            say("lost")
            fail("the lock was lost while held")


# --- ZooKeeper: kazoo's Lock recipe -----------------------------------------

def zookeeper(args):
    from kazoo.client import KazooClient, KazooState
    from kazoo.exceptions import CancelledError, KazooException, LockTimeout

    path = f"/colo/locks/{args.name}"
    zk = KazooClient(hosts=args.endpoint, timeout=args.ttl)
    try:
        zk.start(timeout=CONNECT_TIMEOUT)
    except Exception as e:  # KazooTimeoutError is not a KazooException
        zk.close()
        fail(f"cannot connect to ZooKeeper at {args.endpoint} within {CONNECT_TIMEOUT:.0f} s: {e}")
    session_lost = threading.Event()
    zk.add_listener(lambda state: session_lost.set() if state == KazooState.LOST else None)

    lock = zk.Lock(path, identifier=f"hold_lock.py:{socket.gethostname()}:{os.getpid()}")
    on_stop.append(lock.cancel)
    try:
        if args.try_acquire is None:
            got = lock.acquire()
        else:
            try:
                got = lock.acquire(timeout=args.try_acquire)
            except LockTimeout:
                got = False
    except CancelledError:
        zk.stop()
        zk.close()
        fail("interrupted while waiting for the lock")
    except KazooException as e:
        fail(f"ZooKeeper error while acquiring {path}: {e!r}")
    if not got:
        zk.stop()
        zk.close()
        say("busy")
        sys.exit(EXIT_BUSY)
    note(f"holding {path}/{lock.node} (session 0x{zk.client_id[0]:x})")
    announce_acquired()
    hold(args.hold, session_lost.is_set)
    announce_releasing()
    lock.release()
    say("released")
    zk.stop()
    zk.close()


# --- Redis: redis-py's Lock recipe ------------------------------------------

def redis_backend(args):
    import redis
    from redis.exceptions import LockError

    key = f"colo:lock:{args.name}"
    endpoint = args.endpoint
    if endpoint.startswith(("redis://", "unix://")):
        client = redis.Redis.from_url(endpoint, socket_connect_timeout=2, socket_timeout=5)
    else:
        host, _, port = endpoint.rpartition(":")
        if not host or not port.isdigit():
            fail(f"bad Redis endpoint {endpoint!r} (want HOST:PORT or redis://...)", EXIT_USAGE)
        client = redis.Redis(host=host, port=int(port), socket_connect_timeout=2, socket_timeout=5)
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            client.ping()
            break
        except redis.RedisError as e:
            if time.monotonic() >= deadline:
                fail(f"cannot connect to Redis at {endpoint} within {CONNECT_TIMEOUT:.0f} s: {e}")
            time.sleep(0.2)

    lock = client.lock(key, timeout=args.ttl)
    # redis-py's blocking acquire is this loop (a SET NX every `sleep`, 0.1 s),
    # written out so that SIGTERM can end the wait.
    limit = None if args.try_acquire is None else time.monotonic() + args.try_acquire
    try:
        while not (got := lock.acquire(blocking=False)):
            if limit is not None and time.monotonic() + lock.sleep > limit:
                break
            if stop.wait(lock.sleep):
                fail("interrupted while waiting for the lock")
    except redis.RedisError as e:
        fail(f"Redis error while acquiring {key}: {e!r}")
    if not got:
        say("busy")
        sys.exit(EXIT_BUSY)
    note(f"holding {key} = {lock.local.token.decode()} (PX {int(args.ttl * 1000)})")
    announce_acquired()

    # Renew the TTL every third of it, as a client that holds a Redis lock
    # longer than its TTL must.
    renew_every = args.ttl / 3
    next_renewal = time.monotonic() + renew_every

    def lost():
        nonlocal next_renewal
        if time.monotonic() < next_renewal:
            return False
        next_renewal = time.monotonic() + renew_every
        try:
            return not lock.reacquire()
        except (LockError, redis.RedisError):
            return True

    hold(args.hold, lost)
    announce_releasing()
    try:
        lock.release()
    except (LockError, redis.RedisError) as e:
        say("lost")
        fail(f"could not release {key}: {e!r}")
    say("released")


# --- etcd: etcdctl lock (clientv3 concurrency.Mutex) ------------------------

def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL to etcdctl when this
    # process ends, however it ends; a crash of this script is then a crash
    # of the lock's client (no unlock; the lease runs out after --ttl).
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def etcd(args):
    lock_name = f"colo/locks/{args.name}"
    base = ["etcdctl", f"--endpoints={args.endpoint}"]
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        # Each try bounded by what is left of the 10 s.
        ms = int(max(0.2, min(2.0, deadline - time.monotonic())) * 1000)
        try:
            check = subprocess.run(base + [f"--dial-timeout={ms}ms", f"--command-timeout={ms}ms",
                                           "endpoint", "health"], capture_output=True, text=True)
        except FileNotFoundError:
            fail("no etcdctl (run tests/services/install.sh)")
        if check.returncode == 0:
            break
        if time.monotonic() >= deadline:
            fail(f"cannot connect to etcd at {args.endpoint} within {CONNECT_TIMEOUT:.0f} s: "
                 f"{(check.stderr or check.stdout).strip()}")
        time.sleep(0.2)

    errors = tempfile.TemporaryFile(mode="w+")
    # Without a command, etcdctl lock prints the key it created once it holds
    # the lock, then holds it until SIGINT or SIGTERM, when it deletes the key
    # and exits 0.
    proc = subprocess.Popen(base + ["lock", f"--ttl={max(1, round(args.ttl))}", lock_name],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors,
                            preexec_fn=_die_with_parent)

    def end_etcdctl():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait()

    def etcdctl_errors():
        errors.seek(0)
        return errors.read().strip()

    # Wait for the key line (os.read: no Python buffering between us and it).
    # --try-acquire counts from when etcdctl is connected and has put its key,
    # which this script cannot see: allow it a second for that.
    limit = None if args.try_acquire is None else time.monotonic() + ETCDCTL_START + args.try_acquire
    out = b""
    while b"\n" not in out:
        if stop.is_set():
            end_etcdctl()
            fail("interrupted while waiting for the lock")
        wait = 0.2 if limit is None else max(0.0, min(0.2, limit - time.monotonic()))
        ready, _, _ = select.select([proc.stdout], [], [], wait)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                code = proc.wait()
                fail(f"etcdctl lock ended ({code}) without the lock: {etcdctl_errors()}")
            out += chunk
        elif limit is not None and time.monotonic() >= limit:
            # Given up: SIGTERM makes etcdctl withdraw its waiting key.
            end_etcdctl()
            say("busy")
            sys.exit(EXIT_BUSY)
    key = out.split(b"\n", 1)[0].decode()
    note(f"holding {key} (etcdctl pid {proc.pid})")
    announce_acquired()
    hold(args.hold, lambda: proc.poll() is not None)
    announce_releasing()
    code = end_etcdctl()
    if code != 0:
        say("lost")
        fail(f"etcdctl lock ended with {code} on release: {etcdctl_errors()}")
    say("released")


def main():
    global verbose
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="exit: 0 acquired and released, 1 lost or no server, 2 usage, 3 busy")
    parser.add_argument("--backend", required=True, choices=["zookeeper", "redis", "etcd"])
    parser.add_argument("--name", required=True, help="lock name: letters, digits, '.', '_', '-'")
    parser.add_argument("--hold", type=float, metavar="SECONDS",
                        help="how long to hold the lock (required without --try-acquire, else default 0)")
    parser.add_argument("--try-acquire", type=float, metavar="TIMEOUT",
                        help="wait at most TIMEOUT seconds, then print busy and exit 3")
    parser.add_argument("--ttl", type=float, default=10.0, metavar="SECONDS",
                        help="session timeout / lease TTL / key expiry (default 10)")
    parser.add_argument("--endpoint", help="default: $COLO_ZOOKEEPER, $COLO_ETCD or $COLO_REDIS, "
                        "then the services.sh port")
    parser.add_argument("--verbose", action="store_true", help="say on stderr which node/key/token is held")
    args = parser.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.name) or args.name in (".", ".."):
        parser.error(f"bad --name {args.name!r}: letters, digits, '.', '_', '-' only")
    if args.hold is None:
        if args.try_acquire is None:
            parser.error("--hold SECONDS is required without --try-acquire")
        args.hold = 0.0
    if args.hold < 0 or (args.try_acquire is not None and args.try_acquire < 0):
        parser.error("--hold and --try-acquire take seconds >= 0")
    if args.ttl < 1:
        parser.error("--ttl takes seconds >= 1")
    args.endpoint = args.endpoint or DEFAULT_ENDPOINT[args.backend]
    verbose = args.verbose

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="hold_lock: %(name)s: %(message)s")
    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, handle_stop_signal)
    {"zookeeper": zookeeper, "redis": redis_backend, "etcd": etcd}[args.backend](args)


if __name__ == "__main__":
    main()
