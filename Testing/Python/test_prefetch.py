"""``core.prefetch``: the decoder runs ahead on a thread without changing what the batch sees."""

from __future__ import annotations

import threading
import time

import pytest

from busassist.core.prefetch import prefetched


def test_order_and_items_are_kept() -> None:
    assert list(prefetched(iter(range(100)), depth=2)) == list(range(100))
    assert list(prefetched([], depth=2)) == []
    assert list(prefetched(range(5), depth=0)) == [0, 1, 2, 3, 4]  # inline


def test_the_producer_runs_ahead_but_no_further_than_depth() -> None:
    produced: list[int] = []

    def source():
        for i in range(10):
            produced.append(i)
            yield i

    iterator = prefetched(source(), depth=2)
    assert next(iterator) == 0
    time.sleep(0.3)  # give the thread time to run as far as the queue allows
    # item 0 consumed, 2 waiting in the queue, one more produced and blocked on the full queue
    assert 2 <= len(produced) <= 4
    assert list(iterator) == list(range(1, 10))


def test_an_exception_arrives_where_its_item_would_have() -> None:
    def source():
        yield 1
        yield 2
        raise ValueError("frame 3 is broken")

    got = []
    with pytest.raises(ValueError, match="frame 3 is broken"):
        for item in prefetched(source(), depth=2):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_stops_and_closes_the_producer() -> None:
    closed = threading.Event()

    def source():
        try:
            yield from range(10_000)
        finally:
            closed.set()  # an open file would be closed here

    iterator = prefetched(source(), depth=2)
    assert next(iterator) == 0
    iterator.close()
    assert closed.wait(5), "the producer's generator was not closed"
    assert not any(t.name == "busassist-prefetch" and t.is_alive() for t in threading.enumerate())
