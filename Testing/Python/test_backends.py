"""The model runtimes behind one interface (``core.backends``): same answers, ``auto`` only trusts a checked one."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest

pytest.register_assert_rewrite("model_fixtures")
from model_fixtures import FixtureModel  # noqa: E402

from busassist.apps.cli import main  # noqa: E402
from busassist.core import backends  # noqa: E402
from busassist.core.inference import Analyzer  # noqa: E402
from busassist.core.model_settings import ModelSettings  # noqa: E402
from busassist.core.model_store import ModelError, default_model_path  # noqa: E402

pytest_plugins = ["model_fixtures"]
REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = REPO_ROOT / "Resources" / "SampleData"
needs_openvino = pytest.mark.skipif(not backends.openvino_installed(), reason="OpenVINO is not installed")


@pytest.fixture
def candidate_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto``'s timing says the candidate runtime is the faster one (the parity check is what is tested)."""
    timing = {backends.ONNXRUNTIME: 2.0}
    monkeypatch.setattr(backends, "_median_ms", lambda network, image: timing.get(network.name, 1.0))


def probabilities(outputs: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What ``parity_problem`` expects of the reference: probabilities, as every face shows them."""
    return tuple(1 / (1 + np.exp(-logits.astype(np.float64))) for logits in outputs)


def test_onnxruntime_does_not_spin() -> None:
    network = backends.OnnxRuntimeNetwork(default_model_path(), threads=1)
    options = network.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_probe_is_deterministic_and_structured() -> None:
    first, second = backends.probe_batch(), backends.probe_batch()
    assert first.shape == (2, 1, 224, 224) and first.dtype == np.float32
    assert np.array_equal(first, second)
    assert first.min() >= -1 and first.max() <= 1 and first.std() > 0.2


@needs_openvino
def test_openvino_answers_as_onnxruntime_on_the_bundled_model() -> None:
    model = default_model_path()
    reference = backends.OnnxRuntimeNetwork(model, threads=1)
    candidate = backends.OpenVinoNetwork(model, threads=1)
    batch = backends.probe_batch()
    assert backends.parity_problem(candidate, probabilities(reference.run(batch)), batch) is None
    assert np.abs(candidate.run(batch)[1] - reference.run(batch)[1]).max() <= 1e-4  # logits too, when trained


@needs_openvino
def test_auto_takes_openvino_only_where_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    model = default_model_path()
    for openvino_ms, chosen in ((1.0, backends.OPENVINO), (3.0, backends.ONNXRUNTIME), (2.0, backends.ONNXRUNTIME)):
        timing = {backends.ONNXRUNTIME: 2.0, backends.OPENVINO: openvino_ms}
        monkeypatch.setattr(backends, "_median_ms", lambda network, image, timing=timing: timing[network.name])
        assert backends.open_network(model, backends.AUTO, threads=1).name == chosen, openvino_ms
    monkeypatch.undo()
    network = backends.open_network(model, backends.AUTO, threads=1)  # the real timing: either may win here
    assert network.name in (backends.OPENVINO, backends.ONNXRUNTIME)
    assert backends._median_ms(network, backends.probe_batch()[:1]) > 0


@needs_openvino
def test_auto_follows_the_parity_check_on_a_fresh_export(emtnet_onnx: FixtureModel, candidate_faster: None) -> None:
    # The untrained test network is badly conditioned: its logits differ between runtimes by ~3e-4, as
    # onnxruntime's differ from PyTorch's. Whatever the check says, auto must follow it.
    reference = backends.OnnxRuntimeNetwork(emtnet_onnx.path, threads=1)
    candidate = backends.OpenVinoNetwork(emtnet_onnx.path, threads=1)
    batch = backends.probe_batch()
    problem = backends.parity_problem(candidate, probabilities(reference.run(batch)), batch)
    chosen = backends.open_network(emtnet_onnx.path, backends.AUTO, threads=1).name
    assert chosen == (backends.ONNXRUNTIME if problem else backends.OPENVINO)
    batch = backends.probe_batch()
    ours, theirs = candidate.run(batch), reference.run(batch)
    assert np.abs(1 / (1 + np.exp(-ours[1])) - 1 / (1 + np.exp(-theirs[1]))).max() < 1e-3


class _Shifted:
    """A runtime that answers almost like the reference: off by more than the tolerance."""

    name = "shifted"

    def __init__(self, inner, shift: float) -> None:
        self.inner, self.shift = inner, shift

    def run(self, batch: np.ndarray):
        class_logit, mask_logit = self.inner.run(batch)
        return class_logit + self.shift, mask_logit + self.shift


def test_parity_check_catches_a_small_difference() -> None:
    reference = backends.OnnxRuntimeNetwork(default_model_path(), threads=1)
    batch = backends.probe_batch()
    expected = probabilities(reference.run(batch))
    assert backends.parity_problem(_Shifted(reference, 5e-5), expected, batch) is None
    problem = backends.parity_problem(_Shifted(reference, 0.01), expected, batch)
    assert problem is not None and "probabilities differ" in problem


def test_auto_falls_back_to_onnxruntime_when_the_candidate_disagrees(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(
        backends,
        "OpenVinoNetwork",
        lambda path, threads=None: _Shifted(backends.OnnxRuntimeNetwork(path, threads), 0.05),
    )
    with caplog.at_level(logging.WARNING, logger="busassist.core.backends"):
        network = backends.open_network(default_model_path(), backends.AUTO, threads=1)
    assert network.name == backends.ONNXRUNTIME
    assert "OpenVINO not used" in caplog.text and "differ" in caplog.text


@pytest.fixture
def openvino_tries(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """OpenVINO "installed", its loads recorded (and refused): the models ``auto`` tried to run on it."""
    tried: list[Path] = []

    def record(path, threads=None):
        tried.append(Path(path))
        raise ModelError(f"{path}: not loaded in this test")

    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "OpenVinoNetwork", record)
    return tried


def test_auto_runs_an_int8_model_on_onnxruntime_without_trying_openvino(
    openvino_tries: list[Path], caplog: pytest.LogCaptureFixture, int8_onnx: Path
) -> None:
    tried = openvino_tries
    with caplog.at_level(logging.INFO, logger="busassist.core.backends"):
        network = backends.open_network(int8_onnx, backends.AUTO, threads=1)
    assert network.name == backends.ONNXRUNTIME and tried == []
    assert "an int8 model" in caplog.text and not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # the float32 model still goes through the check (and so reaches the candidate)
    backends.open_network(default_model_path(), backends.AUTO, threads=1)
    assert tried == [default_model_path()]


def test_auto_falls_back_when_the_candidate_cannot_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path, threads=None):
        raise ModelError(f"{path}: OpenVINO cannot load it (unsupported op)")

    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "OpenVinoNetwork", refuse)
    assert backends.open_network(default_model_path(), backends.AUTO, threads=1).name == backends.ONNXRUNTIME


def test_every_face_runs_the_reference_runtime_unless_asked(openvino_tries: list[Path]) -> None:
    """Where ``auto`` would take OpenVINO (installed, faster), no face reaches it without being asked.

    ``auto`` decides by timing, so two runs on a loaded machine can run different runtimes, whose answers
    may be one float32 unit apart: enough to print a score differently at a rounding boundary (a Dask run
    against a one-process run did, in CI). The default is the runtime the card was measured on.
    """
    from busassist.apps.cli import build_parser
    from busassist.review.session import DesktopSession

    tried = openvino_tries
    assert Analyzer(threads=1).backend == backends.ONNXRUNTIME
    assert ModelSettings().analyzer.backend == backends.ONNXRUNTIME
    assert DesktopSession().analyzer.backend == backends.ONNXRUNTIME
    assert build_parser().parse_args(["analyze", "x", "--out", "y"]).backend == backends.ONNXRUNTIME
    assert tried == []
    Analyzer(threads=1, backend=backends.AUTO)  # the patch is live: asked for, auto does try OpenVINO
    assert tried == [default_model_path()]


def test_asking_for_a_missing_or_unknown_backend_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="unknown backend"):
        backends.open_network(default_model_path(), "tensorrt")
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    with pytest.raises(ModelError, match=r"pip install 'busassist\[openvino\]'"):
        backends.open_network(default_model_path(), backends.OPENVINO)
    assert backends.open_network(default_model_path(), backends.AUTO).name == backends.ONNXRUNTIME


def test_cli_refuses_a_missing_backend_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(backends, "openvino_installed", lambda: False)
    code = main(["analyze", str(SAMPLE_DIR), "--out", str(tmp_path / "out"), "--backend", "openvino", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "busassist[openvino]" in err[0]


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@needs_openvino
def test_cli_gives_the_same_results_on_either_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = {}
    for backend in (backends.ONNXRUNTIME, backends.OPENVINO):
        out = tmp_path / backend
        args = ["analyze", str(SAMPLE_DIR), "--out", str(out), "--backend", backend, "--threads", "1", "--quiet"]
        assert main([*args, "--no-overlays", "--no-seg"]) == 0
        assert f"on {backend};" in capsys.readouterr().out
        outputs[backend] = read_rows(out / "results.csv")
    ignored = {"mask_path", "overlay_path", "seg_path", "volume_paths"}
    for ours, theirs in zip(*outputs.values()):
        assert {k: v for k, v in ours.items() if k not in ignored} == {
            k: v for k, v in theirs.items() if k not in ignored
        }
    for name in {row["mask_path"] for row in outputs[backends.ONNXRUNTIME]}:
        from PIL import Image

        masks = [np.asarray(Image.open(tmp_path / backend / name)) for backend in outputs]
        assert np.array_equal(*masks), f"{name}: the runtimes' masks differ"


def test_faces_name_the_runtime_that_answers() -> None:
    settings = ModelSettings(model_path=default_model_path(), backend=backends.ONNXRUNTIME)
    assert "on " not in settings.model_description()  # not loaded yet: no runtime to name
    assert isinstance(settings.analyzer, Analyzer)
    assert settings.model_description().endswith(", on onnxruntime")


@pytest.fixture
def sealed_copy(tmp_path: Path) -> tuple[Path, str]:
    """The bundled model copied, sealed and given its stored probe reference."""
    import shutil

    from busassist.core.model_store import write_checksum

    model = tmp_path / "emtnet.onnx"
    shutil.copyfile(default_model_path(), model)
    digest = write_checksum(model)
    backends.write_probe_reference(model)
    return model, digest


def test_the_stored_reference_is_onnxruntimes_answer_on_the_probe(sealed_copy: tuple[Path, str]) -> None:
    model, digest = sealed_copy
    stored = backends.read_probe_reference(model, digest)
    live = probabilities(backends.OnnxRuntimeNetwork(model, threads=1).run(backends.probe_batch()))
    assert stored is not None
    for ours, theirs in zip(stored, live):
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 8e-6
    assert backends.probe_reference_path(model).stat().st_size < 300_000  # it ships beside every model
    assert [path.name for path in model.parent.iterdir() if path.name.endswith(".partial")] == []


def test_a_stale_or_broken_stored_reference_is_ignored(sealed_copy: tuple[Path, str]) -> None:
    model, digest = sealed_copy
    assert backends.read_probe_reference(model, "0" * 64) is None  # made for another model
    stored = backends.probe_reference_path(model)
    whole = stored.read_bytes()
    stored.write_bytes(whole[: len(whole) // 2])  # torn: a zip without its directory
    assert backends.read_probe_reference(model, digest) is None
    stored.write_bytes(whole[:-30])  # the directory cut short
    assert backends.read_probe_reference(model, digest) is None
    stored.write_bytes(b"not an npz")
    assert backends.read_probe_reference(model, digest) is None
    Analyzer(model, backend=backends.AUTO)  # a broken reference never stops the model from loading
    backends.probe_reference_path(model).unlink()
    assert backends.read_probe_reference(model, digest) is None


def test_auto_checks_against_the_stored_reference(
    sealed_copy: tuple[Path, str], monkeypatch: pytest.MonkeyPatch, candidate_faster: None
) -> None:
    model, digest = sealed_copy
    second_image = backends.probe_batch()[1:]
    original = backends.OnnxRuntimeNetwork
    live = []

    class Watched(original):
        """onnxruntime that notes when it answers the probe's second image (only a live reference does)."""

        def run(self, batch):
            if batch.shape == second_image.shape and np.array_equal(batch, second_image):
                live.append(batch)
            return super().run(batch)

    monkeypatch.setattr(backends, "openvino_installed", lambda: True)
    monkeypatch.setattr(backends, "OpenVinoNetwork", lambda path, threads=None: _Shifted(original(path, threads), 0))
    monkeypatch.setattr(backends, "OnnxRuntimeNetwork", Watched)
    assert backends.open_network(model, backends.AUTO, threads=1, sha256=digest).name == "shifted"
    assert live == [], "the stored reference should have answered the probe"
    # a candidate that is off is still caught by the stored reference, and auto falls back
    monkeypatch.setattr(backends, "OpenVinoNetwork", lambda path, threads=None: _Shifted(original(path, threads), 0.05))
    assert backends.open_network(model, backends.AUTO, threads=1, sha256=digest).name == backends.ONNXRUNTIME
    # without the verified digest (or with a stale file) onnxruntime answers the probe itself
    monkeypatch.setattr(backends, "OpenVinoNetwork", lambda path, threads=None: _Shifted(original(path, threads), 0))
    backends.open_network(model, backends.AUTO, threads=1)
    assert len(live) == 1


def test_the_bundled_model_ships_its_probe_reference() -> None:
    from busassist.core.model_store import verify_model

    model = default_model_path()
    assert backends.read_probe_reference(model, verify_model(model)) is not None
