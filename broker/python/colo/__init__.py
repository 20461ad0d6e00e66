"""colo: locks, lock tables, topics and queues in shared memory for the
Python and C++ processes of one host, at memory speed and zero copy.

    import colo

    node = colo.Node()                       # namespace $COLO_NS, or "default"
    with node.lock("orders/pool") as guard:  # a robust lock shared with C++ processes
        store.write(guard.fencing_token, batch)

    orders = node.lock_table("orders", capacity=1_000_000)
    with orders.lock(f"order:{order_id}") as guard:  # a lock per key, millions of keys
        ship(order_id, guard.fencing_token)

    jobs = node.queue("jobs", acks=True)
    with jobs.consumer() as consumer:
        for job in consumer:                 # waits; Ctrl-C interrupts
            with job:                        # released (acknowledged) at the end
                run(job.data)                # a read-only memoryview into the ring

docs/python.md in colo's source has the whole story; every class and method
has a docstring.
"""

from ._colo import (
    AlreadyExists,
    Busy,
    Consumer,
    Corrupt,
    Error,
    InvalidArgument,
    KeyLock,
    Loan,
    LoanBatch,
    Lock,
    LockGuard,
    LockTable,
    Message,
    MessageBatch,
    Mismatch,
    Node,
    NotFound,
    NotReady,
    PermissionDenied,
    Publisher,
    Queue,
    Reader,
    Subscriber,
    Timeout,
    Topic,
    __version__,
)

__all__ = [
    "AlreadyExists",
    "Busy",
    "Consumer",
    "Corrupt",
    "Error",
    "InvalidArgument",
    "KeyLock",
    "Loan",
    "LoanBatch",
    "Lock",
    "LockGuard",
    "LockTable",
    "Message",
    "MessageBatch",
    "Mismatch",
    "Node",
    "NotFound",
    "NotReady",
    "PermissionDenied",
    "Publisher",
    "Queue",
    "Reader",
    "Subscriber",
    "Timeout",
    "Topic",
    "__version__",
]
