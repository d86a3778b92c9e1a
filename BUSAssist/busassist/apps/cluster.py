"""``busassist analyze --dask ADDRESS``: the same per-file unit on a ``dask.distributed`` cluster.

Files are grouped by study (a study's files go to one task, so one worker reads them together;
a study too big for one task is split so that every worker has work)
and each task runs ``core.batch.analyze_file`` on its files with the worker's own ``Analyzer``
(one onnxruntime session per worker process, made on its first task). Every worker writes into
the one ``--out`` (a folder all workers can reach: the local disk for ``local:N``, a shared file
system on a cluster): rows are appended under the CSV's lock and only when their resume key is not
there yet, masks and SEGs are renamed into place, so a worker killed mid-task loses nothing and
duplicates nothing: Dask runs the task again elsewhere and what was written stays written once.

``ADDRESS`` is ``local:N`` (a ``LocalCluster`` of N one-thread worker processes on this machine) or
a scheduler address (``tcp://host:8786``) of a cluster started elsewhere (dask-jobqueue on SLURM,
dask-kubernetes; see docs/batch.md).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

from busassist.core.backends import DEFAULT_BACKEND
from busassist.core.batch import AnalyzeOptions, FileReport, analyze_file, prepare_output
from busassist.core.io import InputError

#: Per worker process: the Analyzer (one session) and the resume keys of each output folder.
_WORKER_STATE: dict = {}


def study_groups(paths: list, study_of: Callable[[object], str], largest: int | None = None) -> list[list]:
    """Consecutive paths of one study as one group (the list comes ordered by study already).

    A study of more than ``largest`` files is split into groups of at most ``largest``, so that one
    big study (or an archive of one study) still keeps every worker busy.
    """
    groups: list[list] = []
    current = None
    for path in paths:
        study = study_of(path)
        full = largest is not None and groups and len(groups[-1]) >= largest
        if not groups or study != current or study == "~" or full:
            groups.append([])
            current = study
        groups[-1].append(path)
    return groups


#: glibc's mallopt parameters, and the values its dynamic thresholds settle at on 64-bit Linux.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_SETTLED_MMAP_THRESHOLD, _SETTLED_TRIM_THRESHOLD = 32 << 20, 64 << 20
#: The value Dask's nanny sets (``distributed.nanny.pre-spawn-environ``); any other value is left alone.
_DASK_TRIM_THRESHOLD = "65536"


def restore_malloc_thresholds() -> bool:
    """Undo Dask's ``MALLOC_TRIM_THRESHOLD_=65536`` in this worker process; True when it was undone.

    Glibc's dynamic thresholds rise to (at most) those values as the process frees large blocks; a
    worker freeing frame-sized arrays gets there within its first frames.

    Dask's nanny starts workers with that variable so they hand freed memory back at once. Setting it
    also freezes glibc's mmap threshold at 128 KB, so every frame-sized array was mapped, zero-filled
    and unmapped again: 1,200 frames took 35.6 s on two Dask workers against 29.7 s without it. Setting
    the thresholds where glibc's own dynamic ones settle (mmap 32 MB, trim 64 MB) gives the speed back
    (30.2 s), on a ``local:N`` cluster and a remote one alike, for 17 MB more peak memory per worker
    (249 -> 266 MB). Measured with ``bench/benchmark.py``'s frames; docs/benchmarks.md.
    """
    if os.environ.get("MALLOC_TRIM_THRESHOLD_") != _DASK_TRIM_THRESHOLD:  # absent, or a user's own choice
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _SETTLED_MMAP_THRESHOLD)
            and libc.mallopt(_M_TRIM_THRESHOLD, _SETTLED_TRIM_THRESHOLD)
        )
    except (OSError, AttributeError):  # not glibc: the variable means nothing there
        return False


def analyse_group(
    paths: list, model_path: str, threads: int, out: str, options: AnalyzeOptions, backend: str = DEFAULT_BACKEND
) -> list[FileReport]:
    """One Dask task: every file of one study, with this worker's Analyzer (made once per process)."""
    from busassist.core.inference import Analyzer

    analyzer = _WORKER_STATE.get(("analyzer", model_path, backend))
    if analyzer is None:
        restore_malloc_thresholds()
        analyzer = Analyzer(model_path, threads=threads, backend=backend)
        _WORKER_STATE[("analyzer", model_path, backend)] = analyzer
    done = _WORKER_STATE.get(("done", out))
    if done is None:
        done = _WORKER_STATE[("done", out)] = prepare_output(Path(out))
    reports = []
    for path in paths:
        report = analyze_file(path, analyzer, out, options, done)
        report.rows = []  # on disk already; keep the result small
        reports.append(report)
    return reports


def client_for(address: str):
    """A ``dask.distributed.Client``: a new ``LocalCluster`` for ``local:N``, else the scheduler at ``address``."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise RuntimeError("--dask needs dask.distributed (pip install 'busassist[cluster]')") from None
    if address.startswith("local:"):
        try:
            workers = int(address.split(":", 1)[1])
        except ValueError:
            raise RuntimeError(f"--dask {address}: use local:N with N worker processes") from None
        cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster)
    try:
        return Client(address, timeout="20s")
    except (OSError, TimeoutError) as error:
        raise RuntimeError(f"--dask {address}: cannot reach the Dask scheduler ({error.__class__.__name__})") from None


def run_on_dask(
    address: str,
    paths: list,
    study_of: Callable[[object], str],
    model_path: str,
    out: Path,
    options: AnalyzeOptions,
    account: Callable[[FileReport], None],
    backend: str = DEFAULT_BACKEND,
) -> None:
    """Analyse ``paths`` on the cluster, accounting each file's report as its study's task finishes."""
    from dask.distributed import as_completed

    from busassist.core.batch import record_error
    from busassist.core.identifiers import Redactor

    quiet = logging.getLogger("distributed")  # Dask's own chatter (retries, shutdown) is not the user's
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        client = client_for(address)
    except Exception:
        quiet.setLevel(level)
        raise
    try:
        workers = max(1, len(client.nthreads()))
        largest = max(1, math.ceil(len(paths) / (8 * workers)))  # about eight tasks per worker at least
        groups = study_groups(paths, study_of, largest)
        pending = {
            client.submit(analyse_group, group, model_path, 1, str(out), options, backend, pure=False, retries=2): group
            for group in groups
        }
        for future in as_completed(list(pending)):
            try:
                reports = future.result()
            except Exception as error:  # failed on every try: its files are refused, the rest go on
                reports = []
                for path in pending[future]:
                    name = path.path if isinstance(path, InputError) else str(path)
                    report = FileReport(name)
                    reason = f"cluster task failed on every try ({error.__class__.__name__})"
                    record_error(out, report, InputError(name, reason, "analyze"), Redactor())
                    reports.append(report)
            for report in reports:
                account(report)
    finally:
        cluster = getattr(client, "cluster", None)
        try:
            client.close()
            if cluster is not None:
                cluster.close()
        finally:
            quiet.setLevel(level)
