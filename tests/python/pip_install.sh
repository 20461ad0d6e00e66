#!/usr/bin/env bash
# `pip install .` of colo's source tree into a fresh virtual environment made
# from $PYTHON (Debian's python3), then `import colo` and a round trip through
# a lock, a topic and a queue. Needs PyPI (meson-python, Meson and Ninja go
# into pip's isolated build environment) and the Debian packages
# tools/dev/setup.sh installs. Run by Meson in suite `install`.
set -euo pipefail
: "${COLO_SOURCE_ROOT:?}" "${PYTHON:=/usr/bin/python3}"
work=$(mktemp -d /tmp/colo-pip.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
# --no-cache-dir: nothing of this build is kept for the next.
"$work/venv/bin/pip" install --quiet --no-cache-dir "$COLO_SOURCE_ROOT"
cd "$work"  # not the source tree: `import colo` must find the installed package
"$work/venv/bin/python" - <<'PY'
import os
import colo

ns = f"pip{os.getpid()}"
node = colo.Node(ns)
try:
    with node.lock("l") as guard:
        assert guard.fencing_token == 1, guard.fencing_token
    topic = node.topic("t", capacity=1 << 16, max_message=64)
    sub = topic.subscribe()
    topic.publisher().publish(b"hello")
    with sub.receive(timeout=5) as msg:
        assert bytes(msg.data) == b"hello", bytes(msg.data)
    queue = node.queue("q", capacity=1 << 16, max_message=64, acks=True)
    queue.producer().publish(b"job")
    with queue.consumer().receive(timeout=5) as job:
        assert job.deliveries == 1
    print(f"colo {colo.__version__} installed by pip: lock, topic and queue work")
finally:
    for name in os.listdir("/dev/shm"):
        if name.startswith(f"colo.{ns}."):
            os.unlink(os.path.join("/dev/shm", name))
PY
