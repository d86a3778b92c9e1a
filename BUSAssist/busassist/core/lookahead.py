"""Run the network of frame n + 1 on a thread while the caller writes the outputs of frame n.

Measured on a 120-frame JPEG cine (docs/benchmarks.md): decoding a frame ahead on a thread gained
nothing, because the JPEG decoder holds the GIL. The network is different: onnxruntime and OpenVINO
release the GIL for the whole inference, so while it runs, the calling thread can write frame n's
mask, measure its lesion and decode frame n + 2. Two cores are then busy with one worker process.

Order is kept: results come back in input order, each paired with its input. An exception of the
network for one frame is that frame's, raised when its result is asked for. Only one network call
runs at a time (one worker thread), so a runtime whose sessions are not re-entrant (an OpenVINO
infer request) is safe; ``Lookahead.now`` runs a call on that same thread and waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Optional, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class Lookahead(Generic[Item, Result]):
    """``compute`` (the network) one item ahead of the consumer, on one worker thread."""

    def __init__(self, compute: Callable[[Item], Result]) -> None:
        self.compute = compute
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="busassist-network")

    def __enter__(self) -> Lookahead[Item, Result]:
        return self

    def __exit__(self, *_: object) -> None:
        self._pool.shutdown(wait=True)

    def now(self, item: Item) -> Result:
        """``compute(item)`` on the worker thread, waited for (never two network calls at once)."""
        return self._pool.submit(self.compute, item).result()

    def ahead(
        self, items: Iterable[object], wanted: Callable[[object], bool]
    ) -> Iterator[tuple[object, Optional[Future]]]:
        """Each of ``items`` with the future of ``compute`` on it (None where ``wanted`` said no).

        The next wanted item's computation is started before the previous item is handed out.
        """
        previous: tuple[object, Optional[Future]] | None = None
        for item in items:  # producing the next item (decoding) overlaps the running computation
            future = self._pool.submit(self.compute, item) if wanted(item) else None
            if previous is not None:
                yield previous
            previous = (item, future)
        if previous is not None:
            yield previous
