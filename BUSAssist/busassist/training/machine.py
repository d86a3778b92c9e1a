"""The CPU a measurement ran on, and the instruction sets that decide its kernels.

Speed figures (and int8's gain, which rests on VNNI) mean little without the CPU that produced them, so
every timing the project writes carries this record: the benchmark, and ``tools quantize``'s
``int8_comparison.json``.
"""

from __future__ import annotations

import platform
from pathlib import Path

#: The flags that change which kernels onnxruntime and PyTorch pick (int8 dot products: VNNI, AMX).
WANTED_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile")


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """``{"cpu": model name, "cpu_isa": the wanted flags it has}``; the ISA is empty off Linux."""
    model, flags = platform.processor(), set()
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"cpu": model, "cpu_isa": " ".join(flag for flag in WANTED_FLAGS if flag in flags)}
