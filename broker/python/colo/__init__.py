"""colo: locks, topics and queues in shared memory for the Python and C++
processes of one host, at memory speed and zero copy.

    import colo

    node = colo.Node()                       # namespace $COLO_NS, or "default"
    with node.lock("orders/pool") as guard:  # a robust lock shared with C++ processes
        store.write(guard.fencing_token, batch)

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
    Loan,
    LoanBatch,
    Lock,
    LockGuard,
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
    "Loan",
    "LoanBatch",
    "Lock",
    "LockGuard",
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
