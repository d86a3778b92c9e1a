"""A 7-bit int8 model answers the same on a CPU without VNNI or AVX-512.

onnxruntime picks its int8 kernels from the CPU: VNNI's dot product here, AVX2's ``vpmaddubsw`` on an
older CPU, whose 16-bit sums saturate with 8-bit weights. ``make int8`` quantises with 7-bit weights
(``--reduce-range``) so that they cannot; this checks a model quantised that way (the fixture model's
int8 form: this release bundles no int8 model, reports/int8-98770c53) on an emulated Intel Haswell (AVX2
only) against this CPU, bit for bit. (The float32 model's answers differ there by ~4e-6, so the emulated CPU
does take other kernels.) The same holds with 8-bit weights in the depthwise convolutions
(``--full-range-depthwise``), whose kernels add in 32 bits, while 8-bit weights everywhere do differ there.
Skipped where ``qemu-x86_64`` is not installed (``make cpu-emulator``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from emulated_cpu import checkout_environment, emulated, needs_qemu

pytest.register_assert_rewrite("model_fixtures")
from model_fixtures import FixtureModel, build_int8_test_model  # noqa: E402

pytest_plugins = ["model_fixtures"]

RUN_MODEL = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = 2
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
outputs = session.run(None, {session.get_inputs()[0].name: np.load(sys.argv[2])})
np.savez(sys.argv[3], *outputs)
"""


def _run(prefix: list[str], model: Path, image: Path, out: Path) -> list[np.ndarray]:
    done = subprocess.run(
        [*prefix, sys.executable, "-c", RUN_MODEL, str(model), str(image), str(out)],
        env=checkout_environment(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as saved:
        return [saved[name] for name in saved.files]


def _input(shared_dir: Path, tmp_path: Path) -> Path:
    from PIL import Image

    from busassist.core.preprocessing import preprocess

    path = shared_dir / "data" / "busi" / "malignant" / "images" / "malignant (1).png"
    network_input, _ = preprocess(np.asarray(Image.open(path).convert("L")))
    image = tmp_path / "input.npy"
    np.save(image, network_input.reshape(1, 1, *network_input.shape[-2:]).astype(np.float32))
    return image


def _here_and_on_haswell(model: Path, image: Path, tmp_path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    here = _run([], model, image, tmp_path / f"{model.stem}-here.npz")
    haswell = _run(emulated("Haswell"), model, image, tmp_path / f"{model.stem}-haswell.npz")
    assert len(here) == len(haswell) == 2
    return here, haswell


def _host_has_vnni() -> bool:
    """Whether this CPU has a VNNI dot product (onnxruntime's non-saturating int8 path)."""
    from busassist.training.machine import cpu_description

    return bool({"avx512_vnni", "avx_vnni"} & set(cpu_description()["cpu_isa"].split()))


@needs_qemu
def test_a_7_bit_int8_model_is_the_same_without_vnni(shared_dir: Path, tmp_path: Path, int8_onnx: Path) -> None:
    here, haswell = _here_and_on_haswell(int8_onnx, _input(shared_dir, tmp_path), tmp_path)
    for ours, theirs in zip(here, haswell):
        assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())


@needs_qemu
def test_8_bit_depthwise_weights_are_the_same_without_vnni(
    shared_dir: Path, tmp_path: Path, emtnet_onnx: FixtureModel
) -> None:
    """``--full-range-depthwise``: onnxruntime's depthwise kernels add in 32 bits, so 8-bit depthwise weights
    cannot saturate, while 8-bit weights everywhere do (checked where this CPU has VNNI, so that only the
    emulated CPU takes the saturating path)."""
    import onnx

    from busassist.training.quantize import depthwise_weights

    assert len(depthwise_weights(onnx.load(str(emtnet_onnx.path)).graph)) == 13  # MobileNetV1's, all of them
    image = _input(shared_dir, tmp_path)
    if _host_has_vnni():  # elsewhere this CPU takes the saturating path too, and the two agree
        everywhere = build_int8_test_model(emtnet_onnx.path, tmp_path / "everywhere.onnx", reduce_range=False)
        here, haswell = _here_and_on_haswell(everywhere, image, tmp_path)
        assert any(not np.array_equal(ours, theirs) for ours, theirs in zip(here, haswell))
    depthwise = build_int8_test_model(emtnet_onnx.path, tmp_path / "depthwise.onnx", full_range_depthwise=True)
    here, haswell = _here_and_on_haswell(depthwise, image, tmp_path)
    for ours, theirs in zip(here, haswell):
        assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())
