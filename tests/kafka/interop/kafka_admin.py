#!/usr/bin/python3
"""What the Kafka tests ask of the broker besides producing and consuming
(which kcat does): topics with a number of partitions, and a group's
committed offsets. Uses python3-confluent-kafka (Debian's), through
/usr/bin/python3 (a pyenv `python3` on PATH may not see Debian's packages).

  kafka_admin.py BOOTSTRAP create TOPIC PARTITIONS     # prints "created"
  kafka_admin.py BOOTSTRAP committed GROUP TOPIC       # one line per partition: "P OFFSET" (-1: none)
  kafka_admin.py BOOTSTRAP visit GROUP TOPIC SECONDS   # joins the group, reads nothing, leaves:
                                                       # prints "assigned N" at each assignment

Exit status: 0 done, 1 the broker refused or did not answer (the reason on stderr).
"""
import sys
import time

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TIMEOUT_S = 30


def create(bootstrap, topic, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=TIMEOUT_S)
    futures[topic].result(timeout=TIMEOUT_S)
    print("created")


def committed(bootstrap, group, topic):
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S)
        partitions = sorted(metadata.topics[topic].partitions)
        offsets = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=TIMEOUT_S)
        for tp in offsets:
            print(tp.partition, tp.offset if tp.offset >= 0 else -1)
    finally:
        consumer.close()


def visit(bootstrap, group, topic, seconds):
    """A member that joins GROUP (two rebalances for the others: when it
    comes and when it goes), pauses whatever it is given at once, so that it
    reads and commits nothing, stays SECONDS and leaves."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "session.timeout.ms": 6000})

    def on_assign(c, partitions):
        c.assign(partitions)
        c.pause(partitions)
        print("assigned", len(partitions), flush=True)

    consumer.subscribe([topic], on_assign=on_assign)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.1)
            if message is not None and not message.error():
                raise RuntimeError(f"read offset {message.offset()} of partition {message.partition()} while paused")
    finally:
        consumer.close()


def main(argv):
    if len(argv) == 5 and argv[2] == "create":
        create(argv[1], argv[3], int(argv[4]))
    elif len(argv) == 5 and argv[2] == "committed":
        committed(argv[1], argv[3], argv[4])
    elif len(argv) == 6 and argv[2] == "visit":
        visit(argv[1], argv[3], argv[4], float(argv[5]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # the broker's refusal or a timeout: one line for the test's message
        print(f"kafka_admin: {e}", file=sys.stderr)
        sys.exit(1)
