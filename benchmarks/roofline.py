"""The peak arithmetic of this CPU, for setting training speeds against: the FP32 roofline of its
AVX-512 (or AVX2) FMA pipes and, on a CPU with AMX, the bfloat16 roofline of its tile unit.

FP32: cores x 512-bit FMA operations per cycle x 16 lanes x 2 FLOP x clock.
AMX: cores x 1,024 bfloat16 FLOP per cycle (one 16 x 32 by 32 x 16 tile product, 16,384 FLOP,
every 16 cycles) x clock: 16 times the FP32 roofline of a Xeon with two FMA units.
A training sample of the paper's CNN costs about 2.6 GFLOP (forward 0.87, backward about twice that).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

GFLOP_PER_SAMPLE = 2.6
AMX_FLOP_PER_CYCLE = 1024


def cpu_clock_ghz() -> float | None:
    from faceswap_ela import hardware

    value = hardware.cpu_field("cpu MHz")
    try:
        return float(value) / 1000 if value else None
    except ValueError:
        return None


def fma_units(name: str, flags: tuple[str, ...], family: int | None) -> tuple[int, str]:
    """512-bit FMA operations per cycle and core: 2 on Intel Xeons with AVX-512 (ports 0 and 5) and
    on AMD Zen 5 (family 26, a full 512-bit datapath), 1 on AMD Zen 4 (family 25: two 256-bit
    pipes that a 512-bit FMA takes together)."""
    if "avx512f" not in flags:
        return 1, "no AVX-512: counted as one 512-bit FMA per cycle"
    if "AMD" in name.upper():
        if (family or 0) >= 26:
            return 2, "AMD Zen 5: two 512-bit FMA pipes"
        return 1, "AMD Zen 4: two 256-bit FMA pipes, one 512-bit FMA per cycle"
    return 2, "two AVX-512 FMA units"


@dataclass(frozen=True)
class Roofline:
    cores: int
    clock_ghz: float
    fma_units: int
    fma_why: str
    amx: bool

    @property
    def fp32_gflops(self) -> float:
        return self.cores * self.fma_units * 16 * 2 * self.clock_ghz

    @property
    def amx_gflops(self) -> float | None:
        return self.cores * AMX_FLOP_PER_CYCLE * self.clock_ghz if self.amx else None

    def peak_gflops(self, precision: str) -> float:
        """The roof a precision runs under: AMX's for bfloat16 where there is AMX, else FP32's."""
        if precision == "bfloat16" and self.amx_gflops:
            return self.amx_gflops
        return self.fp32_gflops

    def lines(self, rates: dict[str, float]) -> list[str]:
        """The rooflines in GFLOP/s and training samples/s, and each precision's share of them
        (``rates``: training samples/s by precision)."""
        fp32 = self.fp32_gflops
        out = [
            f"FP32 roofline: {self.cores} cores x {self.fma_units} FMA unit(s) ({self.fma_why}) x 16 lanes "
            f"x 2 x {self.clock_ghz:.2f} GHz = {fp32:.0f} GFLOP/s = {fp32 / GFLOP_PER_SAMPLE:.0f} training "
            f"samples/s at {GFLOP_PER_SAMPLE} GFLOP each"
        ]
        if self.amx_gflops:
            amx = self.amx_gflops
            out.append(
                f"AMX bfloat16 roofline: {self.cores} cores x {AMX_FLOP_PER_CYCLE} FLOP/cycle x "
                f"{self.clock_ghz:.2f} GHz = {amx:.0f} GFLOP/s = {amx / GFLOP_PER_SAMPLE:.0f} training "
                "samples/s"
            )
        for precision, rate in rates.items():
            shares = [f"{rate * GFLOP_PER_SAMPLE / fp32:.0%} of the FP32 roofline"]
            if self.amx_gflops:
                shares.append(f"{rate * GFLOP_PER_SAMPLE / self.amx_gflops:.1%} of the AMX roofline")
            out.append(f"{precision}: {rate:.1f} samples/s = {', '.join(shares)}")
        return out


def this_cpu() -> Roofline | None:
    """This CPU's rooflines, or None where its clock can't be read."""
    from faceswap_ela import hardware

    clock = cpu_clock_ghz()
    if not clock:
        return None
    flags = hardware.cpu_flags()
    family = hardware.cpu_field("cpu family")
    units, why = fma_units(hardware.cpu_name(), flags, int(family) if family and family.isdigit() else None)
    return Roofline(len(os.sched_getaffinity(0)), clock, units, why, "amx_bf16" in flags)
