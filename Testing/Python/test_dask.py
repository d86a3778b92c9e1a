"""``busassist analyze --dask``: the per-file unit on a ``dask.distributed`` LocalCluster of two worker processes.

The same rows as one process, every frame once, and a worker killed mid-run loses and duplicates
nothing (Dask runs its task again; rows are written once under the CSV's lock).
"""

from __future__ import annotations

import csv
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("dask.distributed", reason="needs dask.distributed (pip install 'busassist[cluster]')")

from hostile_inputs import save, tissue, us_dataset  # noqa: E402
from model_fixtures import FixtureModel  # noqa: E402

pytest_plugins = ["model_fixtures"]
REPO_ROOT = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    values = dict(os.environ)
    values["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "BUSAssist"), values.get("PYTHONPATH", "")])
    values["OMP_NUM_THREADS"] = "1"
    return values


def command(inputs: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "busassist.apps.cli", "analyze", str(inputs), "--out", str(out),
        "--model", str(model), "--quiet", "--no-overlays", *extra,
    ]  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def studies(folder: Path, count: int, frames: int) -> None:
    for i in range(count):
        ds = us_dataset(tissue(seed=i), f"dask-{i}", frames=frames)
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.{1000 + i % 3}"  # three studies
        save(ds, folder / f"im{i:02d}.dcm")


def test_dask_local_cluster_gives_the_rows_of_one_process(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    studies(folder, 6, 2)
    (folder / "junk.bin").write_bytes(b"not an image")
    single = subprocess.run(command(folder, tmp_path / "one", emtnet_onnx.path), env=env(), capture_output=True)
    dask = subprocess.run(
        command(folder, tmp_path / "dask", emtnet_onnx.path, "--dask", "local:2"),
        env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert single.returncode == dask.returncode == 2, dask.stderr
    assert "Traceback" not in dask.stderr

    def table(out: Path) -> dict:
        return {(r["file"], r["frame"]): r["malignancy_probability"] for r in rows(out / "results.csv")}

    assert table(tmp_path / "dask") == table(tmp_path / "one") and len(table(tmp_path / "one")) == 12
    assert [Path(r["file"]).name for r in rows(tmp_path / "dask" / "errors.csv")] == ["junk.bin"]


def descendants(pid: int) -> list[tuple[int, str]]:
    listing = subprocess.run(["ps", "-e", "-ww", "-o", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    children: dict[int, list[tuple[int, str]]] = {}
    for line in listing.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            children.setdefault(int(parts[1]), []).append((int(parts[0]), parts[2]))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child[0])
    return found


def test_a_killed_dask_worker_loses_and_duplicates_nothing(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    studies(folder, 12, 3)
    out = tmp_path / "out"
    run = subprocess.Popen(
        command(folder, out, emtnet_onnx.path, "--dask", "local:2"),
        env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    killed, deadline = None, time.monotonic() + 180
    while killed is None and time.monotonic() < deadline and run.poll() is None:
        if (out / "results.csv").exists() and len(rows(out / "results.csv")) >= 1:
            workers = [pid for pid, args in descendants(run.pid) if "spawn_main" in args or "forkserver" in args]
            if workers:
                os.kill(workers[-1], signal.SIGKILL)
                killed = workers[-1]
        time.sleep(0.05)
    stdout, stderr = run.communicate(timeout=300)
    assert killed is not None, "no worker process was seen to kill"
    assert run.returncode == 0, stderr
    keys = [(r["file"], r["frame"]) for r in rows(out / "results.csv")]
    assert len(keys) == 36 and len(set(keys)) == 36, "every frame once"


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_a_dask_worker_undoes_the_nannys_malloc_trim_threshold() -> None:
    """Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536 (frames 17 % slower); the worker undoes it."""

    def undone_with(value: str | None) -> str:
        environment = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
        if value is not None:
            environment["MALLOC_TRIM_THRESHOLD_"] = value
        code = "from busassist.apps.cluster import restore_malloc_thresholds as r; print(r())"
        done = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    assert undone_with(None) == "False"  # nothing to undo outside a Dask nanny
    assert undone_with("65536") == "True"
    assert undone_with("1048576") == "False"  # a value the user chose is theirs
