"""The runtimes that execute the ONNX model, behind one small interface.

onnxruntime is always installed and is the reference. OpenVINO (``pip install 'busassist[openvino]'``)
runs the same ONNX file in float32, faster than onnxruntime on some CPUs and slower on others (see
docs/benchmarks.md). ``auto`` takes OpenVINO only when it is installed *and* answers like onnxruntime
on a probe at load (``parity_problem``): a runtime that computes something else must never be used
silently, so on a mismatch ``auto`` falls back to onnxruntime and says why. It also times both on the
probe and keeps onnxruntime where OpenVINO is not faster: that depends on the machine. onnxruntime's
answers on the probe are stored beside every sealed model (``PROBE_SUFFIX``).

Neither runtime spin-waits or pins threads. onnxruntime's workers normally busy-wait between operators
for lower latency, which on a shared CPU (two batch workers on two cores, Slicer beside the viewer)
takes the cycles another process needs: a batch worker beside a busy process ran at 15 frames/s
spinning and 24 without. OpenVINO pins its threads to cores by default, so two one-thread worker
processes both landed on core 0 and ran at half speed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np

from busassist.constants import IMAGE_SIZE, ONNX_CLASS_OUTPUT, ONNX_INPUT, ONNX_MASK_OUTPUT
from busassist.core.model_store import ModelError, read_metadata

log = logging.getLogger(__name__)

ONNXRUNTIME = "onnxruntime"
OPENVINO = "openvino"
AUTO = "auto"
#: The runtime every face uses unless told otherwise: the reference, on which the model card, the reports
#: and the int8 rule are measured. ``auto`` is an opt-in for throughput: its choice rests on timing, so on
#: a loaded machine two runs (or a Slicer panel and a batch) could take different runtimes and disagree
#: in the sixth digit of a score. By default the same frame gets one score in every face and every run.
DEFAULT_BACKEND = ONNXRUNTIME
#: What ``--backend`` accepts.
BACKEND_CHOICES: tuple[str, ...] = (AUTO, ONNXRUNTIME, OPENVINO)

#: Largest difference of any probability (class or mask pixel) between a candidate runtime and onnxruntime
#: on the probe, and the mask pixels it may flip: only those whose reference probability is within this
#: of the 0.5 mask threshold. Probabilities, not logits: they are what every face shows, and a badly
#: conditioned network (an untrained one has logits that differ by ~3e-4 between any two runtimes,
#: PyTorch included) must not fail a check its answers pass. Trained EMT-Net logits agree to ~2e-5.
PARITY_TOLERANCE = 1e-4


class OnnxRuntimeNetwork:
    """The model in an onnxruntime CPU session: full graph optimisation, memory arena off, no spinning.

    The arena is off because Slicer keeps the session for the whole application run; without it memory
    is returned after each frame instead of growing to the peak.
    """

    name = ONNXRUNTIME

    def __init__(self, model_path: Path, threads: Optional[int] = None, spinning: bool = False) -> None:
        """``spinning=True`` is onnxruntime's own default, kept for the benchmark that shows why it is off."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = False
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ModelError(f"{model_path}: not a loadable ONNX model ({str(error).splitlines()[0]})") from None
        self.output_names = {output.name for output in self.session.get_outputs()}
        _check_outputs(model_path, self.output_names)

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 1, S, S) float32 -> class logits (N, 1), mask logits (N, 1, S, S)."""
        class_logit, mask_logit = self.session.run([ONNX_CLASS_OUTPUT, ONNX_MASK_OUTPUT], {ONNX_INPUT: batch})
        return class_logit, mask_logit


class OpenVinoNetwork:
    """The same ONNX file compiled by OpenVINO's CPU plugin, in float32 (no bf16/f16 shortcuts)."""

    name = OPENVINO

    def __init__(self, model_path: Path, threads: Optional[int] = None) -> None:
        import openvino as ov

        core = ov.Core()
        config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = core.compile_model(str(model_path), "CPU", config)
        except Exception as error:  # OpenVINO raises RuntimeError with multi-line details
            raise ModelError(f"{model_path}: OpenVINO cannot load it ({str(error).splitlines()[0]})") from None
        self.output_names = {name for output in self.compiled.outputs for name in output.get_names()}
        _check_outputs(model_path, self.output_names)
        self.request = self.compiled.create_infer_request()
        self._outputs = [self.compiled.output(ONNX_CLASS_OUTPUT), self.compiled.output(ONNX_MASK_OUTPUT)]

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = self.request.infer({ONNX_INPUT: batch})
        # copies: the request reuses its output buffers on the next call
        return np.array(results[self._outputs[0]]), np.array(results[self._outputs[1]])


def _check_outputs(model_path: Path, names: set[str]) -> None:
    if {ONNX_CLASS_OUTPUT, ONNX_MASK_OUTPUT} - names:
        raise ModelError(f"{model_path}: outputs {sorted(names)} are not those of EMT-Net")


def openvino_installed() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def probe_batch(size: int = IMAGE_SIZE) -> np.ndarray:
    """Two deterministic network inputs in [-1, 1] with structure at every scale (the parity probe).

    Smooth gradients and a dark disc give the segmentation head boundaries to decide; seeded speckle
    exercises every kernel tap.
    """
    rows, cols = np.mgrid[0:size, 0:size] / size
    disc = ((rows - 0.55) ** 2 + (cols - 0.45) ** 2 < 0.04).astype(np.float64)
    speckle = np.random.default_rng(16).normal(0, 0.25, (size, size))
    first = np.clip(0.6 * np.sin(6 * rows) * np.cos(4 * cols) - 0.8 * disc + speckle, -1, 1)
    second = np.clip(np.flipud(first) * 0.7 + 0.2, -1, 1)
    return np.stack([first, second])[:, None].astype(np.float32)


def _one_image_at_a_time(network, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``network.run`` on each image of ``batch`` alone, as the faces run it, outputs stacked.

    A batch of two would make a runtime plan (and keep) buffers twice the size inference ever needs:
    ~40 MB of a worker's peak with OpenVINO.
    """
    answers = [network.run(batch[index : index + 1]) for index in range(len(batch))]
    class_logits, mask_logits = (np.concatenate([answer[part] for answer in answers]) for part in (0, 1))
    return class_logits, mask_logits


def _probability(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))


def parity_problem(candidate, expected: tuple[np.ndarray, np.ndarray], batch: np.ndarray) -> Optional[str]:
    """Why ``candidate`` does not answer ``expected`` on ``batch``, or None.

    ``expected`` holds the reference's class and mask *probabilities* on ``batch`` (a live onnxruntime
    run, or the answers stored beside the model: ``ProbeReference``).
    """
    got = _one_image_at_a_time(candidate, batch)
    for name, ours, theirs in zip(("class", "mask"), got, expected):
        if ours.shape != theirs.shape or not np.all(np.isfinite(ours)):
            return f"{name} outputs have shape {ours.shape} or non-finite values"
        difference = float(np.abs(_probability(ours) - theirs).max())
        if difference > PARITY_TOLERANCE:
            return f"{name} probabilities differ by up to {difference:.2g} (tolerance {PARITY_TOLERANCE:g})"
    reference_mask = expected[1]
    decided = np.abs(reference_mask - 0.5) > PARITY_TOLERANCE
    flipped = int(np.count_nonzero(((got[1] >= 0) != (reference_mask >= 0.5)) & decided))
    return f"{flipped} mask pixels flipped" if flipped else None


#: Beside the model: onnxruntime's answers on the probe, so that ``auto`` checks OpenVINO without loading
#: onnxruntime at all (loading both cost a batch worker ~65 MB of peak memory that never came back).
PROBE_SUFFIX = ".probe.npz"
#: Stored probabilities are rounded to 1/65535 (|error| <= 7.7e-6, far inside ``PARITY_TOLERANCE``).
_PROBE_SCALE = 65535


def probe_reference_path(model_path: Path) -> Path:
    return Path(model_path).with_name(Path(model_path).name + PROBE_SUFFIX)


def write_probe_reference(model_path: Path, sha256: Optional[str] = None) -> Path:
    """Store onnxruntime's probabilities on the probe beside the model, keyed by the model's SHA-256.

    Written wherever a model is sealed (calibrate, quantize, publish, the fast-form rewrite), after its
    checksum: a model changed afterwards no longer matches its key, and ``auto`` then runs onnxruntime
    itself. Written under a temporary name and renamed, so an interrupted write leaves no torn file.
    ``sha256``: the model's digest when the caller has just computed it (``seal_model``).
    """
    from busassist.core.model_store import sha256_of

    model_path = Path(model_path)
    batch = probe_batch(read_metadata(model_path).input_size)
    class_logits, mask_logits = _one_image_at_a_time(OnnxRuntimeNetwork(model_path), batch)
    target = probe_reference_path(model_path)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as handle:  # np.savez would add ".npz" to a name that lacks it
        np.savez_compressed(
            handle,
            sha256=np.array(sha256 or sha256_of(model_path)),
            class_probability=_probability(class_logits),
            mask_probability=np.round(_probability(mask_logits) * _PROBE_SCALE).astype(np.uint16),
        )
    os.replace(partial, target)
    return target


def read_probe_reference(model_path: Path, sha256: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The stored reference probabilities of the model whose SHA-256 is ``sha256``; None when absent or stale."""
    path = probe_reference_path(model_path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["sha256"]) != sha256:
                log.info("%s: made for another model; onnxruntime answers the probe itself", path)
                return None
            mask = stored["mask_probability"].astype(np.float64) / _PROBE_SCALE
            return stored["class_probability"].astype(np.float64), mask
    except Exception as error:  # unreadable (torn zip, wrong keys or types): the live reference still works
        log.info("%s: unreadable (%s); onnxruntime answers the probe itself", path, error)
        return None


def _return_freed_memory() -> None:
    """Hand the freed heap back to the system (glibc only), so OpenVINO's own allocator does not stack on it."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        pass


#: Timed runs of each runtime on one probe image when ``auto`` chooses (after one warm-up run each).
PROBE_TIMING_RUNS = 5


def _median_ms(network, image: np.ndarray) -> float:
    """Median milliseconds of ``network.run(image)`` after a warm-up run (the first one allocates)."""
    network.run(image)
    times = []
    for _ in range(PROBE_TIMING_RUNS):
        started = time.perf_counter()
        network.run(image)
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1000


def open_network(
    model_path: Path, backend: str = DEFAULT_BACKEND, threads: Optional[int] = None, sha256: Optional[str] = None
):
    """The model on ``backend``; ``auto``: the faster of the two runtimes that answer alike, on this machine.

    ``auto`` takes OpenVINO only when it is installed, answers like onnxruntime on the probe, and runs
    the probe faster than onnxruntime here: it is not faster on every CPU (1.3x faster on one 2-core
    Xeon, 1.35x slower on another of the same model name; docs/benchmarks.md). ``sha256`` (the
    verified model's digest) lets the parity check use the answers stored beside the model.
    """
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKEND_CHOICES)}")
    if backend == ONNXRUNTIME or (backend == AUTO and not openvino_installed()):
        return OnnxRuntimeNetwork(model_path, threads)
    if backend == OPENVINO:
        if not openvino_installed():
            raise ModelError("the OpenVINO backend is not installed (pip install 'busassist[openvino]')")
        return OpenVinoNetwork(model_path, threads)
    metadata = read_metadata(model_path)
    if metadata.quantized:
        # OpenVINO's int8 arithmetic rounds differently from onnxruntime's (0.0007 in probability on the int8
        # of 804d8d00, bundled until 2026-12-07: 7x the tolerance): the check would fail on every load, so it
        # is not run.
        log.info(
            "%s: an int8 model: onnxruntime (OpenVINO's int8 answers differ; --backend openvino to force)", model_path
        )
        return OnnxRuntimeNetwork(model_path, threads)
    batch = probe_batch(metadata.input_size)
    expected = read_probe_reference(model_path, sha256) if sha256 else None
    # The reference runs first and is released before OpenVINO compiles, so the two never hold their
    # working memory together (one worker's peak stays that of one runtime, plus the mapped library).
    reference = OnnxRuntimeNetwork(model_path, threads)
    if expected is None:
        class_logits, mask_logits = _one_image_at_a_time(reference, batch)
        expected = (_probability(class_logits), _probability(mask_logits))
    reference_ms = _median_ms(reference, batch[:1])
    del reference
    _return_freed_memory()
    try:
        candidate = OpenVinoNetwork(model_path, threads)
        problem = parity_problem(candidate, expected, batch)
        candidate_ms = _median_ms(candidate, batch[:1]) if problem is None else float("inf")
    except ModelError as error:
        problem = str(error)
    except Exception as error:  # a runtime failing on the probe is a failed check, not a crash
        problem = f"{error.__class__.__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if problem:
        log.warning("%s: OpenVINO not used, it does not answer like onnxruntime (%s)", model_path, problem)
        return OnnxRuntimeNetwork(model_path, threads)
    if candidate_ms >= reference_ms:
        log.info(
            "%s: OpenVINO answers like onnxruntime but is not faster on this machine (%.1f against %.1f ms)",
            model_path,
            candidate_ms,
            reference_ms,
        )
        del candidate
        _return_freed_memory()
        return OnnxRuntimeNetwork(model_path, threads)
    return candidate
