"""The batch's guarantee against inputs made to be hostile (issue 13).

One bad input costs one errors.csv row, never the run, never a byte outside ``--out``, never a
patient identifier in a name, CSV or log. The inputs come from ``hostile_inputs.py``; the batch
runs in a subprocess, so a hang is a timeout and the peak memory is the child's own.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.register_assert_rewrite("model_fixtures")

from hostile_inputs import CASES, SECRETS, build_all, save, tissue, us_dataset  # noqa: E402
from model_fixtures import FixtureModel  # noqa: E402

from busassist.core.batch import AnalyzeOptions, analyze_file, prepare_output  # noqa: E402
from busassist.core.identifiers import Redactor, checked_uid, is_valid_uid  # noqa: E402
from busassist.core.inference import Analyzer  # noqa: E402
from busassist.core.io import FrameSelection, InputError, regular_file_problem  # noqa: E402
from busassist.core.limits import declared_stream_size  # noqa: E402
from busassist.core.outputs import OutputError, inside  # noqa: E402
from busassist.core.scan import expand_inputs  # noqa: E402

pytest_plugins = ["model_fixtures"]
REPO_ROOT = Path(__file__).resolve().parents[2]
#: The child reports its own peak memory (VmHWM: ru_maxrss would keep the forking pytest's peak across
#: exec); the batch runs with the package from this source tree.
RUN_CLI = (
    "import sys; from busassist.apps.cli import main; code = main(sys.argv[1:]); "
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
    "print('MAXRSS_KB', hwm[0].split()[1]); sys.exit(code)"
)
RSS_LIMIT_MB = 600


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "BUSAssist"), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(args: list[str], timeout: float = 240, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=cwd,
        errors="backslashreplace",
    )


def start_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def peak_mb(stdout: str) -> float:
    line = next(line for line in stdout.splitlines() if line.startswith("MAXRSS_KB"))
    return int(line.split()[1]) / 1024


def good_files(folder: Path, count: int, frames: int = 1) -> list[Path]:
    return [
        save(us_dataset(tissue(seed=i), f"good-{i}", frames=frames), folder / f"good-{i}.dcm") for i in range(count)
    ]


def analyse_args(inputs: list[Path], out: Path, model: Path, *extra: str) -> list[str]:
    # onnxruntime is the default; named anyway, since these tests are about inputs and outputs, never runtimes.
    common = ["--quiet", "--threads", "1", "--backend", "onnxruntime"]
    return ["analyze", *map(str, inputs), "--out", str(out), "--model", str(model), *common, *extra]


# ---------------------------------------------------------------------------------------------
# The whole hostile folder in one run


@pytest.fixture(scope="module")
def hostile_run(emtnet_onnx: FixtureModel, tmp_path_factory: pytest.TempPathFactory):
    """The hostile folder plus two good files, analysed once (and rerun once) in a child process."""
    root = tmp_path_factory.mktemp("batch")
    inputs = build_all(root / "in")
    good = good_files(root / "in" / "good", 2)
    out = root / "out"
    first = run_cli(analyse_args([root / "in"], out, emtnet_onnx.path))
    snapshot = {name: (out / name).read_bytes() for name in ("results.csv", "errors.csv")}
    rerun = run_cli(analyse_args([root / "in"], out, emtnet_onnx.path))
    return root, inputs, good, out, first, rerun, snapshot


def file_of(rows_: list[dict[str, str]], path: Path) -> list[dict[str, str]]:
    return [row for row in rows_ if Path(row["file"]) == path]


def test_every_hostile_input_ends_in_results_or_errors_and_the_run_goes_on(hostile_run) -> None:
    root, inputs, good, out, first, _, _ = hostile_run
    assert first.returncode == 2, first.stderr
    assert "Traceback" not in first.stdout + first.stderr
    results, errors = rows(out / "results.csv"), rows(out / "errors.csv")
    for path in good:
        assert len(file_of(results, path)) == 1, "good files beside hostile ones are analysed"
    for case in CASES:
        path = inputs[case.name]
        mine = [e for e in errors if Path(e["file"]) == path or Path(e["file"]).parent == path.parent != root / "in"]
        if case.outcome == "refused":
            assert mine, f"{case.name}: no errors.csv row"
            assert not file_of(results, path), f"{case.name}: refused, yet a result row"
            assert all(e["stage"] == case.stage for e in mine), (case.name, mine)
            assert any(case.reason.lower() in e["reason"].lower() for e in mine), (case.name, mine)
        else:
            assert file_of(results, path), f"{case.name}: analysed, yet no result row ({mine})"
            assert [e["stage"] for e in mine] == ([case.stage] if case.stage else []), (case.name, mine)
    for error in errors:
        assert error["reason"] and "\n" not in error["reason"] and error["stage"]
    for line in first.stderr.splitlines():
        assert line.startswith("busassist: "), f"unexpected stderr line: {line}"


def test_dicomdir_members_missing_or_outside_are_each_reported(hostile_run) -> None:
    root, inputs, _, out, _, _, _ = hostile_run
    errors = rows(out / "errors.csv")
    dicomdir = inputs["dicomdir"]
    reasons = [e["reason"] for e in errors if e["stage"] == "scan" and dicomdir.parent in Path(e["file"]).parents]
    reasons += [e["reason"] for e in errors if Path(e["file"]) == dicomdir]
    assert any("no such file" in r for r in reasons) and any("leaves the DICOMDIR" in r for r in reasons), reasons


def test_nothing_is_written_outside_out_and_no_identifier_anywhere(hostile_run) -> None:
    root, _, _, out, first, _, _ = hostile_run
    outside = [p for p in root.rglob("*") if p.is_file() and out not in p.parents and root / "in" not in p.parents]
    assert not outside, f"files written outside --out: {outside}"
    assert not list(root.parent.glob("escape*")) and not list(root.glob("escape*"))
    names = [str(p.relative_to(out)) for p in out.rglob("*")]
    texts = {
        "results.csv": (out / "results.csv").read_text(),
        "errors.csv": (out / "errors.csv").read_text(),
        "stdout": first.stdout,
        "stderr": first.stderr,
    }
    for secret in SECRETS:
        assert not [n for n in names if secret.lower() in n.lower()], secret
        for where, text in texts.items():
            assert secret.lower() not in text.lower(), f"{secret!r} in {where}"
    for name in names:  # every output name is made of UIDs, hashes and our own words
        assert all(c.isalnum() or c in "._-/" for c in name), name


def test_invalid_uids_get_hash_names_and_a_note(hostile_run) -> None:
    _, inputs, _, out, _, _, _ = hostile_run
    results = rows(out / "results.csv")
    for name in ("uid-null-byte", "uid-slash", "uid-260", "uid-dotdot-sop", "uid-is-name", "missing-sop-uid"):
        (row,) = file_of(results, inputs[name])
        assert row["sop_instance_uid"] == "" and row["seg_path"] == ""
        assert "SOPInstanceUID" in row["notes"]
        assert Path(row["mask_path"]).name.startswith("file_")
    (row,) = file_of(results, inputs["region-cm-no-delta"])
    assert row["measurement_units"] == "px" and "pixels" in row["notes"]


def test_declared_huge_inputs_stay_within_the_memory_budget(hostile_run) -> None:
    _, _, _, _, first, rerun, _ = hostile_run
    assert peak_mb(first.stdout) < RSS_LIMIT_MB
    assert peak_mb(rerun.stdout) < RSS_LIMIT_MB


def test_a_rerun_skips_everything_and_records_nothing_twice(hostile_run) -> None:
    _, _, _, out, _, rerun, snapshot = hostile_run
    assert rerun.returncode == 2
    assert "analysed 0 frame(s)" in rerun.stdout
    for name, before in snapshot.items():
        assert (out / name).read_bytes() == before, f"{name} changed on a rerun"


def test_every_seg_opens_with_highdicom_and_has_the_required_attributes(hostile_run) -> None:
    import highdicom as hd

    _, _, _, out, _, _, _ = hostile_run
    segs = list(out.glob("seg/**/*.seg.dcm"))
    assert len(segs) >= 8
    for path in segs:
        seg = hd.seg.segread(path)
        assert "PatientOrientation" in seg  # Type 2C: present, empty is allowed
        assert seg.PatientBirthDate in ("", None)  # the invalid 1961-07-23 is not copied
        for group in seg.SharedFunctionalGroupsSequence:
            for measures in group.get("PixelMeasuresSequence", []):
                assert "SliceThickness" in measures and "PixelSpacing" in measures
    for row in rows(out / "results.csv"):
        assert (row["seg_path"] == "") or (out / row["seg_path"]).is_file()


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not installed")
def test_every_seg_passes_dciodvfy(hostile_run) -> None:
    _, _, _, out, _, _, _ = hostile_run
    for path in out.glob("seg/**/*.seg.dcm"):
        report = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"


def test_two_workers_account_for_every_hostile_input_the_same_way(hostile_run, emtnet_onnx, tmp_path) -> None:
    root, _, _, out, _, _, _ = hostile_run
    parallel = tmp_path / "out2"
    result = run_cli(analyse_args([root / "in"], parallel, emtnet_onnx.path, "--workers", "2", "--no-overlays"))
    assert result.returncode == 2 and "Traceback" not in result.stderr

    def outcome(folder: Path) -> tuple[list, list]:
        return (
            sorted((r["file"], r["frame"]) for r in rows(folder / "results.csv")),
            sorted((r["file"], r["frame"], r["stage"]) for r in rows(folder / "errors.csv")),
        )

    assert outcome(parallel) == outcome(out)


# ---------------------------------------------------------------------------------------------
# One frame, one input, the public API


def test_one_bad_frame_costs_that_frame_only(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    """A cine whose second frame is NaN: frames 1 and 3 analysed, one errors.csv row for frame index 1."""
    ds = us_dataset(tissue(), "nan-middle", frames=3)
    del ds.PixelData
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 32, 32, 31
    del ds.PixelRepresentation
    frames = np.stack([tissue(seed=1), tissue(seed=2), tissue(seed=3)]).astype(np.float32)
    frames[1] = np.nan
    ds.FloatPixelData = frames.tobytes()
    path = save(ds, tmp_path / "nan-middle.dcm", enforce=False)
    out = tmp_path / "out"
    prepare_output(out)
    report = analyze_file(path, Analyzer(emtnet_onnx.path), out, AnalyzeOptions(dicom_seg=False))
    assert report.analysed == 2 and [e.frame for e in report.errors] == [1]
    assert [r["frame"] for r in rows(out / "results.csv")] == ["0", "2"]
    (error,) = rows(out / "errors.csv")
    assert error["frame"] == "1" and error["stage"] == "decode" and "NaN" in error["reason"]


def test_public_api_records_refusals_from_the_scan_and_never_raises(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    inputs = build_all(folder, ("named-pipe", "huge-native", "empty-rows"))
    out = tmp_path / "out"
    done = prepare_output(out)
    analyzer = Analyzer(emtnet_onnx.path)
    items = list(expand_inputs([folder]))
    assert any(isinstance(item, InputError) and "named pipe" in item.reason for item in items)
    reports = [analyze_file(item, analyzer, out, done=done) for item in items]
    assert all(report.error is not None for report in reports)
    assert {Path(r["file"]) for r in rows(out / "errors.csv")} == set(inputs.values())


def test_an_exception_nobody_planned_for_becomes_one_row(
    emtnet_onnx: FixtureModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = good_files(tmp_path / "in", 2)
    analyzer = Analyzer(emtnet_onnx.path)
    real = analyzer.analyze
    calls = []

    def flaky(frame, region=None):
        calls.append(frame.source)
        if len(calls) == 1:
            raise RuntimeError("onnxruntime went away")
        return real(frame, region)

    monkeypatch.setattr(analyzer, "analyze", flaky)
    out = tmp_path / "out"
    prepare_output(out)
    reports = [analyze_file(path, analyzer, out) for path in paths]
    assert reports[0].errors[0].stage == "analyze" and "RuntimeError" in reports[0].errors[0].reason
    assert reports[1].analysed == 1
    assert [r["reason"] for r in rows(out / "errors.csv")] == ["RuntimeError: onnxruntime went away"]


# ---------------------------------------------------------------------------------------------
# Output folder: unwritable, shared, killed, damaged


def test_unwritable_out_is_one_line_and_exit_1(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    (good,) = good_files(tmp_path / "in", 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    for out in (blocker, blocker / "below"):
        result = run_cli(analyse_args([good], out, emtnet_onnx.path))
        assert result.returncode == 1
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("busassist: ") and "cannot be written" in line and "Traceback" not in line


def test_an_output_subfolder_that_cannot_be_written_costs_rows_not_the_run(
    emtnet_onnx: FixtureModel, tmp_path: Path
) -> None:
    paths = good_files(tmp_path / "in", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "overlays").write_text("a file where the overlays folder should be")
    result = run_cli(analyse_args([tmp_path / "in"], out, emtnet_onnx.path, "--no-seg"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = rows(out / "errors.csv")
    assert sorted(Path(e["file"]) for e in errors) == sorted(paths)
    assert {e["stage"] for e in errors} == {"write"} and all(e["frame"] == "0" for e in errors)


def test_two_runs_into_one_folder_leave_every_frame_once(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    good_files(tmp_path / "in", 4, frames=3)
    out = tmp_path / "out"
    args = analyse_args([tmp_path / "in"], out, emtnet_onnx.path, "--no-overlays")
    first = start_cli(args)
    deadline = time.monotonic() + 120
    while not (out / "results.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = start_cli(args)
    outputs = [process.communicate(timeout=240) for process in (first, second)]
    codes = sorted(process.returncode for process in (first, second))
    assert codes in ([0, 1], [0, 0]), outputs
    if codes == [0, 1]:
        refused = next(err for (_, err), p in zip(outputs, (first, second)) if p.returncode == 1)
        assert "in use by another busassist run" in refused and len(refused.strip().splitlines()) == 1
    keys = [(r["file"], r["frame"]) for r in rows(out / "results.csv")]
    assert len(keys) == 12 and len(set(keys)) == 12


SHARE_SCRIPT = """
import sys
from pathlib import Path
from busassist import Analyzer, analyze_file, prepare_output
out, model, *paths = sys.argv[1:]
done = prepare_output(Path(out))
analyzer = Analyzer(model, threads=1)
for path in paths:
    analyze_file(path, analyzer, out, done=done)
"""


def test_api_workers_sharing_one_folder_leave_every_frame_once(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    """Dask-style workers that share one ``out`` without the run lock: rows deduplicated under the CSV lock."""
    paths = [str(p) for p in good_files(tmp_path / "in", 5, frames=2)]
    out = tmp_path / "out"
    command = [sys.executable, "-c", SHARE_SCRIPT, str(out), str(emtnet_onnx.path)]
    processes = [subprocess.Popen([*command, *order], env=child_env()) for order in (paths, paths[::-1])]
    assert [p.wait(timeout=240) for p in processes] == [0, 0]
    keys = [(r["file"], r["frame"]) for r in rows(out / "results.csv")]
    assert len(keys) == 10 and len(set(keys)) == 10
    assert not list(out.rglob("*.tmp")), "no temporary file left behind"


def test_kill_and_resume_loses_nothing_and_repeats_nothing(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    good_files(tmp_path / "in", 6, frames=2)
    (tmp_path / "in" / "junk.bin").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = analyse_args([tmp_path / "in"], out, emtnet_onnx.path)
    victim = start_cli(args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "results.csv").exists() and len(rows(out / "results.csv")) >= 2:
            break
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert 2 <= len(rows(out / "results.csv")) < 12, "killed in the middle of the run"
    resumed = run_cli(args)
    assert resumed.returncode == 2  # junk.bin is refused
    keys = [(r["file"], r["frame"]) for r in rows(out / "results.csv")]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert [Path(e["file"]).name for e in rows(out / "errors.csv")] == ["junk.bin"]
    for row in rows(out / "results.csv"):
        assert (out / row["mask_path"]).stat().st_size > 0 and (out / row["seg_path"]).is_file()


def test_damaged_outputs_are_recomputed_on_resume(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    (good,) = good_files(tmp_path / "in", 1, frames=2)
    out = tmp_path / "out"
    args = analyse_args([good], out, emtnet_onnx.path)
    assert run_cli(args).returncode == 0
    row = rows(out / "results.csv")[0]
    mask, overlay, seg = out / row["mask_path"], out / row["overlay_path"], out / row["seg_path"]
    intact = {path: path.read_bytes() for path in (mask, overlay, seg)}
    mask.write_bytes(b"")  # zero bytes
    overlay.write_bytes(intact[overlay][:100])  # cut short
    seg.write_bytes(intact[seg][: len(intact[seg]) // 2])
    again = run_cli(args)
    assert again.returncode == 0, again.stderr
    assert len(rows(out / "results.csv")) == 2, "no row added"
    for path in (mask, overlay):
        assert path.read_bytes() == intact[path], f"{path.name} not restored"
    rebuilt, original = pydicom.dcmread(seg), pydicom.dcmread(pydicom.filebase.DicomBytesIO(intact[seg]))
    assert rebuilt.SOPInstanceUID == original.SOPInstanceUID and rebuilt.PixelData == original.PixelData


def test_a_worker_that_dies_never_hangs_the_run(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    """A worker process killed mid-run (as the OS does when memory runs out): the run finishes, nothing lost."""
    count = 16
    good_files(tmp_path / "in", count, frames=3)
    out = tmp_path / "out"
    run = start_cli(analyse_args([tmp_path / "in"], out, emtnet_onnx.path, "--workers", "2", "--no-overlays"))
    deadline, killed = time.monotonic() + 120, False
    while time.monotonic() < deadline and not killed and run.poll() is None:
        if (out / "results.csv").exists() and len(rows(out / "results.csv")) >= 1:
            listing = subprocess.run(
                ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(run.pid)], capture_output=True, text=True
            )
            workers = [int(line.split()[0]) for line in listing.stdout.splitlines() if "spawn_main" in line]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = True
        time.sleep(0.02)
    stdout, stderr = run.communicate(timeout=240)
    assert killed, "no worker was seen to kill"
    assert run.returncode in (0, 2), (run.returncode, stdout, stderr)
    assert "Traceback" not in stderr
    analysed = {(Path(r["file"]).name, r["frame"]) for r in rows(out / "results.csv")}
    refused = {Path(r["file"]).name for r in rows(out / "errors.csv")}
    for i in range(count):  # every file is either fully analysed (retried in a fresh worker) or refused
        assert {(f"good-{i}.dcm", str(f)) for f in range(3)} <= analysed or f"good-{i}.dcm" in refused
    assert len(rows(out / "results.csv")) == len(analysed), "no frame twice"


def test_relative_out_non_utf8_names_and_out_inside_the_input_folder(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    """``--out out`` from the input folder itself, a file name that is not UTF-8, and a rerun."""
    folder = tmp_path / "study"
    (plain,) = good_files(folder, 1)
    odd = Path(os.fsdecode(bytes(folder) + b"/M\xfcller.dcm"))  # Latin-1 bytes, not UTF-8
    shutil.copyfile(plain, odd)
    args = ["analyze", ".", "--out", "out", "--model", str(emtnet_onnx.path), "--quiet", "--threads", "1"]
    first = run_cli(args, cwd=folder)
    assert first.returncode == 0, first.stderr
    results = rows(folder / "out" / "results.csv")
    assert len(results) == 2, "both files, although they share a SOP Instance UID"
    assert any("\\xfc" in row["file"] for row in results)
    again = run_cli(args, cwd=folder)
    assert again.returncode == 0 and "analysed 0 frame(s)" in again.stdout, "outputs are not taken as inputs"
    assert rows(folder / "out" / "errors.csv") == []


def test_a_deflate_bomb_is_refused_before_it_inflates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import functools
    import zlib

    from busassist.core import io, limits

    ds = us_dataset(tissue(), "deflated")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    path = save(ds, tmp_path / "deflated.dcm")  # pydicom deflates the dataset
    assert limits.inflated_size_problem(path) is None
    assert next(io.read_frames(path)).pixels.shape == (96, 128)
    head = path.read_bytes()  # the bomb: the same file meta, then a deflate stream of 4 MB of zeros
    with open(path, "rb") as handle:
        pydicom.filereader.read_preamble(handle, False)
        pydicom.filereader._read_file_meta_info(handle)
        meta_end = handle.tell()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = tmp_path / "bomb.dcm"
    bomb.write_bytes(head[:meta_end] + deflater.compress(bytes(4 << 20)) + deflater.flush())
    assert bomb.stat().st_size < 10_000
    assert "inflates" in limits.inflated_size_problem(bomb, limit=1 << 20)
    monkeypatch.setattr(io, "inflated_size_problem", functools.partial(limits.inflated_size_problem, limit=1 << 20))
    with pytest.raises(InputError, match="inflates"):
        next(io.read_frames(bomb))


def test_every_compressed_frame_is_checked_before_decoding(tmp_path: Path) -> None:
    """A JPEG cine whose second frame's stream declares 65535 x 65535: that frame is refused, the others decode."""
    import struct

    from hostile_inputs import jpeg_bytes
    from pydicom.encaps import encapsulate

    from busassist.core.io import iter_frames

    pixels = tissue(64, 64)
    good = jpeg_bytes(pixels)
    huge = bytearray(good)
    sof = huge.find(b"\xff\xc0")
    huge[sof + 5 : sof + 9] = struct.pack(">HH", 65535, 65535)
    ds = us_dataset(pixels, "jpeg-cine", frames=3)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    ds.PixelData = encapsulate([good, bytes(huge), good])
    ds["PixelData"].VR = "OB"
    path = save(ds, tmp_path / "jpeg-cine.dcm")
    outcome = list(iter_frames(path))
    assert [type(item).__name__ for item in outcome] == ["Frame", "InputError", "Frame"]
    assert outcome[1].frame == 1 and "65535 x 65535" in outcome[1].reason


def test_a_rerun_with_other_frames_grows_the_seg_instead_of_shrinking_it(
    emtnet_onnx: FixtureModel, tmp_path: Path
) -> None:
    (cine,) = good_files(tmp_path / "in", 1, frames=4)
    out = tmp_path / "out"
    for frames in ("1-2", "3-4"):
        assert run_cli(analyse_args([cine], out, emtnet_onnx.path, "--frames", frames)).returncode == 0
    results = rows(out / "results.csv")
    assert sorted(r["frame"] for r in results) == ["0", "1", "2", "3"]
    (seg_path,) = {r["seg_path"] for r in results}
    seg = pydicom.dcmread(out / seg_path)
    assert int(seg.NumberOfFrames) == 4
    numbers = [
        item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedFrameNumber
        for item in seg.PerFrameFunctionalGroupsSequence
    ]
    assert numbers == [1, 2, 3, 4]


def test_the_package_imports_without_fcntl() -> None:
    """Windows has no ``fcntl``: the package must import (and lock) without it."""
    code = (
        "import sys; sys.modules['fcntl'] = None\n"
        "import busassist.apps.analyze, busassist.apps.cli, busassist.core.outputs, busassist.core.io\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), timeout=60)
    assert result.returncode == 0, result.stderr
    for path in (REPO_ROOT / "BUSAssist" / "busassist").rglob("*.py"):
        assert "import fcntl" not in path.read_text(), path


# ---------------------------------------------------------------------------------------------
# The policies, one by one


def test_uid_grammar() -> None:
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.6.1") and is_valid_uid("1.2.03.4")
    for bad in ("", "1..2", "1.2.", ".1", "1.2.3\x00x", "/etc/passwd", "../1.2", "Doe^Jane", "1." * 40 + "1", "1 2"):
        assert not is_valid_uid(bad), bad
    assert checked_uid("1.2.3\x00", "SOPInstanceUID") == ("1.2.3", "")  # DICOM's trailing pad
    assert checked_uid(None, "SOPInstanceUID") == (None, "SOPInstanceUID missing")
    uid, note = checked_uid("Doe^Jane", "SOPInstanceUID")
    assert uid is None and "Doe" not in note


def test_redactor_removes_identifiers_and_quoted_values() -> None:
    redact = Redactor(["Doe^Jane", "PID-77", "19610723"])
    assert "Doe" not in redact("highdicom: patient name Doe^Jane has one component; Jane")
    assert "PID-77" not in redact("cannot convert PID-77")
    assert "1961-07-23" not in redact("date 1961-07-23 seen")
    assert (
        redact("Invalid value for VR DA: '2099-99-99'. Please see") == "Invalid value for VR DA: [redacted]. Please see"
    )
    assert redact("line one\nline two") == "line one line two"


def test_frame_ranges_are_clipped_not_expanded() -> None:
    selection = FrameSelection("1-100000000")
    started = time.perf_counter()
    assert selection.indices(4) == [0, 1, 2, 3]
    assert FrameSelection("3,90-100000000").indices(5) == [2]
    assert time.perf_counter() - started < 1.0  # a billion numbers would take minutes and gigabytes


def test_output_paths_must_stay_inside_out(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert inside(out, out / "seg" / "1.2" / "x.dcm") == (out / "seg" / "1.2" / "x.dcm").resolve()
    (out / "link").symlink_to(tmp_path)
    for escape in (out / ".." / "x", out / "seg" / ".." / ".." / "x", Path("/etc/passwd"), out / "link" / "x"):
        with pytest.raises(OutputError):
            inside(out, escape)


def test_stream_headers_are_read_for_their_declared_size() -> None:
    from hostile_inputs import jpeg_bytes

    assert declared_stream_size(jpeg_bytes(tissue(40, 56))) == (40, 56, 1)
    siz = b"\xff\x4f\xff\x51" + b"\x00\x29\x00\x00" + (640).to_bytes(4, "big") + (480).to_bytes(4, "big")
    siz += bytes(8) + bytes(16) + (3).to_bytes(2, "big") + bytes(8)
    assert declared_stream_size(siz) == (480, 640, 3)
    assert declared_stream_size(b"not a stream") is None


def test_only_regular_files_are_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "named pipe" in regular_file_problem(fifo)
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    assert regular_file_problem(tmp_path / "a") == "symbolic link loop"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert regular_file_problem(tmp_path / "dangling") == "broken symbolic link"
    assert regular_file_problem(Path("/dev/zero")).startswith("not a regular file (device)")


def test_max_pixels_is_a_command_line_policy(emtnet_onnx: FixtureModel, tmp_path: Path) -> None:
    (good,) = good_files(tmp_path / "in", 1)
    out = tmp_path / "out"
    result = run_cli(analyse_args([good], out, emtnet_onnx.path, "--max-pixels", "5000"))
    assert result.returncode == 2
    (error,) = rows(out / "errors.csv")
    assert error["stage"] == "check" and "--max-pixels" in error["reason"]
    header = pydicom.dcmread(good, stop_before_pixels=True)
    assert int(header.Rows) * int(header.Columns) > 5000
