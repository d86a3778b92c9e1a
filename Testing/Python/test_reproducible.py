"""A training gives the same weights on any x86-64 CPU (training/reproducible.py).

The kernels PyTorch would send to CPU-specific code (MKL's matrix products, the AVX2 gather in
``grid_sample``) are replaced by equivalents that differ only by rounding, and the training command
pins the rest. One test trains natively and under QEMU emulating an AMD EPYC and checks one
weight checksum; it runs wherever ``qemu-x86_64`` is installed (``make cpu-emulator`` installs it when apt
is available; ``.ci/run`` does) and is skipped otherwise.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from emulated_cpu import checkout_environment, emulated, needs_qemu

from busassist.training.augment import affine_grid, bilinear_sample
from busassist.training.model import ClassifierHead, ConvolutionLinear
from busassist.training.reproducible import PINNED_ENVIRONMENT, TRAINING_THREADS, is_pinned


def test_bilinear_sample_is_grid_sample_up_to_rounding() -> None:
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(3, 2, 19, 23, generator=generator) * 255
    # Grids reaching past every border, so that the zero padding is exercised, plus exact pixel centres.
    theta = (torch.rand(3, 2, 3, generator=generator) - 0.5) * 2.5
    theta[0] = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    grid = affine_grid(theta, 17, 21)
    ours = bilinear_sample(images, grid)
    reference = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, atol=1e-3, rtol=0)
    assert torch.equal(ours[0, :, :17, :21] > 0, reference[0, :, :17, :21] > 0)


def test_affine_grid_is_pytorchs_up_to_rounding() -> None:
    theta = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(5))
    reference = F.affine_grid(theta, [4, 1, 13, 29], align_corners=False)
    assert torch.allclose(affine_grid(theta, 13, 29), reference, atol=1e-5, rtol=0)


def test_convolution_linear_is_linear_and_exports_as_gemm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layer = ConvolutionLinear(64, 8)
    x = torch.randn(5, 64)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5)
    assert set(layer.state_dict()) == {"weight", "bias"}  # checkpoints of nn.Linear still load

    import onnx

    head = ClassifierHead(64).eval()
    path = tmp_path / "head.onnx"
    torch.onnx.export(head, (torch.randn(1, 64, 3, 3),), str(path), dynamo=False)
    kinds = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert kinds.count("Gemm") == 3 and "Conv" not in kinds


def _fit(out: Path, cache: Path, *prefix: str) -> Path:
    """A tiny training through the command line, as a user runs it (the pins are set on its first line)."""
    env = checkout_environment({key: value for key, value in os.environ.items() if key not in PINNED_ENVIRONMENT})
    command = [
        *prefix, sys.executable, "-m", "busassist.training", "fit", "--out", str(out), "--no-pretrained",
        "--image-size", "32", "--epochs", "1", "--limit", "10", "--batch-size", "4", "--seed", "7",
        "--cache-dir", str(cache),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def _weights_checksum(run: Path) -> str:
    checkpoint = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    digest = hashlib.sha256()
    for name, tensor in sorted(checkpoint["model"].items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _history_without_timing(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open(newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def _has_avx2() -> bool:
    try:
        return "avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def native_run(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("native")
    return _fit(base / "run", base / "cache")


@pytest.mark.skipif(not _has_avx2(), reason="the pinned kernels need AVX2")
def test_training_command_pins_the_arithmetic_and_records_it(native_run: Path) -> None:
    record = json.loads((native_run / "config.json").read_text())["arithmetic"]
    assert is_pinned(record), record
    assert record["threads"] == TRAINING_THREADS


def test_same_command_same_weights(native_run: Path, tmp_path: Path) -> None:
    again = _fit(tmp_path / "run", tmp_path / "cache")
    assert _weights_checksum(again) == _weights_checksum(native_run)
    assert _history_without_timing(again) == _history_without_timing(native_run)


@needs_qemu
@pytest.mark.skipif(not _has_avx2(), reason="the pinned kernels need AVX2")
def test_an_amd_epyc_trains_the_same_weights(native_run: Path, tmp_path: Path) -> None:
    """Emulated AMD EPYC (AVX2, AuthenticAMD: MKL's other code path) against this CPU, from its own cache."""
    emulated_run = _fit(tmp_path / "run", tmp_path / "cache", *emulated("EPYC-Rome"))
    assert _weights_checksum(emulated_run) == _weights_checksum(native_run)
    assert _history_without_timing(emulated_run) == _history_without_timing(native_run)


def test_an_unpinned_training_warns_instead_of_printing(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """In a process that did not pin (a test session, a notebook) the trainer says so as a warning, so a
    caller's own one-line errors stay one line."""
    from training_fixtures import tiny_config

    from busassist.training.reproducible import UnpinnedArithmeticWarning
    from busassist.training.trainer import train

    for name in PINNED_ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    config = tiny_config(shared_dir / "data" / "busi", tmp_path / "run", tmp_path / "cache", limit=12, image_size=32)
    with pytest.warns(UnpinnedArithmeticWarning, match="not pinned"):
        train(config)
    assert "not pinned" not in capsys.readouterr().err


# One training step whose weights hold subnormal numbers, in a process started as busassist-train
# starts (pins, then the flush, then PyTorch's threads): prints the step's weight checksum and whether
# the step met any subnormal at all. Argument: "flush" or "no-flush".
_SUBNORMAL_STEP = """
import hashlib, sys
from busassist.training.reproducible import flush_subnormals, pin_arithmetic, subnormals_flushed_everywhere
pin_arithmetic()
if sys.argv[1] == "flush":
    flush_subnormals()
import torch
from busassist.training.losses import multitask_loss
from busassist.training.model import EMTNet, Task
torch.set_num_threads(2)
torch.manual_seed(0)
network = EMTNet(Task.MULTITASK)
with torch.no_grad():  # a late-training picture: a decoder layer's weights far below float32's normal range
    for parameter in network.segmenter.parameters():
        parameter.mul_(1e-36)
optimiser = torch.optim.Adam(network.parameters(), lr=1e-3, fused=True)
images = torch.rand(2, 1, 32, 32)
masks = (torch.rand(2, 1, 32, 32) > 0.5).float()
labels = torch.tensor([0.0, 1.0])
out = network(images)
loss, _ = multitask_loss(out.class_logit, labels, out.mask_logit, masks, 3.0, 1.5, 1.0, "batch", 0.0)
loss.backward()
optimiser.step()
digest = hashlib.sha256()
subnormal = 0
for name, tensor in sorted(network.state_dict().items()):
    digest.update(tensor.contiguous().numpy().tobytes())
    if tensor.is_floating_point():
        small = tensor.abs()
        subnormal += int(((small > 0) & (small < torch.finfo(torch.float32).tiny)).sum())
print(digest.hexdigest(), subnormal, subnormals_flushed_everywhere())
"""


def _subnormal_step(flush: bool, *prefix: str) -> tuple[str, int, bool]:
    env = checkout_environment({key: value for key, value in os.environ.items() if key not in PINNED_ENVIRONMENT})
    command = [*prefix, sys.executable, "-c", _SUBNORMAL_STEP, "flush" if flush else "no-flush"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    checksum, subnormal, flushed = done.stdout.split()
    return checksum, int(subnormal), flushed == "True"


@pytest.mark.skipif(not _has_avx2(), reason="the pinned kernels need AVX2")
def test_flushed_step_meets_subnormals_and_flushes_them() -> None:
    kept = _subnormal_step(flush=False)
    flushed = _subnormal_step(flush=True)
    assert kept[1] > 0 and not kept[2]  # the step really holds subnormals when nothing flushes them
    assert flushed[1] == 0 and flushed[2]
    assert flushed[0] != kept[0]


@needs_qemu
@pytest.mark.skipif(not _has_avx2(), reason="the pinned kernels need AVX2")
def test_an_amd_epyc_flushes_subnormals_the_same_way() -> None:
    """Flush-to-zero is the SSE control register's behaviour on Intel and AMD alike: one checksum."""
    assert _subnormal_step(True, *emulated("EPYC-Rome")) == _subnormal_step(flush=True)
