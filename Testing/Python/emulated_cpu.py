"""Other x86-64 CPUs for the cross-CPU tests (QEMU user-mode emulation), and the environment in which a
subprocess imports ``busassist`` from this checkout."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Skips a test where ``qemu-x86_64`` is missing; ``make cpu-emulator`` installs it with apt.
needs_qemu = pytest.mark.skipif(
    shutil.which("qemu-x86_64") is None, reason="qemu-x86_64 not installed (make cpu-emulator)"
)


def emulated(cpu: str) -> list[str]:
    """The command prefix that runs a program on QEMU's model of ``cpu`` (e.g. EPYC-Rome, Haswell)."""
    return ["qemu-x86_64", "-cpu", cpu]


def checkout_environment(environment: dict[str, str] | None = None) -> dict[str, str]:
    """``environment`` (default: this process's) with this checkout's package first on PYTHONPATH."""
    values = dict(os.environ if environment is None else environment)
    values["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "BUSAssist"), values.get("PYTHONPATH", "")])
    return values
