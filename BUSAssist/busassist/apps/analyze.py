"""``busassist analyze``: the batch engine behind the CLI: inputs found, ordered and analysed in worker processes.

Each input goes through ``core.batch.analyze_file`` (the per-file unit, which Slicer and cluster
engines use too); this module adds the folder lock, the worker pool (a worker that dies never hangs
the run), the progress bar and the summary.
"""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from busassist.constants import MAX_PIXELS
from busassist.core.backends import DEFAULT_BACKEND
from busassist.core.batch import (
    ERROR_COLUMNS,
    RESULT_COLUMNS,
    AnalyzeOptions,
    FileReport,
    analyze_file,
    prepare_output,
    record_error,
)
from busassist.core.identifiers import Redactor
from busassist.core.inference import Analyzer
from busassist.core.io import ALL_FRAMES, FrameSelection, InputError
from busassist.core.outputs import OutputError, hold_folder, resolved
from busassist.core.scan import expand_inputs, series_order

__all__ = [
    "ERROR_COLUMNS",
    "RESULT_COLUMNS",
    "AnalyzeOptions",
    "FileReport",
    "Summary",
    "analyze_file",
    "analyze_paths",
    "expand_inputs",
    "prepare_output",
]


# Worker processes: each creates its Analyzer (onnxruntime session) once.
_WORKER: dict = {}


def _init_worker(
    model_path: str, threads: int, backend: str, out: str, options: AnalyzeOptions, done: set[str]
) -> None:
    analyzer = Analyzer(model_path, threads=threads, backend=backend)
    _WORKER.update(analyzer=analyzer, out=Path(out), options=options, done=done)


def _work(path: Path | InputError) -> FileReport:
    report = analyze_file(path, _WORKER["analyzer"], _WORKER["out"], _WORKER["options"], _WORKER["done"])
    report.rows = []  # already on disk; do not ship them back through the pipe
    return report


#: Files analysed at once per worker process: enough to keep each busy, few enough to retry cheaply.
_IN_FLIGHT_PER_WORKER = 2


def _in_worker_processes(paths: list, workers: int, initargs: tuple, out: Path, account) -> None:
    """Analyse ``paths`` in ``workers`` spawned processes; a worker that dies never hangs the run.

    A worker killed by the OS (out of memory) or by a crashing decoder breaks the pool: the files
    it had in flight are then tried again one at a time in a fresh pool, and a file that kills its
    worker alone is recorded in errors.csv (stage ``analyze``); the rest of the batch goes on.
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")
    queue, suspects = list(reversed(paths)), []  # stacks: pop() takes the next file
    while queue or suspects:
        alone = bool(suspects)  # suspects run one at a time, so a second death names its file
        source = suspects if alone else queue
        limit = 1 if alone else workers * _IN_FLIGHT_PER_WORKER
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=initargs) as pool:
            in_flight: dict = {}
            while source or in_flight:
                while source and len(in_flight) < limit:
                    path = source.pop()
                    in_flight[pool.submit(_work, path)] = path
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                broken = []
                for future in finished:
                    path = in_flight.pop(future)
                    try:
                        account(future.result())
                    except BrokenProcessPool:
                        broken.append(path)
                if broken:
                    broken.extend(in_flight.values())  # lost with the pool
                    if alone:
                        for path in broken:
                            account(_worker_died(path, out))
                    else:
                        suspects.extend(broken)
                    break  # a fresh pool: for the suspects first, then for the rest of the queue


def _worker_died(path, out: Path) -> FileReport:
    """The report (and errors.csv row) of a file whose worker process died while analysing it."""
    report = FileReport(str(path.path if isinstance(path, InputError) else path))
    reason = "the worker process died while analysing this file (killed, out of memory or a decoder crash)"
    record_error(out, report, InputError(report.path, reason, "analyze"), Redactor())
    return report


@dataclass
class Summary:
    frames: int = 0
    skipped: int = 0
    refused: int = 0  # inputs with at least one errors.csv row other than a SEG failure
    seg_failures: int = 0
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when everything was analysed and written, 2 when some input, frame or SEG was refused."""
        return 2 if self.refused or self.seg_failures else 0


def analyze_paths(
    inputs: Iterable[str | Path],
    out: Path,
    analyzer: Analyzer | None = None,
    effective_weight: float | None = None,
    overlays: bool = True,
    any_modality: bool = False,
    log=print,
    frames: FrameSelection = ALL_FRAMES,
    workers: int = 1,
    dicom_seg: bool = True,
    model_path: Path | None = None,
    progress: bool = True,
    volume_formats: tuple[str, ...] = (),
    keep_identifiers: bool = False,
    max_pixels: int = MAX_PIXELS,
    dask: str | None = None,
    backend: str = DEFAULT_BACKEND,
) -> Summary:
    """Analyse every frame of every input, in ``workers`` processes (or on a Dask cluster), resuming ``out``.

    The run holds the folder's lock throughout: a second run into the same ``out`` raises
    ``FolderBusy`` before touching anything; ``OutputError`` when ``out`` cannot be written.
    """
    started = time.perf_counter()
    out = resolved(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = hold_folder(out)
    except OSError as error:
        raise OutputError(
            f"{out}: output folder cannot be written ({error.strerror or error.__class__.__name__})"
        ) from None
    try:
        return _run(
            inputs,
            out,
            analyzer,
            log,
            workers,
            model_path,
            progress,
            started,
            dask,
            AnalyzeOptions(
                effective_weight,
                overlays,
                dicom_seg,
                any_modality,
                frames,
                volume_formats,
                keep_identifiers,
                max_pixels,
            ),
            backend,
        )
    finally:
        lock.release()


def _run(inputs, out, analyzer, log, workers, model_path, progress, started, dask, options, backend) -> Summary:
    done = prepare_output(out)
    paths = series_order(list(expand_inputs(inputs, exclude=out)))
    summary = Summary()
    bar = _progress(len(paths), progress)

    def account(report: FileReport) -> None:
        summary.frames += report.analysed
        summary.skipped += report.skipped
        if any(error.stage != "seg" for error in report.errors):
            summary.refused += 1
        if report.seg_error is not None:
            summary.seg_failures += 1
        for error in report.errors:
            log(f"busassist: {error}", file=sys.stderr)
        for message in report.warnings:
            log(f"busassist: {report.path}: warning: {message}", file=sys.stderr)
        bar.update(1)
        bar.set_postfix(frames=summary.frames, refused=summary.refused)

    if dask:
        from busassist.apps.cluster import run_on_dask
        from busassist.core.scan import study_key

        model = str(model_path or (analyzer.model_path if analyzer else Analyzer(None).model_path))
        run_on_dask(dask, paths, study_key, model, out, options, account, backend)
    elif workers <= 1:
        analyzer = analyzer or Analyzer(model_path, backend=backend)
        for path in paths:
            account(analyze_file(path, analyzer, out, options, done))
    else:
        model = str(model_path or (analyzer.model_path if analyzer else Analyzer(None).model_path))
        _in_worker_processes(paths, workers, (model, 1, backend, str(out), options, done), out, account)
    bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


class _NoBar:
    def update(self, _: int) -> None: ...

    def set_postfix(self, **_: object) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, enabled: bool):
    """A tqdm progress bar (files, rate, ETA) on stderr, or a silent stand-in."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    # disable=None: shown on a terminal, silent when stderr is a pipe or a log file
    return tqdm(total=total, unit="file", desc="analysing", file=sys.stderr, dynamic_ncols=True, disable=None)
