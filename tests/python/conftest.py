"""Helpers of the Python tests: a scratch namespace per test, and processes
(Python workers, worker.py; C++ peers, colo-py-peer) read line by line with
bounded waits.

Run by Meson (`meson test -C BUILD --suite python`), which sets PYTHONPATH to
the build's broker/python, COLO_PY_PEER and COLO_BIN."""

import collections
import glob
import itertools
import os
import selectors
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.environ.get("COLO_PY_PEER", "")
COLO_BIN = os.environ.get("COLO_BIN", "")
_namespaces = itertools.count()


@pytest.fixture
def ns():
    """A namespace of this test alone; its segments are removed afterwards."""
    name = f"py{os.getpid()}_{next(_namespaces)}"
    yield name
    for path in glob.glob(f"/dev/shm/colo.{name}.*"):
        os.unlink(path)


@pytest.fixture
def node(ns):
    import colo

    return colo.Node(ns)


class Process:
    """A child process whose stdout is read line by line, each wait bounded."""

    def __init__(self, argv, stdin=False):
        self.argv = argv
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._fd = self.proc.stdout.fileno()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)
        self._pending = b""  # read from the pipe, not yet a whole line
        self.lines = []

    @property
    def pid(self):
        return self.proc.pid

    def line(self, timeout=30.0):
        """The next line of output (without the newline); fails the test after `timeout`."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                pytest.fail(f"{self.argv[:3]}: no line within {timeout} s")
            if not self._selector.select(timeout=left):
                continue
            chunk = os.read(self._fd, 65536)  # the raw pipe: select() and a buffered reader disagree
            if not chunk:
                pytest.fail(f"{self.argv[:3]} ended (status {self.proc.wait()}) before a line; stderr: "
                            f"{self.proc.stderr.read()}")
            self._pending += chunk
        text, self._pending = self._pending.split(b"\n", 1)
        self.lines.append(text.decode())
        return self.lines[-1]

    def expect(self, prefix, timeout=30.0):
        text = self.line(timeout)
        assert text.startswith(prefix), f"{self.argv[:3]} said {text!r}, expected {prefix!r}..."
        return text

    def send(self, text):
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close_stdin(self):
        self.proc.stdin.close()

    def signal(self, signum):
        self.proc.send_signal(signum)

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout=60.0):
        """Waits for the exit; returns (status, remaining stdout lines)."""
        out, err = self.proc.communicate(timeout=timeout)
        rest = (self._pending.decode() + out).splitlines()
        self._pending = b""
        self.lines.extend(rest)
        if self.proc.returncode != 0:
            sys.stderr.write(f"{self.argv[:3]} stderr: {err}\n")
        return self.proc.returncode, rest

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture
def spawn():
    """spawn.python(args...) runs worker.py; spawn.peer(args...) runs colo-py-peer. All are ended after the test."""
    started = []

    class Spawner:
        def python(self, *args, stdin=False):
            p = Process([sys.executable, os.path.join(HERE, "worker.py"), *map(str, args)], stdin=stdin)
            started.append(p)
            return p

        def peer(self, *args, stdin=False):
            assert PEER, "COLO_PY_PEER is not set (run through meson test)"
            p = Process([PEER, *map(str, args)], stdin=stdin)
            started.append(p)
            return p

    yield Spawner()
    for p in started:
        p.stop()


def run_increments(spawn, tmp_path, command, args, processes, increments):
    """`processes` Python workers and as many C++ peers run `command ARGS... COUNTER LOG GO increments`
    (lock-increment, table-increment): each adds 1 to a counter file `increments` times under the lock and logs
    "LANG PID TOKEN" while it holds. Checks the counter and who logged what; returns the tokens in grant order."""
    counter, log, go = tmp_path / "counter", tmp_path / "log", tmp_path / "go"
    counter.write_text("0\n")
    argv = (*args, counter, log, go, increments)
    workers = [spawn.python(command, *argv) for _ in range(processes)]
    workers += [spawn.peer(command, *argv) for _ in range(processes)]
    go.touch()
    for w in workers:
        w.expect("done", timeout=240)
    total = 2 * processes * increments
    assert int(counter.read_text()) == total
    # Each holder appended its token while holding: the log is in grant order.
    entries = [line.split() for line in log.read_text().splitlines()]
    assert len(entries) == total
    assert collections.Counter(e[0] for e in entries) == {"py": processes * increments, "cpp": processes * increments}
    assert collections.Counter(int(e[1]) for e in entries) == {w.pid: increments for w in workers}
    return [int(e[2]) for e in entries]
