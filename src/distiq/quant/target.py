"""CPU targets: which integer kernels ONNX Runtime runs on a machine, and which int8 grid they compute
exactly.

Why this exists: an int8 file is not one computation but several, one per instruction set. ONNX
Runtime's x86 u8 x s8 matrix kernels (QLinearConv, QGemm, DynamicQuantizeMatMul, all through MLAS's
QGEMM) multiply on x86 without VNNI with ``VPMADDUBSW``, which adds *pairs* of u8 x s8 products in a
signed 16-bit register and saturates: ``255 * 127 * 2 = 64,770`` does not fit in ``32,767``. A
calibrated model then computes something else than what was calibrated, and what the simulation
predicted (the EPYC seen here lost 2.5 points on the digits and 6 on Fashion-MNIST this way). With
VNNI (``VPDPBUSD``, AVX-512 VNNI or AVX-VNNI), AMX, and on ARM64 (widening multiplies, ``UDOT``/
``SDOT``), products accumulate in 32 bits and nothing saturates.

The cure on a saturating target is the grid ONNX Runtime's ``reduce_range`` uses: weights on
``[-64, 64]``. Then ``255 * 64 * 2 = 32,640`` fits, the integer kernel computes exactly what the
fake-quantized model computes, and the cost is one bit of weight resolution on a per-channel grid
(measured in docs/quantization.md against U8U8, which is exact but slower than float here).
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from distiq.errors import DistiqError

#: Largest |int8 weight| whose pairwise u8 products cannot saturate int16: 2 * 255 * 64 <= 32767.
SAFE_WEIGHT_MAX = 64


@dataclass(frozen=True)
class Target:
    """One int8 execution path of ONNX Runtime's CPU provider.

    Attributes:
        name: What ``target=`` takes.
        saturates: Whether u8 x s8 kernels sum product pairs in int16 (so 8-bit weights need
            ``[-64, 64]``).
        kernel: The instruction doing the integer multiply-accumulate, for reports.
    """

    name: str
    saturates: bool
    kernel: str

    def weight_max(self, bits: int) -> int:
        """Largest integer of a symmetric ``bits``-bit weight grid this target computes exactly."""
        natural = 2 ** (bits - 1) - 1
        return min(natural, SAFE_WEIGHT_MAX) if self.saturates else natural


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("x86-avx2", True, "VPMADDUBSW (int16 pair sums, saturating)"),
        Target("x86-avx512", True, "AVX-512BW VPMADDUBSW (int16 pair sums, saturating)"),
        Target("x86-vnni", False, "VPDPBUSD (int32 accumulation)"),
        Target("x86-amx", False, "AMX TDPBUSD (int32 accumulation)"),
        Target("arm64", False, "NEON widening multiply-accumulate (int32)"),
        Target("arm64-dotprod", False, "UDOT/SDOT (int32 accumulation)"),
        # unknown machine: the grid that is exact on every kernel ORT has
        Target("generic", True, "unknown; assumed saturating"),
    )
}


def _flags_linux() -> tuple[set[str], str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set(), ""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("flags", "features") and not flags:
            flags = set(value.split())
        elif key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
    return flags, model


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(
            ["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def target_from_flags(machine: str, flags: set[str]) -> str:
    """The target of a CPU given ``platform.machine()`` and its feature flags (``/proc/cpuinfo``
    names, lower case)."""
    machine = machine.lower()
    if machine in ("x86_64", "amd64", "i686", "i386", "x86"):
        if {"amx_int8", "amx_tile"} <= flags:
            return "x86-amx"
        if "avx512_vnni" in flags or "avx_vnni" in flags:
            return "x86-vnni"
        if "avx512bw" in flags:
            return "x86-avx512"
        if "avx2" in flags:
            return "x86-avx2"
        return "generic"
    if machine in ("aarch64", "arm64"):
        return "arm64-dotprod" if "asimddp" in flags else "arm64"
    return "generic"


@functools.cache
def _probe() -> tuple[str, str]:
    machine = platform.machine()
    flags, model = _flags_linux()
    if not flags and platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string")
        features = _sysctl("machdep.cpu.features") + " " + _sysctl("machdep.cpu.leaf7_features")
        flags = {f.lower().replace(".", "_") for f in features.split()}
        flags |= {"avx512_vnni"} if "avx512vnni" in flags else set()
        flags |= {"avx512bw"} if "avx512bw" in flags else set()
        if _sysctl("hw.optional.arm.FEAT_DotProd") == "1":
            flags.add("asimddp")
    return target_from_flags(machine, flags), re.sub(r"\s+", " ", model or platform.processor() or machine)


def cpu_target() -> str:
    """This machine's int8 path: ``"x86-avx2"`` (AVX2, no VNNI), ``"x86-avx512"`` (AVX-512 without
    VNNI), ``"x86-vnni"`` (AVX-512 VNNI or AVX-VNNI), ``"x86-amx"``, ``"arm64"``, ``"arm64-dotprod"``
    or ``"generic"`` (unknown, treated as saturating)."""
    return _probe()[0]


def cpu_info() -> dict[str, str]:
    """``{"model": CPU model name, "target": cpu_target()}``, for reports of where a figure was measured."""
    target, model = _probe()
    return {"model": model, "target": target}


def resolve_target(name: str) -> Target:
    """The :class:`Target` called ``name``, ``"auto"`` meaning this machine's."""
    key = cpu_target() if name == "auto" else name
    if key not in TARGETS:
        raise DistiqError(f"target: unknown CPU target {name!r}; known: auto, {', '.join(TARGETS)}")
    return TARGETS[key]


__all__ = ["SAFE_WEIGHT_MAX", "TARGETS", "Target", "cpu_info", "cpu_target", "resolve_target"]
