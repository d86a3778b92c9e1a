"""A 7-bit int8 model answers the same on a CPU without VNNI or AVX-512.

onnxruntime picks its int8 kernels from the CPU: VNNI's dot product here, AVX2's ``vpmaddubsw`` on an
older CPU, whose 16-bit sums saturate with 8-bit weights. ``make int8`` quantises with 7-bit weights
(``--reduce-range``) so that they cannot; this checks a model quantised that way (the fixture model's
int8 form: this release bundles no int8 model, reports/int8-98770c53) on an emulated Intel Haswell (AVX2
only) against this CPU, bit for bit. (The float32 model's answers differ there by ~4e-6, so the emulated CPU
does take other kernels.) Skipped where ``qemu-x86_64`` is not installed (``make cpu-emulator``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from emulated_cpu import checkout_environment, emulated, needs_qemu

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


@needs_qemu
def test_a_7_bit_int8_model_is_the_same_without_vnni(shared_dir: Path, tmp_path: Path, int8_onnx: Path) -> None:
    from PIL import Image

    from busassist.core.preprocessing import preprocess

    path = shared_dir / "data" / "busi" / "malignant" / "images" / "malignant (1).png"
    network_input, _ = preprocess(np.asarray(Image.open(path).convert("L")))
    image = tmp_path / "input.npy"
    batch = network_input.reshape(1, 1, *network_input.shape[-2:]).astype(np.float32)
    np.save(image, batch)
    model = int8_onnx
    here = _run([], model, image, tmp_path / "here.npz")
    haswell = _run(emulated("Haswell"), model, image, tmp_path / "haswell.npz")
    assert len(here) == len(haswell) == 2
    for ours, theirs in zip(here, haswell):
        assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())
