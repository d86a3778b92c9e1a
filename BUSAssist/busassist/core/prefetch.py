"""Run a producer (the frame decoder) one step ahead of its consumer, on a thread.

Decoding a JPEG frame (pylibjpeg), converting it and the network run (onnxruntime, OpenVINO) all
release the GIL for most of their time, so while the network works on frame n a thread can decode
frame n + 1: the batch's two stages overlap instead of taking turns. Order is kept, the queue is
bounded (at most ``depth`` frames wait, so memory stays a few frames), every exception of the
producer reaches the consumer at the point where the item would have been, and a consumer that
stops early stops the producer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


class _Raised:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items`` in order, produced up to ``depth`` ahead on a daemon thread (``depth`` < 1: inline)."""
    if depth < 1:
        yield from items
        return
    waiting: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                waiting.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    return
        except BaseException as error:  # handed to the consumer, which raises it in its own thread
            put(_Raised(error))
            return
        finally:
            close = getattr(iterator, "close", None)
            if close is not None and stop.is_set():
                close()  # a generator's finally blocks (open files) run when the consumer gave up
        put(_DONE)

    worker = threading.Thread(target=produce, name="busassist-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            value = waiting.get()
            if value is _DONE:
                return
            if isinstance(value, _Raised):
                raise value.error
            yield value
    finally:
        stop.set()
        worker.join(timeout=5)
