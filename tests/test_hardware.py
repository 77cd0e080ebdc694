"""The precision chosen for the hardware: auto, explicit choices, and what gets recorded."""

from __future__ import annotations

import logging

import pytest

from faceswap_ela import hardware

CPU = {"backend": "tensorflow", "kind": "cpu", "device": "CPU: test (2 cores)"}
GPU = {"backend": "torch", "kind": "gpu", "device": "GPU: test"}


@pytest.mark.parametrize(
    "device,flags,precision",
    [
        (CPU, ("avx512f", "amx_tile", "amx_bf16"), "bfloat16"),  # Intel Xeon with AMX
        (CPU, ("avx512f", "avx512_bf16"), "bfloat16"),  # AMD Zen 4
        (CPU, ("avx2", "fma", "avx512f"), "float32"),
        (CPU, (), "float32"),
        (GPU, (), "float16"),
        (GPU, ("amx_bf16",), "float16"),
    ],
)
def test_auto_follows_the_hardware(device, flags, precision):
    choice = hardware.choose_precision("auto", device, flags)
    assert choice.precision == precision
    assert (
        choice.policy
        == {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}[precision]
    )
    assert choice.reason.startswith("auto") and choice.requested == "auto"
    assert choice.cpu_flags == flags and choice.device == device["device"]


def test_an_explicit_choice_is_kept_and_a_slow_one_warned_about(caplog):
    with caplog.at_level(logging.WARNING):
        assert hardware.choose_precision("float32", CPU, ("amx_bf16",)).precision == "float32"
        assert not caplog.records
        assert hardware.choose_precision("bfloat16", CPU, ("avx2",)).policy == "mixed_bfloat16"
        assert "emulated" in caplog.text
        caplog.clear()
        assert hardware.choose_precision("float16", CPU, ()).policy == "mixed_float16"
        assert "emulate" in caplog.text
        caplog.clear()
        assert hardware.choose_precision("bfloat16", GPU, ()).precision == "bfloat16"
        assert not caplog.records
    with pytest.raises(ValueError, match="precision must be one of auto, float32, bfloat16, float16"):
        hardware.choose_precision("int8", CPU, ())


def test_this_machine_is_described():
    flags = hardware.cpu_flags()
    assert set(flags) <= set(hardware.REPORTED_FLAGS)
    choice = hardware.resolve_precision("auto")
    assert choice.cpu_flags == flags
    recorded = choice.as_dict()
    assert recorded["cpu_flags"] == " ".join(flags) and recorded["policy"] == choice.policy
    if choice.device_kind == "cpu":
        has_bf16 = any(flag in flags for flag in hardware.BF16_FLAGS)
        assert choice.precision == ("bfloat16" if has_bf16 else "float32")


def test_params_accept_the_precisions_and_refuse_others():
    from faceswap_ela import params as P

    for precision in hardware.PRECISIONS:
        assert P.parse({"train": {"precision": precision}}).train.precision == precision
    with pytest.raises(P.ParamsError, match="train.precision"):
        P.parse({"train": {"precision": "half"}})
    with pytest.raises(P.ParamsError, match="train.mixed_precision"):
        P.parse({"train": {"mixed_precision": True}})
