"""What this machine is, as far as the speed of a runtime goes (torch-free): the CPU's name and the
instruction sets the runtimes' kernels choose between (AVX2, AVX-512 VNNI and BF16, AMX)."""

from __future__ import annotations

import platform
from pathlib import Path

#: The SIMD extensions that decide which INT8, bf16 and fp32 kernels a runtime runs.
INSTRUCTION_SETS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    """The CPU model (``model name`` of /proc/cpuinfo on Linux)."""
    name = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), "")
    return name or platform.processor() or platform.machine()


def instruction_sets() -> tuple[str, ...]:
    """Which of :data:`INSTRUCTION_SETS` the CPU has, in that order."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith("flags")), [])
    return tuple(name for name in INSTRUCTION_SETS if name in flags)
