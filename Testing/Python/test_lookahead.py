"""``core.lookahead``: the next frame's network runs early without changing what the batch sees."""

from __future__ import annotations

import threading
import time

from busassist.core.lookahead import Lookahead


def test_results_come_back_in_order_paired_with_their_inputs() -> None:
    with Lookahead(lambda x: x * 10) as network:
        got = [(item, future.result() if future else None) for item, future in network.ahead(range(6), bool)]
    assert got == [(0, None), (1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]  # 0 was not wanted


def test_the_next_computation_starts_before_the_previous_item_is_handed_out() -> None:
    started: list[int] = []

    def compute(x: int) -> int:
        started.append(x)
        return x

    with Lookahead(compute) as network:
        iterator = network.ahead([1, 2, 3], lambda _: True)
        first, future = next(iterator)
        future.result()
        deadline = time.time() + 5
        while 2 not in started and time.time() < deadline:
            time.sleep(0.01)
        assert first == 1 and 2 in started, "item 2's computation did not start while item 1 was handed out"
        assert [item for item, _ in iterator] == [2, 3]


def test_an_error_belongs_to_its_item_and_the_rest_go_on() -> None:
    def compute(x: int) -> int:
        if x == 2:
            raise ValueError("frame 2 is broken")
        return x

    outcomes = []
    with Lookahead(compute) as network:
        for _, future in network.ahead([1, 2, 3], lambda _: True):
            try:
                outcomes.append(future.result())
            except ValueError as error:
                outcomes.append(str(error))
    assert outcomes == [1, "frame 2 is broken", 3]


def test_never_two_computations_at_once() -> None:
    running, most = [0], [0]
    lock = threading.Lock()

    def compute(x: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return x

    with Lookahead(compute) as network:
        for item, future in network.ahead(range(8), lambda _: True):
            assert network.now(item) == item  # a repair call while the next one runs ahead
            future.result()
    assert most[0] == 1


def test_a_consumer_that_stops_early_leaves_no_thread_behind() -> None:
    with Lookahead(lambda x: x) as network:
        iterator = network.ahead(range(100), lambda _: True)
        next(iterator)
        iterator.close()
    assert not any(t.name.startswith("busassist-network") and t.is_alive() for t in threading.enumerate())


def test_the_batch_gives_the_same_rows_either_way(tmp_path, monkeypatch) -> None:
    """The bundled model on a short cine: identical results.csv with and without looking ahead."""
    import csv

    from hostile_inputs import save, tissue, us_dataset

    from busassist.apps.analyze import analyze_paths
    from busassist.core import batch
    from busassist.core.inference import Analyzer

    cine = save(us_dataset(tissue(240, 320), "cine", frames=6), tmp_path / "cine.dcm")
    analyzer = Analyzer(threads=1, backend="onnxruntime")
    rows = {}
    for flag in (False, True):
        monkeypatch.setattr(batch, "NETWORK_AHEAD", flag)
        out = tmp_path / f"out-{flag}"
        analyze_paths([cine], out, analyzer, overlays=False, dicom_seg=False, progress=False)
        with open(out / "results.csv", newline="") as handle:
            rows[flag] = list(csv.DictReader(handle))
    assert len(rows[True]) == 6 and rows[True] == rows[False]
