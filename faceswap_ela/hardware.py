"""The machine the CNN runs on: the Keras backend's device, the CPU's vector features, and the
numeric precision (Keras dtype policy) chosen for it.

``train.precision: auto`` picks mixed bfloat16 on a CPU with AMX or AVX-512-BF16 (oneDNN runs
bfloat16 convolutions and matrix products there natively), mixed float16 on a CUDA GPU, and float32
elsewhere. Under either mixed policy the variables stay float32 and the softmax output is float32,
so the loss is computed in float32; mixed float16 also gets Keras' loss scaling at compile.
"""

from __future__ import annotations

import importlib
import logging
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import get_args

from faceswap_ela.params import Precision

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = get_args(Precision)
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# the flags worth recording beside a speed figure
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_field(name: str) -> str | None:
    """The value of the first ``name`` line of /proc/cpuinfo (None where there is none)."""
    for line in _cpuinfo():
        if line.startswith(name):
            return line.split(":", 1)[1].strip()
    return None


def cpu_name() -> str:
    return cpu_field("model name") or platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> tuple[str, ...]:
    """The REPORTED_FLAGS this CPU has (from /proc/cpuinfo; empty where it can't be read)."""
    for line in _cpuinfo():
        if line.startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return tuple(flag for flag in REPORTED_FLAGS if flag in present)
    return ()


def describe_device() -> dict[str, str]:
    """The Keras backend and the device it runs on: ``{"backend", "kind" (gpu|cpu), "device"}``."""
    import keras

    backend = keras.backend.backend()
    gpu = None
    try:
        if backend == "tensorflow":
            tf = importlib.import_module("tensorflow")
            gpus = tf.config.list_physical_devices("GPU")
            if gpus:
                details = tf.config.experimental.get_device_details(gpus[0])
                gpu = details.get("device_name", gpus[0].name)
        elif backend == "torch":
            torch = importlib.import_module("torch")
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
        elif backend == "jax":
            jax = importlib.import_module("jax")
            gpus = [d for d in jax.devices() if d.platform == "gpu"]
            if gpus:
                gpu = gpus[0].device_kind
    except Exception as exc:  # a broken driver must not stop the work on the CPU
        log.warning("could not query the GPU through %s: %s", backend, exc)
    if gpu:
        return {"backend": backend, "kind": "gpu", "device": f"GPU: {gpu}"}
    return {"backend": backend, "kind": "cpu", "device": f"CPU: {cpu_name()} ({os.cpu_count()} cores)"}


@dataclass(frozen=True)
class PrecisionChoice:
    requested: str  # what params.yaml asked for
    precision: str  # float32 | bfloat16 | float16
    policy: str  # the Keras dtype policy
    reason: str
    backend: str
    device_kind: str  # cpu | gpu
    device: str  # describe_device()'s description
    cpu_flags: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["cpu_flags"] = " ".join(self.cpu_flags)
        return out


def choose_precision(
    requested: str, device: dict[str, str], flags: tuple[str, ...] | None = None
) -> PrecisionChoice:
    """The precision for ``requested`` (one of PRECISIONS) on ``device`` (describe_device()'s
    answer) on a CPU with ``flags`` (by default this CPU's). An explicit choice is kept, with a
    warning where the hardware has no fast path for it."""
    device_kind = device["kind"]
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}")
    flags = cpu_flags() if flags is None else tuple(flags)
    has_bf16 = [flag for flag in BF16_FLAGS if flag in flags]
    if requested == "auto":
        if device_kind == "gpu":
            precision, reason = "float16", "auto: a GPU"
        elif has_bf16:
            precision, reason = "bfloat16", f"auto: the CPU has {' and '.join(has_bf16)}"
        else:
            precision, reason = "float32", "auto: neither a GPU nor a CPU with AMX or AVX-512-BF16"
    else:
        precision, reason = requested, "asked for"
        if requested == "bfloat16" and device_kind == "cpu" and not has_bf16:
            log.warning("bfloat16 asked for on a CPU without AMX or AVX-512-BF16: it is emulated, slowly")
        if requested == "float16" and device_kind == "cpu":
            log.warning("float16 asked for on a CPU: most CPUs emulate it, slowly")
    return PrecisionChoice(
        requested=requested,
        precision=precision,
        policy=POLICIES[precision],
        reason=reason,
        backend=device["backend"],
        device_kind=device_kind,
        device=device["device"],
        cpu_flags=flags,
    )


def resolve_precision(requested: str) -> PrecisionChoice:
    """The precision for ``requested`` on this machine's device; logged."""
    choice = choose_precision(requested, describe_device())
    log.info(
        "precision %s (Keras policy %s; %s) on %s; CPU flags: %s",
        choice.precision, choice.policy, choice.reason, choice.device, " ".join(choice.cpu_flags) or "-",
    )  # fmt: skip
    return choice
