"""``training.machine``: the CPU record that travels with every timing."""

from __future__ import annotations

from pathlib import Path

from busassist.training.machine import cpu_description


def test_the_cpu_and_the_flags_that_pick_kernels_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni sha_ni\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni sha_ni\n"
    )
    assert cpu_description(cpuinfo) == {"cpu": "AMD EPYC 9R14", "cpu_isa": "avx2 fma avx512f avx512_vnni"}


def test_without_cpuinfo_the_isa_is_empty_not_an_error(tmp_path: Path) -> None:
    assert cpu_description(tmp_path / "missing")["cpu_isa"] == ""
