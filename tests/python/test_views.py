"""Memoryviews into the ring never outlive what they view: after a message
is released (or a loan ends) its views raise; a view kept alive by other
buffers keeps the memory held (BufferError on release) instead of being
left pointing at reused memory; loans cannot be written past their size."""

import pytest

import colo


@pytest.fixture
def channel(node):
    """A queue with acks: its stats say whether the consumer holds a message."""
    queue = node.queue("q", capacity=1 << 14, max_message=128, acks=True)
    return queue, queue.producer(), queue.consumer()


def holding(queue):
    return [r["holding"] for r in queue.stats()["queue"]["readers"]]


def test_a_view_used_after_release_raises(channel):
    topic, pub, sub = channel
    pub.publish(b"abcdef")
    msg = sub.receive(timeout=1)
    view = msg.data
    assert view is msg.data and bytes(view) == b"abcdef"
    view.release()  # released by its user: .data makes another
    assert bytes(msg.data) == b"abcdef"
    view = msg.data
    msg.release()
    assert msg.released
    for use in (lambda: view[0], lambda: bytes(view), lambda: len(view), lambda: view.tobytes(),
                lambda: msg.data, lambda: bytes(msg)):
        with pytest.raises(ValueError):
            use()
    msg.release()  # idempotent


def test_the_next_receive_releases_the_previous_message(channel):
    topic, pub, sub = channel
    pub.publish(b"one")
    pub.publish(b"two")
    first = sub.receive(timeout=1)
    view = first.data
    second = sub.receive(timeout=1)
    assert first.released and not second.released
    with pytest.raises(ValueError):
        view[0]
    assert bytes(second.data) == b"two"


def test_a_slice_alive_keeps_the_message_held(channel):
    topic, pub, sub = channel
    pub.publish(b"0123456789")
    msg = sub.receive(timeout=1)
    part = msg.data[2:5]
    with pytest.raises(BufferError) as e:
        msg.release()
    assert "message 0 of queue 'q' is still viewed by a buffer made from it" in str(e.value)
    assert not msg.released and holding(topic) == [True]
    assert bytes(part) == b"234"  # still the message's bytes: nothing was reused
    pub.publish(b"next")
    with pytest.raises(BufferError):
        sub.receive(timeout=0)  # the reader cannot move on while the slice lives
    del part
    msg.release()
    assert holding(topic) == [False]
    assert bytes(sub.receive(timeout=1).data) == b"next"


def test_an_array_on_the_view_keeps_the_message_held(channel):
    topic, pub, sub = channel
    pub.publish(b"\x01\x02\x03\x04")
    msg = sub.receive(timeout=1)
    exported = memoryview(msg)  # the message is a buffer too
    with pytest.raises(BufferError):
        msg.release()
    exported.release()
    msg.release()
    assert msg.released


def test_a_dropped_message_is_released_when_its_last_view_goes(channel):
    topic, pub, sub = channel
    pub.publish(b"kept")
    view = sub.receive(timeout=1).data  # the Message object is gone at once
    assert bytes(view) == b"kept" and holding(topic) == [True]
    pub.publish(b"next")
    with pytest.raises(BufferError) as e:
        sub.receive(timeout=0)  # the kept view still reads the previous message
    assert "the previous message or loan of queue 'q' is still viewed" in str(e.value)
    del view
    assert holding(topic) == [False]
    assert bytes(sub.receive(timeout=1).data) == b"next"
    pub.publish(b"x")
    assert bytes(sub.receive(timeout=1).data) == b"x"
    assert holding(topic) == [False]  # that Message went with the expression


def test_batch_views_are_released_together(channel):
    topic, pub, sub = channel
    pub.publish_batch([b"a", b"bb", b"ccc"])
    batch = sub.receive_batch(max=10, timeout=1)
    views = list(batch)
    assert [bytes(v) for v in views] == [b"a", b"bb", b"ccc"]
    with pytest.raises(TypeError):
        memoryview(batch)  # a batch is not a buffer itself
    with pytest.raises(BufferError):
        memoryview(sub)  # nor is the reader, whose memoryviews these are
    kept = views[1][1:]
    with pytest.raises(BufferError):
        batch.release()
    del kept
    with batch:
        pass
    assert batch.released
    for v in views:
        with pytest.raises(ValueError):
            v[0]
    with pytest.raises(ValueError):
        batch[0]


def test_a_loan_cannot_be_written_past_its_size(channel):
    topic, pub, sub = channel
    loan = pub.loan(4)
    assert len(loan.data) == 4 and not loan.data.readonly
    with pytest.raises(IndexError):
        loan.data[4] = 1
    with pytest.raises(ValueError):
        loan.data[:] = b"12345"
    with pytest.raises(ValueError):
        loan.data[2:] = b"345"
    loan.data[:] = b"1234"
    view = loan.data
    loan.commit()
    with pytest.raises(ValueError):
        view[0] = 1  # written after commit: refused
    assert bytes(sub.receive(timeout=1).data) == b"1234"
    batch = pub.loan_batch(2, 3)
    with pytest.raises(IndexError):
        batch[0][3] = 0
    with pytest.raises(ValueError):
        batch[1][:] = b"four"
    batch.abandon()


def test_a_loan_with_a_view_alive_is_not_committed(channel):
    topic, pub, sub = channel
    loan = pub.loan(3)
    part = loan.data[0:2]
    part[:] = b"hi"
    with pytest.raises(BufferError):
        loan.commit()
    assert not loan.committed
    del part
    loan.data[2:] = b"!"
    loan.commit()
    assert bytes(sub.receive(timeout=1).data) == b"hi!"


def test_messages_cannot_be_written(channel):
    topic, pub, sub = channel
    pub.publish(b"ro")
    msg = sub.receive(timeout=1)
    with pytest.raises(TypeError):
        msg.data[0] = 1
    with pytest.raises(TypeError):
        colo.Message()
