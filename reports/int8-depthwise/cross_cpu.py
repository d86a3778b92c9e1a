"""Step 2 of PLAN.md: do an int8 file's outputs match bit for bit on this CPU and on an emulated Haswell?

    python reports/int8-depthwise/cross_cpu.py INT8 SPLIT_JSON DATA_ROOT [IMAGES]

Runs IMAGES (default 8) training images, taken evenly from the training split, through onnxruntime
natively and under ``qemu-x86_64 -cpu Haswell`` (AVX2, no VNNI, no AVX-512: the ``vpmaddubsw`` path
that saturates with 8-bit GEMM weights), and prints one JSON line: images compared, how many differ,
and the largest absolute difference of either output. No labels are read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from busassist.core.preprocessing import preprocess
from busassist.training.busi import discover, load_image

RUN_MODEL = """
import sys, numpy as np, onnxruntime as ort
options = ort.SessionOptions(); options.intra_op_num_threads = 2
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
batch = np.load(sys.argv[2])
outputs = [session.run(None, {session.get_inputs()[0].name: batch[i:i + 1]}) for i in range(len(batch))]
np.savez(sys.argv[3], *[np.concatenate([o[k] for o in outputs]) for k in range(len(outputs[0]))])
"""


def run(prefix: list[str], model: str, batch: Path, out: Path) -> list[np.ndarray]:
    done = subprocess.run(
        [*prefix, sys.executable, "-c", RUN_MODEL, model, str(batch), str(out)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr[-2000:])
    with np.load(out) as saved:
        return [saved[name] for name in saved.files]


def main(model: str, split_json: str, data_root: str, count: str = "8") -> None:
    train = json.loads(Path(split_json).read_text())["train"]
    keys = train[:: max(1, len(train) // int(count))][: int(count)]
    cases = {case.key: case for case in discover(Path(data_root))}
    batch = np.stack([preprocess(load_image(cases[key]))[0] for key in keys]).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "batch.npy", batch)
        here = run([], model, Path(folder) / "batch.npy", Path(folder) / "here.npz")
        haswell = run(
            ["qemu-x86_64", "-cpu", "Haswell"], model, Path(folder) / "batch.npy", Path(folder) / "haswell.npz"
        )
    differing = sum(any(not np.array_equal(a[i], b[i]) for a, b in zip(here, haswell)) for i in range(len(keys)))
    largest = max(float(np.abs(a - b).max()) for a, b in zip(here, haswell))
    print(
        json.dumps({"model": model, "images": len(keys), "images_differing": differing, "largest_difference": largest})
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
