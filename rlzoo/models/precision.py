"""The device and numeric precision of the networks: float32, or bfloat16 where the hardware computes
it natively.

With bf16 the learner keeps float32 master weights, optimizer state, V-trace and losses, and runs
only the network under autocast; actors hold a bf16 copy of the weights for inference. Actions are
still sampled and their logits recorded from the network the actor ran, so V-trace corrects for the
small difference between the actor's and the learner's numerics as it does for policy lag.
"""
from __future__ import annotations

import contextlib
from functools import lru_cache

import torch

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """runtime.device → the learner's device (auto: CUDA when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


# AVX512-BF16 / AMX multiply bf16 at twice the fp32 rate; without them bf16 is emulated and slower.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The feature flags of this machine's CPU (/proc/cpuinfo); empty where that cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def _cpu_has_native_bf16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)


def native_bf16(device: torch.device) -> bool:
    """True when `device` computes bfloat16 matrix products natively."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_native_bf16()


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """runtime.precision → the dtype the network computes in on `device`."""
    if name not in PRECISIONS:
        raise ValueError(f"runtime.precision={name!r} is not one of {', '.join(PRECISIONS)}")
    if name == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if name == "bf16" else torch.float32


def autocast(dtype: torch.dtype, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`; a no-op for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
