"""Training arithmetic that gives the same weights on any x86-64 CPU with AVX2, Intel or AMD.

Why: a training on an AVX2 AMD EPYC and one on an AVX-512 Intel Xeon diverged after the first step
(different kernels sum in different orders), and fifty epochs later they were two different models
whose cards differ beyond noise (issue 17). The libraries under PyTorch pick their kernels from the
CPU; each one has a switch that pins the choice, and this module pins all of them to AVX2, the
widest instruction set every x86-64 CPU made since 2015 has:

* PyTorch's own vectorised kernels (``ATEN_CPU_CAPABILITY``);
* oneDNN, which runs the convolutions (``ONEDNN_MAX_CPU_ISA``);
* Intel MKL (``MKL_CBWR``), which PyTorch calls for matrix products. MKL ignores the pin on AMD
  CPUs, so the training code keeps MKL out of the loop instead: the classifier's linear layers run as
  1x1 convolutions (``model.ClassifierHead``), augmentation builds its sampling grid without a matrix
  product (``augment.affine_grid``), and Adam runs fused (no MKL vector maths);
* numpy's OpenBLAS, which resamples the images once for the training cache (``OPENBLAS_CORETYPE``);
* the number of threads, which decides how a sum is split (``TrainConfig.threads``, default 2);
* subnormal floats flushed to zero in every thread (``flush_subnormals``). Not for the sums' order,
  for time: late in a full training the weights and gradients hold numbers below 1.2e-38, which x86
  CPUs compute in slow microcode, and epochs 30-50 took twice as long as the first ones
  (``bench/subnormal_steps.py``). Flush-to-zero and denormals-are-zero are the SSE control register's
  documented behaviour, the same on Intel and AMD. The flag is per thread and a new thread inherits it
  from the one that creates it, so it is set at process start, before PyTorch creates its worker
  threads (a flush set mid-run did not speed up a 2-thread training in ``bench/subnormal_steps.py``),
  and every run records whether all threads flush (``subnormals_flushed_everywhere``).

The variables must be in the environment before PyTorch and numpy load, so ``busassist-train``
(``python -m busassist.training``) sets them first (``pin_arithmetic``, then ``flush_subnormals``), and
only that process:
importing the CLI module elsewhere changes nothing. Values a user sets explicitly are kept, and
``arithmetic_record`` writes what a run actually used into its ``config.json``. Verified by
``Testing/Python/test_reproducible.py``: a tiny training natively and under QEMU emulating an AMD EPYC
gives one weight checksum (``make cpu-emulator`` installs QEMU; docs/training.md#reproducible-on-any-cpu).
A GPU training is not covered.
"""

from __future__ import annotations

import os

#: The environment that pins every CPU kernel choice to AVX2 (see the module docstring).
PINNED_ENVIRONMENT = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "OPENBLAS_CORETYPE": "Haswell",
}

#: Threads of a reproducible training: the reduction split depends on it, so it is part of the recipe.
TRAINING_THREADS = 2


class UnpinnedArithmeticWarning(UserWarning):
    """A CPU training ran with unpinned kernels: its weights are reproducible on this CPU type only."""


def pin_arithmetic() -> None:
    """Pin the kernel choices for this process, keeping any value the user set explicitly.

    Call before anything imports torch or numpy; afterwards it is too late for most libraries, and
    ``arithmetic_record`` will show it.
    """
    for name, value in PINNED_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def flush_subnormals() -> None:
    """Flush subnormal floats to zero in this thread and in every thread it creates from now on.

    Call right after ``pin_arithmetic`` and before any tensor operation: PyTorch creates its worker
    threads at the first parallel operation, and only threads created after this call inherit it.
    """
    import torch

    torch.set_flush_denormal(True)


def subnormals_flushed_everywhere() -> bool:
    """Whether every thread of PyTorch's pool flushes subnormals, measured rather than assumed.

    Multiplies a million subnormal numbers by one, an operation PyTorch splits over all its threads:
    each thread that does not flush leaves its share non-zero.
    """
    import torch

    tiny = torch.full((1 << 20,), 1e-39, dtype=torch.float32)
    return int((tiny * 1.0).count_nonzero()) == 0


def arithmetic_record() -> dict[str, object]:
    """What this process computes with, for a run's ``config.json``: equal records, equal weights."""
    import torch

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "environment": {name: os.environ.get(name) for name in PINNED_ENVIRONMENT},
        "subnormals_flushed": subnormals_flushed_everywhere(),
    }


def is_pinned(record: dict[str, object]) -> bool:
    """Whether a run computed with the pinned arithmetic: PyTorch's capability AVX2, the pins in place
    and subnormals flushed in every thread (runs recorded before the flush was pinned are not)."""
    environment = record.get("environment") or {}
    return (
        record.get("cpu_capability") == "AVX2"
        and environment == PINNED_ENVIRONMENT
        and record.get("subnormals_flushed") is True
    )
